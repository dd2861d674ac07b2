"""Peak-reconstruction denoiser in the spirit of Cao et al.'s "ePattern" preprocessing.

Each pattern is rebuilt from the Bragg spots found in it:

1. **Background:** a grey opening (of the 3 x 3 box-averaged pattern) with a
   square of side ``2 * disk_radius + 3`` (wider than any disk, so disks
   vanish from it), smoothed by a box of the same size, is subtracted.
2. **Noise level and peaks:** the residual is averaged over a square of side
   ``2 * disk_radius + 1`` (a box matched filter) and the median of that
   average (the background the opening left) is taken off. The noise level is the
   robust standard deviation (1.4826 x median absolute deviation) of the
   average over the pattern; local maxima at least ``min_distance`` apart
   whose height above the background (their prominence) exceeds ``n_sigma``
   noise levels are spots.
3. **Redrawing:** each spot is drawn as a clean disk of the probe's radius at
   its sub-pixel position (centre of mass of the positive residual within
   ``disk_radius + 1`` px of the maximum, bilinearly splatted) with its mean
   intensity (residual summed over that window / disk area).

The output is the sum of the disks: non-negative, zero between spots and at
masked pixels.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from stemnmf.calibrate.common import as_stack, check_mask, pattern_statistics
from stemnmf.calibrate.origin import estimate_probe
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError

__all__ = ["epattern", "epattern_dataset", "disk_kernel", "render_disks", "find_spots"]

log = logging.getLogger(__name__)

#: Patterns processed together (bounds the float64 and FFT temporaries).
_BATCH = 64


def disk_kernel(radius: float) -> np.ndarray:
    """A disk of ones (anti-aliased edge) of ``radius`` px centred in an odd square."""
    if not np.isfinite(radius) or radius <= 0:
        raise ConfigError(f"disk radius {radius!r} must be positive")
    half = int(np.ceil(radius)) + 1
    yy, xx = np.indices((2 * half + 1, 2 * half + 1)) - half
    return np.clip(radius + 0.5 - np.hypot(yy, xx), 0, 1).astype(np.float64)


def _fft_convolve(stack: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'same' convolution of every pattern with a centred odd kernel (zero padding)."""
    n, qy, qx = stack.shape
    ky, kx = kernel.shape
    py, px = qy + ky - 1, qx + kx - 1
    shape = (sfft.next_fast_len(py, real=True), sfft.next_fast_len(px, real=True))
    spec = sfft.rfft2(stack, s=shape, axes=(1, 2))
    spec *= sfft.rfft2(kernel, s=shape)[None]
    full = sfft.irfft2(spec, s=shape, axes=(1, 2))
    hy, hx = ky // 2, kx // 2
    return full[:, hy : hy + qy, hx : hx + qx]


