"""stemnmf.simulate.instrument: descan, distortions, beam stop, gain, bad pixels, noise, binning."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy import ndimage

import stemnmf.simulate as sm
from stemnmf.cli import main
from stemnmf.errors import ConfigError
from stemnmf.io import load
from stemnmf.simulate.instrument import (
    InstrumentModel,
    InstrumentParameters,
    beam_stop_transmission,
    build_instrument,
    load_instrument_truth,
)
from stemnmf.simulate.physics import disk_stencils

# a small scan that still has a visible direct beam of a few pixels: 'tiny' sample on a finer detector
SMALL = dict(det=64, q_pixel=0.02, noise=False)


def _com(pattern, centre, radius):
    yy, xx = np.indices(pattern.shape)
    near = np.hypot(yy - centre[0], xx - centre[1]) < radius
    w = pattern * near
    return np.array([(w * yy).sum(), (w * xx).sum()]) / w.sum()


def test_realistic_instrument_is_bit_identical_per_seed_and_blocking():
    a, truth_a = sm.simulate("tiny", seed=4, instrument="realistic")
    b, _ = sm.simulate("tiny", seed=4, instrument="realistic", lazy=True, n_threads=2)
    data = np.asarray(a.data)
    np.testing.assert_array_equal(np.asarray(b.data[3:7]), data[3:7])
    np.testing.assert_array_equal(np.asarray(b.data), data)
    c, _ = sm.simulate("tiny", seed=5, instrument="realistic")
    assert not np.array_equal(np.asarray(c.data), data)
    # the beam position is not given away: it is in the truth only
    assert a.calibration.origin is None
    assert truth_a.extra["instrument/origin"].shape == (12, 12, 2)


def test_descan_moves_the_beam_to_its_true_origin():
    descan, angle = 6.0, 30.0
    ds, truth = sm.simulate("tiny", seed=1, descan=descan, descan_angle=angle, descan_quadratic=1.0, **SMALL)
    origin = truth.extra["instrument/origin"]
    # by construction: across the scan columns the beam moves by `descan` along the angle
    a = math.radians(angle)
    step = origin[6, -1] - origin[6, 0]
    quadratic_row = 4.0 * 1.0 * ((6 / 11 - 0.5) ** 2)
    np.testing.assert_allclose(step, [descan * math.sin(a), descan * math.cos(a)], atol=1e-5)
    # and down the rows by `descan` 90 degrees further (plus the symmetric quadratic term, equal at both ends)
    np.testing.assert_allclose(origin[-1, 5] - origin[0, 5], [descan * math.cos(a), -descan * math.sin(a)], atol=1e-5)
    assert origin[6, 0, 0] == pytest.approx(32 + descan * (6 / 11 - 0.5) * math.cos(a) - 3 * math.sin(a) + quadratic_row, abs=1e-4)
    data = np.asarray(ds.data)
    radius = ds.metadata["simulation"]["disk_radius_pixels"]
    for (i, j) in [(0, 0), (0, 11), (11, 0), (11, 11), (5, 7)]:
        measured = _com(data[i, j], origin[i, j], radius + 2.5)
        np.testing.assert_allclose(measured, origin[i, j], atol=0.1)


def _ring_model(params, size=96, radius=30.0):
    """An InstrumentModel around a fake ideal model whose every pattern is a thin ring about the centre."""
    yy, xx = np.indices((size, size))
    centre = (size // 2, size // 2)
    ring = np.exp(-0.5 * ((np.hypot(yy - centre[0], xx - centre[1]) - radius) / 1.0) ** 2).astype(np.float32)

    class Ideal:
        scan_shape = (1, 2)
        det_shape = (size, size)
        token = "ring"

        def render(self, start, stop):
            return np.broadcast_to(ring, (stop - start, 2, size, size)).copy()

    return build_instrument(Ideal(), params, noise=False, seed=0, centre=centre), centre


def _ray_radius(image, centre, angle_deg):
    t = math.radians(angle_deg)
    r = np.arange(10, 45, 0.05)
    values = ndimage.map_coordinates(image, [centre[0] + r * math.sin(t), centre[1] + r * math.cos(t)], order=1)
    return float((r * values).sum() / values.sum())


def test_ellipse_and_rotation_stretch_the_ring_along_the_given_axis():
    ratio, angle = 1.1, 25.0
    model, centre = _ring_model(InstrumentParameters(ellipse_ratio=ratio, ellipse_angle=angle, detector_rotation=40.0))
    image = model.render(0, 1)[0, 0]
    along_a = _ray_radius(image, centre, angle)
    along_b = _ray_radius(image, centre, angle + 90)
    # area kept: a = r sqrt(ratio), b = r / sqrt(ratio)
    assert along_a == pytest.approx(30 * math.sqrt(ratio), abs=0.1)
    assert along_b == pytest.approx(30 / math.sqrt(ratio), abs=0.1)
    assert along_a / along_b == pytest.approx(ratio, abs=0.005)
    ratio_t, angle_t = load_truth_ellipse(model)
    assert ratio_t == ratio and angle_t == pytest.approx(math.radians(angle))


def load_truth_ellipse(model: InstrumentModel):
    return tuple(model.truth()["instrument/ellipse"])


def test_beam_stop_arm_penumbra_and_leak():
    p = InstrumentParameters(beam_stop="arm", beam_stop_radius=6, beam_stop_width=8, beam_stop_angle=0.0,
                             beam_stop_penumbra=1.0, beam_stop_leak=0.01)  # fmt: skip
    t = beam_stop_transmission(p, (64, 64), (32, 32))
    assert t[32, 32] == pytest.approx(0.01, abs=1e-6)  # the leak over the beam
    assert t[32, 60] == pytest.approx(0.01, abs=1e-4)  # under the arm (towards +qx)
    assert t[32, 4] == pytest.approx(1.0, abs=1e-6)  # the other side is open
    assert t[50, 60] == pytest.approx(1.0, abs=1e-6)
    assert t[32 - 6, 32] == pytest.approx(0.5 * (1 + 0.01), abs=1e-6)  # half way on the disk's edge
    assert t[32 + 4, 50] == pytest.approx(0.5 * (1 + 0.01), abs=1e-6)  # and on the arm's edge


def test_gain_bad_pixels_dark_offset_saturation():
    params = dict(gain_rms=0.1, hot_pixels=7, dead_pixels=3, hot_pixel_level=500.0, dark_offset=0.5, saturation=2000.0)
    ds, truth = sm.simulate("tiny", seed=2, **params, **SMALL)
    ideal, _ = sm.simulate("tiny", seed=2, **SMALL)
    data, clean = np.asarray(ds.data), np.asarray(ideal.data)
    gain = truth.extra["instrument/gain"]
    assert gain.mean() == pytest.approx(1.0, abs=0.02) and gain.std() == pytest.approx(0.1, rel=0.05)
    hot, dead = truth.extra["instrument/hot_pixels"], truth.extra["instrument/dead_pixels"]
    assert len(hot) == 7 and len(dead) == 3
    assert (data[:, :, hot[:, 0], hot[:, 1]] >= 500 - 3).all()
    assert (data[:, :, dead[:, 0], dead[:, 1]] == 0).all()
    assert data.max() <= 2000.0 and (data == 2000.0).any()  # the saturated direct beam
    good = np.ones((64, 64), bool)
    good[hot[:, 0], hot[:, 1]] = good[dead[:, 0], dead[:, 1]] = False
    dark = data - clean * gain  # noise-free: what is left is the fixed dark offset (where not saturated)
    unsaturated = (data < 2000.0).all(axis=(0, 1)) & good
    offset = dark[0, 0][unsaturated]
    np.testing.assert_allclose(dark[3, 5][unsaturated], offset, atol=1e-3)
    assert (offset < -0.3).sum() > 100 and offset.std() == pytest.approx(0.5, rel=0.1)
    mask = truth.extra["instrument/mask"].astype(bool)
    assert mask.sum() == 10 and mask[hot[:, 0], hot[:, 1]].all()


def test_binning_sums_pixels_and_scales_the_calibration():
    plain, _ = sm.simulate("tiny", seed=3, **SMALL)
    binned, truth = sm.simulate("tiny", seed=3, bin=2, dark_offset=0.0, gain_rms=0.0, **{**SMALL})
    assert binned.shape == (12, 12, 32, 32)
    a, b = np.asarray(plain.data), np.asarray(binned.data)
    np.testing.assert_allclose(b, a.reshape(12, 12, 32, 2, 32, 2).sum(axis=(3, 5)), rtol=1e-5, atol=1e-4)
    assert binned.calibration.q_pixel == pytest.approx(2 * plain.calibration.q_pixel)
    # the centre pixel 32 of the unbinned detector is at (32 - 0.5) / 2 on the binned one
    np.testing.assert_allclose(truth.extra["instrument/origin"], 15.75, atol=1e-6)


def test_noise_poisson_and_read_noise_are_drawn_per_row():
    ds, _ = sm.simulate("tiny", seed=6, read_noise=1.0, det=64, q_pixel=0.02)
    data = np.asarray(ds.data)
    assert np.any(data != np.round(data)) and data.min() < -2.5  # Gaussian read noise on Poisson counts
    again, _ = sm.simulate("tiny", seed=6, read_noise=1.0, det=64, q_pixel=0.02, lazy=True)
    np.testing.assert_array_equal(np.asarray(again.data[7]), data[7])


def test_bad_instrument_values_are_config_errors():
    with pytest.raises(ConfigError, match="ellipse_ratio"):
        sm.simulate("tiny", ellipse_ratio=0.9)
    with pytest.raises(ConfigError, match="beam_stop"):
        sm.simulate("tiny", beam_stop="square")
    with pytest.raises(ConfigError, match="unknown instrument"):
        sm.simulate("tiny", instrument="broken")
    with pytest.raises(ConfigError, match="bin"):
        sm.simulate("tiny", bin=100)


def test_cli_instrument_preset_with_set_and_truth_in_file(tmp_path, capsys):
    out = tmp_path / "r.h5"
    argv = ["simulate", "--preset", "tiny", "--instrument", "realistic", "--set", "descan=3", "--seed", "2", "-o", str(out)]
    assert main(argv) == 0
    truth = load_instrument_truth(out)
    assert truth["origin"].shape == (12, 12, 2) and truth["mask"].shape == (48, 48)
    params = load(out).metadata["simulation"]["parameters"]["instrument"]
    assert params["descan"] == 3 and params["beam_stop"] == "arm" and params["ellipse_ratio"] == 1.04
    with h5py.File(out) as h5:
        assert "truth/instrument/gain" in h5
    capsys.readouterr()
    assert main(["simulate", "-o", str(tmp_path / "x.h5"), "--set", "ellipse_ratio=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stemnmf: error:") and "ellipse_ratio" in err and err.count("\n") == 0


# -- the move of a pattern (session 32): a descan translates the pattern, it does not blur it ------------


def _disk_model(params, centre=(32.0, 32.0), size=64, scan=(1, 3)):
    """An InstrumentModel around a fake ideal model whose every pattern is one simulator disk (radius 4 px,
    detector blur 0.5 px, unit total) at ``centre``; returns the model and that disk."""
    stencil, corner = disk_stencils([centre], 4.0, 0.5)
    disk = np.zeros((size, size), np.float32)
    n = stencil.shape[1]
    disk[corner[0, 0] : corner[0, 0] + n, corner[0, 1] : corner[0, 1] + n] = stencil[0]

    class Ideal:
        scan_shape = scan
        det_shape = (size, size)
        token = "disk"

        def render(self, start, stop):
            return np.broadcast_to(disk, (stop - start, scan[1], size, size)).copy()

    return build_instrument(Ideal(), params, noise=False, seed=0, centre=(32.0, 32.0)), disk


def _moments(image):
    """(centroid (qy, qx), variance (qy, qx)) of an image."""
    yy, xx = np.indices(image.shape)
    w = image / image.sum()
    centroid = np.array([(w * yy).sum(), (w * xx).sum()])
    return centroid, np.array([(w * (yy - centroid[0]) ** 2).sum(), (w * (xx - centroid[1]) ** 2).sum()])


@pytest.mark.parametrize("shift", [(0.5, -0.5), (0.3, 0.7), (-2.5, 3.25)])
def test_a_sub_pixel_descan_moves_the_disk_without_blurring_it(shift):
    model, disk = _disk_model(InstrumentParameters(origin_offset=shift))
    moved = model.render(0, 1)[0, 0]
    centroid, variance = _moments(disk)
    moved_centroid, moved_variance = _moments(moved)
    np.testing.assert_allclose(moved_centroid - centroid, shift, atol=0.01)
    # a bilinear move by a fraction f adds f (1 - f) px^2 (0.25 at half a pixel, 0.21 at 0.3 / 0.7): far outside
    np.testing.assert_allclose(moved_variance, variance, atol=0.04)
    assert moved.sum() == pytest.approx(1.0, rel=0.005)  # away from the edges the total is kept
    assert moved.min() >= 0.0
    # the check can fail: the same move by bilinear interpolation (the simulator before session 32) blurs
    yy, xx = np.indices(disk.shape).astype(np.float64)
    bilinear = ndimage.map_coordinates(disk, [yy - shift[0], xx - shift[1]], order=1)
    assert (_moments(bilinear)[1] - variance).min() > 0.15


def test_a_whole_pixel_descan_is_an_exact_array_shift_zero_filled():
    model, disk = _disk_model(InstrumentParameters(origin_offset=(3.0, -5.0)))
    moved = model.render(0, 1)[0, 0]
    expected = np.zeros_like(disk)
    expected[3:, :-5] = disk[:-3, 5:]
    np.testing.assert_array_equal(moved, expected)
    # moved past the edge: what comes in is zero
    far, _ = _disk_model(InstrumentParameters(origin_offset=(0.0, 30.0)))
    assert (far.render(0, 1)[0, 0][:, :30] == 0).all()


def test_the_distortion_is_about_the_centre_then_the_whole_pattern_moves():
    ellipse = dict(ellipse_ratio=1.1, ellipse_angle=25.0, detector_rotation=40.0)
    still, _ = _ring_model(InstrumentParameters(**ellipse))
    moved, _ = _ring_model(InstrumentParameters(origin_offset=(2.0, -3.0), **ellipse))
    a, b = still.render(0, 1)[0, 0], moved.render(0, 1)[0, 0]
    np.testing.assert_allclose(b[2:, :-3], a[:-2, 3:], atol=1e-6)


def test_jittered_descan_rows_are_the_same_whatever_the_rows_drawn_together():
    model, _ = _disk_model(InstrumentParameters(descan=3.0, descan_jitter=0.4), scan=(4, 3))
    together = model.render(0, 4)
    for row in range(4):
        np.testing.assert_array_equal(model.render(row, row + 1)[0], together[row])
    centroids = np.array([[_moments(together[i, j])[0] for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(centroids, model.truth()["instrument/origin"], atol=0.01)
