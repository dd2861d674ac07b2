"""Ellipse from the sectors' radial profiles: close and spotty rings stretched to known ellipses are recovered."""

import math

import numpy as np
import pytest

from stemnmf.calibrate import fit_ellipse
from stemnmf.calibrate.ellipse_profiles import fit_ellipse_profiles
from stemnmf.errors import CalibrationError

SHAPE = (128, 128)
CENTRE = (63.7, 64.2)


def distorted_offsets(ratio, angle):
    """Ideal (undistorted) offsets of every detector pixel for a detector ellipse (ratio, a-axis angle)."""
    yy, xx = np.indices(SHAPE, dtype=float)
    x, y = xx - CENTRE[1], yy - CENTRE[0]
    u = x * np.cos(angle) + y * np.sin(angle)  # along the a axis
    v = -x * np.sin(angle) + y * np.cos(angle)
    root = math.sqrt(ratio)
    return u / root, v * root  # the a axis is stretched by sqrt(ratio), the b axis shrunk by it


def rings(ratio, angle, radii, amplitudes, width=1.0):
    u, v = distorted_offsets(ratio, angle)
    rho = np.hypot(u, v)
    return sum(a * np.exp(-((rho - r) ** 2) / (2 * width**2)) for r, a in zip(radii, amplitudes))


def spots(ratio, angle, radii, n_per_ring, rng, disk=2.0):
    """Bragg disks at random directions on rings (Friedel pairs), stretched by the detector ellipse."""
    u, v = distorted_offsets(ratio, angle)
    image = np.zeros(SHAPE)
    for r in radii:
        for phi in rng.uniform(0, np.pi, n_per_ring):
            height = rng.uniform(0.5, 2.0)
            for sign in (1, -1):
                cu, cv = sign * r * np.cos(phi), sign * r * np.sin(phi)
                image += height * np.clip(disk + 0.5 - np.hypot(u - cu, v - cv), 0, 1)
    return image


def beam():
    yy, xx = np.indices(SHAPE)
    return 200.0 * np.clip(3.5 - np.hypot(yy - CENTRE[0], xx - CENTRE[1]), 0, 1)


def angle_error(a, b):
    d = (a - b + np.pi / 2) % np.pi - np.pi / 2
    return abs(np.degrees(d))


@pytest.mark.parametrize("angle_deg", [25.0, -50.0])
def test_close_rings_give_the_ellipse_where_one_rings_crest_mixes_them(angle_deg):
    """Rings 2.5 px apart (111 and 200 of an fcc film on a small detector) and two more, with Poisson noise."""
    rng = np.random.default_rng(3)
    angle = np.radians(angle_deg)
    clean = 40.0 * rings(1.04, angle, [21.0, 23.5, 33.5, 40.5], [1.0, 0.7, 0.5, 0.6]) + beam() + 2.0
    image = rng.poisson(clean).astype(float)
    fit = fit_ellipse_profiles(image, center=CENTRE, r_min=8.0)
    assert abs(fit.axis_ratio - 1.04) < 0.003
    assert angle_error(fit.angle, angle) < 2.0
    assert fit.axis_ratio_std < 0.003


def test_spotty_rings():
    rng = np.random.default_rng(8)
    angle = np.radians(25.0)
    clean = 30.0 * spots(1.04, angle, [21.0, 24.25, 34.3, 40.2], 10, rng) + beam() + 1.0
    image = rng.poisson(clean).astype(float)
    fit = fit_ellipse_profiles(image, center=CENTRE, r_min=8.0)
    assert abs(fit.axis_ratio - 1.04) < 0.005
    assert angle_error(fit.angle, angle) < 3.0


def test_round_rings_give_a_circle_and_a_rings_radius():
    rng = np.random.default_rng(5)
    image = rng.poisson(40.0 * rings(1.0, 0.0, [21.0, 33.5], [1.0, 0.6]) + beam() + 2.0).astype(float)
    fit = fit_ellipse_profiles(image, center=CENTRE, r_min=8.0)
    assert fit.axis_ratio < 1.003
    assert min(abs(math.sqrt(fit.a * fit.b) - r) for r in (21.0, 33.5)) < 0.5  # the most prominent ring


def test_a_masked_arm_is_left_out():
    angle = np.radians(-70.0)
    image = 40.0 * rings(1.05, angle, [21.0, 23.5, 33.5], [1.0, 0.7, 0.5]) + beam()
    yy, xx = np.indices(SHAPE)
    mask = (np.abs(yy - CENTRE[0]) < 3) & (xx > CENTRE[1])  # a beam-stop arm to the right edge
    image[mask] = 0.0
    fit = fit_ellipse_profiles(image, center=CENTRE, mask=mask, r_min=8.0)
    assert abs(fit.axis_ratio - 1.05) < 0.002
    assert angle_error(fit.angle, angle) < 1.0
    assert fit.n_points < 36


