"""One region per grain (issue 16): why grains end up in several regions, and the region rules.

    .venv/bin/python bench/grain_regions.py FILM.h5 [FILM.h5 ...] [--features aa,bd] [--restarts 10]
        [--seed N] [--cache DIR] [--rules none,agree65] [--diagnose]

Each film (a ``stemnmf simulate`` scan with its truth) is featurised with the
run's defaults and factorised once by ``IterativeNMF`` (its defaults, random
state = the film's seed unless ``--seed``); the factors and the noise of every
pattern entry (from the film's own residual, as ``IterativeNMF.peak_agreement_``
computes it) are kept in ``--cache`` and reused. The same factors are then
analysed with each rule in one process and scored against the truth:

* ``none``: regions as cut (the default before the region merge);
* ``agree50``, ``agree65``, ``agree80``: touching regions of components whose
  peaks agree at least 0.5, 0.65 (the default), 0.8 join (``merge_regions``);
* ``agree65+frag``: and regions under 50 positions at least half inside another
  dropped (``drop_fragments``);
* ``oracle``: touching regions on the same grain (by IoU with the truth) joined:
  what a perfect same-grain test would give (a bound, not a method).

Prints one Markdown row per film, feature and rule. ``--diagnose`` adds a table
(first rule) of the regions the paper's matching gives to a grain that has a
better region, classed by :func:`diagnose`, and the peak agreement of touching
pairs of regions on one grain and on two.
"""

from __future__ import annotations

import argparse
import logging
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402

from stemnmf.analysis import Regions, analyze, merge_regions, region_labels, score_clusters  # noqa: E402
from stemnmf.analysis.scores import dominant_grain  # noqa: E402
from stemnmf.decompose import IterativeNMF  # noqa: E402
from stemnmf.decompose.evidence import pattern_peaks, peak_agreement  # noqa: E402
from stemnmf.features.scaling import scale_features  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402

log = logging.getLogger("grain_regions")


def factors(path: Path, feature: str, cache: Path, restarts: int, seed: int, prepared: dict):
    """(W, H, X-derived pattern noise, scan shape, vacuum, seconds), computed once and cached."""
    from stemnmf.decompose.evidence import pattern_noise

    file = cache / f"{path.stem}_{feature}_r{restarts}_s{seed}.npz"
    if file.exists():
        z = np.load(file)
        return z["W"], z["H"], z["noise"], tuple(z["scan"]), z["vacuum"], float(z["seconds"])
    if "dataset" not in prepared:
        prepared["dataset"], prepared["raw"], prepared["vacuum"] = prepare(path, prepared["features"])
    dataset, raw, vacuum = prepared["dataset"], prepared["raw"], prepared["vacuum"]
    X, _, _ = scale_features(raw[feature], "robust")
    t0 = time.perf_counter()
    model = IterativeNMF(feature=feature, n_restarts=restarts, max_iter=400, random_state=seed)
    W = model.fit_transform(X)
    seconds = time.perf_counter() - t0
    H = model.components_
    R = np.asarray(X, np.float64) - W.astype(np.float64) @ H.astype(np.float64)
    noise = pattern_noise(W.T, (R * R).sum(axis=0))
    vac = np.zeros(dataset.scan_shape, bool) if vacuum is None else np.asarray(vacuum, bool)
    np.savez(file, W=W, H=H, noise=noise, scan=np.asarray(dataset.scan_shape), vacuum=vac, seconds=seconds)
    return W, H, noise, tuple(dataset.scan_shape), vac, seconds


#: name -> analyze options ("X": the components' peak agreement from the film's own residual)
RULES = {
    "none": dict(region_agreement=None),
    "agree50": dict(peak_agreement="X", region_agreement=0.5),
    "agree65": dict(peak_agreement="X", region_agreement=0.65),
    "agree80": dict(peak_agreement="X", region_agreement=0.8),
    "agree65+frag": dict(peak_agreement="X", region_agreement=0.65, fragment_size=50),
    "oracle": dict(region_agreement=None),  # then joined by the truth: the bound of any same-grain test
}
def oracle_join(result, truth):
    """The upper bound of any region merge: touching regions whose grain (by IoU) is the same joined, rescored."""
    regions = result.regions
    owner = region_owners(regions.masks, np.asarray(truth.labels) > 0)
    r = regions.n_regions
    same = (owner[:, None] == owner[None, :]) & (owner[:, None] >= 0)
    pseudo = Regions(regions.maps, np.arange(r, dtype=np.int32), np.zeros(r, np.float32))
    joined = merge_regions(pseudo, same.astype(float), threshold=0.5)
    labels = region_labels(joined.maps)
    result.scores = score_clusters(joined.maps, truth, labels=result.labels, region_labels=labels, clusters="regions")
    return result


