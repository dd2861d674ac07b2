"""The direct beam: where it is in every pattern, a smooth surface over the scan, and shift correction.

One import for the three steps: :mod:`~stemnmf.calibrate.measure` measures the
beam in every pattern (``'com'`` or ``'xcorr'``; patterns without a direct beam
get NaN), :func:`fit_origin_surface` (:mod:`~stemnmf.calibrate.surface`) fits a
plane or a quadratic surface over the scan with iterative rejection of outliers
and fills those positions in, and :func:`shift_patterns`
(:mod:`~stemnmf.calibrate.shift`) moves every pattern by a sub-pixel amount with
bilinear interpolation, which keeps intensities non-negative and the centre of
mass exact.
"""

from __future__ import annotations

from stemnmf.calibrate.measure import (
    OriginMeasurement,
    ProbeEstimate,
    com_origins,
    estimate_probe,
    measure_origins,
    probe_template,
    xcorr_origins,
)
from stemnmf.calibrate.shift import correct_shift, shift_patterns, shifted_mask, shifted_sum
from stemnmf.calibrate.surface import JitterCheck, OriginFit, fit_origin_surface, follow_jitter

__all__ = [
    "ProbeEstimate",
    "OriginFit",
    "JitterCheck",
    "OriginMeasurement",
    "estimate_probe",
    "probe_template",
    "com_origins",
    "xcorr_origins",
    "fit_origin_surface",
    "follow_jitter",
    "shift_patterns",
    "shifted_sum",
    "shifted_mask",
    "measure_origins",
    "correct_shift",
]
