"""NMF speed: time to reach scikit-learn MU's 200-iteration objective, and seconds per iteration.

    .venv/bin/python bench/nmf_speed.py [--sizes small,large] [--k 10] [--seed 0]

For each matrix (raw-pattern-like: sparse non-negative grain maps x diffraction
patterns with a direct beam and Bragg disks, Poisson noise):

1. every method starts from the same NNDSVDa initialisation (not timed);
2. the target is ||X - WH||_F reached by ``sklearn.decomposition.NMF(solver='mu')``
   in 200 iterations (tol=0);
3. for every other method a first run records (W, H) after every iteration,
   the first iteration whose exact objective (float64, computed afterwards, not
   timed) is at or below the target is found by bisection (the objectives
   decrease), and a second, plain run with that many iterations is timed end
   to end (validation, iterations, final error);
4. seconds per iteration are the median gap between iterations in the
   recording run; the memory-bandwidth bound is bytes(X) / the copy bandwidth
   measured with ``numpy.copyto`` on X (STREAM convention: bytes read + written).

Timings on a shared machine are noisy: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings

import numpy as np

import sklearn
from sklearn.decomposition import NMF as SkNMF
from sklearn.decomposition import _nmf as sk_nmf

from stemnmf.decompose import NMF
from stemnmf.decompose import nmf as ours

SIZES = {
    "small": dict(scan=(100, 100), det=64),  # 10,000 x 4,096
    "large": dict(scan=(150, 100), det=128),  # 15,000 x 16,384
}


# -- data ---------------------------------------------------------------------------------------
def make_patterns(scan=(100, 100), det=64, n_grains=12, dose=5.0, seed=0) -> np.ndarray:
    """Raw-pattern-like X (positions x pixels), float32 counts.

    Grain maps are Voronoi cells with soft, overlapping boundaries (sparse,
    non-negative); each grain's pattern is a direct beam plus Bragg disks of a
    rotated lattice and a diffuse background; X is a Poisson draw with ``dose``
    mean counts per pixel.
    """
    rng = np.random.default_rng(seed)
    sy, sx = scan
    n = sy * sx
    centres = rng.random((n_grains, 2)) * [sy, sx]
    yy, xx = np.mgrid[0:sy, 0:sx]
    d = np.sqrt((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).reshape(n, n_grains)
    W = np.exp(-(d - d.min(axis=1, keepdims=True)) / 1.5)
    W[W < 0.05] = 0
    W /= W.sum(axis=1, keepdims=True)
    qy, qx = np.mgrid[0:det, 0:det] - det / 2
    r_disk = det / 40
    H = np.empty((n_grains, det * det))
    for g in range(n_grains):
        angle = rng.uniform(0, np.pi)
        a = det / rng.uniform(6, 9)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        img = 0.02 * np.exp(-(qy**2 + qx**2) / (2 * (det / 4) ** 2))
        for i in range(-4, 5):
            for j in range(-4, 5):
                cy, cx = rot @ (np.array([i, j + 0.5 * (i % 2)]) * a)
                if abs(cy) > det / 2 - 2 or abs(cx) > det / 2 - 2:
                    continue
                amp = 20.0 if (i, j) == (0, 0) else rng.uniform(0.2, 1.0) * np.exp(-(i * i + j * j) / 12)
                img = img + amp * np.exp(-((qy - cy) ** 2 + (qx - cx) ** 2) / (2 * r_disk**2))
        H[g] = img.ravel()
    H *= dose / H.mean()
    X = np.empty((n, det * det), dtype=np.float32)
    for start in range(0, n, 1000):
        X[start : start + 1000] = rng.poisson(W[start : start + 1000] @ H)
    return X


def exact_error(X: np.ndarray, W: np.ndarray, H: np.ndarray) -> float:
    """||X - WH||_F with float64 sums, in row blocks."""
    total = 0.0
    for start in range(0, len(X), 1024):
        R = X[start : start + 1024] - W[start : start + 1024] @ H
        total += float(np.einsum("ij,ij->", R, R, dtype=np.float64))
    return float(np.sqrt(total))


def copy_bandwidth(X: np.ndarray, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) by numpy.copyto on X, best of ``repeats``."""
    dst = np.empty_like(X)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, X)
        best = min(best, time.perf_counter() - t0)
    del dst
    return 2 * X.nbytes / best