def test_mostly_masked_detector_raises():
    image = 40.0 * rings(1.0, 0.0, [21.0, 33.5], [1.0, 0.6])
    mask = np.zeros(SHAPE, bool)
    mask[:, :70] = True
    with pytest.raises(CalibrationError, match="sectors"):
        fit_ellipse_profiles(image, center=CENTRE, mask=mask, r_min=8.0)


def test_a_ring_too_weak_for_the_sectors_is_refused():
    """A ring that the azimuthal mean still shows but no sector sees: refused, not a noisy ellipse."""
    rng = np.random.default_rng(0)
    clean = 0.5 * rings(1.1, 0.3, [21.0], [1.0]) + beam() + 20.0
    image = rng.poisson(np.broadcast_to(clean, (16, *SHAPE))).astype(float).mean(axis=0)
    with pytest.raises(CalibrationError, match="too weak"):
        fit_ellipse_profiles(image, center=CENTRE, r_min=8.0)


def test_one_curve_through_all_sectors_outvotes_sectors_locked_on_a_neighbouring_ring():
    """Correlations peak on a known 2-theta curve; a third of the sectors peak higher on a decoy 13 lags off.

    The decoys (a sector whose spots match a neighbouring ring better) pull a curve through the sectors' own
    maxima by several degrees; the curve that maximises the summed correlation is the true one.
    """
    from stemnmf.calibrate.ellipse_profiles import _curve_coefficients

    rng = np.random.default_rng(11)
    theta = (np.arange(36) + 0.5) * np.radians(10.0)
    true_a, true_b = 6.4 * math.cos(np.radians(50.0)), 6.4 * math.sin(np.radians(50.0))
    curve = true_a * np.cos(2 * theta) + true_b * np.sin(2 * theta)
    lags = np.arange(-20, 21)
    decoy = rng.random(36) < 1 / 3
    offset = np.where(rng.random(36) < 0.5, -13.0, 13.0)
    corr = np.exp(-((lags[None, :] - curve[:, None]) ** 2) / (2 * 1.5**2))
    corr += np.where(decoy, 1.3, 0.0)[:, None] * np.exp(-((lags[None, :] - curve[:, None] - offset[:, None]) ** 2) / 4.5)
    corr += 0.05 * rng.standard_normal(corr.shape)
    own = lags[np.argmax(corr, axis=1)].astype(float)
    design = np.stack([np.ones(36), np.cos(2 * theta), np.sin(2 * theta)], 1)
    _, naive_a, naive_b = np.linalg.lstsq(design, own, rcond=None)[0]
    assert abs(np.degrees(0.5 * (math.atan2(naive_b, naive_a) - math.atan2(true_b, true_a)))) > 3.0
    a, b = _curve_coefficients(lags, corr, theta)
    assert abs(np.degrees(0.5 * (math.atan2(b, a) - math.atan2(true_b, true_a)))) < 0.5
    assert abs(math.hypot(a, b) - 6.4) < 0.2


def test_significance_tells_round_rings_from_a_one_percent_ellipse():
    """Spotty rings with Poisson noise: round ones stay below 5 bootstrap sd from a circle, a/b 1.01 stands above."""
    for seed in range(4):
        values = {}
        for ratio in (1.0, 1.01):
            rng = np.random.default_rng(seed)
            clean = 40 * spots(ratio, 0.4, [21.0, 23.5, 33.5, 40.5], 40, rng) + beam() + 2.0
            fit = fit_ellipse_profiles(rng.poisson(clean).astype(float), center=CENTRE, r_min=8.0)
            values[ratio] = fit.significance
        assert values[1.0] < 5.0 < values[1.01], values


def test_bootstrap_spread_is_the_distance_in_standard_deviations():
    """Refits scattered by a known sd around a known distortion: the significance is their ratio."""
    from stemnmf.calibrate.ellipse import bootstrap_spread

    rng = np.random.default_rng(0)
    true = 0.010 * np.array([np.cos(2 * 0.3), np.sin(2 * 0.3)])  # a/b 1.01 at 0.3 rad
    vectors = true + 0.002 * rng.standard_normal((4000, 2))
    ratios = 1.0 + np.hypot(vectors[:, 0], vectors[:, 1])
    angles = 0.5 * np.arctan2(vectors[:, 1], vectors[:, 0])
    ratio_std, angle_std, significance = bootstrap_spread(ratios, angles, (1.01, 0.3))
    assert abs(significance - 5.0) < 0.2
    assert abs(ratio_std - 0.002) < 0.0002
    assert abs(angle_std - 0.002 / 0.010 / 2) < 0.01  # 0.1 rad
    assert np.isnan(bootstrap_spread(ratios[:2], angles[:2], (1.01, 0.3))[2])
