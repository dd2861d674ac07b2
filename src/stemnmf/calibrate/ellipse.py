"""Elliptical distortion of the diffraction rings.

:func:`fit_ellipse` samples a pattern (the mean or maximum pattern, or a
Bragg-vector map: any image with a ring) along rays from a centre, averages
each ray over a small angular sector, finds the ring's radial peak on each ray
to sub-pixel precision (centroid of the part above half the peak, after a
linear background across the search window) and fits an ellipse to those
points. The fit is a direct least-squares conic fit constrained to ellipses
(Fitzgibbon, Pilu & Fisher 1999, in the numerically stable form of Halir &
Flusser 1998), repeated with points farther than 3 robust standard deviations
(Sampson distance) left out.

The result follows the convention of :class:`stemnmf.io.Calibration`:
``(a, b, angle)`` with semi-axes ``a >= b`` in pixels and ``angle`` the
direction of the ``a`` axis in radians from +qx towards +qy, in
``(-pi/2, pi/2]``; the ellipse centre is given separately as (qy, qx).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings

import numpy as np
from scipy import ndimage, signal

from stemnmf.calibrate.common import check_mask
from stemnmf.calibrate.measure import estimate_probe
from stemnmf.errors import CalibrationError, ConfigError, DataValueError

__all__ = ["EllipseFit", "fit_ellipse", "fit_ellipse_to_points", "find_ring", "ellipse_points"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EllipseFit:
    """An ellipse fitted to a diffraction ring.

    Attributes
    ----------
    center : tuple of float
        (qy, qx) of the ellipse centre in pixels.
    a, b : float
        Semi-axes in pixels, ``a >= b``.
    angle : float
        Direction of the ``a`` axis in radians from +qx towards +qy, in (-pi/2, pi/2].
    rms : float
        Root-mean-square distance (px) of the used points from the ellipse.
    n_points : int
        Points used in the final fit.
    coverage : float
        Fraction of the sampled directions that gave a point.
    ring : tuple of float
        (r_min, r_max) radial window searched, in pixels from the search centre.
    axis_ratio_std, angle_std : float
        Uncertainty (standard deviation over a block bootstrap of the ring
        points) of a / b and of the angle (radians).
    significance : float
        How far the fitted distortion stands from a circle: the Mahalanobis
        distance of ``(a / b - 1) (cos 2 angle, sin 2 angle)`` from 0 under the
        bootstrap's covariance of that vector (NaN without a bootstrap). A
        circle fitted to noisy rings gives about 1-2; below 3 the ellipse is
        not told apart from a circle.
    """

    center: tuple[float, float]
    a: float
    b: float
    angle: float
    rms: float
    n_points: int
    coverage: float
    ring: tuple[float, float]
    axis_ratio_std: float = float("nan")
    angle_std: float = float("nan")
    significance: float = float("nan")

    @property
    def axis_ratio(self) -> float:
        """a / b (1 for a circle)."""
        return self.a / self.b

    @property
    def ellipse(self) -> tuple[float, float, float]:
        """``(a, b, angle)`` as stored in ``Calibration.ellipse``."""
        return (self.a, self.b, self.angle)


def ellipse_points(center, a: float, b: float, angle: float, n: int = 360) -> np.ndarray:
    """(n, 2) points (qy, qx) on an ellipse, evenly spaced in the parametric angle."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    u, v = a * np.cos(t), b * np.sin(t)
    x = center[1] + u * np.cos(angle) - v * np.sin(angle)
    y = center[0] + u * np.sin(angle) + v * np.cos(angle)
    return np.stack([y, x], axis=1)


# -- conic fit ---------------------------------------------------------------------------


