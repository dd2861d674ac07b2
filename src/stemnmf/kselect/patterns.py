"""Component patterns in raw pattern space, for comparing components by eye and by IQA.

- :func:`representative_patterns`: basis pattern x its largest weight (raw
  features, where a row of H is itself a pattern), as Cao et al. (2025).
- :func:`weighted_mean_patterns`: the mean of the raw patterns weighted by a
  component's map, streamed from a Dataset4D in one pass of the engine (any
  features: AA, RV, BD, ...).
"""

from __future__ import annotations

import functools

import numpy as np

from stemnmf.engine import Engine
from stemnmf.errors import DataValueError
from stemnmf.io.dataset import Dataset4D

__all__ = ["representative_patterns", "weighted_mean_patterns"]


def _as_weights(W, n_positions: int | None = None) -> np.ndarray:
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[1] == 0:
        raise DataValueError(f"W must be (n_positions, k), got shape {W.shape}")
    if n_positions is not None and W.shape[0] != n_positions:
        raise DataValueError(
            f"W has {W.shape[0]} rows but the scan has {n_positions} positions",
            "pass the W fitted to this dataset (one row per probe position, C order)",
        )
    if not np.isfinite(W).all():
        raise DataValueError("W contains NaN or Inf")
    if (W < 0).any():
        raise DataValueError("W has negative weights", "pass non-negative factors (NMF)")
    return W


def representative_patterns(W, H, pattern_shape) -> np.ndarray:
    """Each basis pattern scaled by its component's largest weight.

    Parameters
    ----------
    W : array_like, shape (n_positions, k)
        Component maps (weights).
    H : array_like, shape (k, n_features)
        Component patterns; ``n_features == qy * qx`` (raw features).
    pattern_shape : tuple of int
        (qy, qx) of the features.

    Returns
    -------
    numpy.ndarray, shape (k, qy, qx), float32
        ``H[i] * max(W[:, i])`` reshaped: the pattern component i predicts
        where it is strongest, on the scale of the data.
    """
    W = _as_weights(W)
    H = np.asarray(H)
    qy, qx = (int(n) for n in pattern_shape)
    if H.ndim != 2 or H.shape[0] != W.shape[1]:
        raise DataValueError(f"H must be (k, n_features) with k = {W.shape[1]}, got shape {H.shape}")
    if H.shape[1] != qy * qx:
        raise DataValueError(
            f"H has {H.shape[1]} features, not {qy} x {qx} = {qy * qx} pixels",
            "give the pattern shape of the raw features, or use weighted_mean_patterns for other features",
        )
    scale = W.max(axis=0).astype(np.float64)
    out = H.astype(np.float64) * scale[:, None]
    return out.reshape(-1, qy, qx).astype(np.float32)


def _weighted_sums(block, chunk, *, weights, keep):
    """Per chunk: (k, n_pixels) float64 sums of weight x pattern, and (k,) sums of weights."""
    own = block[chunk.own]
    patterns = own.reshape(-1, own.shape[-2] * own.shape[-1])
    if keep is not None:
        patterns = patterns[:, keep]
    w = np.asarray(weights[chunk.positions], dtype=np.float64)
    sums = w.T @ patterns.astype(np.float64)
    return sums, w.sum(axis=0)


def weighted_mean_patterns(dataset: Dataset4D, W, engine=None) -> np.ndarray:
    """Mean raw pattern of each component, weighted by its map.

    ``P_i = sum_p W[p, i] * pattern_p / sum_p W[p, i]``, accumulated in float64
    in one streamed pass over the dataset (``Engine.reduce``), so a lazy
    dataset larger than memory works and the result does not depend on the
    chunking.

    Parameters
    ----------
    dataset : Dataset4D
        The (calibrated) scan whose patterns are averaged.
    W : array_like, shape (n_positions, k)
        Non-negative weights, rows in C order of the scan. Stack the W of
        several fits side by side to average for all of them in one pass.
    engine : stemnmf.engine.Engine, optional
        Where the pass runs; default an in-process Engine.

    Returns
    -------
    numpy.ndarray, shape (k, qy, qx), float32
        Masked detector pixels (``dataset.mask``) are 0; a component with no
        weight anywhere gives a zero pattern.
    """
    if not isinstance(dataset, Dataset4D):
        raise DataValueError(
            f"weighted_mean_patterns needs a Dataset4D, got {type(dataset).__name__}",
            "wrap the array with stemnmf.Dataset4D(array)",
        )
    W = _as_weights(W, dataset.n_positions)
    engine = engine if engine is not None else Engine()
    qy, qx = dataset.pattern_shape
    keep = None if dataset.mask is None else np.flatnonzero(~dataset.mask.ravel())
    func = functools.partial(_weighted_sums, weights=W, keep=keep)
    sums, totals = engine.reduce(func, dataset, combine="sum", desc="weighted mean patterns")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(totals[:, None] > 0, sums / totals[:, None], 0.0)
    out = np.zeros((W.shape[1], qy * qx), dtype=np.float32)
    if keep is None:
        out[:] = means
    else:
        out[:, keep] = means
    return out.reshape(-1, qy, qx)
