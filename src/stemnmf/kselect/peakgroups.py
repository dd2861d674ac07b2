"""Evidence for k from the positions' own Bragg peaks, not from any NMF component.

Every other vote for k reads the fits of the K-component loss scan, so all of
them fail together where NMF fails: with many orientations on a small scan the
fits merge orientations (the loss bends early, the maps stay coherent) and the
votes fall below the truth together. This vote asks the data directly which
sets of reflections occur, and over how much of the scan.

1. **Blocks.** The scan is cut into ``block x block`` squares of positions and
   each square's patterns are summed (more counts per pattern; a domain of a
   few positions still fills a square). A scan of more than
   :data:`MAX_BLOCKS` blocks of 2 takes larger blocks, and patterns wider than
   :data:`MAX_SIDE` entries are binned to it (a reflection spans several
   entries at 128 x 128), which keeps the cost a few seconds.
2. **Peaks per block.** An entry of a block pattern is a peak when it stands
   ``sigmas`` Poisson deviations above its local median (``window x window``
   in the pattern): ``p - median > sigmas * sqrt(g * max(median, 1 g))``, with
   ``g`` the gain of :func:`stemnmf.kselect.noise.poisson_gain` (variance
   ``g`` times the mean, for a block ``g`` as for one position), and
   ``p - median`` at least ``relative`` times the block's largest excess
   outside the beam (at high dose the noise test alone keeps weak diffuse
   features that every block shares, and merges everything). The direct
   beam and every group of peak entries touching it are left out
   (:func:`stemnmf.kselect.orientation.direct_beam`). Each peak set is grown
   by ``grow`` entries, so that a pattern moved by a descan of an entry still
   agrees with itself. A block with fewer than ``min_peaks`` peak entries
   holds no reflection and takes no part.
3. **Groups.** Blocks are joined by average linkage on the Dice agreement of
   their peak sets (:func:`stemnmf.decompose.evidence.peak_agreement`) and the
   tree is cut where the mean agreement between two groups falls below
   ``agreement``: blocks of one orientation share their reflections, blocks of
   two orientations share few. Average linkage does not chain through a
   border: a line of blocks holding both peak sets does not join two domains
   (a wide continuum of blends does: docs/kselect.md, limits).
4. **Count.** The vote is the number of groups holding at least
   ``min_fraction`` of the blocks with peaks (and at least ``min_blocks``):
   border blocks and thickness steps form small groups of their own, an
   orientation fills squares.

Constructed truth (``tests/test_kselect_peakgroups.py``): N blocks of
positions with N distinct sparse peak sets give N; Poisson noise alone gives
1 (no group: the vote is never below 1). The defaults were chosen on the 96
seen scans of the test bed and tested on new seeds (docs/kselect.md, the
sixth rule).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from scipy.cluster import hierarchy

from stemnmf.decompose.evidence import peak_agreement
from stemnmf.errors import DataValueError
from stemnmf.kselect.orientation import direct_beam

__all__ = [
    "BLOCK",
    "GROUP_AGREEMENT",
    "MAX_BLOCKS",
    "MAX_SIDE",
    "MIN_BLOCK_FRACTION",
    "PEAK_SIGMAS",
    "RELATIVE",
    "PeakGroups",
    "block_patterns",
    "bin_patterns",
    "local_median",
    "block_peaks",
    "block_tree",
    "peak_scores",
    "threshold_peaks",
    "group_blocks",
    "peak_groups",
]

#: Positions per side of a block (the smallest; see :data:`MAX_BLOCKS`).
BLOCK = 2
#: Larger scans take larger blocks, so that there are at most about this many.
MAX_BLOCKS = 1600
#: Patterns are binned (summed) by an integer factor to at most this many entries a side.
MAX_SIDE = 64
#: Poisson deviations above the local median that make an entry a peak.
PEAK_SIGMAS = 5.0
#: A peak also stands at least this fraction of the block's strongest excess (outside the beam) above
#: its local median: at high dose the noise test alone keeps weak diffuse features every block shares.
RELATIVE = 0.1
#: Side of the local median window in the pattern.
PEAK_WINDOW = 7
#: Entries a peak set is grown by before two are compared.
GROW = 1
#: Fewest peak entries of a block that holds a reflection.
MIN_PEAKS = 8
#: Two groups join while the mean Dice agreement of their blocks' peak sets is at least this.
GROUP_AGREEMENT = 0.4
#: A group counts when it holds at least this fraction of the blocks with peaks ...
MIN_BLOCK_FRACTION = 0.01
#: ... and at least this many blocks.
MIN_BLOCKS = 2


@dataclasses.dataclass
class PeakGroups:
    """The groups of blocks whose own peaks agree.

    Attributes
    ----------
    vote : int
        Groups that count (at least 1).
    labels : numpy.ndarray, shape (by, bx), int64
        Group of every block (0: no peaks; groups numbered from 1 by size).
    sizes : numpy.ndarray, int64
        Blocks per group, largest first.
    n_peaks : numpy.ndarray, shape (by, bx), int64
        Peak entries per block (direct beam left out).
    settings : dict
    """

    vote: int
    labels: np.ndarray
    sizes: np.ndarray
    n_peaks: np.ndarray
    settings: dict

    def to_results(self, prefix: str = "/kselect/peakgroups") -> dict:
        """Results datasets under ``prefix`` (docs/kselect.md)."""
        return {
            f"{prefix}/vote": np.int64(self.vote),
            f"{prefix}/labels": np.asarray(self.labels, dtype=np.int64),
            f"{prefix}/sizes": np.asarray(self.sizes, dtype=np.int64),
            f"{prefix}/n_peaks": np.asarray(self.n_peaks, dtype=np.int64),
            f"{prefix}/settings": json.dumps(self.settings),
        }


def block_patterns(X, scan_shape, block: int = BLOCK) -> np.ndarray:
    """(by, bx, m) float64: the patterns of every ``block x block`` square of positions summed.

    Positions beyond the last whole square of a row or column are left out.
    """
    sy, sx = (int(v) for v in scan_shape)
    n, m = (int(v) for v in X.shape)
    b = int(block)
    if n != sy * sx or b < 1 or sy < b or sx < b:
        raise DataValueError(f"X with {n} rows does not fit a {sy} x {sx} scan in blocks of {b}")
    by, bx = sy // b, sx // b
    out = np.zeros((by, bx, m))
    for i in range(by):
        rows = np.asarray(X[i * b * sx : (i + 1) * b * sx]).reshape(b, sx, m)
        out[i] = rows[:, : bx * b].reshape(b, bx, b, m).sum(axis=(0, 2), dtype=np.float64)
    return out


def peak_scores(patterns, pattern_shape, gain: float, *, window: int = PEAK_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(excess, deviations), each (p, qy, qx): every entry above its local median (``window x window``).

    The excess is ``p - median``; the deviations divide it by ``sqrt(g * max(median, g))``, the Poisson
    noise of a background of that mean (at least one count's worth, ``g``).
    """
    qy, qx = (int(v) for v in pattern_shape)
    P = np.asarray(patterns, dtype=np.float64).reshape(-1, qy, qx)
    base = local_median(P, window)
    g = max(float(gain), 1e-12)
    excess = P - base
    return excess, excess / np.sqrt(g * np.maximum(base, g))