def _conic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients (A, B, C, D, E, F) of the ellipse A x^2 + B xy + C y^2 + D x + E y + F = 0."""
    d1 = np.stack([x * x, x * y, y * y], axis=1)
    d2 = np.stack([x, y, np.ones_like(x)], axis=1)
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        raise CalibrationError("the ring points are degenerate (collinear)", "give another ring") from None
    m = s1 + s2 @ t
    m = np.stack([m[2] / 2.0, -m[1], m[0] / 2.0])
    values, vectors = np.linalg.eig(m)
    vectors = np.real(vectors)
    cond = 4 * vectors[0] * vectors[2] - vectors[1] ** 2
    good = np.nonzero(cond > 0)[0]
    if good.size == 0:
        raise CalibrationError("the ring points do not lie on an ellipse", "give another ring")
    a1 = vectors[:, good[np.argmin(np.abs(np.real(values[good])))]]
    return np.concatenate([a1, t @ a1])


def _geometry(coef: np.ndarray) -> tuple[float, float, float, float, float]:
    """(cy, cx, a, b, angle) of a conic's ellipse."""
    A, B, C, D, E, F = coef
    if A + C < 0:
        A, B, C, D, E, F = -A, -B, -C, -D, -E, -F
    q = np.array([[A, B / 2], [B / 2, C]])
    try:
        cx, cy = np.linalg.solve(2 * q, [-D, -E])
    except np.linalg.LinAlgError:
        raise CalibrationError("the fitted conic has no centre", "give another ring") from None
    f0 = A * cx * cx + B * cx * cy + C * cy * cy + D * cx + E * cy + F
    lam, vec = np.linalg.eigh(q)
    if not (lam > 0).all() or f0 >= 0:
        raise CalibrationError("the fitted conic is not an ellipse", "give another ring")
    axes = np.sqrt(-f0 / lam)  # lam ascending -> axes descending
    a, b = float(axes[0]), float(axes[1])
    vx, vy = vec[:, 0]
    angle = float(np.arctan2(vy, vx))
    if angle <= -np.pi / 2:
        angle += np.pi
    elif angle > np.pi / 2:
        angle -= np.pi
    return float(cy), float(cx), a, b, angle


