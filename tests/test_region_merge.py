"""One region per grain (issue 16): touching regions of one grain's components join, two grains stay two."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.analysis import Regions, analyze, drop_fragments, merge_regions
from stemnmf.config import Config
from stemnmf.decompose import IterativeNMF
from stemnmf.decompose.evidence import pattern_noise, pattern_peaks, peak_agreement
from stemnmf.errors import ConfigError, DataValueError

RINGS, SECTORS = 3, 72


def ring_pattern(spots, intensities, background=0.2):
    """AA-like pattern (rings x sectors, flattened): a smooth ring background plus reflections."""
    h = np.tile(background * (1.0 + 0.2 * np.arange(RINGS))[:, None], (1, SECTORS))
    for (ring, sector), value in zip(spots, intensities):
        h[ring, sector] += value
    return h.ravel()


def thickness_step_scene(seed=0, counts=400.0):
    """30 x 40 positions. Grain A (rows 5-24, columns 3-22) has a thickness step at column 13: its left
    and right halves have the same reflections at other intensity ratios, and come as two components.
    Grain B (columns 23-36) touches A's right half: the same rings, another orientation (every
    reflection 11 sectors away). X = W H with Poisson noise; H refitted by least squares, so that the
    agreement is that of noisy patterns, as after an NMF."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:30, 0:40]
    rows = (yy >= 5) & (yy < 25)
    halves = [rows & (xx >= 3) & (xx < 13), rows & (xx >= 13) & (xx < 23)]
    grain_b = rows & (xx >= 23) & (xx < 37)
    spots = [(0, 5), (0, 41), (1, 20), (1, 56), (2, 33), (2, 69), (0, 23), (1, 2)]
    H = np.stack([
        ring_pattern(spots, [4.0, 4.0, 1.0, 1.0, 3.0, 3.0, 2.0, 2.0]),  # thin half
        ring_pattern(spots, [1.5, 1.5, 4.0, 4.0, 1.0, 1.0, 3.0, 3.0]),  # thick half: other ratios
        ring_pattern([(r, (s + 11) % SECTORS) for r, s in spots], [4.0, 4.0, 1.0, 1.0, 3.0, 3.0, 2.0, 2.0]),
    ])
    Wt = np.stack([m.ravel() for m in halves + [grain_b]]).astype(np.float64)
    X = rng.poisson(Wt.T @ H * counts) / counts
    H_fit = np.clip(np.linalg.lstsq(Wt.T, X, rcond=None)[0], 0, None)
    R = X - Wt.T @ H_fit
    agreement = peak_agreement(pattern_peaks(H_fit, pattern_noise(Wt, (R**2).sum(axis=0))))
    truth = np.stack([halves[0] | halves[1], grain_b]).astype(np.uint8)
    return Wt.T.astype(np.float32), H_fit, agreement, truth


def test_a_grain_split_by_a_thickness_step_is_one_region_and_its_neighbour_another():
    W, H, agreement, truth = thickness_step_scene()
    assert agreement[0, 1] >= 0.65 and agreement[0, 2] < 0.3 and agreement[1, 2] < 0.3
    split = analyze(W, H, (30, 40), truth=truth, feature="aa", edge_fraction=0, region_agreement=None)
    assert split.regions.n_regions == 3  # as cut: one per component
    joined = analyze(W, H, (30, 40), truth=truth, feature="aa", edge_fraction=0, peak_agreement=agreement)
    assert joined.regions.n_regions == 2
    per_grain = joined.scores.grain["per_grain"]
    assert (per_grain["IoU_G"] > 0.9).all() and (per_grain["n_clusters"] == 1).all()
    assert joined.scores.summary()["TPR_G"] > split.scores.summary()["TPR_G"]
    # the joined region keeps its largest piece's component, and B's is another
    assert set(joined.regions.component.tolist()) in ({0, 2}, {1, 2})
    assert joined.region_table.shape == (2,)


def test_touching_grains_of_two_orientations_stay_two_regions_even_at_a_low_threshold():
    W, H, agreement, truth = thickness_step_scene(seed=1)
    result = analyze(W, H, (30, 40), truth=truth, feature="aa", edge_fraction=0, peak_agreement=agreement,
                     region_agreement=0.3)
    assert result.regions.n_regions == 2
    comp_b = result.regions.component[result.scores.grain["per_grain"]["best_cluster"][1]]
    assert comp_b == 2


def _regions(masks, component, k):
    masks = np.asarray(masks, bool)
    return Regions(masks.astype(np.float32), np.asarray(component, np.int32), np.zeros(k, np.float32))


