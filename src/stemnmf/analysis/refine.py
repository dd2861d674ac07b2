"""Spatial refinement (Bruefach et al. 2022): components split into connected regions.

Each component map is thresholded (Yen by default, Otsu as an option, or any
positive weight), split into connected regions (8-connectivity), and regions
smaller than ``min_size`` positions are dropped. Each surviving region becomes
its own refined cluster, keeping the component's weights inside it and 0
outside. With ``clean=True`` every position goes to the region of largest
weight there, and regions left smaller than ``min_size`` are dropped.

Two additions (see docs/analysis.md): components whose map is mostly noise
(spatial coherence, Moran's I, below ``min_coherence``) give no regions, and
each region's edge can be placed where its weight falls to ``edge_fraction``
of the region's peak (the threshold, set to separate a component from the
noise floor, otherwise keeps the blurred tail around every grain).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
from scipy import ndimage

from stemnmf.decompose.prune import spatial_coherence  # the decompose layer drops incoherent components too
from stemnmf.errors import ConfigError, DataValueError

__all__ = [
    "Regions",
    "refine_regions",
    "merge_regions",
    "drop_fragments",
    "region_labels",
    "threshold_map",
    "spatial_coherence",
    "METHODS",
    "REGION_AGREEMENT",
]

log = logging.getLogger(__name__)

METHODS = ("yen", "otsu", None)
#: Touching regions of different components join when their patterns' peaks agree at least this much
#: (Dice, :func:`stemnmf.decompose.evidence.peak_agreement`); see docs/analysis.md.
REGION_AGREEMENT = 0.65
_EIGHT = np.ones((3, 3), dtype=bool)
_NBINS = 256


@dataclasses.dataclass
class Regions:
    """Refined clusters.

    Attributes
    ----------
    maps : numpy.ndarray
        (r, sy, sx) float32: the component's weights inside each region, 0 outside.
    component : numpy.ndarray
        (r,) int32: the component each region came from.
    thresholds : numpy.ndarray
        (k,) float32: the threshold applied to each component map (NaN where the
        map was constant, or not coherent enough, and gave no region).
    coherence : numpy.ndarray or None
        (k,) float32: spatial coherence of each component map
        (:func:`spatial_coherence`), when a minimum was applied.
    """

    maps: np.ndarray
    component: np.ndarray
    thresholds: np.ndarray
    coherence: np.ndarray | None = None

    @property
    def n_regions(self) -> int:
        return int(self.maps.shape[0])

    @property
    def masks(self) -> np.ndarray:
        """(r, sy, sx) bool: positions of each region."""
        return self.maps > 0

    @property
    def sizes(self) -> np.ndarray:
        """(r,) int32: positions in each region."""
        return np.count_nonzero(self.masks, axis=(1, 2)).astype(np.int32)


def threshold_map(image: np.ndarray, method: str | None = "yen", floor: float = 0.0) -> float:
    """The threshold of one component map: positions with weight above it are kept.

    ``'yen'`` and ``'otsu'`` use scikit-image's criteria on the map's 256-bin
    histogram; the threshold is the *upper edge* of the chosen bin, so that
    ``image > threshold`` splits the positions exactly into the two classes the
    criterion compared (scikit-image returns the bin centre, which lets half of
    that bin leak into the upper class). None keeps any weight above ``floor``.
    A constant map gives NaN.
    """
    image = np.asarray(image, dtype=np.float32)
    if method is None:
        return float(floor)
    if not np.isfinite(image).all():
        raise DataValueError("a component map holds NaN or Inf", "check the NMF output")
    if image.max() <= image.min():
        return float("nan")
    from skimage.filters import threshold_otsu, threshold_yen

    func = {"yen": threshold_yen, "otsu": threshold_otsu}[method]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(func(image, nbins=_NBINS))
    value += 0.5 * (float(image.max()) - float(image.min())) / _NBINS
    return max(value, float(floor))


def _check_method(method):
    if isinstance(method, str):
        method = method.lower()
        if method == "none":
            method = None
    if method not in METHODS:
        raise ConfigError(f"unknown refinement method {method!r}", "use 'yen', 'otsu' or None")
    return method


def refine_regions(
    maps,
    *,
    method: str | None = "yen",
    min_size: int = 25,
    clean: bool = False,
    closing: int = 0,
    floor: float = 0.0,
    edge_fraction: float = 0.0,
    min_coherence: float | None = None,
) -> Regions:
    """Split component maps into connected regions above a threshold.

    Parameters
    ----------
    maps : array (k, sy, sx)
        Component maps (non-negative weights).
    method : {'yen', 'otsu', None}, default 'yen'
        Threshold of each map; None keeps every weight above ``floor``.
    min_size : int, default 25
        Regions with fewer positions are dropped.
    clean : bool, default False
        Give each position to the region of largest weight there; regions left
        with fewer than ``min_size`` positions are then dropped.
    closing : int, default 0
        Side of a square footprint for a binary closing of each thresholded map
        before labelling (0 = none; 2 closes one-position gaps). Positions the
        closing adds keep their (below-threshold) weights.
    floor : float, default 0
        Weights at or below this value never belong to a region.
    edge_fraction : float, default 0
        Each region (after the size filter) keeps only its positions whose
        weight is at least this fraction of the region's largest weight; it
        is dropped if fewer than ``min_size`` positions remain. 0 keeps the
        threshold's regions (the paper).
    min_coherence : float, optional
        Components whose map has a spatial coherence (:func:`spatial_coherence`)
        below this give no region. None: every component (the paper).

    Returns
    -------
    Regions
        Ordered by component, then by the region's first position in C order.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise DataValueError(f"component maps must be shaped (k, sy, sx), got {maps.shape}")
    method = _check_method(method)
    min_size = int(min_size)
    if min_size < 1:
        raise ConfigError(f"min_size={min_size} must be at least 1", "give a region size in positions, e.g. 25")
    closing = int(closing)
    if closing < 0:
        raise ConfigError(f"closing={closing} must not be negative")
    edge_fraction = float(edge_fraction)
    if not 0.0 <= edge_fraction < 1.0:
        raise ConfigError(f"edge_fraction={edge_fraction} must lie in [0, 1)", "give a fraction of the region's peak, e.g. 0.2")
    k = maps.shape[0]
    thresholds = np.full(k, np.nan, np.float32)
    coherence = None if min_coherence is None else spatial_coherence(maps)
    out_maps, out_comp = [], []
    for c in range(k):
        image = maps[c]
        if coherence is not None and not coherence[c] >= float(min_coherence):
            continue
        t = threshold_map(image, method, floor)
        thresholds[c] = t
        if not np.isfinite(t):
            continue
        binary = image > t
        if closing > 1:
            footprint = np.ones((closing, closing), dtype=bool)
            binary = ndimage.binary_closing(binary, structure=footprint, border_value=0) | binary
        labelled, n = ndimage.label(binary, structure=_EIGHT)
        if n == 0:
            continue
        sizes = np.bincount(labelled.ravel(), minlength=n + 1)
        for lab in np.flatnonzero(sizes[1:] >= min_size) + 1:
            region = labelled == lab
            if edge_fraction > 0:
                region &= image >= np.float32(edge_fraction) * image[region].max()
                if np.count_nonzero(region) < min_size:
                    continue
            out_maps.append(np.where(region, image, np.float32(0)))
            out_comp.append(c)
    sy, sx = maps.shape[1:]
    region_maps = np.asarray(out_maps, np.float32).reshape(len(out_maps), sy, sx)
    component = np.asarray(out_comp, np.int32)
    if clean and region_maps.shape[0]:
        region_maps, component = _clean(region_maps, component, min_size)
    log.debug("refinement (%s): %d regions from %d components", method, region_maps.shape[0], k)
    return Regions(region_maps, component, thresholds, coherence)


