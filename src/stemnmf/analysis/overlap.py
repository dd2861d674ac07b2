"""Overlap maps (Cao et al. 2025): where two components share a position.

The overlap ratio at a position is the second-largest weight divided by the
largest. A ratio near 1 means two components contribute almost equally (two
grains stacked along the beam, or a boundary); near 0 means one component
dominates.
"""

from __future__ import annotations

import numpy as np

from stemnmf.analysis.maps import as_weights
from stemnmf.errors import ConfigError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "overlap_ratio",
    "overlap_maps",
    "overlap_level",
    "overlap_pairs",
    "check_thresholds",
]

#: Thresholds of the binary overlap maps, as in Cao et al.
DEFAULT_THRESHOLDS = (0.75, 0.80, 0.85, 0.90, 0.95)


def check_thresholds(thresholds) -> np.ndarray:
    """Thresholds as a sorted float32 array in (0, 1].

    Raises
    ------
    ConfigError
        If empty or outside (0, 1].
    """
    values = np.atleast_1d(np.asarray(thresholds, dtype=np.float32))
    if values.ndim != 1 or values.size == 0:
        raise ConfigError("no overlap thresholds given", "give thresholds such as 0.75,0.8,0.85,0.9,0.95")
    if not np.isfinite(values).all() or (values <= 0).any() or (values > 1).any():
        raise ConfigError(f"overlap thresholds {values.tolist()} must lie in (0, 1]", "give fractions such as 0.8")
    return np.unique(values)


def _top_two(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and values of the largest and second-largest weight per row."""
    n, k = W.shape
    rows = np.arange(n)
    if k == 1:
        zeros = np.zeros(n, np.float32)
        return np.zeros(n, np.intp), W[:, 0], np.full(n, -1, np.intp), zeros
    part = np.argpartition(W, k - 2, axis=1)[:, -2:]
    a, b = part[:, 0], part[:, 1]
    wa, wb = W[rows, a], W[rows, b]
    swap = (wa > wb) | ((wa == wb) & (a < b))
    first = np.where(swap, a, b)
    second = np.where(swap, b, a)
    return first, W[rows, first], second, W[rows, second]


def overlap_ratio(W, scan_shape: tuple[int, int]) -> np.ndarray:
    """Second-largest over largest weight at each position, (sy, sx) float32.

    0 where the largest weight is 0 or there is a single component.

    Examples
    --------
    >>> overlap_ratio(np.array([[4.0, 1.0, 2.0], [0.0, 0.0, 0.0]]), (1, 2))
    array([[0.5, 0. ]], dtype=float32)
    """
    W = as_weights(W, scan_shape)
    _, top, _, second = _top_two(W)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(top > 0, second / np.where(top > 0, top, 1), 0)
    return ratio.astype(np.float32).reshape(scan_shape)


def overlap_maps(ratio, thresholds=DEFAULT_THRESHOLDS) -> np.ndarray:
    """Binary overlap maps (t, sy, sx): ``ratio >= threshold`` for each threshold."""
    ratio = np.asarray(ratio, dtype=np.float32)
    thresholds = check_thresholds(thresholds)
    return ratio[None] >= thresholds.reshape(-1, *([1] * ratio.ndim))


def overlap_level(ratio, thresholds=DEFAULT_THRESHOLDS) -> np.ndarray:
    """The combined colour-coded overlap map, (sy, sx) int32.

    0 where the ratio is below every threshold, otherwise the number of
    thresholds it reaches (1 = at least the lowest, t = at least the highest),
    so that each level is one colour.
    """
    return overlap_maps(ratio, thresholds).sum(axis=0, dtype=np.int32)


def overlap_pairs(W, scan_shape: tuple[int, int], thresholds=DEFAULT_THRESHOLDS):
    """Which pair of components overlaps where.

    Parameters
    ----------
    W : array (n_positions, k)
    scan_shape : (sy, sx)
    thresholds : sequence of float
        A position counts for a pair when its overlap ratio reaches the lowest
        threshold; the table also counts positions at every threshold.

    Returns
    -------
    table : numpy.ndarray
        Structured (p,) with fields ``pair`` (int32), ``component_a`` <
        ``component_b`` (int32, the two largest weights), ``n_positions`` (int32,
        ratio >= lowest threshold), ``n_at`` (int32 (t,), positions at each
        threshold) and ``mean_ratio`` (float32), sorted by decreasing
        ``n_positions``.
    pair_map : numpy.ndarray
        (sy, sx) int32: the row of ``table`` at each position, -1 where the
        ratio is below the lowest threshold.
    """
    W = as_weights(W, scan_shape)
    thresholds = check_thresholds(thresholds)
    t = thresholds.size
    dtype = np.dtype(
        [
            ("pair", np.int32),
            ("component_a", np.int32),
            ("component_b", np.int32),
            ("n_positions", np.int32),
            ("n_at", np.int32, (t,)),
            ("mean_ratio", np.float32),
        ]
    )
    pair_map = np.full(W.shape[0], -1, np.int32)
    first, top, second, value = _top_two(W)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(top > 0, value / np.where(top > 0, top, 1), 0).astype(np.float32)
    hit = (ratio >= thresholds[0]) & (second >= 0)
    if not hit.any():
        return np.zeros(0, dtype), pair_map.reshape(scan_shape)
    k = W.shape[1]
    lo = np.minimum(first[hit], second[hit])
    hi = np.maximum(first[hit], second[hit])
    codes, inverse, counts = np.unique(lo * k + hi, return_inverse=True, return_counts=True)
    order = np.lexsort((codes, -counts))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    table = np.zeros(codes.size, dtype)
    table["pair"] = np.arange(codes.size)
    table["component_a"] = (codes[order] // k).astype(np.int32)
    table["component_b"] = (codes[order] % k).astype(np.int32)
    table["n_positions"] = counts[order]
    r = ratio[hit]
    row = rank[inverse]
    table["mean_ratio"] = np.bincount(row, weights=r, minlength=codes.size) / table["n_positions"]
    for j, thr in enumerate(thresholds):
        table["n_at"][:, j] = np.bincount(row, weights=(r >= thr), minlength=codes.size).astype(np.int32)
    pair_map[np.flatnonzero(hit)] = row
    return table, pair_map.reshape(scan_shape)
