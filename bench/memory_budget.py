"""Peak resident memory of `stemnmf run` on scans larger than its memory budget (and than RAM), per format.

A simulated 32 x 32 Ag film is tiled into a larger scan and written, one scan row at a time (the
writer never holds the scan), as .npy and HDF5 (float32), a Merlin .mib (U16) and a NanoMegas .blo
(uint8), with 256 x 256 patterns (``--det 512`` repeats each pixel 2 x 2); then `stemnmf run SCAN
--feature aa --k 4 --memory-budget BUDGET --no-report` runs on each in a fresh process, and its peak
RSS (the child's ``ru_maxrss``, file-backed pages included) is printed against the budget (target:
budget + 0.5 GiB). Each file is deleted before the next is written, so the disk needs room for one
scan at a time.

``--ram SIZE`` runs each `stemnmf run` in a cgroup (v1 memory controller, root needed) that holds at
most SIZE of memory, page cache included: a scan larger than SIZE is then larger than the RAM the
run has, without writing scans larger than the machine's RAM.

    .venv/bin/python bench/memory_budget.py --tiles 4 --budget 1GiB --formats npy,h5        # 4 GiB scans
    .venv/bin/python bench/memory_budget.py --tiles 4 --format-tiles mib=6,blo=8 --budget 1GiB --ram 2GiB \\
        --formats blo,mib,npy,h5                          # 4-4.5 GiB scans, each run given 2 GiB of RAM
    .venv/bin/python bench/memory_budget.py --tiles 8 --budget 2GiB --ram 4GiB --formats npy   # 16 GiB
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

import stemnmf
from stemnmf.engine import format_bytes, parse_bytes
from stemnmf.io import save_scan

#: Side of the simulated film that is tiled.
FILM = 32


def film(det: int) -> np.ndarray:
    """The 32 x 32 x 256 x 256 float32 Ag film (``ag1``, seed 5), pixels repeated 2 x 2 when ``det`` is 512."""
    dataset, _ = stemnmf.simulate("ag1", scan=(FILM, FILM), det=(256, 256), seed=5)
    block = np.asarray(dataset.data, dtype=np.float32)
    if det == 512:
        block = block.repeat(2, axis=2).repeat(2, axis=3)
    return block


def tiled_rows(block: np.ndarray, tiles: int):
    """Rows of the scan tiled ``tiles`` x ``tiles`` from ``block``, one (sx, qy, qx) row at a time."""
    for row in range(FILM * tiles):
        yield np.tile(block[row % FILM], (tiles, 1, 1))


def write_npy(path: Path, block: np.ndarray, tiles: int) -> Path:
    shape = (FILM * tiles, FILM * tiles, *block.shape[2:])
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        for row in tiled_rows(block, tiles):
            fh.write(row.astype("<f4").tobytes())
    return path


def write_h5(path: Path, block: np.ndarray, tiles: int) -> Path:
    # a stemnmf scan file: written small by save_scan (its layout and calibration), then grown row by row
    small = save_scan(path, stemnmf.Dataset4D(block[:1, :1]))
    side = FILM * tiles
    with h5py.File(small, "r+") as f:
        name = next(n for n, d in _datasets(f) if d.ndim == 4)
        calibration = dict(f[name].attrs)
        del f[name]
        dset = f.create_dataset(name, shape=(side, side, *block.shape[2:]), dtype="f4",
                                chunks=(1, side, *block.shape[2:]))
        dset.attrs.update(calibration)
        for i, row in enumerate(tiled_rows(block, tiles)):
            dset[i] = row
    return path


def _datasets(group, prefix=""):
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            yield f"{prefix}/{key}", item
        else:
            yield from _datasets(item, f"{prefix}/{key}")


def _mib_header(index: int, det: int) -> bytes:
    """A Merlin MQ1 frame header (U16, one chip layout), 384 bytes."""
    fields = ["MQ1", f"{index:06d}", "00384", "04", f"{det:04d}", f"{det:04d}", "U16", "   2x2", "0F",
              "2024-01-01 00:00:00.000000", "0.001000", "0", "0", "0", "1.000000E+1", *["0.000000E+0"] * 7,
              "3RX", *["125"] * 30, "2024-01-01T00:00:00.000000000Z", "1000000ns", "12", ""]
    return ",".join(fields).encode("ascii").ljust(384, b"\0")


def write_mib(path: Path, block: np.ndarray, tiles: int) -> Path:
    scale = 4000.0 / max(float(np.percentile(block, 99.99)), 1e-6)
    det = block.shape[-1]
    index = 1
    with open(path, "wb") as fh:
        for row in tiled_rows(block, tiles):
            counts = np.clip(row * scale, 0, 65535).astype(">u2")
            for frame in counts:
                fh.write(_mib_header(index, det))
                fh.write(frame.tobytes())
                index += 1
    return path


def write_blo(path: Path, block: np.ndarray, tiles: int) -> Path:
    """A NanoMegas blockfile: header, virtual bright field, then records of (0x55AA, id, uint8 pattern)."""
    side, det = FILM * tiles, block.shape[-1]
    header = np.zeros(1, dtype=[("ID", "S6"), ("MAGIC", "<u2"), ("Data_offset_1", "<u4"), ("Data_offset_2", "<u4"),
                                ("UNKNOWN1", "<u4"), ("DP_SZ", "<u2"), ("DP_rotation", "<u2"), ("NX", "<u2"),
                                ("NY", "<u2"), ("Scan_rotation", "<u2"), ("SX", "<f8"), ("SY", "<f8"),
                                ("Beam_energy", "<u4"), ("SDP", "<u2"), ("Camera_length", "<u4"),
                                ("Acquisition_time", "<f8")] + [(f"Centering_N{i}", "<f8") for i in range(8)]
                                + [(f"Distortion_N{i:02d}", "<f8") for i in range(14)])
    offset1 = 0x1000
    offset2 = offset1 + -(-side * side // 0x1000) * 0x1000
    header[0] = (b"IMGBLO", 0x0102, offset1, offset2, 131141, det, 0, side, side, 0, 2.5, 2.5, 200000, 100, 1000,
                 25569.0, *[0.0] * 22)
    record = np.dtype([("MAGIC", "<u2"), ("ID", "<u4"), ("IMG", "u1", (det, det))])
    scale = 255.0 / max(float(np.percentile(block, 99.9)), 1e-6)
    with open(path, "wb") as fh:
        fh.write(header.tobytes())
        fh.write(b"\0" * (offset1 - fh.tell()))
        fh.write(b"\0" * (offset2 - offset1))  # the virtual bright field (not used)
        for i, row in enumerate(tiled_rows(block, tiles)):
            records = np.zeros(side, record)
            records["MAGIC"] = 0x55AA
            records["ID"] = np.arange(i * side, (i + 1) * side)
            records["IMG"] = np.clip(row * scale, 0, 255).astype(np.uint8)
            fh.write(records.tobytes())
    return path


WRITERS = {"npy": (write_npy, ".npy"), "h5": (write_h5, ".h5"), "mib": (write_mib, ".mib"), "blo": (write_blo, ".blo")}

#: Runs `stemnmf run` as its child and prints the child's peak RSS (KiB), so each run is measured alone.
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


CGROUPS = Path("/sys/fs/cgroup/memory")


def memory_cgroup(limit: int) -> Path:
    """A new cgroup (v1) whose processes hold at most ``limit`` bytes, page cache included."""
    group = CGROUPS / f"stemnmf-bench-{os.getpid()}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit))
    return group


def peak_of_run(path: Path, outdir: Path, budget: str, scan_shape: tuple[int, int],
                group: Path | None = None) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of `stemnmf run` on ``path`` in a fresh process (in ``group`` if given)."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "stemnmf", "run", str(path), "-o", str(outdir), "--overwrite", "--feature", "aa",
               "--k", "4", "--memory-budget", budget, "--no-report"]
    if path.suffix == ".mib":
        command += ["--scan-shape", f"{scan_shape[0]}x{scan_shape[1]}"]
    measure = [sys.executable, "-c", _MEASURE, *command]
    if group is not None:  # the measuring process joins the cgroup, then becomes python: its child inherits it
        measure = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *measure]
    out = subprocess.run(measure, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"stemnmf run failed on {path.name}: {out.stderr.strip().splitlines()[-3:]}")
    return int(out.stdout.strip().splitlines()[-1]) * 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=4, help="tiles a side (32 x tiles positions a side)")
    parser.add_argument("--format-tiles", default="", help="tiles a side per format, e.g. mib=6,blo=8")
    parser.add_argument("--det", type=int, default=256, choices=(256, 512), help="pattern side")
    parser.add_argument("--budget", default="1GiB")
    parser.add_argument("--formats", default="npy,h5")
    parser.add_argument("--folder", default=None, help="where the scans are written (default: a temporary folder)")
    parser.add_argument("--ram", default=None, help="memory each run may hold, page cache included (a cgroup)")
    args = parser.parse_args()
    budget = parse_bytes(args.budget)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    group = None
    if args.ram:
        ram = parse_bytes(args.ram)
        group = memory_cgroup(ram)
    print(f"RAM of each run {format_bytes(ram)}{' (cgroup)' if group else ''}; budget {format_bytes(budget)}")
    try:
        measure_formats(args, budget, ram, group)
    finally:
        if group is not None:
            group.rmdir()


def measure_formats(args, budget: int, ram: int, group: Path | None) -> None:
    """Write each format's scan, measure a run on it, delete it; one table row a format."""
    films = {}
    per_format = {k: int(v) for k, v in (item.split("=") for item in args.format_tiles.split(",") if item)}
    print("| format | scan | file | larger than RAM | budget | peak RSS | peak - budget | s |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="stemnmf-memory-", dir=args.folder) as tmp:
        folder = Path(tmp)
        for name in args.formats.split(","):
            writer, suffix = WRITERS[name]
            tiles = per_format.get(name, args.tiles)
            det = args.det
            if det not in films:
                films[det] = film(det)
            path = writer(folder / f"scan{suffix}", films[det], tiles)
            side = FILM * tiles
            size = path.stat().st_size
            try:
                peak, seconds = peak_of_run(path, folder / f"out-{name}", args.budget, (side, side), group)
            except RuntimeError as err:
                print(f"| {name} | {side} x {side} x {det}² | {format_bytes(size)} | {err} |", flush=True)
                path.unlink()
                continue
            over = format_bytes(peak - budget) if peak > budget else "-" + format_bytes(budget - peak)
            print(f"| {name} | {side} x {side} x {det}² | {format_bytes(size)} | {'yes' if size > ram else 'no'} | "
                  f"{format_bytes(budget)} | {format_bytes(peak)} | {over} | {seconds:.0f} |", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
