"""Direct-beam origins, the surface fit over the scan and shift correction, with known shifts."""

import dask.array as da
import numpy as np
import pytest

from stemnmf.calibrate import (
    calibrate,
    com_origins,
    correct_shift,
    estimate_probe,
    fit_origin_surface,
    probe_template,
    shift_patterns,
    shifted_sum,
    xcorr_origins,
)
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError
from stemnmf.io import Calibration, Dataset4D

SHAPE = (48, 48)


def disk(shape, center, radius, amplitude):
    yy, xx = np.indices(shape)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


def pattern(center, shape=SHAPE):
    """Direct beam (radius 4) at ``center``, two Bragg disks that move with it, background 2."""
    c = np.asarray(center, dtype=float)
    return (
        2.0
        + disk(shape, c, 4, 200)
        + disk(shape, c + (0, 13), 3, 30)
        + disk(shape, c + (-13, 0), 3, 30)
    )


def known_shifts(n, seed=0, spread=3.0):
    return np.random.default_rng(seed).uniform(-spread, spread, (n, 2))


CENTRE = np.array([23.3, 24.6])


@pytest.mark.parametrize("noise", [False, True])
def test_com_finds_known_subpixel_origins(noise):
    shifts = known_shifts(30)
    stack = np.stack([pattern(CENTRE + s) for s in shifts])
    if noise:
        stack = np.random.default_rng(1).poisson(stack).astype(np.float32)
    origins, beam = com_origins(stack, radius=4, guess=tuple(CENTRE))
    assert np.abs(origins - (CENTRE + shifts)).max() < (0.1 if noise else 0.05)
    assert (beam > 0).all()


def test_xcorr_finds_known_subpixel_origins():
    shifts = known_shifts(30, seed=2)
    stack = np.random.default_rng(4).poisson(np.stack([pattern(CENTRE + s) for s in shifts])).astype(np.float32)
    probe = estimate_probe(stack.mean(axis=0))
    template = probe_template(stack.mean(axis=0), probe.center, probe.radius)
    origins, peak = xcorr_origins(stack, template, probe.center, guess=probe.center)
    assert np.abs(origins - (CENTRE + shifts)).max() < 0.1
    # with the exact probe as template (the beam alone, centred on CENTRE)
    origins2, _ = xcorr_origins(stack, disk(SHAPE, CENTRE, 4, 1.0), tuple(CENTRE))
    assert np.abs(origins2 - (CENTRE + shifts)).max() < 0.1


def test_shift_patterns_by_hand():
    image = np.zeros((5, 5), np.float32)
    image[2, 2] = 1.0
    out = shift_patterns(image, (0.25, -1.0))
    expected = np.zeros((5, 5), np.float32)
    expected[2, 1] = 0.75
    expected[3, 1] = 0.25
    np.testing.assert_allclose(out, expected, atol=1e-7)
    assert shift_patterns(image, (10.0, 0.0)).sum() == 0  # moved off the detector
    with pytest.raises(ConfigError):
        shift_patterns(image, (np.nan, 0.0))


def test_shifted_sum_equals_the_sum_of_shifted_patterns():
    rng = np.random.default_rng(5)
    stack = rng.random((40, 12, 14)).astype(np.float32)
    shifts = rng.uniform(-2.5, 2.5, (40, 2))
    expected = shift_patterns(stack, shifts).sum(axis=0, dtype=np.float64)
    np.testing.assert_allclose(shifted_sum(stack, shifts), expected, rtol=1e-5, atol=1e-5)
    one = stack[0]
    expected_one = shift_patterns(np.broadcast_to(one, stack.shape), shifts).sum(axis=0, dtype=np.float64)
    np.testing.assert_allclose(shifted_sum(one, shifts), expected_one, rtol=1e-6, atol=1e-6)


def test_fit_origin_surface_recovers_plane_and_flags_outliers():
    sy, sx = 9, 11
    yy, xx = np.indices((sy, sx))
    truth = np.stack([20 + 0.3 * yy - 0.2 * xx, 25 - 0.1 * yy + 0.4 * xx], axis=-1)
    measured = truth + np.random.default_rng(0).normal(0, 0.01, truth.shape)
    measured[2, 3] += (5.0, -4.0)
    measured[7, 1] = np.nan
    fit = fit_origin_surface(measured, model="plane")
    assert fit.outliers[2, 3] and fit.outliers[7, 1]
    assert fit.outliers.sum() <= 4
    np.testing.assert_allclose(fit.coefficients, [[20, 0.3, -0.2], [25, -0.1, 0.4]], atol=0.01)
    assert np.abs(fit.fitted - truth).max() < 0.02
    assert fit.residual_rms < 0.03
    quad = fit_origin_surface(truth + 0.01 * (yy * xx)[..., None], model="quadratic")
    np.testing.assert_allclose(quad.coefficients[:, 4], [0.01, 0.01], atol=1e-9)
    with pytest.raises(CalibrationError):
        fit_origin_surface(np.full((3, 3, 2), np.nan))


