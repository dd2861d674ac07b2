"""Elliptical distortion from the radial profiles of angular sectors, about a known centre.

An elliptical distortion scales every radius by a factor ``s(theta)`` that
depends only on the direction: a ring of radius ``R`` lies at ``R s(theta)``,
with ``1 / s^2 = c0 + c1 cos 2 theta + c2 sin 2 theta``. In log-radius a scale
is a shift, so the radial profile of each angular sector (in ``ln r``) is the
profile of the whole pattern shifted by ``ln s(theta)``: the shift is found by
cross-correlating the sector's profile (less its smooth background) with the
mean profile of the other sectors (leaving out the sector itself and its
Friedel mate, which would pull the shift towards zero wherever they alone hold
a ring), to a fraction of a sample. Every ring of the pattern takes part
(close rings of a fine-grained film, a few Bragg spots per ring), unlike a fit
to one ring's crest, which mixes neighbouring rings when they are a few pixels
apart. Each sector is searched only near the one curve
``A cos 2 theta + B sin 2 theta`` (in shift) that maximises the correlation
summed over all the sectors: on spotty rings (a few grains) a sector's own
best match often lies on a neighbouring ring or on noise, and a curve fitted
through such maxima tilted the axis by 5-10 degrees. Each sector is weighted
by how well it matches (the square of its correlation peak). The mean
profile is rebuilt from the sectors aligned along that curve and the shifts
measured again (the mean of a distorted pattern is blurred by the distortion).
The axis ratio is ``sqrt(u_max / u_min)`` of ``u = 1 / s^2`` and the ``a`` axis
lies where ``u`` is smallest; the boxcar average over a sector's width is
undone exactly (it scales the ``2 theta`` harmonic by ``sin w / w``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import interpolate, ndimage

from stemnmf.calibrate.common import check_mask
from stemnmf.calibrate.ellipse import EllipseFit, _polar, _ring_window, _sample_rays, bootstrap_spread, pixel_noise
from stemnmf.errors import CalibrationError, ConfigError, DataValueError

__all__ = ["fit_ellipse_profiles"]

#: Largest scale between a sector and the mean searched (an axis ratio up to about 1.12): wider, a sector could
#: lock onto the neighbouring ring (111 and 200 of an fcc metal are 15 % apart).
MAX_SCALE = 1.06

#: Sectors are weighted by their correlation peak to this power: a sector that crosses no spot of a spotty ring
#: matches the mean profile poorly and its shift is mostly noise.
WEIGHT_POWER = 2

#: Each sector is searched only this far (in scale) from the 2-theta curve that best fits all the sectors'
#: correlations, so that no sector locks onto a neighbouring ring (311 and 222 are 4 % apart).
REACH = 0.012

#: Median correlation coefficient of the sectors' profiles with the mean below which the fit refuses: noise
#: alone matches at 0.1-0.2, the mean patterns of simulated films at 0.3-0.7.
MIN_MATCH = 0.22

#: Width (in ln r) of the smooth background taken off every profile: narrower than a ring's disks would take
#: them off too, wider leaves the direct beam's tail and the diffuse background in.
BACKGROUND = 0.03


def _log_polar(image, mask, center, r_min, r_max, n_angles, n_radii):
    """(theta, log-radius step, (n_angles, n_radii) samples with NaN where masked or outside)."""
    theta = (np.arange(n_angles) + 0.5) * (2 * np.pi / n_angles)
    log_r = np.linspace(math.log(r_min), math.log(r_max), n_radii)
    values = _sample_rays(image, mask, center, theta, np.exp(log_r))
    return theta, float(log_r[1] - log_r[0]), log_r, values


def _high_pass(profiles, sigma):
    """Profiles less their smooth background (NaN-aware Gaussian), NaN set to 0, each scaled to unit rms."""
    finite = np.isfinite(profiles)
    filled = np.where(finite, profiles, 0.0)
    weight = ndimage.gaussian_filter1d(finite.astype(np.float64), sigma, axis=-1, mode="nearest")
    smooth = ndimage.gaussian_filter1d(filled, sigma, axis=-1, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        background = np.where(weight > 0.2, smooth / weight, 0.0)
    out = np.where(finite, profiles - background, 0.0)
    # a light smoothing (about 0.7 samples) against single-sample noise
    out = ndimage.gaussian_filter1d(out, 0.7, axis=-1, mode="nearest")
    rms = np.sqrt(np.mean(out**2, axis=-1, keepdims=True))
    return out / np.maximum(rms, 1e-300)


def _references(aligned, ids, n_sectors):
    """For each sector, the mean of the other aligned sectors, less its opposite one, scaled to unit rms.

    A sector left in its own reference pulls its shift towards zero wherever it alone holds a ring (a few
    grains: one bright disk makes a ring of the mean), and its Friedel mate holds the same disks.
    """
    total = aligned.sum(axis=0)
    where = {int(k): i for i, k in enumerate(ids)}
    refs = total[None, :] - aligned
    if n_sectors % 2 == 0:
        for i, k in enumerate(ids):
            j = where.get((int(k) + n_sectors // 2) % n_sectors)
            if j is not None:
                refs[i] -= aligned[j]
    rms = np.sqrt(np.mean(refs**2, axis=1, keepdims=True))
    return refs / np.maximum(rms, 1e-300)


def _correlations(profiles, references, max_lag):
    """(lags, (n_profiles, n_lags) correlation of each profile with its reference at every lag)."""
    n = references.shape[1]
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.empty((profiles.shape[0], lags.size))
    for j, lag in enumerate(lags):
        if lag >= 0:
            corr[:, j] = np.einsum("ki,ki->k", profiles[:, lag:], references[:, : n - lag])
        else:
            corr[:, j] = np.einsum("ki,ki->k", profiles[:, : n + lag], references[:, -lag:])
    return lags, corr


def _curve_coefficients(lags, corr, theta, rows=None):
    """(A, B) of the lag curve ``A cos 2 theta + B sin 2 theta`` that maximises the summed correlation.

    One curve for all the sectors at once: a sector whose own maximum lies on a neighbouring ring or on noise
    (a spotty ring) cannot move it, and every sector counts by the correlation it holds. The correlations are
    interpolated by cubic splines (linear interpolation pulls the curve onto whole lags); a grid of 0.5 lag,
    then of 0.02 lag about its best point. ``rows`` picks (and may repeat) the sectors used.
    """
    rows = np.arange(theta.size) if rows is None else np.asarray(rows)
    fine = np.arange(lags[0], lags[-1] + 1e-9, 0.02)
    table = interpolate.CubicSpline(lags, corr[rows], axis=1)(fine)
    cos2, sin2 = np.cos(2 * theta[rows]), np.sin(2 * theta[rows])
    centre, half, step = (0.0, 0.0), float(lags[-1]), 0.5
    for _ in range(2):
        grid_a = centre[0] + np.arange(-half, half + step / 2, step)
        grid_b = centre[1] + np.arange(-half, half + step / 2, step)
        a, b = (g.ravel() for g in np.meshgrid(grid_a, grid_b, indexing="ij"))
        curve = a[:, None] * cos2[None, :] + b[:, None] * sin2[None, :]
        index = np.clip(np.rint((curve - fine[0]) / 0.02).astype(int), 0, fine.size - 1)
        scores = table[np.arange(rows.size)[None, :], index].sum(axis=1)
        best = int(np.argmax(scores))
        centre, half, step = (a[best], b[best]), step, 0.02
    return centre


def _pick(lags, corr, expected=None, reach=None):
    """Sub-sample lag of each row's correlation peak (parabola through it) and its height.

    With ``expected`` (one lag per row), only lags within ``reach`` of it are searched.
    """
    searched = corr
    if expected is not None:
        searched = np.where(np.abs(lags[None, :] - expected[:, None]) <= reach, corr, -np.inf)
    best = np.clip(np.argmax(searched, axis=1), 1, lags.size - 2)
    rows = np.arange(corr.shape[0])
    minus, centre, plus = searched[rows, best - 1], searched[rows, best], searched[rows, best + 1]
    # a maximum on the edge of the searched lags is no match (the sector's structure lies elsewhere): peak 0
    inner = (minus < centre) & (plus <= centre) & np.isfinite(minus) & np.isfinite(plus)
    denominator = minus - 2 * centre + plus
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(inner & (denominator < 0), 0.5 * (minus - plus) / denominator, 0.0)
    return lags[best] + np.clip(fraction, -0.5, 0.5), np.where(inner, corr[rows, best], 0.0)


def _shift_back(profiles, shifts):
    """Each profile moved by ``-shift`` samples (linear interpolation, zero outside)."""
    x = np.arange(profiles.shape[1], dtype=np.float64)
    return np.stack([np.interp(x + s, x, p, left=0.0, right=0.0) for p, s in zip(profiles, shifts)])


def _harmonic_fit(theta, u, attenuation, weight=None, n_sigma=3.0):
    """``u = c0 + c1 cos 2 theta + c2 sin 2 theta`` by least squares with outliers rejected; (coef, used)."""
    design = np.stack([np.ones_like(theta), attenuation * np.cos(2 * theta), attenuation * np.sin(2 * theta)], 1)
    w = np.ones(theta.size) if weight is None else np.sqrt(weight)
    used = w > 0
    for _ in range(5):
        coef, *_ = np.linalg.lstsq(design[used] * w[used, None], u[used] * w[used], rcond=None)
        residual = u - design @ coef
        scale = 1.4826 * np.median(np.abs(residual[used])) + 1e-12
        keep = np.abs(residual) <= n_sigma * scale
        if keep.sum() < 6 or np.array_equal(keep, used):
            break
        used = keep
    return coef, used


def _ratio_angle(coef) -> tuple[float, float]:
    """Axis ratio and the a axis's angle in (-pi/2, pi/2] from the harmonic coefficients of ``1 / s^2``."""
    c0, c1, c2 = coef
    amplitude = min(math.hypot(c1, c2), 0.999 * c0)
    ratio = math.sqrt((c0 + amplitude) / (c0 - amplitude))
    angle = 0.5 * math.atan2(c2, c1) + math.pi / 2  # u is largest along the b axis
    angle = math.atan2(math.sin(angle), math.cos(angle))
    if angle <= -math.pi / 2:
        angle += math.pi
    elif angle > math.pi / 2:
        angle -= math.pi
    return ratio, angle