# -- recording runs -----------------------------------------------------------------------------
class Recorder:
    """Timestamps (and optionally copies of W, H) after every iteration."""

    def __init__(self, keep: bool):
        self.keep = keep
        self.t0 = None
        self.times: list[float] = []
        self.snapshots: list[tuple[np.ndarray, np.ndarray]] = []

    def start(self):
        self.t0 = time.perf_counter()

    def record(self, W: np.ndarray, H: np.ndarray):
        self.times.append(time.perf_counter() - self.t0)
        if self.keep:
            self.snapshots.append((W.copy(), H.copy()))

    def per_iteration(self) -> float:
        gaps = np.diff(self.times)
        return float(np.median(gaps)) if len(gaps) else float("nan")


def record_sklearn(X, W0, H0, solver, max_iter, keep):
    """Run scikit-learn's NMF and record every iteration (wraps its private update functions)."""
    rec = Recorder(keep)
    if solver == "cd":
        original = sk_nmf._update_coordinate_descent
        calls = [0]

        def wrapped(Xa, W, Ht, *args):
            out = original(Xa, W, Ht, *args)
            calls[0] += 1
            if calls[0] % 2 == 0:  # after the H update: (Xa, W, Ht) = (X.T, Ht, W)
                rec.record(Ht, W.T)
            return out

        sk_nmf._update_coordinate_descent = wrapped
    else:
        original = sk_nmf._multiplicative_update_h

        def wrapped(Xa, W, H, *args, **kwargs):
            out = original(Xa, W, H, *args, **kwargs)
            rec.record(W, out)
            return out

        sk_nmf._multiplicative_update_h = wrapped
    try:
        model = SkNMF(W0.shape[1], solver=solver, init="custom", max_iter=max_iter, tol=0)
        rec.start()
        W = model.fit_transform(X, W=W0.copy(), H=H0.copy())
        elapsed = time.perf_counter() - rec.t0
    finally:
        if solver == "cd":
            sk_nmf._update_coordinate_descent = original
        else:
            sk_nmf._multiplicative_update_h = original
    return rec, W, model.components_, elapsed


def record_ours(X, W0, H0, solver, max_iter):
    """Run stemnmf's solver with a callback that keeps every iterate."""
    rec = Recorder(True)
    original = ours.solve if solver != "compressed" else ours.solve_compressed

    def callback(it, Wt, H, value):
        rec.record(Wt.T, H)
        return False

    def patched(*args, **kwargs):
        kwargs["callback"] = callback
        return original(*args, **kwargs)

    name = "solve" if solver != "compressed" else "solve_compressed"
    setattr(ours, name, patched)
    try:
        model = NMF(W0.shape[1], solver=solver, max_iter=max_iter, tol=0)
        rec.start()
        model.fit_transform(X, W=W0, H=H0)
    finally:
        setattr(ours, name, original)
    return rec


