"""Hot and dead detector pixels.

The hot-pixel rule is the one of Bruefach, Ophus & Scott (2022), taken from
py4DSTEM's hot-pixel filter: on the mean (or maximum) pattern, sort the 21
pixels nearest each pixel (the pixel, its 8 nearest and 12 next-nearest
neighbours: a 5 x 5 square without its corners) and take the second-highest
value as the *local sorted intensity*; a pixel more than ``threshold`` above
it is hot. A lone hot pixel is the highest of its window, so the comparison is
with its brightest neighbour, while a pixel inside a Bragg disk always has a
bright neighbour of its own and is left alone. Here ``threshold`` is a
fraction of the local sorted intensity (``mode='relative'``, 0.55 by
default); ``mode='absolute'`` compares the excess in counts, as py4DSTEM does.
Hot pixels are replaced in every pattern by the median of their 3 x 3
neighbours (the pixel itself and other bad or masked pixels left out).

Dead pixels are the mirror image: a pixel below ``threshold`` times the
second-lowest value of its 21-pixel window (a dead pixel is the lowest of its
window, so this is its darkest neighbour) is dead. Dead pixels go into the
mask rather than being filled in.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from stemnmf.calibrate.common import as_stack, check_mask
from stemnmf.errors import ConfigError, DataValueError

__all__ = [
    "NEIGHBOURHOOD_21",
    "local_sorted_intensity",
    "find_hot_pixels",
    "find_dead_pixels",
    "replace_pixels",
    "remove_hot_pixels",
]

log = logging.getLogger(__name__)

#: The 21-pixel window of the published rule: 5 x 5 without the corners.
NEIGHBOURHOOD_21 = np.ones((5, 5), dtype=bool)
NEIGHBOURHOOD_21[[0, 0, -1, -1], [0, -1, 0, -1]] = False


def _check_image(image) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise DataValueError(f"expected one pattern (qy, qx), got shape {image.shape}", "pass the mean or max pattern")
    if not np.isfinite(image).all():
        raise DataValueError("the pattern holds NaN or Inf values", "replace them (e.g. numpy.nan_to_num) first")
    return image


def local_sorted_intensity(image, rank: int = 1, *, mask=None, lowest: bool = False) -> np.ndarray:
    """The ``rank``-th highest (or lowest) value among the 21 pixels nearest each pixel.

    Parameters
    ----------
    image : array_like
        One pattern (qy, qx).
    rank : int, default 1
        0 = the highest value of the window (the pixel itself included), 1 = the
        second highest, and so on.
    mask : array_like of bool, optional
        Pixels left out of every window (True = masked).
    lowest : bool, default False
        Sort from the lowest value instead.

    Returns
    -------
    numpy.ndarray
        (qy, qx) float64; -inf (+inf when ``lowest``) where a window holds
        fewer than ``rank + 1`` usable pixels.
    """
    image = _check_image(image)
    mask = check_mask(mask, image.shape, allow_full=True)
    n = int(NEIGHBOURHOOD_21.sum())
    if not 0 <= rank < n:
        raise ConfigError(f"rank={rank} must be between 0 and {n - 1}")
    fill = np.inf if lowest else -np.inf
    work = np.where(mask, fill, image)
    order = rank if lowest else n - 1 - rank
    return ndimage.rank_filter(work, rank=order, footprint=NEIGHBOURHOOD_21, mode="constant", cval=fill)


def find_hot_pixels(image, *, threshold: float = 0.55, mode: str = "relative", rank: int = 1, mask=None) -> np.ndarray:
    """Hot pixels of a mean or maximum pattern (the published rule).

    Parameters
    ----------
    image : array_like
        The mean or maximum pattern (qy, qx).
    threshold : float, default 0.55
        How far above its local sorted intensity a pixel must be: a fraction
        of that intensity (``mode='relative'``) or counts (``'absolute'``).
    mode : {'relative', 'absolute'}
    rank : int, default 1
        Which sorted value to compare with (0 = highest, 1 = second highest).
    mask : array_like of bool, optional
        Pixels already masked; never reported and left out of the windows.

    Returns
    -------
    numpy.ndarray
        (qy, qx) bool, True at hot pixels.
    """
    if mode not in ("relative", "absolute"):
        raise ConfigError(f"hot-pixel mode {mode!r} is unknown", "use 'relative' or 'absolute'")
    if not np.isfinite(threshold) or threshold < 0:
        raise ConfigError(f"hot-pixel threshold {threshold!r} must be a non-negative number")
    image = _check_image(image)
    mask = check_mask(mask, image.shape, allow_full=True)
    reference = local_sorted_intensity(image, rank, mask=mask)
    excess = image - reference
    limit = threshold * np.abs(reference) if mode == "relative" else threshold
    with np.errstate(invalid="ignore"):
        hot = np.isfinite(reference) & (excess > 0) & (excess > limit)
    return hot & ~mask


def find_dead_pixels(image, *, threshold: float = 0.1, rank: int = 1, mask=None) -> np.ndarray:
    """Dead pixels: darker than ``threshold`` times the second-lowest value of their window.

    Parameters
    ----------
    image : array_like
        The mean pattern (qy, qx).
    threshold : float, default 0.1
        Fraction of the local sorted (low) intensity below which a pixel is dead.
    rank : int, default 1
        Which sorted value from the lowest to compare with.
    mask : array_like of bool, optional
        Pixels already masked.

    Returns
    -------
    numpy.ndarray
        (qy, qx) bool, True at dead pixels.
    """
    if not np.isfinite(threshold) or not 0 <= threshold < 1:
        raise ConfigError(f"dead-pixel threshold {threshold!r} must be in [0, 1)")
    image = _check_image(image)
    mask = check_mask(mask, image.shape, allow_full=True)
    reference = local_sorted_intensity(image, rank, mask=mask, lowest=True)
    with np.errstate(invalid="ignore"):
        dead = np.isfinite(reference) & (reference > 0) & (image <= threshold * reference)
    return dead & ~mask


def _neighbour_table(bad: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each bad pixel: its coordinates and its usable 3 x 3 neighbours (padded, with a validity flag)."""
    qy, qx = bad.shape
    ys, xs = np.nonzero(bad)
    offsets = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])
    ny = ys[:, None] + offsets[None, :, 0]
    nx = xs[:, None] + offsets[None, :, 1]
    inside = (ny >= 0) & (ny < qy) & (nx >= 0) & (nx < qx)
    ny_c = np.clip(ny, 0, qy - 1)
    nx_c = np.clip(nx, 0, qx - 1)
    valid = inside & ~excluded[ny_c, nx_c]
    return ys, xs, np.stack([ny_c, nx_c]), valid


