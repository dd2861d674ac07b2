"""Where grains are lost (issue 16): every visible grain the default run misses, with its cause.

    .venv/bin/python bench/grain_loss.py FILM.h5 [--features aa,bd] [--restarts 10] [--seed 0]
        [--options link_tolerance=3]

The film (a ``stemnmf simulate`` scan with its truth) is featurised with the
run's defaults and factorised by ``IterativeNMF``; every merge of the final
refit is recorded with the test that accepted it (map link, pattern link,
noise gate, footprint) and the grains its two components held. Each visible
grain (the thickest grain at >= 25 positions) that no region recalls
(TPR_G >= 0.5) is put in one class:

* ``hidden``: under thicker grains at most of its extent (it dominates < 50 %
  of the positions it is in): its reflections are weaker than its cover's;
* ``shared``: the component that holds it (argmax of the maps over the grain's
  dominant positions) holds another visible grain too; split by whether the
  two grains touch (8-connected) and by the cosine of their mean features;
* ``region``: the grain has a component of its own but no region matches it
  (dropped as a fragment, cut by the threshold, or swallowed by a neighbour's region);
* ``none``: no component is largest on most of it.

Prints the counts per class and one line per missed grain.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import threading
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402

from stemnmf.analysis import analyze  # noqa: E402
from stemnmf.analysis.scores import MIN_VISIBLE, dominant_grain  # noqa: E402
from stemnmf.decompose import IterativeNMF, evidence, iterative  # noqa: E402
from stemnmf.features.scaling import scale_features  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402

log = logging.getLogger("grain_loss")


def owners(Wt: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each component's grain (largest IoU of its footprint, >= 0.2 of its maximum, with a grain's extent) and that IoU."""
    Wt = np.asarray(Wt, np.float64)
    support = (Wt >= 0.2 * Wt.max(axis=1, keepdims=True)).astype(np.float64)
    flat = labels.reshape(labels.shape[0], -1).astype(np.float64)
    inter = support @ flat.T
    iou = inter / np.maximum(support.sum(axis=1)[:, None] + flat.sum(axis=1)[None, :] - inter, 1.0)
    return iou.argmax(axis=1), iou.max(axis=1)


class MergeRecorder:
    """Wraps the evidence rule inside ``iterative`` and records each accepted merge with its reasons."""

    def __init__(self, labels):
        self.labels = labels
        self.merges = collections.defaultdict(list)
        self._local = threading.local()
        self._evidence = iterative.merge_evidence
        self._groups = iterative.complete_linkage_groups
        self._loop = iterative._merge_loop

    def __enter__(self):
        iterative.merge_evidence = self.merge_evidence
        iterative.complete_linkage_groups = self.groups
        iterative._merge_loop = self.merge_loop
        return self

    def __exit__(self, *exc):
        iterative.merge_evidence = self._evidence
        iterative.complete_linkage_groups = self._groups
        iterative._merge_loop = self._loop

    def merge_loop(self, *args, label="", **kwargs):
        self._local.label = label
        return self._loop(*args, label=label, **kwargs)

    def merge_evidence(self, Wt, H, *args, **kwargs):
        ev = self._evidence(Wt, H, *args, **kwargs)
        corr = np.nan_to_num(np.corrcoef(np.asarray(Wt, np.float64)), nan=-1.0)
        Hn = np.asarray(H, np.float64)
        Hn = Hn / np.maximum(np.linalg.norm(Hn, axis=1, keepdims=True), 1e-300)
        self._local.last = (Wt.copy(), ev, corr, Hn @ Hn.T, kwargs["threshold"], kwargs["pattern_threshold"])
        return ev

    def groups(self, accepted, cost):
        groups = self._groups(accepted, cost)
        Wt, ev, corr, cos, threshold, pthr = self._local.last
        if Wt.shape[1] != self.labels[0].size:
            return groups  # a restart on a subset of positions
        grain, share = owners(Wt, self.labels)
        for g in groups:
            for a in g:
                for b in g:
                    if a >= b:
                        continue
                    reasons = []
                    if corr[a, b] >= threshold:
                        reasons.append("map")
                    if pthr is not None and cos[a, b] >= pthr and corr[a, b] >= 0:
                        reasons.append("pattern")
                    if ev.cost[a, b] <= ev.gate[a, b]:
                        reasons.append("gate")
                    if ev.footprint[a, b] >= evidence.FOOTPRINT_THRESHOLD and corr[a, b] >= 0:
                        reasons.append("footprint")
                    two = grain[a] != grain[b] and min(share[a], share[b]) >= 0.3
                    self.merges[self._local.label].append(dict(k=Wt.shape[0], grains=(int(grain[a]), int(grain[b])), two=two,
                                            reasons=tuple(reasons), corr=float(corr[a, b]), cos=float(cos[a, b]),
                                            ratio=float(ev.cost[a, b] / max(ev.gate[a, b], 1e-300))))
        return groups


def touching(a: np.ndarray, b: np.ndarray) -> bool:
    return bool((ndimage.binary_dilation(a, structure=np.ones((3, 3), bool)) & b).any())


