"""Polar-elliptical geometry, radial profiles, ring finding, AA and RV on small synthetic patterns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemnmf.errors import CalibrationError, ConfigError
from stemnmf.features import (
    PolarGeometry,
    angular_average,
    detector_coordinates,
    edge_radius,
    estimate_beam_radius,
    find_origin,
    find_rings,
    polar_coordinates,
    polar_transform,
    radial_profile,
    radial_variance,
)


def disks(shape, centres, radius, amplitudes):
    """Soft-edged disks (1 px linear edge) at sub-pixel centres."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for (cy, cx), a in zip(centres, amplitudes):
        img += a * np.clip(radius + 0.5 - np.hypot(y - cy, x - cx), 0, 1)
    return img.astype(np.float32)


def spots_at(origin, radius, angles_deg, ellipse=None):
    """Detector positions of spots at corrected (radius, angle), drawn through the ellipse by hand."""
    t = np.radians(angles_deg)
    cy, cx = radius * np.sin(t), radius * np.cos(t)
    if ellipse is not None:  # corrected circle of radius r -> ellipse with semi-axes r*sqrt(a/b), r*sqrt(b/a)
        a, b, phi = ellipse
        u = cx * math.cos(phi) + cy * math.sin(phi)
        v = -cx * math.sin(phi) + cy * math.cos(phi)
        u, v = u * math.sqrt(a / b), v * math.sqrt(b / a)
        cx, cy = u * math.cos(phi) - v * math.sin(phi), u * math.sin(phi) + v * math.cos(phi)
    return np.column_stack([origin[0] + cy, origin[1] + cx])


# ---- geometry ---------------------------------------------------------------------------


def test_polar_coordinates_of_known_pixels():
    rho, theta = polar_coordinates((9, 9), (4.0, 4.0))
    rho, theta = rho.reshape(9, 9), theta.reshape(9, 9)
    assert rho[4, 7] == pytest.approx(3.0) and theta[4, 7] == pytest.approx(0.0)
    assert rho[7, 4] == pytest.approx(3.0) and theta[7, 4] == pytest.approx(90.0)  # +qy is 90 degrees
    assert theta[4, 1] == pytest.approx(180.0) and theta[1, 4] == pytest.approx(270.0)
    assert rho[0, 0] == pytest.approx(4 * math.sqrt(2))


def test_ellipse_maps_reference_ring_to_circle_of_geometric_mean_radius():
    a, b, phi = 12.0, 8.0, math.radians(30)
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    # points on the ellipse, a axis at 30 degrees from +qx towards +qy
    u, v = a * np.cos(t), b * np.sin(t)
    x, y = u * math.cos(phi) - v * math.sin(phi), u * math.sin(phi) + v * math.cos(phi)
    from stemnmf.features import correct_offsets

    cy, cx = correct_offsets(y, x, (a, b, phi))
    np.testing.assert_allclose(np.hypot(cy, cx), math.sqrt(a * b), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    r=st.floats(0.5, 40),
    angle=st.floats(0, 359.9),
    a=st.floats(5, 20),
    ratio=st.floats(0.6, 1.0),
    phi=st.floats(-3.2, 3.2),
    oy=st.floats(10, 50),
    ox=st.floats(10, 50),
)
def test_detector_coordinates_invert_polar_coordinates(r, angle, a, ratio, phi, oy, ox):
    ellipse = (a, a * ratio, phi)
    qy, qx = detector_coordinates(r, angle, (oy, ox), ellipse)
    from stemnmf.features import correct_offsets

    cy, cx = correct_offsets(qy - oy, qx - ox, ellipse)
    assert math.hypot(cy, cx) == pytest.approx(r, rel=1e-9)
    back = math.degrees(math.atan2(cy, cx)) % 360
    assert min(abs(back - angle), 360 - abs(back - angle)) < 1e-6


def test_edge_radius_is_distance_to_nearest_detector_edge():
    assert edge_radius((64, 64), (31.5, 31.5)) == pytest.approx(32.0)
    assert edge_radius((64, 64), (20.0, 40.0)) == pytest.approx(20.5)
    assert edge_radius((64, 64), (70.0, 40.0)) == 0.0


# ---- polar transform ---------------------------------------------------------------------


