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
from pathlib import Path

import numpy as np

__all__ = [
    "FrameSource",
    "H5Array",
    "ImageFiles",
    "NpyArray",
    "RawFrames",
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


def _token(*parts) -> str:
    from dask.base import tokenize

    return tokenize(*[str(p) for p in parts])


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
        name="stemnmf-" + _token(*name_parts),
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

    def __repr__(self):
        return f"H5Array({self.path!r}, {self.name!r}, {self.shape}, {self.dtype})"


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
                from stemnmf.errors import FormatError

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
