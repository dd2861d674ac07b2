"""Scan-space mean filter: each pattern averaged with its neighbouring probe positions.

This is the 3 x 3 mean over neighbouring probe positions of Cao et al. (2025).
At the scan's edges and corners the mean is over the neighbours that exist
(6 and 4 positions for a 3 x 3 kernel), so no pattern is padded with zeros or
copies.
"""

from __future__ import annotations

import numpy as np

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError, DataValueError

__all__ = ["scan_mean_filter", "scan_mean"]


def _check_size(size) -> int:
    try:
        value = int(size)
    except (TypeError, ValueError):
        raise ConfigError(f"scan mean filter size {size!r} must be an odd integer") from None
    if value != size or value < 1 or value % 2 == 0:
        raise ConfigError(f"scan mean filter size {size!r} must be an odd integer >= 1", "use 3 (Cao et al.)")
    return value


def _box_sum_axis(data: np.ndarray, half: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum over ``-half..half`` neighbours along ``axis`` (only those inside) and their count."""
    n = data.shape[axis]
    out = np.zeros(data.shape, dtype=np.float32)
    counts = np.zeros(n, dtype=np.float32)
    for d in range(-half, half + 1):
        lo, hi = max(0, -d), min(n, n - d)
        if hi <= lo:
            continue
        dst = [slice(None)] * data.ndim
        src = [slice(None)] * data.ndim
        dst[axis] = slice(lo, hi)
        src[axis] = slice(lo + d, hi + d)
        out[tuple(dst)] += data[tuple(src)]
        counts[lo:hi] += 1
    return out, counts


def _filter_rows(block: np.ndarray, own: slice, half: int) -> np.ndarray:
    """Mean filter of the rows ``own`` of ``block`` (rows, sx, qy, qx), using the rows around them."""
    rows = block.shape[0]
    lo, hi = own.start, own.stop
    sums_x, count_x = _box_sum_axis(block[max(0, lo - half) : min(rows, hi + half)], half, axis=1)
    offset = max(0, lo - half)
    n_own = hi - lo
    out = np.zeros((n_own, *block.shape[1:]), dtype=np.float32)
    count_y = np.zeros(n_own, dtype=np.float32)
    for d in range(-half, half + 1):
        src_lo, src_hi = lo + d, hi + d
        a, b = max(src_lo, 0), min(src_hi, rows)
        if b <= a:
            continue
        out[a - src_lo : b - src_lo] += sums_x[a - offset : b - offset]
        count_y[a - src_lo : b - src_lo] += 1
    out /= (count_y[:, None] * count_x[None, :])[:, :, None, None]
    return out


def scan_mean_filter(data, size: int = 3) -> np.ndarray:
    """Mean of each pattern and its ``size`` x ``size`` neighbouring probe positions.

    Parameters
    ----------
    data : array_like
        (sy, sx, qy, qx) patterns.
    size : int, default 3
        Odd kernel width in probe positions.

    Returns
    -------
    numpy.ndarray
        float32 (sy, sx, qy, qx); at the edges the mean is over the
        neighbours inside the scan.
    """
    size = _check_size(size)
    data = np.asarray(data)
    if data.ndim != 4:
        raise DataValueError(f"the scan mean filter needs (sy, sx, qy, qx) data, got shape {data.shape}")
    block = data.astype(np.float32, copy=False)
    return _filter_rows(block, slice(0, block.shape[0]), size // 2)


def _scan_mean_kernel(block, chunk, *, half):
    out = _filter_rows(block, chunk.own, half)
    return out.reshape(-1, *out.shape[2:])


def scan_mean(dataset, *, size: int = 3, engine=None):
    """:func:`scan_mean_filter` on a Dataset4D through the engine (rows of halo; lazy stays lazy).

    Returns
    -------
    Dataset4D
        Same shape, float32; mask, origins and calibration kept.
    """
    size = _check_size(size)
    engine = engine or Engine()
    return engine.transform(_scan_mean_kernel, dataset, kwargs={"half": size // 2}, halo=size // 2, desc="scan mean")