def test_polar_transform_of_constant_is_constant_and_counts_are_pixel_areas():
    img = np.full((40, 40), 3.0, np.float32)
    polar, radii, angles = polar_transform(img, (19.5, 19.5), r_max=15, theta_step=10)
    assert polar.shape == (15, 36) and radii[0] == 0.5 and angles[0] == 5.0
    assert np.nanmin(polar) == 3.0 and np.nanmax(polar) == 3.0
    geo = PolarGeometry.create((40, 40), (19.5, 19.5), r_max=15, theta_step=10)
    y, x = np.mgrid[:40, :40]
    inside = np.hypot(y - 19.5, x - 19.5) < 15
    assert geo.counts.sum() == inside.sum()  # every pixel within r_max in exactly one bin


def test_polar_transform_subpixel_splits_pixel_area():
    geo = PolarGeometry.create((40, 40), (19.5, 19.5), r_max=10, theta_step=90, subpixel=4)
    # the area in each quadrant of a disk of radius 10 tends to pi r^2 / 4
    quadrant = geo.counts.reshape(10, 4).sum(axis=0)
    np.testing.assert_allclose(quadrant, math.pi * 100 / 4, rtol=0.02)


def test_polar_transform_honours_ellipse():
    """An elliptical ring becomes a straight line at r = sqrt(ab) in the polar image."""
    a, b, phi = 16.0, 12.0, math.radians(25)
    shape, origin = (64, 64), (31.7, 32.2)
    y, x = np.mgrid[: shape[0], : shape[1]]
    u = (x - origin[1]) * math.cos(phi) + (y - origin[0]) * math.sin(phi)  # along the a axis
    v = -(x - origin[1]) * math.sin(phi) + (y - origin[0]) * math.cos(phi)
    ring = np.exp(-((np.hypot(u / a, v / b) - 1) ** 2) / (2 * 0.08**2)).astype(np.float32)
    polar, radii, _ = polar_transform(ring, origin, (a, b, phi), r_max=25, theta_step=10)
    centroid = (np.nan_to_num(polar) * radii[:, None]).sum(0) / np.nan_to_num(polar).sum(0)
    np.testing.assert_allclose(centroid, math.sqrt(a * b), atol=0.3)  # the same radius at every angle
    # without the ellipse the ring wanders between b and a with the angle
    plain, radii, _ = polar_transform(ring, origin, None, r_max=25, theta_step=10)
    wander = (np.nan_to_num(plain) * radii[:, None]).sum(0) / np.nan_to_num(plain).sum(0)
    assert wander.max() - wander.min() > 3


def test_masked_pixels_never_contribute_to_polar_bins():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32)).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[10:20, 18:] = True
    wild = img.copy()
    wild[mask] = 1e9
    a = polar_transform(img, mask=mask, r_max=15)[0]
    b = polar_transform(wild, mask=mask, r_max=15)[0]
    np.testing.assert_array_equal(a, b)
    assert np.nanmax(b) < 1.0
    # a bin whose pixels are all masked is empty (NaN), not zero
    geo = PolarGeometry.create((32, 32), mask=mask, r_max=15)
    assert np.isnan(a.reshape(-1)[geo.counts == 0]).all() and (geo.counts == 0).any()


def test_radial_profile_of_rings_by_hand():
    y, x = np.mgrid[:41, :41]
    r = np.hypot(y - 20, x - 20)
    img = np.where((r >= 5) & (r < 6), 7.0, 1.0).astype(np.float32)
    profile, radii = radial_profile(img, (20, 20), r_max=10)
    assert profile[5] == 7.0 and profile[4] == 1.0 and profile[6] == 1.0


# ---- AA ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ellipse", [None, (14.0, 11.0, math.radians(-40))])
def test_aa_maxima_in_the_sectors_of_the_spots(ellipse):
    shape, origin = (72, 72), (35.3, 36.1)
    angles = [37.5, 142.5, 277.5]  # centres of sectors 7, 28, 55
    img = disks(shape, spots_at(origin, 22.0, angles, ellipse), 2.5, [10, 8, 6]) + 0.5
    aa = angular_average(img, [(16, 28)], origin, ellipse)
    assert aa.shape == (72,)
    assert sorted(np.argsort(aa)[-3:].tolist()) == [7, 28, 55]
    assert np.argmax(aa) == 7  # the brightest spot


