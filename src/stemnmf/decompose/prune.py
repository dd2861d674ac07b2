"""Components whose map is more noise than structure (issue 21; docs/nmf.md).

A grain lies on a connected set of probe positions, so the map of a
component that stands for a grain varies smoothly from one position to the
next. A component that fits noise (Poisson noise of the features, which has
a shape shared by every position) has a speckled map spread over the scan.
The spatial coherence of a map (Moran's I with 4-neighbour weights,
:func:`spatial_coherence`) is about the share of its variance that is
spatial structure: below :data:`MIN_COHERENCE` a map is more noise than
structure, and the analysis gives such a component no region
(:func:`stemnmf.analysis.refine_regions`).

:func:`stemnmf.decompose.iterative.prune_components` drops these components
from a fit and refits it: the kept patterns alone with the maps fixed
(:func:`refit_patterns`, the default), which keeps the dropped components'
noise out of the grains' maps, or every factor by HALS (measured,
bench/RESULTS-quality.md, session 32).
"""

from __future__ import annotations

import numpy as np

from stemnmf.errors import DataValueError

__all__ = ["MIN_COHERENCE", "spatial_coherence", "incoherent", "refit_patterns"]

#: Spatial coherence (Moran's I) below which a map is more noise than structure.
MIN_COHERENCE = 0.5


def spatial_coherence(maps) -> np.ndarray:
    """Spatial coherence of each map: Moran's I with 4-neighbour weights, (k,) float32.

    ``I = (N / P) sum_{pairs (i, j)} z_i z_j / sum_i z_i^2`` over the P pairs
    of horizontally or vertically adjacent positions, ``z`` the map minus its
    mean. A map that varies smoothly over the scan (a grain spread over many
    positions) has I near 1, white noise near 0; for a smooth signal plus
    independent noise I is about the signal's share of the map's variance, so
    I < 0.5 means more noise than structure. A constant map gives 0.

    Examples
    --------
    >>> ramp = np.add.outer(np.arange(16.0), np.arange(16.0))[None]
    >>> bool(spatial_coherence(ramp)[0] > 0.9)
    True
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise DataValueError(f"maps must be shaped (k, sy, sx), got {maps.shape}")
    k, sy, sx = maps.shape
    pairs = sy * (sx - 1) + sx * (sy - 1)
    out = np.zeros(k, np.float32)
    if pairs == 0:
        return out
    for c in range(k):
        z = maps[c] - maps[c].mean()
        total = float(np.einsum("ij,ij->", z, z))
        if total <= 0:
            continue
        cross = float(np.einsum("ij,ij->", z[:, 1:], z[:, :-1]) + np.einsum("ij,ij->", z[1:], z[:-1]))
        out[c] = (sy * sx / pairs) * cross / total
    return out


def incoherent(Wt: np.ndarray, scan_shape, min_coherence: float = MIN_COHERENCE) -> np.ndarray:
    """(k,) bool: components whose map's :func:`spatial_coherence` is below ``min_coherence``.

    None is marked when every map is below it (nothing would be left: the
    maps of such a fit say nothing about which component is noise).

    Parameters
    ----------
    Wt : (k, n)
        Maps as rows, positions in C order of ``scan_shape``.
    scan_shape : (rows, cols)
    """
    Wt = np.asarray(Wt)
    low = spatial_coherence(Wt.reshape(Wt.shape[0], *tuple(scan_shape))) < float(min_coherence)
    return low if not low.all() else np.zeros_like(low)


def refit_patterns(Wt: np.ndarray, H: np.ndarray, WtX: np.ndarray, *, max_iter: int = 200,
                   tol: float = 1e-4) -> np.ndarray:
    """Non-negative least-squares patterns for fixed maps: ``min ||X - W H||`` over ``H >= 0`` by HALS.

    Only ``W^T X`` and ``W^T W`` enter, so X is read once (for ``WtX``).

    Parameters
    ----------
    Wt : (k, n)
        The maps, fixed.
    H : (k, m)
        The start.
    WtX : (k, m)
        ``W^T X``.
    max_iter : int
        Sweeps over the k patterns, at the most.
    tol : float
        Stop when a sweep changes H by less than this fraction of the first sweep's change (squared norms).

    Returns
    -------
    (k, m) float32

    Examples
    --------
    >>> Wt = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    >>> H = np.array([[2.0, 0.0], [0.0, 3.0]])
    >>> refit_patterns(Wt, np.ones((2, 2)), Wt @ (Wt.T @ H), tol=1e-12).round(3).tolist()
    [[2.0, 0.0], [0.0, 3.0]]
    """
    W64 = np.asarray(Wt, np.float64)
    G = W64 @ W64.T
    B = np.asarray(WtX, np.float64)
    H = np.array(H, np.float64)
    first = None
    for _ in range(int(max_iter)):
        change = 0.0
        for j in range(H.shape[0]):
            if G[j, j] <= 0:
                H[j] = 0.0
                continue
            new = np.maximum(0.0, H[j] + (B[j] - G[j] @ H) / G[j, j])
            change += float(np.dot(new - H[j], new - H[j]))
            H[j] = new
        first = change if first is None else first
        if change <= float(tol) * first:
            break
    return H.astype(np.float32)
