"""Iterative merging NMF: restarts in parallel on threads (as shipped) vs one at a time vs processes.

    .venv/bin/python bench/nmf_iterative.py [--restarts 8] [--positions 6400] [--features 240]

X is an AA-like feature matrix: soft Voronoi grain maps times sparse random
patterns plus noise, min-max scaled per feature. The same restarts (same seeds,
same results) run

* one after the other (``n_jobs=1``),
* on threads (``n_jobs=-1``, what IterativeNMF does: each restart single-threaded,
  BLAS single-threaded, NumPy releasing the GIL),
* on processes (joblib/loky, for comparison only),

and the table gives wall time and the speed-up over ``n_jobs=1``. With 2 cores
the ideal speed-up is 2; the machine is shared, so the load average is printed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np
from joblib import Parallel, delayed

from stemnmf.decompose import IterativeNMF
from stemnmf.decompose import iterative as it_module
from stemnmf.decompose.blocks import as_blocks, blas_limit, default_threads
from stemnmf.decompose.nmf import _Setup


def feature_matrix(n=6400, m=240, grains=10, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n))
    yy, xx = np.mgrid[0:side, 0:side]
    centres = rng.random((grains, 2)) * side
    d = np.sqrt((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).reshape(-1, grains)
    W = np.exp(-(d - d.min(axis=1, keepdims=True)) / 2.0)
    W[W < 0.05] = 0
    H = rng.random((grains, m)) ** 4
    X = W @ H + 0.02 * rng.random((side * side, m))
    return ((X - X.min(0)) / (X.max(0) - X.min(0))).astype(np.float32)


def run_processes(X, model: IterativeNMF, workers: int) -> list[dict]:
    """The restarts of ``model`` (already fitted, for its seeds and k0) on a loky process pool."""
    blocks = as_blocks(X)
    summary = blocks.summary()
    setup = _Setup(loss="frobenius", solver=model.solver, max_iter=model.max_iter, tol=model.tol, n_threads=1, manage_blas=False)
    tasks = (
        delayed(it_module._restart)(blocks, summary, model.initial_components_, model.merge_threshold_, setup, seed, None)
        for seed in model.restart_seeds_
    )
    with blas_limit(1):
        return Parallel(n_jobs=workers, backend="loky")(tasks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--positions", type=int, default=6400)
    parser.add_argument("--features", type=int, default=240)
    args = parser.parse_args(argv)
    X = feature_matrix(args.positions, args.features)
    cores = default_threads()
    print(f"# Iterative NMF restarts in parallel ({datetime.date.today()})\n")
    print(
        f"Machine: {platform.machine()}, {cores} cores; X {X.shape[0]} x {X.shape[1]}; "
        f"{args.restarts} restarts; load average {os.getloadavg()[0]:.2f}\n"
    )
    kwargs = dict(feature="aa", n_restarts=args.restarts, max_iter=100, random_state=0)
    rows = []
    t0 = time.perf_counter()
    serial = IterativeNMF(n_jobs=1, **kwargs).fit(X)
    t_serial = time.perf_counter() - t0
    rows.append(("one at a time (n_jobs=1)", t_serial))
    t0 = time.perf_counter()
    threaded = IterativeNMF(n_jobs=-1, **kwargs).fit(X)
    rows.append((f"threads (n_jobs=-1, {cores} workers)", time.perf_counter() - t0))
    assert np.array_equal(threaded.components_, serial.components_), "threads changed the result"
    t0 = time.perf_counter()
    results = run_processes(X, serial, cores)
    rows.append((f"processes (loky, {cores} workers)", time.perf_counter() - t0))
    assert np.allclose([r["error"] for r in results], serial.restart_errors_), "processes changed the result"
    print(
        f"k0 = {serial.initial_components_} (scree elbow {serial.scree_.elbow} x 5), final k = {serial.n_components_}, "
        f"threshold {serial.merge_threshold_}\n"
    )
    print("| restarts run | wall time (s) | speed-up over n_jobs=1 |")
    print("| --- | --- | --- |")
    for label, t in rows:
        print(f"| {label} | {t:.2f} | {t_serial / t:.2f} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
