"""Lazy loading: reads only what is asked for, stays within a memory budget, and runs on
dask.distributed workers without shipping the file."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest

from stemnmf.engine import Engine
from stemnmf.io import load
from stemnmf.io.readers.sources import FrameSource, H5Array, NpyArray, dask_from_arraylike, scan_dask

from test_io_formats import (
    QX,
    QY,
    _signal,
    known,
    write_dm,
    write_empad,
    write_mib,
    write_py4dstem,
)


class CountingFrames(FrameSource):
    def __init__(self, n, shape):
        self.n_frames, self.frame_shape, self.dtype = n, shape, np.dtype(np.float32)
        self.calls = []

    def read(self, start, stop):
        self.calls.append((start, stop))
        frames = np.arange(start, stop, dtype=np.float32)[:, None, None]
        return np.broadcast_to(frames, (stop - start, *self.frame_shape)).copy()

    def token(self):
        return ("counting", id(self))


def test_frame_sources_read_only_the_rows_asked_for():
    source = CountingFrames(40 * 7, (4, 5))
    data = scan_dask(source, (40, 7), rows=8)
    assert data.chunks[0] == (8, 8, 8, 8, 8)
    block = data[17:19].compute(scheduler="synchronous")
    assert source.calls == [(17 * 7, 19 * 7)]
    np.testing.assert_array_equal(block[1, 3], np.full((4, 5), 18 * 7 + 3))
    source.calls.clear()
    assert data[5, 2:4].compute(scheduler="synchronous").shape == (2, 4, 5)
    assert source.calls == [(37, 39)]


class CountingNpy(NpyArray):
    calls: list = []

    def __getitem__(self, key):
        CountingNpy.calls.append(key)
        return super().__getitem__(key)


def test_array_likes_read_only_the_rows_asked_for(tmp_path):
    data = known((30, 4, QY, QX), np.float32)
    np.save(tmp_path / "a.npy", data)
    source = CountingNpy(tmp_path / "a.npy", data.shape, data.dtype)
    lazy = dask_from_arraylike(source, (10, 4, QY, QX), ("counting-npy",))
    np.testing.assert_array_equal(lazy[12:14].compute(scheduler="synchronous"), data[12:14])
    assert [k[0] for k in CountingNpy.calls] == [slice(12, 14, None)]
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5.create_dataset("d", data=data, chunks=(1, 4, QY, QX))
    h5src = H5Array(tmp_path / "a.h5", "/d", data.shape, data.dtype)
    np.testing.assert_array_equal(h5src[(slice(3, 5),)], data[3:5])
    assert pickle.loads(pickle.dumps(h5src)).path == str(tmp_path / "a.h5")


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from stemnmf.engine import Engine
    from stemnmf.io import intensity_summary, load

    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

    mode, warm, *paths = sys.argv[1:]
    intensity_summary(load(warm, lazy=True, scan_shape=(4, 5)), Engine(progress=False))  # imports, pools
    base = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak resident set size (VmHWM)
        fh.write("5")
    means = {}
    for path in paths:
        opts = {"scan_shape": (96, 64)} if path.endswith((".mib", ".tif")) else {}
        if mode == "lazy":
            ds = load(path, lazy=True, **opts)
            engine = Engine(memory_budget="24MiB", n_threads=2, progress=False)
        else:
            ds = load(path, lazy=False, **opts)
            engine = Engine(progress=False)
        means[path] = intensity_summary(ds, engine)["mean"]
        del ds
    print(json.dumps({"base": base, "peak": status("VmHWM:"), "means": means}))
    """
)


def _row(y):
    """Row y of a (96, 64, 64, 64) float32 scan (1 MiB): values y + pixel index / 4096."""
    return (y + np.arange(64 * 64, dtype=np.float32) / 4096).reshape(64, 64)[None, None] * np.ones((1, 64, 1, 1), np.float32)


