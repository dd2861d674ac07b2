"""Components that are pieces of another component's grain (issue 21; docs/nmf.md).

The new-reflection test of the grain recovery (:mod:`stemnmf.decompose.recover`),
read the other way. Component a is a *piece* of component b's grain when

* their footprints (positions where a map is at least
  :data:`~stemnmf.decompose.evidence.FOOTPRINT_FRACTION` of its peak) touch;
* a's pattern has at least ``min_peaks`` peaks
  (:func:`~stemnmf.decompose.evidence.pattern_peaks` at ``PEAK_SIGMAS``), and
  fewer than ``min_new`` of them are missing from the data on b's footprint
  ``far`` positions clear of a's (:func:`~stemnmf.decompose.evidence.shown_entries`,
  at least ``min_rows`` positions there): a thickness fringe of b's grain
  weakens or strengthens its reflections but b's data still show them; a
  grain of another orientation, or one stacked on b's, has reflections b
  lacks;
* a's footprint is not larger than b's, or b is a piece of a's grain too
  (a grain stacked on b's grain shows all of b's reflections and its own).

A component with too few peaks to judge stays. Each piece joins the touching
component of the largest shared border among those it is a piece of (chains
join into one group), each group becomes one component
(:func:`~stemnmf.decompose.evidence.merge_rank_one`) and the model is refitted
(:func:`stemnmf.decompose.iterative.absorb_pieces`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stemnmf.decompose.evidence import FOOTPRINT_FRACTION, PEAK_SIGMAS, PEAK_WINDOW, PRESENCE_SIGMAS, pattern_noise, \
    pattern_peaks, shown_entries
from stemnmf.decompose.recover import _rows

__all__ = ["ABSORB_MIN_NEW", "ABSORB_MIN_PEAKS", "ABSORB_MIN_ROWS", "piece_evidence", "piece_groups"]

#: A component stays apart when at least this many of its peaks are missing from the other's data.
ABSORB_MIN_NEW = 1
#: Fewest peaks of a component that can be judged.
ABSORB_MIN_PEAKS = 4
#: Fewest positions of the other component's footprint, clear of the piece, whose data can be judged.
ABSORB_MIN_ROWS = 25
_EIGHT = np.ones((3, 3), bool)


def piece_evidence(X, Wt, H, scan_shape, col_sq, *, presence: float = PRESENCE_SIGMAS, far: int = 2,
                   min_rows: int = ABSORB_MIN_ROWS, gap: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peaks (k,), new (k, k), contact (k, k)) of the fit ``(Wt, H)`` of X (module docstring).

    ``new[a, b]``: peaks of a's pattern missing from the data on b's footprint clear of a's (-1 where the
    footprints do not touch or too few positions are left); ``contact[a, b]``: positions of b's footprint
    within ``gap`` of a's.

    Parameters
    ----------
    X : (n, m) array or RowBlocks
    Wt : (k, n), H : (k, m)
    scan_shape : (rows, cols)
    col_sq : (m,)
        Squared residual norms of the columns of ``X - WH`` (the patterns' noise).
    """
    Wt64 = np.asarray(Wt, np.float64)
    k = Wt64.shape[0]
    top = Wt64.max(axis=1, initial=0.0)
    feet = [((Wt64[j] >= FOOTPRINT_FRACTION * top[j]) & (top[j] > 0)).reshape(scan_shape) for j in range(k)]
    peaks = pattern_peaks(H, pattern_noise(Wt64, col_sq), PEAK_SIGMAS)
    new = np.full((k, k), -1, np.int64)
    contact = np.zeros((k, k), np.int64)
    grown = [ndimage.binary_dilation(f, _EIGHT, iterations=int(gap)) for f in feet]
    clear = [ndimage.binary_dilation(f, _EIGHT, iterations=int(far)) for f in feet]
    covered = np.flatnonzero(np.logical_or.reduce(feet).ravel()) if k else np.zeros(0, np.int64)
    if covered.size == 0:
        return peaks.sum(axis=1), new, contact
    Xc = _rows(X, covered)  # every footprint's rows, their excess over the local median found once
    excess = (Xc - ndimage.median_filter(Xc, size=(1, PEAK_WINDOW), mode="nearest")).astype(np.float32)
    del Xc
    where = np.full(int(np.prod(scan_shape)), -1, np.int64)
    where[covered] = np.arange(len(covered))
    for a in range(k):
        for b in range(k):
            if a == b or not (grown[a] & feet[b]).any():
                continue
            contact[a, b] = int((grown[a] & feet[b]).sum())
            rows = np.flatnonzero((feet[b] & ~clear[a]).ravel())
            if len(rows) < int(min_rows) or not peaks[a].any():
                continue
            shown = shown_entries(excess[where[rows]], presence)
            new[a, b] = int((peaks[a] & ~shown).sum())
    return peaks.sum(axis=1), new, contact


def piece_groups(peaks, new, contact, sizes, *, min_new: int = ABSORB_MIN_NEW,
                 min_peaks: int = ABSORB_MIN_PEAKS) -> list[list[int]]:
    """Groups of components, each a grain and its pieces (module docstring), from :func:`piece_evidence`.

    Parameters
    ----------
    peaks : (k,), new : (k, k), contact : (k, k)
    sizes : (k,)
        Footprint sizes.

    Returns
    -------
    list of list of int
        Every component in exactly one group (sorted; groups ordered by their first member).
    """
    k = len(peaks)
    ok = (new >= 0) & (new < int(min_new)) & (np.asarray(peaks)[:, None] >= int(min_peaks))
    sizes = np.asarray(sizes)
    allowed = ok & ((sizes[:, None] <= sizes[None, :]) | ok.T)
    parent = list(range(k))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(k):
        hosts = np.flatnonzero(allowed[a])
        if hosts.size:
            b = int(hosts[np.argmax(contact[a, hosts])])
            parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(k):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])