def replace_pixels(patterns, bad, *, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Replace bad pixels in every pattern by the median of their 3 x 3 neighbours.

    Neighbours that are bad themselves or masked are left out of the median.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx) patterns.
    bad : array_like of bool
        (qy, qx), True at the pixels to replace.
    mask : array_like of bool, optional
        (qy, qx) masked pixels, never used as neighbours.

    Returns
    -------
    cleaned : numpy.ndarray
        float32, same shape as ``patterns``.
    unfixed : numpy.ndarray
        (qy, qx) bool: bad pixels without a usable neighbour (left unchanged;
        mask them).
    """
    stack, lead = as_stack(patterns)
    shape = stack.shape[1:]
    bad = check_mask(bad, shape, allow_full=True)
    mask = check_mask(mask, shape, allow_full=True)
    out = np.array(stack, dtype=np.float32, copy=True)
    unfixed = np.zeros(shape, dtype=bool)
    if bad.any():
        ys, xs, (ny, nx), valid = _neighbour_table(bad, bad | mask)
        values = stack[:, ny, nx]  # (n, n_bad, 8)
        values = np.where(valid[None], values, np.nan)
        fixable = valid.any(axis=1)
        with np.errstate(all="ignore"):
            medians = np.nanmedian(values[:, fixable], axis=2)
        out[:, ys[fixable], xs[fixable]] = medians
        unfixed[ys[~fixable], xs[~fixable]] = True
    return out.reshape(*lead, *shape), unfixed


def replace_kernel(block, chunk, *, bad, mask):
    """Engine kernel: :func:`replace_pixels` on the chunk's own patterns."""
    own = block[chunk.own]
    cleaned, _ = replace_pixels(own.reshape(-1, *own.shape[2:]), bad, mask=mask)
    return cleaned


def remove_hot_pixels(
    patterns,
    *,
    threshold: float = 0.55,
    mode: str = "relative",
    reference: str = "mean",
    mask=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Find hot pixels on the mean or maximum of a stack and replace them in every pattern.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx) patterns.
    threshold, mode
        As in :func:`find_hot_pixels`.
    reference : {'mean', 'max'}
        The pattern the hot pixels are found on.
    mask : array_like of bool, optional
        Masked pixels.

    Returns
    -------
    cleaned : numpy.ndarray
        float32 patterns, same shape.
    hot : numpy.ndarray
        (qy, qx) bool hot-pixel map.
    """
    stack, lead = as_stack(patterns)
    if reference == "mean":
        image = stack.mean(axis=0, dtype=np.float64)
    elif reference == "max":
        image = stack.max(axis=0)
    else:
        raise ConfigError(f"hot-pixel reference {reference!r} is unknown", "use 'mean' or 'max'")
    hot = find_hot_pixels(image, threshold=threshold, mode=mode, mask=mask)
    cleaned, _ = replace_pixels(stack, hot, mask=mask)
    return cleaned.reshape(*lead, *stack.shape[1:]), hot
