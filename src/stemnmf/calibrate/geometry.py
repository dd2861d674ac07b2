"""Binning and cropping in detector (q) and scan space, with the calibration kept right.

Pixel convention: detector pixel ``i`` covers ``[i - 0.5, i + 0.5]``, so a
coordinate ``c`` becomes ``(c - (f - 1) / 2) / f`` after binning by ``f`` and
``c - start`` after cropping from ``start``. Binning sums (counts are kept);
rows and columns that do not fill a whole bin are dropped, with a warning. A
binned detector pixel is masked when any of its pixels is masked.
"""

from __future__ import annotations

import logging

import numpy as np

from stemnmf.calibrate.common import as_stack
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError

__all__ = [
    "binned_calibration",
    "bin_patterns",
    "bin_scan",
    "bin_mask",
    "bin_coordinates",
    "crop_slices",
    "bin_dataset",
    "crop_dataset",
]

log = logging.getLogger(__name__)


def _check_factor(factor, name: str) -> int:
    try:
        value = int(factor)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={factor!r} must be a positive integer") from None
    if value != factor or value < 1:
        raise ConfigError(f"{name}={factor!r} must be a positive integer")
    return value


def bin_patterns(patterns, factor: int) -> np.ndarray:
    """Sum ``factor`` x ``factor`` detector pixels.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx) patterns.
    factor : int
        Bin size; trailing rows/columns that do not fill a bin are dropped.

    Returns
    -------
    numpy.ndarray
        float32 (..., qy // factor, qx // factor).
    """
    factor = _check_factor(factor, "bin_q")
    stack, lead = as_stack(patterns)
    n, qy, qx = stack.shape
    by, bx = qy // factor, qx // factor
    if by == 0 or bx == 0:
        raise ConfigError(f"bin_q={factor} is larger than the pattern ({qy} x {qx})", "use a smaller bin")
    if factor == 1:
        return stack.reshape(*lead, qy, qx)
    cut = stack[:, : by * factor, : bx * factor]
    out = cut.reshape(n, by, factor, bx, factor).sum(axis=(2, 4), dtype=np.float32)
    return out.reshape(*lead, by, bx)


def bin_mask(mask, factor: int) -> np.ndarray | None:
    """Bin a (qy, qx) mask: a binned pixel is masked when any of its pixels is."""
    if mask is None:
        return None
    factor = _check_factor(factor, "bin_q")
    mask = np.asarray(mask, dtype=bool)
    by, bx = mask.shape[0] // factor, mask.shape[1] // factor
    cut = mask[: by * factor, : bx * factor]
    return cut.reshape(by, factor, bx, factor).any(axis=(1, 3))


def bin_coordinates(coords, factor: int) -> np.ndarray:
    """Detector coordinates (pixels) after binning by ``factor``: ``(c - (f - 1) / 2) / f``."""
    factor = _check_factor(factor, "bin_q")
    return (np.asarray(coords, dtype=np.float64) - (factor - 1) / 2.0) / factor


