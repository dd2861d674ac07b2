"""Lazy-read throughput of stemnmf.io.load against reading the file whole with NumPy/h5py.

One scan (float32, 64 x 64 patterns, ``--rows`` x 128 positions; 256 MiB by default) is
written as .npy, chunked HDF5 and Merlin .mib. Each case runs in its own process (so its
peak memory is its own) and computes the same float64 total of every pattern:

* baseline: NumPy/h5py read the whole file into memory (np.load / dset[()] / np.fromfile of
  the .mib records), then sum each pattern in float64;
* stemnmf eager: ``load(path, lazy=False)`` (which also checks every value for NaN/Inf,
  negatives and large integers), then the same sums through ``Engine.map``;
* stemnmf lazy: ``load(path, lazy=True)``, then the sums streamed through
  ``Engine(memory_budget='64MiB', n_threads=2).map``.

Reported: MB/s of the file, the ratio to the baseline (higher is faster), and the growth
of the peak resident memory during the case. The files are read from the page cache
(written just before); the machine is shared, so timings are noisy.

    .venv/bin/python bench/io_lazy.py            # ~1 min
    .venv/bin/python bench/io_lazy.py --rows 64  # quicker
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np

    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

    case, path, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    from stemnmf.engine import Engine
    from stemnmf.io import load
    import h5py

    def totals(block, chunk):
        own = block[chunk.own]
        return own.reshape(own.shape[0] * own.shape[1], -1).sum(axis=1, dtype=np.float64)

    # warm up (imports done on first use, thread pools) on a small file of the same kind
    warm = path.replace("scan.", "warm.")
    for lazy in (False, True):
        small = load(warm, lazy=lazy, scan_shape=(2, 4) if warm.endswith(".mib") else None)
        Engine(n_threads=2, progress=False).map(totals, small)

    base = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")
    t0 = time.perf_counter()
    if case == "baseline":
        if path.endswith(".npy"):
            data = np.load(path)
        elif path.endswith(".h5"):
            with h5py.File(path, "r") as h5:
                data = h5["data"][()]
        else:
            rec = np.dtype([("h", "V384"), ("d", ">u4", (64, 64))])
            data = np.fromfile(path, dtype=rec)["d"]
        total = float(data.reshape(rows * cols, -1).sum(axis=1, dtype=np.float64).sum())
    else:
        opts = {"scan_shape": (rows, cols)} if path.endswith(".mib") else {}
        ds = load(path, lazy=(case == "lazy"), **opts)
        t_load = time.perf_counter() - t0
        budget = "64MiB" if case == "lazy" else None
        engine = Engine(memory_budget=budget, n_threads=2, progress=False)
        total = float(engine.map(totals, ds).sum())
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "total": total, "growth": status("VmHWM:") - base,
                      "load": locals().get("t_load", 0.0)}))
    """
)


def write_files(folder: Path, rows: int, cols: int) -> list[Path]:
    import h5py

    header = _mib_header()
    npy = np.lib.format.open_memmap(folder / "scan.npy", mode="w+", dtype=np.float32, shape=(rows, cols, 64, 64))
    with h5py.File(folder / "scan.h5", "w") as h5, open(folder / "scan.mib", "wb") as mib:
        dset = h5.create_dataset("data", shape=(rows, cols, 64, 64), dtype=np.float32, chunks=(1, cols, 64, 64))
        rng = np.random.default_rng(0)
        for y in range(rows):
            row = rng.integers(0, 1000, size=(cols, 64, 64)).astype(np.float32)
            npy[y] = row
            dset[y] = row
            for x in range(cols):
                mib.write(header)
                mib.write(row[x].astype(">u4").tobytes())
    npy.flush()
    del npy
    small = np.ones((2, 4, 64, 64), np.float32)
    np.save(folder / "warm.npy", small)
    with h5py.File(folder / "warm.h5", "w") as h5:
        h5["data"] = small
    with open(folder / "warm.mib", "wb") as mib:
        for frame in small.reshape(-1, 64, 64):
            mib.write(header + frame.astype(">u4").tobytes())
    return [folder / "scan.npy", folder / "scan.h5", folder / "scan.mib"]


def _mib_header() -> bytes:
    fields = ["MQ1", "000001", "00384", "01", "0064", "0064", "U32", "   1x1", "01", "2024-01-01 00:00:00.000000",
              "0.001000", "0", "0", "0", "1.000000E+1", *["0.000000E+0"] * 7, "3RX", *["125"] * 30,
              "2024-01-01T00:00:00.000000000Z", "1000000ns", "12", ""]
    return ",".join(fields).encode("ascii").ljust(384, b"\0")


def run(case: str, path: Path, rows: int, cols: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, case, str(path), str(rows), str(cols)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=128, help="scan rows (128 columns; 2 MiB per row)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case (the fastest is kept)")
    args = parser.parse_args()
    cols = 128
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_files(Path(tmp), args.rows, cols)
        print(f"wrote {len(paths)} files of {args.rows} x {cols} x 64 x 64 in {time.perf_counter() - t0:.1f} s")
        print(f"{'file':<10}{'case':<16}{'MB/s':>9}{'ratio':>8}{'load s':>8}{'total s':>9}{'peak RSS +':>12}")
        for path in paths:
            size = path.stat().st_size / 1e6
            results = {}
            for case in ("baseline", "stemnmf eager", "stemnmf lazy"):
                key = case.split()[-1]
                best = min((run(key, path, args.rows, cols) for _ in range(args.repeat)), key=lambda r: r["seconds"])
                results[case] = best
            base = results["baseline"]
            for case, r in results.items():
                assert abs(r["total"] - base["total"]) <= 1e-9 * abs(base["total"]), (case, r, base)
                print(f"{path.suffix:<10}{case:<16}{size / r['seconds']:>9.0f}{base['seconds'] / r['seconds']:>8.2f}"
                      f"{r['load']:>8.2f}{r['seconds']:>9.2f}{r['growth'] / 2**20:>10.0f} MiB")


if __name__ == "__main__":
    main()
