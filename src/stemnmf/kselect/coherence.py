"""Evidence for k from the maps: does every component map form spatially coherent domains?

A component that stands for a crystal or a domain has a map that varies
smoothly from one probe position to the next; one that fits noise, or an
arbitrary share of a domain, has a speckled map. The coherence of a map is
its lag-1 autocorrelation over the scan (the mean of the Pearson correlations
between horizontally and vertically neighbouring positions). A k is judged by
its least coherent component against the median component of the same fit
(:func:`coherence_ratio_by_k`): a small domain has a lower coherence than a
large one (more of its neighbours lie across its border), so comparing within
one fit, whose components share the scan's domain sizes, keeps many small
domains from looking like noise, while a component that fits noise (coherence
near 0) stands out at once. It uses the fits of the K-component loss scan, so
it costs nothing extra.
"""

from __future__ import annotations

import numpy as np

from stemnmf.errors import DataValueError

__all__ = ["map_coherence", "coherence_by_k", "coherence_ratio", "coherence_ratio_by_k"]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / den) if den > 0 else 0.0


def map_coherence(W, scan_shape) -> np.ndarray:
    """Lag-1 autocorrelation of each component map.

    Parameters
    ----------
    W : array_like, shape (n_positions, k)
        Component weights, rows in C order of the scan.
    scan_shape : (int, int)
        (sy, sx) with ``sy * sx == n_positions``.

    Returns
    -------
    numpy.ndarray, shape (k,), float64
        Mean of the correlations between each map and its shift by one
        position along x and along y (1 for a smooth map, about 0 for white
        noise; 0 for a constant map).
    """
    W = np.asarray(W, dtype=np.float64)
    sy, sx = (int(v) for v in scan_shape)
    if W.ndim != 2 or W.shape[0] != sy * sx:
        raise DataValueError(f"W of shape {W.shape} does not fit a {sy} x {sx} scan")
    maps = W.T.reshape(-1, sy, sx)
    out = np.zeros(maps.shape[0])
    for i, m in enumerate(maps):
        parts = []
        if sx > 1:
            parts.append(_correlation(m[:, :-1].ravel(), m[:, 1:].ravel()))
        if sy > 1:
            parts.append(_correlation(m[:-1].ravel(), m[1:].ravel()))
        out[i] = float(np.mean(parts)) if parts else 0.0
    return out


def coherence_by_k(factors, scan_shape) -> tuple[np.ndarray, np.ndarray]:
    """The coherence of the least coherent component of each fit.

    Parameters
    ----------
    factors : mapping of int to (W, H)
        The fits of the K-component loss scan (:attr:`KLoss.factors`).
    scan_shape : (int, int)

    Returns
    -------
    k : numpy.ndarray of int64
    least : numpy.ndarray of float64
    """
    ks = np.array(sorted(int(k) for k in factors), dtype=np.int64)
    least = np.array([map_coherence(factors[int(k)][0], scan_shape).min() for k in ks])
    return ks, least


def coherence_ratio_by_k(factors, scan_shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The least and the median component coherence of each fit.

    Parameters
    ----------
    factors : mapping of int to (W, H)
    scan_shape : (int, int)

    Returns
    -------
    k : numpy.ndarray of int64
    least, median : numpy.ndarray of float64
        Their ratio ``least / median`` (0 where the median is not positive)
        is what the coherence vote thresholds.
    """
    ks = np.array(sorted(int(k) for k in factors), dtype=np.int64)
    values = [map_coherence(factors[int(k)][0], scan_shape) for k in ks]
    least = np.array([v.min() for v in values])
    median = np.array([float(np.median(v)) for v in values])
    return ks, least, median


def coherence_ratio(least, median) -> np.ndarray:
    """``least / median`` per k, 0 where the median coherence is not positive."""
    least = np.asarray(least, dtype=np.float64)
    median = np.asarray(median, dtype=np.float64)
    return np.where(median > 0, least / np.where(median > 0, median, 1.0), 0.0)
