"""Evidence for k from the patterns: is a new component only another component, moved?

When the diffraction pattern moves across the scan and the move is not
corrected (the descan: the beam drifts by a few pixels from one edge of the
scan to the other; ``correct_shift`` is off by default), NMF spends extra
components on the move: one crystal becomes two or more components whose
patterns are the crystal's pattern at two places on the detector and whose
maps ramp across the scan in opposite directions. Such maps are as coherent
as a grain's, and the extra components lower the K-component loss and the
held-out error as much as a real domain would; only the patterns tell (test
bed, ``bench/kselect_instrument.py``).

A pair of patterns is a *shifted copy* when a small shift of one removes most
of what tells it from the other: with ``r(s) = min_c ||p_j - c T_s p_i||^2``
(``c >= 0``, ``T_s`` a bilinear shift by ``s`` pixels), the pair's shift
fraction is ``1 - min_s r(s) / r(0)``, the share of their difference a shift
of at most ``max_shift`` pixels explains. Two orientations of a crystal differ
by which reflections are excited, which no shift of the whole pattern (direct
beam included) reproduces: their shift fraction stays near 0; a crystal's
pattern at two places of a descan is near 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stemnmf.errors import DataValueError

__all__ = [
    "MAX_SHIFT",
    "SHIFT_STEP",
    "SHIFT_THRESHOLD",
    "ShiftEvidence",
    "shift_evidence",
    "shift_fraction",
    "component_weight",
    "distinct_count",
]

#: Largest shift tried, in pixels of the (binned) pattern grid, along each axis.
MAX_SHIFT = 1.5
#: Step of the grid of shifts, pixels.
SHIFT_STEP = 0.25


def _shifts(max_shift: float, step: float) -> list[tuple[float, float]]:
    n = int(round(max_shift / step))
    grid = np.arange(-n, n + 1) * step
    return [(float(dy), float(dx)) for dy in grid for dx in grid if (dy, dx) != (0.0, 0.0)]


def _lag_products(P: np.ndarray, reach: int) -> dict:
    """``<P_j, S_u P_i>`` for every integer lag ``u`` within ``reach`` (P zero-padded, so nothing is cut)."""
    k = P.shape[0]
    padded = np.pad(P, ((0, 0), (reach, reach), (reach, reach)))
    flat = padded.reshape(k, -1)
    products = {}
    for uy in range(-reach, reach + 1):
        for ux in range(-reach, reach + 1):
            moved = np.roll(padded, (uy, ux), axis=(1, 2)).reshape(k, -1)
            products[(uy, ux)] = flat @ moved.T  # [j, i] = <P_j, S_u P_i>
    return products


def _bilinear(shift: float) -> tuple[int, float]:
    base = int(np.floor(shift))
    return base, shift - base


def shift_fraction(patterns, *, max_shift: float = MAX_SHIFT, step: float = SHIFT_STEP) -> np.ndarray:
    """The share of each pair's difference that a small shift of one pattern explains.

    Parameters
    ----------
    patterns : array_like, shape (k, qy, qx)
        Component patterns (rows of H reshaped); negative values are clipped.
    max_shift, step : float
        Shifts tried: a square grid of ``step`` up to ``max_shift`` pixels
        along each axis (bilinear interpolation; the pattern is zero-padded,
        so nothing is cut at the edges).

    Returns
    -------
    numpy.ndarray, shape (k, k), float64
        ``F[j, i] = 1 - min_s r(s) / r(0)`` with ``r(s) = min_c ||p_j - c
        T_s p_i||^2``: 0 when no shift brings ``p_i`` closer to ``p_j``, 1 when a
        shift makes them equal; 0 on the diagonal and where ``r(0) = 0``
        (identical patterns are not a *shifted* copy).

    Notes
    -----
    A bilinear shift is a weighted sum of four integer shifts, so every inner
    product ``<p_j, T_s p_i>`` and norm ``||T_s p_i||^2`` is a weighted sum of
    the products of the patterns at integer lags, computed once.
    """
    P = np.clip(np.asarray(patterns, dtype=np.float64), 0, None)
    if P.ndim != 3:
        raise DataValueError(f"patterns must be a (k, qy, qx) stack, got shape {P.shape}")
    if max_shift <= 0 or step <= 0:
        raise DataValueError(f"max_shift={max_shift} and step={step} must be positive")
    reach = int(np.floor(max_shift)) + 1
    lag = _lag_products(P, reach)
    p_sq = np.diag(lag[(0, 0)]).copy()
    base = p_sq[:, None] - np.maximum(lag[(0, 0)], 0.0) ** 2 / np.maximum(p_sq[None, :], 1e-300)
    best = base.copy()
    corners = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for dy, dx in _shifts(max_shift, step):
        (ny, fy), (nx, fx) = _bilinear(dy), _bilinear(dx)
        weight = {(a, b): (fy if a else 1 - fy) * (fx if b else 1 - fx) for a, b in corners}
        inner = sum(w * lag[(ny + a, nx + b)] for (a, b), w in weight.items())
        norm = sum(
            weight[u] * weight[v] * np.diag(lag[(v[0] - u[0], v[1] - u[1])]) for u in corners for v in corners
        )
        residual = p_sq[:, None] - np.maximum(inner, 0.0) ** 2 / np.maximum(norm[None, :], 1e-300)
        np.minimum(best, residual, out=best)
    scale = np.maximum(p_sq[:, None], 1e-300)
    live = base > 1e-9 * scale
    out = np.where(live, 1.0 - best / np.where(live, base, 1.0), 0.0)
    np.fill_diagonal(out, 0.0)
    return np.clip(out, 0.0, 1.0)


#: A pair of components whose shift fraction reaches this is one pattern, moved (set on the
#: diagnosis scans of ``bench/kselect_instrument.py``: at most 0.37 between the components of
#: scans without descan, at least 0.69 between the halves of a crystal split by a 1.25 px descan).
SHIFT_THRESHOLD = 0.5


def distinct_count(fraction, weight, threshold: float = SHIFT_THRESHOLD) -> int:
    """Components left when each shifted copy of a stronger component is counted with it.

    Components are taken from the strongest (largest ``weight``) down; one
    joins the first kept component it is a shifted copy of (either way round,
    :func:`shift_fraction` at least ``threshold``), else it is kept. Kept
    components are never joined to each other through a third one, so a weak
    component that looks like a moved copy of two crystals (the direct beam
    moved, which every pattern shares) does not make the two crystals one.

    Parameters
    ----------
    fraction : array_like, shape (k, k)
        :func:`shift_fraction` of a fit.
    weight : array_like, shape (k,)
        Strength of each component, e.g. ``||w_i|| ||h_i||``.
    threshold : float

    Returns
    -------
    int
    """
    F = np.asarray(fraction, dtype=np.float64)
    linked = np.maximum(F, F.T) >= threshold
    kept: list[int] = []
    for i in np.argsort(-np.asarray(weight, dtype=np.float64), kind="stable"):
        if not any(linked[i, j] for j in kept):
            kept.append(int(i))
    return len(kept)


def component_weight(W, H) -> np.ndarray:
    """``||w_i|| ||h_i||`` per component: the Frobenius norm of its rank-one term."""
    return np.linalg.norm(np.asarray(W, dtype=np.float64), axis=0) * np.linalg.norm(np.asarray(H, dtype=np.float64), axis=1)


@dataclasses.dataclass
class ShiftEvidence:
    """Shifted copies among the components of every fit.

    Attributes
    ----------
    k : numpy.ndarray of int64
    largest : numpy.ndarray of float64
        Largest shift fraction between two components, per k.
    distinct : numpy.ndarray of int64
        Components left per k when shifted copies of a stronger component
        count with it (:func:`distinct_count`).
    threshold : float
    fractions : dict of int to numpy.ndarray or None
        :func:`shift_fraction` of every fit (not written to the results).
    """

    k: np.ndarray
    largest: np.ndarray
    distinct: np.ndarray
    threshold: float = SHIFT_THRESHOLD
    fractions: dict | None = dataclasses.field(default=None, repr=False)

    def distinct_at(self, k: int) -> int:
        """Distinct components of the fit with ``k`` components (``k`` itself when not scanned)."""
        hit = np.flatnonzero(self.k == int(k))
        return int(self.distinct[hit[0]]) if hit.size else int(k)

    def to_results(self, prefix: str = "/kselect/shift") -> dict:
        return {
            f"{prefix}/k": np.asarray(self.k, dtype=np.int64),
            f"{prefix}/largest": np.asarray(self.largest, dtype=np.float64),
            f"{prefix}/distinct": np.asarray(self.distinct, dtype=np.int64),
            f"{prefix}/threshold": np.float64(self.threshold),
        }


def shift_evidence(factors, pattern_shape, *, threshold: float = SHIFT_THRESHOLD, **options) -> ShiftEvidence:
    """:class:`ShiftEvidence` of the fits of a K-component loss scan.

    Parameters
    ----------
    factors : mapping of int to (W, H)
        :attr:`KLoss.factors`; rows of H are patterns of ``pattern_shape``,
        W gives each component's strength.
    pattern_shape : (int, int)
    threshold : float
    **options
        ``max_shift``, ``step`` of :func:`shift_fraction`.
    """
    qy, qx = (int(v) for v in pattern_shape)
    ks = np.array(sorted(int(k) for k in factors), dtype=np.int64)
    largest, distinct, fractions = np.zeros(ks.size), ks.copy(), {}
    for i, k in enumerate(ks):
        W, H = (np.asarray(v) for v in factors[int(k)])
        if H.shape[1] != qy * qx:
            raise DataValueError(f"patterns of {H.shape[1]} features are not {qy} x {qx}")
        if H.shape[0] > 1:
            fraction = shift_fraction(H.reshape(-1, qy, qx), **options)
            fractions[int(k)] = fraction
            largest[i] = float(fraction.max())
            distinct[i] = distinct_count(fraction, component_weight(W, H), threshold)
    return ShiftEvidence(ks, largest, distinct, float(threshold), fractions)