def _sampson(coef: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    A, B, C, D, E, F = coef
    value = A * x * x + B * x * y + C * y * y + D * x + E * y + F
    gx = 2 * A * x + B * y + D
    gy = B * x + 2 * C * y + E
    return np.abs(value) / np.maximum(np.hypot(gx, gy), 1e-300)


def fit_ellipse_to_points(qy, qx, *, n_sigma: float = 3.0, max_iter: int = 5, min_points: int = 6):
    """Fit an ellipse to points (qy, qx), leaving out outliers.

    Returns
    -------
    center : tuple of float
        (qy, qx).
    a, b, angle : float
        Semi-axes (a >= b) and angle of ``a`` from +qx towards +qy, radians.
    rms : float
        RMS distance of the used points from the ellipse (px).
    used : numpy.ndarray of bool
        Which points were used.

    Raises
    ------
    CalibrationError
        Fewer than ``min_points`` points, or no ellipse fits them.
    """
    y = np.asarray(qy, dtype=np.float64).ravel()
    x = np.asarray(qx, dtype=np.float64).ravel()
    if y.shape != x.shape:
        raise DataValueError("qy and qx must have the same number of points")
    used = np.isfinite(x) & np.isfinite(y)
    if used.sum() < min_points:
        raise CalibrationError(
            f"only {int(used.sum())} ring points; an ellipse fit needs {min_points}",
            "give a stronger ring or a wider ring window",
        )
    my, mx = y[used].mean(), x[used].mean()
    scale = max(float(np.sqrt(((y[used] - my) ** 2 + (x[used] - mx) ** 2).mean())), 1e-12)
    yn, xn = (y - my) / scale, (x - mx) / scale
    coef = _conic(xn[used], yn[used])
    for _ in range(max(1, int(max_iter))):
        dist = _sampson(coef, xn, yn) * scale
        finite = np.isfinite(x) & np.isfinite(y)
        sigma = max(1.4826 * float(np.median(dist[used])), 0.02)
        keep = finite & (dist <= n_sigma * sigma)
        if keep.sum() < min_points or np.array_equal(keep, used):
            break
        used = keep
        coef = _conic(xn[used], yn[used])
    cy, cx, a, b, angle = _geometry(coef)
    rms = float(np.sqrt(np.mean((_sampson(coef, xn[used], yn[used]) * scale) ** 2)))
    return (my + scale * cy, mx + scale * cx), a * scale, b * scale, angle, rms, used


def fit_centred_ellipse_to_points(qy, qx, center, *, n_sigma: float = 3.0, max_iter: int = 5, min_points: int = 4):
    """Fit an ellipse of known centre to points (qy, qx), leaving out outliers.

    Linear least squares of A x^2 + B x y + C y^2 = 1 about ``center`` (3
    unknowns instead of 5): far better conditioned than a free centre when
    the points cluster at a few directions (a ring of a few Bragg spots).
    Outliers are points whose radial distance from the ellipse exceeds
    ``n_sigma`` robust standard deviations (at least 0.02 px).

    Returns
    -------
    The same as :func:`fit_ellipse_to_points` (``center`` unchanged).
    """
    y = np.asarray(qy, dtype=np.float64).ravel() - float(center[0])
    x = np.asarray(qx, dtype=np.float64).ravel() - float(center[1])
    finite = np.isfinite(x) & np.isfinite(y)
    used = finite.copy()
    if used.sum() < min_points:
        raise CalibrationError(
            f"only {int(used.sum())} ring points; an ellipse fit needs {min_points}",
            "give a stronger ring or a wider ring window",
        )
    design = np.stack([x * x, x * y, y * y], axis=1)
    radius = np.hypot(x, y)
    for _ in range(max(1, int(max_iter))):
        coef, *_ = np.linalg.lstsq(design[used], np.ones(int(used.sum())), rcond=None)
        with np.errstate(invalid="ignore", divide="ignore"):
            level = design @ coef  # = (r / r_model)^2 on the ray through each point
            residual = np.abs(radius - radius / np.sqrt(np.where(level > 0, level, np.nan)))
        residual[~finite] = np.inf
        sigma = max(1.4826 * float(np.nanmedian(residual[used])), 0.02)
        keep = finite & (residual <= n_sigma * sigma)
        if keep.sum() < min_points or np.array_equal(keep, used):
            break
        used = keep
    coef, *_ = np.linalg.lstsq(design[used], np.ones(int(used.sum())), rcond=None)
    matrix = np.array([[coef[0], coef[1] / 2], [coef[1] / 2, coef[2]]])  # in (x, y)
    values, vectors = np.linalg.eigh(matrix)
    if not values[0] > 0:
        raise CalibrationError("no ellipse fits the ring points", "give a stronger ring or a wider ring window")
    a, b = 1.0 / np.sqrt(values[0]), 1.0 / np.sqrt(values[1])  # the smaller eigenvalue is the long axis
    angle = float(np.arctan2(vectors[1, 0], vectors[0, 0]))
    if angle <= -np.pi / 2:
        angle += np.pi
    elif angle > np.pi / 2:
        angle -= np.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = float(np.sqrt(np.mean((radius[used] - radius[used] / np.sqrt(design[used] @ coef)) ** 2)))
    return (float(center[0]), float(center[1])), float(a), float(b), angle, rms, used


# -- ring search -------------------------------------------------------------------------


def _polar(image: np.ndarray, mask: np.ndarray, center, n_angles: int, step: float):
    qy, qx = image.shape
    corners = np.array([[0, 0], [0, qx - 1], [qy - 1, 0], [qy - 1, qx - 1]], dtype=np.float64)
    r_lim = float(np.max(np.hypot(corners[:, 0] - center[0], corners[:, 1] - center[1])))
    radii = np.arange(0.0, r_lim + step, step)
    theta = np.arange(n_angles) * (2 * np.pi / n_angles)
    return theta, radii, _sample_rays(image, mask, center, theta, radii)


def _sample_rays(image: np.ndarray, mask: np.ndarray, center, theta, radii) -> np.ndarray:
    """(n_angles, n_radii) bilinear samples of ``image`` along rays from ``center``; NaN where masked or outside."""
    yy = center[0] + radii[None, :] * np.sin(theta)[:, None]
    xx = center[1] + radii[None, :] * np.cos(theta)[:, None]
    coords = np.stack([yy, xx])
    values = ndimage.map_coordinates(np.where(mask, 0.0, image), coords, order=1, mode="constant", cval=np.nan)
    bad = ndimage.map_coordinates(mask.astype(np.float64), coords, order=1, mode="constant", cval=1.0)
    values[bad > 0] = np.nan
    return values


def pixel_noise(image, mask=None) -> float:
    """Robust per-pixel noise level of an image from differences of neighbouring pixels.

    1.4826 x the median absolute deviation of horizontal and vertical
    neighbour differences, divided by sqrt(2); structure (disks, rings) touches
    few differences and barely moves the median.
    """
    image = np.asarray(image, dtype=np.float64)
    mask = np.zeros(image.shape, bool) if mask is None else np.asarray(mask, bool)
    parts = []
    for axis in (0, 1):
        d = np.diff(image, axis=axis)
        n = image.shape[axis]
        ok = ~(np.take(mask, range(1, n), axis=axis) | np.take(mask, range(n - 1), axis=axis))
        parts.append(d[ok])
    diffs = np.concatenate(parts)
    if diffs.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / np.sqrt(2))


