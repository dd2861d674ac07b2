"""Ellipse fit: rings stretched to known ellipses are recovered to 1 % in axis ratio and 1 degree."""

import numpy as np
import pytest

from stemnmf.calibrate import calibrate, ellipse_points, fit_ellipse, fit_ellipse_to_points
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError
from stemnmf.io import Dataset4D


def ring(shape, center, a, b, angle, sigma=1.3, amplitude=1.0):
    """A Gaussian ring whose crest is the ellipse (a, b, angle) about ``center`` (angle from +qx to +qy)."""
    yy, xx = np.indices(shape, dtype=float)
    x, y = xx - center[1], yy - center[0]
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    radius = 0.5 * (a + b)
    rho = np.hypot(u * radius / a, v * radius / b)
    return amplitude * np.exp(-((rho - radius) ** 2) / (2 * sigma**2))


def disk(shape, center, radius, amplitude):
    yy, xx = np.indices(shape)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


def angle_error(a, b):
    """Difference of two axis directions modulo pi, in degrees."""
    d = (a - b + np.pi / 2) % np.pi - np.pi / 2
    return abs(np.degrees(d))


@pytest.mark.parametrize("angle_deg", [-60.0, 0.0, 30.0, 85.0])
def test_stretched_ring_recovered(angle_deg):
    rng = np.random.default_rng(int(angle_deg) + 100)
    shape = (96, 96)
    center = (47.3, 48.6)
    a, b = 33.0, 30.0  # axis ratio 1.1
    angle = np.radians(angle_deg)
    expected = 200 * ring(shape, center, a, b, angle) + disk(shape, center, 4, 2000) + 20
    image = rng.poisson(expected).astype(np.float64)
    fit = fit_ellipse(image)
    assert abs(fit.axis_ratio / (a / b) - 1) < 0.01
    assert angle_error(fit.angle, angle) < 1.0
    assert -np.pi / 2 < fit.angle <= np.pi / 2
    assert abs(fit.a - a) < 0.3 and abs(fit.b - b) < 0.3
    assert np.hypot(fit.center[0] - center[0], fit.center[1] - center[1]) < 0.2
    assert fit.coverage > 0.9 and fit.a >= fit.b


def test_points_on_an_ellipse_give_it_back_exactly():
    pts = ellipse_points((10.0, -4.0), 7.0, 3.0, np.radians(-20), n=50)
    center, a, b, angle, rms, used = fit_ellipse_to_points(pts[:, 0], pts[:, 1])
    np.testing.assert_allclose(center, (10.0, -4.0), atol=1e-8)
    np.testing.assert_allclose([a, b, np.degrees(angle)], [7.0, 3.0, -20.0], atol=1e-6)
    assert rms < 1e-8 and used.all()
    # an outlier is left out
    pts[7] += 3.0
    center, a, b, angle, rms, used = fit_ellipse_to_points(pts[:, 0], pts[:, 1])
    assert not used[7] and used.sum() == 49
    np.testing.assert_allclose([a, b], [7.0, 3.0], atol=1e-6)


def test_partly_masked_ring_and_given_window():
    shape = (96, 96)
    center = (48.0, 47.0)
    image = 100 * ring(shape, center, 31.0, 29.0, np.radians(45)) + disk(shape, center, 4, 500) + 5
    mask = np.zeros(shape, bool)
    mask[44:53, 47:] = True  # beam-stop arm from the beam to the right edge
    image[mask] = 0.0
    fit = fit_ellipse(image, mask=mask, ring=(24, 38), center=center)
    assert abs(fit.axis_ratio - 31.0 / 29.0) < 0.01 * 31.0 / 29.0
    assert angle_error(fit.angle, np.radians(45)) < 1.0
    assert 0.85 < fit.coverage < 0.99  # the arm hides some directions


def test_weak_ring_raises_and_calibrate_falls_back():
    rng = np.random.default_rng(0)
    shape = (64, 64)
    center = (31.5, 32.0)
    base = disk(shape, center, 4, 400) + 20 + 0.5 * ring(shape, center, 22, 20, 0.3)
    image = rng.poisson(np.broadcast_to(base, (4, 4, *shape))).astype(np.float32)
    with pytest.raises(CalibrationError, match="ring"):
        fit_ellipse(image[0, 0])
    out, report = calibrate(Dataset4D(image), engine=Engine(progress=False), ellipse=True)
    assert report.ellipse is None and out.calibration.ellipse is None
    assert any("no ellipse correction is applied" in w for w in report.warnings)
    with pytest.raises(CalibrationError):
        calibrate(Dataset4D(image), engine=Engine(progress=False), ellipse=True, strict=True)


