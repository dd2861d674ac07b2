"""Raw features: binned, flattened patterns (optionally masked, log- or sqrt-scaled), as Cao et al. factorise."""

from __future__ import annotations

import numpy as np

from stemnmf.calibrate.common import as_stack
from stemnmf.errors import ConfigError, DataValueError

__all__ = ["auto_bin", "bin_patterns", "raw_columns"]

_TRANSFORMS = (None, "none", "log", "sqrt")


def auto_bin(shape, max_features: int = 4096) -> int:
    """Smallest binning factor that leaves at most ``max_features`` pixels per pattern."""
    qy, qx = shape
    factor = 1
    while (qy // factor) * (qx // factor) > max_features and factor < min(qy, qx):
        factor += 1
    return factor


def raw_columns(shape, factor: int, mask=None):
    """Which binned pixels are kept, and their centres in detector pixels.

    Returns
    -------
    keep : numpy.ndarray of bool
        (qy // factor * qx // factor,) False for bins whose pixels are all masked.
    qy, qx : numpy.ndarray
        Centres of the kept bins in detector pixels.
    """
    ny, nx = shape[0] // factor, shape[1] // factor
    if mask is None:
        keep = np.ones(ny * nx, dtype=bool)
    else:
        m = np.asarray(mask, dtype=bool)[: ny * factor, : nx * factor]
        keep = ~m.reshape(ny, factor, nx, factor).all(axis=(1, 3)).reshape(-1)
    iy, ix = np.divmod(np.arange(ny * nx), nx)
    centre = (factor - 1) / 2
    return keep, (iy * factor + centre)[keep].astype(np.float32), (ix * factor + centre)[keep].astype(np.float32)


def bin_patterns(patterns, factor: int = 1, mask=None, *, transform: str | None = None, drop_masked: bool = True):
    """Bin patterns by ``factor`` x ``factor`` and flatten them.

    Parameters
    ----------
    patterns : array_like
        (qy, qx) or (n, qy, qx). Rows and columns beyond a multiple of
        ``factor`` are cropped.
    factor : int, default 1
        Binning factor.
    mask : numpy.ndarray of bool, optional
        True = masked out. A binned pixel is the mean of its unmasked pixels;
        bins with none are dropped (``drop_masked``) or 0.
    transform : {None, 'log', 'sqrt'}
        Applied after binning: ``log1p(max(x, 0))`` or ``sqrt(max(x, 0))``.
    drop_masked : bool, default True
        Drop fully masked bins (see :func:`raw_columns`).

    Returns
    -------
    numpy.ndarray
        (n, n_features) float32 ((n_features,) for one pattern).
    """
    arr, lead = as_stack(patterns)
    if len(lead) > 1:
        raise DataValueError(f"patterns must be (qy, qx) or (n, qy, qx), got {np.shape(patterns)}")
    single = lead == ()
    factor = int(factor)
    if factor < 1 or factor > min(arr.shape[1:]):
        raise ConfigError(f"raw_bin={factor} must be between 1 and the pattern size {min(arr.shape[1:])}")
    if transform not in _TRANSFORMS:
        raise ConfigError(f"unknown raw transform {transform!r}", "use None, 'log' or 'sqrt'")
    n, qy, qx = arr.shape
    ny, nx = qy // factor, qx // factor
    crop = arr[:, : ny * factor, : nx * factor]
    if mask is not None and np.any(mask):
        valid = ~np.asarray(mask, dtype=bool)[: ny * factor, : nx * factor]
        weight = valid.reshape(ny, factor, nx, factor).sum(axis=(1, 3)).astype(np.float64)
        sums = np.where(valid, crop, 0.0).reshape(n, ny, factor, nx, factor).sum(axis=(2, 4), dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(weight > 0, sums / weight, 0.0).reshape(n, -1)
    elif factor > 1:
        out = crop.reshape(n, ny, factor, nx, factor).mean(axis=(2, 4), dtype=np.float64).reshape(n, -1)
    else:
        out = crop.reshape(n, -1)
    out = np.asarray(out, dtype=np.float32)
    if transform == "log":
        out = np.log1p(np.maximum(out, 0.0))
    elif transform == "sqrt":
        out = np.sqrt(np.maximum(out, 0.0))
    if drop_masked and mask is not None:
        keep, _, _ = raw_columns((qy, qx), factor, mask)
        out = out[:, keep]
    return out[0] if single else np.ascontiguousarray(out)