def bin_scan(data, factor: int) -> np.ndarray:
    """Sum ``factor`` x ``factor`` probe positions of a (sy, sx, qy, qx) array.

    Works block by block on NumPy arrays (the whole input is never copied)
    and lazily on dask arrays.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        float32 (sy // factor, sx // factor, qy, qx).
    """
    factor = _check_factor(factor, "bin_scan")
    sy, sx, qy, qx = data.shape
    oy, ox = sy // factor, sx // factor
    if oy == 0 or ox == 0:
        raise ConfigError(f"bin_scan={factor} is larger than the scan ({sy} x {sx})", "use a smaller bin")
    if factor == 1:
        return data
    if not isinstance(data, np.ndarray):
        import dask.array as da

        cut = data[: oy * factor, : ox * factor].astype(np.float32)
        cut = cut.rechunk({0: factor * max(1, (cut.chunks[0][0] // factor) or 1), 1: -1, 2: -1, 3: -1})
        return da.coarsen(np.sum, cut, {0: factor, 1: factor}, trim_excess=True).astype(np.float32)
    out = np.empty((oy, ox, qy, qx), dtype=np.float32)
    for row in range(oy):
        block = np.asarray(data[row * factor : (row + 1) * factor, : ox * factor], dtype=np.float32)
        out[row] = block.reshape(factor, ox, factor, qy, qx).sum(axis=(0, 2), dtype=np.float32)
    return out


_bin_scan_data = bin_scan  # bin_dataset's keyword ``bin_scan`` shadows the function


def crop_slices(shape: tuple[int, int], crop, name: str) -> tuple[slice, slice]:
    """Slices for ``crop = (y0, y1, x0, x1)`` (Python slice bounds; None keeps an end)."""
    if crop is None:
        return slice(0, shape[0]), slice(0, shape[1])
    if len(crop) != 4:
        raise ConfigError(f"{name}={crop!r} must be (y0, y1, x0, x1)")
    y = slice(crop[0], crop[1]).indices(shape[0])
    x = slice(crop[2], crop[3]).indices(shape[1])
    if y[1] - y[0] < 1 or x[1] - x[0] < 1:
        raise ConfigError(f"{name}={tuple(crop)} leaves nothing of {shape[0]} x {shape[1]}", "check the bounds")
    return slice(y[0], y[1]), slice(x[0], x[1])


def crop_dataset(dataset, *, q=None, scan=None):
    """Crop a Dataset4D in detector and/or scan space (a view; lazy stays lazy).

    Parameters
    ----------
    dataset : Dataset4D
    q, scan : tuple of 4 int, optional
        ``(y0, y1, x0, x1)`` bounds in detector pixels / probe positions.

    Returns
    -------
    Dataset4D
        With mask, origins and ``Calibration.origin`` / ``ellipse`` moved to
        the new pixel grid (the ellipse is unchanged by a crop).
    """
    if q is None and scan is None:
        return dataset
    sy_sl, sx_sl = crop_slices(dataset.scan_shape, scan, "crop_scan")
    qy_sl, qx_sl = crop_slices(dataset.pattern_shape, q, "crop_q")
    data = dataset.data[sy_sl, sx_sl, qy_sl, qx_sl]
    offset = np.array([qy_sl.start, qx_sl.start], dtype=np.float64)
    mask = None if dataset.mask is None else dataset.mask[qy_sl, qx_sl]
    if mask is not None and mask.all():
        raise CalibrationError("the crop leaves only masked detector pixels", "crop another region")
    origins = None
    if dataset.origins is not None:
        origins = (dataset.origins[sy_sl, sx_sl] - offset).astype(np.float32)
    cal = dataset.calibration
    changes = {}
    if cal.origin is not None:
        changes["origin"] = tuple(np.asarray(cal.origin) - offset)
    calibration = cal.replace(**changes)
    return dataset.replace(data=data, mask=mask, origins=origins, calibration=calibration)


def _bin_q_kernel(block, chunk, *, factor):
    own = block[chunk.own]
    return bin_patterns(own.reshape(-1, *own.shape[2:]), factor)


def binned_calibration(calibration, factor: int):
    """The calibration of patterns binned ``factor`` x ``factor``: q_pixel, origin and ellipse axes rescaled."""
    changes = {}
    if calibration.q_pixel is not None:
        changes["q_pixel"] = calibration.q_pixel * factor
    if calibration.origin is not None:
        changes["origin"] = tuple(bin_coordinates(calibration.origin, factor))
    if calibration.ellipse is not None:
        a, b, angle = calibration.ellipse
        changes["ellipse"] = (a / factor, b / factor, angle)
    return calibration.replace(**changes)


def bin_dataset(dataset, *, bin_q: int = 1, bin_scan: int = 1, engine=None):
    """Bin a Dataset4D in detector and/or scan space, updating its calibration.

    Detector binning runs through the engine (lazy stays lazy); scan binning
    sums blocks of probe positions. ``q_pixel`` is multiplied by ``bin_q`` and
    ``scan_step`` by ``bin_scan``; origins, ellipse and mask are moved to the
    new grids (origins of binned positions are averaged).

    Returns
    -------
    Dataset4D
    """
    bin_q = _check_factor(bin_q, "bin_q")
    bin_scan_factor = _check_factor(bin_scan, "bin_scan")
    out = dataset
    if bin_q > 1:
        engine = engine or Engine()
        qy, qx = dataset.pattern_shape
        if qy % bin_q or qx % bin_q:
            log.warning(
                "bin_q=%d does not divide the pattern %d x %d; the last %d row(s) and %d column(s) are dropped",
                bin_q, qy, qx, qy % bin_q, qx % bin_q,
            )
        new_shape = (qy // bin_q, qx // bin_q)
        if 0 in new_shape:
            raise ConfigError(f"bin_q={bin_q} is larger than the pattern ({qy} x {qx})", "use a smaller bin")
        cal = binned_calibration(dataset.calibration, bin_q)
        origins = None if dataset.origins is None else bin_coordinates(dataset.origins, bin_q).astype(np.float32)
        out = engine.transform(
            _bin_q_kernel,
            dataset,
            pattern_shape=new_shape,
            kwargs={"factor": bin_q},
            desc="binning",
            calibration=cal,
            mask=bin_mask(dataset.mask, bin_q),
            origins=origins,
        )
    if bin_scan_factor > 1:
        sy, sx = out.scan_shape
        if sy % bin_scan_factor or sx % bin_scan_factor:
            log.warning(
                "bin_scan=%d does not divide the scan %d x %d; the last %d row(s) and %d column(s) are dropped",
                bin_scan_factor, sy, sx, sy % bin_scan_factor, sx % bin_scan_factor,
            )
        data = _bin_scan_data(out.data, bin_scan_factor)
        origins = None
        if out.origins is not None:
            f = bin_scan_factor
            oy, ox = sy // f, sx // f
            origins = out.origins[: oy * f, : ox * f].reshape(oy, f, ox, f, 2).mean(axis=(1, 3)).astype(np.float32)
        cal = out.calibration
        scan_step = None if cal.scan_step is None else cal.scan_step * bin_scan_factor
        out = out.replace(data=data, origins=origins, calibration=cal.replace(scan_step=scan_step))
    return out
