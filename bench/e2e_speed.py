"""End to end: `stemnmf run` on a 200 x 200 x 128 x 128 scan with AA and 25 restarts of iterative NMF.

    .venv/bin/python bench/e2e_speed.py [--scan 200] [--det 128] [--restarts 25] [--baseline-restarts 1]
                                        [--workdir /tmp/stemnmf-e2e] [--keep]

1. Simulates the ``ag2`` film on a 200 x 200 scan of 128 x 128 patterns (2.6 GB;
   reused from ``--workdir`` when present).
2. Runs the whole pipeline (load, calibrate, summary, features, iterative NMF,
   analysis, save, report) as ``stemnmf run SCAN -o OUT --feature aa --k
   iterative`` does, with ``n_restarts`` restarts, and prints the time of every stage.
3. Baseline, measured in the same run on the same feature matrix: the iterative
   merging procedure as first written (Allen et al. 2021 / Bruefach et al.
   2022: fit from a random start, merge maps correlated at >= 0.45, refit from
   the merged factors until none, on every position, to tol 1e-4) with
   scikit-learn's NMF (coordinate descent, ``init='custom'`` for the refits),
   for ``--baseline-restarts`` restarts; its time per restart is extrapolated
   to ``n_restarts`` restarts spread perfectly over the cores (``--baseline-restarts 0``: skipped).
4. ``--rules transitive,evidence,agree``: ``IterativeNMF`` with each merge rule on the same
   feature matrix in the same process (the pipeline's settings: AA, ``n_restarts``,
   the run's seed), for the cost of a merge rule against another (issue 16: the
   evidence rule against the transitive rule it replaced as the default; ``agree``:
   the evidence rule with links limited to 3 noise gates unless the patterns'
   peaks agree, shared footprints free; ``evidence`` is the evidence rule
   without that limit, whatever the current default; ``recover``: the defaults
   given the scan's shape, which split off grains left inside other components,
   as the pipeline now does; without a shape nothing is recovered, so ``agree``
   is the default before that; ``recover6``: the sixth round's recovery, one
   round with the share of new reflections alone, the default before the seventh).

The machine is shared with other work, so timings are noisy; the load average
is printed with the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from stemnmf.decompose import IterativeNMF
from stemnmf.decompose.blocks import default_threads
from stemnmf.decompose.iterative import merge_components, merge_groups, recover_grains

#: --rules names -> IterativeNMF options
RULES = {
    "transitive": dict(merge_rule="transitive"),
    "evidence": dict(merge_rule="evidence", link_tolerance=None, peak_agreement=None, limit_footprints=True),
    "agree": dict(merge_rule="evidence", link_tolerance=3.0, peak_agreement=0.5, limit_footprints=False),
    # issue 16, sixth round: the defaults with the scan's shape, so grains left inside other components are recovered
    "recover": dict(scan=True),
    # issue 16, seventh round: the sixth round's recovery (one round, new reflections at least half the peaks), run
    # as IterativeNMF runs it (after the final refit), for the cost of the seventh round's defaults against it
    "recover6": dict(scan=True, recover=False, recover_options=dict(rounds=1, many_peaks=None)),
}


def simulate(path: Path, scan: int, det: int, seed: int) -> float:
    from stemnmf.simulate import simulate_to_file

    if path.exists():
        return 0.0
    t0 = time.perf_counter()
    simulate_to_file(path, "ag2", scan=(scan, scan), det=(det, det), seed=seed, overwrite=True)
    return time.perf_counter() - t0


def features(path: Path) -> np.ndarray:
    """The AA feature matrix exactly as the pipeline builds it (default configuration)."""
    from stemnmf.calibrate import calibrate
    from stemnmf.config import Config
    from stemnmf.engine import Engine
    from stemnmf.features import featurize
    from stemnmf.io import load

    config = Config()
    engine = Engine(progress=False)
    dataset, _ = calibrate(load(path), engine=engine, **config.calibrate.calibrate_options())
    X, _ = featurize(dataset, "aa", engine=engine, **config.features.featurize_options())
    return X


def sklearn_restart(X: np.ndarray, k0: int, threshold: float, seed: int, max_iter: int = 400, tol: float = 1e-4):
    """One restart of the original procedure on scikit-learn's NMF; returns (k, error, iterations)."""
    from sklearn.decomposition import NMF

    model = NMF(k0, init="random", solver="cd", max_iter=max_iter, tol=tol, random_state=seed)
    W = model.fit_transform(X).astype(np.float32)
    H = model.components_.astype(np.float32)
    iterations = model.n_iter_
    while True:
        live = np.flatnonzero(W.any(axis=0) & H.any(axis=1))
        groups = [[int(live[i]) for i in g] for g in merge_groups(W[:, live].T, threshold)]
        if len(groups) == W.shape[1] or len(groups) <= 1:
            break
        Wt, H = merge_components(W.T, H, groups)
        model = NMF(len(groups), init="custom", solver="cd", max_iter=max_iter, tol=tol)
        W = model.fit_transform(X, W=np.ascontiguousarray(Wt.T, dtype=X.dtype), H=H.astype(X.dtype)).astype(np.float32)
        H = model.components_.astype(np.float32)
        iterations += model.n_iter_
    error = float(np.linalg.norm(X - W @ H))
    return W.shape[1], error, iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=int, default=200)
    parser.add_argument("--det", type=int, default=128)
    parser.add_argument("--restarts", type=int, default=25)
    parser.add_argument("--baseline-restarts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/stemnmf-e2e")
    parser.add_argument("--keep", action="store_true", help="keep the simulated scan and the run")
    parser.add_argument("--rules", default="", help="merge rules to time on the same features, e.g. transitive,evidence")
    args = parser.parse_args()

    import stemnmf

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scan_path = workdir / f"ag2_{args.scan}x{args.scan}_{args.det}.h5"
    sim_seconds = simulate(scan_path, args.scan, args.det, args.seed)

    config = {
        "features": {"representation": "aa"},
        "nmf": {"k": "iterative", "n_restarts": args.restarts},
        "run": {"seed": args.seed},
    }
    t0 = time.perf_counter()
    results = stemnmf.run(scan_path, config, outdir=workdir / "run", overwrite=True)
    total = time.perf_counter() - t0
    timings = dict(results.timings)
    scores = json.loads(str(results["/scores/summary"])) if "/scores/summary" in results else {}
    k0 = int(results["/decompose/initial_components"])
    threshold = float(results["/decompose/merge_threshold"])

    # baseline on the same features
    X = features(scan_path)
    per_restart = []
    base = []
    for i in range(args.baseline_restarts):
        t1 = time.perf_counter()
        base.append(sklearn_restart(X, k0, threshold, seed=args.seed + i))
        per_restart.append(time.perf_counter() - t1)
    cores = default_threads()
    baseline_nmf = float(np.mean(per_restart)) * args.restarts / cores if per_restart else float("nan")
    rule_seconds = {}
    for rule in filter(None, args.rules.split(",")):
        t1 = time.perf_counter()
        options = dict(RULES[rule])
        if options.pop("scan", False):
            options["scan_shape"] = (args.scan, args.scan)
        recover_options = options.pop("recover_options", None)
        model = IterativeNMF(feature="aa", n_restarts=args.restarts, random_state=args.seed, **options)
        W = model.fit_transform(X)
        k = model.n_components_
        if recover_options is not None:
            k = len(recover_grains(X, W.T, model.components_, options["scan_shape"], max_iter=model.max_iter,
                                   tol=model.tol, **recover_options)[1])
        rule_seconds[rule] = (time.perf_counter() - t1, k)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# e2e: {args.scan} x {args.scan} x {args.det} x {args.det} ag2 scan, AA, {args.restarts} restarts")
    print(f"date {datetime.date.today()}, {platform.processor() or platform.machine()}, {cores} cores, load {load:.1f}")
    if sim_seconds:
        print(f"simulation (not timed below): {sim_seconds:.1f} s")
    print("")
    print("| stage | seconds |")
    print("| --- | --- |")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **total** (wall, stemnmf.run) | **{total:.1f}** |")
    print("")
    nmf = timings.get("nmf", float("nan"))
    print("| NMF | seconds | ratio to baseline |")
    print("| --- | --- | --- |")
    print(f"| baseline: original procedure on scikit-learn NMF, {np.mean(per_restart):.1f} s per restart "
          f"({args.baseline_restarts} measured) x {args.restarts} / {cores} cores | {baseline_nmf:.1f} | 1.0 |")
    print(f"| stemnmf IterativeNMF ({args.restarts} restarts) | {nmf:.1f} | {baseline_nmf / nmf:.1f}x faster |")
    if rule_seconds:
        print("")
        first = next(iter(rule_seconds.values()))[0]
        print("| IterativeNMF merge rule, same features, same process | seconds | k | ratio to the first | whole run at this rule / whole run at the first |")
        print("| --- | --- | --- | --- | --- |")
        for rule, (seconds, k) in rule_seconds.items():
            whole = (total - nmf + seconds) / (total - nmf + first)
            print(f"| {rule} | {seconds:.1f} | {k} | {seconds / first:.2f} | {whole:.2f} |")
    print("")
    print(f"k: stemnmf {int(results['/kselect/chosen_k'])} (from {k0}); baseline restarts "
          f"{[b[0] for b in base]} components, {[b[2] for b in base]} iterations")
    if scores:
        print("scores:", ", ".join(f"{k} {scores[k]:.3f}" for k in ("precision_A", "TPR_G", "precision_G", "IoU_G",
                                                                     "grain_recall", "ARI_regions") if scores.get(k) is not None))
    print(f"under 60 s: {'yes' if total < 60 else 'no'} ({total:.1f} s)")
    if not args.keep:
        scan_path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