def find_spots(
    patterns,
    *,
    disk_radius: float,
    n_sigma: float = 5.0,
    min_distance: int | None = None,
    mask=None,
    subtract_background: bool = True,
):
    """Bragg spots of every pattern: positions, mean intensities and the noise level.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx).
    disk_radius : float
        Probe (disk) radius in pixels.
    n_sigma : float, default 5
        Spots stand this many noise levels of the matched filter above the background.
    min_distance : int, optional
        Smallest distance between spots in pixels; default ``disk_radius + 1``.
    mask : array_like of bool, optional
    subtract_background : bool, default True

    Returns
    -------
    index : numpy.ndarray
        (m,) flat pattern index of each spot.
    positions : numpy.ndarray
        (m, 2) sub-pixel (qy, qx).
    intensity : numpy.ndarray
        (m,) mean intensity over the disk, above the background.
    noise : numpy.ndarray
        (n,) noise level of the matched filter per pattern.
    """
    stack, lead = as_stack(patterns)
    n, qy, qx = stack.shape
    mask = check_mask(mask, (qy, qx))
    if n_sigma <= 0:
        raise ConfigError(f"n_sigma={n_sigma} must be positive")
    radius = float(disk_radius)
    kernel = disk_kernel(radius)
    min_distance = int(min_distance if min_distance is not None else int(np.ceil(radius)) + 1)
    work = np.array(stack, dtype=np.float32)
    if mask.any():
        fill = np.median(work[:, ~mask], axis=1)
        work = np.where(mask[None], fill[:, None, None], work)
    if subtract_background:
        side = 2 * int(np.ceil(radius)) + 3
        # a light 3 x 3 average first, or the opening follows the noise's minima
        smooth = ndimage.uniform_filter(work, size=(1, 3, 3), mode="nearest")
        background = ndimage.grey_opening(smooth, size=(1, side, side), mode="nearest")
        background = ndimage.uniform_filter(background, size=(1, side, side), mode="nearest")
        residual = work - background
    else:
        residual = work
    residual[:, mask] = 0.0
    box = 2 * int(round(radius)) + 1
    matched = ndimage.uniform_filter(residual, size=(1, box, box), mode="constant")
    matched[:, mask] = 0.0
    valid = ~mask
    # the opening sits a little below the true background: the median of the
    # matched filter (mostly background) is the baseline spots are measured from;
    # the filter is smooth, so every 3rd pixel is plenty for the median and MAD
    sample = matched[:, valid][:, ::3]
    med = np.median(sample, axis=1)
    matched -= med[:, None, None]
    matched[:, mask] = 0.0
    noise = 1.4826 * np.median(np.abs(sample - med[:, None]), axis=1)
    fallback = noise <= 0
    if fallback.any():
        noise[fallback] = matched[fallback][:, valid].std(axis=1)
    noise = np.maximum(noise, 1e-12)
    size = 2 * min_distance + 1
    local_max = matched == ndimage.maximum_filter(matched, size=(1, size, size), mode="constant", cval=-np.inf)
    is_peak = local_max & (matched > n_sigma * noise[:, None, None]) & valid[None]
    idx, py, px = np.nonzero(is_peak)
    # sub-pixel position and intensity from the residual in a disk of radius + 1 around each maximum:
    # centre of mass of its positive part, and its sum over the disk's area
    residual -= med[:, None, None]
    residual[:, mask] = 0.0
    half = int(np.ceil(radius)) + 1
    offsets = np.arange(-half, half + 1)
    padded = np.pad(residual, ((0, 0), (half, half), (half, half)))
    rows = (py[:, None] + offsets[None, :] + half)[:, :, None]
    cols = (px[:, None] + offsets[None, :] + half)[:, None, :]
    patch = padded[idx[:, None, None], rows, cols].astype(np.float64)
    window = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= (radius + 1) ** 2
    inside_y = (py[:, None] + offsets[None, :] >= 0) & (py[:, None] + offsets[None, :] < qy)
    inside_x = (px[:, None] + offsets[None, :] >= 0) & (px[:, None] + offsets[None, :] < qx)
    window = window[None] & inside_y[:, :, None] & inside_x[:, None, :]
    weights = np.where(window, np.clip(patch, 0, None), 0.0)
    total = weights.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        dy = (weights.sum(axis=2) * offsets).sum(axis=1) / total
        dx = (weights.sum(axis=1) * offsets).sum(axis=1) / total
    dy = np.where(np.isfinite(dy), np.clip(dy, -1, 1), 0.0)
    dx = np.where(np.isfinite(dx), np.clip(dx, -1, 1), 0.0)
    positions = np.stack([py + dy, px + dx], axis=1)
    intensity = np.where(window, patch, 0.0).sum(axis=(1, 2)) / kernel.sum()
    return idx, positions, intensity, noise.reshape(lead) if lead else noise


def render_disks(shape, index, positions, intensity, *, disk_radius: float, n_patterns: int) -> np.ndarray:
    """Draw disks of ``disk_radius`` with the given heights at sub-pixel positions.

    Parameters
    ----------
    shape : tuple of int
        (qy, qx).
    index : array_like
        (m,) pattern of each disk.
    positions : array_like
        (m, 2) centres (qy, qx).
    intensity : array_like
        (m,) disk heights.
    n_patterns : int
        Number of patterns to draw.

    Returns
    -------
    numpy.ndarray
        (n_patterns, qy, qx) float32, non-negative for non-negative heights.
    """
    qy, qx = shape
    kernel = disk_kernel(disk_radius)
    pad = kernel.shape[0] // 2 + 1
    canvas = np.zeros((n_patterns, qy + 2 * pad, qx + 2 * pad))
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2) + pad
    index = np.asarray(index, dtype=np.int64)
    intensity = np.asarray(intensity, dtype=np.float64)
    y0 = np.floor(positions[:, 0]).astype(np.int64)
    x0 = np.floor(positions[:, 1]).astype(np.int64)
    fy = positions[:, 0] - y0
    fx = positions[:, 1] - x0
    inside = (y0 >= 0) & (y0 < canvas.shape[1] - 1) & (x0 >= 0) & (x0 < canvas.shape[2] - 1)
    index, y0, x0, fy, fx, intensity = (v[inside] for v in (index, y0, x0, fy, fx, intensity))
    for ddy, ddx, weight in (
        (0, 0, (1 - fy) * (1 - fx)),
        (1, 0, fy * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 1, fy * fx),
    ):
        np.add.at(canvas, (index, y0 + ddy, x0 + ddx), weight * intensity)
    drawn = _fft_convolve(canvas, kernel)[:, pad : pad + qy, pad : pad + qx]
    # FFT round-off leaves ~1e-16 x the peak where nothing was drawn: make it exactly 0
    peak = np.abs(drawn).max(axis=(1, 2), keepdims=True)
    drawn[np.abs(drawn) <= 1e-6 * peak] = 0.0
    return np.clip(drawn, 0, None).astype(np.float32)


