"""Quality on the simulated Ag films: stemnmf's defaults against the paper's settings, step by step.

    .venv/bin/python bench/bruefach_quality.py [--films /tmp/bf] [--features aa,bd,rv] [--restarts 25]
                                              [--seed 0] [--quick]

For every film (``ag1.h5``, ``ag2.h5``, ``ag3.h5`` in ``--films``, simulated there
with ``--seed`` when missing; ``--quick``: 48 x 48 scans of 64 x 64 patterns) and
feature, the features are computed once, then factorised and refined with

* ``paper``: Bruefach et al.'s settings: min-max scaling, maps merged at the
  paper's threshold (BD 0.2, AA 0.45, RV 0.4) on map correlation alone, Yen
  regions of every component (restarts to tol 1e-3 on 5000 positions and the
  winner refitted, as in every row: that changes the time, not the scores);
* then one change at a time, cumulatively: ``+robust`` (median-to-max
  scaling), ``+merge`` (pattern link; BD threshold 0.3), ``+evidence`` (merging
  by evidence, complete linkage: docs/nmf.md), ``+coherence`` (no
  regions from noise maps; same factors), ``+edge`` (region edges at a
  fraction of each region's peak; same factors): stemnmf's defaults;

and prints precision_A, mean TPR_G, precision_G, IoU_G, grain recall, ARI of the
region labels, the final k and the NMF time of each, with ratios to ``paper``.
The machine is shared, so times are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import numpy as np

from stemnmf.analysis import analyze
from stemnmf.analysis.patterns import vacuum_mask
from stemnmf.calibrate import calibrate
from stemnmf.config import Config
from stemnmf.decompose import IterativeNMF
from stemnmf.engine import Engine
from stemnmf.features import featurize
from stemnmf.features.scaling import scale_features
from stemnmf.io import load, load_truth

PAPER_THRESHOLDS = {"bd": 0.2, "aa": 0.45, "rv": 0.4}

#: name -> (scaling, IterativeNMF options or None to keep the previous factors, analyze options)
STEPS = {
    "paper": ("minmax", dict(merge_rule="transitive", pattern_threshold=None, paper_threshold=True),
              dict(min_coherence=None, edge_fraction=0.0)),
    "+robust": ("robust", dict(merge_rule="transitive", pattern_threshold=None, paper_threshold=True),
                dict(min_coherence=None, edge_fraction=0.0)),
    "+merge": ("robust", dict(merge_rule="transitive"), dict(min_coherence=None, edge_fraction=0.0)),
    "+evidence": ("robust", {}, dict(min_coherence=None, edge_fraction=0.0)),
    "+coherence": ("robust", None, dict(edge_fraction=0.0)),
    "+edge (default)": ("robust", None, {}),
}


def film(films: Path, preset: str, seed: int, quick: bool) -> Path:
    from stemnmf.simulate import simulate_to_file

    path = films / (f"{preset}_quick.h5" if quick else f"{preset}.h5")
    if not path.exists():
        extra = {"scan": (48, 48), "det": (64, 64)} if quick else {}
        simulate_to_file(path, preset, seed=seed, **extra)
    return path


def prepare(path: Path, features: list[str]):
    config = Config()
    engine = Engine(progress=False)
    dataset, _ = calibrate(load(path), engine=engine, **config.calibrate.calibrate_options())
    options = config.features.featurize_options()
    options["scaling"] = "none"
    raw = {f: featurize(dataset, f, engine=engine, **options)[0] for f in features}
    return dataset, raw, vacuum_mask(dataset, engine=engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", default="/tmp/bf")
    parser.add_argument("--features", default="aa,bd,rv")
    parser.add_argument("--restarts", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    features = args.features.split(",")
    films = Path(args.films)
    films.mkdir(parents=True, exist_ok=True)
    restarts = 3 if args.quick else args.restarts
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# Bruefach films, seed {args.seed}, {restarts} restarts, {datetime.date.today()}, load {load_avg:.1f}")
    print("")
    print("| film | feature | settings | precision_A | TPR_G | precision_G | IoU_G | grain recall | ARI regions "
          "| k | NMF s | TPR_G / paper | precision_A / paper | IoU_G / paper |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in ("ag1", "ag2", "ag3"):
        path = film(films, preset, args.seed, args.quick)
        dataset, raw, vacuum = prepare(path, features)
        truth = load_truth(path)
        for feature in features:
            reference = None
            for name, (scaling, nmf_options, analysis_options) in STEPS.items():
                if nmf_options is not None:
                    options = dict(nmf_options)
                    if options.pop("paper_threshold", False):
                        options["merge_threshold"] = PAPER_THRESHOLDS[feature]
                    X, _, _ = scale_features(raw[feature], scaling)
                    t0 = time.perf_counter()
                    model = IterativeNMF(feature=feature, n_restarts=restarts, max_iter=400, random_state=args.seed,
                                         **options)
                    W = model.fit_transform(X)
                    seconds = time.perf_counter() - t0
                result = analyze(W, model.components_, dataset.scan_shape, vacuum=vacuum, truth=truth,
                                 feature=feature, **analysis_options)
                s = result.scores.summary()
                row = {k: s.get(k) for k in ("precision_A", "TPR_G", "precision_G", "IoU_G", "grain_recall", "ARI_regions")}
                if reference is None:
                    reference = row
                ratio = [
                    f"{row[k] / reference[k]:.2f}" if row[k] and reference[k] else "n/a"
                    for k in ("TPR_G", "precision_A", "IoU_G")
                ]
                cells = " | ".join("n/a" if v is None else f"{v:.3f}" for v in row.values())
                print(f"| {preset} | {feature.upper()} | {name} | {cells} | {model.n_components_} | {seconds:.1f} | "
                      + " | ".join(ratio) + " |", flush=True)


if __name__ == "__main__":
    main()
