"""Scores against the truth: a region's best-matching grain, touching crystals of one orientation merged or not."""

from __future__ import annotations

import numpy as np

from stemnmf.crystal.rotations import axis_angle_matrix, matrices_to_quaternions
from stemnmf.crystal.scores import best_matching_grains, orientation_scores, touching_equal_crystals
from stemnmf.io.scanfile import Truth


def _truth(touching: bool):
    """Crystal 0 (orientation A) on columns 0-3; crystals 1 and 2 (both orientation B) on 4-6 and 7-9,
    or, when not touching, crystal 2 on 8-10 with column 7 empty. One region covers columns 0-9."""
    labels = np.zeros((3, 4, 11), np.uint8)
    labels[0, :, 0:4] = 1
    labels[1, :, 4:7] = 1
    if touching:
        labels[2, :, 7:10] = 1
    else:
        labels[2, :, 8:11] = 1
    a = axis_angle_matrix((0, 0, 1), 10.0)
    b = axis_angle_matrix((1, 0, 0), 30.0)
    orientations = matrices_to_quaternions(np.stack([a, b, b]))
    region = np.zeros((1, 4, 11), np.float32)
    region[0, :, 0:10] = 1.0
    return Truth(labels, orientations=orientations, extra={"phases": np.array(["Ag", "Ag", "Ag"])}), region, b


def test_touching_crystals_of_one_orientation_are_one_grain():
    truth, region, b = _truth(touching=True)
    groups = touching_equal_crystals(np.stack([axis_angle_matrix((0, 0, 1), 10.0), b, b]), truth.labels)
    assert groups[1] == groups[2] != groups[0]
    # single crystals: crystal 0 covers 16 positions of the region, 1 and 2 cover 12 each
    assert best_matching_grains(region, truth.labels).tolist() == [0]
    assert best_matching_grains(region, truth.labels, groups).tolist() == [1]
    found = {"phases": np.array(["Ag"]), "regions": matrices_to_quaternions(b[None]), "regions_phase": np.array([0])}
    single = orientation_scores(found, region, truth)["orientation_errors"][0]
    merged = orientation_scores(found, region, truth, merge_equal=True)["orientation_errors"][0]
    assert merged < 1e-6
    assert single > 5.0  # 30° about x against 10° about z, with cubic symmetry not applied here


def test_separate_crystals_or_other_phases_stay_apart():
    truth, region, b = _truth(touching=False)
    rotations = np.stack([axis_angle_matrix((0, 0, 1), 10.0), b, b])
    groups = touching_equal_crystals(rotations, truth.labels)
    assert len(set(groups.tolist())) == 3
    # touching, same orientation, different phases: apart
    touching, _, _ = _truth(touching=True)
    assert len(set(touching_equal_crystals(rotations, touching.labels, truth_phases=["Ag", "Ag", "Si"]).tolist())) == 3
    # touching, orientations 0.5° apart: apart
    turned = rotations.copy()
    turned[2] = axis_angle_matrix((0, 1, 0), 0.5) @ b
    assert len(set(touching_equal_crystals(turned, touching.labels).tolist())) == 3
