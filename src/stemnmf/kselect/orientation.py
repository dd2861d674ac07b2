"""Evidence for k from the patterns' peaks: is a new component another orientation?

The number to choose is the number of distinct orientations, and not every
component a fit adds is one. Where a crystal's thickness varies (thickness
fringes, a wedge, grains stacked along the beam) its reflections change their
intensities from place to place but stay where they are; NMF spends extra
components on those intensity changes. Where amorphous carbon lies between the
grains, or a background varies, NMF spends a component on a pattern with no
reflection at all. Both are real structure far above the noise, so the loss,
the held-out error, the map coherence and the noise model all take them for
new domains; only where the patterns have their peaks tells.

The test is the NMF merging's same-grain test
(:mod:`stemnmf.decompose.evidence`): a pattern's *peaks* are its entries
standing :data:`~stemnmf.decompose.evidence.PEAK_SIGMAS` noise deviations
above their local median (:func:`~stemnmf.decompose.evidence.pattern_peaks`,
with the noise of each entry from the fit's column residuals,
:func:`~stemnmf.decompose.evidence.pattern_noise`), and two patterns agree by
the Dice overlap of their peak sets
(:func:`~stemnmf.decompose.evidence.peak_agreement`). Entries near the direct
beam are left out (:func:`direct_beam`): every pattern has the direct beam, so
it says nothing about orientation (with its tails: the peaks connected to
it). Then, per fit (:func:`orientation_count`):

* a component with fewer than ``min_peaks`` peak entries is *peakless* (no
  reflection: carbon, background) and is not counted;
* a component whose peaks agree at least ``threshold`` with a stronger counted
  component while it is at most ``ratio`` times as strong, or at least
  ``threshold_any`` whatever the strengths, or that is a shifted copy of one
  (:mod:`stemnmf.kselect.shift`), counts with it (the same orientation).

Two orientations of one phase put most of their reflections in other places
(agreement near 0, whatever their intensities), so they count twice. Peak
positions alone do not tell a thickness level from another orientation near
the same zone axis (on the test bed such pairs agree up to 0.6); what NMF adds
beyond an orientation for its intensity changes is weak beside it, hence the
strength ratio. At large thickness the fringes give a grain's pieces other
reflections, which no test on peak positions joins. The settings were chosen
on the tune scans of the test bed (docs/kselect.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from stemnmf.decompose import RowBlocks
from stemnmf.decompose.evidence import pattern_noise, pattern_peaks, peak_agreement
from stemnmf.errors import DataValueError
from stemnmf.kselect.shift import SHIFT_THRESHOLD, component_weight, shift_fraction

__all__ = [
    "AGREEMENT_ANY",
    "AGREEMENT_THRESHOLD",
    "BEAM_RADII",
    "MAX_POSITIONS",
    "MIN_PEAKS",
    "STRENGTH_RATIO",
    "OrientationEvidence",
    "direct_beam",
    "fit_evidence",
    "fit_peaks",
    "orientation_count",
    "orientation_evidence",
    "residual_columns",
]

#: Two components whose peaks agree at least this much (Dice) are one orientation ...
AGREEMENT_THRESHOLD = 0.4
#: ... when the weaker is at most this many times as strong (``||w_i|| ||h_i||``) as the stronger;
STRENGTH_RATIO = 0.25
#: ... and whatever their strengths when they agree at least this much.
AGREEMENT_ANY = 0.7
#: A component with fewer peak entries than this (outside the direct beam) holds no reflection.
MIN_PEAKS = 8
#: The column residuals are estimated on at most this many evenly spaced positions.
MAX_POSITIONS = 4096
#: The direct beam is taken as the disc of this many half-maximum radii (plus one entry) around the
#: maximum of the mean pattern.
BEAM_RADII = 2.0


def direct_beam(mean_pattern, radii: float = BEAM_RADII) -> np.ndarray:
    """(qy, qx) bool: the entries of the direct beam in a mean pattern.

    The beam's core is the connected region of entries at or above half the
    maximum that holds the maximum; with ``r`` the radius of a disc of its
    area, the beam is every entry within ``radii * r + 1`` of the maximum (its
    tails stand far above the noise too).

    Parameters
    ----------
    mean_pattern : array_like, shape (qy, qx)
    radii : float

    Examples
    --------
    >>> p = np.zeros((9, 9)); p[4, 4] = 10.0; p[0, 0] = 1.0
    >>> int(direct_beam(p).sum()), bool(direct_beam(p)[0, 0])
    (13, False)
    """
    p = np.asarray(mean_pattern, dtype=np.float64)
    if p.ndim != 2:
        raise DataValueError(f"the mean pattern must be 2D, got shape {p.shape}")
    if not np.isfinite(p).all() or p.max() <= 0:
        return np.zeros(p.shape, bool)
    top = np.unravel_index(int(np.argmax(p)), p.shape)
    labels, _ = ndimage.label(p >= 0.5 * p.max())
    area = float((labels == labels[top]).sum())
    radius = float(radii) * np.sqrt(area / np.pi) + 1.0
    yy, xx = np.indices(p.shape)
    return np.hypot(yy - top[0], xx - top[1]) <= radius


_CHUNK_ROWS = 512


def residual_columns(X, factors, ks, max_positions: int | None = MAX_POSITIONS) -> tuple[dict, np.ndarray]:
    """Squared residual of every column of X for the fits ``ks``, and the mean pattern; one pass over X.

    Parameters
    ----------
    X : array_like, shape (n_positions, n_features)
        Anything :class:`~stemnmf.decompose.RowBlocks` reads.
    factors : mapping of int to (W, H)
    ks : iterable of int
    max_positions : int or None
        Above this many positions both are estimated on that many evenly
        spaced ones (scaled to all of X); None: every position.

    Returns
    -------
    col_sq : dict of int to numpy.ndarray (n_features,), float64
        ``sum_n (X - W H)_nf^2`` per fit, from ``sum X^2 - 2 h.(W^T X) + h^T (W^T W) h``.
    mean : numpy.ndarray (n_features,), float64
        Column means of X.
    """
    ks = [int(k) for k in ks]
    blocks = X if isinstance(X, RowBlocks) else RowBlocks(X)
    n, m = (int(v) for v in blocks.shape)
    keep = np.ones(n, bool)
    if max_positions is not None and n > int(max_positions):
        keep[:] = False
        keep[np.unique(np.linspace(0, n - 1, int(max_positions)).round().astype(np.int64))] = True
    Ws = [np.asarray(factors[k][0], dtype=np.float64)[keep] for k in ks]
    stacked = np.hstack(Ws) if Ws else np.zeros((int(keep.sum()), 0))
    WtX = np.zeros((stacked.shape[1], m))
    x_sq = np.zeros(m)
    total = np.zeros(m)
    done = 0

    def add(rows):  # the kept rows, gathered into chunks: a product with few rows is slow
        nonlocal done, WtX, x_sq, total
        xb = np.concatenate(rows).astype(np.float64) if len(rows) > 1 else np.asarray(rows[0], dtype=np.float64)
        WtX += stacked[done : done + len(xb)].T @ xb
        done += len(xb)
        x_sq += np.einsum("ij,ij->j", xb, xb)
        total += xb.sum(axis=0)

    pending, size = [], 0
    for start, xb in blocks:
        rows = keep[start : start + len(xb)]
        pending.append(np.asarray(xb if rows.all() else xb[rows], dtype=np.float32))
        size += len(pending[-1])
        if size >= _CHUNK_ROWS:
            add(pending)
            pending, size = [], 0
    if size:
        add(pending)
    col_sq, offset = {}, 0
    scale = n / max(done, 1)
    for k, W in zip(ks, Ws):
        H = np.asarray(factors[k][1], dtype=np.float64)
        part = WtX[offset : offset + W.shape[1]]
        offset += W.shape[1]
        fitted = np.einsum("if,if->f", H, (W.T @ W) @ H)
        col_sq[k] = scale * np.maximum(x_sq - 2.0 * np.einsum("if,if->f", H, part) + fitted, 0.0)
    return col_sq, total / max(done, 1)


def fit_peaks(W, H, col_sq, pattern_shape=None, beam=None) -> np.ndarray:
    """(k, m) bool: the peaks of each pattern of a fit, the direct beam left out.

    :func:`~stemnmf.decompose.evidence.pattern_peaks` with the entry noise of
    :func:`~stemnmf.decompose.evidence.pattern_noise`. With ``beam`` ((qy, qx)
    bool, :func:`direct_beam`) and ``pattern_shape``, every connected group of
    a pattern's peaks (8-neighbours) that touches the beam is left out: the
    beam's tails stand far above the noise as far as its counts reach, which
    depends on the dose, not on the half-maximum disc.
    """
    W = np.asarray(W, dtype=np.float64)
    peaks = pattern_peaks(np.asarray(H, dtype=np.float64), pattern_noise(W.T, col_sq))
    if beam is None:
        return peaks
    if pattern_shape is None:
        raise DataValueError("leaving the direct beam out needs the pattern shape")
    qy, qx = (int(v) for v in pattern_shape)
    beam = np.asarray(beam, bool).reshape(qy, qx)
    for i, p in enumerate(peaks):
        labels, _ = ndimage.label(p.reshape(qy, qx) | beam, structure=np.ones((3, 3), bool))
        touching = np.unique(labels[beam])
        peaks[i] &= ~np.isin(labels, touching[touching > 0]).ravel()
    return peaks


def orientation_count(
    agreement, n_peaks, weight, *, threshold: float | None = AGREEMENT_THRESHOLD, min_peaks: int = MIN_PEAKS,
    ratio: float | None = STRENGTH_RATIO, threshold_any: float | None = AGREEMENT_ANY, linked=None,
) -> int:
    """Distinct orientations among a fit's components.

    Components are taken from the strongest down. A peakless one (fewer than
    ``min_peaks`` peaks) is not counted; one whose agreement with a counted
    component reaches ``threshold`` while it is at most ``ratio`` times as
    strong, or reaches ``threshold_any`` whatever the strengths, or that
    ``linked`` joins to one, counts with it; any other is counted. Counted components are never joined
    through a third one. When every component is peakless the peaks say
    nothing and only ``linked`` joins components.

    Parameters
    ----------
    agreement : array_like, shape (k, k)
        :func:`~stemnmf.decompose.evidence.peak_agreement` of the fit's peaks.
    n_peaks : array_like, shape (k,)
        Peak entries of each pattern.
    weight : array_like, shape (k,)
        Strength of each component (:func:`~stemnmf.kselect.shift.component_weight`).
    threshold : float or None
        None: peaks join nothing (only ``linked`` and the peakless rule count).
    min_peaks : int
        0: no component is peakless.
    ratio : float or None
        Strength of a component, relative to the counted one its peaks agree
        with, up to which it joins it; None: any.
    threshold_any : float or None
        Agreement at which a component joins whatever the strengths; None: never.
    linked : array_like of bool, shape (k, k), optional
        Further pairs that are one orientation (shifted copies).

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    Two thickness levels of one grain (same peaks), a second orientation, and
    carbon (no peaks):

    >>> a = np.array([[1, .8, 0, 0], [.8, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0.]])
    >>> orientation_count(a, [40, 30, 35, 0], [1.0, 0.5, 0.8, 0.3])
    2
    """
    A = np.asarray(agreement, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    k = A.shape[0]
    L = np.zeros((k, k), bool) if linked is None else np.asarray(linked, bool)
    L = L | L.T
    joined = L.copy()
    if threshold is not None:
        weak = np.ones((k, k), bool) if ratio is None else w[:, None] <= float(ratio) * w[None, :]
        joined |= (np.maximum(A, A.T) >= float(threshold)) & weak  # [i, j]: i joins the stronger j
        if threshold_any is not None:
            joined |= np.maximum(A, A.T) >= float(threshold_any)
    peakless = np.asarray(n_peaks) < int(min_peaks)
    if peakless.all():
        peakless, joined = np.zeros(k, bool), L
    kept: list[int] = []
    for i in np.argsort(-w, kind="stable"):
        if peakless[i] or any(joined[i, j] for j in kept):
            continue
        kept.append(int(i))
    return max(len(kept), 1)


@dataclasses.dataclass
class OrientationEvidence:
    """Components of every examined fit that are the same orientation as another, or hold no peaks.

    Attributes
    ----------
    k : numpy.ndarray of int64
        The fits examined.
    distinct : numpy.ndarray of int64
        Distinct orientations per fit (:func:`orientation_count`, shifted
        copies joined as :mod:`stemnmf.kselect.shift` joins them).
    peakless : numpy.ndarray of int64
        Components without peaks per fit.
    largest : numpy.ndarray of float64
        Largest peak agreement between two components per fit.
    threshold, min_peaks, shift_threshold, ratio, threshold_any : float or None, int, float, ...
        Of :func:`orientation_count` (``threshold`` None: peaks joined nothing;
        ``ratio``, ``threshold_any`` None: not used).
    """

    k: np.ndarray
    distinct: np.ndarray
    peakless: np.ndarray
    largest: np.ndarray
    threshold: float | None = AGREEMENT_THRESHOLD
    min_peaks: int = MIN_PEAKS
    shift_threshold: float = SHIFT_THRESHOLD
    ratio: float | None = STRENGTH_RATIO
    threshold_any: float | None = AGREEMENT_ANY

    def distinct_at(self, k: int) -> int:
        """Distinct orientations of the fit with ``k`` components (``k`` itself when not examined)."""
        hit = np.flatnonzero(self.k == int(k))
        return int(self.distinct[hit[0]]) if hit.size else int(k)

    def to_results(self, prefix: str = "/kselect/orientation") -> dict:
        return {
            f"{prefix}/k": np.asarray(self.k, dtype=np.int64),
            f"{prefix}/distinct": np.asarray(self.distinct, dtype=np.int64),
            f"{prefix}/peakless": np.asarray(self.peakless, dtype=np.int64),
            f"{prefix}/largest": np.asarray(self.largest, dtype=np.float64),
            f"{prefix}/threshold": np.float64(np.nan if self.threshold is None else self.threshold),
            f"{prefix}/min_peaks": np.int64(self.min_peaks),
            f"{prefix}/ratio": np.float64(np.nan if self.ratio is None else self.ratio),
            f"{prefix}/threshold_any": np.float64(np.nan if self.threshold_any is None else self.threshold_any),
        }


def fit_evidence(W, H, col_sq, pattern_shape, beam=None, shift=None) -> dict:
    """Peaks, agreement and shift fractions of one fit (what :func:`orientation_count` needs).

    Returns a dict with ``agreement`` (k, k), ``n_peaks`` (k,), ``weight`` (k,)
    and ``shift`` (k, k) (:func:`~stemnmf.kselect.shift.shift_fraction`, computed
    unless given).
    """
    qy, qx = (int(v) for v in pattern_shape)
    H = np.asarray(H, dtype=np.float64)
    peaks = fit_peaks(W, H, col_sq, (qy, qx), beam)
    if shift is None:
        shift = shift_fraction(H.reshape(-1, qy, qx)) if H.shape[0] > 1 else np.zeros((H.shape[0], H.shape[0]))
    return {"agreement": peak_agreement(peaks), "n_peaks": peaks.sum(axis=1), "weight": component_weight(W, H),
            "shift": shift}  # fmt: skip


def orientation_evidence(
    X,
    factors,
    pattern_shape,
    *,
    ks=None,
    threshold: float = AGREEMENT_THRESHOLD,
    min_peaks: int = MIN_PEAKS,
    ratio: float | None = STRENGTH_RATIO,
    threshold_any: float | None = AGREEMENT_ANY,
    shift_threshold: float | None = SHIFT_THRESHOLD,
    shift_fractions: dict | None = None,
) -> OrientationEvidence:
    """:class:`OrientationEvidence` of the fits ``ks`` of a K-component loss scan (one pass over X).

    Parameters
    ----------
    X : array_like, shape (n_positions, n_features)
        Raw patterns on a linear scale, rows in C order of the scan.
    factors : mapping of int to (W, H)
        :attr:`KLoss.factors`.
    pattern_shape : (int, int)
    ks : iterable of int, optional
        The fits to examine (default all).
    threshold, min_peaks, ratio, threshold_any
        Of :func:`orientation_count`.
    shift_threshold : float or None
        Shifted copies (shift fraction at least this) count once too; None: not joined.
    shift_fractions : dict of int to (k, k) array, optional
        :func:`~stemnmf.kselect.shift.shift_fraction` of the fits, when already
        computed (:attr:`ShiftEvidence.fractions`).
    """
    qy, qx = (int(v) for v in pattern_shape)
    ks = sorted(int(k) for k in (factors if ks is None else ks) if int(k) in factors)
    for k in ks:
        if np.asarray(factors[k][1]).shape[1] != qy * qx:
            raise DataValueError(f"patterns of {np.asarray(factors[k][1]).shape[1]} features are not {qy} x {qx}")
    col_sq, mean = residual_columns(X, factors, ks)
    beam = direct_beam(mean.reshape(qy, qx))
    distinct, peakless, largest = [], [], []
    for k in ks:
        W, H = factors[k]
        ev = fit_evidence(W, H, col_sq[k], (qy, qx), beam, (shift_fractions or {}).get(k))
        linked = None if shift_threshold is None else ev["shift"] >= float(shift_threshold)
        distinct.append(orientation_count(ev["agreement"], ev["n_peaks"], ev["weight"], threshold=threshold,
                                          min_peaks=min_peaks, ratio=ratio, threshold_any=threshold_any,
                                          linked=linked))  # fmt: skip
        peakless.append(int((ev["n_peaks"] < int(min_peaks)).sum()))
        off = np.array(ev["agreement"], dtype=np.float64)
        np.fill_diagonal(off, 0.0)
        largest.append(float(off.max()))
    return OrientationEvidence(
        np.asarray(ks, dtype=np.int64), np.asarray(distinct, dtype=np.int64), np.asarray(peakless, dtype=np.int64),
        np.asarray(largest, dtype=np.float64), None if threshold is None else float(threshold), int(min_peaks),
        float(SHIFT_THRESHOLD if shift_threshold is None else shift_threshold), None if ratio is None else float(ratio),
        None if threshold_any is None else float(threshold_any),
    )  # fmt: skip
