"""Evidence-based merging: the cost of a merge, the noise gate, complete linkage, and the controls of issue 16."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.analysis import analyze
from stemnmf.decompose import IterativeNMF
from stemnmf.decompose.evidence import (
    complete_linkage_groups,
    merge_costs,
    merge_evidence,
    merge_rank_one,
    noise_gate,
    pattern_noise,
    pattern_peaks,
    peak_agreement,
    support_overlap,
)
from stemnmf.errors import ConfigError


# -- the pieces, against independent computations ------------------------------------------------
def test_merge_cost_is_the_rise_of_the_least_squares_residual():
    rng = np.random.default_rng(0)
    n, m, k = 60, 25, 5
    Wt = rng.random((k, n))
    H = rng.random((k, m))
    X = Wt.T @ H + 0.3 * rng.random((n, m))
    cost = merge_costs(Wt, H, Wt @ X)

    def rss(maps):  # every pattern refitted by least squares with the maps fixed
        coef, *_ = np.linalg.lstsq(maps.T, X, rcond=None)
        return float(((X - maps.T @ coef) ** 2).sum())

    full = rss(Wt)
    for i, j in [(0, 1), (1, 3), (2, 4)]:
        groups = [[i, j]] + [[c] for c in range(k) if c not in (i, j)]
        merged, _ = merge_rank_one(Wt, H, groups)
        assert cost[i, j] == pytest.approx(rss(merged.astype(np.float64)) - full, rel=1e-3, abs=1e-6)
        assert cost[i, j] == pytest.approx(cost[j, i])
    assert np.all(np.diag(cost) == 0)


def test_rank_one_merge_keeps_wh_for_proportional_maps():
    rng = np.random.default_rng(1)
    u = rng.random(30)
    Wt = np.stack([u, 3 * u, rng.random(30)])
    H = rng.random((3, 12))
    Wm, Hm = merge_rank_one(Wt, H, [[0, 1], [2]])
    np.testing.assert_allclose(Wm.T @ Hm, Wt.T @ H, rtol=1e-5)
    assert (Wm >= 0).all() and (Hm >= 0).all()


def test_noise_gate_is_the_top_singular_value_of_the_noise():
    rng = np.random.default_rng(2)
    n, m, sigma = 800, 200, 0.5
    E = sigma * rng.standard_normal((n, m))
    gate = noise_gate((E**2).sum(1), (E**2).sum(0), k=0, tolerance=1.0)
    expected = sigma**2 * (np.sqrt(n) + np.sqrt(m)) ** 2  # Bai-Yin: the edge of the Marchenko-Pastur law
    # the row and column maxima of one draw sit a few standard deviations above their means: an upper estimate
    assert expected < gate < 1.3 * expected
    top = np.linalg.svd(E, compute_uv=False)[0] ** 2
    assert 0.9 * expected < top < gate
    assert noise_gate((E**2).sum(1), (E**2).sum(0), k=0, tolerance=0.5) == pytest.approx(gate / 2)


def test_complete_linkage_never_chains():
    accepted = np.zeros((4, 4), bool)
    for i, j in [(0, 1), (1, 2), (2, 3)]:  # a chain: 0-1-2-3, but 0 and 2 are not accepted together
        accepted[i, j] = accepted[j, i] = True
    cost = np.array([[0, 1, 9, 9], [1, 0, 3, 9], [9, 3, 0, 2], [9, 9, 2, 0]], float)
    assert complete_linkage_groups(accepted, cost) == [[0, 1], [2, 3]]
    accepted[:] = True
    np.fill_diagonal(accepted, False)
    assert complete_linkage_groups(accepted, cost) == [[0, 1, 2, 3]]


def test_support_overlap_by_hand():
    rows = np.array([[1.0, 1.0, 0.0, 0.0], [0.5, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    half = support_overlap(rows, 0.5)  # row 1's support is {1} (0.5 < 0.5 * 2): shares 1 of row 0's 2
    assert half[0, 1] == 0.5 and half[1, 0] == 0.5
    fifth = support_overlap(rows, 0.2)  # now {0, 1}: the same support whatever the values
    assert fifth[0, 1] == 1.0
    assert fifth[0, 2] == 0.0 and fifth[3, 3] == 0.0


def test_bad_options():
    X = np.random.default_rng(0).random((20, 10)).astype(np.float32)
    for options, message in [
        ({"merge_rule": "greedy"}, "merge_rule"),
        ({"merge_tolerance": -1.0}, "merge_tolerance"),
        ({"footprint_threshold": 1.5}, "footprint_threshold"),
        ({"link_tolerance": -1.0}, "link_tolerance"),
        ({"peak_agreement": 1.5}, "peak_agreement"),
        ({"limit_footprints": "no"}, "limit_footprints"),
    ]:
        with pytest.raises(ConfigError, match=message):
            IterativeNMF(merge_threshold=0.4, **options).fit(X)


def test_link_tolerance_limits_the_links_and_footprints_to_affordable_merges():
    rng = np.random.default_rng(3)
    Wt = rng.random((6, 300)) ** 3
    Wt[1] = Wt[0] + 0.1 * rng.random(300)  # linked to 0 (maps correlated) with a shared footprint
    H = rng.random((6, 40))
    X = Wt.T @ H + 0.01 * rng.random((300, 40))
    R = X - Wt.T @ H
    kwargs = dict(threshold=0.45, pattern_threshold=0.5)
    args = (Wt, H, Wt @ X, (R**2).sum(axis=1), (R**2).sum(axis=0))
    free = merge_evidence(*args, **kwargs)
    gate_only = merge_evidence(*args, footprint_threshold=None, use_links=False, **kwargs)
    assert free.accepted[0, 1] and not gate_only.accepted[0, 1]
    # the pair's cost in units of its gate: a tolerance just above accepts it, just below refuses it
    ratio = free.cost[0, 1] / free.gate[0, 1]
    assert merge_evidence(*args, link_tolerance=1.01 * ratio, **kwargs).accepted[0, 1]
    assert not merge_evidence(*args, link_tolerance=0.99 * ratio, **kwargs).accepted[0, 1]
    # 0: links and footprints must be free, which no pair of distinct components is: the noise gate alone
    np.testing.assert_array_equal(merge_evidence(*args, link_tolerance=0.0, **kwargs).accepted, gate_only.accepted)
    np.testing.assert_array_equal(merge_evidence(*args, link_tolerance=1e300, **kwargs).accepted, free.accepted)


# -- the controls (issue 16), truth by construction ----------------------------------------------
def four_blobs(counts=100.0, seed=0):
    """Four Gaussian blobs (sigma 7) 20 positions apart on a 40 x 40 scan, each with its own sparse
    random pattern over 200 features (10 % non-zero), Poisson noise at ``counts`` per unit."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:40]
    centres = [(10, 10), (10, 30), (30, 10), (30, 30)]
    W = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 7.0**2)).ravel() for cy, cx in centres], 1)
    H = (rng.random((4, 200)) < 0.1) * (0.5 + rng.random((4, 200)))
    X = rng.poisson(W @ H * counts) / counts
    return W, X.astype(np.float32)


