"""The evidence beside Cao et al.'s two levels: held-out error, split-half stability, map coherence, the vote."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage, optimize

from stemnmf.errors import ConfigError
from stemnmf.kselect import (
    combine_votes,
    coherence_by_k,
    held_out_evidence,
    map_coherence,
    match_components,
    nnls_rows,
    select_k,
    votes_line,
)


def test_map_coherence_by_hand():
    # columns 0 | 1: horizontal neighbours (0, 1) and (0, 1) have no variance in either -> 0;
    # vertical neighbours (0, 0) and (1, 1) are perfectly correlated -> 1; mean 0.5
    W = np.array([[0, 1], [0, 1]], dtype=float).reshape(4, 1)
    assert map_coherence(W, (2, 2))[0] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((40, 40)), 4).reshape(-1, 1)
    noise = rng.random((1600, 1))
    values = map_coherence(np.hstack([smooth, noise]), (40, 40))
    assert values[0] > 0.9 and abs(values[1]) < 0.1
    ks, least = coherence_by_k({2: (np.hstack([smooth, smooth]), None), 3: (np.hstack([smooth, smooth, noise]), None)}, (40, 40))
    assert ks.tolist() == [2, 3]
    assert least[0] > 0.9 and abs(least[1]) < 0.1


def test_match_components_finds_the_permutation():
    rng = np.random.default_rng(1)
    H = rng.random((5, 30))
    order = [3, 0, 4, 1, 2]
    matched = match_components(H, 2.0 * H[order])  # scale does not matter, order does not matter
    np.testing.assert_allclose(matched, 1.0, atol=1e-12)
    # two orthogonal pairs swapped: cosines 1 and 1, never the cross pairing (0)
    a = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(sorted(match_components(a, a[::-1])), [1.0, 1.0])


def test_nnls_rows_matches_scipy():
    rng = np.random.default_rng(2)
    H = rng.random((4, 25)).astype(np.float32)
    X = rng.normal(0.3, 0.5, (6, 25)).astype(np.float32)  # some rows need zero weights
    A = nnls_rows(H @ H.T, H @ X.T, sweeps=500, tol=1e-9)
    for i in range(6):
        expected, _ = optimize.nnls(H.T.astype(np.float64), X[i].astype(np.float64))
        np.testing.assert_allclose(A[:, i], expected, atol=2e-4)


def test_combine_votes_by_hand():
    assert combine_votes({"a": 5, "b": 3, "c": 9, "d": 5, "e": 11}) == (5, (5, 9))
    assert combine_votes({"a": 4, "b": 8}) == (4, (4, 8))  # lower median of two, range over both
    assert combine_votes({"a": 7, "b": 3, "c": 6, "d": 9}) == (6, (6, 7))
    # the deciders' median (9, 11, 3 -> 9); the range 3 5 5 9 11 -> 5..9
    deciders = ("c", "coherence", "b")
    assert combine_votes({"a": 5, "b": 3, "c": 9, "d": 5, "coherence": 11}, deciders=deciders) == (9, (5, 9))
    # 3 3 4 5 9 -> range 3..5, widened to the deciders' median 4 (no change); one decider -> itself
    assert combine_votes({"a": 5, "b": 3, "c": 9, "d": 3, "coherence": 4}, deciders=("coherence",)) == (4, (3, 5))
    assert combine_votes({"a": 5, "b": 3, "c": 9, "d": 5, "coherence": 11}, deciders=("coherence",)) == (11, (5, 11))
    # a decider missing: the median of all
    assert combine_votes({"a": 7, "b": 3, "c": 6, "d": 9}, deciders=("a", "coherence")) == (6, (6, 7))


def test_coherence_ratio_by_hand():
    from stemnmf.kselect import coherence_ratio, coherence_ratio_by_k

    rng = np.random.default_rng(4)
    big = ndimage.gaussian_filter(rng.random((40, 40)), 6).reshape(-1, 1)
    # a small square domain: lag-1 autocorrelation below a large smooth map's, far above noise
    small = np.zeros((40, 40))
    small[10:20, 10:20] = 1.0
    small = small.reshape(-1, 1)
    noise = rng.random((1600, 1))
    factors = {2: (np.hstack([big, big]), None), 3: (np.hstack([big, small, big]), None),
               4: (np.hstack([big, small, big, noise]), None)}
    ks, least, median = coherence_ratio_by_k(factors, (40, 40))
    assert ks.tolist() == [2, 3, 4]
    # the square by hand: 10 of the 39 x 40 horizontal neighbour pairs differ in each of 10 rows...
    p, differ = 100 / 1600, 2 * 10 / (39 * 40)
    assert least[1] == pytest.approx(1 - differ / (2 * p * (1 - p)), abs=0.02)
    ratio = coherence_ratio(least, median)
    assert ratio[0] == pytest.approx(1.0) and 0.8 < ratio[1] < 1.0 and ratio[2] < 0.2
    assert coherence_ratio([0.5], [0.0]).tolist() == [0.0]


@pytest.fixture(scope="module")
def three_blocks():
    """48 x 48 scan: three patterns in three vertical bands, mixed at the borders, Poisson-like noise."""
    rng = np.random.default_rng(5)
    patterns = np.zeros((3, 400))
    for p in patterns:
        p[rng.choice(400, 25, replace=False)] = rng.uniform(0.5, 1.0, 25)
    x = np.arange(48)
    weights = np.stack([np.clip(1 - np.abs(x - c) / 12.0, 0, 1) for c in (6, 24, 42)], axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    W = np.repeat(weights[None], 48, axis=0).reshape(-1, 3)
    X = W @ patterns
    X = rng.poisson(X * 200) / 200.0
    return X.astype(np.float32)


def test_held_out_evidence_on_a_known_rank(three_blocks):
    evidence = held_out_evidence(three_blocks, range(2, 9), random_state=0, max_positions=1000, max_features=400)
    assert evidence.n_positions == 1000 and evidence.n_features <= 400
    assert evidence.error.shape == (2, 7) and evidence.stability.shape == (1, 7)
    err = evidence.mean_error
    # three patterns: the held-out error falls steeply to k = 3, then barely changes
    assert err[0] > 3 * err[1] and err[0] > 5 * err[1]
    assert err[1] <= 1.05 * err.min()
    # the three patterns are found in both halves of the positions
    assert evidence.mean_stability[1] > 0.95
    out = evidence.to_results()
    assert out["/kselect/heldout/error"].shape == (2, 7)


def test_held_out_evidence_four_folds_extend_the_two(three_blocks):
    two = held_out_evidence(three_blocks, range(2, 6), random_state=3, max_positions=600, max_features=300)
    four = held_out_evidence(three_blocks, range(2, 6), random_state=3, max_positions=600, max_features=300, n_folds=4)
    assert four.error.shape == (4, 4) and four.stability.shape == (2, 4)
    # same subsample and halves: the first two folds are the two-fold run's
    np.testing.assert_array_equal(four.error[:2], two.error)
    np.testing.assert_array_equal(four.stability[:1], two.stability)
    assert four.error_se.shape == (4,) and np.all(four.error_se >= 0)
    with pytest.raises(ConfigError, match="n_folds"):
        held_out_evidence(three_blocks, range(2, 6), n_folds=3)


def test_held_out_evidence_is_deterministic(three_blocks):
    a = held_out_evidence(three_blocks, range(2, 6), random_state=3, max_positions=600, max_features=300)
    b = held_out_evidence(three_blocks, range(2, 6), random_state=3, max_positions=600, max_features=300)
    np.testing.assert_array_equal(a.error, b.error)
    np.testing.assert_array_equal(a.stability, b.stability)


def test_held_out_evidence_needs_enough_data():
    with pytest.raises(ConfigError, match="held-out evidence needs"):
        held_out_evidence(np.ones((20, 50), dtype=np.float32), range(3, 15))


@pytest.fixture(scope="module")
def combined(three_blocks):
    return select_k(three_blocks, k_values=range(2, 9), pattern_shape=(20, 20), scan_shape=(48, 48), random_state=0,
                    pca=False)


def test_select_k_combined_on_three_patterns(three_blocks, combined):
    from stemnmf.kselect.combine import fits_choice

    selection = combined
    # the votes read off the fits choose the three patterns; the peak groups decide and may say one
    # fewer here: every position between two band centres is a blend, and a continuum of mixed peak
    # sets chains two bands into one group (docs/kselect.md, limits) -- within the +-1 tolerance
    assert fits_choice(selection.votes) == 3
    assert selection.chosen_k == selection.votes["peaks"] and abs(selection.chosen_k - 3) <= 1
    assert set(selection.votes) == {"knee", "iqa", "stability", "heldout", "coherence", "noise", "peaks"}
    # three patterns under Poisson noise of gain 1/200: fits beyond 3 remove no more than noise would
    assert selection.votes["noise"] == 3
    assert selection.combined.noise.gain == pytest.approx(1 / 200, rel=0.1)
    low, high = selection.plausible_range
    assert low <= 3 <= high
    out = selection.to_results()
    assert out["/kselect/evidence"] == "combined"
    assert json.loads(out["/kselect/votes"]) == selection.votes
    assert int(out["/kselect/chosen_k"]) == selection.chosen_k and int(out["/kselect/fits_k"]) == 3
    assert out["/kselect/coherence/least"].shape == (7,)
    assert int(out["/kselect/peakgroups/vote"]) >= 1 and out["/kselect/peakgroups/labels"].shape == (24, 24)
    # the published two levels alone
    cao = select_k(three_blocks, k_values=range(2, 9), pattern_shape=(20, 20), random_state=0, pca=False,
                   evidence="cao")
    assert cao.combined is None and cao.chosen_k == cao.decision.chosen_k
    assert cao.to_results()["/kselect/evidence"] == "cao"
    with pytest.raises(ConfigError, match="evidence"):
        select_k(three_blocks, k_values=range(2, 5), pattern_shape=(20, 20), evidence="vote")


def test_first_run_end_by_hand():
    from stemnmf.kselect import first_run_end

    assert first_run_end([3, 4, 5, 6, 7], [0.5, 1, 1, 0.2, 1], 0.9) == 5  # run 4..5; the later 7 does not count
    assert first_run_end([3, 4, 5], [0.1, 0.2, 0.3], 0.9) == 3  # none passes: the smallest k
    assert first_run_end([3, 4, 5], [1, 1, 1], 0.9) == 5


def test_votes_reach_the_summary_line_and_the_report_figure(combined):
    from stemnmf.kselect.plots import fig_kselect_evidence

    out = combined.to_results()
    line = votes_line(out)
    low, high = combined.plausible_range
    assert line.startswith("loss knee ") and f"plausible k = {low}..{high}" in line and "peak groups " in line and "(the peak-group vote decides)" in line
    assert votes_line({}) == ""
    fig = fig_kselect_evidence(out)
    assert fig is not None and len(fig.axes) == 3  # votes, held-out error and its twin axis
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == len(combined.votes)
    assert fig_kselect_evidence({"/kselect/chosen_k": 3}) is None


def test_run_summary_prints_the_votes():
    from stemnmf.pipeline import RunSummary

    lines = RunSummary(4, "why", 2, None, {"nmf": 1.0}, None, None, "loss knee 4, IQA 3; plausible k = 3..4").lines()
    assert lines[0].startswith("components: k = 4") and lines[1] == "k votes:    loss knee 4, IQA 3; plausible k = 3..4"
    assert not any(line.startswith("k votes") for line in RunSummary(4, "why", 2, None, {}, None, None).lines())
