"""Regions from the data's own peaks (issue 16): one component's region over two grains is split."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.analysis import Regions, analyze
from stemnmf.analysis.split import PeakBlocks, peak_blocks, split_regions
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.io import Dataset4D

SCAN, Q = (40, 40), 32


def spot_set(rng, n=8, bright=20.0):
    """(Q, Q) mean counts of ``n`` 3 x 3 reflections away from the direct beam."""
    out = np.zeros((Q, Q))
    for _ in range(n):
        while True:
            y, x = rng.integers(2, Q - 2, 2)
            if (y - Q // 2) ** 2 + (x - Q // 2) ** 2 > 36:
                break
        out[y - 1 : y + 2, x - 1 : x + 2] += bright
    return out


def scene(kind: str, seed: int = 0):
    """Poisson patterns (n, Q * Q) of a 40 x 40 scan and the grains' masks by construction.

    ``side``: grain A in columns 0-19, grain B (other reflections) in columns 20-39;
    ``stack``: grain A everywhere, grain B (a disc of radius 8, 12 reflections) on top of it, where both
    scatter;
    ``one``: grain A everywhere, its reflections at one intensity.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:Q, :Q]
    beam = 200.0 * np.exp(-((yy - Q // 2) ** 2 + (xx - Q // 2) ** 2) / 4.0)
    A, B = spot_set(rng), spot_set(rng, n=12 if kind == "stack" else 8)
    ay, ax = np.mgrid[: SCAN[0], : SCAN[1]]
    if kind == "side":
        grain_b = ax >= 20
        mean = 3.0 + beam + np.where(grain_b[..., None, None], B, A)
        grains = [~grain_b, grain_b]
    elif kind == "stack":
        grain_b = (ay - 20) ** 2 + (ax - 20) ** 2 < 64
        mean = 3.0 + beam + A + np.where(grain_b[..., None, None], B, 0.0)
        grains = [np.ones(SCAN, bool), grain_b]
    else:
        mean = 3.0 + beam + A + np.zeros(SCAN + (1, 1))
        grains = [np.ones(SCAN, bool)]
    X = rng.poisson(mean).reshape(SCAN[0] * SCAN[1], Q * Q).astype(np.float32)
    return X, grains


def one_region(shape=SCAN):
    return Regions(np.ones((1,) + shape, np.float32), np.zeros(1, np.int32), np.zeros(1, np.float32))


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_two_grains_side_by_side_in_one_region_become_two_regions():
    X, grains = scene("side")
    out = split_regions(one_region(), PeakBlocks.from_positions(X, SCAN, (Q, Q)))
    assert out.n_regions == 2
    for grain in grains:
        assert max(iou(m, grain) for m in out.masks) > 0.95
    assert (out.masks.sum(axis=0) == 1).all()  # disjoint: no grain under the other
    assert (out.component == 0).all()


def test_a_grain_stacked_in_another_gets_its_own_region_and_the_other_keeps_its_extent():
    X, (host, inner) = scene("stack")
    out = split_regions(one_region(), PeakBlocks.from_positions(X, SCAN, (Q, Q)))
    assert out.n_regions == 2
    masks = sorted(out.masks, key=lambda m: -m.sum())
    assert iou(masks[0], host) > 0.99  # the host goes on under the stacked grain
    assert iou(masks[1], inner) > 0.75
    assert (masks[0] & masks[1]).sum() == masks[1].sum()  # the overlap belongs to both


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_grain_with_noise_stays_one_region(seed):
    X, _ = scene("one", seed)
    out = split_regions(one_region(), PeakBlocks.from_positions(X, SCAN, (Q, Q)))
    assert out.n_regions == 1
    assert np.array_equal(out.maps, one_region().maps)


def test_analyze_splits_with_the_datasets_blocks_and_not_without_them():
    X, grains = scene("side")
    truth = np.stack(grains).astype(np.uint8)
    inside = np.zeros(SCAN, np.float32)
    inside[2:-2, 2:-2] = 1.0  # one component over both grains, cut by Yen from the empty border
    W = inside.reshape(-1, 1)
    dataset = Dataset4D(X.reshape(SCAN + (Q, Q)))
    blocks = peak_blocks(dataset)
    direct = PeakBlocks.from_positions(X, SCAN, (Q, Q))
    assert np.allclose(blocks.patterns, direct.patterns) and blocks.gain == pytest.approx(direct.gain)
    with_data = analyze(W, None, SCAN, region_peaks=blocks, truth=truth, vacuum=None, peak_split=0.7)
    assert with_data.regions.n_regions == 2
    assert with_data.scores.summary()["grain_recall"] == 1.0
    from_dataset = analyze(W, None, dataset=dataset, truth=truth, vacuum=None, peak_split=0.7)
    assert np.array_equal(from_dataset.regions.maps, with_data.regions.maps)
    without = analyze(W, None, SCAN, truth=truth, vacuum=None)
    assert without.regions.n_regions == 1 and without.scores.summary()["grain_recall"] == 0.5
    off = analyze(W, None, dataset=dataset, truth=truth, vacuum=None)  # the default: off
    assert off.regions.n_regions == 1


def test_bad_input():
    X, _ = scene("one")
    blocks = PeakBlocks.from_positions(X, SCAN, (Q, Q))
    with pytest.raises(ConfigError, match="agreement"):
        split_regions(one_region(), blocks, agreement=0)
    with pytest.raises(DataValueError, match="do not fit"):
        split_regions(one_region((20, 20)), blocks)
    with pytest.raises(DataValueError, match="do not fit"):
        PeakBlocks.from_positions(X[:10], SCAN, (Q, Q))
    with pytest.raises(ConfigError, match="region_peaks"):
        analyze(np.ones((1600, 1), np.float32), None, SCAN, region_peaks="yes", peak_split=0.7)


def test_config_options_of_the_split():
    from stemnmf.config import Config

    config = Config.from_dict({"analysis": {"region_split": "false", "split_agreement": 0.6}})
    assert config.analysis.region_split is False and config.analysis.split_agreement == 0.6
    with pytest.raises(ConfigError, match="split_agreement"):
        Config.from_dict({"analysis": {"split_agreement": 1.5}})
