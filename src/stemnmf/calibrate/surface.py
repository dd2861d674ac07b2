"""A smooth surface (plane or quadratic) through the origins measured over the scan, outliers rejected."""

from __future__ import annotations

import dataclasses

import numpy as np

from stemnmf.errors import CalibrationError, ConfigError

__all__ = ["OriginFit", "fit_origin_surface"]


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


# -- shift correction --------------------------------------------------------------------


#: Patterns processed together inside the per-pattern kernels (bounds their temporaries).
