"""Recovering grains that the merges left inside the component of a grain around them (issue 16).

Truth by construction: a small grain of another orientation stacked inside a
larger grain must come back as its own component; one grain whose thickness
fringes make its patterns far from rank one must not be split; the controls of
tests/test_merge_evidence.py stay exact with the recovery on.
"""

import numpy as np
import pytest

from stemnmf.decompose import IterativeNMF
from stemnmf.decompose.iterative import recover_grains
from stemnmf.decompose.recover import recover_candidates
from stemnmf.errors import ConfigError, DataValueError
from test_merge_evidence import A_REFLECTIONS, C_REFLECTIONS, RINGS, SECTORS, four_blobs, grains_scene

SHAPE = (40, 40)


def stacked_scene(under=0.8, small=0.5, counts=200.0, seed=0):
    """A grain B (32 x 32 positions, C's orientation) with a grain S (12 x 12, A's reflections at one
    thickness, intensity ``small``) stacked inside it; under S, B keeps ``under`` of its intensity."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:40]
    B = (yy >= 4) & (yy < 36) & (xx >= 4) & (xx < 36)
    S = (yy >= 14) & (yy < 26) & (xx >= 12) & (xx < 24)
    X = np.zeros((1600, RINGS, SECTORS))
    for i in np.flatnonzero(B.ravel()):
        X[i] = 0.03
        for ring, sectors, value in C_REFLECTIONS:
            X[i, ring, sectors] += value * (under if S.ravel()[i] else 1.0)
    for i in np.flatnonzero(S.ravel()):
        for ring, sectors, _ in A_REFLECTIONS:
            X[i, ring, sectors] += small
    X = rng.poisson(X.reshape(1600, -1) * counts) / counts
    return X.astype(np.float32), B, S


def one_component(X, mask):
    """The merged model of a region: its indicator map and the mean pattern over it."""
    Wt = mask.ravel()[None].astype(np.float32)
    return Wt, X[mask.ravel()].mean(axis=0, dtype=np.float64)[None].astype(np.float32)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("under, small", [(0.8, 0.5), (0.6, 0.3), (1.0, 0.2)])
def test_a_grain_stacked_inside_another_comes_back_as_its_own_component(under, small):
    X, B, S = stacked_scene(under, small)
    Wt, H = one_component(X, B)  # the merge put S into B's component
    Wt2, H2, kept = recover_grains(X, Wt, H, SHAPE)
    assert len(Wt2) == 2 and [c.host for c in kept] == [0]
    footprints = Wt2 >= 0.2 * Wt2.max(axis=1, keepdims=True)
    assert _iou(footprints[1], S.ravel()) > 0.8  # the new component is S
    assert _iou(footprints[0], B.ravel()) > 0.8  # and B keeps its whole extent, S's positions included
    # its pattern holds S's reflections, which B's pattern lacks
    new = H2[1].reshape(RINGS, SECTORS)
    for ring, sectors, _ in A_REFLECTIONS:
        assert (new[ring, sectors] > 0.2).all()
        assert (H2[0].reshape(RINGS, SECTORS)[ring, sectors] < 0.1).all()


def test_the_reasons_of_a_recovery_are_reported():
    X, B, S = stacked_scene()
    Wt, H = one_component(X, B)
    R = X - Wt.T @ H
    (c,) = recover_candidates(X, Wt, H, SHAPE, (R * R).sum(axis=0), (R * R).sum(axis=1))
    assert c.kept and c.host == 0
    assert c.size == S.sum()  # the new map's connected footprint is S
    assert c.gain > 3 and c.continuity > 0.5
    assert c.new_peaks == c.peaks >= 10  # 12 reflections of S, none of them in B


def test_a_grain_split_by_thickness_fringes_is_not_split_again():
    X, grains = grains_scene()
    A = grains["A"]
    # A's patterns are far from rank one (see tests/test_merge_evidence.py): the split is significant ...
    Wt, H = one_component(X, A)
    R = X - Wt.T @ H
    (c,) = recover_candidates(X, Wt, H, SHAPE, (R * R).sum(axis=0), (R * R).sum(axis=1))
    assert c.gain > 3
    # ... but its parts share A's reflections, so nothing is kept
    assert not c.kept
    Wt2, H2, kept = recover_grains(X, Wt, H, SHAPE)
    assert kept == [] and len(Wt2) == 1


@pytest.fixture(scope="module")
def scene_recovered():
    X, grains = grains_scene()
    model = IterativeNMF(random_state=0, merge_threshold=0.4, n_restarts=4, n_jobs=1, scan_shape=SHAPE)
    W = model.fit_transform(X)
    return grains, model, W


def test_the_merge_controls_stay_exact_with_the_recovery_on(scene_recovered):
    grains, model, W = scene_recovered
    share = {g: W[m.ravel()].sum(axis=0) / W.sum(axis=0) for g, m in grains.items()}
    assert model.recovered_ == []
    assert model.to_results()["/decompose/recovered"].shape == (0,)
    assert model.n_components_ == 2
    assert np.count_nonzero(share["A"] > 0.5) == 1  # A: one component
    assert int(np.argmax(share["C"])) == int(np.argmax(share["D"])) != int(np.argmax(share["A"]))


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.2, 0.4, 0.6])
def test_four_separate_blobs_stay_four_with_the_recovery_on(threshold):
    W, X = four_blobs()
    model = IterativeNMF(random_state=0, merge_threshold=threshold, n_restarts=4, n_jobs=1, scan_shape=SHAPE)
    model.fit(X)
    assert model.n_components_ == 4 and model.recovered_ == []


def test_a_stacked_grain_keeps_its_own_component_in_a_full_fit():
    X, B, S = stacked_scene()
    model = IterativeNMF(random_state=0, merge_threshold=0.4, n_restarts=4, n_jobs=1, scan_shape=SHAPE)
    W = model.fit_transform(X)
    share = W[S.ravel()].sum(axis=0) / W.sum(axis=0)
    assert model.n_components_ == 2 and share.max() > 0.8


def test_bad_scan_shape():
    X, _, _ = stacked_scene()
    with pytest.raises(DataValueError, match="scan_shape"):
        IterativeNMF(n_restarts=1, merge_threshold=0.4, scan_shape=(30, 30)).fit(X)
    with pytest.raises(ConfigError, match="scan_shape"):
        IterativeNMF(n_restarts=1, merge_threshold=0.4, scan_shape=(40, 40, 1)).fit(X)


RICH_RINGS, RICH_SECTORS = 4, 36


def two_stacked_scene(seed=0, counts=200.0):
    """Grain B (32 x 32 positions, 20 reflections over 4 rings x 36 sectors) with two grains S1, S2 (10 x 12) stacked
    inside it, apart; each has 16 reflections of its own (none shared with B or the other) and, like grains of one
    phase in other orientations, also lights 20 of B's reflections; under them B keeps 0.7 of its intensity."""
    rng = np.random.default_rng(seed)
    order = np.random.default_rng(1).permutation(RICH_RINGS * RICH_SECTORS)
    b_refl, own = order[:20], (order[20:36], order[36:52])
    yy, xx = np.mgrid[0:40, 0:40]
    B = (yy >= 4) & (yy < 36) & (xx >= 4) & (xx < 36)
    S = ((yy >= 8) & (yy < 18) & (xx >= 8) & (xx < 20), (yy >= 22) & (yy < 32) & (xx >= 20) & (xx < 32))
    stacked = (S[0] | S[1]).ravel()
    X = np.zeros((1600, RICH_RINGS * RICH_SECTORS))
    X[B.ravel()] = 0.03
    X[np.ix_(B.ravel(), b_refl)] += np.where(stacked[B.ravel()], 0.7, 1.0)[:, None]
    for s, reflections in zip(S, own):
        X[np.ix_(s.ravel(), b_refl)] += 0.5
        X[np.ix_(s.ravel(), reflections)] += 0.5
    X = rng.poisson(X * counts) / counts
    return X.astype(np.float32), B, S, own


