"""Components that are one orientation (thickness levels) or none (a peakless background) count once or not at all.

Known answers by construction: spots of Gaussian reflections on a small detector, a scan of known domains.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stemnmf.errors import DataValueError
from stemnmf.kselect import gather_evidence, k_component_loss
from stemnmf.kselect.orientation import (
    OrientationEvidence,
    direct_beam,
    orientation_count,
    orientation_evidence,
    residual_columns,
)

SIDE = 24  # pattern side, pixels
#: One phase's reflections in two orientations: a square lattice and the same lattice turned by 45 degrees.
ORIENTATION_A = [(4, 12), (20, 12), (12, 4), (12, 20), (4, 4), (20, 20)]
ORIENTATION_B = [(6.3, 6.3), (17.7, 17.7), (6.3, 17.7), (17.7, 6.3), (1, 12), (23, 12)]


def pattern(centres=(), heights=None, halo=0.0, sigma=0.8, side=SIDE):
    """A direct beam of height 4 at the centre, reflections of the given heights, and a broad diffuse halo."""
    yy, xx = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float), indexing="ij")
    c = side / 2
    out = 4.0 * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * sigma**2))
    out += halo * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * 7.0**2))  # amorphous: no reflection
    for (cy, cx), h in zip(centres, heights if heights is not None else [1.0] * len(centres)):
        out += h * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return out


#: Grain A at two thicknesses: the same reflections, other intensities (thickness fringes); grain B
#: another orientation of the same phase; carbon between them, diffuse only.
THIN_A = pattern(ORIENTATION_A, [1.0, 1.0, 0.25, 0.25, 0.6, 0.6])
THICK_A = pattern(ORIENTATION_A, [0.25, 0.25, 1.0, 1.0, 0.2, 0.9])
GRAIN_B = pattern(ORIENTATION_B)
CARBON = pattern(halo=0.4)


@pytest.fixture(scope="module")
def four_regions():
    """A 24 x 24 scan: grain A (left) thin, with a thicker band along its lower edge (two rows), carbon (a middle
    band of columns), grain B (right)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:24, :24]
    labels = np.where(xx >= 14, 2, np.where(xx >= 9, 3, np.where(yy < 22, 0, 1)))
    patterns = np.stack([THIN_A, THICK_A, GRAIN_B, CARBON]).reshape(4, -1)
    X = rng.poisson(300.0 * patterns[labels.ravel()]).astype(np.float32)
    return X, (24, 24)


def test_orientation_count_by_hand():
    A = np.zeros((4, 4))
    A[0, 1] = A[1, 0] = 0.9  # 0 and 1: the same peaks
    weight = [4.0, 3.0, 2.0, 1.0]
    rule = dict(threshold=0.5, ratio=0.25, threshold_any=0.8, min_peaks=5)
    assert orientation_count(A, [50, 40, 30, 20], weight, **rule) == 3
    # 3 without peaks: not an orientation
    assert orientation_count(A, [50, 40, 30, 2], weight, **rule) == 2
    # without the peak test (threshold None) only the peakless rule and the links act
    assert orientation_count(A, [50, 40, 30, 2], weight, **{**rule, "threshold": None}) == 3
    linked = np.zeros((4, 4), bool)
    linked[2, 0] = True  # a shifted copy
    assert orientation_count(A, [50, 40, 30, 20], weight, **rule, linked=linked) == 2
    # agreeing at 0.6 (below threshold_any): only a component at most a quarter as strong joins
    A = np.zeros((3, 3))
    A[0, 1] = A[1, 0] = A[0, 2] = A[2, 0] = 0.6
    assert orientation_count(A, [50, 40, 30], [4.0, 3.0, 1.0], **rule) == 2  # 2 joins 0, 1 (3/4 as strong) not
    assert orientation_count(A, [50, 40, 30], [4.0, 3.0, 1.0], **{**rule, "ratio": None}) == 1
    # a weak component agreeing with two counted ones joins the first, it does not make them one
    A = np.zeros((3, 3))
    A[2, 0] = A[0, 2] = A[2, 1] = A[1, 2] = 0.8
    assert orientation_count(A, [50, 40, 30], [3.0, 2.0, 0.5], **rule) == 2
    # every component peakless: the peaks say nothing, every component counts
    assert orientation_count(np.zeros((3, 3)), [0, 1, 0], [3.0, 2.0, 1.0], min_peaks=5) == 3