def epattern(
    patterns,
    *,
    disk_radius: float | None = None,
    n_sigma: float = 5.0,
    min_distance: int | None = None,
    mask=None,
    subtract_background: bool = True,
) -> np.ndarray:
    """Rebuild every pattern from its Bragg spots, drawn as clean disks.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx).
    disk_radius : float, optional
        Probe radius in pixels; default the direct-beam radius of the mean of
        ``patterns`` (pass it explicitly for results independent of batching).
    n_sigma : float, default 5
        Spot prominence threshold in noise levels.
    min_distance : int, optional
        Smallest distance between spots; default ``disk_radius + 1``.
    mask : array_like of bool, optional
        Masked pixels are ignored and 0 in the output.
    subtract_background : bool, default True

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``patterns``, non-negative.
    """
    stack, lead = as_stack(patterns)
    n, qy, qx = stack.shape
    mask = check_mask(mask, (qy, qx))
    if disk_radius is None:
        disk_radius = estimate_probe(stack.mean(axis=0), mask=mask).radius
    out = np.empty((n, qy, qx), dtype=np.float32)
    for start in range(0, n, _BATCH):  # a few at a time: the FFT temporaries stay small
        batch = stack[start : start + _BATCH]
        index, positions, intensity, _ = find_spots(
            batch,
            disk_radius=disk_radius,
            n_sigma=n_sigma,
            min_distance=min_distance,
            mask=mask,
            subtract_background=subtract_background,
        )
        out[start : start + batch.shape[0]] = render_disks(
            (qy, qx), index, positions, np.clip(intensity, 0, None), disk_radius=disk_radius, n_patterns=batch.shape[0]
        )
    out[:, mask] = 0.0
    return out.reshape(*lead, qy, qx)


def _epattern_kernel(block, chunk, *, disk_radius, n_sigma, min_distance, mask, subtract_background):
    own = block[chunk.own]
    return epattern(
        own.reshape(-1, *own.shape[2:]),
        disk_radius=disk_radius,
        n_sigma=n_sigma,
        min_distance=min_distance,
        mask=mask,
        subtract_background=subtract_background,
    )


def epattern_dataset(
    dataset,
    *,
    disk_radius: float | None = None,
    n_sigma: float = 5.0,
    min_distance: int | None = None,
    subtract_background: bool = True,
    engine=None,
):
    """:func:`epattern` on a Dataset4D through the engine (lazy stays lazy).

    The disk radius, when not given, is the direct-beam radius of the
    dataset's mean pattern (one streamed pass), so every chunk uses the same.

    Returns
    -------
    Dataset4D
    """
    engine = engine or Engine()
    if disk_radius is None:
        mean, _ = pattern_statistics(dataset, engine)
        try:
            disk_radius = estimate_probe(mean, mask=dataset.mask).radius
        except CalibrationError as err:
            raise CalibrationError(
                f"cannot size the ePattern disks: {err.problem}", "give disk_radius (pixels) explicitly"
            ) from None
        log.info("ePattern disk radius %.2f px (direct beam of the mean pattern)", disk_radius)
    return engine.transform(
        _epattern_kernel,
        dataset,
        kwargs=dict(
            disk_radius=float(disk_radius),
            n_sigma=float(n_sigma),
            min_distance=min_distance,
            mask=dataset.mask,
            subtract_background=subtract_background,
        ),
        desc="ePattern",
    )
