"""The spinel crystal and the orientation tilt range added for issue 21 (choosing k on spinel scans)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemnmf.errors import ConfigError
from stemnmf.simulate import quaternion_to_matrix, simulate_truth, spinel


def test_spinel_cell_and_extinctions():
    c = spinel()
    assert c.cubic and np.allclose(c.basis, np.eye(3) * 8.17)
    # 8 Li (8a) + 16 sites of 16d, each as Mn 0.75 and Ni 0.25, + 32 O (32e)
    assert len(c.positions) == 8 + 32 + 32
    occupancy = {e: c.occupancy[np.array(c.elements) == e].sum() for e in set(c.elements)}
    assert occupancy == pytest.approx({"Li": 8.0, "Mn": 12.0, "Ni": 4.0, "O": 32.0})
    F = np.abs(c.structure_factor([[1, 1, 1], [2, 0, 0], [1, 1, 0], [4, 0, 0], [2, 2, 0], [3, 1, 1], [4, 4, 0]]))
    # F-centring: mixed parity vanishes (110); the d-glide: h00 only for h = 4n (200 vanishes, 400 does not)
    assert F[1] < 1e-9 * F.max() and F[2] < 1e-9 * F.max()
    assert min(F[0], F[3], F[4], F[5], F[6]) > 1e-3 * F.max()
    # the strongest low-order reflections of a spinel are 400 and 440 (oxygen sublattice)
    assert F[3] == F.max() or F[6] == F.max()


def test_orientations_are_tilted_within_the_range():
    truth = simulate_truth("crystals", scan=16, det=48, seed=3, n_orientations=5, orientation_tilt=(1.0, 4.0))
    ids = np.asarray(truth.extra["orientation_id"])
    axes = np.asarray(truth.extra["zone_axes"])
    for q, i in zip(np.asarray(truth.orientations), ids):
        uvw = axes[i].astype(float)
        direction = quaternion_to_matrix(q) @ (uvw / np.linalg.norm(uvw))  # cubic: [uvw] direction = uvw / |uvw|
        tilt = math.degrees(math.acos(min(1.0, abs(direction[2]))))
        assert 1.0 - 1e-6 <= tilt <= 4.0 + 1e-6


def test_orientation_tilt_is_checked():
    with pytest.raises(ConfigError, match="orientation_tilt"):
        simulate_truth("crystals", scan=8, det=32, n_orientations=3, orientation_tilt=(5.0, 1.0))
