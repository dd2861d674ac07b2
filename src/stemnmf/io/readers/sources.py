"""Lazy, picklable views of patterns stored in files.

A lazy dataset is a dask array whose tasks read only the rows they are asked
for. Each task holds one of the small objects below (a path and a layout,
never an open file or a memory map), opens the file itself, reads, and closes
it again, so the same array works in threads and on dask.distributed workers.

Two kinds of objects:

* *array-likes* (:class:`NpyArray`, :class:`H5Array`) with ``shape``,
  ``dtype`` and ``__getitem__``, wrapped with :func:`dask.array.from_array`;
* *frame sources* (:class:`RawFrames`, :class:`TiffFrames`, :class:`ImageFiles`)
  that return frames ``start:stop`` of a stack; :class:`ScanArray` lays them
  out as (sy, sx, qy, qx).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from stemnmf.engine import token
from stemnmf.errors import FormatError

__all__ = [
    "FrameSource",
    "H5Array",
    "ImageFiles",
    "NpyArray",
    "RawFrames",
    "RowReader",
    "ScanArray",
    "TiffFrames",
    "dask_from_arraylike",
    "read_all",
    "rows_per_chunk",
    "scan_dask",
]

log = logging.getLogger(__name__)

#: Target size of one dask chunk of a lazy dataset. Small, because a chunk is read whole
#: whenever a part of it is needed by a task that shares it (e.g. a sample of rows);
#: HDF5 datasets use at least their storage chunk.
CHUNK_BYTES = 4 * 1024**2


def rows_per_chunk(row_bytes: int, storage_rows: int | None = None, target: int = CHUNK_BYTES) -> int:
    """Scan rows per dask chunk: about ``target`` bytes, a multiple of the storage rows."""
    rows = max(1, int(target // max(1, row_bytes)))
    if storage_rows and storage_rows > 0:
        rows = max(storage_rows, rows - rows % storage_rows)
    return rows


def _file_stamp(path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns)


def _normalize_key(key, shape):
    """A tuple with one index (slice, int or list) per axis."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    return key


def _is_list(index) -> bool:
    return isinstance(index, (list, np.ndarray))


def _take_rows(array, key):
    """``array[key]`` for a list of indices on the first axis, one index at a time."""
    rows = np.asarray(key[0]).ravel()
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    parts = [array[(slice(int(r), int(r) + 1),) + tuple(key[1:])] for r in rows]
    if not parts:
        return array[(slice(0, 0),) + tuple(key[1:])]
    return np.concatenate(parts, axis=0)


def dask_from_arraylike(arraylike, chunks, name_parts):
    """A dask array over ``arraylike`` with a deterministic name."""
    import dask.array as da

    ndim = len(arraylike.shape)
    return da.from_array(
        arraylike,
        chunks=chunks,
        asarray=False,
        lock=False,
        meta=np.empty((0,) * ndim, dtype=arraylike.dtype),
        name="stemnmf-" + token(*[str(p) for p in name_parts]),
    )


# -- array-likes -----------------------------------------------------------------------