def find_ring(radii: np.ndarray, profile: np.ndarray, *, noise, r_min: float = 0.0, min_snr: float = 5.0):
    """The most prominent peak of a radial profile beyond ``r_min``.

    ``noise`` is the noise level of the profile: a number, or an array with
    one value per radius (e.g. pixel noise / sqrt(2 pi r), for an azimuthal mean).

    Returns
    -------
    (r_peak, r_lo, r_hi) : tuple of float
        The peak radius and a search window of 1.5 half-maximum widths either side.

    Raises
    ------
    CalibrationError
        No peak stands ``min_snr`` noise levels above its surroundings.
    """
    profile = np.asarray(profile, dtype=np.float64)
    finite = np.isfinite(profile)
    filled = np.interp(radii, radii[finite], profile[finite]) if finite.sum() >= 2 else np.zeros_like(radii)
    step = float(radii[1] - radii[0]) if radii.size > 1 else 1.0
    # a 1 px Gaussian along r removes single-sample spikes (rings are wider); it
    # averages about 2 sqrt(pi) independent 1 px annuli, which lowers the noise
    filled = ndimage.gaussian_filter1d(filled, 1.0 / step, mode="nearest")
    floor = 1e-12 * max(float(np.max(np.abs(filled))), 1e-300)
    noise = np.broadcast_to(np.asarray(noise, dtype=np.float64), radii.shape) / np.sqrt(2 * np.sqrt(np.pi))
    noise = np.maximum(noise, floor)
    # prominence within +-6 px: far-away noise extremes must not inflate it
    peaks, props = signal.find_peaks(filled, prominence=0, wlen=int(round(12.0 / step)) | 1)
    keep = (radii[peaks] > r_min) & finite[peaks]
    peaks, prominence = peaks[keep], props["prominences"][keep]
    snr = prominence / noise[peaks]
    if peaks.size == 0 or snr.max() < min_snr:
        best = 0.0 if snr.size == 0 else float(snr.max())
        raise CalibrationError(
            f"no diffraction ring strong enough for an ellipse fit (best ring {best:.1f} noise levels, "
            f"{min_snr:g} needed)",
            "give the ring window (ring=(r_min, r_max)) or skip the ellipse fit",
        )
    best = int(np.argmax(snr))
    peak = peaks[best]
    widths = signal.peak_widths(filled, [peak], rel_height=0.5)[0][0]
    half = max(0.5 * widths * step, 1.0)
    r_peak = float(radii[peak])
    return r_peak, max(r_min, r_peak - 3 * half), r_peak + 3 * half


def _ring_centre(image, mask, center, exclude_radius):
    """(centre the rays start from, direct-beam radius or None)."""
    probe_radius = None
    if center is None or exclude_radius is None:
        try:
            probe = estimate_probe(image, mask=mask)
            probe_radius = probe.radius
            if center is None:
                center = probe.center
        except CalibrationError:
            if center is None:
                center = ((image.shape[0] - 1) / 2.0, (image.shape[1] - 1) / 2.0)
                log.warning("no direct beam in the pattern; the ring is searched about the detector centre")
    return (float(center[0]), float(center[1])), probe_radius


