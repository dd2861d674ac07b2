"""Continuous orientation refinement: the kinematic model against the simulator, the fit, Σ3 twins in the simulator."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("orix")
pytest.importorskip("diffsims")

from stemnmf.crystal import load_phase  # noqa: E402
from stemnmf.crystal.boundaries import csl_deviation  # noqa: E402
from stemnmf.crystal.kinematics import kinematic_spots, reflection_table  # noqa: E402
from stemnmf.crystal.matching import misorientation_angles  # noqa: E402
from stemnmf.crystal.refine import DetectorGeometry, PatternModel, prepare_pattern  # noqa: E402
from stemnmf.crystal.rotations import axis_angle_matrix  # noqa: E402
from stemnmf.crystal.templates import symmetry_matrices  # noqa: E402
from stemnmf.errors import ConfigError  # noqa: E402
from stemnmf.io.dataset import electron_wavelength  # noqa: E402
from stemnmf.simulate import Optics, diffraction_pattern, fcc, simulate_truth, zone_axis_rotation  # noqa: E402
from stemnmf.simulate.physics import Reflections, kinematic_intensity  # noqa: E402
from stemnmf.simulate.rotations import quaternion_to_matrix, twin_orientations  # noqa: E402

OPTICS = Optics(beam_energy=300.0, convergence_angle=1.05, q_pixel=0.02, det_shape=(128, 128), detector_blur=0.5)


@pytest.fixture(scope="module")
def silver():
    phase = load_phase("Ag")
    table = reflection_table(phase, q_max=2.0, wavelength=electron_wavelength(300.0))
    geometry = DetectorGeometry((128, 128), 0.02, (64.0, 64.0), disk_radius=OPTICS.disk_radius, blur=0.5)
    return phase, table, PatternModel([table], geometry, r_min=0.15)


def test_kinematic_spots_are_the_simulators():
    """Positions and relative intensities |F|^2 sinc^2(s t) of a tilted crystal agree with the simulator's own physics."""
    phase = load_phase("Ag")
    crystal = fcc(4.0862, b_factor=0.0)  # the built-in phase has no Debye-Waller factor
    rotation = axis_angle_matrix((0.3, -1.0, 0.2), 1.2) @ zone_axis_rotation(crystal, (1, 1, 2), in_plane=33.0)
    table = reflection_table(phase, q_max=1.2, wavelength=electron_wavelength(300.0))
    x, y, intensity = kinematic_spots(table, rotation, 150.0)
    reflections = Reflections.of(crystal, OPTICS)
    centres, s = reflections.in_lab(rotation, OPTICS)
    expected = kinematic_intensity(reflections.prefactor, s, 150.0)
    sim_xy = (centres[:, ::-1] - 64) * 0.02
    strongest = np.argsort(intensity)[::-1][:20]
    nearest = [int(np.argmin(np.hypot(*(sim_xy - [x[i], y[i]]).T))) for i in strongest]
    assert np.allclose(sim_xy[nearest], np.stack([x[strongest], y[strongest]], 1), atol=1e-9)
    ratio = intensity[strongest] / expected[nearest]
    assert np.allclose(ratio, ratio[0], rtol=0.01)  # the same relative intensities


def test_refinement_recovers_a_tilted_crystal_below_the_grid(silver):
    """A crystal 0.4° off [101], started 1° away (in-plane 0.7° off): found within 0.25°, a quarter of the grid."""
    phase, _, model = silver
    crystal = fcc(4.0862)
    truth = axis_angle_matrix((1.0, 0.4, 0.0), 0.4) @ zone_axis_rotation(crystal, (1, 0, 1), in_plane=21.0)
    pattern = np.random.default_rng(0).poisson(diffraction_pattern(crystal, truth, 150.0, OPTICS) * 2e5).astype(np.float32)
    start = axis_angle_matrix((0, 0, 1), 0.7) @ axis_angle_matrix((0.6, -0.8, 0.0), 1.0) @ truth
    symmetry = symmetry_matrices(phase)
    assert misorientation_angles(truth, start[None], symmetry)[0] > 1.0
    rotation, thickness, score = model.refine(model.prepare(pattern), start, search_deg=1.0)
    assert misorientation_angles(truth, rotation[None], symmetry)[0] < 0.25
    assert 100.0 < thickness < 220.0 and score > 0.95
    # the truth scores better than the start
    assert model.score(model.prepare(pattern), truth, 150.0) > model.score(model.prepare(pattern), start, 150.0)