class NpyArray:
    """A .npy file, memory-mapped afresh (read-only) for every read."""

    def __init__(self, path, shape, dtype, fortran_order=False):
        self.path = str(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.ndim = len(self.shape)
        self.fortran_order = bool(fortran_order)

    def __getitem__(self, key):
        array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        try:
            return np.array(array[key], dtype=self.dtype, copy=True)
        finally:
            del array

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Entries ``start:stop`` of the first axis, read with ``pread`` into ``out`` (or a new array).

        A C-order file in native byte order is read straight into the buffer
        (no memory map, so the pages do not stay resident); others go
        through :meth:`__getitem__`.
        """
        out = _row_buffer(self, start, stop, out)
        offset = None if self.fortran_order else _npy_offset(self.path, self.dtype)
        if offset is None:
            out[...] = self[start:stop]
            return out
        row_bytes = _row_bytes(self)
        _pread(self.path, [(offset + start * row_bytes, 0, (stop - start) * row_bytes)], out)
        return out

    def map_rows(self, start: int, stop: int) -> np.ndarray | None:
        """Entries ``start:stop`` as a copy-on-write memory map (no copy), or None (Fortran order, byte order)."""
        offset = None if self.fortran_order or stop <= start else _npy_offset(self.path, self.dtype)
        if offset is None:
            return None
        row_bytes = _row_bytes(self)
        return _map_span(self.path, offset + start * row_bytes, (stop - start) * row_bytes, self.dtype,
                         (stop - start, *self.shape[1:]))

    def __repr__(self):
        return f"NpyArray({self.path!r}, {self.shape}, {self.dtype})"


class H5Array:
    """One HDF5 dataset, opened read-only for every read."""

    def __init__(self, path, name, shape, dtype, chunks=None):
        self.path = str(path)
        self.name = str(name)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.ndim = len(self.shape)
        self.storage_chunks = None if chunks is None else tuple(int(c) for c in chunks)

    def __getitem__(self, key):
        import h5py

        key = _normalize_key(key, self.shape)
        if _is_list(key[0]):
            return _take_rows(self, key)
        with h5py.File(self.path, "r") as h5:
            dset = h5[self.name]
            if all(isinstance(k, slice) and k.step in (None, 1) for k in key):
                out_shape = tuple(len(range(*k.indices(n))) for k, n in zip(key, self.shape))
                out = np.empty(out_shape, dtype=self.dtype)
                if out.size:
                    dset.read_direct(out, source_sel=key)
                return out
            return np.asarray(dset[key], dtype=self.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Entries ``start:stop`` of the first axis into ``out`` (or a new array), as directly as the file allows.

        Uncompressed datasets stored contiguously, or in chunks that span
        whole entries of the first axis (stemnmf scan files: one chunk per
        scan row), in native byte order are read with ``pread`` straight from
        the chunks' places in the file into the buffer, bypassing the HDF5
        library (and its global lock, so threads read in parallel); any other
        dataset is read by h5py into the buffer (``read_direct``).
        """
        out = _row_buffer(self, start, stop, out)
        if stop <= start:
            return out
        plan = _h5_plan(self.path, self.name, self.dtype)
        if plan is None:
            import h5py

            with h5py.File(self.path, "r") as h5:
                h5[self.name].read_direct(out, source_sel=np.s_[start:stop])
            return out
        _pread(self.path, plan.segments(start, stop), out)
        return out

    def map_rows(self, start: int, stop: int) -> np.ndarray | None:
        """Entries ``start:stop`` as a copy-on-write memory map of the file (no copy), or None.

        Possible when :meth:`read_rows` reads straight from the file and the
        entries lie in one piece of it (consecutive chunks written in order).
        """
        plan = _h5_plan(self.path, self.name, self.dtype) if stop > start else None
        span = None if plan is None else plan.span(start, stop)
        if span is None:
            return None
        return _map_span(self.path, span[0], span[1], self.dtype, (stop - start, *self.shape[1:]))

    def __repr__(self):
        return f"H5Array({self.path!r}, {self.name!r}, {self.shape}, {self.dtype})"


# -- direct reads ----------------------------------------------------------------------

def _row_bytes(arraylike) -> int:
    return int(np.prod(arraylike.shape[1:], dtype=np.int64)) * np.dtype(arraylike.dtype).itemsize


def _row_buffer(arraylike, start: int, stop: int, out):
    """``out`` checked to fit entries start:stop, or a new array."""
    shape = (max(0, stop - start), *arraylike.shape[1:])
    if out is None:
        return np.empty(shape, dtype=arraylike.dtype)
    if out.shape != shape or out.dtype != arraylike.dtype or not out.flags.c_contiguous:
        raise ValueError(f"buffer {out.shape} {out.dtype} does not fit rows {start}:{stop} of {arraylike!r}")
    return out


def _pread(path: str, segments, out: np.ndarray) -> None:
    """Fill the C-contiguous ``out`` from ``(file offset, byte offset in out, bytes)`` segments."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        for offset, pos, size in segments:
            while size > 0:
                got = os.preadv(fd, [view[pos : pos + size]], offset)
                if got <= 0:
                    raise OSError(f"{path} ends before byte {offset + size} (truncated?)")
                offset, pos, size = offset + got, pos + got, size - got


#: Set the environment variable STEMNMF_NO_MMAP=1 to read every chunk with pread (e.g. on a file
#: system where memory maps are slow or unreliable).
MAP_ROWS = os.environ.get("STEMNMF_NO_MMAP", "") in ("", "0")


def _map_span(path: str, offset: int, size: int, dtype, shape) -> np.ndarray | None:
    """A copy-on-write memory map of ``size`` bytes at ``offset`` as an array (no copy), or None.

    The pages come straight from the page cache (no copy into a buffer);
    writing to the array changes a private copy, never the file. The map is
    released when the array (and every view of it) is.
    """
    import mmap

    if not MAP_ROWS or size <= 0:
        return None
    dtype = np.dtype(dtype)
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    lead = offset - start
    if lead % dtype.itemsize:
        return None
    try:
        with open(path, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), lead + size, access=mmap.ACCESS_COPY, offset=start)
    except (OSError, ValueError):
        return None
    if hasattr(mapped, "madvise"):
        try:  # read ahead the whole span at once (a cold file is read in large requests)
            mapped.madvise(mmap.MADV_WILLNEED)
        except OSError:  # pragma: no cover - advice only
            pass
    return np.frombuffer(mapped, dtype=dtype, count=size // dtype.itemsize, offset=lead).reshape(shape)


class _H5Plan:
    """Where the entries of an HDF5 dataset's first axis lie in the file.

    ``offsets[c]`` is the file offset of storage chunk c, which holds entries
    ``c * rows : (c + 1) * rows``; a contiguous dataset is one chunk.
    """

    def __init__(self, offsets, rows: int, row_bytes: int):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.rows = int(rows)
        self.row_bytes = int(row_bytes)

    def span(self, start: int, stop: int) -> tuple[int, int] | None:
        """(file offset, bytes) of entries start:stop when they lie in one piece of the file, else None."""
        segments = self.segments(start, stop)
        return (segments[0][0], segments[0][2]) if len(segments) == 1 else None

    def segments(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        out: list[list[int]] = []
        for c in range(start // self.rows, (stop - 1) // self.rows + 1):
            r0, r1 = max(start, c * self.rows), min(stop, (c + 1) * self.rows)
            offset = int(self.offsets[c]) + (r0 - c * self.rows) * self.row_bytes
            pos, size = (r0 - start) * self.row_bytes, (r1 - r0) * self.row_bytes
            if out and out[-1][0] + out[-1][2] == offset:  # adjacent in the file: one read
                out[-1][2] += size
            else:
                out.append([offset, pos, size])
        return [tuple(s) for s in out]


_PLANS: dict = {}
_PLANS_LOCK = threading.Lock()


def _h5_plan(path: str, name: str, dtype) -> _H5Plan | None:
    """The direct-read plan of a dataset (cached per file version), or None when h5py must read it."""
    key = (_file_stamp(path), name, str(dtype))
    with _PLANS_LOCK:
        if key in _PLANS:
            return _PLANS[key]
    plan = None
    try:
        plan = _make_h5_plan(path, name, np.dtype(dtype))
    except Exception as err:  # anything unusual: h5py reads it
        log.debug("%s:%s: no direct reads (%s)", path, name, err)
    with _PLANS_LOCK:
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _make_h5_plan(path: str, name: str, dtype: np.dtype) -> _H5Plan | None:
    import h5py

    with h5py.File(path, "r") as h5:
        if h5.userblock_size:
            return None
        dset = h5[name]
        if dset.dtype != dtype or dset.dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
            return None
        if dset.external or dset.is_virtual or dset.size == 0:
            return None
        dcpl = dset.id.get_create_plist()
        if dcpl.get_nfilters():
            return None
        row_bytes = int(np.prod(dset.shape[1:], dtype=np.int64)) * dtype.itemsize
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            offset = dset.id.get_offset()
            return None if offset is None else _H5Plan([offset], dset.shape[0], row_bytes)
        if layout != h5py.h5d.CHUNKED or tuple(dset.chunks[1:]) != tuple(dset.shape[1:]):
            return None
        rows = int(dset.chunks[0])
        n_chunks = -(-dset.shape[0] // rows)
        if dset.id.get_num_chunks() != n_chunks:
            return None  # unwritten chunks hold the fill value: h5py knows it
        offsets = np.full(n_chunks, -1, dtype=np.int64)
        for i in range(n_chunks):
            info = dset.id.get_chunk_info(i)
            if info.filter_mask or info.byte_offset is None or info.size != rows * row_bytes:
                return None
            offsets[info.chunk_offset[0] // rows] = info.byte_offset
        return None if (offsets < 0).any() else _H5Plan(offsets, rows, row_bytes)


_NPY_OFFSETS: dict = {}


def _npy_offset(path: str, dtype) -> int | None:
    """Byte offset of the data in a .npy file stored in ``dtype`` (native byte order), else None."""
    key = _file_stamp(path)
    if key not in _NPY_OFFSETS:
        fmt = np.lib.format
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            _, fortran, stored = read(fh)
            _NPY_OFFSETS[key] = None if fortran or stored != np.dtype(dtype) else fh.tell()
    return _NPY_OFFSETS[key]


class RowReader:
    """Picklable reader of whole scan rows, straight from a file: ``reader(start, stop, out=None)``.

    Returns scan rows ``start:stop`` as an array (rows, sx, qy, qx) in the
    dataset's dtype, written into ``out`` when given (a C-contiguous buffer of
    that shape and dtype; the engine reuses one per thread). It holds only
    paths and layouts, so it pickles small and runs on dask.distributed
    workers, each reading its own rows from a shared file.

    Parameters
    ----------
    source : array-like or FrameSource
        An array-like of shape (sy, sx, qy, qx) or a stack of frames
        (n, qy, qx) (with ``read_rows`` or ``__getitem__`` on the first axis),
        or a :class:`FrameSource`.
    scan_shape : (int, int)
        The scan shape the rows are counted in.
    dtype : dtype, optional
        The dataset's dtype when it differs from the source's (booleans are
        read as uint8).
    first_frame : int
        Frame of a stack where the scan starts.
    """

    fills_buffer = True  # reads straight into the caller's buffer

    def __init__(self, source, scan_shape, dtype=None, first_frame: int = 0):
        self.source = source
        self.scan_shape = tuple(int(n) for n in scan_shape)
        self.first_frame = int(first_frame)
        self.frame_shape = tuple(int(n) for n in source.shape[-2:])
        self.dtype = np.dtype(dtype if dtype is not None else source.dtype)
        # entries of the source's first axis are scan rows, or frames to be laid out in rows
        self.by_row = len(source.shape) == 4 and tuple(source.shape[:2]) == self.scan_shape and not self.first_frame

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (*self.scan_shape, *self.frame_shape)

    def __call__(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        sy, sx = self.scan_shape
        start, stop = max(0, int(start)), min(sy, int(stop))
        shape = (max(0, stop - start), sx, *self.frame_shape)
        if out is not None and (out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous):
            raise ValueError(f"buffer {out.shape} {out.dtype} does not fit rows {start}:{stop} {self.dtype}")
        stored = np.dtype(self.source.dtype)
        direct = out if stored == self.dtype else None
        if direct is None and out is not None and stored.kind == "b" and self.dtype == np.uint8:
            direct = out.view(stored)  # booleans are read straight into the uint8 buffer
        if self.by_row:
            block = self._entries(start, stop, direct)
        else:
            first = self.first_frame + start * sx
            frames = self._entries(first, first + shape[0] * sx, None if direct is None else direct.reshape(-1, *self.frame_shape))
            block = frames.reshape(shape)
        if block.dtype != self.dtype:
            if block.dtype.kind == "b" and self.dtype == np.uint8:
                block = block.view(np.uint8)
            elif out is not None:
                out[...] = block
                block = out
            else:
                block = block.astype(self.dtype)
        return block

    def map(self, start: int, stop: int) -> np.ndarray | None:
        """Scan rows ``start:stop`` mapped from the file without a copy (read-only file, private
        copy-on-write pages), or None when the format or layout does not allow it."""
        sy, sx = self.scan_shape
        start, stop = max(0, int(start)), min(sy, int(stop))
        mapper = getattr(self.source, "map_rows", None)
        if mapper is None or stop <= start or np.dtype(self.source.dtype) != self.dtype:
            return None
        if self.by_row:
            block = mapper(start, stop)
        elif len(self.source.shape) == 3:
            first = self.first_frame + start * sx
            block = mapper(first, first + (stop - start) * sx)
        else:
            return None
        return None if block is None else block.reshape(stop - start, sx, *self.frame_shape)

    def _entries(self, start, stop, out):
        source = self.source
        if len(source.shape) == 4 and not self.by_row:
            # frames of a 4D source read as another scan shape: whole source rows, then cut
            per_row = int(source.shape[1])
            r0, r1 = start // per_row, -(-stop // per_row)
            frames = self._rows_of(r0, r1, None).reshape(-1, *self.frame_shape)
            frames = frames[start - r0 * per_row : stop - r0 * per_row]
            if out is not None:
                out[...] = frames
                return out
            return frames
        return self._rows_of(start, stop, out)

    def _rows_of(self, start, stop, out):
        source = self.source
        if isinstance(source, FrameSource):
            frames = source.read(start, stop)
            if out is not None:
                out[...] = frames
                return out
            return frames
        reader = getattr(source, "read_rows", None)
        if reader is not None:
            return reader(start, stop, out)
        block = np.asarray(source[start:stop])
        if out is not None:
            out[...] = block
            return out
        return block

    def __repr__(self):
        return f"RowReader({self.source!r}, scan {self.scan_shape})"


# -- frame sources -------------------------------------------------------------------

class FrameSource:
    """A stack of ``n_frames`` frames of ``frame_shape``; subclasses implement ``read``."""

    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_frames, *self.frame_shape)

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        """Frames ``start:stop`` as an array (stop - start, qy, qx)."""
        raise NotImplementedError

    def token(self) -> tuple:
        """What identifies the data (paths with size and modification time, layout)."""
        raise NotImplementedError  # pragma: no cover


class RawFrames(FrameSource):
    """Fixed-size records in one or more binary files.

    Each record holds ``pre`` bytes, one frame of ``frame_shape`` in ``dtype``
    (C order), then ``post`` bytes. ``files`` lists ``(path, offset, n_records)``;
    frames are numbered across the files in order.
    """

    def __init__(self, files, frame_shape, dtype, pre=0, post=0, rows=None):
        self.files = tuple((str(p), int(o), int(n)) for p, o, n in files)
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.file_dtype = np.dtype(dtype)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.pre, self.post = int(pre), int(post)
        # optional crop of the stored frame rows, e.g. EMPAD's 2 footer rows
        self.rows = None if rows is None else int(rows)
        self.n_frames = sum(n for _, _, n in self.files)
        stored = self.frame_shape if self.rows is None else (self.rows, self.frame_shape[1])
        fields = []
        if self.pre:
            fields.append(("pre", f"V{self.pre}"))
        fields.append(("data", self.file_dtype, stored))
        if self.post:
            fields.append(("post", f"V{self.post}"))
        self.record = np.dtype(fields)

    @property
    def record_bytes(self) -> int:
        return self.record.itemsize

    def read(self, start, stop):
        out = np.empty((stop - start, *self.frame_shape), dtype=self.dtype)
        first = 0
        filled = 0
        for path, offset, count in self.files:
            lo, hi = max(start, first), min(stop, first + count)
            if lo < hi:
                records = np.memmap(
                    path, dtype=self.record, mode="r", offset=offset + (lo - first) * self.record_bytes, shape=(hi - lo,)
                )
                try:
                    block = records["data"]
                    if self.rows is not None:
                        block = block[:, : self.frame_shape[0]]
                    out[filled : filled + hi - lo] = block
                finally:
                    del records
                filled += hi - lo
            first += count
        return out

    def token(self):
        return (tuple(_file_stamp(p) + (o, n) for p, o, n in self.files), self.frame_shape, str(self.file_dtype),
                self.pre, self.post, self.rows)

    def __repr__(self):
        return f"RawFrames({self.files[0][0]!r}, {self.n_frames} x {self.frame_shape} {self.dtype})"


class TiffFrames(FrameSource):
    """Frames of the first image series of a TIFF file, read page by page."""

    def __init__(self, path, n_frames, frame_shape, dtype, frames_per_page=1):
        self.path = str(path)
        self.n_frames = int(n_frames)
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.dtype = np.dtype(dtype)
        self.frames_per_page = int(frames_per_page)

    def read(self, start, stop):
        import tifffile

        k = self.frames_per_page
        first_page, last_page = start // k, (stop - 1) // k + 1
        with tifffile.TiffFile(self.path) as tif:
            pages = tif.asarray(series=0, key=range(first_page, last_page))
        pages = np.asarray(pages, dtype=self.dtype).reshape(-1, *self.frame_shape)
        return pages[start - first_page * k : stop - first_page * k]

    def token(self):
        return (_file_stamp(self.path), self.n_frames, self.frame_shape, str(self.dtype))

    def __repr__(self):
        return f"TiffFrames({self.path!r}, {self.n_frames} x {self.frame_shape} {self.dtype})"


class ImageFiles(FrameSource):
    """One image file (BMP, PNG, TIFF) per frame.

    ``gray`` says how colour images become one channel: ``'first'`` takes
    the first channel, ``'luminance'`` weights R, G, B by 0.299, 0.587, 0.114
    (ITU-R BT.601) unless the channels are equal.
    """

    def __init__(self, files, frame_shape, dtype, gray=None):
        self.files = tuple(str(f) for f in files)
        self.n_frames = len(self.files)
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.dtype = np.dtype(dtype)
        self.gray = gray

    def read(self, start, stop):
        out = np.empty((stop - start, *self.frame_shape), dtype=self.dtype)
        for i, name in enumerate(self.files[start:stop]):
            image = read_image(name)
            image = to_gray(image, self.gray) if image.ndim == 3 else image
            if image.shape != self.frame_shape:
                raise FormatError(
                    f"image {name} is {image.shape[0]} x {image.shape[1]} pixels, unlike the first image "
                    f"({self.frame_shape[0]} x {self.frame_shape[1]})",
                    "give a folder whose images all have the same size",
                )
            out[i] = image
        return out

    def token(self):
        return (len(self.files), _file_stamp(self.files[0]), _file_stamp(self.files[-1]), self.frame_shape,
                str(self.dtype), self.gray)

    def __repr__(self):
        return f"ImageFiles({Path(self.files[0]).parent}, {self.n_frames} x {self.frame_shape} {self.dtype})"


def read_image(path) -> np.ndarray:
    """One image as an array: TIFF with tifffile, other formats with Pillow."""
    if str(path).lower().endswith((".tif", ".tiff")):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    with Image.open(path) as image:
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        return np.asarray(image)


def to_gray(image: np.ndarray, how: str | None = None) -> np.ndarray:
    """(qy, qx, channels) -> (qy, qx) in the same dtype.

    Equal channels (a grayscale image saved as colour) give the first
    channel; otherwise R, G, B are weighted by 0.299, 0.587, 0.114 (ITU-R
    BT.601, as Pillow's ``convert('L')``) and rounded for integer types.
    ``how='first'`` always takes the first channel.
    """
    rgb = image[..., :3] if image.shape[-1] >= 3 else image[..., :1]
    if how == "first" or rgb.shape[-1] == 1 or (rgb == rgb[..., :1]).all():
        return rgb[..., 0]
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if image.dtype.kind in "ui":
        gray = np.rint(gray)
    return gray.astype(image.dtype)


class ScanArray:
    """A :class:`FrameSource` laid out as (sy, sx, qy, qx); frames in C order of the scan."""

    def __init__(self, source: FrameSource, scan_shape, first_frame=0):
        self.source = source
        self.scan_shape = tuple(int(n) for n in scan_shape)
        self.first_frame = int(first_frame)
        self.shape = (*self.scan_shape, *source.frame_shape)
        self.dtype = source.dtype
        self.ndim = 4

    def _frames(self, start, stop):
        return self.source.read(self.first_frame + start, self.first_frame + stop)

    def __getitem__(self, key):
        key = _normalize_key(key, self.shape)
        if _is_list(key[0]):
            return _take_rows(self, key)
        if _is_list(key[1]):
            cols = np.asarray(key[1]).ravel()
            parts = [self[(key[0], slice(int(c), int(c) + 1)) + tuple(key[2:])] for c in cols]
            axis = 0 if isinstance(key[0], (int, np.integer)) else 1
            return np.concatenate(parts, axis=axis)
        ky, kx, kq, kp = key
        sy, sx = self.scan_shape
        ky = ky % sy if isinstance(ky, (int, np.integer)) else ky
        kx = kx % sx if isinstance(kx, (int, np.integer)) else kx
        ys = range(*ky.indices(sy)) if isinstance(ky, slice) else [ky]
        xs = kx.indices(sx) if isinstance(kx, slice) else (kx, kx + 1, 1)
        if not ys or xs[0] >= xs[1]:
            rows = np.empty((len(ys), 0, *self.source.frame_shape), self.dtype)
        elif isinstance(ky, slice) and ky.step in (None, 1) and xs == (0, sx, 1):
            y0 = ys[0]
            rows = self._frames(y0 * sx, (ys[-1] + 1) * sx).reshape(len(ys), sx, *self.source.frame_shape)
        else:
            x0, x1, step = xs
            rows = np.stack([self._frames(y * sx + x0, y * sx + x1)[::step] for y in ys])
        out = rows[:, :, kq, kp]
        if not isinstance(kx, slice):
            out = out[:, 0]
        if not isinstance(ky, slice):
            out = out[0]
        return out

    def __repr__(self):
        return f"ScanArray({self.source!r}, scan {self.scan_shape})"


def scan_dask(source: FrameSource, scan_shape, first_frame=0, rows=None):
    """A dask array (sy, sx, qy, qx) over ``source``, chunked by whole scan rows."""
    array = ScanArray(source, scan_shape, first_frame)
    sy, sx, qy, qx = array.shape
    rows = rows or rows_per_chunk(sx * qy * qx * array.dtype.itemsize)
    return dask_from_arraylike(array, (min(rows, sy), sx, qy, qx), ("scan", source.token(), scan_shape, first_frame))


def read_all(source: FrameSource, scan_shape, first_frame=0) -> np.ndarray:
    """The whole scan in memory, read in chunks of rows into one array."""
    array = ScanArray(source, scan_shape, first_frame)
    sy, sx, qy, qx = array.shape
    out = np.empty(array.shape, dtype=array.dtype)
    step = rows_per_chunk(sx * qy * qx * array.dtype.itemsize)
    for y in range(0, sy, step):
        out[y : y + step] = array[y : min(sy, y + step)]
    return out
