"""Scaling of feature matrices: min-max or baseline-to-max per feature, per-pattern, or none."""

from __future__ import annotations

import numpy as np

from stemnmf.errors import ConfigError

__all__ = ["SCALINGS", "minmax_factors", "minmax_scale_rows", "pattern_scale_rows", "scale_features"]

SCALINGS = ("minmax", "robust", "pattern", "none")


def scale_features(X, method: str = "minmax", blocks=None):
    """Scale a feature matrix; the result is float32 and non-negative for non-negative input.

    Parameters
    ----------
    X : array_like
        (n_positions, n_features).
    method : {'minmax', 'robust', 'pattern', 'none'}
        'minmax': every column mapped to [0, 1] by its minimum and maximum over
        the positions (a constant column becomes 0), as Bruefach et al. do.
        'robust': every column mapped by its median and maximum,
        ``max(0, (x - median) / (max - median))``: the level most positions
        share (an amorphous support, the noise floor) becomes 0 instead of a
        floor every NMF component must carry (a column whose maximum is its
        median becomes 0).
        'pattern': every row of every block divided by its largest value in
        that block (rows whose maximum is not positive are left as they are).
        'none': unchanged.
    blocks : sequence of slice, optional
        Column blocks (one per representation) for 'pattern'; default one block.

    Returns
    -------
    X : numpy.ndarray
        Scaled copy, float32.
    lo, hi : numpy.ndarray
        (n_features,) column minimum and maximum before scaling (float32).

    Examples
    --------
    >>> scale_features(np.array([[1.0, 5.0], [3.0, 5.0]]))[0]
    array([[0., 0.],
           [1., 0.]], dtype=float32)
    """
    if method not in SCALINGS:
        raise ConfigError(f"unknown scaling {method!r}", f"use one of {', '.join(SCALINGS)}")
    X = np.array(X, dtype=np.float32, copy=True)
    if X.ndim != 2:
        raise ConfigError(f"features must be 2D (n_positions, n_features), got {X.shape}")
    if X.shape[0] == 0:
        return X, np.zeros(X.shape[1], np.float32), np.zeros(X.shape[1], np.float32)
    lo = X.min(axis=0)
    hi = X.max(axis=0)
    if method == "minmax":
        X = minmax_scale_rows(X, lo, minmax_factors(lo, hi))
    elif method == "robust":
        base = np.median(X, axis=0)
        span = (hi - base).astype(np.float64)
        scale = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)
        X -= base
        X *= scale.astype(np.float32)
        np.clip(X, 0.0, 1.0, out=X)
    elif method == "pattern":
        for block in blocks or [slice(0, X.shape[1])]:
            if X[:, block].shape[1]:
                X[:, block] = pattern_scale_rows(X[:, block])
    return X, lo.astype(np.float32), hi.astype(np.float32)


def minmax_factors(lo, hi) -> np.ndarray:
    """float32 ``1 / (hi - lo)`` per column, 0 where the column is constant."""
    span = (np.asarray(hi) - np.asarray(lo)).astype(np.float64)
    return np.divide(1.0, span, out=np.zeros_like(span), where=span > 0).astype(np.float32)


def minmax_scale_rows(rows, lo, factors) -> np.ndarray:
    """``(rows - lo) * factors`` clipped to [0, 1], float32: min-max scaling with the whole scan's ``lo``."""
    out = ((rows - lo) * factors).astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def pattern_scale_rows(rows) -> np.ndarray:
    """Each row divided by its maximum (rows whose maximum is not positive unchanged)."""
    peak = rows.max(axis=1, keepdims=True)
    return rows / np.where(peak > 0, peak, 1.0)