def classify(result, W, X, truth, scan_shape):
    """Per missed visible grain: (grain, class, details)."""
    labels = np.asarray(truth.labels) > 0
    dominant = dominant_grain(labels, truth.thickness)
    n_g = labels.shape[0]
    per = result.scores.detection["per_grain"]
    visible = per["visible"]
    recalled = result.scores.grain["per_grain"]["recalled"]
    argmax = np.asarray(W).argmax(axis=1).reshape(scan_shape)
    holder = np.full(n_g, -1)
    hold_share = np.zeros(n_g)
    for g in range(n_g):
        here = dominant == g
        if here.any():
            counts = np.bincount(argmax[here], minlength=W.shape[1])
            holder[g], hold_share[g] = counts.argmax(), counts.max() / here.sum()
    means = np.stack([np.asarray(X)[(dominant == g).ravel()].mean(axis=0) if (dominant == g).any()
                      else np.zeros(X.shape[1]) for g in range(n_g)])
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-300)
    Wt = np.asarray(W, np.float64).T
    support = Wt >= 0.2 * Wt.max(axis=1, keepdims=True)
    flat = labels.reshape(n_g, -1)
    inter = support.astype(np.float64) @ flat.T.astype(np.float64)
    iou = inter / (support.sum(axis=1)[:, None] + flat.sum(axis=1)[None, :] - inter)
    thick = None if truth.thickness is None else np.asarray(truth.thickness, np.float64)
    out = []
    for g in np.flatnonzero(visible & ~recalled):
        extent = labels[g].sum()
        dominated = (dominant == g).sum() / extent
        if dominated < 0.5:
            detail = f"dominates {dominated:.2f} of its {extent} positions"
            if thick is not None:
                under = labels[g] & (dominant != g)
                mine = thick[g][under].mean()
                cover = thick[dominant[under], under].mean() if False else np.mean(
                    [thick[dominant[y, x], y, x] for y, x in zip(*np.nonzero(under))])
                detail += f"; thickness there {mine:.0f} A under {cover:.0f} A"
            c = int(iou[:, g].argmax())
            own = int(iou[c].argmax()) == g
            detail += (f"; best component {c} footprint IoU {iou[c, g]:.2f} (best grain of it: {int(iou[c].argmax())})"
                       f"; best region IoU {per['best_IoU'][g]:.2f}")
            out.append((g, "hidden-own-component" if own else "hidden-shared-component", detail))
            continue
        if hold_share[g] < 0.5:
            out.append((g, "none", f"largest component on {hold_share[g]:.2f} of it"))
            continue
        mates = [h for h in np.flatnonzero(visible) if h != g and holder[h] == holder[g] and hold_share[h] >= 0.5]
        if mates:
            h = max(mates, key=lambda h: (dominant == h).sum())
            touch = touching(dominant == g, dominant == h)
            kind = "shared-touching" if touch else "shared-apart"
            out.append((g, kind, f"component {holder[g]} also holds grain {h}; feature cosine {unit[g] @ unit[h]:.3f}"))
            continue
        out.append((g, "region", f"component {holder[g]} holds {hold_share[g]:.2f} of it, best region IoU "
                                  f"{per['best_IoU'][g]:.2f}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("film")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default="", help="IterativeNMF options, e.g. pattern_threshold=0.7")
    args = parser.parse_args()
    options = {}
    for item in filter(None, args.options.split(",")):
        key, value = item.split("=")
        options[key] = None if value == "None" else (value if value.isalpha() else float(value))
    path = Path(args.film)
    features = args.features.split(",")
    dataset, raw, vacuum = prepare(path, features)
    truth = load_truth(path)
    dominant = dominant_grain(np.asarray(truth.labels) > 0, truth.thickness).ravel()
    n_g = truth.labels.shape[0]
    for feature in features:
        X, _, _ = scale_features(raw[feature], "robust")
        with MergeRecorder(np.asarray(truth.labels) > 0) as recorder:
            model = IterativeNMF(feature=feature, n_restarts=args.restarts, max_iter=400, random_state=args.seed,
                                 **options)
            W = model.fit_transform(X)
        result = analyze(W, model.components_, dataset.scan_shape, vacuum=vacuum, truth=truth, feature=feature)
        s = result.scores.summary()
        missed = classify(result, W, X, truth, dataset.scan_shape)
        best_seed = model.restart_seeds_[model.best_restart_]
        merges = recorder.merges[f"restart seed {best_seed}"] + recorder.merges["final refit"]
        joins = [m for m in merges if m["two"]]
        by_reason = collections.Counter(m["reasons"] for m in joins)
        all_reasons = collections.Counter(m["reasons"] for m in merges)
        print(f"## {path.name} {feature.upper()} {options}: k {model.n_components_} (k0 {model.initial_components_}), "
              f"grains {n_g} ({s['n_visible_grains']} visible), regions {s['n_clusters']}, visible recall "
              f"{s['grain_recall_visible']:.3f}, ARI {s['ARI_regions']:.3f}, TPR_G {s['TPR_G']:.3f}, "
              f"precision_A {s['precision_A']:.3f}")
        print(f"missed visible grains by class: {dict(collections.Counter(c for _, c, _ in missed))}")
        print(f"merges of the best restart and the final refit: {len(merges)} pairs, {len(joins)} joining two grains; "
              f"reasons of the joins {dict(by_reason)}; of all {dict(all_reasons)}")
        for m in joins:
            print(f"  join k={m['k']} grains {m['grains']} by {m['reasons']} corr {m['corr']:.2f} cos {m['cos']:.2f} "
                  f"cost/gate {m['ratio']:.3g}")
        for name in ("corr", "cos", "ratio"):
            for two in (True, False):
                v = np.array([m[name] for m in merges if m["two"] == two])
                if v.size:
                    print(f"{name} of {'joins' if two else 'other merges'}: " + " ".join(f"{q:.2f}" for q in np.percentile(v, [0, 10, 50, 90, 100])))
        same = np.array([m["ratio"] for m in merges if not m["two"]])
        if same.size:
            print(f"cost/gate of the other merges: median {np.median(same):.3g}, 90th percentile "
                  f"{np.percentile(same, 90):.3g}, max {same.max():.3g} ({same.size})")
        for g, kind, detail in missed:
            print(f"  grain {g}: {kind}: {detail}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