def local_median(P, window: int = PEAK_WINDOW, chunk: int = 32) -> np.ndarray:
    """(p, qy, qx): the median of every entry's ``window x window`` neighbourhood, edges repeated.

    The same numbers as ``ndimage.median_filter(P, size=(1, window, window), mode='nearest')``, by a
    partition of sliding windows (a third faster on 1,000 patterns of 64 x 64).
    """
    P = np.asarray(P, dtype=np.float64)
    w = int(window)
    h = w // 2
    padded = np.pad(P, ((0, 0), (h, w - 1 - h), (h, w - 1 - h)), mode="edge")
    out = np.empty_like(P)
    middle = (w * w - 1) // 2 if w % 2 else None
    for i in range(0, P.shape[0], int(chunk)):
        part = padded[i : i + int(chunk)]
        windows = sliding_window_view(part, (w, w), axis=(1, 2)).reshape(part.shape[0], P.shape[1], P.shape[2], w * w)
        if middle is None:
            out[i : i + int(chunk)] = np.median(windows, axis=-1)
        else:
            out[i : i + int(chunk)] = np.partition(windows, middle, axis=-1)[..., middle]
    return out


def threshold_peaks(scores, *, beam=None, sigmas: float = PEAK_SIGMAS, relative: float = RELATIVE,
                    grow: int = GROW) -> tuple[np.ndarray, np.ndarray]:
    """(peak sets grown by ``grow`` entries (p, m) bool, peak entries per pattern (p,)) of :func:`peak_scores`.

    A peak stands ``sigmas`` deviations and ``relative`` times the pattern's largest excess outside
    ``beam`` above its local median. ``beam`` (qy, qx) bool: entries of the direct beam; they and every
    group of peak entries touching them are left out before counting.
    """
    excess, deviations = scores
    peaks = np.asarray(deviations) > float(sigmas)
    if relative > 0:
        outside = excess if beam is None else np.where(np.asarray(beam)[None], -np.inf, excess)
        top = outside.reshape(outside.shape[0], -1).max(axis=1)
        peaks &= excess > float(relative) * top[:, None, None]
    if beam is not None and np.any(beam):
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)  # never across patterns
        labels, _ = ndimage.label(peaks, structure=structure)
        touching = np.unique(labels[peaks & np.asarray(beam)[None]])
        peaks &= ~np.isin(labels, touching[touching > 0])
        peaks &= ~np.asarray(beam)[None]
    counts = peaks.reshape(peaks.shape[0], -1).sum(axis=1)
    if grow > 0:
        peaks = ndimage.binary_dilation(peaks, structure=np.ones((1, 3, 3), bool), iterations=int(grow))
    return peaks.reshape(peaks.shape[0], -1), counts