def _ring_window(polar, radii, sigma, *, exclude_radius, min_snr):
    """(r_lo, r_hi): the window of the most prominent ring of the azimuthal mean beyond ``exclude_radius``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.nanmean(polar, axis=0)
    valid_fraction = np.isfinite(polar).mean(axis=0)
    profile_noise = sigma / np.sqrt(np.maximum(2 * np.pi * radii * valid_fraction, 1.0))
    _, r_lo, r_hi = find_ring(radii, profile, noise=profile_noise, r_min=exclude_radius, min_snr=min_snr)
    return r_lo, r_hi


def _sector_average(polar, n_angles, *, r_mid, sector, min_arc):
    """(polar image averaged over ``sector`` degrees but at least ``min_arc`` px of arc at ``r_mid``, width)."""
    width = max(1, int(round(sector / 360.0 * n_angles)), int(np.ceil(min_arc / (r_mid * 2 * np.pi / n_angles))))
    width = min(width, max(1, n_angles // 8))
    finite = np.isfinite(polar)
    sums = ndimage.uniform_filter1d(np.where(finite, polar, 0.0), size=width, axis=0, mode="wrap")
    counts = ndimage.uniform_filter1d(finite.astype(np.float64), size=width, axis=0, mode="wrap")
    with np.errstate(invalid="ignore", divide="ignore"):
        averaged = np.where(counts > 0.5, sums / counts, np.nan)
    return averaged, width


def _ray_peaks(seg, seg_r, *, sigma, width, ray_snr):
    """(peak radius, peak height) of the ring along each direction (rows of ``seg``); NaN where none stands out.

    The peak is the centroid of the part above half its height over a linear
    background through the window's ends.
    """
    n_angles = seg.shape[0]
    edge = 3
    peaks_r = np.full(n_angles, np.nan)
    heights = np.full(n_angles, np.nan)
    for i in range(n_angles):
        row = seg[i]
        if np.isnan(row).mean() > 0.2:
            continue
        ok = np.isfinite(row)
        row = np.interp(seg_r, seg_r[ok], row[ok])
        left, right = np.median(row[:edge]), np.median(row[-edge:])
        base = left + (right - left) * (seg_r - seg_r[0]) / (seg_r[-1] - seg_r[0])
        excess = row - base
        top = int(np.argmax(excess))
        height = excess[top]
        # independent pixels in a sector average at this radius: about its arc length
        noise = sigma / np.sqrt(max(1.0, seg_r[top] * width * 2 * np.pi / n_angles))
        if top < 1 or top > excess.size - 2 or height <= 0 or height < ray_snr * noise:
            continue
        above = excess >= 0.5 * height
        lo = top
        while lo > 0 and above[lo - 1]:
            lo -= 1
        hi = top
        while hi < excess.size - 1 and above[hi + 1]:
            hi += 1
        if lo == 0 or hi == excess.size - 1:
            continue
        w = excess[lo : hi + 1] - 0.5 * height
        peaks_r[i] = float((w * seg_r[lo : hi + 1]).sum() / w.sum())
        heights[i] = height
    return peaks_r, heights


def fit_ellipse(
    image,
    *,
    center=None,
    ring=None,
    mask=None,
    n_angles: int = 360,
    sector: float = 5.0,
    min_snr: float = 5.0,
    ray_snr: float = 3.0,
    min_arc: float = 6.0,
    min_coverage: float = 0.5,
    exclude_radius: float | None = None,
    n_bootstrap: int = 30,
    random_state=0,
    fix_center: bool = False,
    min_relative_height: float = 0.0,
) -> EllipseFit:
    """Fit the elliptical distortion of a diffraction ring.

    Parameters
    ----------
    image : array_like
        (qy, qx) mean or maximum pattern, or a Bragg-vector map.
    center : tuple of float, optional
        (qy, qx) from which rays are cast; default the direct beam of
        ``image`` (or the detector centre when it has none).
    ring : tuple of float, optional
        (r_min, r_max) radial window in pixels from ``center``; default the
        most prominent ring of the radial profile beyond the direct beam.
    mask : array_like of bool, optional
        Masked pixels are not sampled.
    n_angles : int, default 360
        Directions sampled.
    sector : float, default 5
        Width in degrees of the angular average around each direction ...
    min_arc : float, default 6
        ... widened to at least this arc length (px) at the ring.
    min_snr : float, default 5
        The ring must stand this many noise levels above its surroundings in
        the azimuthal mean (noise: pixel noise / sqrt(pixels in the annulus)).
    ray_snr : float, default 3
        Each direction's peak must stand this many noise levels (of its
        sector average) above the linear background of the window.
    min_coverage : float, default 0.5
        Fraction of directions that must give a point.
    exclude_radius : float, optional
        Radius around ``center`` left out of the automatic ring search
        (default 1.5 x the direct-beam radius + 2 px).
    n_bootstrap : int, default 30
        Block-bootstrap refits for the uncertainties (0 skips them).
    random_state : int, Generator or None, default 0
        Seed of the bootstrap.
    fix_center : bool, default False
        Fit the axes and angle only, about ``center`` (the ring's centre is known).
    min_relative_height : float, default 0
        Keep only directions whose peak is at least this fraction of the 90th
        percentile of the peak heights (a ring of a few Bragg spots).

    Returns
    -------
    EllipseFit

    Raises
    ------
    CalibrationError
        The ring is too weak or too incomplete for a fit.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise DataValueError(f"expected one pattern (qy, qx), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise DataValueError("the pattern holds NaN or Inf values", "replace them first")
    mask = check_mask(mask, image.shape)
    if n_angles < 12:
        raise ConfigError(f"n_angles={n_angles} is too few; use at least 12")
    center, probe_radius = _ring_centre(image, mask, center, exclude_radius)
    sigma = pixel_noise(image, mask)
    theta, radii, polar = _polar(image, mask, center, int(n_angles), 0.25)
    if ring is None:
        if exclude_radius is None:
            exclude_radius = 1.5 * probe_radius + 2.0 if probe_radius is not None else 3.0
        r_lo, r_hi = _ring_window(polar, radii, sigma, exclude_radius=exclude_radius, min_snr=min_snr)
    else:
        if len(ring) != 2 or not 0 <= ring[0] < ring[1]:
            raise ConfigError(f"ring={ring!r} must be (r_min, r_max) with 0 <= r_min < r_max")
        r_lo, r_hi = float(ring[0]), float(ring[1])
    averaged, width = _sector_average(polar, n_angles, r_mid=max(0.5 * (r_lo + r_hi), 1.0), sector=sector,
                                      min_arc=min_arc)
    i0 = int(np.searchsorted(radii, r_lo))
    i1 = int(np.searchsorted(radii, r_hi, side="right"))
    if i1 - i0 < 5:
        raise CalibrationError(f"the ring window {r_lo:.1f}-{r_hi:.1f} px is too narrow", "widen ring=(r_min, r_max)")
    peaks_r, heights = _ray_peaks(averaged[:, i0:i1], radii[i0:i1], sigma=sigma, width=width, ray_snr=ray_snr)
    found = np.isfinite(peaks_r)
    coverage = float(found.mean())
    if found.any() and min_relative_height > 0:
        # a ring of a few Bragg spots: directions between the spots see only background (their 'peak' is
        # anywhere in the window and pulls the fit towards a circle): keep the directions that see the ring
        strong = heights >= min_relative_height * np.nanpercentile(heights, 90)
        peaks_r[~strong] = np.nan
    if coverage < min_coverage:
        raise CalibrationError(
            f"the ring was found in only {100 * coverage:.0f}% of directions ({100 * min_coverage:.0f}% needed)",
            "give a stronger ring (mean or max pattern, longer exposure), the ring window, or skip the ellipse fit",
        )
    fit = _fit_ray_points(center, theta, peaks_r, fix_center=fix_center, width=width, n_bootstrap=n_bootstrap,
                          random_state=random_state)
    return dataclasses.replace(fit, coverage=coverage, ring=(float(r_lo), float(r_hi)))


def _fit_ray_points(center, theta, peaks_r, *, fix_center, width, n_bootstrap, random_state) -> EllipseFit:
    """The ellipse through the ring's points along the rays from ``center``, with bootstrap uncertainties."""
    ys = center[0] + peaks_r * np.sin(theta)
    xs = center[1] + peaks_r * np.cos(theta)
    if fix_center:
        fitter = functools.partial(fit_centred_ellipse_to_points, center=center)
    else:
        fitter = fit_ellipse_to_points
    ell_center, a, b, angle, rms, used = fitter(ys, xs)
    ratio_std, angle_std, significance = _block_bootstrap(
        ys, xs, used, width, n_bootstrap, random_state, fitter=fitter, estimate=(a / b, angle)
    )
    return EllipseFit(
        center=(float(ell_center[0]), float(ell_center[1])),
        a=float(a),
        b=float(b),
        angle=float(angle),
        rms=float(rms),
        n_points=int(used.sum()),
        coverage=0.0,
        ring=(0.0, 0.0),
        axis_ratio_std=ratio_std,
        angle_std=angle_std,
        significance=significance,
    )


def bootstrap_spread(ratios, angles, estimate) -> tuple[float, float, float]:
    """(sd of a/b, sd of the angle, significance) of bootstrap refits around the estimate ``(a/b, angle)``.

    The significance is the Mahalanobis distance of the estimate's distortion
    vector ``(a/b - 1) (cos 2 angle, sin 2 angle)`` from 0 under the refits'
    covariance of that vector (a direction is defined modulo pi, hence the
    doubled angle); NaN with fewer than 3 refits.
    """
    ratios, angles = np.asarray(ratios, dtype=np.float64), np.asarray(angles, dtype=np.float64)
    if ratios.size < 2:
        return float("nan"), float("nan"), float("nan")
    doubled = 2 * angles
    mean_dir = np.arctan2(np.sin(doubled).mean(), np.cos(doubled).mean())
    spread = (doubled - mean_dir + np.pi) % (2 * np.pi) - np.pi
    significance = float("nan")
    if ratios.size >= 3:
        vectors = (ratios - 1.0)[:, None] * np.stack([np.cos(doubled), np.sin(doubled)], axis=1)
        cov = np.cov(vectors, rowvar=False) + 1e-18 * np.eye(2)
        ratio, angle = estimate
        point = (ratio - 1.0) * np.array([np.cos(2 * angle), np.sin(2 * angle)])
        significance = float(np.sqrt(max(point @ np.linalg.solve(cov, point), 0.0)))
    return float(np.std(ratios)), float(np.std(spread) / 2), significance


def _block_bootstrap(
    ys, xs, used, block: int, n_bootstrap: int, random_state, fitter=None, estimate=(1.0, 0.0)
) -> tuple[float, float, float]:
    """(sd of a/b, sd of the angle, significance) over fits to resampled blocks of neighbouring directions.

    Neighbouring directions share their sector average, so whole blocks of
    ``block`` directions are resampled; see :func:`bootstrap_spread`.
    """
    if n_bootstrap < 2:
        return float("nan"), float("nan"), float("nan")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    index = np.nonzero(used)[0]
    n_blocks = max(2, int(np.ceil(ys.size / block)))
    groups = [index[(index // block) == g] for g in range(n_blocks)]
    groups = [g for g in groups if g.size]
    ratios, angles = [], []
    for _ in range(int(n_bootstrap)):
        pick = rng.integers(0, len(groups), len(groups))
        sample = np.concatenate([groups[i] for i in pick])
        try:
            _, a, b, angle, _, _ = (fitter or fit_ellipse_to_points)(ys[sample], xs[sample], max_iter=1)
        except CalibrationError:
            continue
        ratios.append(a / b)
        angles.append(angle)
    return bootstrap_spread(ratios, angles, estimate)
