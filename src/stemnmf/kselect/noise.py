"""The noise of the data, estimated from the data: how much of the residual no k can explain.

Counts of electrons are Poisson: an entry with expected value ``lambda`` has
variance ``lambda``. After a detector gain, binning sums and a global scale
``g`` the variance is ``g`` times the expected value. Neighbouring probe
positions inside one domain see the same expected pattern, so the squared
difference of their patterns is noise alone, with expectation ``g`` times
the sum of the two patterns; :func:`poisson_gain` takes the median of that
ratio over every pair of horizontal and vertical neighbours, which ignores
the few pairs that straddle a domain border. The noise energy of the whole
matrix is then ``g * sum(X)`` (:func:`noise_energy`).

With the noise known, a component is worth adding only when it removes more
of the residual than a component fitted to pure noise would: about the
largest eigenvalue of ``N^T N``. Poisson noise is far from uniform (the
direct beam's few pixels hold most of it), so the Marchenko-Pastur edge of a
uniform matrix, ``s2 (sqrt(n) + sqrt(m))^2``, is too small; for independent
entries of variances ``v_ij`` the largest singular value of N is at most
about ``sqrt(max_i sum_j v_ij) + sqrt(max_j sum_i v_ij)`` (Bandeira & van
Handel 2016, up to a logarithmic term), and :func:`noise_step` takes its
square, with ``v_ij = g X_ij``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from stemnmf.errors import DataValueError

__all__ = ["GAIN_ROWS", "NoiseEstimate", "poisson_gain", "noise_step"]


@dataclasses.dataclass(frozen=True)
class NoiseEstimate:
    """The noise of a (positions x features) matrix under a Poisson model with gain.

    Attributes
    ----------
    gain : float
        ``g`` in ``variance = g * mean`` (1 for counts of electrons).
    total : float
        Sum of all entries of X.
    n_positions, n_features : int
    row_max, column_max : float
        Largest sum of a row and of a column of X.
    """

    gain: float
    total: float
    n_positions: int
    n_features: int
    row_max: float = 0.0
    column_max: float = 0.0

    @property
    def energy(self) -> float:
        """Expected ``||N||_F^2`` of the noise: ``gain * sum(X)``."""
        return float(self.gain * self.total)

    @property
    def step(self) -> float:
        """Residual energy one component fitted to noise removes at most (:func:`noise_step`)."""
        return noise_step(self.gain, self.row_max, self.column_max)


def noise_step(gain: float, row_max: float, column_max: float) -> float:
    """``g (sqrt(max row sum) + sqrt(max column sum))^2``: about the top eigenvalue of the noise's Gram matrix."""
    return float(gain) * (math.sqrt(max(float(row_max), 0.0)) + math.sqrt(max(float(column_max), 0.0))) ** 2


#: The gain is estimated from the neighbour pairs of at most this many scan rows (evenly spaced).
GAIN_ROWS = 64


def _pair_ratios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a_p - b_p||^2 / sum(a_p + b_p)`` per row (rows with no counts dropped)."""
    diff = a - b
    num = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    den = a.sum(axis=1, dtype=np.float64) + b.sum(axis=1, dtype=np.float64)
    keep = den > 0
    return num[keep] / den[keep]


def poisson_gain(X, scan_shape) -> NoiseEstimate:
    """Estimate ``g`` in ``variance = g * mean`` from neighbouring positions.

    Parameters
    ----------
    X : array_like, shape (n_positions, n_features)
        Non-negative features on a linear scale of counts (raw patterns),
        rows in C order of the scan; ndarray, memmap or anything that takes
        a slice of rows. Read one scan row at a time.
    scan_shape : (int, int)
        (sy, sx) with ``sy * sx == n_positions``.

    Returns
    -------
    NoiseEstimate
        ``gain`` is the median ratio over the horizontal pairs of at most
        :data:`GAIN_ROWS` evenly spaced scan rows and the vertical pairs
        between each of them and the next row; the sums are over all of X.

    Raises
    ------
    DataValueError
        When X does not fit the scan or has fewer than two positions.
    """
    sy, sx = (int(v) for v in scan_shape)
    n, m = (int(v) for v in X.shape)
    if n != sy * sx or n < 2:
        raise DataValueError(f"X with {n} rows does not fit a {sy} x {sx} scan of at least two positions")
    sampled = set(np.unique(np.linspace(0, sy - 1, min(sy, GAIN_ROWS)).round().astype(int)).tolist())
    ratios, previous = [], None
    row_sums, column_sums = np.zeros(n), np.zeros(m)
    for y in range(sy):
        row = np.asarray(X[y * sx : (y + 1) * sx], dtype=np.float32)
        row_sums[y * sx : (y + 1) * sx] = row.sum(axis=1, dtype=np.float64)
        column_sums += row.sum(axis=0, dtype=np.float64)
        if y in sampled and sx > 1:
            ratios.append(_pair_ratios(row[:-1], row[1:]))
        if previous is not None and y - 1 in sampled:
            ratios.append(_pair_ratios(previous, row))
        previous = row
    ratios = np.concatenate(ratios) if ratios else np.zeros(0)
    gain = float(np.median(ratios)) if ratios.size else 0.0
    return NoiseEstimate(gain, float(row_sums.sum()), n, m, float(row_sums.max()), float(column_sums.max()))
