"""How far a calibration can be trusted: accuracy figures and the checks that refuse a bad one.

:func:`assess_calibration` turns a :class:`~stemnmf.calibrate.CalibrationReport`
into figures of accuracy (origin residual rms and spread, ellipse
uncertainty, masked fraction) and a list of problems. A problem means the
features computed from this calibration would be meaningless (an origin fit
whose residuals scatter by more than a disk radius, a surface that leaves
the detector, most of the detector masked): :func:`calibrate` then raises
:class:`~stemnmf.errors.CalibrationError` (``on_unreliable='stop'``, the
default) or goes on with a loud warning (``'warn'``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["CalibrationQuality", "assess_calibration", "disk_radius_pixels"]

#: An origin fit whose inliers are fewer than this fraction of the positions (or blocks) is not trusted.
MIN_INLIER_FRACTION = 0.5
#: More than this fraction of the detector masked leaves too little to compute features on.
MAX_MASKED_FRACTION = 0.5
#: An ellipse whose axis ratio is uncertain by more than this is not trusted.
MAX_AXIS_RATIO_STD = 0.02


@dataclasses.dataclass
class CalibrationQuality:
    """Accuracy of a calibration and what makes it unreliable.

    Attributes
    ----------
    origin_rms : float or None
        Residual rms (px) of the origin surface over its inliers.
    origin_inlier_fraction : float or None
        Fraction of positions (weighted by block for the symmetry method) the surface fit kept.
    origin_spread : float or None
        Largest distance (px) of the fitted origins from their mean.
    disk_radius : float or None
        The scale the origin residual is judged against (px).
    ellipse_axis_ratio_std, ellipse_angle_std : float or None
        Bootstrap uncertainties (angle in degrees).
    masked_fraction : float
    problems : list of str
        Why the calibration is unreliable (empty: reliable).
    """

    origin_rms: float | None = None
    origin_inlier_fraction: float | None = None
    origin_spread: float | None = None
    disk_radius: float | None = None
    ellipse_axis_ratio_std: float | None = None
    ellipse_angle_std: float | None = None
    masked_fraction: float = 0.0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return not self.problems

    def to_results(self) -> dict:
        out = {
            "/calibration/quality/reliable": np.uint8(self.reliable),
            "/calibration/quality/problems": np.asarray(self.problems, dtype=str).reshape(-1),
            "/calibration/quality/masked_fraction": np.float64(self.masked_fraction),
        }
        for name in ("origin_rms", "origin_inlier_fraction", "origin_spread", "disk_radius",
                     "ellipse_axis_ratio_std", "ellipse_angle_std"):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                out[f"/calibration/quality/{name}"] = np.float64(value)
        return out


def disk_radius_pixels(calibration, pattern_shape) -> float:
    """Radius of a diffraction disk in px from the calibration (convergence angle, energy, q_pixel).

    Falls back to 2 % of the smaller detector side (at least 2 px) when the calibration cannot tell.
    """
    alpha, energy, q_pixel = calibration.convergence_angle, calibration.beam_energy, calibration.q_pixel
    if alpha and energy and q_pixel:
        m0c2 = 510.99895  # keV
        wavelength = 12.398419843 / math.sqrt(energy * (2 * m0c2 + energy))  # Å
        return float(alpha * 1e-3 / wavelength / q_pixel)
    return max(2.0, 0.02 * min(pattern_shape))


def assess_calibration(report, *, disk_radius: float, pattern_shape) -> CalibrationQuality:
    """Accuracy figures and problems of a finished :class:`~stemnmf.calibrate.CalibrationReport`."""
    quality = CalibrationQuality(disk_radius=float(disk_radius))
    mask = report.mask
    quality.masked_fraction = 0.0 if mask is None else float(np.mean(mask))
    if quality.masked_fraction > MAX_MASKED_FRACTION:
        quality.problems.append(f"{100 * quality.masked_fraction:.0f} % of the detector is masked")
    fit = report.origin_fit
    if fit is not None:
        quality.origin_rms = float(fit.residual_rms)
        quality.origin_inlier_fraction = float(1.0 - np.mean(fit.outliers))
        fitted = np.asarray(fit.fitted, np.float64).reshape(-1, 2)
        quality.origin_spread = float(np.hypot(*(fitted - fitted.mean(axis=0)).T).max())
        if quality.origin_rms > disk_radius:
            quality.problems.append(
                f"the measured origins scatter by {quality.origin_rms:.1f} px rms about the fitted "
                f"{fit.model}, more than a disk radius ({disk_radius:.1f} px)"
            )
        if quality.origin_inlier_fraction < MIN_INLIER_FRACTION:
            quality.problems.append(
                f"the origin {fit.model} fits only {100 * quality.origin_inlier_fraction:.0f} % of the positions"
            )
        qy, qx = pattern_shape
        outside = (fitted[:, 0] < 0) | (fitted[:, 0] > qy - 1) | (fitted[:, 1] < 0) | (fitted[:, 1] > qx - 1)
        if outside.any():
            quality.problems.append(f"the fitted origin leaves the detector at {int(outside.sum())} positions")
    elif report.origins_measured is not None and report.n_no_beam > 0.5 * report.origins_measured[..., 0].size:
        quality.problems.append(f"no direct beam in {report.n_no_beam} patterns and no surface fitted")
    ellipse = report.ellipse
    if ellipse is not None:
        quality.ellipse_axis_ratio_std = float(ellipse.axis_ratio_std)
        quality.ellipse_angle_std = float(np.degrees(ellipse.angle_std))
        if ellipse.axis_ratio_std > MAX_AXIS_RATIO_STD:
            quality.problems.append(f"the ellipse axis ratio is uncertain by {ellipse.axis_ratio_std:.3f}")
    return quality