def test_spot_by_spot_score_is_the_rendered_correlation(silver):
    """The fast score (prepared pattern sampled at the spots) equals the correlation of a rendered model image."""
    _, _, model = silver
    crystal = fcc(4.0862)
    truth = axis_angle_matrix((0.2, 1.0, 0.0), 0.3) @ zone_axis_rotation(crystal, (0, 0, 1), in_plane=12.0)
    pattern = np.random.default_rng(1).poisson(diffraction_pattern(crystal, truth, 150.0, OPTICS) * 1e5).astype(np.float32)
    image = np.zeros(model.geometry.shape)
    image[model.mask] = prepare_pattern(pattern, model.geometry, model.mask)
    prepared = model.prepare(pattern)
    for rotation, thickness in ((truth, 150.0), (axis_angle_matrix((1, 0, 0), 0.5) @ truth, 90.0), (np.eye(3), 300.0)):
        assert abs(model.score(prepared, rotation, thickness) - model.rendered_score(image, rotation, thickness)) < 0.01
    assert model.score(prepared, truth, 150.0) > 0.9 > model.score(prepared, np.eye(3), 300.0)


def test_twin_orientations_are_sigma3_and_keep_their_zone_axes():
    """The replaced orientations are exact Σ3 twins of the first ones; their beam directions follow."""
    crystal = fcc(4.0862)
    axes = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 2], [0, 1, 3]])
    rotations = np.array([zone_axis_rotation(crystal, uvw, in_plane=10.0 * i) for i, uvw in enumerate(axes)])
    twinned, zones = twin_orientations(rotations, axes, 2, np.random.default_rng(1))
    symmetry = symmetry_matrices(load_phase("Ag"))
    for parent, child in ((0, 3), (1, 2)):
        assert csl_deviation(twinned[parent], twinned[child], symmetry, 3) < 1e-6
        beam = twinned[child].T @ np.array([0.0, 0.0, 1.0])  # the beam in the twin's crystal frame
        assert np.allclose(np.cross(beam, zones[child]), 0.0, atol=1e-9)
    assert np.array_equal(twinned[:2], rotations[:2])


def test_simulator_twins_option():
    truth = simulate_truth("crystals", scan=16, det=48, seed=4, twins=2)
    rotations = quaternion_to_matrix(truth.orientations)
    ids = truth.extra["orientation_id"]
    symmetry = symmetry_matrices(load_phase("Ag"))
    first = {int(k): rotations[list(ids).index(k)] for k in set(ids.tolist())}
    assert csl_deviation(first[0], first[3], symmetry, 3) < 1e-3 and csl_deviation(first[1], first[2], symmetry, 3) < 1e-3
    with pytest.raises(ConfigError, match="twins"):
        simulate_truth("crystals", scan=16, det=48, seed=4, twins=3)


def test_refinement_and_vote_options_reach_the_indexing_from_config_and_command_line(tmp_path):
    from stemnmf.cli import build_parser
    from stemnmf.config import Config, config_from_args
    from stemnmf.cli.index import index_options

    parser = build_parser()
    config = config_from_args(parser.parse_args(["run", "scan.h5", "--refine-model", "kinematic", "--vote-positions", "0"]))
    options = config.orientations.index_options()
    assert options["refine_model"] == "kinematic" and options["vote_positions"] == 0
    assert Config().orientations.index_options()["refine_model"] == "templates"
    with pytest.raises(ConfigError, match="vote_positions"):
        Config.from_dict({"orientations": {"vote_positions": -1}})
    args = parser.parse_args(["index", str(tmp_path), "--phase", "Ag", "--refine-model", "kinematic", "--vote-positions", "4"])
    assert index_options(args)["refine_model"] == "kinematic" and index_options(args)["vote_positions"] == 4


def test_reflection_table_is_cached_on_disk(tmp_path, monkeypatch):
    """The second call reads the stored table (the same arrays) and does not compute again; another q_max is another file."""
    import stemnmf.crystal.kinematics as kinematics

    phase = load_phase("Ag")
    wavelength = electron_wavelength(300.0)
    first = reflection_table(phase, q_max=1.5, wavelength=wavelength, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("reflections-Ag-*.npz"))) == 1
    monkeypatch.setattr(kinematics, "_compute_table", lambda *args: pytest.fail("computed again"))
    again = reflection_table(phase, q_max=1.5, wavelength=wavelength, cache_dir=tmp_path)
    assert np.array_equal(again.g, first.g) and np.array_equal(again.intensity, first.intensity)
    assert again.wave_number == first.wave_number
    monkeypatch.undo()
    other = reflection_table(phase, q_max=1.2, wavelength=wavelength, cache_dir=tmp_path)
    assert len(other.g) < len(first.g) and len(list(tmp_path.glob("reflections-Ag-*.npz"))) == 2
    # {111} of Ag: |g| = sqrt(3) / a, eight of them
    assert np.sum(np.isclose(np.linalg.norm(first.g, axis=1), np.sqrt(3) / 4.0862, rtol=1e-4)) == 8
