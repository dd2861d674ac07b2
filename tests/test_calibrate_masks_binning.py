"""Masks (beam stop, edges) and binning / cropping with the calibration kept right."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemnmf.calibrate import (
    beam_stop_mask,
    bin_coordinates,
    bin_dataset,
    bin_mask,
    bin_patterns,
    bin_scan,
    calibrate,
    com_origins,
    crop_dataset,
    edge_mask,
    shift_patterns,
)
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError, DataValueError
from stemnmf.io import Calibration, Dataset4D


def disk(shape, center, radius, amplitude):
    yy, xx = np.indices(shape)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


def test_edge_mask_counts():
    mask = edge_mask((10, 12), 2)
    assert mask.sum() == 10 * 12 - 6 * 8
    assert not mask[2:-2, 2:-2].any()
    assert not edge_mask((4, 4), 0).any()
    with pytest.raises(CalibrationError):
        edge_mask((10, 12), 5)
    with pytest.raises(ConfigError):
        edge_mask((10, 12), -1)


def beam_stop_image(shape=(64, 64)):
    """Background 10, a bright ring, and a beam stop: a disk over the centre and an arm to the right edge."""
    image = np.full(shape, 10.0) + disk(shape, (32, 32), 20, 0) + 0
    yy, xx = np.indices(shape)
    image += 40 * np.exp(-((np.hypot(yy - 32, xx - 32) - 22) ** 2) / 4)
    stop = (np.hypot(yy - 32, xx - 32) <= 6) | ((np.abs(yy - 32) <= 2) & (xx >= 32))
    image[stop] = 0.05
    return image, stop


def test_beam_stop_found_and_grown():
    image, stop = beam_stop_image()
    found = beam_stop_mask(image, margin=0)
    np.testing.assert_array_equal(found, stop)
    grown = beam_stop_mask(image, margin=2)
    assert grown[stop].all() and grown.sum() > stop.sum()
    assert not grown[0:10, 0:10].any()  # far from the stop nothing is masked


def test_no_beam_stop_and_dark_blobs_away_from_centre():
    shape = (64, 64)
    image = np.full(shape, 10.0) + disk(shape, (32, 32), 4, 500)
    image[2:8, 50:60] = 0.0  # a dark patch far from the centre (not a beam stop)
    assert not beam_stop_mask(image).any()
    image2, stop = beam_stop_image()
    image2[1:3, 1:3] = 0.0  # a small dark cluster (dead pixels), not connected
    found = beam_stop_mask(image2, margin=0)
    assert not found[1:3, 1:3].any() and found[stop].all()


def test_calibrate_applies_beam_stop_edge_and_given_masks():
    image, stop = beam_stop_image()
    data = np.random.default_rng(0).poisson(np.broadcast_to(image * 20, (3, 3, 64, 64))).astype(np.float32)
    ds = Dataset4D(data)
    out, report = calibrate(ds, engine=Engine(progress=False), origin=None, edge_pixels=1)
    assert out.mask[stop].all()
    assert out.mask[0].all() and out.mask[:, -1].all()
    assert report.beam_stop_pixels >= stop.sum() and report.edge_pixels == 4 * 63
    assert report.n_masked == out.mask.sum()
    given = np.zeros((64, 64), bool)
    given[10:12, 10:12] = True
    out2, report2 = calibrate(ds, engine=Engine(progress=False), origin=None, beam_stop=given, dead_pixels=False)
    np.testing.assert_array_equal(out2.mask, given)
    with pytest.raises(CalibrationError, match="every detector pixel"):
        calibrate(ds, engine=Engine(progress=False), origin=None, beam_stop=np.ones((64, 64), bool))
    with pytest.raises(ConfigError):
        calibrate(ds, engine=Engine(progress=False), beam_stop=np.zeros((5, 5), bool))
    with pytest.raises(ConfigError):
        calibrate(ds, engine=Engine(progress=False), origin="guess")


def test_bin_patterns_by_hand():
    image = np.arange(30, dtype=np.float32).reshape(5, 6)
    out = bin_patterns(image, 2)
    assert out.shape == (2, 3)
    assert out[0, 0] == 0 + 1 + 6 + 7
    assert out[1, 2] == 16 + 17 + 22 + 23
    stack = np.stack([image, 2 * image])
    np.testing.assert_array_equal(bin_patterns(stack, 2)[1], 2 * out)
    with pytest.raises(ConfigError):
        bin_patterns(image, 0)
    with pytest.raises(ConfigError):
        bin_patterns(image, 1.5)
    mask = np.zeros((5, 6), bool)
    mask[1, 3] = True
    assert bin_mask(mask, 2).tolist() == [[False, True, False], [False, False, False]]


def test_binned_coordinates_follow_the_disk():
    shape = (40, 40)
    center = (17.3, 22.8)
    image = disk(shape, center, 5, 10.0).astype(np.float32)
    for factor in (2, 4):
        binned = bin_patterns(image, factor)
        found, _ = com_origins(binned, radius=5 / factor)
        np.testing.assert_allclose(found, bin_coordinates(center, factor), atol=0.02)


def test_bin_scan_numpy_and_lazy_agree():
    data = np.random.default_rng(0).random((5, 7, 4, 3)).astype(np.float32)
    out = bin_scan(data, 2)
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(out[1, 2], data[2:4, 4:6].sum(axis=(0, 1)), rtol=1e-6)
    lazy = bin_scan(da.from_array(data, chunks=(1, -1, -1, -1)), 2)
    np.testing.assert_allclose(lazy.compute(), out, rtol=1e-6)


def test_bin_dataset_updates_calibration_and_stays_lazy():
    data = np.random.default_rng(1).random((4, 6, 8, 10)).astype(np.float32)
    origins = np.full((4, 6, 2), [3.5, 4.5], np.float32)
    mask = np.zeros((8, 10), bool)
    mask[0, 0] = True
    cal = Calibration(scan_step=2.0, q_pixel=0.01, origin=(3.5, 4.5), ellipse=(4.0, 3.0, 0.2))
    for data_in in (data, da.from_array(data, chunks=(1, -1, -1, -1))):
        ds = Dataset4D(data_in, cal, mask=mask, origins=origins)
        out = bin_dataset(ds, bin_q=2, bin_scan=2, engine=Engine(chunk_rows=1, progress=False))
        assert out.is_lazy == ds.is_lazy
        assert out.shape == (2, 3, 4, 5)
        assert out.calibration.q_pixel == pytest.approx(0.02)
        assert out.calibration.scan_step == pytest.approx(4.0)
        assert out.calibration.origin == pytest.approx((1.5, 2.0))
        assert out.calibration.ellipse == pytest.approx((2.0, 1.5, 0.2))
        assert out.mask[0, 0] and out.mask.sum() == 1
        np.testing.assert_allclose(out.origins, np.full((2, 3, 2), [1.5, 2.0]))
        expected = data[0:2, 0:2, 0:2, 0:2].sum()
        assert np.asarray(out.data)[0, 0, 0, 0] == pytest.approx(expected, rel=1e-5)


def test_crop_moves_origins_and_mask():
    data = np.zeros((4, 5, 20, 30), np.float32)
    mask = np.zeros((20, 30), bool)
    mask[5, 10] = True
    origins = np.full((4, 5, 2), [10.0, 15.0], np.float32)
    ds = Dataset4D(data, Calibration(origin=(10.0, 15.0)), mask=mask, origins=origins)
    out = crop_dataset(ds, q=(2, 18, 5, 25), scan=(1, None, 0, 3))
    assert out.shape == (3, 3, 16, 20)
    assert out.calibration.origin == (8.0, 10.0)
    assert out.mask[3, 5] and out.mask.sum() == 1
    np.testing.assert_allclose(out.origins, np.full((3, 3, 2), [8.0, 10.0]))
    with pytest.raises(ConfigError):
        crop_dataset(ds, q=(5, 5, 0, 10))
    with pytest.raises(CalibrationError):
        crop_dataset(ds, q=(5, 6, 10, 11))  # only the masked pixel is left


def test_bad_mask_shape_is_an_error():
    with pytest.raises(DataValueError):
        beam_stop_mask(np.ones((8, 8)), mask=np.zeros((4, 4), bool))


def test_beam_behind_the_beam_stop_uses_the_ring_centre():
    shape = (64, 64)
    yy, xx = np.indices(shape)
    centre = (31.6, 32.3)
    image = 10.0 + 300 * np.exp(-((np.hypot((yy - centre[0]) / 1.05, (xx - centre[1]) / 0.95) - 20) ** 2) / 3)
    stop = (np.hypot(yy - 31.5, xx - 31.5) <= 6) | ((np.abs(yy - 31.5) <= 2) & (xx <= 31))
    image[stop] = 0.05
    data = np.random.default_rng(0).poisson(np.broadcast_to(image, (3, 3, *shape))).astype(np.float32)
    out, report = calibrate(
        Dataset4D(data), engine=Engine(progress=False), ellipse=True, correct_shift=True, origin="com"
    )
    assert out.mask[stop].all()
    assert any("behind the beam stop" in w for w in report.warnings)
    assert out.origins is None and not report.shift_corrected
    assert out.calibration.origin == pytest.approx(centre, abs=0.1)  # the ellipse centre
    a, b, angle = out.calibration.ellipse
    assert a / b == pytest.approx(1.05 / 0.95, rel=0.01)
    assert abs(np.degrees(angle) - 90.0) < 1.0 or abs(np.degrees(angle) + 90.0) < 1.0
    with pytest.raises(CalibrationError, match="behind the beam stop"):
        calibrate(Dataset4D(data), engine=Engine(progress=False), strict=True, origin="com")
    # origin='auto' (default): the centre of symmetry of the ring, at every position
    out, report = calibrate(Dataset4D(data), engine=Engine(progress=False), ellipse=True)
    assert report.origin_method == "symmetry" and "behind the beam stop" in report.origin_choice
    np.testing.assert_allclose(out.origins, np.broadcast_to(centre, (3, 3, 2)), atol=0.1)


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    factor=st.integers(1, 4),
    ny=st.integers(1, 4),
    nx=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_binning_keeps_the_total(factor, ny, nx, seed):
    image = np.random.default_rng(seed).random((3, ny * factor, nx * factor)).astype(np.float32)
    binned = bin_patterns(image, factor)
    assert binned.shape == (3, ny, nx)
    np.testing.assert_allclose(binned.sum(axis=(1, 2)), image.sum(axis=(1, 2)), rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(dy=st.floats(-3, 3), dx=st.floats(-3, 3), seed=st.integers(0, 2**16))
def test_shift_keeps_total_non_negativity_and_moves_the_centre_of_mass(dy, dx, seed):
    image = np.zeros((20, 20), np.float32)
    image[6:14, 6:14] = np.random.default_rng(seed).random((8, 8)).astype(np.float32) + 0.1
    out = shift_patterns(image, (dy, dx))
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(), image.sum(), rtol=1e-5)
    yy, xx = np.indices(image.shape)
    com = lambda a: np.array([(a * yy).sum(), (a * xx).sum()]) / a.sum()  # noqa: E731
    np.testing.assert_allclose(com(out) - com(image), [dy, dx], atol=1e-4)
