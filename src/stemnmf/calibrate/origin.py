"""The direct beam: where it is in every pattern, a smooth surface over the scan, and shift correction.

Two measurements are offered:

``'com'``
    Centre of mass of the direct beam: the brightest blob (a box filter the
    size of the probe, searched near the mean beam position) is located, then
    the centre of mass of the background-subtracted intensity inside a disk of
    1.5 probe radii + 2 px around it is taken, three times, each time about
    the previous estimate.
``'xcorr'``
    Cross-correlation with a probe template (given, or the radially averaged
    direct beam of the mean pattern), refined to ``1 / upsample`` px with a
    matrix-multiply DFT around the peak (Guizar-Sicairos et al., Opt. Lett. 33
    (2008) 156) and a parabola through the finest samples.

Patterns without a direct beam (beam intensity below ``min_beam_fraction`` of
the scan's median) get NaN. :func:`fit_origin_surface` fits a plane or a
quadratic surface over the scan with iterative rejection of outliers and
fills those positions in; :func:`shift_patterns` moves every pattern by a
sub-pixel amount with bilinear interpolation, which keeps intensities
non-negative and the centre of mass exact.
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
from stemnmf.calibrate.surface import OriginFit, fit_origin_surface

__all__ = [
    "ProbeEstimate",
    "OriginFit",
    "OriginMeasurement",
    "estimate_probe",
    "probe_template",
    "com_origins",
    "xcorr_origins",
    "fit_origin_surface",
    "shift_patterns",
    "shifted_sum",
    "shifted_mask",
    "measure_origins",
    "correct_shift",
]