def block_peaks(patterns, pattern_shape, gain: float, *, beam=None, sigmas: float = PEAK_SIGMAS,
                relative: float = RELATIVE, window: int = PEAK_WINDOW, grow: int = GROW) -> tuple[np.ndarray, np.ndarray]:
    """(peaks grown, peak counts) of a stack of patterns (p, m): :func:`peak_scores` then :func:`threshold_peaks`."""
    scores = peak_scores(patterns, pattern_shape, gain, window=window)
    return threshold_peaks(scores, beam=beam, sigmas=sigmas, relative=relative, grow=grow)


def peak_groups(
    X,
    scan_shape,
    pattern_shape,
    gain: float,
    *,
    block: int = BLOCK,
    sigmas: float = PEAK_SIGMAS,
    relative: float = RELATIVE,
    agreement: float = GROUP_AGREEMENT,
    min_fraction: float = MIN_BLOCK_FRACTION,
    min_blocks: int = MIN_BLOCKS,
    min_peaks: int = MIN_PEAKS,
    grow: int = GROW,
) -> PeakGroups:
    """Count the groups of scan blocks whose own Bragg peaks agree (module docstring).

    Parameters
    ----------
    X : array_like, shape (n_positions, n_features)
        Raw patterns on a linear scale of counts, rows in C order of the scan.
    scan_shape : (int, int)
    pattern_shape : (int, int)
        (qy, qx) with ``qy * qx == n_features``.
    gain : float
        Poisson gain of X (:func:`~stemnmf.kselect.noise.poisson_gain`).
    block, sigmas, relative, agreement, min_fraction, min_blocks, min_peaks, grow
        See the module docstring.

    Returns
    -------
    PeakGroups
    """
    qy, qx = (int(v) for v in pattern_shape)
    if qy * qx != int(X.shape[1]):
        raise DataValueError(f"patterns of {qy} x {qx} do not fit {X.shape[1]} features")
    n = int(X.shape[0])
    block = max(int(block), int(math.ceil(math.sqrt(n / MAX_BLOCKS))))
    blocks = block_patterns(X, scan_shape, block)
    by, bx = blocks.shape[:2]
    flat, (qy, qx) = bin_patterns(blocks.reshape(by * bx, -1), (qy, qx), MAX_SIDE)
    beam = direct_beam(flat.mean(axis=0).reshape(qy, qx))
    peaks, counts = block_peaks(flat, (qy, qx), gain, beam=beam, sigmas=sigmas, relative=relative, grow=grow)
    vote, labels, sizes = group_blocks(peaks, counts, agreement=agreement, min_fraction=min_fraction,
                                       min_blocks=min_blocks, min_peaks=min_peaks)  # fmt: skip
    settings = {"block": int(block), "sigmas": float(sigmas), "relative": float(relative), "window": PEAK_WINDOW,
                "grow": int(grow),
                "min_peaks": int(min_peaks), "agreement": float(agreement), "min_fraction": float(min_fraction),
                "min_blocks": int(min_blocks)}  # fmt: skip
    return PeakGroups(vote, labels.reshape(by, bx), sizes, counts.reshape(by, bx), settings)


