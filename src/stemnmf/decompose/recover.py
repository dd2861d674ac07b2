"""Recovering grains merged into the component of a grain around them (issue 16; docs/nmf.md).

After the merge loop a small grain stacked on a larger one is often held by
the larger grain's component: their merge was accepted by the shared
footprint, which one grain's thickness-fringe pieces need too. Each final
component (the *host*) is therefore split once more, on its own footprint
(positions where its map is at least 0.2 of its peak):

1. **Split**: the host's contribution plus the residual there, ``Y = w h +
   R``, is factorised at rank two (HALS from NNDSVD).
2. **Keep** one part as a new component only when all hold:

   * *significant*: the split lowers ``||X - WH||^2`` on the footprint by at
     least ``gain`` times the host's noise gate
     (:func:`~stemnmf.decompose.evidence.local_noise_gates`: what one spare
     component fits of pure noise there);
   * *coherent*: the part's map has a connected footprint of at least
     ``min_size`` positions holding at least half its weight;
   * *stacked*: the other part (the host) goes on under it: its mean weight
     there is at least ``continuity`` of its mean weight in a ring around it.
     Thickness-fringe pieces of one grain, and touching grains, give way to
     each other instead;
   * *new reflections*: at least ``min_peaks`` of the part's pattern peaks
     (:func:`~stemnmf.decompose.evidence.pattern_peaks`), and at least
     ``novelty`` of them or at least ``many_peaks``, are missing from the
     data on the rest of the host (its footprint, two positions clear of the
     part). Missing: the rest's mean excess over the local median (the peak
     test's background) lies within ``presence`` standard errors of zero. A
     grain of another orientation puts reflections where the grain around it
     has none; a thickness-fringe piece has its grain's own reflections, which
     the rest of the grain still shows, weaker or stronger. The part of a
     stacked grain also holds reflections of the host (or of another grain
     stacked in it) where the host goes on under it, which dilutes the share;
     ``many_peaks`` new reflections are evidence enough by their number.

The kept parts are appended to the model, which is then refitted
(:func:`~stemnmf.decompose.iterative.recover_grains`; up to ``rounds`` times:
a host holding two grains gives one per round).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from stemnmf.decompose._random import nndsvd_init
from stemnmf.decompose.blocks import RowBlocks, blas_limit
from stemnmf.decompose.evidence import (
    FOOTPRINT_FRACTION,
    MERGE_TOLERANCE,
    PEAK_SIGMAS,
    PEAK_WINDOW,
    PRESENCE_SIGMAS,
    local_noise_gates,
    pattern_peaks,
    shown_entries,
)

__all__ = [
    "RECOVER_GAIN",
    "RECOVER_MIN_SIZE",
    "RECOVER_NOVELTY",
    "RECOVER_MIN_PEAKS",
    "RECOVER_MANY_PEAKS",
    "RECOVER_PRESENCE",
    "RECOVER_CONTINUITY",
    "RECOVER_ROUNDS",
    "Recovery",
    "recover_candidates",
]

log = logging.getLogger(__name__)

#: A split must lower the squared residual on the host's footprint by this many of its noise gates.
RECOVER_GAIN = 3.0
#: Positions of the new map's largest connected footprint, at the least (and of the rest of the host).
RECOVER_MIN_SIZE = 25
#: Share of the new pattern's peaks that the rest of the host must lack.
RECOVER_NOVELTY = 0.5
#: New reflections (peaks the rest of the host lacks), at the least.
RECOVER_MIN_PEAKS = 2
#: New reflections that make a part new whatever share of its peaks they are.
RECOVER_MANY_PEAKS = 15
#: Standard errors above zero at which the rest's mean excess shows a reflection.
RECOVER_PRESENCE = PRESENCE_SIGMAS
#: The host's mean weight under the new map, as a share of its weight around it, at the least.
RECOVER_CONTINUITY = 0.5
#: Rounds of splitting and refitting, at the most (a round that keeps nothing ends them).
RECOVER_ROUNDS = 3
#: HALS iterations of the rank-two split.
SPLIT_ITER = 60
#: The ring around a new map in which the host's weight is compared: between these dilations.
RING = (1, 4)

_EIGHT = np.ones((3, 3), bool)


@dataclasses.dataclass
class Recovery:
    """A candidate split of one host component and the figures of its tests.

    Attributes
    ----------
    host : int
        The component split.
    w : (n,) float32
        The new map (zero off the host's footprint).
    h : (m,) float32
        The new pattern.
    gain : float
        Fall of the squared residual on the footprint, in noise gates.
    size : int
        Positions of the new map's largest connected footprint.
    continuity : float
        The host's mean weight under the new map over its mean weight around it.
    peaks, new_peaks : int
        Peaks of the new pattern, and those the rest of the host lacks.
    rest : int
        Positions of the rest of the host.
    part_gain : float
        Fall of the squared residual, in noise gates of the part's own
        positions (what one spare component fits of noise there).
    kept : bool
        Whether every test passed.
    """

    host: int
    w: np.ndarray
    h: np.ndarray
    gain: float
    size: int
    continuity: float
    peaks: int
    new_peaks: int
    rest: int
    part_gain: float
    kept: bool


def _largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of a 2-D mask (an empty mask: itself)."""
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _hals(Y: np.ndarray, W: np.ndarray, H: np.ndarray, n_iter: int = SPLIT_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Frobenius HALS of ``Y ~ W H`` from (W, H) (float64, small k)."""
    W, H = W.copy(), H.copy()
    for _ in range(n_iter):
        YHt, HHt = Y @ H.T, H @ H.T
        for i in range(W.shape[1]):
            if HHt[i, i] > 0:
                W[:, i] = np.maximum(W[:, i] + (YHt[:, i] - W @ HHt[:, i]) / HHt[i, i], 0)
        WtY, WtW = W.T @ Y, W.T @ W
        for i in range(W.shape[1]):
            if WtW[i, i] > 0:
                H[i] = np.maximum(H[i] + (WtY[i] - WtW[i] @ H) / WtW[i, i], 0)
    return W, H


def _top_two(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top two singular triplets of Y (U (r, 2), s (2,), Vt (2, m)), from the eigenvectors of ``Y^T Y``."""
    values, vectors = np.linalg.eigh(Y.T @ Y)
    order = np.argsort(values)[::-1][:2]
    s = np.sqrt(np.maximum(values[order], 0.0))
    Vt = vectors[:, order].T
    U = (Y @ Vt.T) / np.where(s > 0, s, 1.0)
    return U, s, Vt


def _present(Xr: np.ndarray, z: float) -> np.ndarray:
    """(m,) bool: entries whose mean excess over the local median of the rows ``Xr`` is ``z`` standard errors
    above zero (the median over ``PEAK_WINDOW`` neighbouring entries, as in :func:`pattern_peaks`)."""
    return shown_entries(Xr - ndimage.median_filter(Xr, size=(1, PEAK_WINDOW), mode="nearest"), z)


def _rows(X, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) of X (array or RowBlocks) as float64."""
    if not isinstance(X, RowBlocks):
        return np.asarray(X[rows], np.float64)
    out, done = [], 0
    for start, block in X:
        lo, hi = np.searchsorted(rows, [start, start + len(block)])
        if hi > lo:
            out.append(np.asarray(block[rows[lo:hi] - start], np.float64))
            done += hi - lo
    return np.concatenate(out) if out else np.zeros((0, 0))


def recover_candidates(
    X,
    Wt: np.ndarray,
    H: np.ndarray,
    scan_shape: tuple[int, int],
    col_sq: np.ndarray,
    row_sq: np.ndarray,
    *,
    gain: float = RECOVER_GAIN,
    min_size: int = RECOVER_MIN_SIZE,
    continuity: float = RECOVER_CONTINUITY,
    novelty: float = RECOVER_NOVELTY,
    min_peaks: int = RECOVER_MIN_PEAKS,
    presence: float = RECOVER_PRESENCE,
    many_peaks: int | None = RECOVER_MANY_PEAKS,
) -> list[Recovery]:
    """Split every component of the fit ``(Wt, H)`` of X in two and test the parts (module docstring).

    Parameters
    ----------
    X : (n, m) array or RowBlocks
        The data; rows are scan positions in C order of ``scan_shape``.
    Wt : (k, n), H : (k, m)
        The fit.
    scan_shape : (rows, cols)
    col_sq, row_sq : (m,), (n,)
        Squared residual norms of the columns and rows of ``X - WH``.
    gain, min_size, continuity, novelty, min_peaks, presence, many_peaks
        The tests (module docstring); ``many_peaks`` None: the share alone.

    Returns
    -------
    list of Recovery
        One per component whose footprint holds at least ``2 min_size``
        positions: the part that passes the tests (``kept``), else the part
        with more new reflections.
    """
    Wt64, H64 = np.asarray(Wt, np.float64), np.asarray(H, np.float64)
    n = Wt64.shape[1]
    sigma = np.sqrt(np.maximum(np.asarray(col_sq, np.float64), 0.0) / max(n, 1))
    top = Wt64.max(axis=1, initial=0.0)
    tests = dict(gain=gain, min_size=min_size, continuity=continuity, novelty=novelty, min_peaks=min_peaks,
                 presence=presence, many_peaks=many_peaks)
    with blas_limit(1):  # many small products and eigenproblems: a BLAS thread team only synchronises
        return [r for j in range(Wt64.shape[0])
                if (r := _candidate(X, Wt64, H64, j, top, sigma, row_sq, scan_shape, tests)) is not None]


def _candidate(X, Wt64, H64, j, top, sigma, row_sq, scan_shape, tests) -> Recovery | None:
    """The split of component j and its best part (None when its footprint is too small)."""
    min_size = tests["min_size"]
    foot = (Wt64[j] >= FOOTPRINT_FRACTION * top[j]) & (top[j] > 0)
    rows = np.flatnonzero(foot)
    if len(rows) < 2 * min_size:
        return None
    Xf = _rows(X, rows)
    R = Xf - Wt64[:, rows].T @ H64
    local = (R * R).sum(axis=0)[None, :]
    gate = float(local_noise_gates(np.asarray(row_sq, np.float64), local, foot[None, :], k=Wt64.shape[0],
                                   tolerance=MERGE_TOLERANCE)[0])
    Y = R + np.outer(Wt64[j, rows], H64[j])
    U, s, Vt = _top_two(Y)
    W0t, H0 = nndsvd_init(U, s, Vt)
    Ws, Hs = _hals(Y, np.asarray(W0t, np.float64).T, np.asarray(H0, np.float64))
    gate = max(gate, 1e-300)
    fall = (float((R * R).sum()) - float(((Y - Ws @ Hs) ** 2).sum())) / gate
    noise = (np.asarray(row_sq, np.float64)[rows], R * R, Wt64.shape[0], gate)
    parts = [_test(j, rows, Xf, Ws, Hs, new, fall, sigma, scan_shape, noise, **tests) for new in (0, 1)]
    return max(parts, key=lambda r: (r.kept, r.new_peaks))


def _test(j, rows, Xf, Ws, Hs, new, fall, sigma, scan_shape, noise_sq, *, gain, min_size, continuity, novelty, min_peaks,
          presence, many_peaks) -> Recovery:
    """The tests of part ``new`` of the split ``(Ws, Hs)`` of host j on its footprint ``rows``."""
    n, old = int(np.prod(scan_shape)), 1 - new
    w, a = np.zeros(n), np.zeros(n)
    w[rows], a[rows] = Ws[:, new], Ws[:, old]
    grid = _largest_part((w >= FOOTPRINT_FRACTION * w.max(initial=0.0)).reshape(scan_shape)) & (w > 0).reshape(
        scan_shape)
    part = grid.ravel()
    size = int(part.sum())
    coherent = size >= min_size and w[part].sum() >= 0.5 * w.sum()
    ring = (ndimage.binary_dilation(grid, _EIGHT, iterations=RING[1])
            & ~ndimage.binary_dilation(grid, _EIGHT, iterations=RING[0])).ravel() & (a > 0)
    around = float(a[ring].mean()) if ring.any() else 0.0
    carried = float(a[part].mean()) / around if size and around > 0 else 0.0
    # the rest of the host: its part of the footprint two positions clear of the new map
    near = ndimage.binary_dilation(grid, _EIGHT, iterations=2).ravel()[rows]
    rest = ~near & (Ws[:, old] >= FOOTPRINT_FRACTION * Ws[:, old].max(initial=0.0)) & (Ws[:, old] > 0)
    noise = sigma / max(float(np.linalg.norm(Ws[:, new])), 1e-300)
    peaks = pattern_peaks(Hs[new][None], noise[None], PEAK_SIGMAS)[0]
    shown = _present(Xf[rest], presence) if rest.sum() >= min_size else np.zeros_like(peaks)
    n_peaks, n_new = int(peaks.sum()), int((peaks & ~shown).sum())
    row_f, R2, k, gate = noise_sq
    if size:
        local = part[rows]
        pgate = float(local_noise_gates(row_f, R2[local].sum(axis=0)[None, :], local[None, :], k=k,
                                        tolerance=MERGE_TOLERANCE)[0])
        part_gain = fall * gate / max(pgate, 1e-300)
    else:
        part_gain = 0.0
    kept = bool(fall >= gain and coherent and carried >= continuity and rest.sum() >= min_size
                and n_new >= min_peaks
                and (n_new >= novelty * n_peaks or (many_peaks is not None and n_new >= many_peaks)))
    return Recovery(j, w.astype(np.float32), Hs[new].astype(np.float32), float(fall), size, carried, n_peaks, n_new,
                    int(rest.sum()), float(part_gain), kept)