def test_direct_beam_is_the_bright_centre_only():
    beam = direct_beam(THIN_A)
    assert beam[12, 12] and beam[12, 14]
    for cy, cx in ORIENTATION_A:  # no reflection is taken for the beam
        assert not beam[int(cy), int(cx)]
    assert not direct_beam(np.zeros((5, 5))).any()
    with pytest.raises(DataValueError, match="2D"):
        direct_beam(np.ones(5))


def test_residual_columns_by_hand():
    rng = np.random.default_rng(0)
    W, H = rng.uniform(0, 1, (30, 3)), rng.uniform(0, 1, (3, 8))
    X = (W @ H + rng.uniform(0, 0.1, (30, 8))).astype(np.float32)
    col_sq, mean = residual_columns(X, {3: (W, H)}, [3])
    assert np.allclose(col_sq[3], ((X - W @ H) ** 2).sum(axis=0), rtol=1e-5)
    assert np.allclose(mean, X.mean(axis=0), rtol=1e-6)


def test_thickness_levels_and_a_peakless_background_are_not_orientations(four_regions):
    X, scan = four_regions
    kloss = k_component_loss(X, range(2, 6), random_state=0)
    evidence = orientation_evidence(X, kloss.factors, (SIDE, SIDE))
    # four regions of four patterns: the fit with four components separates them (the loss drops to the noise)
    assert kloss.explained[2] > 0.99 and kloss.explained[2] - kloss.explained[1] > 1e-3
    # two thickness levels of one orientation count once, the carbon not at all: two orientations
    assert evidence.distinct_at(4) == 2
    assert evidence.peakless[evidence.k.tolist().index(4)] == 1
    # each half of the rule alone: the thickness levels joined, the carbon counted (3); the carbon dropped,
    # the levels apart (3); neither (4)
    assert orientation_evidence(X, kloss.factors, (SIDE, SIDE), ks=[4], min_peaks=0).distinct.tolist() == [3]
    assert orientation_evidence(X, kloss.factors, (SIDE, SIDE), ks=[4], threshold=None).distinct.tolist() == [3]
    assert orientation_evidence(X, kloss.factors, (SIDE, SIDE), ks=[4], threshold=None,
                                min_peaks=0).distinct.tolist() == [4]  # fmt: skip
    # every vote for 4 becomes 2
    combined = gather_evidence(X, kloss, knee_k=4, iqa_k=4, scan_shape=scan, pattern_shape=(SIDE, SIDE),
                               random_state=0)  # fmt: skip
    assert combined.raw_votes["knee"] == 4 and combined.votes["knee"] == 2
    assert isinstance(combined.orientation, OrientationEvidence)
    assert "same peaks" in combined.reason
    out = combined.to_results()
    assert json.loads(out["/kselect/votes_unmerged"]) == combined.raw_votes
    assert json.loads(out["/kselect/votes"]) == combined.votes
    assert out["/kselect/orientation/k"].tolist() == sorted(set(combined.raw_votes.values()))


def test_two_orientations_of_one_phase_count_twice():
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:24, :24]
    labels = (xx >= 12).astype(int)
    X = rng.poisson(300.0 * np.stack([THIN_A, GRAIN_B]).reshape(2, -1)[labels.ravel()]).astype(np.float32)
    kloss = k_component_loss(X, range(1, 4), random_state=0)
    evidence = orientation_evidence(X, kloss.factors, (SIDE, SIDE))
    assert evidence.distinct_at(2) == 2 and evidence.peakless[1] == 0
    assert evidence.largest[1] < 0.2  # their reflections lie elsewhere


def test_residual_columns_on_evenly_spaced_positions():
    rng = np.random.default_rng(1)
    W, H = rng.uniform(0, 1, (400, 2)), rng.uniform(0, 1, (2, 6))
    X = (W @ H + rng.uniform(0, 0.1, (400, 6))).astype(np.float32)
    col_sq, mean = residual_columns(X, {2: (W, H)}, [2], max_positions=100)
    rows = np.unique(np.linspace(0, 399, 100).round().astype(int))
    # the residual of the 100 rows scaled to all 400, and their mean
    assert np.allclose(col_sq[2], 4.0 * ((X[rows] - W[rows] @ H) ** 2).sum(axis=0), rtol=1e-5)
    assert np.allclose(mean, X[rows].mean(axis=0), rtol=1e-6)
