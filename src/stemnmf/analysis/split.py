"""Regions from the data's own peaks: a region whose raw patterns show two peak sets is split.

NMF may give two grains one component (a grain stacked in a thicker one, or two
neighbours whose reflections it mixed); spatial refinement then cuts one region
over both. The raw patterns still tell them apart: inside the region, blocks of
``block x block`` positions are summed, each block's Bragg peaks are found
(``sigmas`` Poisson deviations above a local median, :mod:`stemnmf.kselect.peakgroups`),
and the blocks are grouped by the agreement of their peak sets with the
k-selection layer's own rule (average linkage cut at ``agreement``, and the
split test: parts that agree clearly less across than within and lie in two
places). Each group of at least ``min_size`` positions becomes a region; the
positions of blocks without a group (too few peaks, at the edge) go to the
nearest group. A part whose peaks are mostly (``contain``) among another part's
is a grain that goes on under the other (stacked along the beam): its region
keeps the other part's positions too, so they belong to both regions.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
from scipy import ndimage

from stemnmf.analysis.refine import Regions
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect.noise import poisson_gain
from stemnmf.kselect.orientation import direct_beam
from stemnmf.kselect.peakgroups import MAX_SIDE, bin_patterns, block_peaks, group_blocks, peak_scores, threshold_peaks

__all__ = ["PeakBlocks", "peak_blocks", "split_regions", "SPLIT_AGREEMENT", "SPLIT_ABSENT"]

log = logging.getLogger(__name__)

#: Blocks of a region join while the mean Dice agreement of their peak sets is at least this.
SPLIT_AGREEMENT = 0.7
#: A reflection of one part is missing from another where it stands less than this fraction as high there.
SPLIT_ABSENT = 0.1
#: A part at least this much inside other regions is a grain found already: it stays in the region.
COVERED = 0.5
#: Parts stay apart when one shows at least this many peak entries that the other lacks.
MIN_NEW = 4
_GAIN_ROWS = 64
_CHUNK = 256  # blocks whose peaks are found at once (each block on its own: the result does not depend on it)


@dataclasses.dataclass
class PeakBlocks:
    """Summed raw patterns of ``block x block`` squares of positions, with the data's Poisson gain.

    Attributes
    ----------
    patterns : numpy.ndarray
        (by, bx, m) float64: each square's patterns summed (binned to ``pattern_shape``).
    pattern_shape : (int, int)
    gain : float
        Variance over mean of the counts (:func:`stemnmf.kselect.noise.poisson_gain`).
    block : int
    """

    patterns: np.ndarray
    pattern_shape: tuple[int, int]
    gain: float
    block: int = 2
    _peaks: tuple | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _excess: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def excess(self) -> np.ndarray:
        """(by * bx, m) float32: every block's excess over its local median
        (:func:`stemnmf.kselect.peakgroups.peak_scores`), found once."""
        if self._excess is None:
            flat = self.patterns.reshape(-1, self.patterns.shape[-1])
            parts = [peak_scores(flat[i : i + _CHUNK], self.pattern_shape, self.gain)[0].reshape(-1, flat.shape[1])
                     for i in range(0, flat.shape[0], _CHUNK)]  # fmt: skip
            self._excess = np.concatenate(parts).astype(np.float32)
        return self._excess

    def peak_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """(grown peak sets (by * bx, m) bool, peak entries per block (by * bx,)) of every block, found once:
        :func:`stemnmf.kselect.peakgroups.block_peaks` with the direct beam of the mean block left out."""
        if self._peaks is None:
            flat = self.patterns.reshape(-1, self.patterns.shape[-1])
            beam = direct_beam(flat.mean(axis=0, dtype=np.float64).reshape(self.pattern_shape))
            parts = [block_peaks(flat[i : i + _CHUNK], self.pattern_shape, self.gain, beam=beam)
                     for i in range(0, flat.shape[0], _CHUNK)]  # fmt: skip
            self._peaks = (np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts]))
        return self._peaks

    @property
    def nbytes(self) -> int:
        return int(self.patterns.nbytes)

    @classmethod
    def from_positions(cls, X, scan_shape, pattern_shape, gain=None, block: int = 2) -> PeakBlocks:
        """From (n, m) patterns of every position (raw counts, C order); the gain is estimated when not given."""
        sy, sx = (int(v) for v in scan_shape)
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] != sy * sx:
            raise DataValueError(f"patterns of shape {X.shape} do not fit a {sy} x {sx} scan")
        flat, shape = bin_patterns(X, pattern_shape, MAX_SIDE)
        if gain is None:
            rows = min(sy, _GAIN_ROWS)
            gain = poisson_gain(flat[: rows * sx], (rows, sx)).gain
        b = int(block)
        by, bx = sy // b, sx // b
        summed = flat.reshape(sy, sx, -1)[: by * b, : bx * b].reshape(by, b, bx, b, -1).sum(axis=(1, 3))
        return cls(summed, tuple(shape), float(gain), b)


def peak_blocks(dataset, *, block: int = 2) -> PeakBlocks:
    """:class:`PeakBlocks` of a dataset in one pass over its scan rows (patterns binned to 64 a side,
    summed in float32: exact for counts below 2**24 per entry)."""
    sy, sx = dataset.scan_shape
    qy, qx = dataset.pattern_shape
    b = int(block)
    by, bx = sy // b, sx // b
    f = max(1, int(math.ceil(max(qy, qx) / float(MAX_SIDE))))
    ny, nx = qy // f, qx // f
    out = np.zeros((by, bx, ny * nx), np.float32)
    sample = []
    for y in range(by * b):
        row = np.asarray(dataset.read_rows(y, y + 1))[0, :, : ny * f, : nx * f]
        binned = row.reshape(sx, ny, f, nx, f).sum(axis=(2, 4), dtype=np.float32).reshape(sx, -1)
        if y < _GAIN_ROWS:
            sample.append(binned)
        out[y // b] += binned[: bx * b].reshape(bx, b, -1).sum(axis=1)
    sample = np.concatenate(sample)
    gain = poisson_gain(sample, (sample.shape[0] // sx, sx)).gain
    return PeakBlocks(out, (ny, nx), float(gain), b)


def split_regions(regions, blocks: PeakBlocks, *, min_size: int = 25, agreement: float = SPLIT_AGREEMENT,
                  contain: bool = True, absent: float = SPLIT_ABSENT, min_peaks: int | None = None):
    """Split every region whose blocks form several groups of agreeing peak sets (module docstring).

    Parameters
    ----------
    regions : Regions
    blocks : PeakBlocks
    min_size : int, default 25
        A part needs this many positions (and whole blocks) to become a region.
    agreement : float, default :data:`SPLIT_AGREEMENT`
    contain : float or None, default :data:`SPLIT_CONTAIN`
        A part whose peak set lies this much inside a larger peak set of another part keeps that
        part's positions too; None: parts never overlap.
    min_peaks : int, optional
        Fewest peak entries of a block that takes part (default the k-selection layer's).

    Returns
    -------
    Regions
        A split region is replaced by its parts, in place, each with the region's component and
        its weights.
    """
    if not 0.0 < float(agreement) <= 1.0:
        raise ConfigError(f"split agreement {agreement} must be in (0, 1]", "give a Dice agreement such as 0.4")
    b = int(blocks.block)
    by, bx = blocks.patterns.shape[:2]
    sy, sx = regions.maps.shape[1:]
    if by != sy // b or bx != sx // b:
        raise DataValueError(f"peak blocks {by} x {bx} of {b} do not fit the {sy} x {sx} scan")
    options = {} if min_peaks is None else {"min_peaks": int(min_peaks)}
    peaks, counts = blocks.peak_sets()
    enough = int(math.ceil(int(min_size) / float(b * b)))
    maps, comp = [], []
    masks = regions.masks
    count = masks.sum(axis=0)
    for r in range(regions.n_regions):
        others = (count - masks[r]) > 0
        parts = _parts(masks[r], others, blocks, peaks, counts, (by, bx), enough, int(min_size), contain, options,
                       agreement, float(absent))  # fmt: skip
        for part in parts:
            maps.append(np.where(part, regions.maps[r], np.float32(0)))
            comp.append(regions.component[r])
    if len(maps) == regions.n_regions:
        return regions
    log.debug("peak split: %d regions into %d", regions.n_regions, len(maps))
    out = np.asarray(maps, np.float32).reshape(len(maps), sy, sx)
    return Regions(out, np.asarray(comp, np.int32), regions.thresholds, regions.coherence)


def _parts(mask, others, blocks, peaks, counts, grid, enough, min_size, contain, options, agreement, absent) -> list:
    """The masks one region becomes: itself, or its groups of agreeing blocks that show reflections the
    others lack."""
    by, bx = grid
    b = blocks.block
    inside = mask[: by * b, : bx * b].reshape(by, b, bx, b).all(axis=(1, 3)).ravel()
    if inside.sum() < 2 * enough:
        return [mask]
    local = np.where(inside, counts, 0)
    _, labels, sizes = group_blocks(peaks, local, agreement=agreement, min_fraction=0.0, min_blocks=enough,
                                    **options)  # fmt: skip
    groups = np.flatnonzero(sizes >= enough) + 1
    if groups.size < 2:
        return [mask]
    block_group = np.where(np.isin(labels, groups), labels, 0).reshape(by, bx)
    full = np.zeros(mask.shape, np.int64)
    full[: by * b, : bx * b] = np.repeat(np.repeat(block_group, b, axis=0), b, axis=1)
    pieces = [p for _, p in _pieces(full, mask, groups, min_size)]
    pieces = _uncovered(pieces, others, mask)
    if len(pieces) < 2:
        return [mask]
    return _distinct(pieces, blocks, inside.reshape(by, bx), contain, absent)


def _uncovered(pieces, others, mask) -> list:
    """The pieces less than :data:`COVERED` inside other regions (grains found already), the region's
    other positions given to the nearest of them."""
    keep = [p for p in pieces if np.count_nonzero(p & others) < COVERED * np.count_nonzero(p)]
    if len(keep) < 2 or len(keep) == len(pieces):
        return keep
    labels = np.zeros(mask.shape, np.int64)
    for i, p in enumerate(keep, start=1):
        labels[p] = i
    _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    nearest = np.where(mask, labels[iy, ix], 0)
    return [nearest == i for i in range(1, len(keep) + 1)]


def _piece_patterns(pieces, blocks, inside, far: int = 2):
    """(mean block pattern of each piece, of each piece away from each other piece) over the whole
    blocks inside it; the second (p, p, m): piece j's blocks at least ``far`` blocks from piece i."""
    b = blocks.block
    by, bx = inside.shape
    flat = blocks.patterns.reshape(by * bx, -1)
    own = [(p[: by * b, : bx * b].reshape(by, b, bx, b).all(axis=(1, 3)) & inside) for p in pieces]
    n = len(pieces)
    means = np.zeros((n, flat.shape[1]))
    sizes = np.array([int(o.sum()) for o in own])
    away = np.full((n, n, flat.shape[1]), np.nan)
    for i, oi in enumerate(own):
        if oi.any():
            means[i] = flat[oi.ravel()].mean(axis=0)
        distance = ndimage.distance_transform_cdt(~oi, metric="chessboard") if oi.any() else None
        for j, oj in enumerate(own):
            if i != j and distance is not None:
                sel = oj & (distance >= far)
                if sel.any():
                    away[i, j] = flat[sel.ravel()].mean(axis=0)
    return means, sizes, away


def _new_reflections(pattern, n, other, shape, gain, beam, absent) -> int:
    """Peak entries of ``pattern`` (the mean of ``n`` blocks; peaks of their sum) where ``other`` (a mean
    block pattern) stands less than ``absent`` times as far above its local median."""
    peaks, _ = threshold_peaks(peak_scores(pattern[None] * n, shape, gain), beam=beam, grow=0)
    excess = peak_scores(np.stack([pattern, other]), shape, gain)[0].reshape(2, -1)
    return int(np.count_nonzero(peaks[0] & (excess[1] < absent * excess[0])))


def _distinct(pieces, blocks, inside, contain, absent) -> list:
    """Pieces joined back unless one shows reflections the other lacks; a piece whose reflections the
    other shows too (and not the reverse) is a grain going on under the other, and takes its positions."""
    means, sizes, away = _piece_patterns(pieces, blocks, inside)
    beam = direct_beam(blocks.patterns.reshape(-1, blocks.patterns.shape[-1]).mean(axis=0).reshape(blocks.pattern_shape))
    n = len(pieces)
    new = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            if i != j and np.isfinite(away[i, j]).all():
                new[i, j] = _new_reflections(means[i], sizes[i], away[i, j], blocks.pattern_shape, blocks.gain,
                                             beam, absent) >= MIN_NEW  # fmt: skip
    group = list(range(n))
    for i in range(n):
        for j in range(i + 1, n):
            if not new[i, j] and not new[j, i]:
                gi, gj = group[i], group[j]
                group = [gi if g == gj else g for g in group]
    ids = sorted(set(group))
    if len(ids) < 2:
        return [np.logical_or.reduce(pieces)]
    masks = {g: np.logical_or.reduce([p for p, h in zip(pieces, group) if h == g]) for g in ids}
    out = []
    for g in ids:
        grown = masks[g].copy()
        if contain:
            for h in ids:  # g's grain goes on under h: h shows g's reflections, g lacks some of h's
                members_g = [i for i in range(n) if group[i] == g]
                members_h = [j for j in range(n) if group[j] == h]
                if h != g and all(new[j, i] for i in members_g for j in members_h) and not any(
                        new[i, j] for i in members_g for j in members_h):
                    grown |= masks[h]
        out.append(grown)
    return out


def _pieces(seed, mask, groups, min_size) -> list:
    """(group, mask) of every 8-connected piece of a group of at least ``min_size`` positions, the
    region's other positions given to the nearest piece."""
    kept = np.zeros(mask.shape, np.int64)
    owners = []
    for g in groups:
        lab, n = ndimage.label(seed == g, structure=np.ones((3, 3), bool))
        for piece in range(1, n + 1):
            owners.append(g)
            kept[lab == piece] = len(owners)
    out = [(g, i) for i, g in enumerate(owners, start=1)]
    while out:
        _, (iy, ix) = ndimage.distance_transform_edt(kept == 0, return_indices=True)
        nearest = np.where(mask, kept[iy, ix], 0)
        big = [(g, i) for g, i in out if np.count_nonzero(nearest == i) >= min_size]
        if len(big) == len(out):
            return [(g, nearest == i) for g, i in out]
        kept = np.where(np.isin(kept, [i for _, i in big]), kept, 0)  # small pieces go to the nearest kept one
        out = big
    return []
