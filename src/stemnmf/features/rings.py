"""Direct-beam radius and diffraction rings from radial profiles."""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.ndimage import gaussian_filter1d

from stemnmf.errors import CalibrationError, ConfigError

__all__ = ["beam_edge", "estimate_beam_radius", "find_rings", "check_rings", "profile_noise"]

log = logging.getLogger(__name__)


def _fill_nan(profile) -> np.ndarray:
    p = np.asarray(profile, dtype=np.float64).copy()
    bad = ~np.isfinite(p)
    if bad.all():
        raise CalibrationError("the radial profile has no unmasked pixel", "check the mask and the origin")
    if bad.any():
        idx = np.arange(p.size)
        p[bad] = np.interp(idx[bad], idx[~bad], p[~bad])
    return p


def estimate_beam_radius(profile, radii) -> float:
    """Half-maximum radius of the direct beam, from a radial profile of the mean pattern.

    The beam is the plateau at the centre; its half maximum is halfway between
    the centre value and the lowest value inside half the profile's range.

    Raises
    ------
    CalibrationError
        If the profile does not fall from its centre (no direct beam).
    """
    p = _fill_nan(profile)
    radii = np.asarray(radii, dtype=np.float64)
    centre = p[: max(1, min(3, p.size))].max()
    floor = p[: max(2, p.size // 2)].min()
    if not centre > floor:
        raise CalibrationError(
            "no direct beam in the radial profile (it does not fall from the centre)",
            "give the origin, disk_radius and r_min explicitly",
        )
    half = floor + 0.5 * (centre - floor)
    below = np.flatnonzero(p < half)
    below = below[below > 0]
    if below.size == 0:  # pragma: no cover - floor < half guarantees a crossing
        return float(radii[-1])
    i = int(below[0])
    # linear interpolation between bins i-1 (above half) and i (below)
    f = (p[i - 1] - half) / (p[i - 1] - p[i])
    return float(radii[i - 1] + f * (radii[i] - radii[i - 1]))


def beam_edge(profile, radii, beam_radius: float, *, smoothing: float = 1.5, prominence: float = 0.02) -> float:
    """Radius where the direct beam's tail ends: the first prominent minimum beyond its half maximum.

    Parameters
    ----------
    profile, radii : array_like
        Radial profile (of the maximum pattern) and its bin centres.
    beam_radius : float
        Half-maximum radius of the beam (:func:`estimate_beam_radius`).
    smoothing : float
        Gaussian smoothing of the profile, in pixels.
    prominence : float
        Minimum prominence of the minimum as a fraction of the profile's range
        beyond the beam.

    Returns
    -------
    float
        The radius; ``1.5 * beam_radius + 1`` (with a warning) when no minimum is found.
    """
    from scipy.signal import find_peaks  # imported here: scipy.signal takes a second to import

    radii = np.asarray(radii, dtype=np.float64)
    step = float(np.median(np.diff(radii))) if radii.size > 1 else 1.0
    ps = gaussian_filter1d(_fill_nan(profile), max(smoothing / step, 1e-3), mode="nearest")
    start = int(np.searchsorted(radii, beam_radius))
    outer = ps[min(ps.size - 1, int(np.searchsorted(radii, 2 * beam_radius))) :]
    span = float(outer.max() - outer.min()) if outer.size else 0.0
    if start < ps.size - 2 and span > 0:
        minima, _ = find_peaks(-ps[start:], prominence=prominence * span)
        if minima.size:
            return float(radii[start + minima[0]])
    fallback = 1.5 * beam_radius + 1.0
    log.warning(
        "no minimum after the direct beam in the radial profile; excluding radii below %.1f px "
        "(1.5 x the beam radius + 1); give r_min to choose",
        fallback,
    )
    return fallback


def find_rings(
    profile,
    radii,
    *,
    r_min: float = 0.0,
    r_max: float | None = None,
    smoothing: float = 1.0,
    prominence: float = 0.05,
    min_width: float = 3.0,
    noise_floor: float = 8.0,
) -> np.ndarray:
    """Diffraction rings of a radial profile, bounded by its local minima.

    The profile (normally of the maximum pattern) is smoothed with a Gaussian;
    every maximum whose prominence exceeds both ``prominence`` times the
    profile's range in ``[r_min, r_max]`` and ``noise_floor`` times the noise
    of the smoothed profile is a ring, bounded by the lowest points between it
    and its neighbours (or ``r_min`` / ``r_max``). The noise is estimated from
    the second differences of the unsmoothed profile (robustly: 1.4826 x their
    median absolute deviation / sqrt(6)), scaled by the smoothing; so the
    wiggles of a featureless profile (vacuum, pure noise) are not rings and
    the result is empty.

    Parameters
    ----------
    profile, radii : array_like
        Radial profile and its bin centres (pixels).
    r_min, r_max : float
        Radii searched (exclude the direct beam and the detector edge).
    smoothing : float, default 1
        Gaussian sigma in pixels.
    prominence : float, default 0.05
        Minimum prominence as a fraction of the range.
    min_width : float, default 3
        Minimum distance between ring maxima, in pixels.
    noise_floor : float, default 8
        Minimum prominence in units of the smoothed profile's noise: over 70
        radii of white noise the most prominent smoothed maximum has a median
        of 3.6 such units, 6.4 at the 99th percentile, 7.6 at most in 200 draws.

    Returns
    -------
    numpy.ndarray
        (n_rings, 2) inner and outer radius of each ring in pixels, increasing.

    Examples
    --------
    >>> r = np.arange(60) + 0.5
    >>> p = np.exp(-(r - 20) ** 2 / 8) + np.exp(-(r - 40) ** 2 / 8)
    >>> find_rings(p, r, r_min=5, r_max=55).round().tolist()
    [[5.0, 30.0], [30.0, 55.0]]
    """
    from scipy.signal import find_peaks  # imported here: scipy.signal takes a second to import

    radii = np.asarray(radii, dtype=np.float64)
    p = _fill_nan(profile)
    if p.shape != radii.shape:
        raise ConfigError(f"profile ({p.shape}) and radii ({radii.shape}) differ in length")
    r_max = float(radii[-1]) if r_max is None else float(r_max)
    sel = np.flatnonzero((radii >= r_min) & (radii <= r_max))
    if sel.size < 3:
        return np.zeros((0, 2), dtype=np.float32)
    step = float(np.median(np.diff(radii))) if radii.size > 1 else 1.0
    ps = gaussian_filter1d(p, max(smoothing / step, 1e-3), mode="nearest")[sel]
    span = float(ps.max() - ps.min())
    if span <= 0:
        return np.zeros((0, 2), dtype=np.float32)
    noise = profile_noise(p[sel]) / math.sqrt(2.0 * math.sqrt(math.pi) * max(smoothing / step, 0.5))
    floor = max(prominence * span, noise_floor * noise)
    peaks, _ = find_peaks(ps, prominence=floor, distance=max(1.0, min_width / step))
    if peaks.size == 0:
        log.info("no ring in the radial profile above %.3g (%.1f x its noise %.3g)", floor, noise_floor, noise)
        return np.zeros((0, 2), dtype=np.float32)
    r = radii[sel]
    bounds = [float(r_min)]
    for left, right in zip(peaks[:-1], peaks[1:]):
        bounds.append(float(r[left + int(np.argmin(ps[left : right + 1]))]))
    bounds.append(r_max)
    # the first ring starts at the lowest point between r_min and its maximum
    first = int(np.argmin(ps[: peaks[0] + 1]))
    bounds[0] = float(r[first]) if first > 0 else float(r_min)
    last = peaks[-1] + int(np.argmin(ps[peaks[-1] :]))
    bounds[-1] = float(r[last]) if last < ps.size - 1 else r_max
    rings = np.column_stack([bounds[:-1], bounds[1:]]).astype(np.float32)
    return rings[rings[:, 1] > rings[:, 0]]


def profile_noise(profile) -> float:
    """Noise (standard deviation) of a radial profile, robust to its smooth rings.

    Second differences ``p[i-1] - 2 p[i] + p[i+1]`` of white noise have 6 times
    its variance and cancel smooth trends; their median absolute deviation
    (x 1.4826) ignores the few radii where a ring curves the profile.
    """
    p = np.asarray(profile, dtype=np.float64)
    if p.size < 3:
        return 0.0
    d2 = p[:-2] - 2.0 * p[1:-1] + p[2:]
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def check_rings(rings) -> np.ndarray:
    """Validate user ring bounds: (n, 2) with 0 <= inner < outer.

    Raises
    ------
    ConfigError
        If the bounds are malformed.
    """
    try:
        arr = np.asarray(rings, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ConfigError(f"rings {rings!r} are not (inner, outer) pairs", "give e.g. rings=[(10, 18), (18, 30)]") from None
    if arr.shape[0] == 0:
        raise ConfigError("no rings given", "give at least one (inner, outer) pair or leave rings unset")
    if not np.isfinite(arr).all() or np.any(arr[:, 0] < 0) or np.any(arr[:, 1] <= arr[:, 0]):
        raise ConfigError(f"ring bounds {arr.tolist()} need 0 <= inner < outer", "fix the ring radii")
    return arr.astype(np.float32)
