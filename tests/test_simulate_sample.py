"""Sample geometry and ground truth: path lengths, labels, presets' overlap, scan scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest

import stemnmf.simulate as sm
from stemnmf.errors import ConfigError
from stemnmf.simulate.sample import make_sample, path_lengths


def _truncated_octahedron_volume(h111: float, h100: float) -> float:
    """|x|+|y|+|z| <= sqrt(3) h111 cut by |x_i| <= h100 (valid for sqrt(3)/2 h111 <= h100 <= sqrt(3) h111)."""
    a, c = math.sqrt(3) * h111, h100
    return 4 / 3 * a**3 - 4 * (a - c) ** 3


def _inside(points, grains, index, film, ratio):
    """Membership of points (n, 3) in grain ``index``, from the definitions alone."""
    g = grains[index]
    local = (points - g.centre) @ g.rotation  # lab -> crystal frame
    h = (math.pi / 6 * g.diameter**3 / _truncated_octahedron_volume(1.0, ratio)) ** (1 / 3)
    inside = (points[:, 2] >= 0) & (points[:, 2] <= film)
    inside &= np.abs(local).sum(axis=1) <= math.sqrt(3) * h  # {111} facets
    inside &= np.abs(local).max(axis=1) <= ratio * h  # {100} facets
    power_i = ((points - g.centre) ** 2).sum(axis=1) - (g.diameter / 2) ** 2
    for j, other in enumerate(grains):
        if j != index:
            inside &= power_i <= ((points - other.centre) ** 2).sum(axis=1) - (other.diameter / 2) ** 2
    return inside


def test_path_lengths_match_a_voxel_count():
    rng = np.random.default_rng(3)
    ratio, film, step = 1.1, 60.0, 5.0
    sample = make_sample(
        scan_shape=(10, 10), scan_step=step, pad=0, film_thickness=film, n_grains=6,
        grain_diameter=(25.0, 35.0), shape="wulff", cubic=True, wulff_ratio=ratio,
        rotations=None, z_spread=0.25, rng=rng, centres_in_view=True,
    )  # fmt: skip
    assert len(sample.in_view()) == 6
    dz = 0.02
    z = np.arange(0, film, dz) + dz / 2
    checked = 0
    for i in range(len(sample.grains)):
        t = sample.dense(i)
        for iy, ix in zip(*np.nonzero(np.ones_like(t))):
            if (iy + ix) % 3:
                continue  # a third of the positions keeps this quick
            x, y = (ix + 0.5) * step, (iy + 0.5) * step
            pts = np.stack([np.full_like(z, x), np.full_like(z, y), z], axis=1)
            voxel = _inside(pts, sample.grains, i, film, ratio).sum() * dz
            assert t[iy, ix] == pytest.approx(voxel, abs=2 * dz + 1e-9)
            checked += t[iy, ix] > 0
    assert checked > 20


def test_path_lengths_through_a_box():
    # the unit cube 0..10 in x, y, z, tilted faces absent: path length 10 inside, 0 outside
    A = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    b = np.array([10, 0, 10, 0, 10, 0], float)
    x = np.array([5.0, 12.0, 0.5, 5.0])
    y = np.array([5.0, 5.0, 9.5, -1.0])
    np.testing.assert_allclose(path_lengths(A, b, x, y), [10, 0, 10, 0])
    # a plane tilted 45 degrees (z <= x) shortens the path to x
    A2 = np.vstack([A, [-1, 0, 1]])
    b2 = np.append(b, 0.0)
    np.testing.assert_allclose(path_lengths(A2, b2, np.array([2.0, 7.5]), np.array([5.0, 5.0])), [2.0, 7.5])


def test_truth_labels_match_path_lengths_and_film():
    truth = sm.simulate_truth("tiny", seed=5)
    params = sm.resolve_parameters("tiny")
    assert truth.labels.dtype == np.uint8 and truth.thickness.dtype == np.float32
    assert truth.labels.shape == truth.thickness.shape == (truth.n_grains, 12, 12)
    np.testing.assert_array_equal(truth.labels, (truth.thickness > 0).astype(np.uint8))
    np.testing.assert_array_equal(truth.extra["grains_per_position"], truth.labels.sum(axis=0))
    assert np.all(truth.labels.reshape(truth.n_grains, -1).any(axis=1))  # every grain is in view
    # grains are disjoint in 3D, so their path lengths add up to at most the film thickness
    assert truth.thickness.sum(axis=0).max() <= params.film_thickness + 1e-3
    assert truth.thickness.max() <= params.grain_diameter[1] * 1.3  # no longer than the grain's circumsphere
    q = truth.orientations
    assert q.shape == (truth.n_grains, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    area = truth.labels.sum(axis=(1, 2)) * params.scan_step**2
    np.testing.assert_allclose(truth.extra["projected_area"], area)


def test_presets_differ_in_overlap_as_intended():
    fractions, mean = {}, {}
    for preset in ["ag1", "ag2", "ag3", "precipitates", "crystals"]:
        truth = sm.simulate_truth(preset, seed=0)
        fractions[preset] = sm.grains_per_position_fractions(truth.grains_per_position)
        mean[preset] = truth.grains_per_position.mean()
        if preset.startswith("ag"):
            assert truth.n_grains == {"ag1": 31, "ag2": 36, "ag3": 42}[preset]
            assert truth.labels.shape[1:] == (100, 100)
    # little, medium and strong overlap
    assert mean["ag1"] < mean["ag2"] < mean["ag3"]
    multi = {p: f["2"] + f["3+"] for p, f in fractions.items()}
    assert multi["ag1"] < multi["ag2"] < multi["ag3"]
    assert fractions["ag1"]["0"] > fractions["ag2"]["0"] > fractions["ag3"]["0"]
    assert fractions["ag3"]["3+"] > 0.2 > fractions["ag1"]["3+"]
    # sparse precipitates: mostly matrix, almost never two along the beam
    assert fractions["precipitates"]["0"] > 0.6 and multi["precipitates"] < 0.05
    # large crystals tile the film; only their borders overlap
    assert fractions["crystals"]["0"] == 0.0
    assert 0.03 < multi["crystals"] < 0.5 and fractions["crystals"]["1"] > 0.5


def test_grain_diameters_follow_the_preset():
    truth = sm.simulate_truth("ag2", seed=1)
    nominal = truth.extra["nominal_diameters"]
    assert np.all((nominal >= 52.0) & (nominal <= 62.0))
    # after the power-diagram cuts a grain is never larger than its nominal size
    assert np.all(truth.extra["diameters"] <= nominal * 1.001)


def test_scan_and_detector_sizes_scale_the_preset():
    # ag1 keeps its grain density: 31 grains meet the 250 Å view, r = 19 Å on average
    area = lambda L, r=19.0: L * L + 4 * r * L + math.pi * r * r  # noqa: E731
    expected = round(31 * area(125.0) / area(250.0))
    assert sm.simulate_truth("ag1", scan=50).n_grains == expected
    params = sm.resolve_parameters("tiny", det=96)
    assert params.q_pixel == pytest.approx(0.02)  # same reciprocal extent, finer pixels
    assert sm.resolve_parameters("tiny", det=96, overrides={"q_pixel": 0.03}).q_pixel == 0.03
    assert sm.resolve_parameters("crystals", overrides={"n_orientations": 10}).n_grains == 10
    assert sm.resolve_parameters("crystals", overrides={"n_orientations": 6}).n_grains == 8
    assert sm.resolve_parameters("crystals", scan=32).scan_step == pytest.approx(10.0)  # keeps its 320 Å view
    assert sm.resolve_parameters("ag1", scan=32).scan_step == pytest.approx(2.5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"dose": -1.0}, "dose"),
        ({"grain_shape": "cube"}, "grain_shape"),
        ({"grain_diameter": (40.0, 30.0)}, "grain_diameter"),
        ({"bananas": 3}, "unknown simulation parameter"),
        ({"n_orientations": 9, "n_grains": 8, "grain_shape": "cell"}, "more than"),
        ({"max_scattered": 1.5}, "max_scattered"),
    ],
)
def test_bad_parameters_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        sm.resolve_parameters("tiny", overrides=overrides)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset"):
        sm.simulate_truth("ag4")