def _clean(region_maps: np.ndarray, component: np.ndarray, min_size: int):
    """Each position to the region of largest weight; drop regions left too small."""
    best = region_maps.argmax(axis=0)
    top = region_maps.max(axis=0)
    r = region_maps.shape[0]
    keep_pos = (np.arange(r)[:, None, None] == best[None]) & (top[None] > 0)
    cleaned = np.where(keep_pos, region_maps, np.float32(0))
    sizes = keep_pos.reshape(r, -1).sum(axis=1)
    keep = sizes >= min_size
    return np.ascontiguousarray(cleaned[keep]), component[keep]


def merge_regions(regions: Regions, agreement, *, threshold: float = REGION_AGREEMENT, gap: int = 1) -> Regions:
    """Join touching or overlapping regions whose components' patterns are one grain's.

    Two regions of different components join when they touch or overlap (one
    within ``gap`` positions of the other, 8-connected) and their components'
    ``agreement`` is at least ``threshold``. Groups grow from the most
    agreeing pair; two groups join only when every pair of components across
    them agrees (no chaining of two grains through a third). Two regions of one
    component are never joined directly: separate pieces of one map are
    separate grains of one orientation.

    Parameters
    ----------
    regions : Regions
    agreement : array (k, k)
        Same-grain evidence between components, e.g. ``IterativeNMF.peak_agreement_``.
    threshold : float, default :data:`REGION_AGREEMENT`
    gap : int, default 1
        Regions whose positions lie this many positions apart or less touch.

    Returns
    -------
    Regions
        A joined region's map is the sum of its members' maps and its
        component that of its largest member (by weight sum); in the order of
        each group's first member.
    """
    agreement = np.asarray(agreement, np.float64)
    k = regions.thresholds.shape[0]
    if agreement.shape != (k, k):
        raise DataValueError(f"agreement must be ({k}, {k}) for {k} components, got {agreement.shape}")
    if int(gap) < 1:
        raise ConfigError(f"gap={gap} must be at least 1")
    if not 0.0 < float(threshold) <= 1.0:
        raise ConfigError(f"region agreement {threshold} must be in (0, 1]", "give a Dice agreement such as 0.65")
    r, comp = regions.n_regions, regions.component
    masks = regions.masks
    grown = [ndimage.binary_dilation(m, structure=_EIGHT, iterations=int(gap)) for m in masks]
    edges = []
    for a in range(r):
        for b in range(a + 1, r):
            score = agreement[comp[a], comp[b]]
            if comp[a] != comp[b] and score >= threshold and (grown[a] & masks[b]).any():
                edges.append((-score, a, b))
    group = {a: [a] for a in range(r)}
    for _, a, b in sorted(edges):
        ga, gb = group[a], group[b]
        if ga is gb or not all(agreement[comp[i], comp[j]] >= threshold for i in ga for j in gb):
            continue
        ga.extend(gb)
        for j in gb:
            group[j] = ga
    groups = sorted({id(g): sorted(g) for g in group.values()}.values())
    if len(groups) == r:
        return regions
    weight = regions.maps.reshape(r, -1).sum(axis=1)
    maps = np.stack([regions.maps[g].sum(axis=0) for g in groups]).astype(np.float32)
    component = np.array([comp[max(g, key=lambda i: weight[i])] for g in groups], np.int32)
    log.debug("region merging: %d regions joined into %d", r, len(groups))
    return Regions(maps, component, regions.thresholds, regions.coherence)