@pytest.mark.parametrize("seed", [0, 1])
def test_two_grains_stacked_in_one_component_both_come_back(seed):
    X, B, S, own = two_stacked_scene(seed)
    Wt, H = one_component(X, B)  # the merges put S1 and S2 into B's component
    Wt2, H2, kept = recover_grains(X, Wt, H, SHAPE)
    assert len(Wt2) == 3 and len(kept) == 2  # one per round: the second round splits the host again
    footprints = Wt2 >= 0.2 * Wt2.max(axis=1, keepdims=True)
    for s, reflections in zip(S, own):
        c = int(np.argmax([_iou(f, s.ravel()) for f in footprints]))
        assert c > 0 and _iou(footprints[c], s.ravel()) > 0.8
        assert (H2[c, reflections] > 0.2).all()  # the new component holds that grain's own reflections
    assert _iou(footprints[0], B.ravel()) > 0.8
    # the first part has 16 reflections of its own but under half of its peaks: it also holds the reflections of B
    # and of the other grain, which the rest of the host shows
    assert 15 <= kept[0].new_peaks < 0.5 * kept[0].peaks


def test_one_round_or_the_share_of_new_peaks_alone_recover_less():
    X, B, S, _ = two_stacked_scene()
    Wt, H = one_component(X, B)
    assert len(recover_grains(X, Wt, H, SHAPE, rounds=1)[2]) == 1
    assert recover_grains(X, Wt, H, SHAPE, many_peaks=None)[2] == []
