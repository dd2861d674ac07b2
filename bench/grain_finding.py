"""Finding every grain (issue 16): the merging rules, their ablations and an oracle-k baseline on simulated films.

    .venv/bin/python bench/grain_finding.py [--films ag1,ag2,ag3 | --families small-dense,large-sparse,...]
        [--seeds 11,12] [--features aa,bd] [--methods evidence,transitive,oracle] [--restarts 25]
        [--dir /tmp/i16/families] [--scan N --det N]

Each film is simulated once into ``--dir`` (reused when there) and featurised
once (stemnmf's default calibration and robust scaling); then each method
factorises it and the regions are scored against the truth grains
(docs/analysis.md). Methods:

* ``paper``: Bruefach et al.'s rule: maps merged transitively at the paper's
  threshold (BD 0.2, AA 0.45), no pattern link;
* ``transitive``: stemnmf before issue 16 (transitive merging with the pattern link);
* ``default``: ``IterativeNMF``'s defaults (docs/nmf.md; since the same-grain
  test, ``agree50f``);
* ``evidence``: the evidence rule with links and shared footprints free (the
  default before the same-grain test); ``-links``, ``-gate``, ``-footprint``:
  that rule without one of its three reasons to merge;
* ``link3``, ``link5``: the evidence rule with links and shared footprints
  accepted only when the merge costs at most 3 (5) noise gates (``link_tolerance``);
* ``agree50``, ``agree60``: as ``link3``, but pairs whose patterns' peaks agree at
  >= 0.5 (0.6) merge whatever the cost (``peak_agreement``); ``agree50f``,
  ``agree60f``, ``agree70f``: the same with shared footprints free
  (``limit_footprints=False``);
* ``oracle``: scikit-learn's NMF (NNDSVDa, 400 iterations) at k = the number of
  grains, Yen regions of every component (the paper's refinement).

Prints one Markdown row per film, feature and method: visible-grain recall, grain
recall, recall at IoU >= 0.5, ARI of the regions, regions / grains (visible),
mean TPR_G, precision_A, k and seconds, and the ratio of visible recall and
ARI to ``oracle`` when it ran. Families (``--families``) vary grain size,
density, thickness and dose around the Ag films on a smaller scan, for tuning.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import NMF as SkNMF

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402

from stemnmf.analysis import analyze  # noqa: E402
from stemnmf.decompose import IterativeNMF  # noqa: E402
from stemnmf.features.scaling import scale_features  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402

PAPER_THRESHOLDS = {"bd": 0.2, "aa": 0.45, "rv": 0.4}

#: Simulated families for tuning: overrides of ``stemnmf.simulate`` (Ag, 2.5 A steps).
FAMILIES = {
    "small-dense": dict(preset="ag1", n_grains=60, grain_diameter=(20.0, 35.0)),
    "large-sparse": dict(preset="ag3", n_grains=10, grain_diameter=(120.0, 200.0)),
    "thin-lowdose": dict(preset="ag2", film_thickness=100.0, dose=1e3),
    "thick-highdose": dict(preset="ag2", film_thickness=600.0, dose=1e6),
    "ag1": dict(preset="ag1"),
    "ag2": dict(preset="ag2"),
    "ag3": dict(preset="ag3"),
}

#: name -> IterativeNMF options (None: the oracle-k baseline)
#: The evidence rule as it was before the same-grain test (links and shared footprints free).
FREE = dict(link_tolerance=None, peak_agreement=None, limit_footprints=True)
METHODS = {
    "paper": dict(merge_rule="transitive", pattern_threshold=None, paper_threshold=True),
    "transitive": dict(merge_rule="transitive"),
    "default": {},
    "evidence": dict(FREE),
    "-links": dict(FREE, merge_threshold=1.0, pattern_threshold=None),
    "-gate": dict(FREE, merge_tolerance=0.0),
    "-footprint": dict(FREE, footprint_threshold=None),
    "link3": dict(link_tolerance=3.0, peak_agreement=None, limit_footprints=True),
    "link5": dict(link_tolerance=5.0, peak_agreement=None, limit_footprints=True),
    "agree50": dict(link_tolerance=3.0, peak_agreement=0.5, limit_footprints=True),
    "agree60": dict(link_tolerance=3.0, peak_agreement=0.6, limit_footprints=True),
    "agree50f": dict(link_tolerance=3.0, peak_agreement=0.5, limit_footprints=False),
    "agree60f": dict(link_tolerance=3.0, peak_agreement=0.6, limit_footprints=False),
    "agree70f": dict(link_tolerance=3.0, peak_agreement=0.7, limit_footprints=False),
    "oracle": None,
}


def film_path(directory: Path, name: str, seed: int, scan, det, paper: bool) -> Path:
    from stemnmf.simulate import simulate_to_file

    if paper:
        path = directory / f"{name}_s{seed}.h5"
        if not path.exists():
            simulate_to_file(path, name, seed=seed)
        return path
    overrides = dict(FAMILIES[name])
    preset = overrides.pop("preset")
    path = directory / f"{name}_s{seed}_{scan}.h5"
    if not path.exists():
        simulate_to_file(path, preset, seed=seed, scan=(scan, scan), det=(det, det), **overrides)
    return path


def run_method(name, options, X, feature, n_grains, restarts, seed):
    t0 = time.perf_counter()
    if options is None:
        model = SkNMF(n_components=n_grains, init="nndsvda", max_iter=400, random_state=seed)
        W = model.fit_transform(X)
        return W, model.components_, n_grains, time.perf_counter() - t0, dict(min_coherence=None, edge_fraction=0.0)
    options = dict(options)
    if options.pop("paper_threshold", False):
        options["merge_threshold"] = PAPER_THRESHOLDS[feature]
    model = IterativeNMF(feature=feature, n_restarts=restarts, max_iter=400, random_state=seed, **options)
    W = model.fit_transform(X)
    # the analysis joins touching regions with the model's same-grain evidence, as ``stemnmf run`` does
    return W, model.components_, model.n_components_, time.perf_counter() - t0, dict(
        peak_agreement=model.peak_agreement_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", default=None, help="paper-geometry presets, e.g. ag1,ag2,ag3")
    parser.add_argument("--families", default="small-dense,large-sparse,thin-lowdose,thick-highdose")
    parser.add_argument("--seeds", default="11")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--methods", default="paper,transitive,evidence,-links,-gate,-footprint,oracle")
    parser.add_argument("--restarts", type=int, default=25)
    parser.add_argument("--dir", default="/tmp/i16/families")
    parser.add_argument("--scan", type=int, default=64)
    parser.add_argument("--det", type=int, default=128)
    args = parser.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    paper = args.films is not None
    names = (args.films or args.families).split(",")
    features = args.features.split(",")
    methods = {m: METHODS[m] for m in args.methods.split(",")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# grain finding, {datetime.date.today()}, load {load:.1f}, {args.restarts} restarts, seeds {args.seeds}")
    print("")
    print("| film | seed | feature | method | visible recall | grain recall | recall IoU 0.5 | ARI regions "
          "| regions / grains (visible) | TPR_G | precision_A | k | s | visible recall / oracle | ARI / oracle |")
    print("| --- " * 15 + "|")
    for name in names:
        for seed in (int(s) for s in args.seeds.split(",")):
            path = film_path(directory, name, seed, args.scan, args.det, paper)
            dataset, raw, vacuum = prepare(path, features)
            truth = load_truth(path)
            n_grains = int(np.asarray(truth.labels).shape[0])
            for feature in features:
                X, _, _ = scale_features(raw[feature], "robust")
                rows = {}
                for method, options in methods.items():
                    W, H, k, seconds, extra = run_method(method, options, X, feature, n_grains, args.restarts, seed)
                    result = analyze(W, H, dataset.scan_shape, vacuum=vacuum, truth=truth, feature=feature, **extra)
                    rows[method] = (result.scores.summary(), k, seconds)
                oracle = rows.get("oracle", (None,))[0]
                for method, (s, k, seconds) in rows.items():
                    ratios = ["n/a", "n/a"]
                    if oracle is not None:
                        ratios = [f"{s[key] / oracle[key]:.2f}" if s[key] and oracle[key] else "n/a"
                                  for key in ("grain_recall_visible", "ARI_regions")]
                    cells = " | ".join(
                        "n/a" if s.get(key) is None else f"{s[key]:.3f}"
                        for key in ("grain_recall_visible", "grain_recall", "grain_recall_iou", "ARI_regions")
                    )
                    print(f"| {name} | {seed} | {feature.upper()} | {method} | {cells} | {s['n_clusters']} / "
                          f"{s['n_grains']} ({s['n_visible_grains']}) | {s['TPR_G']:.3f} | {s['precision_A']:.3f} | "
                          f"{k} | {seconds:.1f} | " + " | ".join(ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
