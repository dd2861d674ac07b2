"""The analysis stage: from NMF factors to maps, regions, patterns and scores.

:func:`analyze` is the single entry the pipeline calls; it returns an
:class:`Analysis` whose :meth:`Analysis.to_results` gives every dataset of the
stage by its path in the results file.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
from scipy import sparse

from stemnmf.analysis.absorb import absorb_fragments
from stemnmf.analysis.maps import as_weights, cluster_labels, component_maps, presence, typical_weights
from stemnmf.analysis.overlap import (
    DEFAULT_THRESHOLDS,
    check_thresholds,
    overlap_level,
    overlap_maps,
    overlap_pairs,
    overlap_ratio,
)
from stemnmf.analysis.patterns import dissimilarity, mean_patterns, one_hot, raw_vs_nmf, vacuum_mask
from stemnmf.analysis.refine import (
    REGION_AGREEMENT,
    Regions,
    drop_fragments,
    merge_regions,
    refine_regions,
    region_labels,
    spatial_coherence,
)
from stemnmf.analysis.regions import region_confidence, region_table
from stemnmf.analysis.split import SPLIT_AGREEMENT, PeakBlocks, peak_blocks, split_regions
from stemnmf.analysis.scores import Scores, score_clusters
from stemnmf.decompose.prune import MIN_COHERENCE as PRUNE_COHERENCE
from stemnmf.engine import Engine
from stemnmf.errors import ConfigError, DataValueError, ResultsError
from stemnmf.kselect import representative_patterns
from stemnmf.kselect.peakgroups import MAX_SIDE

__all__ = ["Analysis", "analyze", "score_results", "DISSIMILARITY_DTYPE", "EDGE_FRACTIONS", "MIN_COHERENCE"]

log = logging.getLogger(__name__)

#: Default region edge (fraction of each region's peak weight) per feature
#: representation; see docs/analysis.md ("Spatial refinement") for how they were set.
EDGE_FRACTIONS = {"aa": 0.22, "bd": 0.15, "rv": 0.05}
#: Components whose map is less spatially coherent than this give no refined region (the value
#: below which ``IterativeNMF(min_coherence=...)`` drops a component: :mod:`stemnmf.decompose.prune`).
MIN_COHERENCE = PRUNE_COHERENCE

#: Fields of ``/analysis/dissimilarity``: one row per cluster (components, then regions).
DISSIMILARITY_DTYPE = np.dtype(
    [
        ("cluster", np.int32),
        ("source", "U9"),
        ("index", np.int32),
        ("component", np.int32),
        ("n_positions", np.int32),
        ("weight_sum", np.float32),
        ("dissimilarity", np.float32),
    ]
)


@dataclasses.dataclass
class Analysis:
    """Everything the analysis stage found. Arrays are NumPy; optional parts are None.

    Attributes
    ----------
    maps : (k, sy, sx) float32
        Component maps (W reshaped).
    typical_weight : (k,) float32
        Median weight of each component where it is the largest.
    labels : (sy, sx) int32
        Argmax component, -1 where none is significant.
    n_positions : (k,) int32
        Positions labelled with each component.
    n_per_position : (sy, sx) int32
        Components present at each position.
    significance, presence : float
        Fractions of the typical weight used for labels and for presence.
    overlap_ratio : (sy, sx) float32
    overlap_thresholds : (t,) float32
    overlap_maps : (t, sy, sx) bool
    overlap_level : (sy, sx) int32
        Number of thresholds the ratio reaches (the colour-coded map).
    overlap_pairs : structured (p,)
        See :func:`stemnmf.analysis.overlap_pairs`.
    overlap_pair_map : (sy, sx) int32
    vacuum : (sy, sx) bool or None
        Positions treated as vacuum.
    coherence : (k,) float32 or None
        Spatial coherence (Moran's I) of each component map.
    edge_fraction : float
        Region edges at this fraction of each region's peak weight (0: none).
    regions : Regions or None
        Refined clusters, when refinement ran.
    refine : str or None
        The refinement threshold method.
    region_table : structured (r,) or None
    region_labels : (sy, sx) int32 or None
    mean_patterns : (k, qy, qx) float32 or None
        Mean pattern of the positions labelled with each component.
    weighted_mean_patterns : (k, qy, qx) float32 or None
        ``sum_i w_ic x_i / sum_i w_ic`` over the positions where the component is present.
    representative_patterns : (k, qy, qx) float32 or None
    representative_kind : str
        ``'basis x largest weight'`` or ``'weighted mean'``.
    region_mean_patterns : (r, qy, qx) float32 or None
        Weighted mean pattern of each region.
    component_dissimilarity : (k,) float32 or None
    region_dissimilarity : (r,) float32 or None
    dissimilarity_map : (sy, sx) float32 or None
        Deviation of each pattern from its label's mean pattern.
    raw_vs_nmf : structured (k,) or None
        IQA metrics between mean and representative patterns (raw features).
    scores : Scores or None
        Scores against ground truth, when truth was given.
    """

    maps: np.ndarray
    typical_weight: np.ndarray
    labels: np.ndarray
    n_positions: np.ndarray
    n_per_position: np.ndarray
    significance: float
    presence: float
    overlap_ratio: np.ndarray
    overlap_thresholds: np.ndarray
    overlap_maps: np.ndarray
    overlap_level: np.ndarray
    overlap_pairs: np.ndarray
    overlap_pair_map: np.ndarray
    vacuum: np.ndarray | None = None
    coherence: np.ndarray | None = None
    edge_fraction: float = 0.0
    regions: Regions | None = None
    refine: str | None = None
    region_table: np.ndarray | None = None
    region_labels: np.ndarray | None = None
    mean_patterns: np.ndarray | None = None
    weighted_mean_patterns: np.ndarray | None = None
    representative_patterns: np.ndarray | None = None
    representative_kind: str = ""
    region_mean_patterns: np.ndarray | None = None
    component_dissimilarity: np.ndarray | None = None
    region_dissimilarity: np.ndarray | None = None
    dissimilarity_map: np.ndarray | None = None
    component_weight_sums: np.ndarray | None = None
    raw_vs_nmf: np.ndarray | None = None
    scores: Scores | None = None

    @property
    def n_components(self) -> int:
        return int(self.maps.shape[0])

    @property
    def scan_shape(self) -> tuple[int, int]:
        return tuple(self.maps.shape[1:])

    def dissimilarity_table(self) -> np.ndarray | None:
        """One row per cluster (components, then regions): the dissimilarity distribution."""
        if self.component_dissimilarity is None:
            return None
        k = self.n_components
        r = 0 if self.regions is None else self.regions.n_regions
        table = np.zeros(k + r, DISSIMILARITY_DTYPE)
        table["cluster"] = np.arange(k + r)
        table["source"][:k] = "component"
        table["index"][:k] = np.arange(k)
        table["component"][:k] = np.arange(k)
        table["n_positions"][:k] = self.n_positions
        if self.component_weight_sums is not None:
            table["weight_sum"][:k] = self.component_weight_sums
        table["dissimilarity"][:k] = self.component_dissimilarity
        if r:
            table["source"][k:] = "region"
            table["index"][k:] = np.arange(r)
            table["component"][k:] = self.regions.component
            table["n_positions"][k:] = self.regions.sizes
            table["weight_sum"][k:] = self.regions.maps.reshape(r, -1).sum(axis=1)
            table["dissimilarity"][k:] = self.region_dissimilarity
        return table

    def to_results(self) -> dict[str, Any]:
        """``{path: array_or_str}`` for every output of the stage (see docs/analysis.md)."""
        out: dict[str, Any] = {
            "/components/maps": self.maps.astype(np.float32),
            "/components/typical_weight": self.typical_weight.astype(np.float32),
            "/components/n_positions": self.n_positions.astype(np.int32),
            "/labels": self.labels.astype(np.int32),
            "/clusters/n_per_position": self.n_per_position.astype(np.int32),
            "/clusters/significance": np.float32(self.significance),
            "/clusters/presence": np.float32(self.presence),
            "/overlap/ratio": self.overlap_ratio.astype(np.float32),
            "/overlap/thresholds": self.overlap_thresholds.astype(np.float32),
            "/overlap/maps": self.overlap_maps.astype(bool),
            "/overlap/level": self.overlap_level.astype(np.int32),
            "/overlap/pairs": self.overlap_pairs,
            "/overlap/pair_map": self.overlap_pair_map.astype(np.int32),
        }
        if self.vacuum is not None:
            out["/clusters/vacuum"] = self.vacuum.astype(bool)
        if self.coherence is not None:
            out["/components/coherence"] = self.coherence.astype(np.float32)
        if self.regions is not None:
            out["/regions/maps"] = self.regions.maps.astype(np.float32)
            out["/regions/table"] = self.region_table
            out["/regions/labels"] = self.region_labels.astype(np.int32)
            out["/regions/component_thresholds"] = self.regions.thresholds.astype(np.float32)
            out["/regions/method"] = str(self.refine)
            out["/regions/edge_fraction"] = np.float32(self.edge_fraction)
            if self.region_mean_patterns is not None:
                out["/regions/mean_patterns"] = self.region_mean_patterns.astype(np.float32)
        optional = {
            "/components/mean_patterns": self.mean_patterns,
            "/components/weighted_mean_patterns": self.weighted_mean_patterns,
            "/components/representative_patterns": self.representative_patterns,
            "/components/dissimilarity": self.component_dissimilarity,
            "/analysis/dissimilarity_map": self.dissimilarity_map,
        }
        for path, value in optional.items():
            if value is not None:
                out[path] = np.asarray(value, np.float32)
        if self.representative_patterns is not None:
            out["/components/representative_kind"] = self.representative_kind
        table = self.dissimilarity_table()
        if table is not None:
            out["/analysis/dissimilarity"] = table
        if self.raw_vs_nmf is not None:
            out["/components/raw_vs_nmf"] = self.raw_vs_nmf
        if self.scores is not None:
            out.update(self.scores.to_results("/scores"))
        return out


def _binning_factor(feature_shape, pattern_shape):
    fy, fx = feature_shape
    qy, qx = pattern_shape
    if fy <= 0 or fx <= 0 or qy % fy or qx % fx:
        return None
    return qy // fy, qx // fx


def _representative(W, H, pattern_shape, detector_shape):
    """Basis pattern x largest weight, on the detector grid; None if H is not a pattern."""
    H = np.asarray(H, np.float32)
    if pattern_shape is None:
        if detector_shape is None or H.shape[1] != detector_shape[0] * detector_shape[1]:
            log.warning(
                "raw-feature patterns of %d values do not match the detector %s; give pattern_shape",
                H.shape[1],
                detector_shape,
            )
            return None
        pattern_shape = detector_shape
    pattern_shape = tuple(int(n) for n in pattern_shape)
    if H.shape[1] != pattern_shape[0] * pattern_shape[1]:
        raise ConfigError(
            f"pattern_shape {pattern_shape} does not hold the {H.shape[1]} features of H",
            "give the shape of the binned raw patterns",
        )
    rep = np.asarray(representative_patterns(W, H, pattern_shape), np.float32)
    if detector_shape is None or pattern_shape == tuple(detector_shape):
        return rep
    factor = _binning_factor(pattern_shape, detector_shape)
    if factor is None:
        log.warning(
            "binned patterns %s do not divide the detector %s; representative patterns are the weighted means",
            pattern_shape,
            detector_shape,
        )
        return None
    return np.repeat(np.repeat(rep, factor[0], axis=1), factor[1], axis=2)


def analyze(
    W,
    H=None,
    scan_shape: tuple[int, int] | None = None,
    *,
    dataset=None,
    feature: str = "raw",
    pattern_shape: tuple[int, int] | None = None,
    scan_step: float | None = None,
    engine=None,
    overlap_thresholds=DEFAULT_THRESHOLDS,
    refine: str | None = "yen",
    min_region_size: int = 25,
    clean: bool = False,
    closing: int = 0,
    significance: float = 0.25,
    presence_threshold: float | None = None,
    vacuum="auto",
    truth=None,
    min_coherence: float | None = MIN_COHERENCE,
    edge_fraction="auto",
    peak_agreement=None,
    region_agreement: float | None = REGION_AGREEMENT,
    fragment_size: int = 0,
    peak_split: float | None = None,
    region_peaks="auto",
    absorb: int = 0,
) -> Analysis:
    """Turn NMF factors into cluster, overlap and region maps, patterns and scores.

    Parameters
    ----------
    W : array (n_positions, k)
        NMF weights, positions in C order of the scan.
    H : array (k, n_features), optional
        NMF components; needed for representative patterns of raw features.
    scan_shape : (sy, sx), optional
        Default: the dataset's.
    dataset : Dataset4D, optional
        The calibrated patterns. With it: mean, weighted mean and
        representative patterns, region mean patterns, dissimilarity scores and
        the raw-versus-NMF comparison (two streamed passes over the data).
    feature : str, default 'raw'
        The feature representation of H. For ``'raw'`` the representative pattern
        is the basis pattern times its largest weight
        (:func:`stemnmf.kselect.representative_patterns`); otherwise the weighted
        mean pattern.
    pattern_shape : (py, px), optional
        Shape of H's patterns for raw features when binned (default: the detector).
    scan_step : float, optional
        nm between positions (default: the dataset's calibration).
    engine : Engine, optional
        Where the passes over the data run.
    overlap_thresholds : sequence of float, default (0.75, 0.8, 0.85, 0.9, 0.95)
    refine : {'yen', 'otsu', None}, default 'yen'
        Spatial refinement threshold; None skips refinement.
    min_region_size : int, default 25
        Regions with fewer positions are dropped.
    clean : bool, default False
        Give each position to the region of largest weight.
    closing : int, default 0
        Binary closing of each thresholded map before labelling (0 = none).
    min_coherence : float or None, default 0.5
        Components whose map has a spatial coherence (Moran's I,
        :func:`stemnmf.analysis.spatial_coherence`) below this give no
        refined region: their maps are more noise than structure. None:
        every component (the paper).
    edge_fraction : float or 'auto', default 'auto'
        Each refined region keeps the positions where its weight is at least
        this fraction of its peak. 'auto': :data:`EDGE_FRACTIONS` for
        ``feature`` (the first of a '+' combination; 0 for others); 0: the
        threshold's regions (the paper).
    significance : float, default 0.25
        Labels are -1 where the largest weight is below this fraction of the
        component's typical weight.
    presence_threshold : float, optional
        Fraction of the typical weight above which a component is present (for
        components per position, weighted means, dissimilarity and component
        scores); default ``significance``.
    vacuum : array of bool (sy, sx), 'auto' or None, default 'auto'
        Positions that look like vacuum: unlabelled, no component present, and
        left out of refinement. ``'auto'`` finds them from the dataset with
        :func:`stemnmf.analysis.vacuum_mask` (one more streamed pass; nothing
        without a dataset); None assumes no vacuum.
    truth : Truth or array (n_grains, sy, sx), optional
        Ground truth; adds scores of the regions (or, without refinement, of the
        present components).
    peak_agreement : array (k, k), optional
        Same-grain evidence between the components (``IterativeNMF.peak_agreement_``).
        With it, touching or overlapping regions of components agreeing at
        least ``region_agreement`` become one region
        (:func:`stemnmf.analysis.merge_regions`); without it, or with
        ``region_agreement=None``, regions stay as cut.
    region_agreement : float or None, default 0.65
    fragment_size : int, default 0
        Regions of fewer positions lying at least half inside another region
        are dropped (:func:`stemnmf.analysis.drop_fragments`); 0 keeps them.
    peak_split : float or None, default None
        Split regions whose raw patterns form groups of blocks agreeing below this
        (:func:`stemnmf.analysis.split_regions`); None: no split.
    region_peaks : PeakBlocks, 'auto' or None, default 'auto'
        The summed raw patterns that ``peak_split`` and ``absorb`` read; 'auto': from the dataset (one
        more pass), nothing without one.
    absorb : int, default 0
        With ``region_peaks`` (or a dataset): join a region that shows fewer than this many peak entries its touching neighbour's data lack to
        the neighbour (a thickness-fringe piece of its grain; :func:`stemnmf.analysis.absorb_fragments`
        with ``min_new=absorb``), after the merge; 0: no absorption (the default: it lost visible grains on held-out films; 4 is the
        setting chosen on the tuning films, ``ABSORB_MIN_NEW``).

    Returns
    -------
    Analysis
    """
    scan_shape, scan_step = _scan_geometry(dataset, scan_shape, scan_step)
    W = as_weights(W, scan_shape)
    k = W.shape[1]
    presence_threshold = significance if presence_threshold is None else presence_threshold
    thresholds = check_thresholds(overlap_thresholds)
    if dataset is not None and engine is None:
        engine = Engine()
    vacuum_map = _vacuum_map(vacuum, dataset, engine, scan_shape)
    typical = typical_weights(W)
    member = presence(W, threshold=presence_threshold, vacuum=vacuum_map, typical=typical)
    result = _clusters(W, scan_shape, typical, member, significance=significance, presence_threshold=presence_threshold,
                       thresholds=thresholds, vacuum_map=vacuum_map, refine=refine)
    result.edge_fraction = _edge_fraction(edge_fraction, feature)
    if refine is not None:
        merge = None if peak_agreement is None or region_agreement is None else (peak_agreement, region_agreement)
        split = absorbing = None
        if int(absorb) < 0:
            raise ConfigError(f"absorb={absorb} must not be negative", "give 0 (off) or a count of peak entries, e.g. 1")
        if peak_split is not None or absorb:
            blocks = _region_peaks(region_peaks, dataset, engine)
            split = None if blocks is None or peak_split is None else (blocks, float(peak_split))
            absorbing = None if blocks is None or not absorb else (blocks, int(absorb))
        _refine(result, H, scan_step=scan_step, min_region_size=min_region_size, clean=clean, closing=closing,
                min_coherence=min_coherence, merge=merge, fragment_size=fragment_size, split=split,
                absorb=absorbing)
    if dataset is not None:
        _patterns(result, dataset, W, H, member, feature, pattern_shape, engine)
    if truth is not None:
        if result.regions is not None:
            cluster_maps, name = result.regions.maps, "regions"
        else:
            cluster_maps, name = member.T.reshape(k, *scan_shape), "components"
        result.scores = score_clusters(
            cluster_maps, truth, labels=result.labels, region_labels=result.region_labels, clusters=name
        )
    return result


def _scan_geometry(dataset, scan_shape, scan_step):
    """(scan shape, scan step): as given, else the dataset's; checked against each other."""
    if scan_shape is None:
        if dataset is None:
            raise ConfigError("analyze needs scan_shape or a dataset", "pass scan_shape=(sy, sx)")
        scan_shape = dataset.scan_shape
    scan_shape = tuple(int(n) for n in scan_shape)
    if dataset is not None and tuple(dataset.scan_shape) != scan_shape:
        raise DataValueError(f"the dataset scan {dataset.scan_shape} does not match scan_shape {scan_shape}")
    if scan_step is None and dataset is not None:
        scan_step = dataset.calibration.scan_step
    return scan_shape, scan_step


def _vacuum_map(vacuum, dataset, engine, scan_shape):
    """The (sy, sx) bool vacuum mask of ``analyze``'s ``vacuum`` option, or None."""
    if isinstance(vacuum, str):
        if vacuum != "auto":
            raise ConfigError(f"vacuum={vacuum!r} is not a mask", "give a (sy, sx) bool mask, 'auto' or None")
        vacuum = None if dataset is None else vacuum_mask(dataset, engine=engine)
    return None if vacuum is None else np.asarray(vacuum, bool).reshape(scan_shape)


def _region_peaks(region_peaks, dataset, engine):
    """The :class:`PeakBlocks` of ``analyze``'s ``region_peaks`` option, or None (also when the blocks of
    a dataset would take more than a quarter of the engine's memory budget: no split, with a warning)."""
    if isinstance(region_peaks, str):
        if region_peaks != "auto":
            raise ConfigError(f"region_peaks={region_peaks!r} is not known", "give PeakBlocks, 'auto' or None")
        if dataset is None:
            return None
        sy, sx = dataset.scan_shape
        f = max(1, -(-max(dataset.pattern_shape) // MAX_SIDE))
        size = 4 * (sy // 2) * (sx // 2) * (dataset.pattern_shape[0] // f) * (dataset.pattern_shape[1] // f)
        if engine is not None and size > engine.memory_budget // 4:
            log.warning("regions not split by their peaks: the blocks (%d MiB) exceed a quarter of the memory budget",
                        size >> 20)
            return None
        return peak_blocks(dataset)
    if region_peaks is not None and not isinstance(region_peaks, PeakBlocks):
        raise ConfigError("region_peaks must be PeakBlocks, 'auto' or None")
    return region_peaks


def _edge_fraction(edge_fraction, feature: str) -> float:
    """``analyze``'s ``edge_fraction``, 'auto' resolved for the feature representation."""
    if isinstance(edge_fraction, str):
        if edge_fraction != "auto":
            raise ConfigError(f"edge_fraction={edge_fraction!r} is not a number", "give a fraction such as 0.2, 0 or 'auto'")
        edge_fraction = EDGE_FRACTIONS.get(str(feature).lower().split("+")[0], 0.0)
    return float(edge_fraction)


def _clusters(W, scan_shape, typical, member, *, significance, presence_threshold, thresholds, vacuum_map,
              refine) -> Analysis:
    """The Analysis of the factors alone: component maps, labels, presence and overlaps."""
    k = W.shape[1]
    maps = component_maps(W, scan_shape)
    labels = cluster_labels(W, scan_shape, significance=significance, vacuum=vacuum_map, typical=typical)
    ratio = overlap_ratio(W, scan_shape)
    pairs, pair_map = overlap_pairs(W, scan_shape, thresholds)
    result = Analysis(
        maps=maps,
        typical_weight=typical,
        labels=labels,
        n_positions=np.bincount(labels[labels >= 0].ravel(), minlength=k).astype(np.int32),
        n_per_position=np.count_nonzero(member, axis=1).astype(np.int32).reshape(scan_shape),
        significance=float(significance),
        presence=float(presence_threshold),
        overlap_ratio=ratio,
        overlap_thresholds=thresholds,
        overlap_maps=overlap_maps(ratio, thresholds),
        overlap_level=overlap_level(ratio, thresholds),
        overlap_pairs=pairs,
        overlap_pair_map=pair_map,
        vacuum=vacuum_map,
        refine=refine,
    )
    result.coherence = spatial_coherence(maps)
    return result


def _refine(result: Analysis, H, *, scan_step, min_region_size, clean, closing, min_coherence, merge=None,
            fragment_size=0, split=None, absorb=None) -> None:
    """Spatially refined regions of ``result``'s maps (vacuum left out), split by ``split`` = (peak blocks,
    agreement) and joined by ``merge`` = (agreement, threshold) when given, fragments absorbed by ``absorb`` =
    (peak blocks, new peak entries) when given, fragments dropped; their labels and table."""
    maps, k = result.maps, result.maps.shape[0]
    source = maps if result.vacuum is None else np.where(result.vacuum[None], np.float32(0), maps)
    regions = refine_regions(
        source, method=result.refine, min_size=min_region_size, clean=clean, closing=closing,
        edge_fraction=result.edge_fraction, min_coherence=min_coherence,
    )
    if split is not None:
        regions = split_regions(regions, split[0], min_size=min_region_size, agreement=split[1])
    if merge is not None:
        regions = merge_regions(regions, merge[0], threshold=merge[1])
    if absorb is not None:
        regions = absorb_fragments(regions, absorb[0], min_new=absorb[1])
    regions = drop_fragments(regions, fragment_size)
    result.regions = regions
    result.region_labels = region_labels(regions.maps)
    scale = None if H is None or np.shape(H)[0] != k else np.linalg.norm(np.asarray(H, np.float64), axis=1)
    confidence = region_confidence(regions.maps, regions.component, maps, scale)
    result.region_table = region_table(regions.maps, regions.component, scan_step=scan_step, confidence=confidence)


def _patterns(result: Analysis, dataset, W, H, member, feature, pattern_shape, engine) -> None:
    """Pattern outputs: one pass for all mean patterns, one for all dissimilarities."""
    k = W.shape[1]
    region_weights = (
        np.zeros((dataset.n_positions, 0), np.float32)
        if result.regions is None
        else result.regions.maps.reshape(result.regions.n_regions, dataset.n_positions).T
    )
    (hard, _), (weighted, totals), (region_means, _) = mean_patterns(
        dataset, one_hot(result.labels, k), member, region_weights, engine=engine
    )
    result.mean_patterns = hard
    result.weighted_mean_patterns = weighted
    result.component_weight_sums = totals.astype(np.float32)
    if result.regions is not None:
        result.region_mean_patterns = region_means
    clusters = sparse.hstack([sparse.csr_matrix(member), sparse.csr_matrix(region_weights)], format="csr")
    refs = np.concatenate([weighted, region_means]) if result.regions is not None else weighted
    scores, position = dissimilarity(
        dataset, clusters, refs, labels=result.labels, label_references=hard, engine=engine
    )
    result.component_dissimilarity = scores[:k]
    result.dissimilarity_map = position
    if result.regions is not None:
        result.region_dissimilarity = scores[k:]
        result.region_table["dissimilarity"] = scores[k:]

    representative = None
    if str(feature).lower() == "raw" and H is not None:
        representative = _representative(W, H, pattern_shape, dataset.pattern_shape)
    if representative is not None:
        result.representative_patterns = representative
        result.representative_kind = "basis x largest weight"
        valid = None if dataset.mask is None else ~np.asarray(dataset.mask, bool)
        result.raw_vs_nmf = raw_vs_nmf(hard, representative, valid)
    else:
        result.representative_patterns = weighted
        result.representative_kind = "weighted mean"


def score_results(results, truth, *, clusters: str = "auto") -> Scores:
    """Scores of a finished run (a :class:`stemnmf.io.Results`) against ground truth.

    Parameters
    ----------
    results : Results
        Needs ``/components/maps`` or ``/regions/maps``; uses ``/labels``,
        ``/regions/labels``, ``/clusters/presence``, ``/clusters/vacuum`` and
        ``/clusters/n_per_position`` when present.
    truth : Truth or array (n_grains, sy, sx)
    clusters : {'auto', 'regions', 'components'}
        Which maps to score; ``'auto'`` takes the regions when the run refined.

    Raises
    ------
    ResultsError
        If the results hold no maps of the requested kind.
    InputError
        If the truth's scan shape differs from the results'.
    """
    if clusters not in ("auto", "regions", "components"):
        raise ConfigError(f"unknown clusters {clusters!r}", "use auto, regions or components")
    has_regions = "/regions/maps" in results
    has_components = "/components/maps" in results
    if clusters == "auto":
        clusters = "regions" if has_regions else "components"
    if clusters == "regions" and not has_regions:
        raise ResultsError("the results hold no /regions/maps", "score the components or run with refinement")
    if clusters == "components" and not has_components:
        raise ResultsError("the results hold no /components/maps", "give the output folder of `stemnmf run`")
    labels = results["/labels"] if "/labels" in results else None
    region_lab = results["/regions/labels"] if "/regions/labels" in results else None
    if clusters == "regions":
        maps = np.asarray(results["/regions/maps"], np.float32)
        if region_lab is None:
            region_lab = region_labels(maps)
    else:
        comp = np.asarray(results["/components/maps"], np.float32)
        k, sy, sx = comp.shape
        threshold = float(results["/clusters/presence"]) if "/clusters/presence" in results else 0.25
        vacuum = np.asarray(results["/clusters/vacuum"], bool) if "/clusters/vacuum" in results else None
        member = presence(comp.reshape(k, sy * sx).T, threshold=threshold, vacuum=vacuum)
        if "/clusters/n_per_position" in results:
            member[np.asarray(results["/clusters/n_per_position"]).ravel() == 0] = 0
        maps = member.T.reshape(k, sy, sx)
        if labels is None:
            labels = cluster_labels(comp.reshape(k, sy * sx).T, (sy, sx))
    return score_clusters(maps, truth, labels=labels, region_labels=region_lab, clusters=clusters)
