"""Decision level 1: the knee of a convex, decreasing curve (Kneedle).

After Satopää, Albrecht, Irwin and Raghavan, "Finding a 'Kneedle' in a
Haystack" (ICDCSW 2011), for the one shape the K-component loss has:

1. Normalise ``x`` and ``y`` to [0, 1] by their minimum and maximum.
2. Difference curve ``D = (1 - y_n) - x_n``: how far the curve lies below the
   straight line from its highest to its lowest point.
3. Candidates are the local maxima of ``D``. A candidate ``i`` is the knee
   when ``D`` falls below ``D[i] - S * mean(diff(x_n))`` after it, before the
   next local maximum (``S`` is the sensitivity, 1 by default). The first such
   candidate wins.
4. When no candidate is confirmed, the global maximum of ``D`` is used.

No smoothing spline is fitted: the loss curve is already smooth enough, and
smoothing shifts the knee on short curves.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from stemnmf.errors import ConfigError, DataValueError

__all__ = ["Knee", "find_knee", "range_of_interest"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Knee:
    """A knee found by :func:`find_knee`.

    Attributes
    ----------
    x : float
        The knee's x value (a k when the curve is the K-component loss).
    index : int
        Its index in the curve.
    difference : numpy.ndarray
        The difference curve ``D`` (one value per point).
    confirmed : bool
        True when the threshold rule confirmed it, False for the fallback
        (global maximum of ``D``).
    """

    x: float
    index: int
    difference: np.ndarray
    confirmed: bool


def find_knee(x, y, *, sensitivity: float = 1.0) -> Knee:
    """The knee of a convex, decreasing curve (Kneedle).

    Parameters
    ----------
    x : array_like, shape (n,)
        Strictly increasing abscissae, e.g. the numbers of components.
    y : array_like, shape (n,)
        Curve values, e.g. the K-component loss.
    sensitivity : float, default 1.0
        Kneedle's S: larger values need a larger drop after a candidate to
        confirm it.

    Returns
    -------
    Knee

    Raises
    ------
    DataValueError
        If the curve has fewer than 3 points, is not finite, or ``x`` is not
        strictly increasing.

    Examples
    --------
    >>> find_knee([0, 1, 2, 3, 4, 5, 6], [10, 6, 2, 1.5, 1, 0.5, 0]).x
    2.0
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise DataValueError(f"x and y have different lengths ({x.size} and {y.size})")
    if x.size < 3:
        raise DataValueError(f"a knee needs at least 3 points, got {x.size}", "scan more values of k")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataValueError("the curve contains NaN or Inf")
    if np.any(np.diff(x) <= 0):
        raise DataValueError("x must be strictly increasing", "sort the curve by x")
    if sensitivity < 0:
        raise ConfigError(f"sensitivity={sensitivity} must be >= 0")
    xn = (x - x.min()) / (x.max() - x.min())
    span = y.max() - y.min()
    if span == 0:
        log.warning("the curve is flat; taking its first point as the knee")
        return Knee(float(x[0]), 0, np.zeros_like(x), False)
    yn = (y - y.min()) / span
    diff = (1.0 - yn) - xn
    n = diff.size
    step = np.mean(np.diff(xn))
    # local maxima (plateaus count once, at their first point)
    maxima = [
        i
        for i in range(n)
        if (i == 0 or diff[i] > diff[i - 1]) and (i == n - 1 or diff[i] >= diff[i + 1])
    ]
    maxima_set = set(maxima)
    for i in maxima:
        threshold = diff[i] - sensitivity * step
        for j in range(i + 1, n):
            if diff[j] < threshold:
                return Knee(float(x[i]), int(i), diff, True)
            if j in maxima_set:
                break  # the next local maximum came first: it resets the threshold
    index = int(np.argmax(diff))
    log.info("no knee confirmed by the Kneedle threshold; using the largest distance below the chord (x=%g)", x[index])
    return Knee(float(x[index]), index, diff, False)


def range_of_interest(knee: float, k_values, half_width: int = 4) -> np.ndarray:
    """The scanned k within ``half_width`` of the knee.

    Parameters
    ----------
    knee : float
        The knee (decision level 1).
    k_values : array_like of int
        The scanned numbers of components.
    half_width : int, default 4
        How far either side of the knee to look.

    Returns
    -------
    numpy.ndarray of int
        Sorted k values with ``|k - knee| <= half_width`` (at least the knee).
    """
    k_values = np.unique(np.asarray(k_values, dtype=np.int64))
    if half_width < 0:
        raise ConfigError(f"half_width={half_width} must be >= 0")
    chosen = k_values[np.abs(k_values - knee) <= half_width]
    if chosen.size == 0:
        chosen = k_values[[int(np.argmin(np.abs(k_values - knee)))]]
    return chosen