def region_owners(masks: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Each region's grain by IoU of the region with the grain's whole extent (-1: on no grain)."""
    Gf = G.reshape(G.shape[0], -1).astype(np.float64)
    Mf = masks.reshape(len(masks), -1).astype(np.float64)
    inter = Mf @ Gf.T
    iou = inter / np.maximum(Mf.sum(1)[:, None] + Gf.sum(1)[None] - inter, 1)
    return np.where(iou.max(axis=1, initial=0) > 0, iou.argmax(axis=1), -1) if len(masks) else np.zeros(0, int)


def diagnose(result, H, noise, truth) -> dict:
    """Why a grain has several regions, and why a region covers part of its grain.

    The paper's matching gives each region the grain of largest weight sum under
    it; a grain matched by several regions keeps the one of largest IoU, and
    each other one is an *extra*. An extra is a *piece* when its own grain (the
    grain of largest IoU with it) is the grain it was matched to (one grain in
    two regions: ``same component``, a map cut by connected extent, or ``other
    component``), and *another grain's* otherwise (a grain stacked under or
    over its match, which the weight-sum matching gives to the thicker one).
    Every other region with TPR_G < 0.8 is *partial*: the part of its grain it
    misses lies mostly in *no region* (the threshold or edge cut it off) or in
    *other regions* (a grain over it). Touching pairs of regions of different
    components, one grain or two by IoU owner, get their patterns' peak
    agreement (X-derived noise).
    """
    regions = result.regions
    per = result.scores.grain["per_cluster"]
    best = result.scores.grain["per_grain"]["best_cluster"]
    matched = per["matched_grain"]
    masks, comp = regions.masks, regions.component
    G = np.asarray(truth.labels) > 0
    owner = region_owners(masks, G)
    agree = peak_agreement(pattern_peaks(H, noise))
    covered = masks.any(axis=0)
    grown = [ndimage.binary_dilation(m, structure=np.ones((3, 3), bool)) for m in masks]
    counts = dict(regions=regions.n_regions, extra=0, piece_same=0, piece_other=0, another=0, partial=0,
                  partial_uncovered=0, partial_covered=0, small=0)
    for r in range(regions.n_regions):
        g = matched[r]
        counts["small"] += int(masks[r].sum() < 50)
        if masks[r].sum() < 50:
            kind = "unmatched" if g < 0 else ("only" if best[g] == r else ("piece" if owner[r] == g else "another"))
            counts.setdefault("small_kinds", []).append(kind)
        if g >= 0 and best[g] != r:
            counts["extra"] += 1
            if owner[r] == g:
                counts["piece_same" if comp[r] == comp[best[g]] else "piece_other"] += 1
            else:
                counts["another"] += 1
        elif g >= 0 and per["TPR_G"][r] < 0.8:
            counts["partial"] += 1
            miss = G[g] & ~masks[r]
            counts["partial_uncovered" if (~covered)[miss].mean() >= 0.5 else "partial_covered"] += 1
    pairs = []
    for a in range(regions.n_regions):
        for b in range(a + 1, regions.n_regions):
            if comp[a] != comp[b] and (grown[a] & masks[b]).any() and owner[a] >= 0 and owner[b] >= 0:
                small, big = (a, b) if masks[a].sum() <= masks[b].sum() else (b, a)
                inside = float((masks[small] & masks[big]).sum() / masks[small].sum())
                pairs.append((bool(owner[a] == owner[b]), float(agree[comp[a], comp[b]]), inside))
    return dict(counts=counts, pairs=pairs)


def timing(path: Path, feature: str, restarts: int, seed: int) -> str:
    """Seconds of the fit, of the peak agreement (one more pass over X) and of the analysis with and without
    the region merge, in one process on one film: a Markdown row."""
    from stemnmf.decompose.evidence import pattern_noise

    dataset, raw, vacuum = prepare(path, [feature])
    X, _, _ = scale_features(raw[feature], "robust")
    t0 = time.perf_counter()
    model = IterativeNMF(feature=feature, n_restarts=restarts, max_iter=400, random_state=seed)
    W = model.fit_transform(X)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    R = np.asarray(X, np.float64) - W.astype(np.float64) @ model.components_.astype(np.float64)
    agreement = peak_agreement(pattern_peaks(model.components_, pattern_noise(W.T, (R * R).sum(axis=0))))
    extra = time.perf_counter() - t0
    seconds = {}
    for name, options in (("as cut", dict(region_agreement=None)), ("merge", dict(peak_agreement=agreement))):
        t0 = time.perf_counter()
        analyze(W, model.components_, dataset.scan_shape, vacuum=vacuum, feature=feature, **options)
        seconds[name] = time.perf_counter() - t0
    return (f"| {path.stem} | {feature.upper()} | {model.n_components_} | {fit:.1f} | {extra:.2f} | "
            f"{seconds['as cut']:.2f} | {seconds['merge']:.2f} | {(fit + extra + seconds['merge']) / (fit + seconds['as cut']):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("films", nargs="+")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="random state (default: the film's seed)")
    parser.add_argument("--cache", default="/tmp/i16/regions")
    parser.add_argument("--diagnose", action="store_true")
    parser.add_argument("--rules", default="none,agree65")
    parser.add_argument("--time", action="store_true", help="only time the first film and feature")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.time:
        path = Path(args.films[0])
        seed = args.seed if args.seed is not None else int(path.stem.split("_s")[1].split("_")[0])
        print("| film | feature | k | IterativeNMF s | peak agreement s | analysis s, as cut | analysis s, merge "
              "| (fit + agreement + merged analysis) / (fit + analysis as cut) |\n" + "| --- " * 8 + "|")
        print(timing(path, args.features.split(",")[0], args.restarts, seed))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    features = args.features.split(",")
    load = os.getloadavg()[0]
    print("| film | feature | rule | visible recall | grain recall | recall IoU 0.5 | ARI regions | TPR_G | IoU_G "
          "| precision_A | area median error | Feret median error | regions / grains (visible) | k |")
    print("| --- " * 14 + "|")
    diagnosis = []
    header = ("| film | feature | regions / grains (visible) | TPR_G | extra regions | pieces, same component "
          "| pieces, other component | another grain's | partial (uncovered / covered) | regions < 50 "
          "| touching pairs, one grain: peak agreement | touching pairs, two grains |\n" + "| --- " * 12 + "|")
    print(f"# grain regions, {datetime.date.today()}, load {load:.1f}, {args.restarts} restarts", flush=True)
    for film in args.films:
        path = Path(film)
        seed = args.seed if args.seed is not None else int(path.stem.split("_s")[1].split("_")[0])
        prepared = {"features": features}
        for feature in features:
            W, H, noise, scan, vacuum, seconds = factors(path, feature, cache, args.restarts, seed, prepared)
            log.info("%s %s: k %d, %.1f s", path.name, feature, H.shape[0], seconds)
            truth = load_truth(path)
            agreement = peak_agreement(pattern_peaks(H, noise))
            results = {}
            for rule in args.rules.split(","):
                options = dict(RULES[rule])
                results[rule] = analyze(W, H, scan, vacuum=vacuum, truth=truth, feature=feature,
                                        **{k: (agreement if v == "X" else v) for k, v in options.items()})
                if rule == "oracle":
                    results[rule] = oracle_join(results[rule], truth)
                sc = results[rule].scores.summary()
                cells = " | ".join(f"{sc[key]:.3f}" for key in (
                    "grain_recall_visible", "grain_recall", "grain_recall_iou", "ARI_regions", "TPR_G", "IoU_G", "precision_A",
                    "area_median_error", "feret_median_error"))
                print(f"| {path.stem} | {feature.upper()} | {rule} | {cells} | {sc['n_clusters']} / {sc['n_grains']} "
                      f"({sc['n_visible_grains']}) | {H.shape[0]} |", flush=True)
            if args.diagnose:
                result = results[args.rules.split(",")[0]]
                d = diagnose(result, H, noise, truth)
                c = d["counts"]
                sc = result.scores.summary()
                one = [a for same, a, _ in d["pairs"] if same]
                two = [a for same, a, _ in d["pairs"] if not same]
                log.info("small regions: %s; pairs %s", c.get("small_kinds"), d["pairs"])
                diagnosis.append(f"| {path.stem} | {feature.upper()} | {sc['n_clusters']} / {sc['n_grains']} ({sc['n_visible_grains']}) "
                      f"| {sc['TPR_G']:.3f} | {c['extra']} | {c['piece_same']} | {c['piece_other']} | {c['another']} "
                      f"| {c['partial']} ({c['partial_uncovered']} / {c['partial_covered']}) | {c['small']} "
                      f"| {len(one)}: {' '.join(f'{a:.2f}' for a in sorted(one))} "
                      f"| {len(two)}, {sum(a >= 0.3 for a in two)} >= 0.3, max {max(two, default=0):.2f} |")
    if diagnosis:
        print("\n" + header)
        print("\n".join(diagnosis))


if __name__ == "__main__":
    main()
