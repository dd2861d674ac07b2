"""The streamed read path: direct row readers, buffers reused by the engine, passes fused with attach."""

from __future__ import annotations

import pickle

import dask.array as da
import h5py
import numpy as np
import pytest

from stemnmf.engine import Engine, TransformedRows
from stemnmf.io import Dataset4D, load
from stemnmf.io.readers.sources import H5Array, NpyArray, RowReader, _h5_plan


def _scan(shape=(9, 5, 6, 7), dtype=np.float32):
    """Values that encode (y, x, v, u): 1000 y + 100 x + 10 v + u."""
    y, x, v, u = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (1000 * y + 100 * x + 10 * v + u).astype(dtype)


def _write(path, data, **options):
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=data, **options)
    return path


def _row_sums(block, chunk):
    own = block[chunk.own]
    return own.reshape(chunk.n_positions, -1).sum(axis=1, dtype=np.float64)


LAYOUTS = {
    "row chunks": (dict(chunks=(1, 5, 6, 7)), True),
    "3-row chunks": (dict(chunks=(3, 5, 6, 7)), True),
    "contiguous": (dict(), True),
    "gzip": (dict(chunks=(1, 5, 6, 7), compression="gzip"), False),
    "chunks within rows": (dict(chunks=(2, 2, 6, 7)), False),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_hdf5_rows_read_straight_from_the_file_equal_h5py(tmp_path, layout):
    options, direct = LAYOUTS[layout]
    data = _scan()
    path = _write(tmp_path / "a.h5", data, **options)
    assert (_h5_plan(str(path), "/data", np.float32) is not None) == direct
    ds = load(path, lazy=True)
    assert isinstance(ds.reader, RowReader)
    for a, b in [(0, 9), (2, 5), (4, 5), (7, 9)]:
        np.testing.assert_array_equal(ds.read_rows(a, b), data[a:b])
    buffer = np.empty((3, 5, 6, 7), np.float32)
    assert ds.reader(1, 4, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, data[1:4])
    for threads in (1, 2):
        sums = Engine(chunk_rows=2, n_threads=threads, progress=False).map(_row_sums, ds)
        np.testing.assert_array_equal(sums, data.reshape(45, -1).sum(axis=1, dtype=np.float64))


def test_other_dtypes_byte_orders_and_unwritten_chunks(tmp_path):
    data = _scan(dtype=np.uint16)
    # big-endian: converted by h5py, no direct reads
    path = _write(tmp_path / "be.h5", data.astype(">u2"), chunks=(1, 5, 6, 7))
    ds = load(path, lazy=True)
    assert _h5_plan(str(path), "/data", ds.dtype) is None
    np.testing.assert_array_equal(ds.read_rows(3, 6), data[3:6])
    # native uint16: direct reads, and the engine's float32 blocks hold the same values
    path = _write(tmp_path / "le.h5", data, chunks=(1, 5, 6, 7))
    ds = load(path, lazy=True)
    assert ds.dtype == np.uint16 and _h5_plan(str(path), "/data", ds.dtype) is not None
    sums = Engine(chunk_rows=4, progress=False).map(_row_sums, ds)
    np.testing.assert_array_equal(sums, data.astype(np.float64).reshape(45, -1).sum(axis=1))
    # rows never written hold the fill value (0): h5py knows it, no direct reads
    with h5py.File(tmp_path / "part.h5", "w") as h5:
        dset = h5.create_dataset("data", shape=data.shape, dtype=np.float32, chunks=(1, 5, 6, 7))
        dset[:4] = data[:4]
    ds = load(tmp_path / "part.h5", lazy=True)
    assert _h5_plan(str(tmp_path / "part.h5"), "/data", np.float32) is None
    np.testing.assert_array_equal(ds.read_rows(2, 7), np.concatenate([data[2:4], np.zeros_like(data[4:7])]))


def test_rows_are_mapped_from_the_file_without_a_copy_when_it_allows(tmp_path, monkeypatch):
    from stemnmf.io.readers import sources

    data = _scan()
    ds = load(_write(tmp_path / "a.h5", data, chunks=(1, 5, 6, 7)), lazy=True)
    block = ds.reader.map(2, 5)
    np.testing.assert_array_equal(block, data[2:5])
    block[0, 0, 0, 0] = -1.0  # a private copy-on-write page: the file is unchanged
    np.testing.assert_array_equal(ds.read_rows(2, 3), data[2:3])
    np.testing.assert_array_equal(ds.row_slice(4, 9).reader.map(1, 3), data[5:7])
    np.save(tmp_path / "a.npy", data)
    np.testing.assert_array_equal(load(tmp_path / "a.npy", lazy=True).reader.map(7, 9), data[7:9])
    # kernels see the same values whichever way the rows came, and views of maps are not kept
    corners = Engine(chunk_rows=2, progress=False).map(_corner, ds)
    np.testing.assert_array_equal(corners, data[:, :, 0, 0].reshape(-1))
    gz = load(_write(tmp_path / "gz.h5", data, chunks=(1, 5, 6, 7), compression="gzip"), lazy=True)
    assert gz.reader.map(0, 2) is None  # compressed: read (and decompressed) by h5py
    monkeypatch.setattr(sources, "MAP_ROWS", False)
    assert ds.reader.map(2, 5) is None
    np.testing.assert_array_equal(Engine(chunk_rows=2, progress=False).map(_corner, ds), corners)


def test_npy_rows_are_read_with_pread(tmp_path):
    data = _scan()
    np.save(tmp_path / "c.npy", data)
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    np.save(tmp_path / "b.npy", data.astype(">f4"))
    for name in ("c.npy", "f.npy", "b.npy"):
        ds = load(tmp_path / name, lazy=True)
        assert ds.reader is not None
        np.testing.assert_array_equal(ds.read_rows(2, 6), data[2:6], err_msg=name)
    source = NpyArray(tmp_path / "c.npy", data.shape, data.dtype)
    out = np.zeros((2, 5, 6, 7), np.float32)
    assert source.read_rows(7, 9, out) is out
    np.testing.assert_array_equal(out, data[7:9])


def test_stacks_of_frames_are_laid_out_in_scan_rows(tmp_path):
    data = _scan((6, 4, 5, 5))
    _write(tmp_path / "stack.h5", data.reshape(24, 5, 5), chunks=(4, 5, 5))
    ds = load(tmp_path / "stack.h5", lazy=True, scan_shape=(6, 4))
    np.testing.assert_array_equal(ds.read_rows(1, 4), data[1:4])
    # a 4D scan read with another scan shape of the same number of positions
    _write(tmp_path / "scan.h5", data, chunks=(1, 4, 5, 5))
    ds = load(tmp_path / "scan.h5", lazy=True, scan_shape=(3, 8))
    np.testing.assert_array_equal(ds.read_rows(1, 3), data.reshape(3, 8, 5, 5)[1:3])
    np.testing.assert_array_equal(ds.data.compute(), data.reshape(3, 8, 5, 5))


def test_readers_pickle_small_and_hold_no_data(tmp_path):
    data = _scan((40, 20, 16, 16))
    ds = load(_write(tmp_path / "a.h5", data, chunks=(1, 20, 16, 16)), lazy=True)
    ds.read_rows(0, 40)  # the plan is cached in the process, not on the reader
    assert len(pickle.dumps(ds.reader)) < 2000 < data.nbytes
    again = pickle.loads(pickle.dumps(ds.reader))
    np.testing.assert_array_equal(again(10, 12), data[10:12])


class _CountingRows:
    """A row reader over an array that records every call."""

    fills_buffer = True

    def __init__(self, data):
        self.data, self.calls = data, []

    def __call__(self, start, stop, out=None):
        self.calls.append((start, stop))
        if out is None:
            return self.data[start:stop].copy()
        out[...] = self.data[start:stop]
        return out


def _never(*_):
    raise AssertionError("the engine read through dask instead of the reader")


def _lazy_with_reader(data):
    """A lazy dataset whose dask array fails if computed, and a counting reader."""
    poisoned = da.map_blocks(_never, da.zeros(data.shape, chunks=(1, -1, -1, -1), dtype=data.dtype), dtype=data.dtype)
    reader = _CountingRows(data)
    return Dataset4D(poisoned, reader=reader), reader


def _corner(block, chunk):
    """A view of the block (the engine must copy it before reusing its buffer)."""
    return block[chunk.own][:, :, 0, 0].reshape(-1)


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_reads_through_the_reader_and_reuses_its_buffers(threads):
    data = _scan()
    ds, reader = _lazy_with_reader(data)
    engine = Engine(chunk_rows=2, n_threads=threads, progress=False)
    np.testing.assert_array_equal(engine.map(_corner, ds), data[:, :, 0, 0].reshape(-1))
    assert sorted(reader.calls) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    halo = engine.map(_corner, ds, halo=1)
    np.testing.assert_array_equal(halo, data[:, :, 0, 0].reshape(-1))
    # NaN and Inf read from a file reach the functions as 0
    bad = data.copy()
    bad[3, 2, 1, 1], bad[5, 0, 0, 0] = np.nan, np.inf
    ds, _ = _lazy_with_reader(bad)
    sums = engine.map(_row_sums, ds)
    expected = np.nan_to_num(bad, nan=0, posinf=0).reshape(45, -1).sum(axis=1, dtype=np.float64)
    np.testing.assert_array_equal(sums, expected)


def _double(block, chunk, *, factor):
    own = block[chunk.own]
    return factor * own.reshape(-1, *own.shape[2:])


def _mean3(block, chunk):
    """Mean of the scan rows above, at and below (needs one row of halo)."""
    own = chunk.own
    rows = [block[max(0, r - 1) : r + 2].mean(axis=0) for r in range(own.start, own.stop)]
    return np.stack(rows).reshape(-1, *block.shape[2:])


def test_transformed_datasets_keep_a_reader():
    data = _scan()
    ds, reader = _lazy_with_reader(data)
    engine = Engine(chunk_rows=4, progress=False)
    doubled = engine.transform(_double, ds, kwargs={"factor": 2.0})
    assert isinstance(doubled.reader, TransformedRows) and doubled.is_lazy
    np.testing.assert_array_equal(doubled.read_rows(3, 7), 2 * data[3:7])
    sums = Engine(chunk_rows=3, progress=False).map(_row_sums, doubled)
    np.testing.assert_array_equal(sums, 2 * data.reshape(45, -1).sum(axis=1, dtype=np.float64))
    # with a halo, any rows asked for give what the whole scan gives
    whole = Engine(chunk_rows=9, progress=False).transform(_mean3, Dataset4D(data), halo=1).data
    smoothed = engine.transform(_mean3, ds, halo=1)
    np.testing.assert_allclose(smoothed.read_rows(2, 5), whole[2:5], rtol=1e-6)
    np.testing.assert_allclose(smoothed.read_rows(8, 9), whole[8:9], rtol=1e-6)
    # a slice of rows keeps the reader, shifted
    part = doubled.row_slice(2, 6)
    assert part.reader is not None and part.scan_shape == (4, 5)
    np.testing.assert_array_equal(part.read_rows(1, 3), 2 * data[3:5])


def test_replacing_the_data_drops_the_reader():
    data = _scan()
    ds, _ = _lazy_with_reader(data)
    assert ds.replace(mask=np.zeros((6, 7), bool)).reader is ds.reader
    assert ds.replace(data=da.from_array(data)).reader is None
    assert Dataset4D(data, reader=ds.reader).reader is None  # in memory: nothing to read
    with pytest.raises(TypeError, match="callable"):
        Dataset4D(da.from_array(data), reader="file.h5")


def _sum_max(block, chunk):
    own = block[chunk.own].astype(np.float64)
    return own.sum(axis=(0, 1)), own.max(axis=(0, 1))


def _first_pixel(block, chunk):
    return block[chunk.own][:, :, 0, 0].reshape(-1).astype(np.float64)


@pytest.mark.parametrize("threads", [1, 2])
def test_attached_jobs_ride_along_and_equal_their_own_pass(threads):
    data = _scan()
    ds, reader = _lazy_with_reader(data)
    engine = Engine(chunk_rows=2, n_threads=threads, progress=False)
    totals = engine.attach(_sum_max, ds, combine=["sum", "max"])
    firsts = engine.attach(_first_pixel, ds, mode="map")
    assert engine.attach(_first_pixel, ds, mode="map") is firsts  # attaching twice: the same job
    engine.map(_row_sums, ds)  # one pass carries all three
    assert len(reader.calls) == 5
    total, peak = engine.reduce(_sum_max, ds, combine=["sum", "max"])
    np.testing.assert_array_equal(firsts.result(), data[:, :, 0, 0].reshape(-1))
    assert len(reader.calls) == 5  # nothing read again
    np.testing.assert_array_equal(total, data.astype(np.float64).sum(axis=(0, 1)))
    np.testing.assert_array_equal(peak, data.max(axis=(0, 1)))
    # other options, another dataset or a pass asked for before any other: read as usual
    other, other_reader = _lazy_with_reader(data)
    late = engine.attach(_first_pixel, other, mode="map")
    np.testing.assert_array_equal(late.result(), data[:, :, 0, 0].reshape(-1))
    assert len(other_reader.calls) == 5 and len(reader.calls) == 5


def test_map_writes_into_an_hdf5_dataset(tmp_path):
    data = _scan()
    with h5py.File(tmp_path / "out.h5", "w") as h5:
        out = h5.create_dataset("sums", shape=(45,), dtype=np.float64)
        assert Engine(chunk_rows=4, progress=False).map(_row_sums, Dataset4D(data), out=out) is out
        np.testing.assert_array_equal(out[()], data.reshape(45, -1).sum(axis=1, dtype=np.float64))


def test_h5array_reads_direct_into_a_buffer_of_the_right_shape_only(tmp_path):
    data = _scan()
    path = _write(tmp_path / "a.h5", data, chunks=(1, 5, 6, 7))
    source = H5Array(path, "/data", data.shape, data.dtype)
    with pytest.raises(ValueError, match="does not fit"):
        source.read_rows(0, 2, np.empty((3, 5, 6, 7), np.float32))
    assert len(source) == 9
