"""From what a reader found to a (sy, sx, qy, qx) array: scan shape, chunking, memory.

:func:`arrange` applies the scan shape (the user's, the file's, or one written in the
name) to a reader's :class:`~stemnmf.io.readers.Raw`, and returns a dask array chunked by
whole scan rows when lazy, or a NumPy array read chunk by chunk into one buffer.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from stemnmf.errors import FormatError, ScanShapeError
from stemnmf.io.readers._common import Raw, scan_shape_from_name
from stemnmf.io.readers.sources import (
    CHUNK_BYTES,
    FrameSource,
    RowReader,
    dask_from_arraylike,
    read_all,
    rows_per_chunk,
    scan_dask,
)

__all__ = ["arrange", "native", "resolve_scan_shape", "row_reader", "suggest_scan_shapes"]

log = logging.getLogger(__name__)


def suggest_scan_shapes(n: int, count: int = 3) -> list[tuple[int, int]]:
    """Up to ``count`` (rows, cols) with rows x cols = n, closest to square first."""
    pairs = [(a, n // a) for a in range(1, math.isqrt(n) + 1) if n % a == 0]
    return sorted(pairs, key=lambda p: p[1] - p[0])[:count]


def _suggestion(n: int) -> str:
    shapes = suggest_scan_shapes(n)
    if len(shapes) == 1 and shapes[0][0] == 1:
        return f"{n} is prime, so only 1x{n} fits"
    return "e.g. " + " or ".join(f"{a}x{b}" for a, b in shapes if a > 1 or len(shapes) == 1)


def resolve_scan_shape(raw: Raw, file_path: Path, n: int, user) -> tuple[tuple[int, int], str]:
    """The scan shape of a stack of ``n`` frames, and where it came from."""
    if user is not None:
        shape, source = user, "--scan-shape"
    elif raw.scan_shape is not None:
        shape, source = tuple(raw.scan_shape), raw.scan_shape_source or "the file"
    else:
        shape = scan_shape_from_name(file_path.stem if file_path.is_file() else file_path.name, n)
        source = f"the name {file_path.name!r}" if shape else ""
    if shape is None:
        raise ScanShapeError(
            f"{file_path} holds a stack of {n} patterns but no scan shape",
            f"give the scan shape as --scan-shape ROWSxCOLS ({_suggestion(n)})",
        )
    if shape[0] * shape[1] != n:
        raise ScanShapeError(
            f"scan shape {shape[0]}x{shape[1]} (from {source}) needs {shape[0] * shape[1]} patterns "
            f"but {file_path} holds {n}",
            f"give a scan shape whose rows x columns is {n} ({_suggestion(n)})",
        )
    return (int(shape[0]), int(shape[1])), source


def _is_dask(data) -> bool:
    return hasattr(data, "dask") and hasattr(data, "compute")


def arrange(raw: Raw, file_path: Path, user_shape, lazy: bool):
    """The data as (sy, sx, qy, qx): a dask array when lazy, else NumPy; and the scan-shape source."""
    data = raw.data
    if isinstance(data, FrameSource):
        shape, source = resolve_scan_shape(raw, file_path, data.n_frames, user_shape)
        return (scan_dask(data, shape) if lazy else read_all(data, shape)), source
    ndim = len(data.shape)
    if ndim not in (3, 4):
        raise FormatError(f"{file_path} holds {ndim}D data of shape {tuple(data.shape)}, not 4D-STEM data")
    if ndim == 4 and user_shape is not None and tuple(user_shape) != tuple(data.shape[:2]):
        sy, sx = data.shape[:2]
        if user_shape[0] * user_shape[1] != sy * sx:
            raise ScanShapeError(
                f"scan shape {user_shape[0]}x{user_shape[1]} does not fit {file_path}, "
                f"whose scan is {sy}x{sx} ({sy * sx} patterns)",
                f"leave out --scan-shape, or give rows x columns = {sy * sx}",
            )
        log.info("%s: the %dx%d scan is read as %dx%d as asked", file_path, sy, sx, *user_shape)
        if _is_dask(data) or isinstance(data, np.ndarray):
            data = data.reshape(-1, *data.shape[2:])
        else:
            data = _as_dask_frames(data, file_path)
        ndim = 3
    if ndim == 4:
        shape, source = tuple(int(n) for n in data.shape[:2]), raw.metadata.get("scan_shape_source", "the file")
    else:
        shape, source = resolve_scan_shape(raw, file_path, int(data.shape[0]), user_shape)
    sy, sx = shape
    qy, qx = (int(n) for n in data.shape[-2:])
    row_bytes = sx * qy * qx * np.dtype(data.dtype).itemsize
    storage = getattr(data, "storage_chunks", None)
    storage_rows = None
    if storage:
        storage_rows = storage[0] if ndim == 4 else max(1, storage[0] // sx)
    rows = min(sy, rows_per_chunk(row_bytes, storage_rows))
    if isinstance(data, np.ndarray):
        return data.reshape(sy, sx, qy, qx), source
    if not _is_dask(data):  # an array-like (NpyArray, H5Array)
        if not lazy:
            out = np.empty((sy, sx, qy, qx), dtype=data.dtype)
            flat = out.reshape(-1, qy, qx) if ndim == 3 else out
            step = rows * (sx if ndim == 3 else 1)
            total = data.shape[0]
            for start in range(0, total, step):
                flat[start : start + step] = data[start : min(total, start + step)]
            return out, source
        chunks = (rows * sx, qy, qx) if ndim == 3 else (rows, sx, qy, qx)
        data = dask_from_arraylike(data, chunks, (repr(data), _stamp(file_path)))
    # dask: keep the reader's chunking along the scan (a slice of a computed chunk cannot be read
    # alone, so merging chunks would make every read larger); join chunks of the pattern axes, split
    # chunks that are too large, and align stacks of frames to whole scan rows
    frame_bytes = qy * qx * np.dtype(data.dtype).itemsize
    if ndim == 3:
        per_row = max(1, round(max(data.chunks[0]) / sx))
        data = data.rechunk({0: per_row * sx, 1: -1, 2: -1}).reshape(sy, sx, qy, qx)
    else:
        target = {1: -1, 2: -1, 3: -1}
        if max(data.chunks[0]) * sx * frame_bytes > 2 * CHUNK_BYTES:
            target[0] = rows
        data = data.rechunk(target)
    data = native(data)  # before reading, so that an in-memory copy is made once
    if not lazy:
        out = np.empty(data.shape, dtype=data.dtype)
        import dask.array as da

        da.store(data, out, lock=False, scheduler="threads")
        return out, source
    return data, source


def row_reader(raw: Raw, data):
    """A :class:`~stemnmf.io.readers.sources.RowReader` of the lazy ``data`` that :func:`arrange` built, or None.

    Array-likes (HDF5, .npy) and frame sources are read straight from the
    file; data a reader returned as a dask array is read through dask (None).
    """
    source = raw.data
    if not _is_dask(data) or _is_dask(source) or isinstance(source, np.ndarray):
        return None
    shape = tuple(int(n) for n in data.shape)
    if len(source.shape) not in (3, 4) or tuple(int(n) for n in source.shape[-2:]) != shape[2:]:
        return None
    if int(np.prod(source.shape[:-2], dtype=np.int64)) != shape[0] * shape[1]:
        return None
    dtype = np.dtype(data.dtype)
    if dtype != np.dtype(source.dtype) and not (np.dtype(source.dtype).kind == "b" and dtype == np.uint8):
        return None
    return RowReader(source, shape[:2], dtype=dtype)


def _as_dask_frames(arraylike, file_path):
    """A 4D array-like as a dask stack of frames, one scan row per chunk."""
    sy, sx, qy, qx = arraylike.shape
    return dask_from_arraylike(arraylike, (1, sx, qy, qx), (repr(arraylike), _stamp(file_path))).reshape(-1, qy, qx)


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def native(data):
    """Native byte order (and uint8 for booleans), lazily for dask arrays."""
    dtype = np.dtype(data.dtype)
    if dtype.kind == "b":
        return data.astype(np.uint8)
    if dtype.byteorder not in ("=", "|") and dtype.newbyteorder("=") != dtype:
        return data.astype(dtype.newbyteorder("="))
    return data
