"""Where the missed visible grains go (issue 16, fifth round): no component, or a component but no region.

    .venv/bin/python bench/grain_carry.py FILM.h5 [FILM.h5 ...] [--features aa,bd] [--restarts 10]
        [--seed N] [--cache DIR]

Each film (a ``stemnmf simulate`` scan with its truth) is featurised with the
run's defaults and factorised by ``IterativeNMF`` (its defaults, random state =
the film's seed unless ``--seed``); the maps of every fit of the winning
restart and of the final refit are recorded. The final factors are analysed
with the defaults (regions joined by the model's ``peak_agreement_``) and
every *visible* grain (the thickest grain at >= 25 positions) that the paper's
matching does not recall (TPR_G >= 0.5) is put in one class:

* ``(a) merged away``: no component of the final model carries it (its
  footprint, the positions >= 20 % of the map's peak, has IoU >= 0.5 with the
  grain's extent and no larger IoU with another grain's), but a component of an earlier fit of the winning restart or the
  final refit did; the k of the last fit that carried it is printed;
* ``(a) never split off``: no fit carried it (its reflections stayed in the
  component of a thicker or touching grain from the first fit on);
* ``(b) region lost``: a final component carries it, no region carries it
  (IoU >= 0.5, largest with this grain): threshold, edge, coherence or fragment;
* ``(b) matching``: a region carries it, but the paper's
  matching (largest weight sum) gives that region to another grain (a
  thicker grain over it); ``recall IoU 0.5`` counts it.

When the restarts see a subset of the positions (``restart_positions``, scans
over 5000 positions) only the final refit's fits are in the history, and
*never split off* includes grains merged away inside the winning restart.
A second table gives the issue's metrics with ``grain_recall_own_visible``.

The factors are cached as ``bench/grain_regions.py`` caches them (same file
names), so its rules can be run on the same fits.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402

from stemnmf.analysis import analyze  # noqa: E402
from stemnmf.decompose import IterativeNMF, iterative  # noqa: E402
from stemnmf.decompose.evidence import pattern_noise  # noqa: E402
from stemnmf.features.scaling import scale_features  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402

log = logging.getLogger("grain_carry")
FOOTPRINT = 0.2
CARRY_IOU = 0.5


class FitRecorder:
    """Wraps ``iterative._merge_loop``'s evidence call and keeps the maps of every fit, per label."""

    def __init__(self):
        self.fits = {}
        self._evidence = iterative.merge_evidence
        self._loop = iterative._merge_loop
        self._local = threading.local()

    def __enter__(self):
        iterative.merge_evidence = self.merge_evidence
        iterative._merge_loop = self.merge_loop
        return self

    def __exit__(self, *exc):
        iterative.merge_evidence = self._evidence
        iterative._merge_loop = self._loop

    def merge_loop(self, *args, label="", **kwargs):
        self._local.label = label
        return self._loop(*args, label=label, **kwargs)

    def merge_evidence(self, Wt, H, *args, **kwargs):
        ev = self._evidence(Wt, H, *args, **kwargs)
        self.fits.setdefault(self._local.label, []).append((np.array(Wt, np.float32), ev))
        return ev


def footprint_iou(Wt: np.ndarray, extents: np.ndarray) -> np.ndarray:
    """(k, g): IoU of each map's footprint (>= FOOTPRINT of its peak) with each grain's extent."""
    Wt = np.asarray(Wt, np.float64)
    support = (Wt >= FOOTPRINT * Wt.max(axis=1, keepdims=True)) & (Wt > 0)
    flat = extents.reshape(extents.shape[0], -1).astype(np.float64)
    inter = support.astype(np.float64) @ flat.T
    return inter / np.maximum(support.sum(axis=1)[:, None] + flat.sum(axis=1)[None, :] - inter, 1.0)


def fit(path: Path, feature: str, X, restarts: int, seed: int, cache: Path, scan, vacuum):
    """Fit once, record every fit's maps, cache the factors in grain_regions.py's format."""
    with FitRecorder() as rec:
        t0 = time.perf_counter()
        model = IterativeNMF(feature=feature, n_restarts=restarts, max_iter=400, random_state=seed)
        W = model.fit_transform(X)
        seconds = time.perf_counter() - t0
    H = model.components_
    R = np.asarray(X, np.float64) - W.astype(np.float64) @ H.astype(np.float64)
    noise = pattern_noise(W.T, (R * R).sum(axis=0))
    np.savez(cache / f"{path.stem}_{feature}_r{restarts}_s{seed}.npz", W=W, H=H, noise=noise, scan=np.asarray(scan),
             vacuum=vacuum, seconds=seconds)
    winner = f"restart seed {model.restart_seeds_[model.best_restart_]}"
    fits = []
    for label, history in ((winner, model.merge_history_[model.best_restart_]), ("final refit", model.final_history_)):
        for (Wt, ev), (_, groups) in zip(rec.fits.get(label, []), history):
            if Wt.shape[1] == W.shape[0]:
                fits.append((Wt, ev, groups))
    return model, W, fits, seconds


