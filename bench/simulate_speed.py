"""Benchmark: how fast stemnmf.simulate draws a 4D-STEM scan.

Compares the simulator (weight maps blurred across the scan once, disks added
block by block, inverse-transform Poisson noise) with a straightforward NumPy
loop over probe positions that computes every pattern from the sample
(per grain and reflection: excitation error, kinematic intensity, disk; then a
detector blur per pattern, the blur across the scan on the stack of patterns
and numpy's Poisson sampler), using the same sample and physics.

The baseline runs on a small sub-scan and is extrapolated to the full scan
(time per unblurred pattern x patterns needed including the blur margin, time
per pattern of the scan blur and of the noise x scan size). Both paths are also
compared noise-free on the sub-scan, so the speed-up is not bought with a
different answer.

Run:  .venv/bin/python bench/simulate_speed.py [--presets ag1 ag3] [--sub 8] [--threads 2]
Timings on a shared machine are noisy; the ratio is measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from stemnmf.simulate import resolve_parameters, simulate_to_file
from stemnmf.simulate.core import _build, _prepare
from stemnmf.simulate.render import render_rows
from stemnmf.simulate.physics import Reflections, amorphous_image, disk_stencils, kinematic_intensity
from stemnmf.simulate.scattering import amorphous_scattered_fraction


def baseline_block(params, seed, rows, cols, n_timing=80):
    """Straightforward per-position simulation of scan rows x cols; returns (noise-free, noisy, timings).

    The time to draw one pattern is measured on ``n_timing`` positions drawn at
    random over the whole (padded) scan, so that it is representative of the
    scan and not of the sub-scan alone.
    """
    crystal, optics, sample, _ = _prepare(params, seed)
    reflections = Reflections.of(crystal, optics)
    pad, sigma = sample.pad, params.scan_blur
    radius = int(4 * sigma + 0.5) if sigma > 0 else 0
    qy, qx = params.det
    dense = [sample.dense(i, padded=True) for i in range(len(sample.grains))]
    am_image = amorphous_image(dataclasses.replace(optics, detector_blur=0.0))
    am_fraction = params.carbon_thickness * amorphous_scattered_fraction(optics.beam_energy, optics.wavelength)
    central, central_corner = disk_stencils([optics.origin], optics.disk_radius, 0.0)

    def add(pattern, stencil, corner):
        cy, cx = corner
        n = stencil.shape[0]
        y0, x0, y1, x1 = max(cy, 0), max(cx, 0), min(cy + n, qy), min(cx + n, qx)
        if y1 > y0 and x1 > x0:
            pattern[y0:y1, x0:x1] += stencil[y0 - cy : y1 - cy, x0 - cx : x1 - cx]

    def draw(py, px):
        pattern = np.zeros((qy, qx))
        scattered = 0.0
        for grain, t in zip(sample.grains, dense):
            if t[py, px] <= 0:
                continue
            centres, s = reflections.in_lab(grain.rotation, optics)
            intensity = kinematic_intensity(reflections.prefactor, s, t[py, px])
            scattered += intensity.sum()
            keep = intensity >= params.min_intensity
            stencils, corners = disk_stencils(centres[keep], optics.disk_radius, 0.0)
            for value, stencil, corner in zip(intensity[keep], stencils, corners):
                add(pattern, value * stencil, corner)
        total = scattered + am_fraction
        cap = min(1.0, params.max_scattered / total) if total > 0 else 1.0
        pattern *= cap
        pattern += cap * params.carbon_thickness * am_image
        add(pattern, (1 - cap * total) * central[0], central_corner[0])
        if params.detector_blur > 0:
            pattern = ndimage.gaussian_filter(pattern, params.detector_blur, mode="constant")
        return pattern * params.dose

    ys = range(rows.start + pad - radius, rows.stop + pad + radius)
    xs = range(cols.start + pad - radius, cols.stop + pad + radius)
    stack = np.zeros((len(ys), len(xs), qy, qx))
    for a, py in enumerate(ys):
        for b, px in enumerate(xs):
            stack[a, b] = draw(py, px)
    rng = np.random.default_rng(seed)
    py_all, px_all = sample.padded_shape
    picks = [(int(rng.integers(py_all)), int(rng.integers(px_all))) for _ in range(n_timing)]
    started = time.process_time()
    for py, px in picks:
        draw(py, px)
    t_patterns = time.process_time() - started
    started = time.process_time()
    if sigma > 0:
        stack = ndimage.gaussian_filter(stack, (sigma, sigma, 0, 0), mode="constant", truncate=4.0)
    clean = stack[radius : radius + len(rows), radius : radius + len(cols)]
    t_blur = time.process_time() - started
    started = time.process_time()
    noisy = np.random.default_rng(seed).poisson(clean).astype(np.float32)
    t_noise = time.process_time() - started
    return clean, noisy, {"patterns": (t_patterns, n_timing), "blur": (t_blur, len(ys) * len(xs)),
                          "noise": (t_noise, len(rows) * len(cols))}  # fmt: skip


def _generate(params, seed, threads):
    """Wall and CPU seconds to build the model and draw every pattern with noise (blocks of 2 rows, not stored)."""
    wall, cpu = time.perf_counter(), time.process_time()
    model = _build(params, seed)[3]
    sy = params.scan[0]
    for a in range(0, sy, 2):
        render_rows(model, a, min(sy, a + 2), threads)
    return time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["ag1", "ag3"])
    parser.add_argument("--sub", type=int, default=6, help="side of the baseline's sub-scan (positions)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the scan files (deleted after)")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the start")
    results = []
    for preset in args.presets:
        params = resolve_parameters(preset)
        sy, sx = params.scan
        qy, qx = params.det
        n = sy * sx

        t_one, cpu_one = _generate(params, args.seed, 1)
        t_many, _ = _generate(params, args.seed, args.threads)

        path = Path(args.tmp) / f"bench-simulate-{preset}-{os.getpid()}.h5"
        started = time.perf_counter()
        simulate_to_file(path, preset, seed=args.seed, overwrite=True, n_threads=args.threads)
        t_file = time.perf_counter() - started
        size = path.stat().st_size
        path.unlink()

        k = args.sub
        rows = range(sy // 2 - k // 2, sy // 2 - k // 2 + k)
        cols = range(sx // 2 - k // 2, sx // 2 - k // 2 + k)
        model = _build(resolve_parameters(preset, overrides={"noise": False}), args.seed)[3]
        fast = model.render(rows.start, rows.stop)[:, cols.start : cols.stop].astype(np.float64)
        clean, _, timings = baseline_block(params, args.seed, rows, cols)
        # away from the detector edge: there the baseline blurs after clipping disks to the detector
        inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
        difference = np.abs(fast - clean)[inner].max() / clean.max()
        flux = abs(fast.sum() - clean.sum()) / clean.sum()

        radius = int(4 * params.scan_blur + 0.5)
        padded = (sy + 2 * radius) * (sx + 2 * radius)
        per = {name: t / count for name, (t, count) in timings.items()}
        t_base = per["patterns"] * padded + per["blur"] * padded + per["noise"] * n
        results.append(dict(preset=preset, n=n, det=(qy, qx), one=t_one, cpu=cpu_one, many=t_many, file=t_file, size=size,
                            base=t_base, per=per, diff=difference, flux=flux))  # fmt: skip

    print()
    header = (
        f"{'preset':<7} {'scan x pattern':>17} {'baseline CPU':>14} {'stemnmf CPU':>13} {'speed-up':>9} "
        f"{'stemnmf 1 thr':>14} {'stemnmf ' + str(args.threads) + ' thr':>14} {'file, ' + str(args.threads) + ' thr':>14}"
        f" {'max diff':>9}"
    )
    print(header)
    for r in results:
        n, (qy, qx) = r["n"], r["det"]
        side = int(round(n**0.5))
        print(
            f"{r['preset']:<7} {f'{side}x{side} x {qy}x{qx}':>17} "
            f"{r['base']:>6.0f} s {n / r['base']:>4.0f}/s {r['cpu']:>5.1f} s {n / r['cpu']:>4.0f}/s "
            f"{r['base'] / r['cpu']:>8.1f}x {r['one']:>6.1f} s {n / r['one']:>4.0f}/s "
            f"{r['many']:>6.1f} s {n / r['many']:>4.0f}/s {r['file']:>6.1f} s {n / r['file']:>4.0f}/s {r['diff']:>9.1e}"
        )
    print()
    print("seconds and patterns per second for the whole scan. baseline CPU: per-position NumPy loop, CPU seconds")
    print(f"  on one thread, timed on {args.sub}x{args.sub} positions and 80 random ones and extrapolated. stemnmf CPU:")
    print("  CPU seconds on one thread to build the model and draw every pattern with noise (not stored).")
    print("  speed-up: baseline CPU / stemnmf CPU. stemnmf 1 thr / N thr: wall seconds of the same.")
    print("  file: simulate_to_file end to end (HDF5 write included), wall seconds. max diff: largest difference")
    print("  of the two noise-free sub-scans relative to their brightest pixel, 3 px from the detector edge.")
    for r in results:
        per = r["per"]
        print(
            f"  {r['preset']}: baseline {per['patterns'] * 1e3:.1f} ms/pattern to draw, {per['blur'] * 1e3:.1f} ms/pattern"
            f" scan blur, {per['noise'] * 1e3:.1f} ms/pattern Poisson (CPU); file {r['size'] / 1024**3:.2f} GiB;"
            f" total counts differ by {r['flux']:.1e}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
