"""Origin from the diffraction (symmetry), beam-stop shadows, origin='auto', accuracy checks and refusal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import stemnmf.simulate as sm
from stemnmf.calibrate import calibrate
from stemnmf.calibrate.symmetry import block_edges, block_sums_kernel, shadow_mask, symmetry_center, symmetry_centers
from stemnmf.cli import main
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError
from stemnmf.io import Dataset4D, save_scan

ENGINE = dict(progress=False)


def _spots_and_ring(centre, shape=(96, 96), seed=0, n_pairs=6, ring=30.0):
    """Friedel pairs of Gaussian disks and a ring about a known centre (no direct beam)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape).astype(float)
    image = 2.0 + 40.0 * np.exp(-0.5 * ((np.hypot(yy - centre[0], xx - centre[1]) - ring) / 1.5) ** 2)
    for _ in range(n_pairs):
        r, t, height = rng.uniform(12, 40), rng.uniform(0, np.pi), rng.uniform(50, 200)
        for sign in (1, -1):
            cy, cx = centre[0] + sign * r * np.sin(t), centre[1] + sign * r * np.cos(t)
            image += height * np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0**2)
    return image


def test_symmetry_centre_of_friedel_pairs_with_a_masked_arm():
    centre = (45.3, 50.8)
    image = _spots_and_ring(centre)
    yy, xx = np.indices(image.shape)
    arm = (np.hypot(yy - 47.5, xx - 47.5) < 9) | ((np.abs(yy - 47.5) < 4) & (xx > 47))
    image[arm] = 0.0  # the shadow, not symmetric
    noisy = np.random.default_rng(1).poisson(image).astype(float)
    found, score = symmetry_center(noisy, mask=arm)
    assert found == pytest.approx(centre, abs=0.15)
    assert score > 5
    # the unmasked shadow pulls the centre away: the mask is what makes it work
    biased, _ = symmetry_center(noisy)
    assert np.hypot(biased[0] - centre[0], biased[1] - centre[1]) > 0.15


def test_symmetry_scores_separate_noise_from_diffraction():
    rng = np.random.default_rng(2)
    _, noise_scores = symmetry_centers(rng.poisson(20.0, (4, 64, 64)).astype(float))
    _, scores = symmetry_centers(np.stack([rng.poisson(_spots_and_ring((31.5, 32.2), (64, 64), seed=s, ring=20)) for s in range(4)]))
    assert noise_scores.max() < 4.5 < scores.min()


def test_shadow_mask_finds_an_arm_and_the_stop_it_holds():
    centre = (47.2, 48.9)
    image = _spots_and_ring(centre, n_pairs=0) + 5.0
    yy, xx = np.indices(image.shape)
    r = np.hypot(yy - 48, xx - 48)
    arm = (r < 8) | ((np.abs(yy - 48) < 3) & (xx > 48))
    image[arm] *= 0.001
    shadow = shadow_mask(image, centre)
    assert shadow[arm].mean() > 0.97
    grown = ndimage.binary_dilation(arm, structure=np.ones((3, 3), bool), iterations=5)
    assert not (shadow & ~grown).any()  # the arm, its penumbra margin and the stop disk about the centre found, not the open detector
    assert not shadow[:, :30].any()


def test_block_edges_cover_the_scan():
    rows, cols = block_edges((100, 37), 10)
    assert rows.tolist() == list(range(0, 101, 10)) and cols[0] == 0 and cols[-1] == 37 and len(cols) == 11


@pytest.mark.parametrize("rows", [1, 3, 7, 100])
def test_block_sums_are_the_sums_of_their_positions_for_any_chunking(rows):
    data = np.random.default_rng(4).poisson(5.0, (11, 9, 6, 5)).astype(np.float32)
    row_edges, col_edges = block_edges((11, 9), 3)  # blocks of 4 x 3 positions, the last row of blocks 3 high
    total, peak, blocks = Engine(chunk_rows=rows, **ENGINE).reduce(
        block_sums_kernel, Dataset4D(data), combine=["sum", "max", "sum"],
        kwargs=dict(row_edges=row_edges, col_edges=col_edges),
    )
    for by in range(len(row_edges) - 1):
        for bx in range(len(col_edges) - 1):
            part = data[row_edges[by]:row_edges[by + 1], col_edges[bx]:col_edges[bx + 1]]
            np.testing.assert_array_equal(blocks[by, bx], part.sum(axis=(0, 1), dtype=np.float64))  # integer counts
    np.testing.assert_array_equal(total, data.sum(axis=(0, 1), dtype=np.float64))
    np.testing.assert_array_equal(peak, data.max(axis=(0, 1)))