def test_calibrate_stores_ellipse_with_the_shared_convention():
    shape = (64, 64)
    center = (31.2, 32.7)
    a, b, angle = 22.0, 20.0, np.radians(-35)
    base = 100 * ring(shape, center, a, b, angle) + disk(shape, center, 3, 1000) + 10
    data = np.random.default_rng(1).poisson(np.broadcast_to(base, (3, 4, *shape))).astype(np.float32)
    out, report = calibrate(Dataset4D(data), engine=Engine(progress=False), ellipse=True, bin_q=2)
    ea, eb, eangle = out.calibration.ellipse
    assert ea >= eb
    assert abs(ea - a / 2) < 0.15 and abs(eb - b / 2) < 0.15  # binned grid: half the pixels
    assert angle_error(eangle, angle) < 1.0
    assert report.to_results()["/calibration/ellipse"].tolist() == list(out.calibration.ellipse)


def test_uncertainty_reflects_the_noise():
    shape = (64, 64)
    center = (31.5, 32.0)
    fits = {}
    for amplitude in (10, 400):
        base = disk(shape, center, 4, 400) + 20 + amplitude * ring(shape, center, 22, 20, 0.3)
        fits[amplitude] = fit_ellipse(np.random.default_rng(0).poisson(base).astype(float))
    noisy, clean = fits[10], fits[400]
    assert noisy.axis_ratio_std > 3 * clean.axis_ratio_std > 0
    assert noisy.angle_std > 3 * clean.angle_std > 0
    assert np.degrees(clean.angle_std) < 0.5
    # the truth lies within a few standard deviations of the noisy fit
    assert abs(noisy.axis_ratio - 1.1) < 4 * noisy.axis_ratio_std
    assert angle_error(noisy.angle, 0.3) < 4 * np.degrees(noisy.angle_std)


def test_ellipse_from_a_bragg_vector_map():
    """Disk positions on one ring, rasterised as counts like a Bragg vector map, give the ellipse back."""
    rng = np.random.default_rng(1)
    shape, center = (128, 128), (63.4, 64.2)
    a, b, angle = 40.0, 36.0, np.radians(25.0)
    t = rng.uniform(0, 2 * np.pi, 1000)
    u, v = a * np.cos(t), b * np.sin(t)
    x, y = u * np.cos(angle) - v * np.sin(angle), u * np.sin(angle) + v * np.cos(angle)
    bvm = np.zeros(shape)
    np.add.at(bvm, (np.round(center[0] + y).astype(int), np.round(center[1] + x).astype(int)), 1.0)
    fit = fit_ellipse(bvm, center=center, ring=(30, 46))
    assert abs(fit.axis_ratio / (a / b) - 1) < 0.01
    assert abs(np.degrees(fit.angle) - 25.0) < 1.0


def test_an_ellipse_no_better_than_a_circle_is_not_applied():
    """A round ring with Poisson noise: the fitted a/b is noise, so no correction (kept in the report); 0 applies it."""
    shape = (64, 64)
    center = (31.2, 32.7)
    base = 100 * ring(shape, center, 21.0, 21.0, 0.0) + disk(shape, center, 3, 1000) + 10
    data = np.random.default_rng(1).poisson(np.broadcast_to(base, (3, 4, *shape))).astype(np.float32)
    out, report = calibrate(Dataset4D(data), engine=Engine(progress=False), ellipse=True)
    assert report.ellipse is None and out.calibration.ellipse is None
    rejected = report.ellipse_rejected
    assert rejected is not None and rejected.significance < 5.0
    assert any("no ellipse correction is applied" in w for w in report.warnings)
    results = report.to_results()
    assert "/calibration/ellipse" not in results
    assert results["/calibration/ellipse_rejected"][5] == pytest.approx(rejected.significance)
    out, report = calibrate(Dataset4D(data), engine=Engine(progress=False), ellipse=True, ellipse_min_significance=0)
    assert report.ellipse is not None and out.calibration.ellipse == report.ellipse.ellipse
    with pytest.raises(ConfigError, match="ellipse_min_significance"):
        calibrate(Dataset4D(data), engine=Engine(progress=False), ellipse=True, ellipse_min_significance=-1)


def test_a_two_percent_ellipse_stands_out_and_is_applied():
    shape = (64, 64)
    center = (31.2, 32.7)
    a, b, angle = 21.2, 20.8, np.radians(40)  # a/b 1.019
    base = 100 * ring(shape, center, a, b, angle) + disk(shape, center, 3, 1000) + 10
    data = np.random.default_rng(2).poisson(np.broadcast_to(base, (3, 4, *shape))).astype(np.float32)
    out, report = calibrate(Dataset4D(data), engine=Engine(progress=False), ellipse=True)
    assert report.ellipse_rejected is None and report.ellipse.significance > 5.0
    assert abs(report.ellipse.axis_ratio - a / b) < 0.005
    assert report.to_results()["/calibration/ellipse_significance"] == pytest.approx(report.ellipse.significance)