@pytest.fixture(scope="module")
def blobs():
    return four_blobs()


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.2, 0.3, 0.4, 0.5, 0.6])
def test_four_separate_blobs_stay_four(blobs, threshold):
    W, X = blobs
    corr = np.corrcoef(W.T)[np.triu_indices(4, 1)]
    assert corr.max() < 0  # the maps anti-correlate, as in the issue
    model = IterativeNMF(random_state=0, merge_threshold=threshold, n_restarts=4, n_jobs=1)
    fitted = model.fit_transform(X)
    assert model.n_components_ == 4
    # each blob is one component: every true map is matched by a fitted map at correlation > 0.95
    match = np.corrcoef(np.hstack([fitted, W]).T)[:4, 4:]
    assert (match.max(axis=0) > 0.95).all() and sorted(match.argmax(axis=0)) == [0, 1, 2, 3]


RINGS, SECTORS = 3, 24
#: Grain A's reflections: (ring, sectors, excitation error s in 1/A).
A_REFLECTIONS = [(0, [0, 6, 12, 18], 0.004), (1, [3, 9, 15, 21], 0.011), (2, [1, 13], 0.019), (2, [4, 16], 0.001)]
#: Grains C and D: the same rings, another orientation (sectors shifted by 2), one thickness.
C_REFLECTIONS = [(0, [2, 8, 14, 20], 1.0), (1, [5, 11, 17, 23], 0.7), (2, [7, 19], 0.5)]