def carriers(iou: np.ndarray, g: int) -> np.ndarray:
    """Rows (components or regions) that carry grain g: IoU >= CARRY_IOU with it, and g their grain of largest IoU."""
    if not len(iou):
        return np.zeros(0, int)
    return np.flatnonzero((iou[:, g] >= CARRY_IOU) & (iou.argmax(axis=1) == g))


def spill(result, r: int, g: int, extents: np.ndarray) -> str:
    """Where region r's weight lies: in grain g only, in the grain h it was matched to only, in both, elsewhere."""
    h = int(result.scores.grain["per_cluster"]["matched_grain"][r])
    m = result.regions.maps[r]
    gi, hi = extents[g], extents[h] if h >= 0 else np.zeros_like(extents[g])
    parts = {"g only": gi & ~hi, "h only": hi & ~gi, "both": gi & hi, "neither": ~gi & ~hi}
    total = m.sum()
    cells = ", ".join(f"{k} {np.count_nonzero(v & (m > 0))} px {m[v].sum() / total:.2f}" for k, v in parts.items())
    return f"matched to {h} (g inside h {np.count_nonzero(gi & hi) / gi.sum():.2f}): {cells}"


def why_merged(fit, carrier, iou) -> str:
    """The merge that took the grain's carrier: partners, their grain, and the evidence that accepted each pair."""
    Wt, ev, groups = fit
    Wt = np.asarray(Wt, np.float64)
    support = Wt >= 0.2 * Wt.max(axis=1, keepdims=True)
    size = support.sum(axis=1)
    corr = np.nan_to_num(np.corrcoef(Wt), nan=-1.0)
    out = []
    for c in carrier:
        group = next((g for g in groups if c in g and len(g) > 1), None)
        if group is None:
            out.append(f"carrier {c} not merged (dropped?)")
            continue
        for p in group:
            if p == c:
                continue
            shared = np.count_nonzero(support[c] & support[p])
            reasons = [name for name, ok in (
                ("footprint", ev.footprint[c, p] >= 0.5 and corr[c, p] >= 0), ("gate", ev.cost[c, p] <= ev.gate[c, p]),
                ("link", bool(ev.linked[c, p]))) if ok]
            agree = float("nan") if ev.agreement is None else ev.agreement[c, p]
            out.append(f"with {p} (grain {int(iou[p].argmax())}, IoU {iou[p].max():.2f}): {'+'.join(reasons)}, "
                       f"shared/larger {ev.footprint[c, p]:.2f}, shared/smaller {shared / max(min(size[c], size[p]), 1):.2f}, "
                       f"corr {corr[c, p]:.2f}, cost/gate {ev.cost[c, p] / ev.gate[c, p]:.1f}, agree {agree:.2f}")
    return "; ".join(out)


def classify(result, W, fits, truth):
    """Per missed visible grain: (grain, class, detail)."""
    extents = np.asarray(truth.labels) > 0
    det = result.scores.detection["per_grain"]
    recalled = result.scores.grain["per_grain"]["recalled"]
    final_iou = footprint_iou(W.T, extents)
    regions = result.regions.masks
    r_flat = regions.reshape(len(regions), -1).astype(np.float64)
    g_flat = extents.reshape(extents.shape[0], -1).astype(np.float64)
    inter = r_flat @ g_flat.T
    region_iou = inter / np.maximum(r_flat.sum(1)[:, None] + g_flat.sum(1)[None] - inter, 1.0)
    history = [(w.shape[0], footprint_iou(w, extents)) for w, _, _ in fits]
    out = []
    for g in np.flatnonzero(det["visible"] & ~recalled):
        own = carriers(final_iou, g)
        if len(own):
            c = int(own[final_iou[own, g].argmax()])
            mine = carriers(region_iou, g)
            best = region_iou[mine, g].max(initial=0.0)
            kind = "(b) matching" if len(mine) else "(b) region lost"
            detail = (f"component {c} footprint IoU {final_iou[c, g]:.2f}, own region IoU {best:.2f}, "
                      f"any region IoU {region_iou[:, g].max(initial=0.0):.2f}")
            if len(mine):
                detail += "; " + spill(result, int(mine[region_iou[mine, g].argmax()]), g, extents)
            out.append((int(g), kind, detail))
            continue
        carried = [k for k, iou in history if len(carriers(iou, g))]
        best_ever = max((iou[:, g].max() for _, iou in history), default=0.0)
        if carried:
            t = max(i for i, (_, iou) in enumerate(history) if len(carriers(iou, g)))
            out.append((int(g), "(a) merged away", f"carried up to k {min(carried)} (fits at k {history[0][0]}.."
                        f"{history[-1][0]}), final footprint IoU {final_iou[:, g].max():.2f}; "
                        + why_merged(fits[t], carriers(history[t][1], g), history[t][1])))
        else:
            out.append((int(g), "(a) never split off", f"best footprint IoU in any fit {best_ever:.2f}"))
    return out


