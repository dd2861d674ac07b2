"""Detector masks: beam stop and detector edges (True = masked out)."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from stemnmf.calibrate.common import check_mask
from stemnmf.errors import CalibrationError, ConfigError, DataValueError

__all__ = ["edge_mask", "beam_stop_mask", "combine_masks"]

log = logging.getLogger(__name__)


def edge_mask(shape: tuple[int, int], width: int) -> np.ndarray:
    """Mask of the outer ``width`` pixels of a detector of ``shape``."""
    width = int(width)
    if width < 0:
        raise ConfigError(f"edge_pixels={width} must not be negative")
    mask = np.zeros(shape, dtype=bool)
    if width:
        if 2 * width >= min(shape):
            raise CalibrationError(
                f"edge_pixels={width} masks the whole {shape[0]} x {shape[1]} detector", "mask fewer edge pixels"
            )
        mask[:width] = mask[-width:] = True
        mask[:, :width] = mask[:, -width:] = True
    return mask


def beam_stop_mask(
    image,
    *,
    center=None,
    dark_fraction: float = 0.1,
    reach: float | None = None,
    min_size: int | None = None,
    margin: int = 2,
    mask=None,
) -> np.ndarray:
    """Detect a beam stop: a dark region of the mean pattern connected to the centre.

    Pixels darker than ``dark_fraction`` times the median of the pattern are
    dark; the 8-connected dark regions of at least ``min_size`` pixels that
    come within ``reach`` px of ``center`` are the beam stop, grown by
    ``margin`` px to cover its penumbra.

    Parameters
    ----------
    image : array_like
        (qy, qx) mean pattern.
    center : tuple of float, optional
        Where the direct beam is (or would be); default the detector centre.
    dark_fraction : float, default 0.1
    reach : float, optional
        Default 5 % of the smaller detector side (at least 2 px).
    min_size : int, optional
        Default 0.2 % of the detector pixels (at least 10).
    margin : int, default 2
    mask : array_like of bool, optional
        Pixels already masked (ignored when finding dark pixels).

    Returns
    -------
    numpy.ndarray
        (qy, qx) bool, all False when no beam stop is found.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise DataValueError(f"expected one pattern (qy, qx), got shape {image.shape}")
    if not 0 < dark_fraction < 1:
        raise ConfigError(f"dark_fraction={dark_fraction} must be in (0, 1)")
    mask = check_mask(mask, image.shape)
    qy, qx = image.shape
    if center is None:
        center = ((qy - 1) / 2.0, (qx - 1) / 2.0)
    reach = max(2.0, 0.05 * min(qy, qx)) if reach is None else float(reach)
    min_size = max(10, int(0.002 * qy * qx)) if min_size is None else int(min_size)
    level = float(np.median(image[~mask]))
    if level <= 0:
        log.info("beam stop search skipped: the median of the mean pattern is not positive")
        return np.zeros(image.shape, dtype=bool)
    dark = (image < dark_fraction * level) & ~mask
    labels, n = ndimage.label(dark, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    yy, xx = np.indices(image.shape)
    near = np.hypot(yy - center[0], xx - center[1]) <= reach
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    touching = np.unique(labels[near & dark])
    keep = [lab for lab in touching if lab > 0 and sizes[lab] >= min_size]
    if not keep:
        return np.zeros(image.shape, dtype=bool)
    stop = np.isin(labels, keep)
    if margin > 0:
        stop = ndimage.binary_dilation(stop, structure=np.ones((3, 3), bool), iterations=int(margin))
    log.info("beam stop found: %d pixels", int(stop.sum()))
    return stop


def combine_masks(*masks, shape: tuple[int, int]) -> np.ndarray | None:
    """Union of masks (None entries skipped); None when nothing is masked."""
    total = np.zeros(shape, dtype=bool)
    for m in masks:
        if m is not None:
            total |= check_mask(m, shape, allow_full=True)
    return total if total.any() else None
