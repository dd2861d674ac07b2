"""A probe template from the Bragg disks of a pattern, for when the direct beam is hidden (beam stop, saturation).

Every diffracted disk is an image of the probe (the convergent beam), so the
average of the brightest Bragg disks of the mean pattern, each moved to a
common centre with sub-pixel accuracy, is the probe's shape wherever the
direct beam itself cannot be used.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from stemnmf.calibrate.common import check_mask
from stemnmf.errors import CalibrationError

__all__ = ["disk_template", "beam_hidden", "unmasked_radius"]


def beam_hidden(mask, origin) -> bool:
    """True when the mask covers the origin (a beam stop over the direct beam)."""
    if mask is None or origin is None:
        return False
    mask = np.asarray(mask, dtype=bool)
    iy, ix = int(round(float(origin[0]))), int(round(float(origin[1])))
    return bool(0 <= iy < mask.shape[0] and 0 <= ix < mask.shape[1] and mask[iy, ix])


def unmasked_radius(mask, origin) -> float:
    """Distance (px) from ``origin`` to the nearest unmasked pixel: where the rings can start past a beam stop."""
    free = np.argwhere(~np.asarray(mask, dtype=bool))
    if free.size == 0:
        return 0.0
    return float(np.hypot(free[:, 0] - float(origin[0]), free[:, 1] - float(origin[1])).min())


def _candidates(image, mask, origin, radius, n_disks):
    """(y, x) of the brightest disk-sized blobs, away from the origin, the mask and the edges, brightest first."""
    size = max(3, int(round(2 * radius)) | 1)
    background = ndimage.median_filter(np.where(mask, 0.0, image), size=4 * size + 1)
    excess = np.where(mask, 0.0, image - background)
    smooth = ndimage.uniform_filter(excess, size)
    blocked = ndimage.binary_dilation(mask, iterations=int(math.ceil(1.5 * radius)) + 2)
    yy, xx = np.indices(image.shape)
    margin = int(math.ceil(1.3 * radius)) + 3
    near = np.hypot(yy - origin[0], xx - origin[1]) < 2.5 * radius + 3
    edge = (yy < margin) | (xx < margin) | (yy >= image.shape[0] - margin) | (xx >= image.shape[1] - margin)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=2 * size + 1)) & ~blocked & ~near & ~edge & (smooth > 0)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(smooth[ys, xs])[::-1][:n_disks]
    return excess, ys[order], xs[order]


def disk_template(image, origin, *, radius: float, mask=None, n_disks: int = 24, cutoff: float = 1.3,
                  return_intensities: bool = False):
    """The mean of the brightest Bragg disks of ``image``, centred, as a probe template.

    Parameters
    ----------
    image : numpy.ndarray
        (qy, qx) mean (or maximum) pattern.
    origin : (float, float)
        The direct beam's position (its neighbourhood is left out).
    radius : float
        Expected disk radius in pixels (sets the search and the cut-out).
    mask : array_like of bool, optional
        Masked pixels (the beam stop) and their surroundings are left out.
    n_disks : int, default 24
        Brightest disks averaged.
    cutoff : float, default 1.3
        The template is cleared beyond ``cutoff * radius`` (1 px linear edge).
    return_intensities : bool, default False
        Also return the disks' intensities.

    Returns
    -------
    template : numpy.ndarray
        (2h + 1, 2h + 1) float32, non-negative, the disk at its centre.
    radius : float
        Radius (px) of the averaged disk, from its area above half maximum.
    intensities : numpy.ndarray
        Only with ``return_intensities``: (n,) each averaged disk's intensity
        above the local median within ``radius + 1.5`` px, brightest first.

    Raises
    ------
    CalibrationError
        Fewer than three Bragg disks stand out.
    """
    image = np.asarray(image, dtype=np.float64)
    mask = check_mask(mask, image.shape) | ~np.isfinite(image)
    image = np.where(mask, 0.0, image)
    excess, ys, xs = _candidates(image, mask, origin, float(radius), int(n_disks))
    if ys.size < 3:
        raise CalibrationError(
            f"the direct beam is hidden and only {ys.size} Bragg disks stand out for a probe template",
            "give template='synthetic' with disk_radius, or a vacuum region",
        )
    h = int(math.ceil(cutoff * radius + 2))
    reach = h + 2
    window = np.arange(-reach, reach + 1)
    total = np.zeros((2 * h + 1, 2 * h + 1))
    intensities = []
    for y, x in zip(ys, xs):
        patch = excess[y - reach : y + reach + 1, x - reach : x + reach + 1]
        if patch.shape != (window.size, window.size):
            continue
        core = np.clip(patch, 0.0, None) * (np.hypot(*np.meshgrid(window, window, indexing="ij")) <= radius + 1.5)
        if not core.sum() > 0:
            continue
        intensities.append(float(core.sum()))
        dy = float((core.sum(axis=1) * window).sum() / core.sum())
        dx = float((core.sum(axis=0) * window).sum() / core.sum())
        moved = ndimage.shift(patch, (-dy, -dx), order=1, mode="nearest")
        cut = moved[reach - h : reach + h + 1, reach - h : reach + h + 1]
        total += cut / max(float(np.clip(cut, 0, None).sum()), 1e-300)
    r = np.hypot(*np.meshgrid(np.arange(-h, h + 1), np.arange(-h, h + 1), indexing="ij"))
    rim = (r >= cutoff * radius) & (r < cutoff * radius + 1.5)
    level = float(np.median(total[rim])) if rim.any() else 0.0
    template = np.clip(total - level, 0.0, None) * np.clip(cutoff * radius + 0.5 - r, 0.0, 1.0)
    if not template.max() > 0:
        raise CalibrationError("the Bragg disks give an empty probe template", "give template='synthetic' with disk_radius")
    found = math.sqrt(np.count_nonzero(template >= 0.5 * template.max()) / math.pi)
    if return_intensities:
        return template.astype(np.float32), float(found), np.sort(np.asarray(intensities))[::-1]
    return template.astype(np.float32), float(found)
