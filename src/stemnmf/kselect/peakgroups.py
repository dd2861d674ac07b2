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
4. **Split.** Inside a group, a join of two parts that each hold enough
   blocks to count is undone when both of two things hold: the mean
   agreement between the parts is below ``split_ratio`` times the mean
   agreement inside the tighter part (the parts' own agreement measures the
   noise, so the test needs no fixed level: two orientations near one zone
   axis agree 0.45-0.6 across and 0.8-1 within; the tighter, because a part
   that still holds several orientations agrees less inside), and the parts touch at fewer
   than ``split_contacts`` times the contacts (4-neighbour pairs of blocks)
   that a random division of the same blocks would have: two orientations
   are two places, a split by noise is salt and pepper. A part too small to
   count is set aside while the test goes on inside the other part, then
   joins the largest group found there.
5. **Count.** The vote is the number of groups holding at least
   ``min_fraction`` of the blocks with peaks (and at least ``min_blocks``):
   border blocks and thickness steps form small groups of their own, an
   orientation fills squares.

Constructed truth (``tests/test_kselect_peakgroups.py``): N blocks of
positions with N distinct sparse peak sets give N; Poisson noise alone gives
1 (no group: the vote is never below 1); two domains whose peak sets share
most reflections count two (step 4). The defaults were chosen on seen scans
of the test bed and tested on new seeds (docs/kselect.md, the sixth and
seventh rules).
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
    "SPLIT_CONTACTS",
    "SPLIT_RATIO",
    "PeakGroups",
    "block_patterns",
    "bin_patterns",
    "local_median",
    "block_peaks",
    "block_tree",
    "peak_scores",
    "threshold_peaks",
    "group_blocks",
    "split_tree",
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
#: A join inside a group is undone when the parts agree less than this times the tighter part's own agreement ...
SPLIT_RATIO = 0.75
#: ... and touch at fewer than this fraction of the contacts a random division of their blocks would have.
SPLIT_CONTACTS = 0.15


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
    split_ratio: float | None = SPLIT_RATIO,
    split_contacts: float = SPLIT_CONTACTS,
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
    block, sigmas, relative, agreement, min_fraction, min_blocks, min_peaks, grow, split_ratio, split_contacts
        See the module docstring; ``split_ratio=None`` leaves step 4 out (the sixth rule).

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
                                       min_blocks=min_blocks, min_peaks=min_peaks, grid_shape=(by, bx),
                                       split_ratio=split_ratio, split_contacts=split_contacts)  # fmt: skip
    settings = {"block": int(block), "sigmas": float(sigmas), "relative": float(relative), "window": PEAK_WINDOW,
                "grow": int(grow),
                "min_peaks": int(min_peaks), "agreement": float(agreement), "min_fraction": float(min_fraction),
                "min_blocks": int(min_blocks),
                "split_ratio": None if split_ratio is None else float(split_ratio),
                "split_contacts": float(split_contacts)}  # fmt: skip
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
                 min_blocks: int = MIN_BLOCKS, min_peaks: int = MIN_PEAKS, tree=None, grid_shape=None,
                 split_ratio: float | None = SPLIT_RATIO, split_contacts: float = SPLIT_CONTACTS):
    """(vote, group of every block (0: no peaks), blocks per group largest first) from the blocks' peak sets.

    ``tree``: the result of :func:`block_tree` for the same peaks, to cut one tree at several agreements.
    ``grid_shape``: (by, bx) of the blocks in the scan, for the split test (step 4 of the module
    docstring); without it, or with ``split_ratio=None``, the tree is cut at ``agreement`` only.
    """
    counts = np.asarray(counts)
    keep, linkage = block_tree(peaks, counts, min_peaks=min_peaks) if tree is None else tree
    labels = np.zeros(counts.size, dtype=np.int64)
    if keep.size == 0:
        return 1, labels, np.zeros(0, np.int64)
    enough = max(int(min_blocks), int(math.ceil(float(min_fraction) * keep.size)))
    if linkage is None:
        cluster = np.ones(keep.size, dtype=np.int64)
    elif grid_shape is None or split_ratio is None:
        cluster = hierarchy.fcluster(linkage, t=1.0 - float(agreement), criterion="distance")
    else:
        edges = _contacts(keep, grid_shape)
        cluster = split_tree(linkage, edges, agreement=agreement, enough=enough, ratio=split_ratio,
                             contacts=split_contacts)  # fmt: skip
    ids, sizes = np.unique(cluster, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    renumber = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    renumber[ids[order]] = np.arange(1, ids.size + 1)
    labels[keep] = renumber[cluster]
    sizes = sizes[order].astype(np.int64)
    return max(1, int((sizes >= enough).sum())), labels, sizes


def split_tree(linkage, edges, *, agreement: float = GROUP_AGREEMENT, enough: int = MIN_BLOCKS,
               ratio: float = SPLIT_RATIO, contacts: float = SPLIT_CONTACTS) -> np.ndarray:
    """Group of every leaf (n,) int64 of an average-linkage tree on ``1 - agreement``, cut top-down.

    A node is cut when its two children agree less than ``agreement``, or when both hold at least
    ``enough`` leaves, agree less than ``ratio`` times the larger of their own mean agreements, and
    share fewer than ``contacts`` times the ``edges`` (pairs of leaf indices, scan neighbours) a
    random division of their leaves would give them. A child with fewer than ``enough`` leaves beside
    one with more is set aside while the test goes on in the other, then joins the largest group
    found there (so without a split the groups are those of the plain cut).
    """
    Z = np.asarray(linkage, dtype=np.float64)
    n = Z.shape[0] + 1
    size = np.ones(2 * n - 1, dtype=np.int64)
    total = np.zeros(2 * n - 1)  # sum of the agreements of all pairs of leaves below a node
    for i, (a, b, height, _) in enumerate(Z):
        a, b = int(a), int(b)
        size[n + i] = size[a] + size[b]
        total[n + i] = total[a] + total[b] + (1.0 - height) * size[a] * size[b]

    def inside(j):
        return total[j] / (0.5 * size[j] * (size[j] - 1)) if size[j] > 1 else 1.0

    groups, aside, stack = [], [], [2 * n - 2]
    while stack:
        j = stack.pop()
        if j < n:
            groups.append(j)
            continue
        a, b = int(Z[j - n, 0]), int(Z[j - n, 1])
        between = 1.0 - Z[j - n, 2]
        if between < agreement:
            stack += [a, b]
        elif min(size[a], size[b]) >= enough:
            if between < ratio * max(inside(a), inside(b)) and _contact_ratio(Z, a, b, edges) < contacts:
                stack += [a, b]
            else:
                groups.append(j)
        elif max(size[a], size[b]) >= enough:
            small, big = (a, b) if size[a] < size[b] else (b, a)
            aside.append((small, big))
            stack.append(big)
        else:
            groups.append(j)
    cluster = np.zeros(n, dtype=np.int64)
    for g, j in enumerate(groups, start=1):
        cluster[_leaves(Z, j)] = g
    for small, big in reversed(aside):  # a part set aside joins the largest group of its sibling
        host = cluster[_leaves(Z, big)]
        cluster[_leaves(Z, small)] = np.bincount(host[host > 0]).argmax()
    return cluster


def _leaves(Z, j) -> np.ndarray:
    n = Z.shape[0] + 1
    out, stack = [], [int(j)]
    while stack:
        k = stack.pop()
        if k < n:
            out.append(k)
        else:
            stack += [int(Z[k - n, 0]), int(Z[k - n, 1])]
    return np.asarray(out, dtype=np.int64)


def _contact_ratio(Z, a, b, edges) -> float:
    """Contacts between the leaves of a and b over those of a random division of their leaves (0: none)."""
    la, lb = _leaves(Z, a), _leaves(Z, b)
    side = np.zeros(Z.shape[0] + 1, dtype=np.int8)
    side[la], side[lb] = 1, 2
    if len(edges) == 0:
        return 0.0
    x, y = side[edges[:, 0]], side[edges[:, 1]]
    within = (x > 0) & (y > 0)
    if not within.any():
        return 0.0
    p = la.size / float(la.size + lb.size)
    return float(np.count_nonzero(within & (x != y))) / within.sum() / (2.0 * p * (1.0 - p))


def _contacts(keep, grid_shape) -> np.ndarray:
    """(e, 2) int64: pairs of indices into ``keep`` of blocks that are 4-neighbours in the scan."""
    by, bx = (int(v) for v in grid_shape)
    index = np.full(by * bx, -1, dtype=np.int64)
    index[np.asarray(keep)] = np.arange(len(keep))
    grid = index.reshape(by, bx)
    pairs = np.concatenate([np.stack([grid[:, :-1].ravel(), grid[:, 1:].ravel()], axis=1),
                            np.stack([grid[:-1, :].ravel(), grid[1:, :].ravel()], axis=1)])  # fmt: skip
    return pairs[(pairs >= 0).all(axis=1)]


def _condensed(distance: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(distance.shape[0], k=1)
    return np.clip(distance[i, j], 0.0, None)
