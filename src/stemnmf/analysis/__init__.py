"""From factors to science: cluster and overlap maps, regions, patterns and scores.

Pure functions on the NMF weights W (n_positions, k) or component maps
(k, sy, sx), streamed functions on a Dataset4D through :class:`stemnmf.engine.Engine`,
and :func:`analyze`, the single entry the pipeline calls. Definitions and
formulas: docs/analysis.md.
"""

from stemnmf.analysis.absorb import absorb_fragments, fragment_evidence
from stemnmf.analysis.analyze import DISSIMILARITY_DTYPE, EDGE_FRACTIONS, MIN_COHERENCE, Analysis, analyze, score_results
from stemnmf.analysis.maps import (
    as_weights,
    cluster_labels,
    clusters_per_position,
    component_maps,
    presence,
    typical_weights,
)
from stemnmf.analysis.overlap import (
    DEFAULT_THRESHOLDS,
    overlap_level,
    overlap_maps,
    overlap_pairs,
    overlap_ratio,
)
from stemnmf.analysis.patterns import (
    RAW_VS_NMF_DTYPE,
    cluster_mean_patterns,
    dissimilarity,
    mean_patterns,
    minmax_scale,
    one_hot,
    raw_vs_nmf,
    attach_vacuum_test,
    scattered_fraction,
    vacuum_mask,
)
from stemnmf.analysis.refine import (
    REGION_AGREEMENT,
    Regions,
    drop_fragments,
    merge_regions,
    refine_regions,
    region_labels,
    spatial_coherence,
    threshold_map,
)
from stemnmf.analysis.regions import REGION_DTYPE, max_feret_diameter, region_table, shape_descriptors
from stemnmf.analysis.scores import Scores, area_scores, dominant_grain, grain_scores, score_clusters

__all__ = [
    "Analysis",
    "DEFAULT_THRESHOLDS",
    "DISSIMILARITY_DTYPE",
    "RAW_VS_NMF_DTYPE",
    "REGION_DTYPE",
    "Regions",
    "Scores",
    "analyze",
    "EDGE_FRACTIONS",
    "MIN_COHERENCE",
    "area_scores",
    "as_weights",
    "cluster_labels",
    "cluster_mean_patterns",
    "clusters_per_position",
    "component_maps",
    "dissimilarity",
    "dominant_grain",
    "grain_scores",
    "max_feret_diameter",
    "mean_patterns",
    "minmax_scale",
    "one_hot",
    "overlap_level",
    "overlap_maps",
    "overlap_pairs",
    "overlap_ratio",
    "presence",
    "raw_vs_nmf",
    "refine_regions",
    "merge_regions",
    "drop_fragments",
    "absorb_fragments",
    "fragment_evidence",
    "REGION_AGREEMENT",
    "spatial_coherence",
    "region_labels",
    "region_table",
    "score_clusters",
    "score_results",
    "attach_vacuum_test",
    "scattered_fraction",
    "shape_descriptors",
    "threshold_map",
    "typical_weights",
    "vacuum_mask",
]
