"""Calibration of 4D-STEM scans: bad pixels, binning and cropping, origin, ellipse, masks.

Each operation is a pure function on arrays; functions that touch every
pattern have a Dataset4D counterpart that runs through
:class:`stemnmf.engine.Engine`. :func:`calibrate` runs the whole calibration
as the pipeline does and returns the calibrated dataset and a
:class:`CalibrationReport`.

Results live where later stages look for them: ``Dataset4D.mask`` ((qy, qx)
bool, True = masked out), ``Dataset4D.origins`` ((sy, sx, 2) direct-beam
(qy, qx) per position), ``Calibration.origin`` (mean origin) and
``Calibration.ellipse`` = (a, b, angle).
"""

from stemnmf.calibrate.common import pattern_statistics
from stemnmf.calibrate.disks import beam_hidden, disk_template, unmasked_radius
from stemnmf.calibrate.ellipse import EllipseFit, ellipse_points, find_ring, fit_ellipse, fit_ellipse_to_points
from stemnmf.calibrate.ellipse_profiles import fit_ellipse_profiles
from stemnmf.calibrate.geometry import (
    bin_coordinates,
    bin_dataset,
    bin_mask,
    bin_patterns,
    bin_scan,
    crop_dataset,
)
from stemnmf.calibrate.masks import beam_stop_mask, combine_masks, edge_mask
from stemnmf.calibrate.origin import (
    JitterCheck,
    OriginFit,
    OriginMeasurement,
    ProbeEstimate,
    com_origins,
    correct_shift,
    estimate_probe,
    fit_origin_surface,
    follow_jitter,
    measure_origins,
    probe_template,
    shift_patterns,
    shifted_sum,
    xcorr_origins,
)
from stemnmf.calibrate.pixels import (
    find_dead_pixels,
    find_hot_pixels,
    local_sorted_intensity,
    remove_hot_pixels,
    replace_pixels,
)
from stemnmf.calibrate.workflow import CalibrateOptions, CalibrationReport, calibrate, calibrate_with

__all__ = [
    "CalibrateOptions",
    "CalibrationReport",
    "EllipseFit",
    "JitterCheck",
    "OriginFit",
    "OriginMeasurement",
    "ProbeEstimate",
    "beam_hidden",
    "beam_stop_mask",
    "bin_coordinates",
    "bin_dataset",
    "bin_mask",
    "bin_patterns",
    "bin_scan",
    "calibrate",
    "calibrate_with",
    "com_origins",
    "combine_masks",
    "correct_shift",
    "crop_dataset",
    "disk_template",
    "edge_mask",
    "ellipse_points",
    "estimate_probe",
    "find_dead_pixels",
    "find_hot_pixels",
    "find_ring",
    "fit_ellipse",
    "fit_ellipse_profiles",
    "fit_ellipse_to_points",
    "fit_origin_surface",
    "follow_jitter",
    "local_sorted_intensity",
    "measure_origins",
    "pattern_statistics",
    "probe_template",
    "remove_hot_pixels",
    "replace_pixels",
    "shift_patterns",
    "shifted_sum",
    "unmasked_radius",
    "xcorr_origins",
]
