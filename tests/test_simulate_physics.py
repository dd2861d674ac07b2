"""Physics of the simulator: scattering factors, structure factors, Ewald geometry, zone axes, rings."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from scipy import ndimage

import stemnmf.simulate as sm
from stemnmf.errors import ConfigError
from stemnmf.simulate.physics import Optics, Reflections, kinematic_intensity
from stemnmf.simulate.render import poisson_counts
from stemnmf.simulate.scattering import scattering_factor

A_AG = 4.086

# f(g) in Å from the independent Lobato & Van Dyck (2014) parametrisation (values of its published
# coefficients at these g); the simulator uses Peng et al. (1996).
LOBATO = {
    "Ag": {0.0: 8.671, 0.4239: 5.1092, 0.8: 2.8746, 1.2: 1.6835, 2.0: 0.7663},
    "C": {0.0: 2.5097, 0.4239: 1.3861, 0.8: 0.6056, 1.2: 0.2969, 2.0: 0.1172},
}


@pytest.mark.parametrize("element", ["Ag", "C"])
def test_scattering_factors_agree_with_an_independent_parametrisation(element):
    for g, expected in LOBATO[element].items():
        assert scattering_factor(element, g) == pytest.approx(expected, rel=0.015)


def test_unknown_element_without_table_is_a_config_error():
    if importlib.util.find_spec("diffsims") is None:
        with pytest.raises(ConfigError, match="crystal extra"):
            scattering_factor("Zn", 0.5)
    else:  # diffsims supplies Lobato & Van Dyck factors; Peng et al. (1996) give Zn f(0) = 6.063 Å
        assert float(scattering_factor("Zn", 0.0)) == pytest.approx(6.063, rel=0.01)
    with pytest.raises(ConfigError):
        scattering_factor("Xx", 0.5)


def test_fcc_structure_factors_and_extinctions():
    crystal = sm.fcc(A_AG, "Ag", b_factor=0.5)
    hkl, g, F = crystal.reflections(1.0)
    rows = {tuple(h) for h in hkl}
    # mixed-parity reflections vanish in FCC; unmixed ones are 4 f(g) exp(-B s^2)
    for forbidden in [(1, 0, 0), (1, 1, 0), (2, 1, 0), (2, 1, 1)]:
        assert forbidden not in rows
    for allowed in [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (-1, 1, -1)]:
        assert allowed in rows
    for h in [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1)]:
        glen = math.sqrt(sum(x * x for x in h)) / A_AG
        expected = 4 * float(scattering_factor("Ag", glen)) * math.exp(-0.5 * (glen / 2) ** 2)
        got = crystal.structure_factor([h])[0]
        assert got.real == pytest.approx(expected, rel=1e-9)
        assert abs(got.imag) < 1e-9
    assert np.all(np.linalg.norm(g, axis=1) <= 1.0)


def test_wavelength_disk_radius_and_excitation_error():
    optics = Optics(beam_energy=300.0, convergence_angle=1.05, q_pixel=0.01, det_shape=(256, 256))
    assert optics.wavelength == pytest.approx(0.019687, abs=2e-6)
    assert optics.disk_radius == pytest.approx(1.05e-3 / 0.0196875 / 0.01, rel=1e-3)
    assert optics.gamma == pytest.approx(1 + 300 / 510.999, rel=1e-6)
    crystal = sm.fcc(A_AG)
    refl = Reflections.of(crystal, optics)
    centres, s = refl.in_lab(np.eye(3), optics)
    k = 1 / optics.wavelength
    for h, expected_xy in [((2, 0, 0), (0.0, 2 / A_AG)), ((0, 2, 0), (2 / A_AG, 0.0)), ((2, 2, 0), (2 / A_AG, 2 / A_AG))]:
        i = int(np.flatnonzero((refl.hkl == h).all(axis=1))[0])
        g2 = sum(x * x for x in h) / A_AG**2
        assert s[i] == pytest.approx(-g2 / (2 * k), rel=1e-9)  # zero-layer reflection on the zone axis
        assert centres[i] == pytest.approx(np.array([128, 128]) + np.array(expected_xy) / 0.01, abs=1e-9)
    # a reflection with l = 1 lies 1/a off the Ewald sphere along the beam
    i = int(np.flatnonzero((refl.hkl == (1, 1, 1)).all(axis=1))[0])
    assert s[i] == pytest.approx(-1 / A_AG - 3 / A_AG**2 / (2 * k), rel=1e-9)


def test_kinematic_intensity_is_sinc_squared():
    t = np.array([10.0, 25.0, 40.0])
    assert kinematic_intensity(2.0, 0.0, t) == pytest.approx(2.0 * t**2)
    s = 0.02
    expected = 2.0 * np.sin(np.pi * s * t) ** 2 / (np.pi * s) ** 2
    assert kinematic_intensity(2.0, s, t) == pytest.approx(expected, rel=1e-12)
    assert kinematic_intensity(2.0, s, 1 / s) == pytest.approx(0.0, abs=1e-20)  # first node at t = 1/s


def _pattern(uvw, det=128, q=0.02, thickness=30.0):
    crystal = sm.fcc(A_AG)
    optics = Optics(det_shape=(det, det), q_pixel=q, detector_blur=0.5)
    return sm.diffraction_pattern(crystal, sm.zone_axis_rotation(crystal, uvw), thickness, optics)


def _spots(pattern, origin, fraction=0.2):
    """Centroids (dy, dx) of the spots brighter than ``fraction`` of the brightest diffracted pixel."""
    image = pattern.astype(np.float64).copy()
    yy, xx = np.indices(image.shape)
    image[np.hypot(yy - origin, xx - origin) < 8] = 0
    labels, n = ndimage.label(image > fraction * image.max())
    centres = np.array(ndimage.center_of_mass(image, labels, range(1, n + 1)))
    return centres - origin


def test_zone_axis_001_is_fourfold_with_200_spots():
    p = _pattern((0, 0, 1))
    core = p[1:, 1:]  # odd size: the direct beam (pixel 64) is its centre
    scale = core.max()
    np.testing.assert_allclose(np.rot90(core), core, atol=1e-6 * scale)
    np.testing.assert_allclose(core[::-1], core, atol=1e-6 * scale)
    np.testing.assert_allclose(core.T, core, atol=1e-6 * scale)
    spots = _spots(p, 64, fraction=0.5)
    g200 = 2 / A_AG / 0.02
    expected = {(0, round(g200)), (0, -round(g200)), (round(g200), 0), (-round(g200), 0)}
    assert {tuple(np.round(c).astype(int)) for c in spots} == expected
    # central beam + kinematic intensities = 1, less the reflections beyond the detector
    assert 0.99 < p.sum() <= 1.0 + 1e-6


def test_zone_axis_011_has_only_twofold_mirrors():
    p = _pattern((0, 1, 1))
    core = p[1:, 1:]
    scale = core.max()
    np.testing.assert_allclose(core[::-1], core, atol=1e-6 * scale)
    np.testing.assert_allclose(core[:, ::-1], core, atol=1e-6 * scale)
    assert np.abs(np.rot90(core) - core).max() > 0.05 * scale  # not fourfold
    spots = _spots(p, 64, fraction=0.5)
    radii = np.sort(np.hypot(*spots.T))
    g111 = math.sqrt(3) / A_AG / 0.02
    # the four 111 spots are the strongest of the [011] zone
    assert len(radii) >= 4 and np.allclose(radii[:4], g111, atol=0.3)


def test_zone_axis_111_is_sixfold_with_220_spots():
    p = _pattern((1, 1, 1), thickness=40.0)
    spots = _spots(p, 64, fraction=0.5)
    g220 = math.sqrt(8) / A_AG / 0.02
    assert len(spots) == 6
    assert np.allclose(np.hypot(*spots.T), g220, atol=0.3)
    angles = np.sort(np.degrees(np.arctan2(spots[:, 0], spots[:, 1])) % 360)
    assert np.allclose(np.diff(angles), 60.0, atol=0.5)


def test_ring_radii_of_the_max_pattern_match_fcc():
    """Strong spots of the maximum pattern lie on the FCC rings 111, 200, 220, 311 (and 222), within a pixel."""
    q = 0.01
    ds, truth = sm.simulate(
        "ag1", scan=24, det=200, q_pixel=q, convergence_angle=0.3, n_grains=30,
        noise=False, scan_blur=0, carbon_thickness=0, seed=0,
    )  # fmt: skip
    peak = ds.data.max(axis=(0, 1)).astype(np.float64)
    origin = ds.calibration.origin
    assert origin == (100.0, 100.0)
    yy, xx = np.indices(peak.shape)
    radius = np.hypot(yy - origin[0], xx - origin[1])
    peak[(radius < 10) | (radius > 90)] = 0
    labels, n = ndimage.label(peak > 0.05 * peak.max())
    centres = np.array(ndimage.center_of_mass(peak, labels, range(1, n + 1)))
    radii = np.hypot(centres[:, 0] - origin[0], centres[:, 1] - origin[1])
    rings = {hkl: math.sqrt(sum(h * h for h in hkl)) / A_AG / q for hkl in [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2)]}
    assert n >= 20
    for hkl in [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1)]:
        assert np.any(np.abs(radii - rings[hkl]) < 1.0), f"no spot on the {hkl} ring at {rings[hkl]:.2f} px"
    nearest = np.min(np.abs(radii[:, None] - np.array(list(rings.values()))[None]), axis=1)
    assert np.all(nearest < 1.0), radii[nearest >= 1.0]


@pytest.mark.parametrize("lam", [0.0, 0.03, 0.8, 4.0, 9.5, 25.0])
def test_poisson_counts_have_poisson_statistics(lam):
    rng = np.random.default_rng(7)
    n = 200_000
    counts = poisson_counts(np.full(n, lam, np.float32), rng)
    assert counts.dtype == np.float32 and np.all(counts == np.round(counts)) and counts.min() >= 0
    tol = 5 * math.sqrt(max(lam, 1e-3) / n)
    assert counts.mean() == pytest.approx(lam, abs=tol)
    assert counts.var() == pytest.approx(lam, abs=5 * math.sqrt((2 * lam**2 + lam) / n) + 1e-9)
    p0 = math.exp(-lam)
    assert (counts == 0).mean() == pytest.approx(p0, abs=5 * math.sqrt(p0 * (1 - p0) / n) + 1e-9)
    if lam < 10:
        p2 = math.exp(-lam) * lam**2 / 2
        assert (counts == 2).mean() == pytest.approx(p2, abs=5 * math.sqrt(p2 * (1 - p2) / n) + 1e-9)


def test_rotation_conventions():
    rng = np.random.default_rng(0)
    from stemnmf.simulate.rotations import random_quaternions

    q = random_quaternions(50, rng)
    R = sm.quaternion_to_matrix(q)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    back = np.array([sm.matrix_to_quaternion(r) for r in R])
    np.testing.assert_allclose(back, q, atol=1e-10)
    # 90 degrees about z: (w, x, y, z) = (cos 45, 0, 0, sin 45) takes x to y
    quarter = sm.quaternion_to_matrix([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    np.testing.assert_allclose(quarter @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    crystal = sm.fcc(A_AG)
    for uvw in [(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 2, 3), (0, 0, -1)]:
        rotation = sm.zone_axis_rotation(crystal, uvw, in_plane=17.0)
        direction = np.asarray(uvw, float) / np.linalg.norm(uvw)
        np.testing.assert_allclose(rotation @ direction, [0, 0, 1], atol=1e-12)


# --- amorphous carbon, detector blur and scan blur (issue 3: parts left untested before) -----------

# Peng et al. (1996), International Tables C Table 4.3.2.2, carbon: a_i (Å), b_i (Å^2), for s = q / 2.
PENG_C = ((0.0893, 0.2563, 0.7570, 1.0487, 0.3575), (0.2465, 1.7100, 6.4094, 18.6113, 50.2523))


def test_carbon_ring_follows_the_documented_kinematic_model():
    """docs/simulate.md: the carbon adds n t |gamma f_C(q)|^2 S(q) lambda^2 per (1/Å)^2, with S -> 1 and
    broad maxima of S at 0.47 and 0.85 1/Å; n for 2.0 g/cm^3, lambda = 0.019687 Å at 300 keV."""
    q_pixel, det, dose = 0.01, 200, 1e5
    kw = dict(scan=8, det=det, q_pixel=q_pixel, noise=False, seed=0, detector_blur=0.0, scan_blur=0.0)
    bare, truth = sm.simulate("tiny", carbon_thickness=0.0, **kw)
    thin, _ = sm.simulate("tiny", carbon_thickness=50.0, **kw)
    thick, _ = sm.simulate("tiny", carbon_thickness=100.0, **kw)
    empty = truth.grains_per_position == 0  # only the central beam and the carbon there
    assert empty.sum() >= 5
    ring50 = (thin.data[empty].astype(np.float64) - bare.data[empty]).mean(axis=0)
    ring100 = (thick.data[empty].astype(np.float64) - bare.data[empty]).mean(axis=0)

    yy, xx = np.indices((det, det))
    q = np.hypot(yy - det // 2, xx - det // 2) * q_pixel
    bins = np.round(q / q_pixel).astype(int)
    outside = q > 0.1  # clear of the central disk (radius 0.053 1/Å)
    # kinematic: linear in the carbon thickness
    np.testing.assert_allclose(ring100[outside], 2 * ring50[outside], rtol=1e-3)

    s2 = (q / 2) ** 2
    f_c = sum(a * np.exp(-b * s2) for a, b in zip(*PENG_C))
    gamma = 1 + 300.0 / 510.99895
    density = 2.0 / 12.011 * 0.602214076  # atoms / Å^3
    expected_without_s = density * 50.0 * (gamma * f_c) ** 2 * 0.019687**2 * q_pixel**2 * dose
    s_q = ndimage.mean(ring50 / expected_without_s, bins, np.arange(96))  # radial mean of S(q), bins of 0.01
    r = np.arange(96) * q_pixel
    first = np.arange(10, 65)
    second = np.arange(70, 96)
    assert r[first[np.argmax(s_q[first])]] == pytest.approx(0.47, abs=0.011)
    assert r[second[np.argmax(s_q[second])]] == pytest.approx(0.85, abs=0.011)
    assert s_q[first].max() > 1.5 and s_q[second].max() > 1.2  # real maxima above S = 1
    # S tends to 1 between and beyond the maxima and falls towards 0.1 at small q
    assert np.min(s_q[55:70]) == pytest.approx(1.0, abs=0.03)
    assert 0.1 <= s_q[8] < 0.25

    # the measured ring (f_C^2 falls with q) peaks just inside the S maximum at 0.47 1/Å
    profile = ndimage.mean(ring50, bins, np.arange(96))
    peak_q = r[10 + np.argmax(profile[10:])]
    assert 0.42 <= peak_q <= 0.47


def test_scan_blur_is_a_gaussian_filter_across_the_scan():
    """Noise-free patterns with scan_blur=sigma equal the unblurred ones Gaussian-filtered over the scan
    with that sigma (away from the edges, where grains beyond the view come in); other sigmas differ."""
    assert sm.preset_parameters("ag1").scan_blur == 2.0  # the paper's source-size blur
    kw = dict(scan=32, noise=False, seed=0, n_grains=8, centres_in_view=True)  # carbon, detector blur on
    sharp, truth = sm.simulate("tiny", scan_blur=0.0, **kw)
    blurred, truth2 = sm.simulate("tiny", scan_blur=2.0, **kw)
    np.testing.assert_array_equal(truth.labels, truth2.labels)
    assert truth.grains_per_position[8:-8, 8:-8].max() >= 1
    a = sharp.data.astype(np.float64)
    c = blurred.data[8:-8, 8:-8].astype(np.float64)
    change = np.abs(c - a[8:-8, 8:-8]).max()
    assert change > 0.02 * c.max()  # the blur does something (the central beam holds most counts)

    def error(sigma):
        g = ndimage.gaussian_filter(a, (sigma, sigma, 0, 0), mode="constant", truncate=4.0)[8:-8, 8:-8]
        return np.abs(g - c).max() / change

    assert error(2.0) < 1e-4
    for other in (1.0, 1.5, 1.8, 2.2, 2.5, 3.0):
        assert error(other) > 0.05, other


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_detector_blur_widens_the_central_disk_by_its_gaussian(sigma):
    """Blurring adds the Gaussian's variance to the disk's second moment (per axis); the Gaussian is
    sampled on the pixel grid, whose variance is sigma^2 for sigma >= 1 (0.215 for sigma = 0.5)."""
    kw = dict(scan=6, det=64, q_pixel=0.01, carbon_thickness=0.0, scan_blur=0.0, noise=False, seed=0)
    sharp, truth = sm.simulate("tiny", detector_blur=0.0, **kw)
    soft, _ = sm.simulate("tiny", detector_blur=sigma, **kw)
    empty = truth.grains_per_position == 0  # the central beam alone: a disk of 5.33 px radius
    assert empty.sum() >= 1
    oy, ox = sharp.calibration.origin
    yy, xx = np.indices((64, 64))

    def moments(p):
        w = p.sum()
        return (p * (yy - oy) ** 2).sum() / w, (p * (xx - ox) ** 2).sum() / w

    p0 = sharp.data[empty][0].astype(np.float64)
    p1 = soft.data[empty][0].astype(np.float64)
    assert p1.sum() == pytest.approx(p0.sum(), rel=1e-5) == pytest.approx(1e5, rel=1e-5)  # blur keeps counts
    radius = 1.05e-3 / 0.019687 / 0.01
    assert moments(p0)[0] == pytest.approx(radius**2 / 4, rel=0.05)  # uniform disk: R^2 / 4 per axis
    k = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    kernel_var = (kernel * k**2).sum() / kernel.sum()
    for v0, v1 in zip(moments(p0), moments(p1)):
        assert v1 - v0 == pytest.approx(kernel_var, rel=1e-3)
        assert math.sqrt(v1 - v0) == pytest.approx(sigma, rel=0.10)
    if sigma >= 2:
        assert p1.max() < 0.99 * p0.max()
