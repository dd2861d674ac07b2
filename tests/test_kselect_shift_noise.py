"""Evidence for k from a noise model and from shifted copies of a pattern (known answers by construction)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stemnmf.errors import DataValueError
from stemnmf.kselect import combine_votes, gather_evidence, k_component_loss, noise_vote, select_k
from stemnmf.kselect.combine import DECIDERS, FALLBACK_DECIDERS, LEAD, combined_choice, deciders_for, rule_text
from stemnmf.kselect.noise import noise_step, poisson_gain
from stemnmf.kselect.shift import SHIFT_THRESHOLD, ShiftEvidence, distinct_count, shift_evidence, shift_fraction

SIDE = 24  # pattern side, pixels


def spots(centres, shift=(0.0, 0.0), sigma=0.8, side=SIDE):
    """A pattern of Gaussian spots of height 1 (a direct beam of height 4 at the centre), moved by ``shift``."""
    yy, xx = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float), indexing="ij")
    out = np.zeros((side, side))
    for k, (cy, cx) in enumerate([(side / 2, side / 2), *centres]):
        height = 4.0 if k == 0 else 1.0
        out += height * np.exp(-((yy - cy - shift[0]) ** 2 + (xx - cx - shift[1]) ** 2) / (2 * sigma**2))
    return out


CRYSTAL_A = [(4, 12), (20, 12), (12, 4), (12, 20)]
CRYSTAL_B = [(6, 6), (18, 18), (6, 18), (18, 6)]


def test_shift_fraction_tells_a_moved_pattern_from_another_crystal():
    a = spots(CRYSTAL_A)
    moved = spots(CRYSTAL_A, shift=(0.5, -0.75))  # within the grid of shifts tried (0.25 px steps)
    other = spots(CRYSTAL_B)
    F = shift_fraction(np.stack([a, moved, other, a]))
    assert F.shape == (4, 4) and np.all(np.diag(F) == 0)
    # a shift of 0.5, -0.75 px removes the difference but for what bilinear interpolation blurs
    assert F[1, 0] > 0.9 and F[0, 1] > 0.9
    # another crystal: its spots are elsewhere, no shift of the whole pattern (direct beam too) helps
    assert F[2, 0] < 0.1 and F[0, 2] < 0.1
    # the moved crystal against the other: re-aligning the direct beam (height 4 against spots of 1) explains
    # part of their difference, never most of it; below the threshold at which two patterns are one
    assert 0.2 < F[1, 2] < SHIFT_THRESHOLD and 0.2 < F[2, 1] < SHIFT_THRESHOLD
    # identical patterns are not a shifted copy: nothing to explain (r(0) = 0)
    assert F[3, 0] == 0.0
    with pytest.raises(DataValueError, match="stack"):
        shift_fraction(a)


def test_distinct_count_by_hand():
    F = np.zeros((4, 4))
    F[1, 0] = 0.9  # 0 and 1 one pattern (either way round)
    F[2, 3] = 0.4  # below the threshold
    weight = [4.0, 3.0, 2.0, 1.0]
    assert distinct_count(F, weight, 0.5) == 3
    assert distinct_count(F, weight, 0.3) == 2
    # a weak component (3) that is a moved copy of two strong ones (0 and 2, not copies of each other)
    # joins the first; it does not make them one
    F = np.zeros((4, 4))
    F[3, 0] = F[3, 2] = 0.8
    assert distinct_count(F, weight, 0.5) == 3
    # the order is by strength: the same links with 3 the strongest keep 3 and 1, and join 0 and 2 to 3
    assert distinct_count(F, [1.0, 2.0, 3.0, 4.0], 0.5) == 2


def test_shift_evidence_counts_moved_copies_once():
    a, b = spots(CRYSTAL_A).ravel(), spots(CRYSTAL_B).ravel()
    a_right = spots(CRYSTAL_A, shift=(0.0, 1.0)).ravel()
    factors = {2: (np.ones((5, 2)), np.stack([a, b])), 3: (np.ones((5, 3)), np.stack([a, b, a_right]))}
    evidence = shift_evidence(factors, (SIDE, SIDE))
    assert evidence.k.tolist() == [2, 3] and evidence.distinct.tolist() == [2, 2]
    assert evidence.largest[0] < 0.1 and evidence.largest[1] > 0.9
    assert evidence.distinct_at(3) == 2 and evidence.distinct_at(7) == 7  # not scanned: as it is
    out = evidence.to_results()
    assert out["/kselect/shift/distinct"].tolist() == [2, 2]


def test_poisson_gain_and_noise_step_on_known_noise():
    rng = np.random.default_rng(0)
    scan = (30, 30)
    expected = np.repeat(rng.uniform(0.5, 50.0, (2, 500)), 450, axis=0)  # two domains, top and bottom halves
    gain = 3.0
    X = gain * rng.poisson(expected)
    noise = poisson_gain(X, scan)
    assert noise.gain == pytest.approx(gain, rel=0.03)
    assert noise.energy == pytest.approx(gain * X.sum(), rel=0.03)
    top = np.linalg.svd(X - gain * expected, compute_uv=False)[0] ** 2  # what one component fitted to noise removes
    assert top <= noise.step <= 1.5 * top
    # by hand: g (sqrt(max row sum) + sqrt(max column sum))^2
    assert noise_step(2.0, 16.0, 9.0) == pytest.approx(2.0 * 49.0)
    with pytest.raises(DataValueError, match="does not fit"):
        poisson_gain(X, (29, 30))


def test_noise_vote_on_a_low_rank_poisson_matrix():
    """Rank 3 by construction: the fit removes more than noise up to k = 3, not after."""
    rng = np.random.default_rng(1)
    side = 30
    patterns = rng.uniform(0, 1, (3, 300)) * (rng.random((3, 300)) < 0.2)
    yy, xx = np.mgrid[:side, :side]
    W = np.stack([(xx < 10), (xx >= 10) & (xx < 20), (xx >= 20)], axis=-1).reshape(-1, 3).astype(float)
    W = 0.7 * W + 0.3 * W[:, [1, 2, 0]]  # mixtures, so no pattern is alone anywhere
    X = rng.poisson(400 * W @ patterns).astype(np.float32) / 4.0  # gain 0.25
    kloss = k_component_loss(X, range(1, 7), random_state=0)
    noise = poisson_gain(X, (side, side))
    assert noise.gain == pytest.approx(0.25, rel=0.05)
    assert noise_vote(kloss.k, np.asarray(kloss.frobenius) ** 2, noise.step) == 3
    # by hand: drops 10, 10, 1 against a step of 2 (factor 2 -> 4): the first run ends at the second k
    assert noise_vote([1, 2, 3, 4], [30.0, 20.0, 10.0, 9.0], 2.0) == 3
    assert noise_vote([1, 2, 3, 4], [30.0, 29.0, 10.0, 9.0], 2.0) == 1


@pytest.fixture(scope="module")
def descan_scan():
    """Two crystals (left and right half of a 24 x 24 scan) whose patterns drift by 1.5 px across the scan."""
    rng = np.random.default_rng(2)
    side = 24
    rows = []
    for y in range(side):
        for x in range(side):
            shift = (0.0, 1.5 * (x / (side - 1) - 0.5))  # an uncorrected descan: a smooth field of the scan
            rows.append(spots(CRYSTAL_A if x < side // 2 else CRYSTAL_B, shift=shift).ravel())
    X = rng.poisson(200.0 * np.array(rows)).astype(np.float32)
    return X, (side, side)


def test_a_descan_split_is_not_a_new_orientation(descan_scan):
    X, scan = descan_scan
    kloss = k_component_loss(X, range(2, 8), random_state=0)
    plain = gather_evidence(X, kloss, knee_k=5, iqa_k=5, scan_shape=scan, random_state=0)
    merged = gather_evidence(X, kloss, knee_k=5, iqa_k=5, scan_shape=scan, pattern_shape=(SIDE, SIDE),
                             random_state=0)
    # the drift is real structure: without the patterns, more than two components keep paying off
    assert plain.shift is None and plain.votes["heldout"] > 2
    # with them, the extra components are the two crystals moved: up to k = 5 every fit has two distinct
    # patterns (beyond, components fit the noise, which is no shifted copy of anything)
    assert merged.shift.distinct.tolist()[:4] == [2, 2, 2, 2]
    assert merged.chosen_k == 2 and set(merged.votes.values()) == {2}
    # the noise model agrees that the drift is more than noise: it alone says 4 (two crystals x two places)
    assert merged.raw_votes["noise"] > 2
    assert merged.raw_votes["heldout"] == plain.votes["heldout"]
    assert "shifted copies" in merged.reason
    out = merged.to_results()
    assert json.loads(out["/kselect/votes_unmerged"]) == merged.raw_votes
    assert json.loads(out["/kselect/votes"]) == merged.votes


def test_select_k_reports_noise_and_shift_evidence(descan_scan):
    X, scan = descan_scan
    selection = select_k(X, k_values=range(2, 6), pattern_shape=(SIDE, SIDE), scan_shape=scan, random_state=0,
                         pca=False)
    assert selection.chosen_k == 2
    assert isinstance(selection.combined.shift, ShiftEvidence) and "noise" in selection.votes
    out = selection.to_results()
    # counts: variance = mean, so the gain is 1; the drift between neighbours can only add to the estimate
    assert 1.0 <= out["/kselect/noise/gain"] < 1.3
    assert out["/kselect/heldout/noise_floor"].shape == (2,)
    assert out["/kselect/shift/k"].tolist() == [2, 3, 4, 5]


def test_deciders_by_hand():
    every = {"knee": 5, "iqa": 3, "stability": 4, "heldout": 4, "coherence": 6, "noise": 9}
    assert deciders_for(every) == DECIDERS == ("knee", "coherence", "noise") and LEAD == "noise"
    assert combine_votes(every, deciders=deciders_for(every))[0] == 6  # median of 5, 6, 9
    assert combined_choice(every)[0] == 9  # the noise vote leads: 9 is not below min(5, 6)
    no_noise = {name: k for name, k in every.items() if name != "noise"}  # features other than raw patterns
    assert deciders_for(no_noise) == FALLBACK_DECIDERS
    assert combine_votes(no_noise, deciders=deciders_for(no_noise))[0] == 5  # median of 5, 4, 6
    assert deciders_for({"knee": 5, "iqa": 3}) is None


def test_noise_vote_leads_with_a_floor_by_hand():
    base = {"iqa": 2, "stability": 3, "heldout": 4}
    # noise below both knee and coherence: raised to the smaller of them
    assert combined_choice({**base, "knee": 7, "coherence": 9, "noise": 3})[0] == 7
    assert combined_choice({**base, "knee": 9, "coherence": 7, "noise": 3})[0] == 7
    # noise between them, or above both: the noise vote itself
    assert combined_choice({**base, "knee": 5, "coherence": 9, "noise": 7})[0] == 7
    assert combined_choice({**base, "knee": 5, "coherence": 6, "noise": 16})[0] == 16
    # the range still spans the second smallest to the second largest vote, widened to the choice:
    # votes 2 3 4 5 6 16 -> 3..6, widened to 16
    assert combined_choice({**base, "knee": 5, "coherence": 6, "noise": 16}) == (16, (3, 16))
    # without the noise vote the second rule (median of knee, held-out, coherence) decides as before
    assert combined_choice({**base, "knee": 7, "coherence": 9})[0] == 7
    assert combined_choice({"knee": 5, "iqa": 3})[0] == 3  # lower median of all


def test_lead_equals_the_upper_median_with_the_lead_counted_twice():
    # the rule as declared in bench/kselect_rule5_ablation.py: upper median of knee, coherence, noise, noise
    for knee in range(2, 8):
        for coherence in range(2, 8):
            for noise in range(2, 8):
                four = sorted([knee, coherence, noise, noise])
                chosen = combine_votes({"knee": knee, "coherence": coherence, "noise": noise},
                                       deciders=DECIDERS, lead=LEAD)[0]  # fmt: skip
                assert chosen == four[2]


def test_lead_must_be_a_decider():
    with pytest.raises(ValueError, match="not one of the deciders"):
        combine_votes({"a": 1, "b": 2}, deciders=("a", "b"), lead="c")


def test_rule_text_names_the_rule():
    assert rule_text(DECIDERS) == "the noise vote, not below the smaller of the loss knee and the map coherence"
    assert rule_text(FALLBACK_DECIDERS) == "the median of loss knee, held-out error, map coherence"
    assert rule_text(None) == "the median of all votes"