def _bootstrap(theta, u, used, attenuation, weight, n_bootstrap, random_state, estimate) -> tuple[float, float, float]:
    """(sd of the ratio, sd of the angle, significance) over fits to resampled sectors (``bootstrap_spread``)."""
    if n_bootstrap < 2:
        return float("nan"), float("nan"), float("nan")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    index = np.nonzero(used)[0]
    ratios, angles = [], []
    for _ in range(int(n_bootstrap)):
        pick = rng.choice(index, index.size)
        w = np.sqrt(weight[pick])[:, None]
        design = np.stack([np.ones(pick.size), attenuation * np.cos(2 * theta[pick]),
                           attenuation * np.sin(2 * theta[pick])], 1)
        coef, *_ = np.linalg.lstsq(design * w, u[pick] * w[:, 0], rcond=None)
        ratio, angle = _ratio_angle(coef)
        ratios.append(ratio)
        angles.append(angle)
    return bootstrap_spread(ratios, angles, estimate)


def _sector_shifts(polar, n_sectors, step, min_valid, n_iter=3):
    """Shift (samples of ln r) of every usable sector against the aligned mean profile.

    Returns (shifts, usable sectors, their profiles, their correlation peaks).
    """
    n_angles, n_radii = polar.shape
    per = n_angles // n_sectors
    sectors = polar[: per * n_sectors].reshape(n_sectors, per, n_radii)
    finite = np.isfinite(sectors)
    counts = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        profiles = np.where(counts > 0, np.where(finite, sectors, 0.0).sum(axis=1) / counts, np.nan)
    usable = np.isfinite(profiles).mean(axis=1) >= min_valid
    if usable.sum() < 8:
        raise CalibrationError(
            f"only {int(usable.sum())} of {n_sectors} angular sectors are unmasked enough for an ellipse fit",
            "mask less of the detector, or skip the ellipse fit",
        )
    sigma = max(2.0, BACKGROUND / step)  # background: structure wider than BACKGROUND in ln r
    high = _high_pass(profiles[usable], sigma)
    per = n_angles // n_sectors
    theta = ((np.arange(n_sectors) + 0.5) * per * (2 * np.pi / n_angles))[usable]
    max_lag = int(math.ceil(math.log(MAX_SCALE) / step)) + 1
    ids = np.nonzero(usable)[0]
    references = _references(high, ids, n_sectors)
    for _ in range(n_iter):
        lags, corr = _correlations(high, references, max_lag)
        # each sector is searched about the one 2-theta curve that best fits all the sectors' correlations
        a, b = _curve_coefficients(lags, corr, theta)
        expected = a * np.cos(2 * theta) + b * np.sin(2 * theta)
        shifts, peak = _pick(lags, corr, expected, reach=math.log(1.0 + REACH) / step)
        shifts -= np.median(shifts)
        # the references are rebuilt from the sectors aligned along that curve (not their own, noisier peaks)
        references = _references(_shift_back(high, expected), ids, n_sectors)
    return shifts, usable, profiles[usable], np.maximum(peak, 0.0) / high.shape[1]