def _ring_and_a_fixed_blob(sy=12, sx=12, size=128, seed=6):
    """Friedel pairs and a ring about an origin that moves 0.4 px per position (descan), no direct beam,
    and a bright compact spot that stays put 20 px from the centre (what 'com' takes for the beam)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size)).astype(float)
    data = np.empty((sy, sx, size, size), np.float32)
    truth = np.empty((sy, sx, 2))
    blob = 400.0 * np.exp(-0.5 * ((yy - 63.5) ** 2 + (xx - 83.5) ** 2) / 2.0**2)
    for i in range(sy):
        for j in range(sx):
            truth[i, j] = (61.0 + 0.4 * i, 62.0 + 0.4 * j)
            image = _spots_and_ring(truth[i, j], (size, size), seed=seed, n_pairs=8, ring=40.0)
            data[i, j] = rng.poisson(image + blob)
    return data, truth


def test_auto_checks_com_on_a_binned_detector_and_switches_to_symmetry_when_they_disagree():
    data, truth = _ring_and_a_fixed_blob()
    out, report = calibrate(Dataset4D(data), engine=Engine(**ENGINE), beam_stop=None, on_unreliable="warn")
    assert report.origin_method == "symmetry" and "from the symmetry centres" in report.origin_choice
    error = np.sqrt(np.mean(np.sum((out.origins - truth) ** 2, axis=-1)))
    assert error < 0.5  # the ring's centre, not the fixed spot 20 px away


def test_the_binned_check_of_com_lands_on_the_true_origins():
    # 128-pixel detector: the check bins it 2 x 2; its centres must come back in the detector's pixels
    dataset, truth = sm.simulate("ag2", scan=16, det=128, seed=23, descan=3.0, descan_jitter=0.05)
    out, report = calibrate(dataset, engine=Engine(**ENGINE))
    assert report.origin_method == "com" and "px rms from the symmetry centres" in report.origin_choice
    true = truth.extra["instrument/origin"]
    assert report.symmetry.centers.shape[:2] == (4, 4)  # 8 x 8 blocks of 2 x 2 positions, merged 2 x 2
    assert np.sqrt(np.mean(np.sum((report.symmetry_fit.fitted - true) ** 2, axis=-1))) < 0.25  # 0.5 px off without the bin offset


@pytest.fixture(scope="module")
def realistic():
    # the instrument (scaled to a 96-pixel detector): descan, jitter, ellipse, beam-stop arm, gain, hot pixels
    return sm.simulate("ag2", scan=24, det=96, seed=21, instrument="realistic")


def test_origin_with_the_beam_behind_the_stop_is_found_from_symmetry(realistic):
    dataset, truth = realistic
    out, report = calibrate(dataset, engine=Engine(**ENGINE))
    true = truth.extra["instrument/origin"]
    assert report.origin_method == "symmetry" and "beam stop" in report.origin_choice
    error = np.sqrt(np.mean(np.sum((out.origins - true) ** 2, axis=-1)))
    assert error < 0.5
    stop = truth.extra["instrument/beam_stop"].astype(bool)
    # the shadow is masked (all but the end of the arm in the detector corner, where rings are cut)
    assert out.mask[stop].mean() > 0.85
    assert report.quality.reliable and report.quality.origin_rms < 1.0
    results = report.to_results()
    assert results["/calibration/origin_method"] == "symmetry"
    assert results["/calibration/quality/reliable"] == 1
    assert results["/calibration/symmetry/centers"].shape[2] == 2


def test_com_is_kept_where_the_beam_is_visible_and_agrees():
    dataset, truth = sm.simulate("ag2", scan=20, det=96, seed=22, descan=4.0, descan_jitter=0.1)
    out, report = calibrate(dataset, engine=Engine(**ENGINE))
    assert report.origin_method == "com" and "px rms from the symmetry centres" in report.origin_choice
    error = np.sqrt(np.mean(np.sum((out.origins - truth.extra["instrument/origin"]) ** 2, axis=-1)))
    assert error < 0.2
    # and the symmetry centres alone land on the same plane
    sym = report.symmetry_fit.fitted
    assert np.sqrt(np.mean(np.sum((sym - truth.extra["instrument/origin"]) ** 2, axis=-1))) < 0.5


def _scattered_rings(n=8, size=48, seed=3):
    """Every position a ring about its own random centre (no beam): no smooth origin exists."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    data = np.empty((n, n, size, size), np.float32)
    for i in range(n):
        for j in range(n):
            cy, cx = 23.5 + rng.uniform(-7, 7, 2)
            data[i, j] = 1.0 + 200 * np.exp(-0.5 * ((np.hypot(yy - cy, xx - cx) - 12) / 1.2) ** 2)
    return rng.poisson(data).astype(np.float32)


