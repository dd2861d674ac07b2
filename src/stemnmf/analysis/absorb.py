"""Fragments of a grain absorbed by the region of that grain, by the raw data's reflections (issue 16).

Thickness fringes make NMF give one grain several components, and spatial
refinement then cuts one region per piece. A piece is told from another grain
by the raw patterns: a region that touches another region and whose summed
patterns show **no reflection that the neighbour's data lack** is a piece of
the neighbour's grain and joins its region. Missing: the peak test of the
k-selection layer (:func:`stemnmf.kselect.peakgroups.peak_scores`,
``PEAK_SIGMAS`` Poisson deviations and ``RELATIVE`` of the strongest, the
direct beam left out) finds the region's reflections in the sum of its blocks;
the neighbour's blocks at least ``far`` blocks from the region (by default
those not touching it) show one
when their mean excess over the local median stands
:data:`~stemnmf.decompose.evidence.PRESENCE_SIGMAS` standard errors above zero
(:func:`~stemnmf.decompose.evidence.shown_entries`, the grain recovery's
test). A thickness change weakens or strengthens a grain's own reflections,
which the neighbour's mean still shows; a grain of another orientation, or a
grain stacked on the neighbour, adds reflections where the neighbour has
none, and its region stays.

Regions that cannot be judged stay as they are: fewer than ``min_peaks``
peak entries (no reflection to compare: the test would pass on nothing),
no whole block inside, or fewer than ``min_rows`` blocks of the neighbour
clear of the region.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
from scipy import ndimage

from stemnmf.analysis.refine import Regions
from stemnmf.analysis.split import PeakBlocks
from stemnmf.decompose.evidence import PRESENCE_SIGMAS, shown_entries
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect.orientation import direct_beam
from stemnmf.kselect.peakgroups import peak_scores, threshold_peaks

__all__ = ["absorb_fragments", "fragment_evidence", "ABSORB_MIN_NEW", "ABSORB_MIN_PEAKS", "ABSORB_MIN_ROWS",
           "ABSORB_FAR"]

log = logging.getLogger(__name__)

#: A region stays apart from a neighbour when it shows at least this many peak entries the neighbour lacks
#: (chosen on the tuning films, bench/RESULTS-quality.md, session 31; ``analyze`` leaves the absorption off).
ABSORB_MIN_NEW = 4
#: Fewest peak entries of a region that can be judged (fewer: it stays).
ABSORB_MIN_PEAKS = 4
#: Fewest blocks of the neighbour, clear of the region, whose data can be judged.
ABSORB_MIN_ROWS = 3
#: The neighbour's blocks at least this many blocks from any block the region touches (1: not touching it).
ABSORB_FAR = 1
_EIGHT = np.ones((3, 3), bool)


def _block_masks(mask: np.ndarray, b: int, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(blocks wholly inside the mask, blocks touching it), each (by, bx) bool."""
    by, bx = grid
    part = mask[: by * b, : bx * b].reshape(by, b, bx, b)
    return part.all(axis=(1, 3)), part.any(axis=(1, 3))


class _Judge:
    """The new-reflection test between regions, on one set of peak blocks (block excesses computed once)."""

    def __init__(self, blocks: PeakBlocks, *, sigmas: float, far: int):
        self.blocks = blocks
        self.flat = blocks.patterns.reshape(-1, blocks.patterns.shape[-1])
        self.excess = blocks.excess()
        self.beam = direct_beam(self.flat.mean(axis=0, dtype=np.float64).reshape(blocks.pattern_shape))
        self.sigmas, self.far = float(sigmas), int(far)
        self.grid = blocks.patterns.shape[:2]

    def peaks(self, mask: np.ndarray) -> np.ndarray | None:
        """(m,) bool peak entries of the summed blocks wholly inside ``mask``; None without any."""
        inside, _ = _block_masks(mask, self.blocks.block, self.grid)
        if not inside.any():
            return None
        total = self.flat[inside.ravel()].sum(axis=0, dtype=np.float64)[None]
        peaks, _ = threshold_peaks(peak_scores(total, self.blocks.pattern_shape, self.blocks.gain), beam=self.beam,
                                   grow=0)  # fmt: skip
        return peaks[0]

    def shown(self, mask: np.ndarray, clear_of: np.ndarray, min_rows: int) -> np.ndarray | None:
        """(m,) bool entries the blocks of ``mask`` at least ``far`` blocks clear of ``clear_of`` show; None
        with fewer than ``min_rows`` such blocks."""
        inside, _ = _block_masks(mask, self.blocks.block, self.grid)
        _, touched = _block_masks(clear_of, self.blocks.block, self.grid)
        near = ndimage.binary_dilation(touched, _EIGHT, iterations=self.far - 1) if self.far > 1 else touched
        rows = inside & ~near
        if rows.sum() < int(min_rows):
            return None
        return shown_entries(self.excess[rows.ravel()], self.sigmas)


def fragment_evidence(mask, neighbour, blocks: PeakBlocks, *, sigmas: float = PRESENCE_SIGMAS, far: int = ABSORB_FAR,
                      min_rows: int = ABSORB_MIN_ROWS) -> tuple[int, int] | None:
    """(peak entries of the region ``mask``, those the data of ``neighbour`` lack), or None when it cannot
    be judged (no whole block inside ``mask``, or too few blocks of ``neighbour`` clear of it).

    Parameters
    ----------
    mask, neighbour : (sy, sx) bool
    blocks : PeakBlocks
    sigmas : float, default PRESENCE_SIGMAS
    far : int, default ABSORB_FAR
        The neighbour's blocks at least this many blocks from any block the region touches.
    min_rows : int, default ABSORB_MIN_ROWS
    """
    judge = _Judge(blocks, sigmas=sigmas, far=far)
    return _evidence(judge, np.asarray(mask, bool), np.asarray(neighbour, bool), int(min_rows))