def test_streaming_a_file_larger_than_the_memory_budget(tmp_path):
    """96 MiB files streamed through the engine raise the peak RSS by less than a 40 MiB budget,
    while loading the same file into memory raises it by more than its size.

    Measured in a fresh process: the resident set size before, then its peak (VmHWM, reset
    through /proc/self/clear_refs) while loading and summarising each file.
    """
    import tifffile

    sy, sx = 96, 64
    npy = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(sy, sx, 64, 64))
    with h5py.File(tmp_path / "big.h5", "w") as h5:
        dset = h5.create_dataset("data", shape=(sy, sx, 64, 64), dtype=np.float32, chunks=(1, sx, 64, 64))
        with open(tmp_path / "big.mib", "wb") as mib, tifffile.TiffWriter(tmp_path / "big.tif") as tif:
            from test_io_formats import mib_header

            header = mib_header(64, 64, "U32")
            for y in range(sy):
                row = _row(y)
                npy[y] = row
                dset[y] = row
                for x in range(sx):
                    mib.write(header)
                    mib.write((row[0, x] * 4096).astype(">u4").tobytes())
                tif.write((row[0] * 4096).astype(np.uint32), contiguous=True)
    npy.flush()
    del npy
    np.save(tmp_path / "warm.npy", np.ones((20, 8, 8), np.float32))
    paths = [str(tmp_path / n) for n in ("big.npy", "big.h5", "big.mib", "big.tif")]
    expected = np.mean([_row(y).mean(dtype=np.float64) for y in range(sy)])

    def run(mode, files):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(tmp_path / "warm.npy"), *files],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    lazy = run("lazy", paths)
    growth = (lazy["peak"] - lazy["base"]) / 1024**2
    assert growth < 40, f"peak RSS grew by {growth:.0f} MiB while streaming 4 x 96 MiB files lazily"
    assert lazy["means"][paths[0]] == pytest.approx(expected, rel=1e-6)
    assert lazy["means"][paths[1]] == pytest.approx(expected, rel=1e-6)
    assert lazy["means"][paths[2]] == pytest.approx(expected * 4096, rel=1e-6)
    assert lazy["means"][paths[3]] == pytest.approx(expected * 4096, rel=1e-6)
    eager = run("eager", paths[:1])
    growth = (eager["peak"] - eager["base"]) / 1024**2
    assert growth > 96, f"loading 96 MiB into memory raised the peak RSS by only {growth:.0f} MiB"


def _pattern_total(block, chunk):
    own = block[chunk.own]
    return own.reshape(own.shape[0] * own.shape[1], -1).sum(axis=1, dtype=np.float64)


