"""The fast paths of the default indexing: reflections found once, scores by FFT over the azimuth, the vote's shortlist."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("orix")
pytest.importorskip("diffsims")

from stemnmf.crystal import Indexer, IndexOptions, load_phase  # noqa: E402
from stemnmf.crystal.matching import (  # noqa: E402
    azimuth_spectra,
    best_scores,
    misorientation_angles,
    polar_grid,
    rotation_scores,
    shifted_copies,
    template_matrix,
)
from stemnmf.crystal.rotations import axis_angle_matrix  # noqa: E402
from stemnmf.crystal.templates import SpotTable, spots_for_rotations  # noqa: E402
from stemnmf.errors import ConfigError  # noqa: E402
from stemnmf.simulate import Optics, diffraction_pattern, fcc, zone_axis_rotation  # noqa: E402

OPTICS = Optics(beam_energy=300.0, convergence_angle=1.05, q_pixel=0.02, det_shape=(128, 128), detector_blur=0.5)


def _sorted_spots(radius, angle, intensity):
    keep = intensity > 0
    order = np.lexsort((angle[keep], radius[keep]))
    return radius[keep][order], angle[keep][order], intensity[keep][order]


@pytest.mark.parametrize("name", ["LNMO", "Ag", "Si"])
def test_spot_table_gives_the_spots_of_diffsims(name):
    """The reflections found once, then rotated, give diffsims' own spots (computed rotation by rotation)."""
    phase = load_phase(name)
    settings = {"beam_energy": 300.0, "q_max": 1.25, "excitation_error": 0.01, "minimum_intensity": 1e-4}
    rng = np.random.default_rng(2)
    rotations = np.stack([axis_angle_matrix(rng.normal(size=3), rng.uniform(0, 180)) for _ in range(5)] + [np.eye(3)])
    expected = spots_for_rotations(phase, rotations, settings)
    found = SpotTable(phase, settings).spots(rotations)
    for i in range(len(rotations)):
        a = _sorted_spots(*(v[i] for v in expected))
        b = _sorted_spots(*(v[i] for v in found))
        assert len(a[0]) == len(b[0]) and len(a[0]) > 0
        for x, y in zip(a, b):
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


def test_rotation_scores_are_the_sparse_product_over_every_rotation():
    """The FFT over the azimuth gives the sparse template matrix times every rotated copy of the patterns."""
    grid = polar_grid((64, 64), q_pixel=0.02, r_min=0.1, n_angles=90)
    rng = np.random.default_rng(0)
    n, spots = 7, 12
    radius = rng.uniform(0.1, grid.r_max, (n, spots))
    angle = rng.uniform(-np.pi, np.pi, (n, spots))
    intensity = rng.uniform(0, 1, (n, spots)) * (rng.uniform(size=(n, spots)) > 0.2)
    matrix = template_matrix(radius, angle, intensity, grid, power=0.25)
    polar = rng.uniform(size=(3, grid.n_radii, grid.n_angles)).astype(np.float32)
    direct = np.asarray(matrix @ shifted_copies(polar)).reshape(2 * n, 3, grid.n_angles).transpose(1, 0, 2)
    rows = np.array([1, 4, 8, 13])
    fast = rotation_scores(polar, azimuth_spectra(matrix, grid, rows), grid)
    np.testing.assert_allclose(fast, direct[:, rows], atol=1e-5)
    np.testing.assert_allclose(best_scores(polar, [matrix], grid)[0], direct.max(axis=2), atol=1e-6)


@pytest.fixture(scope="module")
def silver_indexer(tmp_path_factory):
    options = IndexOptions(resolution=2.0, cache_dir=str(tmp_path_factory.mktemp("templates")))
    return Indexer(["Ag"], (128, 128), q_pixel=0.02, beam_energy=300.0, origin=(64.0, 64.0), convergence_angle=1.05,
                   options=options)


@pytest.mark.slow
def test_matching_among_a_shortlist_gives_the_full_match(silver_indexer):
    """Noisy patterns of one crystal matched among the 32 templates that fit their mean best get the full match's solution."""
    crystal = fcc(4.0862)
    rng = np.random.default_rng(7)
    truth = axis_angle_matrix((1, 2, 0.5), 0.6) @ zone_axis_rotation(crystal, [1, 0, 1], in_plane=33.0)
    expected = diffraction_pattern(crystal, truth, 150.0, OPTICS) * 2e5
    patterns = np.stack([rng.poisson(expected) for _ in range(6)]).astype(np.float32)
    full = silver_indexer.match(patterns, refine=False)
    rows = silver_indexer.shortlist(patterns.mean(axis=0), 32)
    assert len(rows) == 1 and len(rows[0]) == 32
    rotations, phases, scores = silver_indexer.match_among(patterns, rows)
    symmetry = silver_indexer.templates[0].symmetry
    assert (phases == 0).all()
    np.testing.assert_allclose(scores, full.score, rtol=1e-4)
    for found, reference in zip(rotations, full.rotations):
        assert misorientation_angles(reference, found[None], symmetry)[0] < 0.01
    # the solutions are right (2° grid, 0.6° tilt)
    assert max(misorientation_angles(truth, rotations, symmetry)) < 2.0


def test_vote_templates_must_not_be_negative():
    with pytest.raises(ConfigError, match="vote_templates"):
        IndexOptions(vote_templates=-1)
    assert IndexOptions().vote_templates == 128 and IndexOptions(vote_templates=0).vote_templates == 0