def _a_ring(image, mask, center, r_min, min_snr) -> tuple[float, float]:
    """Window (r_lo, r_hi) of the most prominent ring of the azimuthal mean; :class:`CalibrationError` if none."""
    _, radii, polar = _polar(image, mask, center, 360, 0.25)
    return _ring_window(polar, radii, pixel_noise(image, mask), exclude_radius=r_min, min_snr=min_snr)


def _peak_radius(profile, log_r, r_lo, r_hi) -> float:
    """Radius of the highest sample of ``profile`` (over ln r) between r_lo and r_hi, refined by a parabola."""
    inside = np.nonzero((log_r >= math.log(max(r_lo, 1e-6))) & (log_r <= math.log(r_hi)))[0]
    if inside.size < 3:
        return float(math.sqrt(r_lo * r_hi))
    i = int(inside[np.argmax(profile[inside])])
    i = min(max(i, 1), profile.size - 2)
    minus, centre, plus = profile[i - 1], profile[i], profile[i + 1]
    denominator = minus - 2 * centre + plus
    fraction = 0.5 * (minus - plus) / denominator if denominator < 0 else 0.0
    step = log_r[1] - log_r[0]
    return float(math.exp(log_r[i] + float(np.clip(fraction, -0.5, 0.5)) * step))