def _evidence(judge: _Judge, mask, neighbour, min_rows) -> tuple[int, int] | None:
    peaks = judge.peaks(mask)
    if peaks is None:
        return None
    shown = judge.shown(neighbour, mask, min_rows)
    if shown is None:
        return None
    return int(peaks.sum()), int((peaks & ~shown).sum())


def absorb_fragments(regions: Regions, blocks: PeakBlocks, *, min_new: int = ABSORB_MIN_NEW,
                     min_peaks: int = ABSORB_MIN_PEAKS, min_rows: int = ABSORB_MIN_ROWS,
                     sigmas: float = PRESENCE_SIGMAS, far: int = ABSORB_FAR, gap: int = 1,
                     mutual: bool = False) -> Regions:
    """Join every region that shows no reflection its touching neighbour lacks to that neighbour (module docstring).

    Regions are taken from the smallest up; a region that passes against several neighbours joins the one
    it shares most positions (its grown mask) with; the joined region is judged again as a whole. A
    region joins a smaller neighbour only when the neighbour also shows no reflection the region's data
    lack: a grain stacked on the region's grain shows the region's reflections and its own, and keeps
    its region.

    Parameters
    ----------
    regions : Regions
    blocks : PeakBlocks
        Summed raw patterns of the scan (:func:`stemnmf.analysis.peak_blocks`).
    min_new : int, default :data:`ABSORB_MIN_NEW`
        Peak entries the neighbour lacks that keep a region apart.
    min_peaks : int, default :data:`ABSORB_MIN_PEAKS`
    min_rows : int, default :data:`ABSORB_MIN_ROWS`
    sigmas : float, default PRESENCE_SIGMAS
    far : int, default ABSORB_FAR
    gap : int, default 1
        Regions this many positions apart or less touch.
    mutual : bool, default False
        Join only when the neighbour too shows no reflection the region's data lack (whatever the sizes).

    Returns
    -------
    Regions
        A joined region's map is the sum of the maps (as :func:`stemnmf.analysis.merge_regions`) and its
        component that of the larger by weight sum (as :func:`stemnmf.analysis.merge_regions`); the
        order of the neighbours is kept.
    """
    if int(min_new) < 1 or int(min_peaks) < 1 or int(gap) < 1 or int(far) < 1:
        raise ConfigError("min_new, min_peaks, gap and far must be at least 1", "e.g. absorb_fragments(r, b, min_new=1)")
    sy, sx = regions.maps.shape[1:]
    b = int(blocks.block)
    if blocks.patterns.shape[:2] != (sy // b, sx // b):
        raise DataValueError(f"peak blocks {blocks.patterns.shape[:2]} of {b} do not fit the {sy} x {sx} scan")
    if regions.n_regions < 2:
        return regions
    judge = _Judge(blocks, sigmas=sigmas, far=far)
    maps = [m for m in regions.maps]
    comp = [int(c) for c in regions.component]
    version = list(range(len(maps)))
    fresh = itertools.count(len(maps))
    cache: dict = {}
    joined = 0
    while True:
        target = _next_absorption(maps, version, cache, judge, int(min_new), int(min_peaks), int(min_rows), int(gap),
                                  bool(mutual))
        if target is None:
            break
        a, host = target
        if float(maps[a].sum()) > float(maps[host].sum()):
            comp[host] = comp[a]
        maps[host] = maps[host] + maps[a]
        version[host] = next(fresh)
        del maps[a], comp[a], version[a]
        joined += 1
    if not joined:
        return regions
    log.debug("fragments absorbed: %d regions into their neighbours, %d left", joined, len(maps))
    return Regions(np.asarray(maps, np.float32).reshape(len(maps), sy, sx), np.asarray(comp, np.int32),
                   regions.thresholds, regions.coherence)


def _next_absorption(maps, version, cache, judge, min_new, min_peaks, min_rows, gap, mutual) -> tuple[int, int] | None:
    """(region, the neighbour it joins) of the smallest region that passes, or None."""
    masks = [m > 0 for m in maps]
    sizes = [int(m.sum()) for m in masks]
    grown = [ndimage.binary_dilation(m, _EIGHT, iterations=gap) for m in masks]

    def passes(a, host) -> bool:  # a shows no reflection the host's data lack
        key = (version[a], version[host])
        if key not in cache:
            cache[key] = _evidence(judge, masks[a], masks[host], min_rows)
        found = cache[key]
        return found is not None and found[0] >= min_peaks and found[1] < min_new

    for a in np.argsort(sizes, kind="stable"):
        best, contact = None, 0
        for host in range(len(masks)):
            if host == a or not (grown[a] & masks[host]).any() or not passes(a, host):
                continue
            # into a smaller neighbour only when that one shows nothing new either (a grain stacked on
            # the region's grain shows the region's reflections and its own: the region is not its piece)
            if (mutual or sizes[host] < sizes[a]) and not passes(host, a):
                continue
            shared = int((grown[a] & masks[host]).sum())
            if shared > contact:
                best, contact = host, shared
        if best is not None:
            return int(a), best
    return None