def test_origins_scattering_more_than_a_disk_radius_stop_the_calibration():
    dataset = Dataset4D(_scattered_rings())
    with pytest.raises(CalibrationError, match="scatter by .* more than a disk radius"):
        calibrate(dataset, engine=Engine(**ENGINE), origin="symmetry")
    out, report = calibrate(dataset, engine=Engine(**ENGINE), origin="symmetry", on_unreliable="warn")
    assert not report.quality.reliable and report.quality.origin_rms > report.quality.disk_radius
    assert any(w.startswith("CALIBRATION UNRELIABLE") for w in report.warnings)
    assert "CALIBRATION UNRELIABLE" in report.summary()
    assert report.to_results()["/calibration/quality/reliable"] == 0


def test_cli_run_refuses_with_exit_2_or_warns_loudly(tmp_path, capsys):
    path = tmp_path / "scattered.h5"
    save_scan(path, Dataset4D(_scattered_rings()))
    argv = ["run", str(path), "-o", str(tmp_path / "out"), "--origin", "symmetry", "--k", "2", "--no-report"]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stemnmf: error:")]
    assert len(errors) == 1 and "unreliable" in errors[0] and "--calibration-unreliable warn" in errors[0]
    assert not (tmp_path / "out" / "results.h5").exists()
    assert main(argv + ["--calibration-unreliable", "warn"]) == 0
    out = capsys.readouterr().out
    assert "WARNING:    CALIBRATION UNRELIABLE" in out


def _sparse_spot_ring(n_spots, ratio=1.04, angle_deg=25.0, radius=34.6, seed=0):
    """A ring of a few Bragg disks on an ellipse (a/b = ratio, long axis at angle) about (64, 64)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((128, 128)).astype(float)
    t = np.radians(angle_deg)
    axis_a = np.array([np.sin(t), np.cos(t)])
    axis_b = np.array([axis_a[1], -axis_a[0]])
    stretch = np.sqrt(ratio) * np.outer(axis_a, axis_a) + np.outer(axis_b, axis_b) / np.sqrt(ratio)
    image = np.full((128, 128), 0.01)
    points = []
    for theta in rng.uniform(0, 2 * np.pi, n_spots):
        p = np.array([64.0, 64.0]) + stretch @ (radius * np.array([np.sin(theta), np.cos(theta)]))
        points.append(p)
        image += 10.0 * (np.hypot(yy - p[0], xx - p[1]) < 2.65)
    return image, np.array(points)


def test_centred_ellipse_fit_of_a_few_spots():
    from stemnmf.calibrate.ellipse import fit_centred_ellipse_to_points, fit_ellipse

    image, points = _sparse_spot_ring(12)
    _, a, b, angle, rms, used = fit_centred_ellipse_to_points(points[:, 0], points[:, 1], (64.0, 64.0))
    assert a / b == pytest.approx(1.04, abs=1e-6) and np.degrees(angle) == pytest.approx(25.0, abs=1e-4)
    assert a * b == pytest.approx(34.6**2, rel=1e-6) and rms < 1e-6
    # from the image: the known centre and only the directions that see a spot
    fit = fit_ellipse(image, center=(64, 64), ring=(30, 40), fix_center=True, min_relative_height=0.25)
    assert fit.axis_ratio == pytest.approx(1.04, abs=0.005) and np.degrees(fit.angle) == pytest.approx(25.0, abs=3)