def test_merge_never_joins_one_components_pieces_nor_chains_through_a_third():
    m = np.zeros((4, 10, 12), bool)
    m[0, 2:6, 0:3] = True  # component 0
    m[1, 2:6, 3:6] = True  # component 1, touches 0
    m[2, 2:6, 6:9] = True  # component 2, touches 1
    m[3, 2:6, 10:12] = True  # component 0 again, one position apart from 2
    agreement = np.eye(3)
    agreement[0, 1] = agreement[1, 0] = 0.9
    agreement[1, 2] = agreement[2, 1] = 0.8
    agreement[0, 2] = agreement[2, 0] = 0.9  # 0 and 2 agree but do not touch: only through 1
    out = merge_regions(_regions(m, [0, 1, 2, 0], 3), agreement)
    assert out.n_regions == 2  # 0+1+2 (every pair agrees) and the far piece of 0
    np.testing.assert_array_equal(out.masks[0], m[0] | m[1] | m[2])
    np.testing.assert_array_equal(out.masks[1], m[3])
    agreement[0, 2] = agreement[2, 0] = 0.1  # now 0 and 2 disagree: 1 joins the better of them only
    out = merge_regions(_regions(m, [0, 1, 2, 0], 3), agreement)
    assert out.n_regions == 3
    np.testing.assert_array_equal(out.masks[0], m[0] | m[1])
    # a gap of 2 reaches the far piece, but it is component 0's own: never joined to 0's region
    agreement[1, 2] = agreement[2, 1] = 0.1
    assert merge_regions(_regions(m, [0, 1, 2, 0], 3), agreement, gap=2).n_regions == 3


def test_merge_bad_input():
    regions = _regions(np.ones((1, 4, 4)), [0], 2)
    with pytest.raises(DataValueError):
        merge_regions(regions, np.eye(3))
    with pytest.raises(ConfigError):
        merge_regions(regions, np.eye(2), gap=0)
    with pytest.raises(ConfigError):
        drop_fragments(regions, -1)
    with pytest.raises(ConfigError, match="region agreement"):
        merge_regions(regions, np.eye(2), threshold=1.5)


def test_config_turns_the_region_merge_off_and_sets_its_threshold():
    assert Config().analysis.region_merge and Config().analysis.region_agreement == 0.65
    config = Config.from_dict({"analysis": {"region_merge": "false", "region_agreement": 0.8, "fragment_size": 40}})
    assert not config.analysis.region_merge and config.analysis.region_agreement == 0.8
    assert config.analysis.fragment_size == 40
    with pytest.raises(ConfigError, match="fragment_size"):
        Config.from_dict({"analysis": {"fragment_size": "many"}})


def test_fragments_inside_another_region_are_dropped_others_kept():
    m = np.zeros((4, 20, 20), bool)
    m[0, 0:10, 0:10] = True  # 100 positions
    m[1, 2:5, 2:8] = True  # 18, all inside region 0: a fragment
    m[2, 8:12, 8:12] = True  # 16, a quarter inside region 0: kept
    m[3, 15:19, 15:19] = True  # 16, alone: kept
    regions = _regions(m, [0, 1, 2, 3], 4)
    kept = drop_fragments(regions, 20)
    np.testing.assert_array_equal(kept.component, [0, 2, 3])
    assert drop_fragments(regions, 0) is regions
    assert drop_fragments(regions, 17).n_regions == 4  # the fragment has 18 positions


@pytest.mark.slow
def test_iterative_nmf_gives_the_agreement_of_its_patterns():
    W, H, _, _ = thickness_step_scene()
    rng = np.random.default_rng(2)
    X = rng.poisson(W.astype(np.float64) @ H * 400.0) / 400.0
    model = IterativeNMF(random_state=0, n_restarts=2, n_jobs=1, initial_components=3, feature="aa").fit(X)
    k = model.n_components_
    A = model.peak_agreement_
    assert A.shape == (k, k) and np.allclose(A, A.T) and ((A >= 0) & (A <= 1)).all()
    assert "/components/peak_agreement" in model.to_results()


def stacked_scene(lower=0.3, counts=200.0, seed=0):
    """40 x 40 positions, two grains stacked along the beam: U (22 x 22, top left) over L (18 x 18,
    bottom right), a quarter of L under U. Different orientations (every reflection of L 10 sectors
    from U's), L at ``lower`` of U's intensity; where both lie the pattern is the sum. Poisson noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:40]
    U = (yy >= 4) & (yy < 26) & (xx >= 4) & (xx < 26)
    L = (yy >= 16) & (yy < 34) & (xx >= 16) & (xx < 34)
    spots = [(0, 2), (0, 20), (0, 38), (0, 56), (1, 11), (1, 47), (2, 5), (2, 41)]
    h_u = ring_pattern(spots, [1.0, 1.0, 1.0, 1.0, 0.8, 0.8, 0.6, 0.6], background=0.03)
    h_l = ring_pattern([(r, (s + 10) % SECTORS) for r, s in spots], [lower] * 8, background=0.0)
    X = U.reshape(-1, 1) * h_u + L.reshape(-1, 1) * h_l
    X = rng.poisson(X * counts) / counts
    return X.astype(np.float32), U, L


@pytest.mark.parametrize("lower", [0.5, 0.15])
def test_a_grain_stacked_under_another_keeps_its_region_over_the_overlap(lower):
    X, U, L = stacked_scene(lower)
    model = IterativeNMF(random_state=0, feature="aa", n_restarts=4, n_jobs=1)
    W = model.fit_transform(X)
    truth = np.stack([U, L]).astype(np.uint8)
    result = analyze(W, model.components_, (40, 40), truth=truth, feature="aa", peak_agreement=model.peak_agreement_)
    masks = result.regions.masks
    overlap = U & L
    for grain in (U, L):
        iou = (masks & grain).sum(axis=(1, 2)) / (masks | grain).sum(axis=(1, 2))
        own = masks[int(np.argmax(iou))]
        assert iou.max() > 0.9
        assert (own & overlap).sum() == overlap.sum()  # the overlap belongs to both grains' regions
    assert result.scores.detection["grain_recall_own"] == 1.0
