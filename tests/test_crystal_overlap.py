"""Overlapped patterns indexed as a sum of two crystals (stemnmf.crystal.overlap), truth by construction."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("orix")
pytest.importorskip("diffsims")

from orix.quaternion import Orientation  # noqa: E402
from orix.quaternion.symmetry import Oh  # noqa: E402

from stemnmf.crystal import Indexer, IndexOptions, matrices_to_quaternions  # noqa: E402
from stemnmf.crystal.overlap import index_sums  # noqa: E402
from stemnmf.crystal.rotations import axis_angle_matrix  # noqa: E402
from stemnmf.simulate import Optics, diffraction_pattern, fcc, zone_axis_rotation  # noqa: E402

OPTICS = Optics(beam_energy=300.0, convergence_angle=1.05, q_pixel=0.02, det_shape=(128, 128), detector_blur=0.5)


def _angle(rotation_a, rotation_b) -> float:
    """Symmetry-reduced misorientation (degrees) by orix."""
    conj = np.array([1.0, -1.0, -1.0, -1.0])
    a, b = (Orientation(matrices_to_quaternions(np.asarray(r)[None]) * conj, symmetry=Oh) for r in (rotation_a, rotation_b))
    return float(a.angle_with(b, degrees=True)[0])


@pytest.mark.slow
def test_a_sum_of_two_patterns_gives_both_orientations(tmp_path):
    crystal = fcc(4.0862)
    first = axis_angle_matrix([0.3, 1.0, 0.2], 0.4) @ zone_axis_rotation(crystal, [0, 0, 1], in_plane=17.0)
    second = axis_angle_matrix([1.0, 0.2, 0.1], 0.3) @ zone_axis_rotation(crystal, [1, 0, 1], in_plane=71.0)
    rng = np.random.default_rng(0)
    a, b = (diffraction_pattern(crystal, r, 150.0, OPTICS) * 2e5 for r in (first, second))
    patterns = np.array([rng.poisson(a), rng.poisson(0.55 * a + 0.45 * b)], np.float32)
    indexer = Indexer(["Ag"], (128, 128), q_pixel=0.02, beam_energy=300.0, origin=(64, 64), convergence_angle=1.05,
                      options=IndexOptions(resolution=2.0, cache_dir=str(tmp_path)))
    single = indexer.match(patterns)
    assert _angle(single.rotations[0], first) < 2.0 and _angle(single.rotations[1], first) < 2.0
    fits = index_sums(indexer, patterns, single.rotations, single.phase, single)
    # one crystal: one template fits, no sum is reported
    assert not fits[0].accepted
    # two crystals: the sum fits far better than either alone, and its second crystal is the other grain
    assert fits[1].accepted
    assert fits[1].sum_score > 1.1 * fits[1].single_score
    assert _angle(fits[1].second_rotation, second) < 1.0
    assert 0.2 < fits[1].second_share < 0.8