def first_reaching(X, rec: Recorder, target: float) -> tuple[int | None, float]:
    """(1-based iteration, error) of the first snapshot at or below target, by bisection."""
    errors: dict[int, float] = {}

    def err(i):
        if i not in errors:
            W, H = rec.snapshots[i]
            errors[i] = exact_error(X, W, H)
        return errors[i]

    lo, hi = 0, len(rec.snapshots) - 1
    if err(hi) > target:
        return None, err(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if err(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo + 1, err(lo)


def timed_fit(make, X, W0, H0, repeats=2) -> float:
    best = np.inf
    for _ in range(repeats):
        model = make()
        t0 = time.perf_counter()
        model.fit_transform(X, W=W0.copy(), H=H0.copy())
        best = min(best, time.perf_counter() - t0)
    return best


def _row(label, it, err, rec, make, X, W0, H0):
    """A table row: time a plain run to the first iteration reaching the target (or to the last one)."""
    reached = it is not None
    it = it if reached else len(rec.times)
    return (label, it, reached, timed_fit(lambda: make(it), X, W0, H0), rec.per_iteration(), err)


# -- one size -------------------------------------------------------------------------------------
def run_size(name: str, k: int, seed: int, cd_max: int, ours_max: int, compressed_max: int) -> list[str]:
    cfg = SIZES[name]
    t0 = time.perf_counter()
    X = make_patterns(seed=seed, **cfg)
    n, m = X.shape
    print(f"\n## {name}: X {n} x {m} float32 ({X.nbytes / 2**20:.0f} MiB), k = {k}, "
          f"made in {time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.2f}")
    bandwidth = copy_bandwidth(X)
    bound = X.nbytes / bandwidth
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write) -> bound {bound * 1e3:.1f} ms per pass over X")

    init = NMF(k, init="nndsvda", max_iter=0, random_state=seed)
    W0 = init.fit_transform(X)
    H0 = init.components_.copy()

    rows = []
    # scikit-learn MU, 200 iterations: the target
    rec, W, H, t_mu = record_sklearn(X, W0, H0, "mu", 200, keep=False)
    target = exact_error(X, W, H)
    print(f"target: sklearn MU after 200 iterations, ||X - WH|| = {target:.6g} (start {exact_error(X, W0, H0):.6g})")
    rows.append(("sklearn MU (baseline)", 200, True, t_mu, rec.per_iteration(), target))

    # scikit-learn CD
    rec, *_ = record_sklearn(X, W0, H0, "cd", cd_max, keep=True)
    it, err = first_reaching(X, rec, target)
    rows.append(_row("sklearn CD", it, err, rec, lambda i: SkNMF(k, solver="cd", init="custom", max_iter=i, tol=0),
                     X, W0, H0))
    del rec

    for solver, max_iter in (("hals", ours_max), ("compressed", compressed_max), ("mu", 200)):
        rec = record_ours(X, W0, H0, solver, max_iter)
        it, err = first_reaching(X, rec, target)
        rows.append(_row(f"stemnmf {solver}", it, err, rec, lambda i, s=solver: NMF(k, solver=s, max_iter=i, tol=0),
                         X, W0, H0))
        del rec

    t_cd_ref = rows[1][3]
    lines = [
        f"### {name}: {n} x {m}, k = {k} (copy bandwidth {bandwidth / 1e9:.1f} GB/s, "
        f"bound {bound * 1e3:.1f} ms/pass; load average {os.getloadavg()[0]:.2f})",
        "",
        "| method | iterations to target | time to target (s) | x faster than sklearn MU | x faster than sklearn CD "
        "| s / iteration | / bandwidth bound | final error / target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, it, reached, t, per_it, err in rows:
        lines.append(
            f"| {label} | {it if reached else f'{it} (not reached)'} | {t:.3f} | {t_mu / t:.1f} | "
            f"{(t_cd_ref / t) if np.isfinite(t_cd_ref) else float('nan'):.2f} | {per_it:.4f} | {per_it / bound:.1f} | "
            f"{err / target:.4f} |"
        )
    print("\n".join(lines))
    del X
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,large", help="comma-separated: small (10,000 x 4,096), large (15,000 x 16,384)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="limit every method to this many threads (BLAS and stemnmf); default: all cores",
    )
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        os.environ["STEMNMF_NUM_THREADS"] = str(args.threads)
        threadpool_limits(args.threads)
    warnings.simplefilter("ignore")  # scikit-learn's convergence warnings (tol=0)
    header = [
        f"# NMF speed ({datetime.date.today()})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
        f"Python {platform.python_version()}, NumPy {np.__version__}, scikit-learn {sklearn.__version__}; "
        f"load average at start {os.getloadavg()[0]:.2f}.",
        f"Command: .venv/bin/python bench/nmf_speed.py --sizes {args.sizes} --k {args.k} --seed {args.seed}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f" (threads per method: {args.threads or os.cpu_count()})",
    ]
    print("\n".join(header))
    out = header
    for name in args.sizes.split(","):
        name = name.strip()
        if name == "small":
            out += [""] + run_size(name, args.k, args.seed, cd_max=150, ours_max=150, compressed_max=400)
        else:
            out += [""] + run_size(name, args.k, args.seed, cd_max=60, ours_max=60, compressed_max=300)
    return 0


if __name__ == "__main__":
    sys.exit(main())
