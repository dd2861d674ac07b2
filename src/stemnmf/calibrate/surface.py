"""A smooth surface (plane or quadratic) through the origins measured over the scan, outliers rejected.

:func:`follow_jitter` then decides whether the measured origins scatter about
the surface by more than their measurement noise (scan jitter) and, if so,
moves the origins from the surface towards the measurements.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stemnmf.errors import CalibrationError, ConfigError

#: Asymptotic variance of log(robust variance) from 1.4826 x MAD is about 5.4 / n (Gaussian data): a ratio of
#: two such estimates has a log-spread of about sqrt(10.9 / n).
_LOG_RATIO_SPREAD = float(np.sqrt(10.9))

#: Followed positions: a measured origin within this many residual standard deviations of the surface (the
#: fit's 3-sd outliers include the tails of real jitter; a beam measured in the wrong place is further off).
FOLLOW_WITHIN_SD = 5.0

__all__ = ["OriginFit", "JitterCheck", "fit_origin_surface", "follow_jitter"]


_TERMS = {
    "plane": ("1", "y", "x"),
    "quadratic": ("1", "y", "x", "y^2", "x*y", "x^2"),
}


@dataclasses.dataclass
class OriginFit:
    """A smooth surface fitted to the measured origins over the scan.

    Attributes
    ----------
    model : str
        'plane' or 'quadratic'.
    terms : tuple of str
        Names of the terms, in scan indices y (row) and x (column).
    coefficients : numpy.ndarray
        (2, n_terms): the qy and qx origin as sums of the terms.
    fitted : numpy.ndarray
        (sy, sx, 2) float32 surface values.
    residuals : numpy.ndarray
        (sy, sx, 2) measured minus fitted (NaN where not measured).
    outliers : numpy.ndarray
        (sy, sx) bool: positions left out of the fit (not measured or rejected).
    residual_rms : float
        Root-mean-square residual length (px) over the inliers.
    """

    model: str
    terms: tuple[str, ...]
    coefficients: np.ndarray
    fitted: np.ndarray
    residuals: np.ndarray
    outliers: np.ndarray
    residual_rms: float


def _design(model: str, sy: int, sx: int) -> np.ndarray:
    y, x = np.indices((sy, sx), dtype=np.float64)
    y, x = y.ravel(), x.ravel()
    columns = [np.ones_like(y), y, x]
    if model == "quadratic":
        columns += [y * y, x * y, x * x]
    return np.stack(columns, axis=1)


def fit_origin_surface(
    origins,
    *,
    model: str = "plane",
    n_sigma: float = 3.0,
    max_iter: int = 10,
    min_sigma: float = 0.01,
) -> OriginFit:
    """Fit a plane or quadratic surface to per-position origins, rejecting outliers.

    Each iteration fits both coordinates by least squares on the inliers and
    rejects positions whose residual in qy or qx exceeds ``n_sigma`` robust
    standard deviations (1.4826 x median absolute residual, at least
    ``min_sigma`` px), until the inliers no longer change.

    Parameters
    ----------
    origins : array_like
        (sy, sx, 2) measured (qy, qx); NaN where not measured.
    model : {'plane', 'quadratic'}

    Returns
    -------
    OriginFit

    Raises
    ------
    CalibrationError
        If fewer positions than terms + 1 have a measured origin.
    """
    if model not in _TERMS:
        raise ConfigError(f"origin fit {model!r} is unknown", "use 'plane', 'quadratic' or None")
    origins = np.asarray(origins, dtype=np.float64)
    if origins.ndim != 3 or origins.shape[2] != 2:
        raise ConfigError(f"origins must be shaped (sy, sx, 2), got {origins.shape}")
    sy, sx, _ = origins.shape
    values = origins.reshape(-1, 2)
    design = _design(model, sy, sx)
    n_terms = design.shape[1]
    inliers = np.isfinite(values).all(axis=1)
    if inliers.sum() < n_terms + 1:
        raise CalibrationError(
            f"only {int(inliers.sum())} of {sy * sx} positions have a direct beam; a {model} fit needs {n_terms + 1}",
            "check the data or use origin_fit=None",
        )
    coef = np.zeros((n_terms, 2))
    for _ in range(max(1, int(max_iter))):
        coef, *_ = np.linalg.lstsq(design[inliers], values[inliers], rcond=None)
        residual = values - design @ coef
        sigma = np.maximum(1.4826 * np.median(np.abs(residual[inliers]), axis=0), min_sigma)
        with np.errstate(invalid="ignore"):
            keep = np.isfinite(values).all(axis=1) & (np.abs(residual) <= n_sigma * sigma).all(axis=1)
        if keep.sum() < n_terms + 1 or np.array_equal(keep, inliers):
            break
        inliers = keep
    fitted = design @ coef
    residual = values - fitted
    rms = float(np.sqrt(np.mean(np.sum(residual[inliers] ** 2, axis=1))))
    return OriginFit(
        model=model,
        terms=_TERMS[model],
        coefficients=coef.T.copy(),
        fitted=fitted.reshape(sy, sx, 2).astype(np.float32),
        residuals=residual.reshape(sy, sx, 2),
        outliers=(~inliers).reshape(sy, sx),
        residual_rms=rms,
    )


@dataclasses.dataclass
class JitterCheck:
    """Do the measured origins scatter about their surface by more than their measurement noise?

    Attributes
    ----------
    residual_sd : numpy.ndarray
        (2,) robust standard deviation (1.4826 x MAD) of the measured origins
        about the surface, (qy, qx) px, over the surface's inliers.
    noise_sd : numpy.ndarray
        (2,) the measurements' own noise, (qy, qx) px: half the robust
        standard deviation of the checkerboard-halves difference.
    ratio : numpy.ndarray
        (2,) ``(residual_sd / noise_sd) ** 2``.
    threshold : float
        Smallest ratio read as jitter: ``min_ratio``, or more on few positions
        (``n_sd`` spreads of the ratio's logarithm above 1).
    shrink : numpy.ndarray
        (2,) fraction of each residual kept, ``1 - 1 / ratio`` where the ratio
        reaches the threshold (or always with ``mode='follow'``), else 0.
    followed : bool
        Whether any coordinate follows the measurements.
    n_positions : int
        Positions the check used (the surface's inliers).
    n_followed : int
        Positions whose origin moved off the surface.
    """

    residual_sd: np.ndarray
    noise_sd: np.ndarray
    ratio: np.ndarray
    threshold: float
    shrink: np.ndarray
    followed: bool
    n_positions: int
    n_followed: int


def _robust_sd(values: np.ndarray) -> np.ndarray:
    centred = values - np.median(values, axis=0)
    return 1.4826 * np.median(np.abs(centred), axis=0)


def follow_jitter(
    measured,
    fit: OriginFit,
    halves,
    *,
    mode: str = "auto",
    min_ratio: float = 4.0,
    n_sd: float = 5.0,
) -> tuple[np.ndarray, JitterCheck | None]:
    """Origins that follow scan jitter the measurements show, else the surface.

    The residuals ``r`` of the measured origins about the fitted surface are
    jitter ``j`` plus measurement noise ``e``. The noise is estimated from the
    data alone: the two checkerboard halves of a beam carry independent noise,
    so their centres differ by ``2 e`` in spread (any gain, any pixel noise).
    Per coordinate, when ``var(r) / var(e)`` reaches the threshold, each
    residual is kept shrunk by ``1 - var(e) / var(r)`` (the least-squares
    estimate of ``j`` from ``r``); otherwise the surface is kept. The
    statistics are taken over the surface's inliers; positions without a beam
    and those more than ``FOLLOW_WITHIN_SD`` residual standard deviations off
    the surface keep the surface.

    Parameters
    ----------
    measured : array_like
        (sy, sx, 2) measured origins (NaN where no beam).
    fit : OriginFit
        The surface through them.
    halves : array_like or None
        (sy, sx, 2) checkerboard-halves difference (NaN where none).
    mode : {'auto', 'follow', 'surface'}, default 'auto'
        'follow' keeps the shrunk measurements whatever the ratio, 'surface'
        returns the surface (no check).
    min_ratio : float, default 4
        Smallest ratio followed: the jitter's variance at least three times
        the noise's (the halves underestimate the noise of a beam that barely
        stands above its background, by up to 2.5x in variance).
    n_sd : float, default 5
        On few positions the threshold is raised to ``exp(n_sd * sqrt(10.9 / n))``.

    Returns
    -------
    origins : numpy.ndarray
        (sy, sx, 2) float32.
    check : JitterCheck or None
        None with ``mode='surface'`` or without a noise estimate.
    """
    if mode not in ("auto", "follow", "surface"):
        raise ConfigError(f"origin_jitter={mode!r} is unknown", "use 'auto', 'follow' or 'surface'")
    surface = np.asarray(fit.fitted, dtype=np.float64)
    if mode == "surface" or halves is None:
        return surface.astype(np.float32), None
    measured = np.asarray(measured, dtype=np.float64)
    halves = np.asarray(halves, dtype=np.float64)
    residual = measured - surface
    measured_ok = np.isfinite(residual).all(axis=-1)
    use = ~fit.outliers & measured_ok & np.isfinite(halves).all(axis=-1)
    n = int(use.sum())
    if n < 8:
        return surface.astype(np.float32), None
    residual_sd = _robust_sd(residual[use])
    noise_sd = 0.5 * _robust_sd(halves[use])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(noise_sd > 0, (residual_sd / noise_sd) ** 2, np.inf)
    threshold = float(max(min_ratio, np.exp(n_sd * _LOG_RATIO_SPREAD / np.sqrt(n))))
    follow = np.ones(2, bool) if mode == "follow" else ratio >= threshold
    with np.errstate(divide="ignore"):
        shrink = np.where(follow, np.clip(1.0 - 1.0 / ratio, 0.0, 1.0), 0.0)
    with np.errstate(invalid="ignore"):
        near = measured_ok & (np.abs(residual) <= FOLLOW_WITHIN_SD * residual_sd).all(axis=-1)
    followed = bool(np.any(shrink > 0))
    origins = surface + np.where(near[..., None], np.nan_to_num(residual), 0.0) * shrink
    check = JitterCheck(residual_sd=residual_sd, noise_sd=noise_sd, ratio=ratio, threshold=threshold,
                        shrink=shrink, followed=followed, n_positions=n, n_followed=int(near.sum()) if followed else 0)
    return origins.astype(np.float32), check
