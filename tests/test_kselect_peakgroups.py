"""The peak-group vote counts the sets of reflections the positions hold, from the data alone.

Known answers by construction: a scan cut into N domains, each domain's patterns with their own
sparse set of Gaussian reflections (no reflection shared), a direct beam everywhere, Poisson counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.errors import DataValueError
from stemnmf.kselect.noise import poisson_gain
from scipy.cluster import hierarchy

from stemnmf.kselect.peakgroups import bin_patterns, block_patterns, block_peaks, peak_groups, split_tree

SIDE = 32  # pattern side, pixels
SCAN = (24, 32)


def _pattern(spots, rng_heights=None, side=SIDE):
    yy, xx = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float), indexing="ij")
    c = side / 2
    out = 40.0 * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * 1.2**2)) + 0.5
    for (cy, cx) in spots:
        out += 8.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.8**2))
    return out


def _spot_sets(n, per=4, seed=0):
    """n sets of ``per`` spot centres, every centre on a grid cell no other set uses, away from the beam."""
    rng = np.random.default_rng(seed)
    cells = [(y, x) for y in range(3, SIDE - 3, 4) for x in range(3, SIDE - 3, 4)
             if np.hypot(y - SIDE / 2, x - SIDE / 2) > 7]  # fmt: skip
    assert len(cells) >= n * per
    chosen = rng.permutation(len(cells))[: n * per]
    return [[cells[i] for i in chosen[j * per : (j + 1) * per]] for j in range(n)]


def _scan(n, seed=0, noise_only=False):
    """(X, truth labels): the scan cut into n vertical stripes, stripe j holding spot set j."""
    rng = np.random.default_rng(seed)
    sy, sx = SCAN
    labels = np.minimum((np.arange(sx) * n) // sx, n - 1)[None, :].repeat(sy, axis=0)
    sets = _spot_sets(n, seed=seed)
    expected = np.stack([_pattern([] if noise_only else s).ravel() for s in sets])
    X = rng.poisson(expected[labels.ravel()]).astype(np.float32)
    return X, labels


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_n_domains_with_n_peak_sets_give_n(n):
    X, _ = _scan(n, seed=n)
    gain = poisson_gain(X, SCAN).gain
    groups = peak_groups(X, SCAN, (SIDE, SIDE), gain)
    assert groups.vote == n
    assert groups.sizes.sum() == (SCAN[0] // 2) * (SCAN[1] // 2)


def test_groups_follow_the_domains():
    X, labels = _scan(3, seed=7)
    groups = peak_groups(X, SCAN, (SIDE, SIDE), poisson_gain(X, SCAN).gain)
    block_truth = labels[::2, ::2]
    pure = labels[::2, ::2] == labels[::2, 1::2]  # blocks inside one domain
    for g in np.unique(groups.labels[pure]):
        assert np.unique(block_truth[pure & (groups.labels == g)]).size == 1  # every group lies in one domain
    for d in range(3):
        assert np.unique(groups.labels[pure & (block_truth == d)]).size == 1  # every domain is one group


def test_noise_only_gives_one():
    X, _ = _scan(4, seed=3, noise_only=True)  # four stripes, all the same peakless pattern
    groups = peak_groups(X, SCAN, (SIDE, SIDE), poisson_gain(X, SCAN).gain)
    assert groups.vote == 1
    assert groups.sizes.size == 0  # no block holds a reflection
    assert int(groups.n_peaks.max()) < 8


def test_border_blocks_do_not_join_two_domains():
    # two domains meeting inside a block column: the border blocks hold both peak sets
    rng = np.random.default_rng(11)
    sets = _spot_sets(2, seed=11)
    a, b = _pattern(sets[0]).ravel(), _pattern(sets[1]).ravel()
    sy, sx = SCAN
    column = np.arange(sx)[None, :].repeat(sy, axis=0)
    expected = np.where((column < 15)[..., None], a, b).reshape(-1, a.size)
    border = (column == 15).ravel()
    expected[border] = 0.5 * (a + b)
    X = rng.poisson(expected).astype(np.float32)
    groups = peak_groups(X, SCAN, (SIDE, SIDE), poisson_gain(X, SCAN).gain)
    assert groups.vote == 2


def test_block_patterns_sum_squares():
    X = np.arange(4 * 6 * 2, dtype=np.float64).reshape(24, 2)
    out = block_patterns(X, (4, 6), block=2)
    assert out.shape == (2, 3, 2)
    assert out[0, 0, 0] == X[[0, 1, 6, 7], 0].sum()
    assert out[1, 2, 1] == X[[16, 17, 22, 23], 1].sum()


def test_peaks_leave_the_beam_out():
    p = _pattern([(4, 4)]).reshape(1, -1) * 50.0
    beam = np.zeros((SIDE, SIDE), bool)
    beam[SIDE // 2, SIDE // 2] = True
    peaks, counts = block_peaks(p, (SIDE, SIDE), 1.0, beam=beam, grow=0)
    grid = peaks.reshape(SIDE, SIDE)
    assert grid[4, 4] and not grid[SIDE // 2, SIDE // 2] and not grid[SIDE // 2 + 1, SIDE // 2]
    assert counts[0] == grid.sum()


def test_bad_shapes_raise():
    X = np.ones((10, 16))
    with pytest.raises(DataValueError):
        peak_groups(X, (3, 3), (4, 4), 1.0)
    with pytest.raises(DataValueError):
        peak_groups(X, (2, 5), (3, 5), 1.0)


def test_weak_features_every_block_shares_do_not_join_at_high_dose():
    # two domains, each with its own four strong reflections, both with the same 24 weak ones
    # (a diffuse ring, say), at 1,000 times the dose: the weak ones stand far above the noise
    rng = np.random.default_rng(2)
    sets = _spot_sets(2, seed=2)
    yy, xx = np.meshgrid(np.arange(SIDE, dtype=float), np.arange(SIDE, dtype=float), indexing="ij")
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ring = sum(np.exp(-((yy - 16 - 6 * np.sin(a)) ** 2 + (xx - 16 - 6 * np.cos(a)) ** 2) / (2 * 0.6**2)) for a in angles)
    expected = np.stack([(_pattern(s) + 0.4 * ring).ravel() for s in sets]) * 1000.0
    labels = (np.arange(SCAN[1]) >= SCAN[1] // 2)[None, :].repeat(SCAN[0], axis=0).astype(int)
    X = rng.poisson(expected[labels.ravel()]).astype(np.float32)
    gain = poisson_gain(X, SCAN).gain
    # the shared weak peaks dominate (the split test of step 4 left out: it would part them)
    assert peak_groups(X, SCAN, (SIDE, SIDE), gain, relative=0.0, split_ratio=None).vote == 1
    assert peak_groups(X, SCAN, (SIDE, SIDE), gain).vote == 2


def test_patterns_are_binned_to_max_side():
    P = np.arange(2 * 130 * 130, dtype=np.float64).reshape(2, -1)
    out, shape = bin_patterns(P, (130, 130), 64)
    assert shape == (43, 43)  # factor 3, the trailing entry left out
    assert out[0, 0] == P[0].reshape(130, 130)[:3, :3].sum()
    same, shape = bin_patterns(P[:, : 64 * 64], (64, 64), 64)
    assert shape == (64, 64) and np.array_equal(same, P[:, : 64 * 64])


def test_the_peak_group_vote_decides_by_hand():
    from stemnmf.kselect.combine import PRIMARY, combined_choice, deciders_for, fits_choice, rule_text

    every = {"knee": 5, "iqa": 3, "stability": 4, "heldout": 4, "coherence": 6, "noise": 9, "peaks": 12}
    assert deciders_for(every) == PRIMARY == ("peaks",)
    chosen, plausible = combined_choice(every)
    assert chosen == 12 and plausible == (4, 12)  # second smallest .. second largest (9), widened to 12
    assert fits_choice(every) == 9  # the fifth rule without it: noise 9, not below min(5, 6)
    assert rule_text(deciders_for(every)) == "the peak-group vote"


@pytest.mark.parametrize("window", [3, 7])
def test_local_median_is_the_median_filter(window):
    from scipy import ndimage

    from stemnmf.kselect.peakgroups import local_median

    P = np.random.default_rng(4).poisson(3.0, (40, 17, 23)).astype(np.float64)
    expected = ndimage.median_filter(P, size=(1, window, window), mode="nearest")
    assert np.array_equal(local_median(P, window, chunk=7), expected)


WIDE = (24, 64)  # stripes of at least 8 blocks across: places, not slivers (docs/kselect.md, limits)


def _shared_scan(n, shared=5, own=5, seed=0, scan=WIDE):
    """(X, labels): n vertical stripes; every stripe's peaks are the same ``shared`` spots plus ``own`` of its own."""
    rng = np.random.default_rng(seed)
    cells = _spot_sets(1, per=shared + n * own, seed=seed)[0]
    common = cells[:shared]
    sy, sx = scan
    labels = np.minimum((np.arange(sx) * n) // sx, n - 1)[None, :].repeat(sy, axis=0)
    expected = np.stack([_pattern(common + cells[shared + j * own : shared + (j + 1) * own]).ravel()
                         for j in range(n)])  # fmt: skip
    return rng.poisson(expected[labels.ravel()]).astype(np.float32), labels


@pytest.mark.parametrize("n", [2, 3, 4])
def test_domains_that_share_most_peaks_still_count_apart(n):
    # five shared reflections and five of each domain's own: the stripes' peak sets agree about
    # 2 * 5 / (2 * 5 + 5 + 5) = 0.5 across, about 1 within; the sixth rule (no split) joins them
    X, labels = _shared_scan(n, seed=20 + n)
    gain = poisson_gain(X, WIDE).gain
    assert peak_groups(X, WIDE, (SIDE, SIDE), gain, split_ratio=None).vote == 1
    groups = peak_groups(X, WIDE, (SIDE, SIDE), gain)
    assert groups.vote == n
    pure = labels[::2, ::2] == labels[::2, 1::2]
    for d in range(n):  # every stripe is one group, and no group spans two stripes
        assert np.unique(groups.labels[pure & (labels[::2, ::2] == d)]).size == 1
    for g in np.unique(groups.labels[pure]):
        assert np.unique(labels[::2, ::2][pure & (groups.labels == g)]).size == 1


def _two_part_tree(side, across, part):
    """(linkage, edges): side x side leaves on a grid, agreement 1 inside each part, ``across`` between them."""
    same = part[:, None] == part[None, :]
    distance = np.where(same, 0.0, 1.0 - across)
    np.fill_diagonal(distance, 0.0)
    i, j = np.triu_indices(part.size, k=1)
    grid = np.arange(side * side).reshape(side, side)
    edges = np.concatenate([np.stack([grid[:, :-1].ravel(), grid[:, 1:].ravel()], 1),
                            np.stack([grid[:-1, :].ravel(), grid[1:, :].ravel()], 1)])  # fmt: skip
    return hierarchy.linkage(distance[i, j], method="average"), edges


def test_split_needs_low_agreement_across_and_two_places():
    side = 8
    rows = np.arange(side * side) // side
    halves = (rows >= side // 2).astype(int)  # two places: top and bottom half
    tree, edges = _two_part_tree(side, 0.6, halves)
    assert np.unique(split_tree(tree, edges, agreement=0.4, enough=4)).size == 2  # 0.6 < 0.75 * 1, few contacts
    assert np.unique(split_tree(tree, edges, agreement=0.4, enough=4, ratio=0.5)).size == 1  # 0.6 >= 0.5 * 1
    tree, edges = _two_part_tree(side, 0.9, halves)
    assert np.unique(split_tree(tree, edges, agreement=0.4, enough=4)).size == 1  # they agree as much as inside
    checker = ((np.arange(side * side) // side + np.arange(side * side) % side) % 2).astype(int)
    tree, edges = _two_part_tree(side, 0.6, checker)  # the same agreements, but salt and pepper
    assert np.unique(split_tree(tree, edges, agreement=0.4, enough=4)).size == 1
    tree, edges = _two_part_tree(side, 0.3, checker)  # below the cut: apart wherever they lie
    assert np.unique(split_tree(tree, edges, agreement=0.4, enough=4)).size == 2
