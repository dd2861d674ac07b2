"""Cluster maps from the NMF weights: component maps, labels, components per position.

W is (n_positions, k) with positions in C order of the scan (index = y * sx + x).
A component's weights have an arbitrary scale (NMF can move any factor between W
and H), so every threshold here is relative to the component's *typical weight*:
the median of its weights over the positions where it is the largest component.
"""

from __future__ import annotations

import numpy as np

from stemnmf.errors import ConfigError, DataValueError

__all__ = [
    "as_weights",
    "component_maps",
    "typical_weights",
    "cluster_labels",
    "presence",
    "clusters_per_position",
]


def as_weights(W, scan_shape: tuple[int, int] | None = None) -> np.ndarray:
    """W as a float32 (n_positions, k) array, checked against ``scan_shape``.

    Also accepts component maps (k, sy, sx).

    Raises
    ------
    DataValueError
        If W is not 2D (or 3D maps), holds NaN/Inf or negative values, or does not
        have one row per scan position.
    """
    W = np.asarray(W)
    if W.ndim == 3:
        W = W.reshape(W.shape[0], -1).T
    if W.ndim != 2 or 0 in W.shape:
        raise DataValueError(
            f"weights must be shaped (n_positions, k), got {W.shape}", "pass W from the NMF (one row per position)"
        )
    W = np.ascontiguousarray(W, dtype=np.float32)
    if not np.isfinite(W).all():
        raise DataValueError("weights hold NaN or Inf", "check the NMF output")
    if (W < 0).any():
        raise DataValueError("weights hold negative values", "NMF weights must be non-negative")
    if scan_shape is not None:
        sy, sx = (int(n) for n in scan_shape)
        if W.shape[0] != sy * sx:
            raise DataValueError(
                f"weights have {W.shape[0]} rows but the scan {sy} x {sx} has {sy * sx} positions",
                "pass W of the same scan",
            )
    return W


def component_maps(W, scan_shape: tuple[int, int]) -> np.ndarray:
    """Component maps (k, sy, sx) float32: column c of W reshaped to the scan.

    Examples
    --------
    >>> component_maps(np.arange(6.0).reshape(3, 2), (1, 3))[1]
    array([[1., 3., 5.]], dtype=float32)
    """
    W = as_weights(W, scan_shape)
    return np.ascontiguousarray(W.T.reshape(W.shape[1], *scan_shape))


def typical_weights(W) -> np.ndarray:
    """Typical weight of each component, (k,) float32.

    The median of the component's weights over the positions where it is the
    largest weight; for a component that is nowhere the largest, its maximum
    weight. Zero rows (all weights 0) are ignored.
    """
    W = as_weights(W)
    k = W.shape[1]
    best = np.argmax(W, axis=1)
    top = W[np.arange(W.shape[0]), best]
    typical = W.max(axis=0).astype(np.float32)
    for c in range(k):
        own = top[(best == c) & (top > 0)]
        if own.size:
            typical[c] = np.median(own)
    return typical


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ConfigError(
            f"{name}={value} must lie between 0 and 1", f"give {name} as a fraction of the typical weight"
        )
    return value


def _check_vacuum(vacuum, n_positions: int) -> np.ndarray | None:
    if vacuum is None:
        return None
    vacuum = np.asarray(vacuum, dtype=bool).ravel()
    if vacuum.size != n_positions:
        raise DataValueError(
            f"vacuum mask has {vacuum.size} values for {n_positions} positions", "give one value per scan position"
        )
    return vacuum


def cluster_labels(
    W,
    scan_shape: tuple[int, int],
    *,
    significance: float = 0.25,
    vacuum=None,
    typical: np.ndarray | None = None,
) -> np.ndarray:
    """Argmax component per position, -1 where no component is significant.

    Position i gets ``c = argmax_c W[i, c]`` unless ``W[i, c] < significance *
    typical[c]`` (its largest weight is small for that component), all its
    weights are 0, or ``vacuum[i]`` is True.

    Parameters
    ----------
    W : array (n_positions, k)
        NMF weights.
    scan_shape : (sy, sx)
    significance : float, default 0.25
        Fraction of the component's typical weight (see :func:`typical_weights`)
        below which the position is left unlabelled.
    vacuum : array of bool (sy, sx), optional
        True where the position looks like vacuum; those get -1.
    typical : array (k,), optional
        Typical weights, if already computed.

    Returns
    -------
    numpy.ndarray
        (sy, sx) int32.
    """
    W = as_weights(W, scan_shape)
    significance = _check_fraction("significance", significance)
    typical = typical_weights(W) if typical is None else np.asarray(typical, np.float32)
    best = np.argmax(W, axis=1).astype(np.int32)
    top = W[np.arange(W.shape[0]), best]
    keep = (top > 0) & (top >= significance * typical[best])
    vacuum = _check_vacuum(vacuum, W.shape[0])
    if vacuum is not None:
        keep &= ~vacuum
    labels = np.where(keep, best, -1).astype(np.int32)
    return labels.reshape(scan_shape)


def presence(
    W,
    *,
    threshold: float = 0.25,
    vacuum=None,
    typical: np.ndarray | None = None,
) -> np.ndarray:
    """Membership weights: W where a component is present, 0 elsewhere.

    Component c is present at position i when ``W[i, c] > 0`` and
    ``W[i, c] >= threshold * typical[c]`` and the position is not vacuum. The
    result (n_positions, k) float32 keeps the weights of present components; it
    defines which patterns contribute to a component's weighted mean, its
    dissimilarity score and its scores against ground truth.
    """
    W = as_weights(W)
    threshold = _check_fraction("presence", threshold)
    typical = typical_weights(W) if typical is None else np.asarray(typical, np.float32)
    present = (W > 0) & (W >= threshold * typical[None, :])
    vacuum = _check_vacuum(vacuum, W.shape[0])
    if vacuum is not None:
        present &= ~vacuum[:, None]
    return np.where(present, W, np.float32(0)).astype(np.float32)


def clusters_per_position(
    W,
    scan_shape: tuple[int, int],
    *,
    threshold: float = 0.25,
    vacuum=None,
    typical: np.ndarray | None = None,
) -> np.ndarray:
    """Number of components present at each position, (sy, sx) int32.

    A component is present where its weight reaches ``threshold`` times its
    typical weight (see :func:`presence`); this is the clusters-per-pattern map.
    """
    W = as_weights(W, scan_shape)
    member = presence(W, threshold=threshold, vacuum=vacuum, typical=typical)
    return np.count_nonzero(member, axis=1).astype(np.int32).reshape(scan_shape)