def _lazy_files(tmp_path):
    """One small file per format; returns (path, options, expected array)."""
    from rsciio.blockfile import file_writer as blo_writer
    from rsciio.emd import file_writer as emd_writer
    from rsciio.hspy import file_writer as hspy_writer
    from rsciio.tvips import file_writer as tvips_writer
    from rsciio.zspy import file_writer as zspy_writer
    from PIL import Image

    qy, qx = 32, 40
    data = known((6, 5, qy, qx))
    files = []
    np.save(tmp_path / "a.npy", data)
    files.append((tmp_path / "a.npy", {}, data))
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5["x/data"] = data
    files.append((tmp_path / "a.h5", {}, data))
    write_py4dstem(tmp_path / "p.h5", data, {"R_pixel_size": 1.0, "R_pixel_units": "nm"})
    files.append((tmp_path / "p.h5", {}, data))
    hspy_writer(str(tmp_path / "a.hspy"), _signal(data))
    files.append((tmp_path / "a.hspy", {}, data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zspy_writer(str(tmp_path / "a.zspy"), _signal(data))
    files.append((tmp_path / "a.zspy", {}, data))
    emd_writer(str(tmp_path / "a.emd"), _signal(data))
    files.append((tmp_path / "a.emd", {}, data))
    write_dm(tmp_path / "a.dm4", data, 4)
    files.append((tmp_path / "a.dm4", {}, data))
    write_mib(tmp_path / "a.mib", data.reshape(-1, qy, qx))
    files.append((tmp_path / "a.mib", {"scan_shape": (6, 5)}, data[:, :, ::-1]))
    small = (data[..., :32, :32] % 250).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blo_writer(str(tmp_path / "a.blo"), _signal(small, units=("nm", "nm", "cm", "cm")))
    files.append((tmp_path / "a.blo", {}, small))
    tvips_writer(str(tmp_path / "a_000.tvips"), _signal(data.reshape(-1, qy, qx), units=("s", "1/nm", "1/nm")))
    files.append((tmp_path / "a_000.tvips", {"scan_shape": (6, 5)}, data))
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", data.reshape(-1, qy, qx), compression="zlib")
    files.append((tmp_path / "a.tif", {"scan_shape": (6, 5)}, data))
    big = known((2, 3, 128, 128), np.float32)
    write_empad(tmp_path, big, "<pix_x>3</pix_x><pix_y>2</pix_y>", raw_name="e.raw")
    files.append((tmp_path / "scan.xml", {}, big))
    folder = tmp_path / "images_6x5"
    folder.mkdir()
    for i, frame in enumerate(data.reshape(-1, qy, qx)):
        Image.fromarray(frame).save(folder / f"{i}.png")
    files.append((folder, {}, data))
    return files


def test_lazy_arrays_pickle_small_and_run_on_a_local_cluster(tmp_path):
    from distributed import Client, LocalCluster

    files = _lazy_files(tmp_path)
    datasets = []
    for path, options, expected in files:
        ds = load(path, lazy=True, **options)
        size = len(pickle.dumps(ds.data))
        # the graph carries paths and layouts, never the data (each dataset is >= 30 kB)
        assert size < 8000 < expected.nbytes // 3, f"{path.name}: the lazy array pickles to {size} bytes"
        datasets.append((path, ds, expected))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        engine = Engine(scheduler=client, chunk_rows=2, progress=False)
        for path, ds, expected in datasets:
            totals = engine.map(_pattern_total, ds)
            want = expected.reshape(-1, expected.shape[-2] * expected.shape[-1]).sum(axis=1, dtype=np.float64)
            np.testing.assert_array_equal(totals, want, err_msg=path.name)


def test_lazy_is_chosen_by_size_and_free_memory(tmp_path, monkeypatch, capsys):
    import sys as _sys

    from stemnmf.cli import main
    from stemnmf.errors import MemoryBudgetError

    load_module = _sys.modules["stemnmf.io.load"]
    data = known((6, 5, QY, QX))  # 4800 bytes
    np.save(tmp_path / "a.npy", data)
    assert not load(tmp_path / "a.npy").is_lazy
    monkeypatch.setattr(load_module, "LAZY_THRESHOLD", 4000)
    ds = load(tmp_path / "a.npy")
    assert ds.is_lazy and ds.data.chunks[0] == (6,)
    np.testing.assert_array_equal(ds.data.compute(), data)
    assert not load(tmp_path / "a.npy", lazy=False).is_lazy
    # data larger than half the free memory is read lazily; larger than all of it, refused in memory
    monkeypatch.setattr(load_module, "LAZY_THRESHOLD", 2**40)
    monkeypatch.setattr(load_module, "_available_memory", lambda: 6000)
    assert load(tmp_path / "a.npy").is_lazy
    monkeypatch.setattr(load_module, "_available_memory", lambda: 3000)
    with pytest.raises(MemoryBudgetError, match="needs 4.7 KiB in memory but only 2.9 KiB are free"):
        load(tmp_path / "a.npy", lazy=False)
    assert main(["info", str(tmp_path / "a.npy"), "--no-lazy"]) == 2
    assert "read it on demand" in capsys.readouterr().err