def grains_scene(counts=200.0, seed=0):
    """40 x 40 positions of AA-like features (3 rings x 24 sectors) with three grains of one phase.

    A (18 x 18, top left) thickens from 60 to 300 A across its width; each of
    its reflections brightens and fades at its own rate (kinematic
    sin^2(pi t s) / (pi s)^2 with its excitation error s), so A's feature
    vector turns across the grain. C (18 x 18) touches A on the right: the same
    rings, another orientation. D (14 x 14, bottom left, far from C) has C's
    orientation. A weak amorphous background (0.03) lies under every sector of
    every grain. Poisson noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:40]
    A = (yy >= 2) & (yy < 20) & (xx >= 2) & (xx < 20)
    C = (yy >= 2) & (yy < 20) & (xx >= 20) & (xx < 38)
    D = (yy >= 24) & (yy < 38) & (xx >= 4) & (xx < 18)
    background = 0.03
    X = np.full((1600, RINGS, SECTORS), 0.0)
    thickness = (60.0 + 240.0 * (xx - 2) / 17.0).ravel()
    for i in np.flatnonzero(A.ravel()):
        X[i] = background
        for ring, sectors, s in A_REFLECTIONS:
            X[i, ring, sectors] += np.sin(np.pi * thickness[i] * s) ** 2 / (np.pi * s) ** 2 / 30000.0
    for i in np.flatnonzero((C | D).ravel()):
        X[i] = background
        for ring, sectors, value in C_REFLECTIONS:
            X[i, ring, sectors] += value
    X = rng.poisson(X.reshape(1600, -1) * counts) / counts
    return X.astype(np.float32), {"A": A, "C": C, "D": D}


@pytest.fixture(scope="module")
def scene():
    X, grains = grains_scene()
    model = IterativeNMF(random_state=0, merge_threshold=0.4, n_restarts=4, n_jobs=1)
    W = model.fit_transform(X)
    return X, grains, model, W


def _share(W, mask):
    """Share of each component's total weight inside ``mask``."""
    return W[mask.ravel()].sum(axis=0) / W.sum(axis=0)


def test_a_grain_split_by_thickness_fringes_is_one_component(scene):
    X, grains, model, W = scene
    # the fringes make A's features far from rank one: its second singular value stands far above the noise's
    A = X[grains["A"].ravel()].astype(np.float64)
    s = np.linalg.svd(A, compute_uv=False)
    assert s[1] ** 2 > 5 * s[2] ** 2
    in_a = _share(W, grains["A"])
    assert np.count_nonzero(in_a > 0.5) == 1


def test_touching_grains_of_one_phase_do_not_merge(scene):
    _, grains, model, W = scene
    in_a, in_c = _share(W, grains["A"]), _share(W, grains["C"])
    a, c = int(np.argmax(in_a)), int(np.argmax(in_c))
    assert a != c and in_a[a] > 0.9 and in_c[c] > 0.5
    assert model.n_components_ == 2


def test_far_apart_grains_of_one_orientation_are_one_component_two_regions(scene):
    _, grains, model, W = scene
    in_c, in_d = _share(W, grains["C"]), _share(W, grains["D"])
    assert int(np.argmax(in_c)) == int(np.argmax(in_d))
    truth = np.stack([grains["A"], grains["C"], grains["D"]]).astype(np.uint8)
    # with the region merge on (the model's own peak agreement): touching A and C stay two regions
    result = analyze(W, model.components_, (40, 40), truth=truth, feature="aa", edge_fraction=0,
                     peak_agreement=model.peak_agreement_)
    per_grain = result.scores.grain["per_grain"]
    assert result.regions.n_regions == 3
    assert (per_grain["IoU_G"] > 0.7).all()
    comp = result.regions.component[per_grain["best_cluster"]]
    assert comp[1] == comp[2] != comp[0]


def test_without_the_footprint_test_the_fringes_stay_split():
    X, grains = grains_scene()
    model = IterativeNMF(random_state=0, merge_threshold=0.4, n_restarts=4, n_jobs=1, footprint_threshold=None,
                         link_tolerance=None)
    W = model.fit_transform(X)
    assert np.count_nonzero(_share(W, grains["A"]) > 0.5) >= 2


# -- the same-grain test on the patterns: peaks against the noise ---------------------------------
def test_pattern_noise_is_the_spread_of_least_squares_patterns():
    rng = np.random.default_rng(4)
    n, m, k, sigma = 400, 30, 3, 0.2
    Wt = rng.random((k, n))
    H = rng.random((k, m))
    draws = []
    for _ in range(300):  # least-squares patterns for fixed maps, over many draws of Gaussian noise
        X = Wt.T @ H + sigma * rng.standard_normal((n, m))
        draws.append(np.linalg.lstsq(Wt.T, X, rcond=None)[0])
    spread = np.std(draws, axis=0)
    noise = pattern_noise(Wt, np.full(m, sigma**2 * n))  # col_sq of exactly sigma^2 per entry
    np.testing.assert_allclose(noise, spread, rtol=0.15)


def _ring_patterns(rng, sectors, intensities, background=1.0, rings=3, n_sectors=72):
    """AA-like patterns (rings x sectors, flattened): a smooth ring background plus reflections."""
    H = np.tile(background * (1.0 + 0.2 * np.arange(rings))[:, None], (1, n_sectors)).astype(np.float64)
    for (ring, sector), value in zip(sectors, intensities):
        H[ring, sector] += value
    return H.ravel()