METRIC_HEADER = ("| film | feature | visible recall | grain recall | recall IoU 0.5 (visible) | own-region recall (visible) "
                 "| ARI regions | regions / grains (visible) | TPR_G | precision_A | k |\n" + "| --- " * 11 + "|")


def metric_row(name, feature, result, truth, k) -> str:
    """The issue's metrics, and the share of visible grains with a region of their own (IoU >= 0.5, largest with them)."""
    s = result.scores.summary()
    extents = np.asarray(truth.labels) > 0
    visible = result.scores.detection["per_grain"]["visible"]
    masks = result.regions.masks
    r_flat = masks.reshape(len(masks), -1).astype(np.float64)
    g_flat = extents.reshape(extents.shape[0], -1).astype(np.float64)
    inter = r_flat @ g_flat.T
    iou = inter / np.maximum(r_flat.sum(1)[:, None] + g_flat.sum(1)[None] - inter, 1.0)
    own = np.array([len(carriers(iou, g)) > 0 for g in range(extents.shape[0])])
    return (f"| {name} | {feature.upper()} | {s['grain_recall_visible']:.3f} | {s['grain_recall']:.3f} "
            f"| {s['grain_recall_iou_visible']:.3f} | {own[visible].mean():.3f} | {s['ARI_regions']:.3f} "
            f"| {s['n_clusters']} / {s['n_grains']} ({s['n_visible_grains']}) | {s['TPR_G']:.3f} | {s['precision_A']:.3f} | {k} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("films", nargs="+")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="random state (default: the film's seed)")
    parser.add_argument("--cache", default="/tmp/i16/cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    features = args.features.split(",")
    kinds = ("(a) merged away", "(a) never split off", "(b) region lost", "(b) matching")
    print(f"# where the missed grains go, {datetime.date.today()}, load {os.getloadavg()[0]:.1f}, "
          f"{args.restarts} restarts\n")
    print("| film | feature | visible | missed | " + " | ".join(kinds) + " | final k | k0 | s |")
    print("| --- " * (7 + len(kinds)) + "|")
    lines, metrics = [], []
    for film in args.films:
        path = Path(film)
        seed = args.seed if args.seed is not None else int(path.stem.split("_s")[1].split("_")[0])
        dataset, raw, vacuum = prepare(path, features)
        truth = load_truth(path)
        vac = np.zeros(dataset.scan_shape, bool) if vacuum is None else np.asarray(vacuum, bool)
        for feature in features:
            X, _, _ = scale_features(raw[feature], "robust")
            model, W, fits, seconds = fit(path, feature, X, args.restarts, seed, cache, dataset.scan_shape, vac)
            result = analyze(W, model.components_, dataset.scan_shape, vacuum=vacuum, truth=truth, feature=feature,
                             peak_agreement=model.peak_agreement_)
            missed = classify(result, W, fits, truth)
            counts = [sum(kind == m[1] for m in missed) for kind in kinds]
            n_vis = int(result.scores.detection["per_grain"]["visible"].sum())
            print(f"| {path.stem} | {feature.upper()} | {n_vis} | {len(missed)} | " + " | ".join(map(str, counts))
                  + f" | {model.n_components_} | {model.initial_components_} | {seconds:.0f} |", flush=True)
            lines += [f"{path.stem} {feature}: grain {g} {kind}: {detail}" for g, kind, detail in missed]
            metrics.append(metric_row(path.stem, feature, result, truth, model.n_components_))
    print("\n" + METRIC_HEADER + "\n" + "\n".join(metrics))
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
