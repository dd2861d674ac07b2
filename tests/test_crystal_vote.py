"""The positions' vote of region orientations: clustering by hand, sampling, and a misleading mean pattern."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("orix")
pytest.importorskip("diffsims")

from stemnmf.crystal import load_phase, orientation_datasets, quaternions_to_matrices  # noqa: E402
from stemnmf.crystal.consensus import consensus, sample_positions  # noqa: E402
from stemnmf.crystal.matching import misorientation_angles  # noqa: E402
from stemnmf.crystal.rotations import axis_angle_matrix  # noqa: E402
from stemnmf.crystal.templates import symmetry_matrices  # noqa: E402
from stemnmf.io.dataset import Calibration, Dataset4D  # noqa: E402
from stemnmf.io.results import Results  # noqa: E402
from stemnmf.simulate import Optics, diffraction_pattern, fcc, zone_axis_rotation  # noqa: E402


@pytest.fixture(scope="module")
def cubic():
    return symmetry_matrices(load_phase("Ag"))


def test_consensus_keeps_the_largest_cluster_over_the_symmetry(cubic):
    rng = np.random.default_rng(0)
    truth = axis_angle_matrix((1, 2, 3), 17.0)
    wrong = axis_angle_matrix((3, -1, 1), 25.0) @ truth
    near_truth = [axis_angle_matrix(rng.normal(size=3), 0.8) @ truth for _ in range(4)]
    # the same crystal written with another of its symmetry-equivalent matrices (90° about the crystal's z)
    equivalent = truth @ axis_angle_matrix((0, 0, 1), 90.0)
    near_wrong = [axis_angle_matrix(rng.normal(size=3), 0.5) @ wrong for _ in range(3)]
    rotations = np.stack([wrong, *near_wrong, *near_truth, equivalent])  # the first (the "mean pattern") is wrong
    centre, members = consensus(rotations, np.zeros(len(rotations), int), np.ones(len(rotations)), [cubic], radius=5.0)
    assert members.tolist() == [False] * 4 + [True] * 5
    assert misorientation_angles(truth, rotations[centre][None], cubic)[0] < 1.0
    # a second phase never joins the cluster, however close
    phases = np.array([0] * 4 + [0, 0, 1, 1, 1])
    _, members = consensus(rotations, phases, np.ones(len(rotations)), [cubic, cubic], radius=5.0)
    assert members.sum() == 4


def test_sample_positions_is_seeded_bounded_and_from_the_stronger_half():
    maps = np.zeros((3, 10, 10))
    maps[0, :5] = np.arange(50).reshape(5, 10) + 1.0  # 50 positions, weights 1..50
    maps[1, 7, 7] = 0.3  # one position
    first = sample_positions(maps, 8, random_state=4)
    assert first[0].size == 8 and first[1].tolist() == [77] and first[2].size == 0
    assert (maps[0].ravel()[first[0]] > 25).all()  # the stronger half: weights 26..50
    assert all((a == b).all() for a, b in zip(first, sample_positions(maps, 8, random_state=4)))
    assert not (first[0] == sample_positions(maps, 8, random_state=5)[0]).all()


TWIN_AXES = ([1, 1, 1], [-1, 1, 1], [1, -1, 1], [1, 1, -1])
OPTICS = Optics(beam_energy=300.0, convergence_angle=1.05, q_pixel=0.02, det_shape=(128, 128), detector_blur=0.5)


@pytest.mark.slow
def test_vote_recovers_regions_whose_mean_pattern_misleads(tmp_path):
    """Three regions of known orientations (zone axes [001], [101], [-112] of Ag, tilted 0.4°), 10 noisy
    positions each. By construction each region's mean pattern is the pattern of the NEXT region's crystal:
    the mean-pattern rule must index every region as the wrong crystal, the positions' vote as the right one."""
    crystal = fcc(4.0862)
    rng = np.random.default_rng(3)
    truth = np.array([
        axis_angle_matrix(rng.normal(size=3), 0.4) @ zone_axis_rotation(crystal, uvw, in_plane=rng.uniform(0, 360))
        for uvw in ([0, 0, 1], [1, 0, 1], [-1, 1, 2])
    ])
    expected = [diffraction_pattern(crystal, rotation, 150.0, OPTICS) * 2e5 for rotation in truth]
    data = np.stack([rng.poisson(expected[i // 10]).astype(np.float32) for i in range(30)]).reshape(3, 10, 128, 128)
    maps = np.stack([np.arange(3)[:, None] == r for r in range(3)]).repeat(10, axis=2).astype(np.float32)
    misleading = np.stack([expected[(r + 1) % 3] for r in range(3)]).astype(np.float32)
    calibration = Calibration(q_pixel=0.02, beam_energy=300.0, origin=(64.0, 64.0), convergence_angle=1.05)
    dataset = Dataset4D(data, calibration=calibration)
    results = Results({"/regions/maps": maps, "/regions/mean_patterns": misleading}, {"calibration": calibration.to_dict()})
    symmetry = symmetry_matrices(load_phase("Ag"))

    def errors(found):
        # along <112> a crystal and its Σ3 twin give the same zero-order pattern but for the Ewald sphere's
        # curvature (a 0.01 % difference of the fit here): the [-112] region counts its twins as right
        rotations = quaternions_to_matrices(found["/orientations/regions"])
        out = []
        for r in range(3):
            equivalent = [truth[r]] + ([truth[r] @ axis_angle_matrix(a, 60.0) for a in TWIN_AXES] if r == 2 else [])
            out.append(min(misorientation_angles(t, rotations[r][None], symmetry)[0] for t in equivalent))
        return np.array(out)

    options = dict(resolution=2.0, cache_dir=str(tmp_path), random_state=0)
    alone = errors(orientation_datasets(results, ["Ag"], dataset=dataset, vote_positions=0, **options))
    found = orientation_datasets(results, ["Ag"], dataset=dataset, vote_positions=8, **options)
    assert (alone > 5.0).all(), alone  # the construction: the mean-pattern rule fails on every region
    assert (errors(found) <= 2.0).all(), errors(found)
    votes, candidates = found["/orientations/regions_votes"], found["/orientations/regions_candidates"]
    assert (candidates == 9).all() and (votes >= 5).all()  # a majority of the 8 positions + the mean pattern
    assert np.allclose(found["/orientations/regions_confidence"], votes / candidates)
    assert "/orientations/regions_score" in found and found["/orientations/regions"].shape == (3, 4)
    # the positions matched against every template (the slow path) vote the same way, for the same orientations
    every = orientation_datasets(results, ["Ag"], dataset=dataset, vote_positions=8, vote_templates=0, **options)
    assert (errors(every) <= 2.0).all(), errors(every)
    np.testing.assert_array_equal(every["/orientations/regions_votes"], votes)
    slow, fast = (quaternions_to_matrices(f["/orientations/regions"]) for f in (every, found))
    assert max(misorientation_angles(a, b[None], symmetry)[0] for a, b in zip(slow, fast)) < 0.05
