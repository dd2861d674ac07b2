"""Peak resident memory of `stemnmf run` on a scan larger than its memory budget, per file format.

A simulated 32 x 32 x 256 x 256 Ag film is tiled into a larger scan, written as .npy and/or .h5,
and `stemnmf run SCAN --feature aa --k 4 --memory-budget BUDGET --no-report` runs on it in a fresh
process; its peak RSS (VmHWM) is printed against the budget (target: budget + 0.5 GiB).

    .venv/bin/python bench/memory_budget.py --tiles 4 --budget 1GiB --formats npy,h5   # 4 GiB scans
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import stemnmf
from stemnmf.engine import format_bytes, parse_bytes
from stemnmf.io import save_scan


def write_scans(folder: Path, tiles: int, formats: list[str]) -> dict[str, Path]:
    """The tiled film (32 tiles x 32 tiles of 32 x 32 positions) in each format."""
    dataset, _ = stemnmf.simulate("ag1", scan=(32, 32), det=(256, 256), seed=5)
    block = np.asarray(dataset.data, dtype=np.float32)
    shape = (32 * tiles, 32 * tiles, 256, 256)
    paths = {}
    if "npy" in formats:
        path = folder / "scan.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        for i in range(tiles):
            for j in range(tiles):
                out[32 * i : 32 * (i + 1), 32 * j : 32 * (j + 1)] = block
        out.flush()
        del out
        paths["npy"] = path
    if "h5" in formats:
        tiled = np.tile(block, (tiles, tiles, 1, 1))
        paths["h5"] = save_scan(folder / "scan.h5", dataset.replace(data=tiled))
        del tiled
    return paths


#: Runs `stemnmf run` as its child and prints the child's peak RSS (KiB), so each run is measured alone.
_MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_of_run(path: Path, outdir: Path, budget: str) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of `stemnmf run` on ``path`` in a fresh process."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "stemnmf", "run", str(path), "-o", str(outdir), "--overwrite", "--feature", "aa",
               "--k", "4", "--memory-budget", budget, "--no-report"]
    out = subprocess.run([sys.executable, "-c", _MEASURE, *command], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=4, help="tiles a side (scan of 32 x tiles positions a side)")
    parser.add_argument("--budget", default="1GiB")
    parser.add_argument("--formats", default="npy,h5")
    args = parser.parse_args()
    budget = parse_bytes(args.budget)
    with tempfile.TemporaryDirectory(prefix="stemnmf-memory-") as tmp:
        folder = Path(tmp)
        scans = write_scans(folder, args.tiles, args.formats.split(","))
        print("| format | scan | budget | peak RSS | peak - budget | s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, path in scans.items():
            peak, seconds = peak_of_run(path, folder / f"out-{name}", args.budget)
            print(f"| {name} | {format_bytes(path.stat().st_size)} | {format_bytes(budget)} | {format_bytes(peak)} | "
                  f"{format_bytes(peak - budget) if peak > budget else '-' + format_bytes(budget - peak)} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