def test_peaks_stand_out_of_the_local_background():
    rng = np.random.default_rng(5)
    h = _ring_patterns(rng, [(0, 10), (1, 40), (2, 60)], [10.0, 8.0, 5.0])  # ring background 1.0-1.4
    noise = np.full((1, h.size), 0.5)
    peaks = pattern_peaks(h[None], noise, sigmas=9.0)[0]
    # 10 and 8 stand 20 and 16 deviations above the ring; 5 stands 10 (just above 9); the rings themselves never
    assert sorted(np.flatnonzero(peaks).tolist()) == [10, 72 + 40, 144 + 60]
    assert not pattern_peaks(h[None], noise, sigmas=11.0)[0][144 + 60]


def test_peak_agreement_tells_one_grains_fringes_from_another_orientation():
    rng = np.random.default_rng(6)
    spots = [(int(r), int(s)) for r, s in zip(rng.integers(0, 3, 12), 3 * rng.choice(24, 12, replace=False))]  # 3 sectors apart or more
    rotated = [(r, (s + 7) % 72) for r, s in spots]  # the same reflections of another orientation
    noise = np.full((1, 216), 0.05)
    grain = [_ring_patterns(rng, spots, 1.0 + 1.5 * rng.random(12)) for _ in range(2)]  # other intensity ratios
    other = _ring_patterns(rng, rotated, 1.0 + 1.5 * rng.random(12))
    H = np.stack(grain + [other]) + 0.05 * rng.standard_normal((3, 216))
    agreement = peak_agreement(pattern_peaks(H, np.repeat(noise, 3, axis=0)))
    assert agreement[0, 1] == 1.0  # same positions, whatever the ratios
    assert agreement[0, 2] == 0.0 and agreement[1, 2] == 0.0
    assert agreement[0, 0] == 1.0 and agreement[1, 0] == agreement[0, 1]


def test_agreeing_peaks_let_a_linked_pair_merge_beyond_the_link_tolerance():
    rng = np.random.default_rng(7)
    n = 400
    yy, xx = np.divmod(np.arange(n), 20)
    left = ((yy < 10) & (xx < 13)).astype(float)  # overlapping footprints: maps correlated at 0.43, linked
    right = ((yy < 10) & (xx >= 5)).astype(float)
    spots = [(0, 5), (0, 41), (1, 20), (1, 56), (2, 33), (2, 69)]
    h0 = _ring_patterns(rng, spots, [4.0, 4.0, 1.0, 1.0, 3.0, 3.0], background=0.2)
    h1 = _ring_patterns(rng, spots, [1.0, 1.0, 4.0, 4.0, 0.5, 0.5], background=0.2)  # same grain, other ratios
    h2 = _ring_patterns(rng, [(r, (s + 11) % 72) for r, s in spots], [4.0, 4.0, 1.0, 1.0, 3.0, 3.0], background=0.2)
    kwargs = dict(threshold=0.3, pattern_threshold=None)
    for h_other, same in [(h1, True), (h2, False)]:
        Wt = np.stack([left, right])
        H = np.stack([h0, h_other])
        X = Wt.T @ H + 0.05 * rng.standard_normal((n, H.shape[1]))
        R = X - Wt.T @ H
        args = (Wt, H, Wt @ X, (R**2).sum(axis=1), (R**2).sum(axis=0))
        tight = merge_evidence(*args, link_tolerance=1.0, **kwargs)
        assert tight.linked[0, 1] and not tight.accepted[0, 1]  # a costly merge: refused by the tolerance
        agreed = merge_evidence(*args, link_tolerance=1.0, peak_agreement_threshold=0.5, **kwargs)
        assert agreed.accepted[0, 1] == same
        assert (agreed.agreement[0, 1] == 1.0) == same


@pytest.mark.slow
def test_held_to_the_tolerance_the_shared_footprint_no_longer_joins_the_fringes():
    # A's fringe pieces have disjoint reflections (agreement 0) and cost far more than 3 noise gates:
    # only the free shared footprint joins them (the default), not the peak test
    X, grains = grains_scene()
    model = IterativeNMF(random_state=0, merge_threshold=0.4, n_restarts=4, n_jobs=1, limit_footprints=True)
    W = model.fit_transform(X)
    assert np.count_nonzero(_share(W, grains["A"]) > 0.5) >= 2
    in_c, in_d = _share(W, grains["C"]), _share(W, grains["D"])
    assert int(np.argmax(in_c)) == int(np.argmax(in_d))  # the peak test still joins one orientation