def fit_ellipse_profiles(
    image,
    *,
    center,
    mask=None,
    r_min: float | None = None,
    r_max: float | None = None,
    n_sectors: int = 36,
    n_angles: int = 720,
    n_radii: int = 768,
    min_valid: float = 0.7,
    min_coverage: float = 0.5,
    min_snr: float = 5.0,
    n_bootstrap: int = 30,
    random_state=0,
) -> EllipseFit:
    """Elliptical distortion about a known centre from the radial profiles of angular sectors.

    Parameters
    ----------
    image : array_like
        (qy, qx) pattern whose rings are centred on ``center`` (e.g. the mean
        of the patterns re-centred on their origins).
    center : tuple of float
        (qy, qx) of the rings' centre.
    mask : array_like of bool, optional
        Masked pixels are not sampled.
    r_min, r_max : float, optional
        Radii (px) compared; default 4 px (pass the direct beam's edge) and the
        largest circle about ``center`` inside the detector, less 1 px.
    n_sectors : int, default 36
        Angular sectors (10 degrees each by default).
    n_angles, n_radii : int
        Polar samples (directions, log-spaced radii).
    min_valid : float, default 0.7
        Fraction of its radii a sector must have unmasked to be used.
    min_coverage : float, default 0.5
        Fraction of the sectors that must be used.
    min_snr : float, default 5
        A ring must stand this many noise levels above its surroundings in
        the azimuthal mean (as for :func:`fit_ellipse`), else the fit refuses.
    n_bootstrap : int, default 30
        Refits to resampled sectors for the uncertainties (0 skips them).
    random_state : int, Generator or None, default 0

    Returns
    -------
    EllipseFit
        ``a``, ``b`` of the most prominent ring of the azimuthal mean (its
        peak in the aligned profile, scaled along the two axes), ``n_points`` the sectors used, ``rms`` the scatter of the
        sectors' radii about the fit at that ring (px), ``ring`` = (r_min, r_max).

    Raises
    ------
    CalibrationError
        No ring stands out, or too few sectors are unmasked.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise DataValueError(f"expected one pattern (qy, qx), got shape {image.shape}")
    if n_sectors < 12 or n_angles < n_sectors:
        raise ConfigError(f"n_sectors={n_sectors} must be at least 12 and at most n_angles={n_angles}")
    mask = check_mask(mask, image.shape) | ~np.isfinite(image)
    cy, cx = float(center[0]), float(center[1])
    qy, qx = image.shape
    r_max = float(r_max if r_max is not None else min(cy, cx, qy - 1 - cy, qx - 1 - cx) - 1.0)
    r_min = float(r_min if r_min is not None else 4.0)
    if not 0 < r_min < r_max / 1.5:
        raise CalibrationError(f"the radii {r_min:.1f}-{r_max:.1f} px are too few for an ellipse fit",
                               "centre the pattern on the detector or lower r_min")
    r_lo, r_hi = _a_ring(image, mask, (cy, cx), r_min, min_snr)
    theta, step, log_r, polar = _log_polar(image, mask, (cy, cx), r_min, r_max, n_angles, n_radii)
    shifts, usable, profiles, strength = _sector_shifts(polar, n_sectors, step, min_valid)
    if np.median(strength) < MIN_MATCH:
        raise CalibrationError(
            f"the rings are too weak in the angular sectors for an ellipse fit (median match "
            f"{np.median(strength):.2f} < {MIN_MATCH})",
            "give a stronger ring (more positions, longer exposure) or skip the ellipse fit",
        )
    coverage = float(usable.mean())
    if coverage < min_coverage:
        raise CalibrationError(
            f"only {100 * coverage:.0f}% of the angular sectors could be used ({100 * min_coverage:.0f}% needed)",
            "mask less of the detector, or skip the ellipse fit",
        )
    per = n_angles // n_sectors
    sector_theta = ((np.arange(n_sectors) + 0.5) * per * (2 * np.pi / n_angles))[usable]
    width = per * 2 * np.pi / n_angles
    attenuation = math.sin(width) / width  # a boxcar of the sector's width on the 2-theta harmonic
    log_scale = shifts * step
    u = np.exp(-2.0 * log_scale)
    weight = strength**WEIGHT_POWER
    coef, used = _harmonic_fit(sector_theta, u, attenuation, weight)
    ratio, angle = _ratio_angle(coef)
    ratio_std, angle_std, significance = _bootstrap(
        sector_theta, u, used, attenuation, weight, n_bootstrap, random_state, (ratio, angle)
    )
    # the ring's radius in the aligned profile (sectors moved to the median scale), then along the two axes
    radius = _peak_radius(_shift_back(np.nan_to_num(profiles), shifts).mean(axis=0), log_r, r_lo, r_hi)
    amplitude = min(math.hypot(coef[1], coef[2]), 0.999 * coef[0])
    model = np.log(coef[0] + attenuation * (coef[1] * np.cos(2 * sector_theta) + coef[2] * np.sin(2 * sector_theta)))
    residual = log_scale[used] + 0.5 * model[used]
    return EllipseFit(
        center=(cy, cx), a=radius / math.sqrt(coef[0] - amplitude), b=radius / math.sqrt(coef[0] + amplitude),
        angle=angle, rms=float(radius * np.std(residual)), n_points=int(used.sum()), coverage=coverage,
        ring=(r_min, r_max), axis_ratio_std=ratio_std, angle_std=angle_std, significance=significance,
    )