def test_aa_of_a_quadrant_by_hand():
    img = np.zeros((40, 40), np.float32)
    img[20:, 20:] = 1.0  # +qy, +qx quadrant: angles 0..90 about (19.5, 19.5)
    aa = angular_average(img, [(3, 12), (12, 19)], (19.5, 19.5), sector_width=10)
    assert aa.shape == (72,)
    expected = np.r_[np.ones(9), np.zeros(27)]
    np.testing.assert_array_equal(aa[:36], expected)
    np.testing.assert_array_equal(aa[36:], expected)


def test_aa_excludes_masked_pixels():
    img = np.zeros((40, 40), np.float32)
    img[20:, 20:] = 1.0
    mask = np.zeros((40, 40), bool)
    mask[20:, 20:] = True  # the bright quadrant is masked
    aa = angular_average(img, [(3, 19)], (19.5, 19.5), mask=mask, sector_width=10)
    assert np.isnan(aa[:9]).all()  # nothing left there: undefined, not 0
    assert np.nanmax(aa) == 0.0


def test_aa_sector_width_must_divide_360():
    with pytest.raises(ConfigError):
        angular_average(np.zeros((20, 20)), [(2, 8)], sector_width=7)


# ---- RV ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subpixel", [1, 2])
@pytest.mark.parametrize("ellipse", [None, (11.5, 8.7, math.radians(20))])
def test_rv_zero_for_smooth_isotropic_rings_and_large_for_spotty_pattern(ellipse, subpixel):
    from stemnmf.features.geometry import correct_offsets

    shape, origin, amp = (64, 64), (31.3, 32.6), 100.0
    y, x = np.mgrid[:64, :64]
    dy, dx = correct_offsets(y - origin[0], x - origin[1], ellipse)
    r = np.hypot(dy, dx)
    # smooth rings (Gaussian, sigma 2 and 1.5 px): steep radial slopes inside every 1-px bin
    iso = (amp * np.exp(-((r - 15) ** 2) / 8) + 0.5 * amp * np.exp(-((r - 24) ** 2) / 4.5)).astype(np.float32)
    rv_iso, radii = radial_variance(iso, origin, ellipse, r_min=3, r_max=29, subpixel=subpixel)
    assert radii[0] == 3.5 and rv_iso.shape == (26,)
    # the bin-mean variance gave 53 (subpixel 1) and 110 (subpixel 2) here; about the profile's
    # tangent: at most 1.1 (subpixel 1) and 4.2 (subpixel 2, split pixels are compared at their centre)
    assert rv_iso.max() < 1e-3 * amp**2
    geometry = PolarGeometry.create(shape, origin, ellipse, r_edges=np.arange(3.0, 30.0), subpixel=subpixel)
    np.testing.assert_allclose(geometry.variance(iso), rv_iso, atol=1e-3 * amp**2)
    spots = spots_at(origin, 20.0, [0, 60, 120, 180, 240, 300], ellipse)
    spotty = iso + disks(shape, spots, 2.5, [amp / 2] * 6)
    rv_spot, _ = radial_variance(spotty, origin, ellipse, r_min=3, r_max=29, subpixel=subpixel)
    ring = np.abs(radii - 20) <= 1.5
    # spots of 50 on a ring: variance ~ 50^2 x covered fraction, 300-400 here
    assert rv_spot[ring].min() > 50 * rv_iso.max()


def test_rv_by_hand_and_masked_pixels_excluded():
    y, x = np.mgrid[:41, :41]
    r = np.hypot(y - 20, x - 20)
    img = (x > 20).astype(np.float32)  # right half bright
    sel = (r >= 10) & (r < 11)
    p = img[sel].mean()
    rv, radii = radial_variance(img, (20, 20), r_min=10, r_max=11)
    assert rv[0] == pytest.approx(p * (1 - p), rel=1e-6)  # population variance of 0/1 samples
    mask = x > 20
    rv_masked, _ = radial_variance(img, (20, 20), mask=mask, r_min=10, r_max=11)
    assert rv_masked[0] == 0.0  # only dark pixels are left


# ---- beam, rings, origin ------------------------------------------------------------------


def test_beam_radius_and_origin_of_a_disk():
    img = disks((64, 64), [(30.3, 33.8)], 6.0, [100]) + 1
    origin = find_origin(img)
    assert origin == pytest.approx((30.3, 33.8), abs=0.1)
    profile, radii = radial_profile(img, origin, r_step=0.5)
    assert estimate_beam_radius(profile, radii) == pytest.approx(6.0, abs=0.5)
    with pytest.raises(CalibrationError):
        estimate_beam_radius(np.ones(20), np.arange(20) + 0.5)