def make_scan(sy=6, sx=7, seed=0, noise=True):
    shifts = known_shifts(sy * sx, seed=seed, spread=2.5).reshape(sy, sx, 2)
    data = np.stack([pattern(CENTRE + s) for s in shifts.reshape(-1, 2)]).reshape(sy, sx, *SHAPE)
    if noise:
        data = np.random.default_rng(seed + 10).poisson(data)
    return data.astype(np.float32), CENTRE + shifts


def test_shift_correction_recentres_to_a_tenth_of_a_pixel():
    data, truth = make_scan()
    ds = Dataset4D(data, Calibration(q_pixel=0.02))
    out, report = calibrate(
        ds, engine=Engine(chunk_rows=2, progress=False), origin="com", origin_fit=None, correct_shift=True
    )
    assert report.shift_corrected and report.max_shift > 1.0
    assert np.abs(report.origins_measured - truth).max() < 0.1
    reference = np.asarray(out.calibration.origin)
    recentred, _ = com_origins(out.data.reshape(-1, *SHAPE), radius=4, guess=tuple(reference))
    assert np.abs(recentred - reference).max() < 0.1
    np.testing.assert_allclose(out.origins, np.broadcast_to(reference, out.origins.shape), atol=1e-5)
    # the mask covers the band the shifts pulled in from outside the detector
    band = int(np.ceil(report.max_shift))
    assert out.mask[:band].all() and out.mask[:, -band:].all() and not out.mask[band:-band, band:-band].any()
    assert (out.data >= 0).all()


def test_plane_fit_fills_positions_without_beam_and_xcorr_agrees():
    sy, sx = 6, 7
    yy, xx = np.indices((sy, sx))
    truth = np.stack([22.0 + 0.2 * yy, 25.0 - 0.15 * xx], axis=-1)
    data = np.stack([pattern(c) for c in truth.reshape(-1, 2)]).reshape(sy, sx, *SHAPE).astype(np.float32)
    data[1, 2] = 2.0  # no direct beam: background only
    data[4, 6] = 0.0
    ds = Dataset4D(data)
    for method in ("com", "xcorr"):
        out, report = calibrate(ds, engine=Engine(progress=False), origin=method, origin_fit="plane")
        assert report.n_no_beam == 2
        assert np.isnan(report.origins_measured[1, 2]).all() and np.isnan(report.origins_measured[4, 6]).all()
        assert report.origin_fit.outliers[1, 2] and report.origin_fit.outliers[4, 6]
        np.testing.assert_allclose(out.origins, truth, atol=0.05)
        assert any("no direct beam in 2 of 42" in w for w in report.warnings)


def test_no_direct_beam_falls_back_or_raises():
    rng = np.random.default_rng(0)
    data = rng.poisson(3.0, (4, 4, 32, 32)).astype(np.float32)
    ds = Dataset4D(data)
    with pytest.raises(CalibrationError, match="no direct beam"):
        estimate_probe(data.mean(axis=(0, 1)))
    with pytest.raises(CalibrationError, match="no direct beam"):
        calibrate(ds, engine=Engine(progress=False), strict=True)
    out, report = calibrate(ds, engine=Engine(progress=False), correct_shift=True)
    assert out.origins is None and report.origin is None and not report.shift_corrected
    assert any("no direct beam" in w for w in report.warnings)
    assert any("shift correction was skipped" in w for w in report.warnings)


def test_origins_do_not_depend_on_chunking_or_laziness():
    data, _ = make_scan(seed=5)
    reference = None
    for ds, rows in [
        (Dataset4D(data), 100),
        (Dataset4D(data), 1),
        (Dataset4D(da.from_array(data, chunks=(4, -1, -1, -1))), 2),
    ]:
        out, report = calibrate(ds, engine=Engine(chunk_rows=rows, progress=False), correct_shift=True)
        assert out.is_lazy == ds.is_lazy
        result = (np.asarray(out.data), report.origins_measured, out.calibration.origin)
        if reference is None:
            reference = result
            continue
        np.testing.assert_allclose(result[0], reference[0], rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(result[1], reference[1], atol=1e-6)
        np.testing.assert_allclose(result[2], reference[2], atol=1e-6)


def test_correct_shift_needs_complete_origins():
    data, truth = make_scan(sy=2, sx=2, noise=False)
    ds = Dataset4D(data)
    with pytest.raises(CalibrationError):
        correct_shift(ds, engine=Engine(progress=False))
    bad = truth.copy()
    bad[0, 0] = np.nan
    with pytest.raises(CalibrationError):
        correct_shift(ds, origins=bad, engine=Engine(progress=False))
    out = correct_shift(ds, origins=truth, reference=(24.0, 24.0), engine=Engine(progress=False))
    recentred, _ = com_origins(out.data.reshape(-1, *SHAPE), radius=4, guess=(24.0, 24.0))
    assert np.abs(recentred - 24.0).max() < 0.05
