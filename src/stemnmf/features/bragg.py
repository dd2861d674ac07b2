"""BD: Bragg disk detection by template cross-correlation, rasterised onto a grid.

The steps, each a pure function on arrays:

1. a probe template: :func:`synthetic_disk`, or :func:`probe_template` cut from
   the mean central beam or the mean vacuum probe;
2. :func:`probe_kernel`: the template centred on pixel (0, 0) in Fourier space,
   optionally minus an annulus around it (so a flat background correlates to 0);
3. :func:`find_disks`: for a batch of patterns, the correlation with the kernel
   (cross-correlation, or hybrid/phase correlation with ``corr_power < 1``),
   local maxima above thresholds on the correlation, separated by at least
   ``min_spacing``, away from the detector edge and the masked pixels, refined
   to sub-pixel accuracy by parabolas through the 3 x 3 neighbourhood;
4. :func:`rasterize_disks`: the disk positions relative to each position's
   direct beam, corrected for the ellipse, binned on a grid (3 px by default),
   weighted by correlation intensity or counted;
5. :func:`bragg_vector_map`: the same positions summed over the scan at 1 px.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp
from scipy import ndimage

from stemnmf.calibrate.common import as_stack
from stemnmf.errors import CalibrationError, ConfigError, DataValueError
from stemnmf.features.geometry import correct_offsets

__all__ = [
    "bragg_vector_map",
    "calibrated_vectors",
    "find_disks",
    "grid_columns",
    "masked_fraction",
    "probe_kernel",
    "probe_template",
    "rasterize_disks",
    "synthetic_disk",
]


def synthetic_disk(radius: float, size: int | None = None, edge: float = 1.0) -> np.ndarray:
    """A disk of ``radius`` pixels with a linear edge ``edge`` pixels wide, centred in an odd square.

    Returns
    -------
    numpy.ndarray
        (size, size) float32 in [0, 1]; centre at ``((size - 1) / 2, (size - 1) / 2)``.
    """
    radius = float(radius)
    if not radius > 0:
        raise ConfigError(f"disk radius {radius} must be positive")
    if size is None:
        size = 2 * int(math.ceil(radius + edge)) + 3
    c = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    r = np.hypot(y - c, x - c)
    return np.clip((radius + edge / 2 - r) / max(edge, 1e-6), 0.0, 1.0).astype(np.float32)


def probe_template(image, origin, radius: float, *, cutoff: float = 1.3) -> np.ndarray:
    """The central disk of a (mean or vacuum) pattern, cut out and cleared beyond ``cutoff * radius``.

    Parameters
    ----------
    image : numpy.ndarray
        (qy, qx) pattern holding the probe (the mean pattern, or the mean vacuum pattern).
    origin : (float, float)
        Centre of the probe in ``image``.
    radius : float
        Probe (disk) radius in pixels.
    cutoff : float, default 1.3
        Pixels farther than ``cutoff * radius`` from the centre are set to 0
        (with a 1 px linear edge); the level at that radius is subtracted first.

    Returns
    -------
    numpy.ndarray
        (2h + 1, 2h + 1) float32, non-negative, the probe near its centre.
    """
    image = np.asarray(image, dtype=np.float64)
    h = int(math.ceil(cutoff * radius + 2))
    cy, cx = int(round(origin[0])), int(round(origin[1]))
    out = np.zeros((2 * h + 1, 2 * h + 1))
    y0, x0 = cy - h, cx - h
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(image.shape[0], cy + h + 1), min(image.shape[1], cx + h + 1)
    if sy1 <= sy0 or sx1 <= sx0:
        raise CalibrationError(f"the probe centre {origin} is off the detector", "give the origin")
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    y, x = np.mgrid[: 2 * h + 1, : 2 * h + 1]
    r = np.hypot(y - h - (origin[0] - cy), x - h - (origin[1] - cx))
    rim = (r >= cutoff * radius) & (r < cutoff * radius + 1.5)
    level = float(np.median(out[rim])) if rim.any() else 0.0
    weight = np.clip(cutoff * radius + 0.5 - r, 0.0, 1.0)
    template = np.clip(out - level, 0.0, None) * weight
    if not template.sum() > 0:
        raise CalibrationError("the probe template is empty (no intensity at the direct beam)",
                               "use template='synthetic' with disk_radius, or give a vacuum region")
    return template.astype(np.float32)


def probe_kernel(template, shape, *, background: str = "annular", radius: float | None = None) -> np.ndarray:
    """Fourier transform of the correlation kernel: the template centred on pixel (0, 0).

    Parameters
    ----------
    template : numpy.ndarray
        Probe image (small, non-negative); its intensity centroid is the centre.
    shape : (int, int)
        Pattern shape (qy, qx).
    background : {'annular', 'none'}, default 'annular'
        'annular' subtracts a ring from ``1.2 r + 1`` to ``2 r + 2`` (r the disk
        radius) with the same total weight, so a flat background correlates to 0.
    radius : float, optional
        Disk radius for the annulus; default from the template's area above half maximum.

    Returns
    -------
    numpy.ndarray
        (qy, qx // 2 + 1) complex128, ``rfft2`` of the kernel.
    """
    t = np.clip(np.asarray(template, dtype=np.float64), 0.0, None)
    if t.ndim != 2 or not t.sum() > 0:
        raise ConfigError("the probe template must be a 2D image with positive intensity")
    if background not in ("annular", "none"):
        raise ConfigError(f"unknown kernel background {background!r}", "use 'annular' or 'none'")
    qy, qx = (int(n) for n in shape)
    if radius is None:
        radius = math.sqrt(np.count_nonzero(t >= 0.5 * t.max()) / math.pi)
    # pad so that the annulus fits, and move the centroid onto a whole pixel by linear
    # interpolation (a Fourier phase ramp would ring across the whole correlation map)
    h = int(math.ceil(2 * radius + 3)) if background == "annular" else 1
    t = np.pad(t / t.sum(), h)
    y, x = np.mgrid[: t.shape[0], : t.shape[1]]
    cy, cx = float((t * y).sum()), float((t * x).sum())
    iy, ix = int(round(cy)), int(round(cx))
    t = np.clip(ndimage.shift(t, (iy - cy, ix - cx), order=1, mode="constant"), 0.0, None)
    t /= t.sum()
    if background == "annular":
        r = np.hypot(y - iy, x - ix)
        ring = ((r >= 1.2 * radius + 1) & (r < 2 * radius + 2)).astype(np.float64)
        t = t - ring / ring.sum()
    if t.shape[0] > qy or t.shape[1] > qx:
        raise ConfigError(
            f"the probe template (disk radius {radius:.1f} px) is too large for {qy} x {qx} patterns",
            "use a smaller template or disk_radius",
        )
    kernel = np.zeros((qy, qx))
    kernel[: t.shape[0], : t.shape[1]] = t
    return sfft.rfft2(np.roll(kernel, (-iy, -ix), axis=(0, 1)))


def masked_fraction(mask, radius: float) -> np.ndarray | None:
    """Fraction of a disk of ``radius`` centred on each pixel that is masked; None without a mask."""
    if mask is None or not np.any(mask):
        return None
    mask = np.asarray(mask, dtype=np.float64)
    disk = synthetic_disk(max(radius, 0.5)).astype(np.float64)
    ft = probe_kernel(disk, mask.shape, background="none")
    frac = sfft.irfft2(sfft.rfft2(mask) * np.conj(ft), s=mask.shape)
    return np.clip(frac, 0.0, 1.0).astype(np.float32)


def _correlate(patterns, kernel_ft, corr_power: float, corr_sigma: float) -> np.ndarray:
    n, qy, qx = patterns.shape
    ft = sfft.rfft2(patterns, axes=(1, 2), workers=1)
    ft *= np.conj(kernel_ft).astype(ft.dtype)
    if corr_power != 1.0:
        mag = np.abs(ft)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(mag > 0, mag ** (corr_power - 1.0), 0.0)
        ft *= scale.astype(mag.dtype)
    if corr_sigma > 0:
        fy = sfft.fftfreq(qy)[:, None]
        fx = sfft.rfftfreq(qx)[None, :]
        ft *= np.exp(-2 * np.pi**2 * corr_sigma**2 * (fy**2 + fx**2)).astype(np.float32)
    return sfft.irfft2(ft, s=(qy, qx), axes=(1, 2), workers=1)


def _local_maxima(corr) -> np.ndarray:
    """True where a value is at least each of its 8 neighbours (the outermost pixels are False)."""
    rows = np.maximum(np.maximum(corr[:, :-2], corr[:, 1:-1]), corr[:, 2:])  # along qy
    block = np.maximum(np.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])  # then qx
    peaks = np.zeros(corr.shape, dtype=bool)
    peaks[:, 1:-1, 1:-1] = corr[:, 1:-1, 1:-1] >= block
    return peaks


def _noise_model(arr, mask, quantile: float = 0.9, clip: float = 16.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-pattern gain ``g`` and additive variance ``v0`` of the pixel noise, ``var(x) = g * E[x] + v0``.

    Fitted to pairs of unmasked neighbouring pixels (along every 4th row and
    every 4th column), ``E[(x1 - x2)^2] = g (x1 + x2) + 2 v0``, on the pairs
    whose sum lies in the lower ``quantile`` of the pattern's positive sums
    (the beam and bright disks left out; a selection by the sum does not bias
    the difference of two pixels of equal mean): least squares, then weighted
    by the inverse square of the fitted variance of each pair (that of a
    squared difference) without the pairs whose squared difference exceeds
    ``clip`` times it (edges of fainter disks). For counts ``g`` is the gain
    (1 for electrons counted), ``v0`` the read noise; both are clipped at 0.
    Exact for Poisson counts times a gain; with read noise the sum is a noisy
    regressor and the slope comes out low (the variance predicted within
    about -30 % to +40 % at 0.5-8.5 electrons per pixel, read noise 0.5-1.5 x
    the gain).
    """
    n = arr.shape[0]
    masked = mask is not None and np.any(mask)
    mask = np.asarray(mask, dtype=bool) if masked else None
    views = [(arr[:, ::4], mask[::4] if masked else None),  # along every 4th row
             (np.swapaxes(arr[:, :, 2::4], 1, 2), mask[:, 2::4].T if masked else None)]  # and every 4th column
    sums, diffs = [], []
    for view, m in views:
        a, b = view[:, :, 1:], view[:, :, :-1]
        if masked:
            ok = ~(m[:, 1:] | m[:, :-1])
            a, b = a[:, ok], b[:, ok]
        sums.append(np.asarray(a + b, dtype=np.float32).reshape(n, -1))
        diffs.append(np.asarray(a - b, dtype=np.float32).reshape(n, -1))
    s = np.concatenate(sums, axis=1)
    d2 = np.concatenate(diffs, axis=1) ** 2
    ordered = np.sort(s[:, ::8], axis=1)  # the quantile from every 8th pair is plenty
    size = ordered.shape[1]
    positive = size - np.sum(ordered <= 0, axis=1)
    top = ordered[np.arange(n), np.minimum(size - positive + (quantile * positive).astype(int), size - 1)]
    keep = s <= top[:, None]
    gain, v0 = _line_fit(s, d2, keep.astype(np.float32))
    var = np.maximum(gain[:, None] * s + 2 * v0[:, None], np.maximum(gain, 1e-12)[:, None]).astype(np.float32)
    weight = np.where(keep & (d2 <= clip * var), 1.0 / var**2, 0.0).astype(np.float32)
    return _line_fit(s, d2, weight)


def _line_fit(s, d2, weight) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares ``d2 = g s + 2 v0`` per pattern; ``g, v0 >= 0``."""
    total = np.maximum(np.sum(weight, axis=1, dtype=np.float64), 1e-300)
    ws = weight * s
    s_mean = np.sum(ws, axis=1, dtype=np.float64) / total
    d_mean = np.sum(weight * d2, axis=1, dtype=np.float64) / total
    s_var = np.sum(ws * s, axis=1, dtype=np.float64) / total - s_mean**2
    cov = np.sum(ws * d2, axis=1, dtype=np.float64) / total - s_mean * d_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.clip(np.where(s_var > 1e-12 * np.maximum(s_mean**2, 1e-30), cov / s_var, 0.0), 0.0, None)
    v0 = np.clip(d_mean - gain * s_mean, 0.0, None) / 2
    return gain, v0


def _correlation_noise(arr, values, centre, kernel_ft, mask, corr_power, corr_sigma) -> np.ndarray:
    """Noise standard deviation of the correlation of each pattern, (n, 1, 1) or (n, qy, qx).

    For a linear correlation (``corr_power == 1``) with pixel variance
    ``g x + v0`` (:func:`_noise_model`) the variance of the correlation at
    each position is ``g (k^2 * x) + v0 ||k||^2`` (k the effective kernel,
    ``*`` the correlation, x the pattern with masked pixels 0): Poisson noise
    from the local counts, disk and background alike, so the threshold does
    not depend on what else (the direct beam) the pattern holds; otherwise
    the robust spread of the correlation map itself is used.
    """
    if corr_power != 1.0:
        return (1.4826 * np.median(np.abs(values - centre[:, None]), axis=1))[:, None, None]
    n, qy, qx = arr.shape
    ft = np.asarray(kernel_ft)
    if corr_sigma > 0:
        fy = sfft.fftfreq(qy)[:, None]
        fx = sfft.rfftfreq(qx)[None, :]
        ft = ft * np.exp(-2 * np.pi**2 * corr_sigma**2 * (fy**2 + fx**2))
    kernel = sfft.irfft2(ft, s=(qy, qx))
    gain, v0 = _noise_model(arr, mask)
    floor = (v0 * float(np.sum(kernel**2)))[:, None, None].astype(np.float32)
    if not np.any(gain > 0):
        return np.sqrt(floor)
    # the estimate from the counts seen is 0 where none fell: never less than one count's (at the kernel's peak)
    var = _correlate(np.clip(arr, 0.0, None), sfft.rfft2(kernel**2), 1.0, 0.0).astype(np.float32, copy=False)
    g = gain[:, None, None].astype(np.float32)
    np.maximum(var, float(np.max(kernel**2)) * g, out=var)
    var *= g
    var += floor
    return np.sqrt(var, out=var)


def _climb(surface, k, iy, ix):
    """One step to the largest of the 3 x 3 neighbours; also says which positions moved."""
    qy, qx = surface.shape[1:]
    best = surface[k, iy, ix]
    ny, nx = iy.copy(), ix.copy()
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            cy, cx = np.clip(iy + oy, 1, qy - 2), np.clip(ix + ox, 1, qx - 2)
            v = surface[k, cy, cx]
            better = v > best
            best = np.where(better, v, best)
            ny, nx = np.where(better, cy, ny), np.where(better, cx, nx)
    return ny, nx, (ny != iy) | (nx != ix)


def _parabolic(surface, k, iy, ix):
    """Sub-pixel maximum: a parabola through the three values along each axis."""
    c0 = surface[k, iy, ix].astype(np.float64)
    ym, yp = surface[k, iy - 1, ix].astype(np.float64), surface[k, iy + 1, ix].astype(np.float64)
    xm, xp = surface[k, iy, ix - 1].astype(np.float64), surface[k, iy, ix + 1].astype(np.float64)
    cy, cx = ym - 2 * c0 + yp, xm - 2 * c0 + xp
    with np.errstate(divide="ignore", invalid="ignore"):
        dy = np.where(cy < 0, 0.5 * (ym - yp) / cy, 0.0)
        dx = np.where(cx < 0, 0.5 * (xm - xp) / cx, 0.0)
    return iy + np.clip(dy, -0.5, 0.5), ix + np.clip(dx, -0.5, 0.5)


def find_disks(
    patterns,
    kernel_ft,
    *,
    refine_ft=None,
    mask=None,
    corr_power: float = 1.0,
    corr_sigma: float = 0.0,
    min_relative: float = 0.001,
    min_absolute: float = 0.0,
    min_snr: float = 6.0,
    min_spacing: float = 5.0,
    edge: int = 4,
    max_disks: int = 70,
    masked_fraction_map=None,
    max_masked_fraction: float = 0.25,
) -> np.ndarray:
    """Bragg disks in a batch of patterns by correlation with a probe kernel.

    Parameters
    ----------
    patterns : array_like
        (qy, qx) or (n, qy, qx).
    kernel_ft : numpy.ndarray
        From :func:`probe_kernel`; its correlation finds and thresholds the disks.
    refine_ft : numpy.ndarray, optional
        A second kernel (normally the same template with ``background='none'``)
        whose correlation gives the sub-pixel positions: an annular kernel
        rejects diffuse background well but is pulled towards bright neighbours.
    mask : numpy.ndarray of bool, optional
        True = masked out; masked pixels are set to 0 before correlating, so
        their values never contribute.
    corr_power : float, default 1
        1: cross-correlation; 0: phase correlation; in between: hybrid.
    corr_sigma : float, default 0
        Gaussian smoothing of the correlation, in pixels.
    min_relative : float, default 0.001
        Keep maxima at least this fraction of the pattern's largest correlation
        (normally the direct beam, often 100 to 1000 times the Bragg disks).
    min_absolute : float, default 0
        Keep maxima at least this correlation (intensity units of the kernel).
    min_snr : float, default 6
        Keep maxima at least this many noise standard deviations above the
        background level of the correlation (0 for an annular kernel, else its
        median). The noise is local: for pixel variance ``g x + v0`` (gain
        and read noise fitted to differences of neighbouring unmasked pixels)
        the correlation's variance is ``g (k^2 * x) + v0 ||k||^2``, from the
        counts within the kernel's reach (never less than one count's), so it
        does not depend on the rest of the pattern (a direct beam seen or
        masked). Hybrid correlation (``corr_power < 1``): the robust spread of
        the correlation map.
    min_spacing : float, default 5
        Minimum distance between disks in pixels; the weaker of two closer ones is dropped.
    edge : int, default 4
        Maxima closer than this to the detector edge are dropped.
    max_disks : int, default 70
        At most this many disks per pattern (the strongest).
    masked_fraction_map : numpy.ndarray, optional
        From :func:`masked_fraction`.
    max_masked_fraction : float, default 0.25
        Maxima where more of the disk is masked are dropped.

    Returns
    -------
    numpy.ndarray
        (n, max_disks, 3) float32 rows ``(qy, qx, intensity)`` in detector pixels,
        strongest first, NaN-padded; (max_disks, 3) for a single pattern.
    """
    arr, lead = as_stack(patterns)
    if len(lead) > 1:
        raise DataValueError(f"patterns must be (qy, qx) or (n, qy, qx), got {np.shape(patterns)}")
    single = lead == ()
    n = arr.shape[0]
    if mask is not None and np.any(mask):
        arr = arr.copy()
        arr[:, np.asarray(mask, dtype=bool)] = 0.0
    corr = _correlate(arr, kernel_ft, float(corr_power), float(corr_sigma)).astype(np.float32)
    peaks = _significant_maxima(arr, corr, kernel_ft, mask, corr_power=corr_power, corr_sigma=corr_sigma,
                                min_relative=min_relative, min_absolute=min_absolute, min_snr=min_snr, edge=edge,
                                masked_fraction_map=masked_fraction_map, max_masked_fraction=max_masked_fraction)
    out = np.full((n, max_disks, 3), np.nan, dtype=np.float32)
    k, iy, ix = np.nonzero(peaks)
    if k.size == 0:
        return out[0] if single else out
    val = corr[k, iy, ix]
    order = np.lexsort((-val, k))  # by pattern, strongest first
    k, iy, ix, val = k[order], iy[order], ix[order], val[order]
    sel = _spaced(k, iy, ix, n, min_spacing, max_disks)
    k, iy, ix, val = k[sel], iy[sel], ix[sel], val[sel]
    # refine on the plain correlation (no background ring), which a bright neighbour does not bias
    surface = corr
    iy0, ix0 = iy, ix
    if refine_ft is not None:
        surface = _correlate(arr, refine_ft, float(corr_power), float(corr_sigma)).astype(np.float32)
        for _ in range(3):  # climb to the local maximum of the refining surface
            iy, ix, moved = _climb(surface, k, iy, ix)
        # a disk is a maximum of both correlations; a slope of the background is not
        peak = ~moved & (np.abs(iy - iy0) <= 2) & (np.abs(ix - ix0) <= 2)
        k, iy, ix, val = k[peak], iy[peak], ix[peak], val[peak]
    fy, fx = _parabolic(surface, k, iy, ix)
    starts = np.searchsorted(k, np.arange(n + 1))
    rank = np.arange(k.size) - starts[k]
    out[k, rank, 0] = fy
    out[k, rank, 1] = fx
    out[k, rank, 2] = val
    return out[0] if single else out


def _significant_maxima(arr, corr, kernel_ft, mask, *, corr_power, corr_sigma, min_relative, min_absolute, min_snr,
                        edge, masked_fraction_map, max_masked_fraction) -> np.ndarray:
    """(n, qy, qx) bool: local maxima of the correlation away from the edge and the mask, above every threshold."""
    n, qy, qx = arr.shape
    peaks = _local_maxima(corr)
    edge = max(1, int(edge))
    peaks[:, :edge] = False
    peaks[:, qy - edge :] = False
    peaks[:, :, :edge] = False
    peaks[:, :, qx - edge :] = False
    if masked_fraction_map is not None:
        peaks &= (np.asarray(masked_fraction_map) <= max_masked_fraction)[None]
    values = corr.reshape(n, -1)
    top = values.max(axis=1)
    # a zero-sum (annular) kernel correlates a flat background to 0; otherwise take the median level
    zero_sum = abs(complex(np.asarray(kernel_ft)[0, 0])) < 1e-6
    centre = np.zeros(n) if zero_sum else np.median(values, axis=1)
    noise = _correlation_noise(arr, values, centre, kernel_ft, mask, corr_power, corr_sigma)
    floor = np.maximum(min_relative * top, min_absolute)[:, None, None]
    peaks &= (corr >= floor) & (corr >= centre[:, None, None] + min_snr * noise)
    peaks &= corr > 0
    return peaks


def _spaced(k, iy, ix, n: int, min_spacing: float, max_disks: int) -> np.ndarray:
    """Indices of the maxima kept per pattern (sorted by pattern, strongest first): none within
    ``min_spacing`` of a stronger kept one, at most ``max_disks``."""
    starts = np.searchsorted(k, np.arange(n + 1))
    spacing2 = float(min_spacing) ** 2
    kept = []
    for p in range(n):
        a, b = starts[p], starts[p + 1]
        if a == b:
            continue
        b = min(b, a + 8 * max_disks)
        py, px = iy[a:b].astype(np.float64), ix[a:b].astype(np.float64)
        keep = np.ones(b - a, dtype=bool)
        if spacing2 > 0 and b - a > 1:
            close = (py[:, None] - py[None, :]) ** 2 + (px[:, None] - px[None, :]) ** 2 < spacing2
            for i in range(b - a):
                if keep[i]:
                    close_i = close[i]
                    close_i[: i + 1] = False
                    keep &= ~close_i
        kept.append(a + np.flatnonzero(keep)[:max_disks])
    return np.concatenate(kept)


def calibrated_vectors(disks, origins, ellipse=None):
    """Disk positions relative to each pattern's direct beam, corrected for the ellipse.

    Parameters
    ----------
    disks : numpy.ndarray
        (n, m, 3) from :func:`find_disks`.
    origins : array_like
        (n, 2) or (2,) direct beam (qy, qx) of each pattern.
    ellipse : (a, b, angle), optional

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        kqy, kqx (n, m) float64 in corrected pixels, NaN where no disk.
    """
    disks = np.asarray(disks)
    origins = np.broadcast_to(np.asarray(origins, dtype=np.float64), (disks.shape[0], 2))
    return correct_offsets(disks[..., 0] - origins[:, :1], disks[..., 1] - origins[:, 1:], ellipse)


def _deposit(kqy, kqx, weights, bin_size, half, interpolation):
    """Flat grid index and weight of every deposit (pattern index, column, weight)."""
    n, m = kqy.shape
    side = 2 * half + 1
    pos = np.broadcast_to(np.arange(n)[:, None], (n, m))
    ok = np.isfinite(kqy) & np.isfinite(kqx) & np.isfinite(weights)
    fy, fx = kqy[ok] / bin_size + half, kqx[ok] / bin_size + half
    w, p = weights[ok], pos[ok]
    if interpolation == "nearest":
        iy, ix = np.floor(fy + 0.5).astype(np.int64), np.floor(fx + 0.5).astype(np.int64)
        parts = [(iy, ix, w)]
    elif interpolation == "bilinear":
        y0, x0 = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
        ty, tx = fy - y0, fx - x0
        parts = [
            (y0, x0, w * (1 - ty) * (1 - tx)),
            (y0 + 1, x0, w * ty * (1 - tx)),
            (y0, x0 + 1, w * (1 - ty) * tx),
            (y0 + 1, x0 + 1, w * ty * tx),
        ]
    else:
        raise ConfigError(f"unknown interpolation {interpolation!r}", "use 'nearest' or 'bilinear'")
    rows, cols, vals = [], [], []
    for iy, ix, ww in parts:
        inside = (iy >= 0) & (iy < side) & (ix >= 0) & (ix < side)
        rows.append(p[inside])
        cols.append(iy[inside] * side + ix[inside])
        vals.append(ww[inside])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _weights(disks, weight: str, kq):
    if weight == "intensity":
        return np.asarray(disks[..., 2], dtype=np.float64)
    if weight == "count":
        return np.where(np.isfinite(kq), 1.0, np.nan)
    raise ConfigError(f"unknown disk weight {weight!r}", "use 'intensity' or 'count'")


def rasterize_disks(
    disks,
    origins,
    ellipse=None,
    *,
    bin_size: float = 3.0,
    half_width: int,
    weight: str = "intensity",
    interpolation: str = "nearest",
    exclude_radius: float = 0.0,
):
    """Bin calibrated disk positions of each pattern onto a square grid centred on the direct beam.

    Parameters
    ----------
    disks : numpy.ndarray
        (n, m, 3) from :func:`find_disks`.
    origins : array_like
        (n, 2) or (2,) direct beam (qy, qx) per pattern.
    ellipse : (a, b, angle), optional
    bin_size : float, default 3
        Grid spacing in corrected pixels; bin (0, 0) is centred on the beam.
    half_width : int
        The grid has ``2 * half_width + 1`` bins along each axis.
    weight : {'intensity', 'count'}
        Deposit the correlation intensity of each disk, or 1.
    interpolation : {'nearest', 'bilinear'}
        Nearest bin, or shared between the four nearest.
    exclude_radius : float, default 0
        Disks closer than this to the beam (the direct beam itself) are left out.

    Returns
    -------
    scipy.sparse.csr_matrix
        (n, (2 * half_width + 1) ** 2) float64; column ``iy * side + ix`` is
        the bin at corrected offset ``((iy - half_width) * bin_size, (ix - half_width) * bin_size)``.
    """
    if not bin_size > 0:
        raise ConfigError(f"bd_bin={bin_size} must be positive")
    kqy, kqx = calibrated_vectors(disks, origins, ellipse)
    w = _weights(disks, weight, kqy)
    if exclude_radius > 0:
        w = np.where(np.hypot(kqy, kqx) < exclude_radius, np.nan, w)
    side = 2 * int(half_width) + 1
    rows, cols, vals = _deposit(kqy, kqx, w, float(bin_size), int(half_width), interpolation)
    out = sp.csr_matrix((vals, (rows, cols)), shape=(kqy.shape[0], side * side))
    out.sum_duplicates()
    return out


def grid_columns(half_width: int, bin_size: float):
    """Corrected offsets (qy, qx) of every column of a rasterised grid, in pixels."""
    side = 2 * int(half_width) + 1
    iy, ix = np.divmod(np.arange(side * side), side)
    return (iy - half_width) * float(bin_size), (ix - half_width) * float(bin_size)


def bragg_vector_map(
    disks, origins, ellipse=None, *, half_width: int, weight: str = "intensity", exclude_radius: float = 0.0
) -> np.ndarray:
    """Sum over the scan of the calibrated disk positions on a 1 px grid (bilinear deposit).

    Returns
    -------
    numpy.ndarray
        (2 * half_width + 1, 2 * half_width + 1) float32; the direct beam is at
        pixel ``(half_width, half_width)``.
    """
    kqy, kqx = calibrated_vectors(disks, origins, ellipse)
    w = _weights(disks, weight, kqy)
    if exclude_radius > 0:
        w = np.where(np.hypot(kqy, kqx) < exclude_radius, np.nan, w)
    side = 2 * int(half_width) + 1
    _, cols, vals = _deposit(kqy, kqx, w, 1.0, int(half_width), "bilinear")
    return np.bincount(cols, weights=vals, minlength=side * side).reshape(side, side).astype(np.float32)
