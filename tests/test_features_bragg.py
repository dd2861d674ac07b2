"""BD: disk detection, rasterisation and the Bragg vector map."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemnmf.errors import ConfigError
from stemnmf.features import (
    bragg_vector_map,
    find_disks,
    masked_fraction,
    probe_kernel,
    probe_template,
    rasterize_disks,
    synthetic_disk,
)
from stemnmf.features.bragg import _noise_model, grid_columns


def disks(shape, centres, radius, amplitudes):
    y, x = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for (cy, cx), a in zip(centres, amplitudes):
        img += a * np.clip(radius + 0.5 - np.hypot(y - cy, x - cx), 0, 1)
    return img


def random_centres(rng, n, shape, margin, spacing, first):
    pts = [first]
    while len(pts) < n:
        p = (rng.uniform(margin, shape[0] - margin), rng.uniform(margin, shape[1] - margin))
        if all(math.hypot(p[0] - q[0], p[1] - q[1]) > spacing for q in pts):
            pts.append(p)
    return np.array(pts)


def kernels(radius, shape):
    t = synthetic_disk(radius)
    return probe_kernel(t, shape), probe_kernel(t, shape, background="none")


def match(found, truth):
    """Distance from every true disk to the nearest found one, and from every found one to the truth."""
    d = np.hypot(found[:, None, 0] - truth[None, :, 0], found[:, None, 1] - truth[None, :, 1])
    return d.min(axis=0), d.min(axis=1)


def test_synthetic_disk_is_centred_with_the_right_area():
    d = synthetic_disk(4.0)
    assert d.shape[0] % 2 == 1
    c = (d.shape[0] - 1) / 2
    y, x = np.mgrid[: d.shape[0], : d.shape[1]]
    assert (d * y).sum() / d.sum() == pytest.approx(c) and (d * x).sum() / d.sum() == pytest.approx(c)
    assert d.sum() == pytest.approx(math.pi * 16, rel=0.03)


def test_all_disks_found_within_half_a_pixel_on_a_noisy_background():
    rng = np.random.default_rng(3)
    shape = (96, 96)
    y, x = np.mgrid[:96, :96]
    kft, rft = kernels(3.0, shape)
    for _ in range(5):
        truth = random_centres(rng, 12, shape, 8, 9.0, (47.3, 48.1))
        amps = np.r_[200.0, rng.uniform(10, 60, 11)]
        diffuse = 20 * np.exp(-np.hypot(y - 47.3, x - 48.1) / 15)  # background falling from the beam
        img = rng.poisson(5 * (disks(shape, truth, 3.0, amps) + 2 + diffuse)) / 5.0
        found = find_disks(img, kft, refine_ft=rft, min_spacing=5, edge=4)
        found = found[np.isfinite(found[:, 0])]
        to_found, to_truth = match(found, truth)
        assert to_found.max() < 0.5  # every disk found, within half a pixel
        assert to_truth.max() < 0.5  # nothing else found
        assert found.shape[0] == truth.shape[0]
        # strongest first: the direct beam
        assert math.hypot(found[0, 0] - 47.3, found[0, 1] - 48.1) < 0.5


def test_all_disks_of_a_simulated_pattern_found_within_half_a_pixel():
    from stemnmf.simulate import Optics, diffraction_pattern, fcc, zone_axis_rotation
    from stemnmf.simulate.physics import Reflections, kinematic_intensity

    crystal = fcc()
    optics = Optics(det_shape=(96, 96), q_pixel=0.025)
    radius = optics.disk_radius
    kft, rft = kernels(radius, optics.det_shape)
    reflections = Reflections.of(crystal, optics)
    margin = radius + 3
    for uvw, turn in [((0, 0, 1), 13.0), ((1, 1, 1), 7.0), ((1, 1, 2), 71.0)]:
        rotation = zone_axis_rotation(crystal, uvw, turn)
        pattern = diffraction_pattern(crystal, rotation, 40.0, optics)
        centres, s = reflections.in_lab(rotation, optics)
        intensity = kinematic_intensity(reflections.prefactor, s, 40.0)
        beam = 1.0 - intensity.sum()
        inside = np.all((centres > margin) & (centres < 96 - 1 - margin), axis=1)
        visible = inside & (intensity >= 0.03 * max(beam, intensity.max()))
        truth = np.vstack([optics.origin, centres[visible]])
        found = find_disks(pattern, kft, refine_ft=rft, min_relative=0.01, min_spacing=1.5 * radius,
                           edge=math.ceil(radius) + 1)
        found = found[np.isfinite(found[:, 0])]
        to_found, _ = match(found, truth)
        assert to_found.max() < 0.5, uvw  # every visible disk found within half a pixel
        _, to_any = match(found, np.vstack([optics.origin, centres]))
        assert to_any.max() < 0.5, uvw  # and every detection is a reflection


def test_vacuum_pattern_has_only_the_direct_beam():
    rng = np.random.default_rng(4)
    shape = (64, 64)
    probe = disks(shape, [(31.6, 32.2)], 4.0, [300.0])
    template = probe_template(probe, (31.6, 32.2), 4.0)
    kft = probe_kernel(template, shape)
    rft = probe_kernel(template, shape, background="none")
    for _ in range(5):
        img = rng.poisson(probe + 0.5).astype(np.float32)
        found = find_disks(img, kft, refine_ft=rft, min_spacing=6, edge=5)
        found = found[np.isfinite(found[:, 0])]
        assert found.shape[0] == 1
        assert math.hypot(found[0, 0] - 31.6, found[0, 1] - 32.2) < 0.5


def test_masked_disks_are_dropped_and_masked_values_never_matter():
    shape = (64, 64)
    truth = np.array([(32.0, 32.0), (12.3, 40.2), (50.1, 20.7), (40.4, 51.2)])
    img = disks(shape, truth, 3.0, [100, 30, 30, 30])
    mask = np.zeros(shape, bool)
    mask[46:56, 15:26] = True  # covers the disk at (50.1, 20.7)
    kft, rft = kernels(3.0, shape)
    frac = masked_fraction(mask, 3.0)
    wild = img.copy()
    wild[mask] = 1e6
    a = find_disks(img, kft, refine_ft=rft, mask=mask, masked_fraction_map=frac)
    b = find_disks(wild, kft, refine_ft=rft, mask=mask, masked_fraction_map=frac)
    np.testing.assert_array_equal(a, b)
    a = a[np.isfinite(a[:, 0])]
    to_found, _ = match(a, truth)
    assert a.shape[0] == 3 and to_found[[0, 1, 3]].max() < 0.5 and to_found[2] > 5


def test_hybrid_correlation_finds_the_same_disks():
    shape = (64, 64)
    truth = np.array([(32.0, 32.0), (12.3, 40.2), (50.1, 20.7), (40.4, 51.2)])
    img = disks(shape, truth, 3.0, [100, 30, 30, 30]) + 1
    kft, rft = kernels(3.0, shape)
    found = find_disks(img, kft, refine_ft=rft, corr_power=0.5, corr_sigma=0.5)
    found = found[np.isfinite(found[:, 0])]
    to_found, to_truth = match(found, truth)
    assert found.shape[0] == 4 and to_found.max() < 0.5


def test_max_disks_and_spacing_limit_the_detections():
    shape = (64, 64)
    truth = np.array([(32.0, 32.0), (12.0, 40.0), (50.0, 20.0), (40.0, 51.0), (15.0, 15.0)])
    img = disks(shape, truth, 3.0, [100, 50, 40, 30, 20])
    kft, _ = kernels(3.0, shape)
    found = find_disks(img, kft, max_disks=3)
    assert found.shape == (3, 3)
    to_found, _ = match(found, truth)
    assert np.all(to_found[:3] < 0.5)  # the three strongest
    # two disks closer than min_spacing: only the stronger one stays
    pair = disks(shape, [(32.0, 32.0), (32.0, 39.0)], 3.0, [100, 40])
    found = find_disks(pair, kft, min_spacing=8)
    assert np.isfinite(found[:, 0]).sum() == 1


def test_rasterize_disks_by_hand():
    disks_ = np.full((2, 3, 3), np.nan, np.float32)
    origins = np.array([[20.0, 20.0], [21.0, 19.0]])
    disks_[0, 0] = (23.1, 14.1, 5.0)  # offset (3.1, -5.9) -> bin (1, -2) at bin size 3
    disks_[0, 1] = (20.2, 20.1, 99.0)  # the direct beam
    disks_[1, 0] = (21.0 + 4.6, 19.0, 2.0)  # offset (4.6, 0) -> bin (2, 0)
    grid = rasterize_disks(disks_, origins, bin_size=3.0, half_width=3, exclude_radius=1.0).toarray()
    side = 7
    assert grid.shape == (2, side * side)
    assert grid[0, (1 + 3) * side + (-2 + 3)] == pytest.approx(5.0)
    assert grid[1, (2 + 3) * side + 3] == pytest.approx(2.0)
    assert grid.sum() == pytest.approx(7.0)  # the beam was excluded
    counted = rasterize_disks(disks_, origins, bin_size=3.0, half_width=3, weight="count").toarray()
    assert counted.sum() == 3 and counted[0, 3 * side + 3] == 1  # beam included now, counted once
    bilinear = rasterize_disks(disks_, origins, bin_size=3.0, half_width=3, interpolation="bilinear",
                               exclude_radius=1.0).toarray()
    np.testing.assert_allclose(bilinear.sum(axis=1), [5.0, 2.0])  # weights shared, total kept
    gy, gx = grid_columns(3, 3.0)
    assert (gy[(1 + 3) * side + 1], gx[(1 + 3) * side + 1]) == (3.0, -6.0)
    with pytest.raises(ConfigError):
        rasterize_disks(disks_, origins, half_width=3, weight="volume")


def test_rasterize_disks_corrects_the_ellipse():
    a, b, phi = 12.0, 9.0, 0.0  # a axis along +qx
    disks_ = np.array([[[20.0, 20.0 + a, 1.0], [20.0 + b, 20.0, 1.0]]], np.float32)
    grid = rasterize_disks(disks_, (20.0, 20.0), (a, b, phi), bin_size=1.0, half_width=15).toarray()
    r = round(math.sqrt(a * b))  # both land on the circle of radius sqrt(ab)
    side = 31
    assert grid[0, 15 * side + 15 + r] == 1.0 and grid[0, (15 + r) * side + 15] == 1.0


def test_bragg_vector_map_sums_positions():
    disks_ = np.full((3, 2, 3), np.nan, np.float32)
    for i in range(3):
        disks_[i, 0] = (10.0 + 5, 10.0 - 2, 2.0)
    bvm = bragg_vector_map(disks_, (10.0, 10.0), half_width=8)
    assert bvm.shape == (17, 17)
    assert bvm[8 + 5, 8 - 2] == pytest.approx(6.0) and bvm.sum() == pytest.approx(6.0)


def counted_pattern(rng, shape, centres, counts, radius, background, gain=1.0):
    """Poisson counts (times ``gain``): disks holding ``counts`` electrons each on a flat ``background`` per pixel."""
    mean = disks(shape, centres, radius, np.asarray(counts) / (math.pi * radius**2)) + background
    return gain * rng.poisson(mean).astype(np.float32)


def test_noise_model_recovers_the_gain_and_the_read_noise():
    rng = np.random.default_rng(11)
    shape = (128, 128)
    y, x = np.mgrid[:128, :128]
    smooth = 0.5 + 8 * np.exp(-np.hypot(y - 60, x - 70) / 30)  # 0.5-8.5 electrons per pixel
    truth = random_centres(rng, 10, shape, 8, 12.0, (60.0, 70.0))
    for gain, read in [(1.0, 0.0), (0.2, 0.0), (3.7, 0.0), (2.0, 1.5), (0.5, 1.0)]:
        mean = smooth + disks(shape, truth, 3.0, np.r_[3000.0, rng.uniform(20, 200, 9)])  # per pixel
        img = gain * rng.poisson(np.broadcast_to(mean, (4,) + shape)) + rng.normal(0, read, (4,) + shape)
        mask = np.hypot(y - 60, x - 70) < 6  # the direct beam masked: the estimate uses the rest
        for m in (None, mask):
            g, v0 = _noise_model(img.astype(np.float32), m)
            if read == 0:  # Poisson counts times a gain: exact
                np.testing.assert_allclose(g, gain, rtol=0.1)
            for level in (0.5, 8.5):  # the variance of the background, electrons per pixel
                ratio = (g * gain * level + v0) / (gain**2 * level + read**2)
                low, high = (0.9, 1.1) if read == 0 else (0.6, 1.5)  # the noise level within 5 %, or 25 %
                assert np.all((ratio > low) & (ratio < high)), (gain, read, level, ratio)


def test_pure_poisson_background_gives_no_disks():
    rng = np.random.default_rng(12)
    shape = (96, 96)
    kft, rft = kernels(3.0, shape)
    for level in (0.02, 0.3, 4.0):  # sparse counts (most pixels 0) to a dense background
        for gain in (1.0, 3.7):
            img = gain * rng.poisson(level, (8,) + shape).astype(np.float32)
            found = find_disks(img, kft, refine_ft=rft, min_relative=0.0)
            assert np.isfinite(found[..., 0]).sum() == 0, (level, gain)


def test_the_same_disks_with_and_without_a_masked_direct_beam():
    """The noise level comes from the counts near each maximum: hiding the beam finds the same disks."""
    rng = np.random.default_rng(13)
    shape = (128, 128)
    y, x = np.mgrid[:128, :128]
    beam = (63.6, 64.2)
    mask = np.hypot(y - beam[0], x - beam[1]) < 7
    kft, rft = kernels(3.0, shape)
    for _ in range(4):
        truth = random_centres(rng, 13, shape, 10, 12.0, beam)[1:]
        truth = truth[np.hypot(truth[:, 0] - beam[0], truth[:, 1] - beam[1]) > 14]
        counts = rng.uniform(150, 1500, len(truth))  # each disk well above the noise of its counts
        halo = 0.1 + 3 * np.exp(-np.hypot(y - beam[0], x - beam[1]) / 10)  # sparse counts, diffuse round the beam
        img = counted_pattern(rng, shape, np.vstack([beam, truth]), np.r_[2e5, counts], 3.0, halo)
        seen = find_disks(img, kft, refine_ft=rft, min_relative=0.0)
        hidden = find_disks(img, kft, refine_ft=rft, min_relative=0.0, mask=mask,
                            masked_fraction_map=masked_fraction(mask, 3.0))
        seen = seen[np.isfinite(seen[:, 0])]
        hidden = hidden[np.isfinite(hidden[:, 0])]
        assert math.hypot(seen[0, 0] - beam[0], seen[0, 1] - beam[1]) < 0.5  # the beam, strongest
        to_found, to_truth = match(hidden, truth)
        assert to_found.max() < 0.5 and to_truth.max() < 0.5  # every disk, nothing else
        to_found, to_truth = match(seen[1:], truth)
        assert to_found.max() < 0.5 and to_truth.max() < 0.5
        assert hidden.shape[0] == seen.shape[0] - 1 == truth.shape[0]