def drop_fragments(regions: Regions, size: int) -> Regions:
    """Drop every region of fewer than ``size`` positions that lies at least half inside another region.

    Such a fragment adds a region to a grain that another region already
    covers; the price is the small grains stacked under a larger one, whose
    own regions are fragments too (docs/analysis.md). ``size`` 0 keeps all.
    """
    size = int(size)
    if size < 0:
        raise ConfigError(f"fragment size {size} must not be negative", "give a region size in positions, e.g. 50")
    r = regions.n_regions
    if size == 0 or r < 2:
        return regions
    masks = regions.masks.reshape(r, -1)
    sizes = masks.sum(axis=1)
    shared = masks.astype(np.float32) @ masks.T.astype(np.float32)
    np.fill_diagonal(shared, 0)
    keep = ~((sizes < size) & (2 * shared.max(axis=1) >= sizes))
    if keep.all():
        return regions
    log.debug("fragments: %d of %d regions dropped", r - int(keep.sum()), r)
    return Regions(np.ascontiguousarray(regions.maps[keep]), regions.component[keep], regions.thresholds,
                   regions.coherence)


def region_labels(region_maps) -> np.ndarray:
    """Region of largest weight at each position, (sy, sx) int32, -1 in none."""
    region_maps = np.asarray(region_maps)
    if region_maps.shape[0] == 0:
        return np.full(region_maps.shape[1:], -1, np.int32)
    best = region_maps.argmax(axis=0).astype(np.int32)
    return np.where(region_maps.max(axis=0) > 0, best, -1).astype(np.int32)
