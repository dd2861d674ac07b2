"""Speed and memory of stemnmf.featurize against pyxem's get_azimuthal_integral2d.

A synthetic 4D-STEM scan (float32 patterns of a direct beam and spots on four
rings, turned from position to position, with Gaussian noise) is written once to
a temporary HDF5 file, chunked by scan row, and read back lazily, so every run
streams it from the file. Each measurement runs in its own process, so its peak
resident memory (ru_maxrss) is its own.

    .venv/bin/python bench/features_speed.py                  # 200 x 200 x 128 x 128, ~5 min
    .venv/bin/python bench/features_speed.py --scan 60 --pyxem-rows 4   # quick look

Cases:

* stemnmf AA / RV, full: featurize(dataset, 'aa' | 'rv'): both passes (statistics
  for the origin, beam and rings, then the features);
* stemnmf AA / RV, features only: rings, r_min and origin given, one pass: the
  work pyxem's polar transform does;
* stemnmf AA with drifting origins: per-position origins (a plane, +-3 px);
* BD and raw: patterns per second;
* pyxem: get_azimuthal_integral2d(npt=64, npt_azim=72) on the first
  ``--pyxem-rows`` scan rows of the same file (lazy signal, dask threads),
  extrapolated per pattern;
* memory: AA on the scan and on one of half as many rows, with the same chunk size.

The machine is shared, so timings are noisy; the ratios come from the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RINGS = [(9.5, 20.5), (20.5, 31.5), (31.5, 44.5), (44.5, 60.0)]


def make_scan(path: Path, sy: int, sx: int, det: int, seed: int = 0) -> None:
    """Write a synthetic scan to ``path`` (HDF5, /data chunked by row)."""
    import h5py

    rng = np.random.default_rng(seed)
    c = (det - 1) / 2
    y, x = np.mgrid[:det, :det]

    def disk(cy, cx, r, a):
        return a * np.clip(r + 0.5 - np.hypot(y - cy, x - cx), 0, 1)

    # 36 orientations of a pattern with six-fold spots on four rings
    bases = []
    for k in range(36):
        img = disk(c, c, 5, 500.0) + 2.0
        for radius, amp, off in ((15, 60, 0), (26, 40, 30), (38, 25, 0), (52, 15, 30)):
            for j in range(6):
                t = np.radians(k * 10 / 6 + off + 60 * j)
                img += disk(c + radius * np.sin(t), c + radius * np.cos(t), 4, amp)
        bases.append(img.astype(np.float32))
    bases = np.stack(bases)
    with h5py.File(path, "w") as h5:
        dset = h5.create_dataset("data", (sy, sx, det, det), np.float32, chunks=(1, sx, det, det))
        grain = (np.arange(sy)[:, None] // 10 * 7 + np.arange(sx)[None, :] // 10) % 36
        for i in range(sy):
            row = bases[grain[i]]
            row = row + rng.standard_normal(row.shape, dtype=np.float32) * np.sqrt(row)
            dset[i] = np.maximum(row, 0)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(args) -> dict:
    """One measurement, in this process; returns a dict for the parent."""
    import stemnmf
    from stemnmf.engine import Engine

    dataset = stemnmf.load(args.path, lazy=True)
    sy, sx, qy, qx = dataset.shape
    engine = Engine(progress=False, chunk_rows=args.chunk_rows, n_threads=args.threads)
    options = {}
    rep = args.case
    if args.case.endswith("-only"):
        rep = args.case[: -len("-only")]
        options = dict(rings=RINGS, r_min=9.5, r_max=60.0, origin=((qy - 1) / 2, (qx - 1) / 2))
    if args.case == "aa-drift":
        rep = "aa"
        yy, xx = np.mgrid[:sy, :sx]
        centre = (qy - 1) / 2
        drift = np.stack([3 * (yy / max(sy - 1, 1) - 0.5) * 2, 3 * (xx / max(sx - 1, 1) - 0.5) * 2], axis=-1)
        dataset = dataset.replace(origins=(centre + drift).astype(np.float32))
        options = dict(rings=RINGS, r_min=9.5, r_max=58.0)
    if args.case.startswith("pyxem"):
        return run_pyxem(args)
    if args.case == "read":  # the floor: every byte of every pattern read once through the engine
        start = time.perf_counter()
        engine.map(_pattern_sums, dataset, finite=False)
        return dict(case="read only", n=sy * sx, seconds=time.perf_counter() - start, features=0,
                    peak_mib=peak_mib())
    if args.case == "aa-memory":  # compute only: the first rows, in memory
        rows = min(args.pyxem_rows, sy)
        dataset = dataset.replace(data=np.asarray(dataset.data[:rows]), origins=None)
        rep = "aa"
        options = dict(rings=RINGS, r_min=9.5, r_max=60.0, origin=((qy - 1) / 2, (qx - 1) / 2))
        sy = rows
    # warm up (imports, first calls) on two patterns, outside the timing, as for pyxem
    importlib.import_module("scipy.signal")  # ring finding imports it on first use

    warm = stemnmf.load(args.path, lazy=True)
    warm = warm.replace(data=np.asarray(warm.data[:1, :2]))
    stemnmf.featurize(warm, "aa+rv+bd+raw", engine=Engine(progress=False), rings=RINGS, r_min=9.5, r_max=60.0,
                      origin=((qy - 1) / 2, (qx - 1) / 2), template="synthetic", disk_radius=5.0)
    start = time.perf_counter()
    X, description = stemnmf.featurize(dataset, rep, engine=engine, **options)
    seconds = time.perf_counter() - start
    return dict(case=args.case, n=sy * sx, seconds=seconds, features=int(X.shape[1]), peak_mib=peak_mib())


def _pattern_sums(block, chunk):
    """The sum of each pattern: one read of every byte, nothing else."""
    own = block[chunk.own]
    return own.reshape(chunk.n_positions, -1).sum(axis=1, keepdims=True)


def run_pyxem(args) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import dask.array as da
    import h5py
    import pyxem as pxm

    with h5py.File(args.path, "r") as h5:
        dset = h5["data"]
        sy, sx, qy, qx = dset.shape
        rows = min(args.pyxem_rows, sy)
        arr = da.from_array(dset, chunks=(1, sx, qy, qx))[:rows]
        # warm up (numba compilation) on two patterns, outside the timing
        warm = pxm.signals.LazyDiffraction2D(arr[:1, :2])
        warm.calibration.center = None
        warm.get_azimuthal_integral2d(npt=64, npt_azim=72, show_progressbar=False).compute(show_progressbar=False)
        in_memory = args.case == "pyxem-memory"
        if in_memory:  # read first, then a lazy signal over memory, so pyxem uses the same dask threads
            arr = da.from_array(arr.compute(), chunks=(1, sx, qy, qx))
        signal = pxm.signals.LazyDiffraction2D(arr)
        signal.calibration.center = None  # the pattern centre
        start = time.perf_counter()
        polar = signal.get_azimuthal_integral2d(npt=64, npt_azim=72, show_progressbar=False)
        polar.compute(show_progressbar=False)
        seconds = time.perf_counter() - start
    name = "pyxem get_azimuthal_integral2d" + (" (in memory)" if in_memory else "")
    return dict(case=name, n=rows * sx, seconds=seconds, features=64 * 72, peak_mib=peak_mib())


def spawn(path: Path, case: str, args, chunk_rows=None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--path", str(path), "--case", case,
           "--pyxem-rows", str(args.pyxem_rows), "--threads", str(args.threads)]
    if chunk_rows:
        cmd += ["--chunk-rows", str(chunk_rows)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=int, default=200, help="scan is scan x scan positions")
    parser.add_argument("--det", type=int, default=128)
    parser.add_argument("--pyxem-rows", type=int, default=50, help="scan rows pyxem runs on (extrapolated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest is kept")
    parser.add_argument("--write", type=Path, default=None, help="also write the table to this markdown file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-rows", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_case(args)))
        return

    n, det = args.scan, args.det
    with tempfile.TemporaryDirectory(prefix="stemnmf-bench-") as tmp:
        big, small = Path(tmp) / "scan.h5", Path(tmp) / "half.h5"
        t0 = time.perf_counter()
        make_scan(big, n, n, det)
        make_scan(small, n // 2, n, det)
        os.sync()  # the files' pages written back now, not during the timed runs
        size = big.stat().st_size / 1024**3
        print(f"wrote {n} x {n} x {det} x {det} float32 ({size:.2f} GiB) and a half scan in "
              f"{time.perf_counter() - t0:.0f} s to {tmp}", flush=True)
        names = {"aa": "stemnmf AA (both passes)", "rv": "stemnmf RV (both passes)",
                 "aa-only": "stemnmf AA (features only)", "rv-only": "stemnmf RV (features only)",
                 "aa-drift": "stemnmf AA, drifting origins", "bd": "stemnmf BD (both passes)"}
        cases = ("pyxem", "read", "aa", "rv", "aa-only", "rv-only", "aa-drift")
        # the shared machine is noisy: --repeat rounds of every case in turn (so that load hits
        # them alike), the fastest run of each kept; BD once
        runs: dict = {case: [] for case in cases}
        for round_ in range(args.repeat):
            for case in cases:
                runs[case].append(spawn(big, case, args))
            ratios = {c: runs[c][-1]["n"] / runs[c][-1]["seconds"] / (runs["pyxem"][-1]["n"] / runs["pyxem"][-1]["seconds"])
                      for c in ("aa-only", "rv-only", "aa", "rv")}
            print(f"  round {round_ + 1}: x pyxem " + ", ".join(f"{c} {r:.1f}" for c, r in ratios.items()), flush=True)
        runs["bd"] = [spawn(big, "bd", args)]
        rows = []
        for case in (*cases, "bd"):
            rows.append(min(runs[case], key=lambda r: r["seconds"]))
            rows[-1]["case"] = names.get(case, rows[-1]["case"])
            print(f"  {rows[-1]['case']}: {rows[-1]['n'] / rows[-1]['seconds']:.0f} patterns/s", flush=True)
        rows.append(dict(spawn(small, "raw", args), case="stemnmf raw (half scan)"))
        memory = [min((spawn(big, case, args) for _ in range(args.repeat)), key=lambda r: r["seconds"])
                  for case in ("pyxem-memory", "aa-memory")]
        memory[1]["case"] = "stemnmf AA (features only, in memory)"
        chunk = 8
        mem = [dict(spawn(path, rep, args, chunk), case=f"{rep}, {rows_} x {n}, {chunk} rows/chunk")
               for rep in ("aa", "rv", "bd") for path, rows_ in ((small, n // 2), (big, n))]
        print("  memory runs done", flush=True)

    lines = [
        f"Scan {n} x {n} x {det} x {det} float32 ({size:.2f} GiB), HDF5 chunked by row, read lazily; "
        f"{args.threads} threads; pyxem on the first {args.pyxem_rows} rows ({rows[0]['n']} patterns); "
        f"fastest of {args.repeat} runs per case (BD, raw and the memory runs: one).",
        "",
    ]

    def table(entries, baseline, floor=None):
        base = baseline["n"] / baseline["seconds"]
        extra = " x read floor |" if floor else ""
        out = ["| case | patterns | seconds | patterns/s | x pyxem |" + extra + " features | peak MiB |",
               "| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if floor else "") + " ---: | ---: |"]
        for r in entries:
            rate = r["n"] / r["seconds"]
            cell = f" {rate / (floor['n'] / floor['seconds']):.2f} |" if floor else ""
            out.append(f"| {r['case']} | {r['n']} | {r['seconds']:.1f} | {rate:.0f} | {rate / base:.1f} |{cell} "
                       f"{r['features']} | {r['peak_mib']:.0f} |")
        return out

    lines += ["Streamed from the file:", ""] + table(rows, rows[0], rows[1])
    lines += ["", "Compute only (the same first rows, in memory):", ""] + table(memory, memory[0])
    lines += ["", f"Peak memory against scan size (AA, RV and BD, both passes, {chunk} rows per chunk):", ""]
    lines += table(mem, rows[0])
    table = "\n".join(lines)
    print()
    print(table)
    if args.write:
        args.write.write_text(table + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