def test_find_origin_gives_up_on_a_flat_pattern():
    rng = np.random.default_rng(1)
    assert find_origin(rng.random((32, 32))) is None


def test_find_rings_bounds_rings_by_minima_and_ignores_noise():
    radii = np.arange(80) + 0.5
    clean = 10 * np.exp(-((radii - 20) ** 2) / 8) + 6 * np.exp(-((radii - 36) ** 2) / 8) + 3 * np.exp(
        -((radii - 60) ** 2) / 18
    )
    for seed in range(20):  # noise wiggles never split a ring nor add one
        rng = np.random.default_rng(seed)
        profile = clean + 1 + 0.2 * rng.standard_normal(radii.size)
        rings = find_rings(profile, radii, r_min=8, r_max=75)
        assert rings.shape == (3, 2), seed
        # bounds at the lowest points between the peaks; the outer bounds in the flat tails
        assert 8 <= rings[0, 0] <= 14 and 68 <= rings[-1, 1] <= 75
        assert rings[0, 1] == pytest.approx(28, abs=2.5) and rings[1, 0] == rings[0, 1]
        assert 41 <= rings[1, 1] <= 53 and rings[2, 0] == rings[1, 1]  # anywhere in the flat valley
    # without smoothing and prominence the same noisy profile has many more maxima
    from scipy.signal import find_peaks

    assert find_peaks(profile[8:75])[0].size > 6


def test_find_rings_user_bounds_are_checked():
    from stemnmf.features.rings import check_rings

    np.testing.assert_array_equal(check_rings([(2, 5), (5, 9)]), [[2, 5], [5, 9]])
    for bad in ([(5, 2)], [(-1, 3)], [], "x"):
        with pytest.raises(ConfigError):
            check_rings(bad)


# ---- offset templates (the per-position operators of featurize) ------------------------------


@pytest.mark.parametrize("subpixel", [1, 2])
def test_offset_templates_on_windows_equal_the_direct_operators(subpixel):
    """A template moved to the origin's whole pixel and cut by detector and mask bins like the direct geometry."""
    from stemnmf.features.angular import sector_operator
    from stemnmf.features.operators import OffsetTemplate, Window, apply_windows, ring_sector_bins, window_half
    from stemnmf.features.polar import apply_mean

    rng = np.random.default_rng(7)
    shape = (40, 44)
    patterns = rng.random((3, *shape)).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[5:9, 20:30] = True
    ellipse = (11.0, 9.0, 0.4)
    rings = np.array([[4.0, 9.0], [9.0, 16.0]])
    for origin in [(19.3, 21.8), (6.6, 38.2), (33.0, 3.5)]:  # near edges too: the window leaves the detector
        whole = (math.floor(origin[0]), math.floor(origin[1]))
        fraction = (origin[0] - whole[0], origin[1] - whole[1])
        binner, n_bins, radius = ring_sector_bins(rings, 10.0, 0.0)
        template = OffsetTemplate.build(fraction, ellipse, binner, n_bins, window_half(radius, ellipse), subpixel)
        window = Window(whole, template.half, shape, ~mask)
        got = apply_windows(patterns, [(window, np.arange(3))], means=[template])[0]
        op, counts = sector_operator(shape, origin, ellipse, mask, rings=rings, sector_width=10, subpixel=subpixel)
        want = apply_mean(op, counts, patterns.reshape(3, -1))
        np.testing.assert_allclose(template.matrix @ window.valid, counts, rtol=1e-12)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert np.array_equal(np.isnan(got), np.isnan(want))


def test_find_rings_has_an_absolute_noise_floor():
    from stemnmf.features.rings import profile_noise

    radii = np.arange(80) + 0.5
    weak = np.exp(-((radii - 40) ** 2) / 8)  # a ring of height 1 on a flat background
    for seed in range(20):
        noise = 0.2 * np.random.default_rng(seed).standard_normal(radii.size)
        assert profile_noise(1 + noise) == pytest.approx(0.2, rel=0.35)
        # pure noise: no ring (the relative rule alone found several)
        assert find_rings(1 + noise, radii, r_min=8, r_max=75).shape == (0, 2), seed
        assert find_rings(1 + noise, radii, r_min=8, r_max=75, noise_floor=0).shape[0] >= 2, seed
        # floor = 8 x 0.2 / sqrt(2 sqrt(pi)) ~ 0.85: a ring of 1.5 (1.34 after smoothing) is found;
        # with the floor at 40 noise units (~4.2) the same ring is not
        rings = find_rings(1 + 1.5 * weak + noise, radii, r_min=8, r_max=75)
        assert rings.shape == (1, 2) and rings[0, 0] < 40 < rings[0, 1], seed
        assert find_rings(1 + 1.5 * weak + noise, radii, r_min=8, r_max=75, noise_floor=40).shape == (0, 2), seed


