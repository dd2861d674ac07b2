"""Feature representations of 4D-STEM patterns: AA, RV, BD, raw; the polar-elliptical transform.

The entry point is :func:`featurize` (also ``stemnmf.featurize``)::

    X, description = stemnmf.featurize(dataset, "aa+bd")

The pure functions below work on one pattern or a batch (arrays in, keyword
options), so they can be used without a Dataset4D.
"""

from stemnmf.features.angular import angular_average, radial_variance
from stemnmf.features.bragg import (
    bragg_vector_map,
    calibrated_vectors,
    find_disks,
    masked_fraction,
    probe_kernel,
    probe_template,
    rasterize_disks,
    synthetic_disk,
)
from stemnmf.features.description import COLUMN_DTYPE, FeatureDescription
from stemnmf.features.featurize import featurize
from stemnmf.features.options import REPRESENTATIONS, FeatureOptions, parse_representation
from stemnmf.features.statistics import find_origin
from stemnmf.features.geometry import correct_offsets, detector_coordinates, edge_radius, polar_coordinates
from stemnmf.features.polar import PolarGeometry, polar_transform, radial_profile
from stemnmf.features.raw import auto_bin, bin_patterns
from stemnmf.features.rings import beam_edge, estimate_beam_radius, find_rings
from stemnmf.features.scaling import scale_features

__all__ = [
    "COLUMN_DTYPE",
    "FeatureDescription",
    "FeatureOptions",
    "PolarGeometry",
    "REPRESENTATIONS",
    "angular_average",
    "auto_bin",
    "beam_edge",
    "bin_patterns",
    "bragg_vector_map",
    "calibrated_vectors",
    "correct_offsets",
    "detector_coordinates",
    "edge_radius",
    "estimate_beam_radius",
    "featurize",
    "find_disks",
    "find_origin",
    "find_rings",
    "masked_fraction",
    "parse_representation",
    "polar_coordinates",
    "polar_transform",
    "probe_kernel",
    "probe_template",
    "radial_profile",
    "radial_variance",
    "rasterize_disks",
    "scale_features",
    "synthetic_disk",
]
