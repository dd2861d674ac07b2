"""Origins that follow scan jitter: the measured origins' scatter about their surface against their own noise."""

import numpy as np
import pytest

from stemnmf.calibrate import calibrate, com_origins, fit_origin_surface, follow_jitter
from stemnmf.engine import Engine
from stemnmf.errors import ConfigError
from stemnmf.io import Dataset4D

SHAPE = (40, 40)


def disk(center, radius, amplitude):
    yy, xx = np.indices(SHAPE)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


def scan(jitter, *, beam=200.0, seed=0, sy=16, sx=16):
    """Poisson patterns of a beam (radius 4) on a linear descan plus ``jitter`` px rms per coordinate, and the truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((sy, sx))
    truth = np.stack([18.0 + 0.15 * yy - 0.05 * xx, 20.5 + 0.04 * yy + 0.12 * xx], axis=-1)
    truth = truth + jitter * rng.standard_normal(truth.shape)
    expected = np.stack([1.0 + disk(c, 4, beam) + disk(c + (0, 12), 3, 0.2 * beam) for c in truth.reshape(-1, 2)])
    data = rng.poisson(expected).astype(np.float32).reshape(sy, sx, *SHAPE)
    return Dataset4D(data), truth


def rms(a, b):
    return float(np.sqrt(np.mean(np.sum((np.asarray(a, np.float64) - b) ** 2, axis=-1))))


def run(ds, **options):
    return calibrate(ds, engine=Engine(chunk_rows=4, progress=False), origin="com", **options)


def test_checkerboard_halves_spread_is_twice_the_noise():
    # the same beam at one place, many Poisson draws: the spread of the origins is the noise by construction
    centre = np.array([19.3, 20.6])
    rng = np.random.default_rng(3)
    stack = rng.poisson(1.0 + disk(centre, 4, 10.0), (400, *SHAPE)).astype(np.float32)
    origins, _, halves = com_origins(stack, radius=4, guess=tuple(centre), return_halves=True)
    noise = origins.std(axis=0)
    assert 0.05 < noise.min()  # a dim beam: the noise is well above the sampling's bias
    np.testing.assert_allclose(0.5 * halves.std(axis=0), noise, rtol=0.2)


def test_jittered_origins_are_followed():
    ds, truth = scan(0.2)
    out, report = run(ds)
    check = report.origin_jitter
    assert check.followed and (check.ratio > check.threshold).all()
    surface_error = rms(report.origin_fit.fitted, truth)
    assert surface_error > 0.2  # the jitter the surface cannot follow
    assert rms(out.origins, truth) < 0.25 * surface_error
    assert check.n_followed == 16 * 16
    np.testing.assert_allclose(check.residual_sd, 0.2, rtol=0.25)
    results = report.to_results()
    assert results["/calibration/origin_jitter/followed"] == 1
    assert "origins from the measurements" in report.summary()


def test_jitter_free_scan_keeps_the_surface():
    ds, truth = scan(0.0)
    out, report = run(ds)
    check = report.origin_jitter
    assert not check.followed and (check.shrink == 0).all()
    np.testing.assert_array_equal(out.origins, report.origin_fit.fitted)
    assert rms(out.origins, truth) < 0.03
    assert "origins from the surface" in report.summary()


@pytest.mark.parametrize("beam", [10.0, 3.0])
def test_noise_only_scatter_does_not_switch(beam):
    # a dim beam: the measurements scatter by their noise alone (0.1-0.35 px), no jitter; at 3 counts on a
    # background of 1 the halves underestimate the noise (the selection of the beam's pixels couples them)
    ds, truth = scan(0.0, beam=beam, seed=1, sy=24, sx=24)
    out, report = run(ds)
    check = report.origin_jitter
    measured_noise = np.nanstd(report.origins_measured - truth, axis=(0, 1))
    assert measured_noise.min() > 0.05
    if beam >= 10:
        np.testing.assert_allclose(check.noise_sd, measured_noise, rtol=0.2)
    assert not check.followed
    np.testing.assert_array_equal(out.origins, report.origin_fit.fitted)


def test_surface_option_and_results():
    ds, _ = scan(0.2, seed=2)
    out, report = run(ds, origin_jitter="surface")
    assert report.origin_jitter is None
    np.testing.assert_array_equal(out.origins, report.origin_fit.fitted)
    assert not any(k.startswith("/calibration/origin_jitter") for k in report.to_results())
    with pytest.raises(ConfigError):
        run(ds, origin_jitter="always")


def test_shrink_is_the_least_squares_factor():
    # residual = jitter + noise, halves = 2 x an independent draw of the noise: by construction the best
    # linear estimate of the jitter keeps var(j) / (var(j) + var(e)) of each residual
    rng = np.random.default_rng(7)
    sy, sx = 60, 60
    surface = np.zeros((sy, sx, 2))
    surface[..., 0] = 10.0 + 0.01 * np.arange(sx)
    surface[..., 1] = 12.0
    jitter_sd, noise_sd = np.array([0.2, 0.0]), np.array([0.1, 0.1])
    jitter = jitter_sd * rng.standard_normal(surface.shape)
    measured = surface + jitter + noise_sd * rng.standard_normal(surface.shape)
    halves = 2.0 * noise_sd * rng.standard_normal(surface.shape)
    fit = fit_origin_surface(measured)
    origins, check = follow_jitter(measured, fit, halves)
    expected = jitter_sd**2 / (jitter_sd**2 + noise_sd**2)
    assert check.followed
    np.testing.assert_allclose(check.shrink[0], expected[0], atol=0.05)
    assert check.shrink[1] == 0.0  # qx: noise only
    kept, surface_only = rms(origins, surface + jitter), rms(fit.fitted, surface + jitter)
    assert kept < 0.6 * surface_only
    forced, forced_check = follow_jitter(measured, fit, halves, mode="follow")
    assert forced_check.shrink[1] < 0.2  # forced, noise alone is still mostly shrunk away
    same, none = follow_jitter(measured, fit, None)
    assert none is None
    np.testing.assert_array_equal(same, fit.fitted)
