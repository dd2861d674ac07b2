"""End-to-end AA runs on a scan larger than memory: in-process and on dask.distributed LocalClusters.

A scan of ``--size-gib`` GiB (default 32, more than this machine's 24 GiB of RAM, so
every pass reads the disk) is written by tiling a simulated scan (``--source``, default
/tmp/bf/ag1.h5: 100 x 100 x 256 x 256 float32, simulated with ``stemnmf simulate --preset
ag1``; simulated into the work folder when missing) 4 times across and as many times
down as the size needs. Then ``stemnmf run SCAN -o OUT --feature aa --k K`` runs

* in-process (the default engine: threads, ``--memory-budget``),
* on a LocalCluster of 1 and of 2 worker processes (one thread each) with ``--scheduler``,

each in a fresh process. Reported per run: wall time, GB/s (bytes of the scan / wall time;
a run reads the scan six times), the stage times, peak resident memory of the run's process
and of each worker (ru_maxrss). Then the cost of one chunk is measured (read only, and read +
AA features, in this process, one thread), and a table extrapolates to more workers "on
paper". The scan and the outputs are deleted at the end unless ``--keep``.

    .venv/bin/python bench/scale_e2e.py                       # 32 GiB: about 30 minutes on 2 cores
    .venv/bin/python bench/scale_e2e.py --size-gib 3 --workers 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GIB = 1024**3


def load_average() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def make_scan(source: Path, path: Path, size_gib: float, across: int = 4) -> tuple[int, int, int, int]:
    """Tile ``source`` (a stemnmf scan file) ``across`` times across and down to ``size_gib``; returns the shape."""
    import h5py

    with h5py.File(source, "r") as src:
        data = src["data"]
        sy0, sx0, qy, qx = data.shape
        row_bytes = across * sx0 * qy * qx * data.dtype.itemsize
        sy = math.ceil(size_gib * GIB / row_bytes)
        attrs = dict(src.attrs)
        with h5py.File(path, "w") as out:
            for key, value in attrs.items():
                out.attrs[key] = value
            dset = out.create_dataset("data", (sy, across * sx0, qy, qx), data.dtype, chunks=(1, across * sx0, qy, qx))
            row = np.empty((sx0, qy, qx), data.dtype)
            for y in range(sy):
                data.read_direct(row, source_sel=np.s_[y % sy0])
                dset[y] = np.concatenate([row] * across)
    return sy, across * sx0, qy, qx


def measured_run(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh process (through a small wrapper, so its peak RSS is its own)."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': p.returncode, 'seconds': time.perf_counter() - t, 'stderr': p.stderr[-3000:],"
        " 'peak': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result['stderr']}")
    return result


def timings(outdir: Path) -> dict:
    import h5py

    with h5py.File(outdir / "results.h5", "r") as h5:
        text = h5.attrs["timings"]
    return json.loads(text[5:] if text.startswith("json:") else text)


def run_case(name: str, scan: Path, outdir: Path, args, workers: int = 0) -> dict:
    cmd = [sys.executable, "-m", "stemnmf", "run", str(scan), "-o", str(outdir), "--lazy", "--feature", "aa",
           "--k", str(args.k), "--memory-budget", args.budget, "--no-report", "--overwrite", "-q"]
    load = load_average()
    if not workers:
        result = measured_run(cmd)
        worker_peaks = []
    else:
        from distributed import Client, LocalCluster

        # a fresh cluster per run, so each worker's peak RSS is this run's
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          memory_limit=0) as cluster, Client(cluster) as client:
            result = measured_run(cmd + ["--scheduler", cluster.scheduler_address])
            worker_peaks = sorted(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024).values())
    result.update(name=name, workers=workers, timings=timings(outdir), worker_peaks=worker_peaks, load=load,
                  load_after=load_average())
    print(f"  {name}: {result['seconds']:.0f} s, peak {result['peak'] / GIB:.2f} GiB"
          + (f", workers {', '.join(f'{p / GIB:.2f}' for p in worker_peaks)} GiB" if worker_peaks else "")
          + f" (load {load} -> {result['load_after']}); stages "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()), flush=True)
    return result


def chunk_costs(scan: Path, rows: int = 2, repeat: int = 3) -> dict:
    """Seconds per scan row: read only, and read + AA features (rings from the first rows), one thread."""
    import stemnmf
    from stemnmf.engine import Engine
    from stemnmf.features.featurize import _feature_kernel  # noqa: F401  (imported: timing excludes imports)

    dataset = stemnmf.load(scan, lazy=True)
    sy = dataset.scan_shape[0]
    head = dataset.row_slice(0, min(sy, 8))
    _, description = stemnmf.featurize(head, "aa", engine=Engine(progress=False, n_threads=1))
    rings = [tuple(r) for r in description.rings.tolist()]
    options = dict(rings=rings, r_min=description.settings.get("r_min"), origin=tuple(description.settings["origin"]))
    picks = np.linspace(sy // 4, max(sy // 4, sy - 2 * rows), repeat).astype(int)
    read, aa = [], []
    for y in picks:  # rows away from those just read: from disk, as in a run
        part = dataset.row_slice(int(y), int(y) + rows)
        engine = Engine(progress=False, n_threads=1, chunk_rows=rows)
        start = time.perf_counter()
        part.read_rows(0, rows)
        read.append((time.perf_counter() - start) / rows)
        part = dataset.row_slice(int(y) + rows, int(y) + 2 * rows)
        start = time.perf_counter()
        stemnmf.featurize(part, "aa", engine=engine, scaling="none", **options)
        aa.append((time.perf_counter() - start) / rows)
    return {"row_bytes": dataset.nbytes / sy, "positions_per_row": dataset.scan_shape[1],
            "read_s_per_row": float(np.median(read)), "aa_s_per_row": float(np.median(aa)), "rows": sy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/tmp/bf/ag1.h5"))
    parser.add_argument("--size-gib", type=float, default=32.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--budget", default="2GiB")
    parser.add_argument("--workers", default="1,2", help="LocalCluster sizes to run, e.g. 1,2 (0 or '' for none)")
    parser.add_argument("--keep", action="store_true", help="keep the scan and the outputs")
    parser.add_argument("--write", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir) / f"scale-e2e-{os.getpid()}"
    work.mkdir()
    try:
        source = args.source
        if not source.exists():
            source = work / "ag1.h5"
            print(f"simulating {source} (ag1, seed 0) ...", flush=True)
            subprocess.run([sys.executable, "-m", "stemnmf", "simulate", "--preset", "ag1", "--seed", "0", "-o",
                            str(source)], check=True, capture_output=True)
        scan = work / "scan.h5"
        start = time.perf_counter()
        shape = make_scan(source, scan, args.size_gib)
        size = scan.stat().st_size
        print(f"wrote {shape[0]} x {shape[1]} x {shape[2]} x {shape[3]} float32 ({size / GIB:.1f} GiB, "
              f"{size / 1e9:.1f} GB) in {time.perf_counter() - start:.0f} s", flush=True)
        runs = [run_case("in-process (2 threads)", scan, work / "local", args)]
        for n in [int(w) for w in args.workers.split(",") if w.strip() and int(w)]:
            runs.append(run_case(f"LocalCluster, {n} worker{'s' if n > 1 else ''} x 1 thread", scan,
                                 work / f"cluster{n}", args, workers=n))
        identical = {}
        if len(runs) > 1:
            import h5py

            with h5py.File(work / "local" / "results.h5", "r") as a:
                for r in runs[1:]:
                    with h5py.File(work / f"cluster{r['workers']}" / "results.h5", "r") as b:
                        identical[r["name"]] = {
                            p: float(np.abs(a[p][()].astype(np.float64) - b[p][()]).max())
                            for p in ("components/maps", "components/patterns", "labels")
                        }
        costs = chunk_costs(scan)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    lines = [f"Scan {shape[0]} x {shape[1]} x {shape[2]} x {shape[3]} float32: {size / GIB:.1f} GiB "
             f"({size / 1e9:.1f} GB) on disk, machine RAM {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} "
             f"GiB, {os.cpu_count()} cores; `stemnmf run --lazy --feature aa --k {args.k} --memory-budget {args.budget} "
             "--no-report`; each run in a fresh process.", "",
             "| run | wall s | GB/s (scan / wall) | load | calibrate | features | nmf | analysis | peak RSS run (GiB) "
             "| peak RSS workers (GiB) | load avg before -> after |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in runs:
        t = r["timings"]
        workers = ", ".join(f"{p / GIB:.2f}" for p in r["worker_peaks"]) or "-"
        lines.append(f"| {r['name']} | {r['seconds']:.0f} | {size / 1e9 / r['seconds']:.2f} | {t.get('load', 0):.0f} | "
                     f"{t.get('calibrate', 0):.0f} | {t.get('features', 0):.0f} | {t.get('nmf', 0):.0f} | "
                     f"{t.get('analysis', 0):.0f} | {r['peak'] / GIB:.2f} | {workers} | {r['load']} -> {r['load_after']} |")
    if identical:
        lines += ["", "Largest difference from the in-process run: " + "; ".join(
            f"{name}: " + ", ".join(f"{p} {v:.3g}" for p, v in d.items()) for name, d in identical.items())]
    base = runs[0]["seconds"]
    lines += ["", "Scaling (wall time of the in-process run / wall time):", "",
              "| workers | wall s | speed-up |", "| ---: | ---: | ---: |"]
    for r in runs[1:]:
        lines.append(f"| {r['workers']} | {r['seconds']:.0f} | {base / r['seconds']:.2f} |")
    # on paper: six passes, each max(disk, compute / workers); per-row costs measured here
    rows, per_row = costs["rows"], costs["aa_s_per_row"]
    disk = costs["read_s_per_row"]
    lines += ["", f"Per-chunk cost (one thread, one scan row of {costs['positions_per_row']} patterns, "
              f"{costs['row_bytes'] / 1e6:.0f} MB, from disk): read {disk * 1e3:.0f} ms "
              f"({costs['row_bytes'] / 1e9 / disk:.2f} GB/s), read + AA features {per_row * 1e3:.0f} ms "
              f"({costs['positions_per_row'] / per_row:.0f} patterns/s).", "",
              "On paper, the features pass with N workers of one core each, each reading its own rows at the "
              "measured rate (the shared file system must deliver N times that):", "",
              "| workers | features pass s | aggregate read GB/s needed |", "| ---: | ---: | ---: |"]
    for n in (1, 2, 4, 8, 16, 32):
        lines.append(f"| {n} | {rows * per_row / n:.0f} | {n * costs['row_bytes'] / 1e9 / per_row:.2f} |")
    table = "\n".join(lines)
    print()
    print(table)
    if args.write:
        args.write.write_text(table + "\n")


if __name__ == "__main__":
    main()