def bin_patterns(patterns, pattern_shape, max_side: int = MAX_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """(patterns summed over ``f x f`` entries, their shape), ``f`` the smallest integer factor that brings
    both sides to at most ``max_side`` (trailing entries left out); unchanged when ``f = 1``."""
    qy, qx = (int(v) for v in pattern_shape)
    f = max(1, int(math.ceil(max(qy, qx) / float(max_side))))
    P = np.asarray(patterns, dtype=np.float64)
    if f == 1:
        return P, (qy, qx)
    ny, nx = qy // f, qx // f
    P = P.reshape(-1, qy, qx)[:, : ny * f, : nx * f].reshape(-1, ny, f, nx, f).sum(axis=(2, 4))
    return P.reshape(P.shape[0], -1), (ny, nx)


def block_tree(peaks, counts, *, min_peaks: int = MIN_PEAKS):
    """(blocks with peaks, average-linkage tree on ``1 - Dice`` of their peak sets, or None for fewer than two)."""
    keep = np.flatnonzero(np.asarray(counts) >= int(min_peaks))
    if keep.size < 2:
        return keep, None
    distance = 1.0 - peak_agreement(np.asarray(peaks)[keep])
    np.fill_diagonal(distance, 0.0)
    return keep, hierarchy.linkage(_condensed(distance), method="average")


def group_blocks(peaks, counts, *, agreement: float = GROUP_AGREEMENT, min_fraction: float = MIN_BLOCK_FRACTION,
                 min_blocks: int = MIN_BLOCKS, min_peaks: int = MIN_PEAKS, tree=None):
    """(vote, group of every block (0: no peaks), blocks per group largest first) from the blocks' peak sets.

    ``tree``: the result of :func:`block_tree` for the same peaks, to cut one tree at several agreements.
    """
    counts = np.asarray(counts)
    keep, linkage = block_tree(peaks, counts, min_peaks=min_peaks) if tree is None else tree
    labels = np.zeros(counts.size, dtype=np.int64)
    if keep.size == 0:
        return 1, labels, np.zeros(0, np.int64)
    if linkage is None:
        cluster = np.ones(keep.size, dtype=np.int64)
    else:
        cluster = hierarchy.fcluster(linkage, t=1.0 - float(agreement), criterion="distance")
    ids, sizes = np.unique(cluster, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    renumber = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    renumber[ids[order]] = np.arange(1, ids.size + 1)
    labels[keep] = renumber[cluster]
    sizes = sizes[order].astype(np.int64)
    enough = max(int(min_blocks), int(math.ceil(float(min_fraction) * keep.size)))
    return max(1, int((sizes >= enough).sum())), labels, sizes


def _condensed(distance: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(distance.shape[0], k=1)
    return np.clip(distance[i, j], 0.0, None)
