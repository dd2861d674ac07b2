"""Benchmark: calibration of a scan streamed from disk, against a straightforward NumPy script.

    python bench/calibrate_stream.py                 # 200 x 200 x 128 x 128 float32 (2.6 GB)
    python bench/calibrate_stream.py --scan 64       # a quick run

A synthetic scan (direct beam moving on a plane of descan, an elliptical ring,
Bragg disks of four grains, two hot pixels, Poisson noise) is written once to a
temporary HDF5 file (one chunk per scan row), which is deleted at the end.
HDF5 rather than .npy: a memory-mapped .npy counts every page read as
resident memory, which hides what a method really holds. Each method runs in its own
process, so its peak memory (RSS) is its own:

* ``stemnmf``: ``load(path, lazy=True)`` then ``calibrate(..., correct_shift=True,
  ellipse=True)`` (hot pixels, centre-of-mass origins, plane fit, shift
  correction, ellipse on the corrected mean pattern), then one more streamed
  pass that reads every calibrated pattern (what the next stage does).
  ``stemnmf-512M`` is the same with ``Engine(memory_budget="512MiB")``.
* ``numpy``: the script one writes by hand: the whole scan read into memory, mean
  pattern, the same hot-pixel rule, a loop over patterns with
  ``scipy.ndimage.center_of_mass`` of the thresholded beam and
  ``scipy.ndimage.shift`` (bilinear, in place), a plane fit with ``lstsq``,
  the mean of the corrected patterns and the same ellipse fit.

Timings are noisy: the machine is shared. The file is read through the page
cache when it fits in memory, so "from disk" is at best disk speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

DESCAN = ((0.02, -0.01), (0.005, 0.015))  # origin change (qy, qx) per scan row and per column, px
HOT = [(5, 100), (90, 17)]


def truth_origins(sy, sx, q):
    yy, xx = np.indices((sy, sx), dtype=np.float64)
    c = (q - 1) / 2.0
    oy = c - 0.6 + DESCAN[0][0] * (yy - sy / 2) + DESCAN[0][1] * (xx - sx / 2)
    ox = c + 0.4 + DESCAN[1][0] * (yy - sy / 2) + DESCAN[1][1] * (xx - sx / 2)
    return np.stack([oy, ox], axis=-1)


def write_scan(path, sy, sx, q, seed=0):
    """Write the synthetic scan row by row to an HDF5 file (one chunk per scan row, no compression)."""
    import h5py

    rng = np.random.default_rng(seed)
    origins = truth_origins(sy, sx, q)
    yy, xx = np.indices((q, q), dtype=np.float32)
    scale = q / 128.0
    probe_r, ring_r = 5.0 * scale, 34.0 * scale
    a, b, angle = ring_r * 1.04, ring_r / 1.04, np.radians(20.0)
    grains = [rng.uniform(-1, 1, (6, 2)) * 40 * scale for _ in range(4)]
    with h5py.File(path, "w") as h5:
        data = h5.create_dataset("data", shape=(sy, sx, q, q), dtype=np.float32, chunks=(1, sx, q, q))
        for y in range(sy):
            cy = origins[y, :, 0].astype(np.float32)[:, None, None]
            cx = origins[y, :, 1].astype(np.float32)[:, None, None]
            dy, dx = yy[None] - cy, xx[None] - cx
            u = dx * np.cos(angle) + dy * np.sin(angle)
            v = -dx * np.sin(angle) + dy * np.cos(angle)
            rho = np.hypot(u * ring_r / a, v * ring_r / b)
            row = 2.0 + 8.0 * np.exp(-((rho - ring_r) ** 2) / (2 * (1.5 * scale) ** 2))
            row += 400.0 * np.clip(probe_r + 0.5 - np.hypot(dy, dx), 0, 1)
            for half in (0, 1):
                cols = slice(half * (sx // 2), sx if half else sx // 2)
                for gy, gx in grains[(y * 2 // sy) * 2 + half]:
                    row[cols] += 40.0 * np.clip(probe_r + 0.5 - np.hypot(dy[cols] - gy, dx[cols] - gx), 0, 1)
            row = rng.poisson(row).astype(np.float32)
            for hy, hx in HOT:
                row[:, hy, hx] += 3000.0
            data[y] = row


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_stemnmf(path, out, budget=None):
    from stemnmf.calibrate import calibrate, pattern_statistics
    from stemnmf.engine import Engine
    from stemnmf.io import load

    t0 = time.perf_counter()
    dataset = load(path, lazy=True)
    engine = Engine(memory_budget=budget, progress=False)
    calibrated, report = calibrate(dataset, engine=engine, correct_shift=True, ellipse=True)
    t1 = time.perf_counter()
    mean, _ = pattern_statistics(calibrated, engine)
    t2 = time.perf_counter()
    np.save(out, report.origin_fit.fitted)
    return {
        "calibrate_s": t1 - t0,
        "consume_s": t2 - t1,
        "total_s": t2 - t0,
        "peak_rss_mib": peak_rss_mib(),
        "hot_pixels": report.hot_pixels.tolist(),
        "ellipse": list(report.ellipse.ellipse) if report.ellipse else None,
        "chunk_rows": engine.rows_per_chunk(dataset),
    }


def run_numpy(path, out):
    from scipy import ndimage

    from stemnmf.calibrate import fit_ellipse, find_hot_pixels  # the same rule and fit, on one image

    t0 = time.perf_counter()
    import h5py

    with h5py.File(path, "r") as h5:
        data = h5["data"][()]  # the whole scan in memory
    sy, sx, q, _ = data.shape
    mean = data.mean(axis=(0, 1))
    hot = np.argwhere(find_hot_pixels(mean))
    origins = np.empty((sy, sx, 2))
    for y in range(sy):
        for x in range(sx):
            p = data[y, x]
            for hy, hx in hot:
                window = p[max(hy - 1, 0) : hy + 2, max(hx - 1, 0) : hx + 2].copy()
                window[min(hy, 1), min(hx, 1)] = np.nan
                p[hy, hx] = np.nanmedian(window)
            beam = np.where(p > 0.5 * p.max(), p, 0)
            origins[y, x] = ndimage.center_of_mass(beam)
    yy, xx = np.indices((sy, sx))
    design = np.stack([np.ones(sy * sx), yy.ravel(), xx.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, origins.reshape(-1, 2), rcond=None)
    fitted = (design @ coef).reshape(sy, sx, 2)
    reference = fitted.reshape(-1, 2).mean(axis=0)
    total = np.zeros((q, q))
    for y in range(sy):
        for x in range(sx):
            data[y, x] = ndimage.shift(data[y, x], reference - fitted[y, x], order=1, mode="constant")
            total += data[y, x]
    corrected_mean = total / (sy * sx)
    fit = fit_ellipse(corrected_mean, center=tuple(reference))
    t2 = time.perf_counter()
    np.save(out, fitted)
    return {
        "calibrate_s": t2 - t0,
        "consume_s": 0.0,
        "total_s": t2 - t0,
        "peak_rss_mib": peak_rss_mib(),
        "hot_pixels": hot.tolist(),
        "ellipse": list(fit.ellipse),
    }


RUNS = {
    "numpy": lambda path, out: run_numpy(path, out),
    "stemnmf": lambda path, out: run_stemnmf(path, out),
    "stemnmf-512M": lambda path, out: run_stemnmf(path, out, budget="512MiB"),
}


def worker(args):
    print(json.dumps(RUNS[args.worker](args.path, args.out)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", type=int, default=200, help="scan side (default 200)")
    parser.add_argument("--det", type=int, default=128, help="detector side (default 128)")
    parser.add_argument("--workdir", default=None, help="where the temporary file goes")
    parser.add_argument("--worker", choices=sorted(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sy = sx = args.scan
    q = args.det
    n = sy * sx
    tmp = tempfile.mkdtemp(prefix="stemnmf-calibrate-stream-", dir=args.workdir)
    try:
        path = os.path.join(tmp, "scan.h5")
        t = time.perf_counter()
        write_scan(path, sy, sx, q)
        size = os.path.getsize(path) / 1024**3
        print(f"wrote {sy} x {sx} x {q} x {q} float32 ({size:.2f} GiB) in {time.perf_counter() - t:.0f} s")
        results = {}
        for method in RUNS:
            out = os.path.join(tmp, f"origins-{method}.npy")
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", method, "--path", path, "--out", out],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"{method} run failed")
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[method]["origins"] = np.load(out)
        truth = truth_origins(sy, sx, q)
        base = results["numpy"]
        print()
        print(f"{'method':<13} {'calibrate s':>11} {'+ read s':>9} {'patterns/s':>11} {'vs numpy':>9} "
              f"{'peak RSS MiB':>13} {'RSS vs numpy':>13} {'origin err px':>14}")
        for method in RUNS:
            r = results[method]
            rate = n / r["total_s"]
            err = np.abs(r["origins"] - truth).max()
            print(f"{method:<13} {r['calibrate_s']:>11.1f} {r['consume_s']:>9.1f} {rate:>11.0f} "
                  f"{base['total_s'] / r['total_s']:>8.2f}x {r['peak_rss_mib']:>13.0f} "
                  f"{r['peak_rss_mib'] / base['peak_rss_mib']:>12.2f}x {err:>14.3f}")
        print()
        for method in RUNS:
            r = results[method]
            e = r["ellipse"]
            ellipse = "none" if e is None else f"a/b={e[0] / e[1]:.4f} angle={np.degrees(e[2]):.2f} deg"
            print(f"{method}: hot pixels {r['hot_pixels']}, ellipse {ellipse}")
        print(f"truth: hot pixels {[list(h) for h in HOT]}, ellipse a/b={1.04**2:.4f} angle=20.00 deg")
        print(f"stemnmf engine: {results['stemnmf']['chunk_rows']} scan rows per chunk with the default 2 GiB "
              f"budget, {results['stemnmf-512M']['chunk_rows']} with 512 MiB; {os.cpu_count()} CPU threads")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