def test_featurize_aa_on_a_beam_only_scan_is_a_clear_error():
    from stemnmf.engine import Engine
    from stemnmf.features import featurize
    from stemnmf.io import Dataset4D

    beam = disks((48, 48), [(23.5, 23.5)], 5.0, [200.0]) + 2.0
    data = np.random.default_rng(0).poisson(np.broadcast_to(beam, (3, 3, 48, 48))).astype(np.float32)
    with pytest.raises(CalibrationError, match="no diffraction ring found.*ring_noise_floor"):
        featurize(Dataset4D(data), "aa", engine=Engine(progress=False))
    # without the noise floor (and prominence) the beam's noisy tail gives invented rings
    X, d = featurize(Dataset4D(data), "aa", engine=Engine(progress=False), ring_noise_floor=0, ring_prominence=0)
    assert len(d.rings) >= 1
    X, d = featurize(Dataset4D(data), "aa", engine=Engine(progress=False), rings=[(8, 14), (14, 20)])
    assert X.shape == (9, 2 * 72) and d.settings["rings"] == [[8, 14], [14, 20]]


# ---- batched products ------------------------------------------------------------------------


def test_batch_products_equal_one_pattern_at_a_time_and_are_rebuilt_after_eviction(monkeypatch):
    """The block-diagonal product gives each pattern the sums of ``op @ pattern``, bit for bit."""
    import scipy.sparse as sp

    from stemnmf.features import polar

    rng = np.random.default_rng(3)
    ops = [sp.random(7, 30, density=0.3, random_state=s, format="csr") for s in (1, 2)]
    x = rng.random((polar.BATCH, 30))
    product = polar.BatchOperator(ops)
    out = np.zeros((2, polar.BATCH, 7))
    product.apply(x, out)
    for b, op in enumerate(ops):
        for j in range(polar.BATCH):
            want = np.zeros(7)
            polar._csr_matvec(7, 30, op.indptr, op.indices, op.data.astype(np.float64), x[j], want)
            assert np.array_equal(out[b, j], want)
    first = np.zeros((polar.BATCH, 7))
    product.apply(x, first, n_blocks=1)  # the first block alone
    assert np.array_equal(first, out[0])
    # a small budget drops the least recently used operator's arrays; it is rebuilt on its next use
    monkeypatch.setattr(polar, "_BUILT_BYTES", 1)
    other = polar.BatchOperator(ops[:1])
    other.apply(x, np.zeros((polar.BATCH, 7)))
    assert product._built is None and other._built is not None
    again = np.zeros((2, polar.BATCH, 7))
    product.apply(x, again)
    assert np.array_equal(again, out)


def test_rv_through_windows_equals_the_direct_geometry():
    """RV of the offset templates (featurize's path) equals PolarGeometry.variance, any batch split."""
    from stemnmf.features.operators import OffsetTemplate, Window, apply_windows, radial_bins_of, window_half

    rng = np.random.default_rng(4)
    shape, origin, ellipse = (48, 50), (23.4, 25.7), (11.0, 9.5, 0.3)
    patterns = (rng.random((11, *shape)) * 50).astype(np.float32)
    edges = np.arange(3.0, 20.0)
    geometry = PolarGeometry.create(shape, origin, ellipse, r_edges=edges)
    want = geometry.variance(patterns)
    binner, n_bins, radius = radial_bins_of(edges)
    template = OffsetTemplate.build((origin[0] - 23, origin[1] - 25), ellipse, binner, n_bins,
                                    window_half(radius, ellipse))
    window = Window((23, 25), template.half, shape)
    whole = apply_windows(patterns, [(window, np.arange(11))], variances=[template])[0]
    split = apply_windows(patterns, [(window, np.arange(3)), (window, np.arange(3, 11))], variances=[template])[0]
    np.testing.assert_allclose(whole, want, rtol=1e-5)
    assert np.array_equal(split, whole)
