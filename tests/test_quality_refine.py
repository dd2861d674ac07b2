"""Spatial coherence of component maps and region edges at a fraction of each region's peak."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.analysis import EDGE_FRACTIONS, analyze, refine_regions, spatial_coherence
from stemnmf.errors import ConfigError


def cone(shape=(40, 40), centre=(20, 20), radius=10.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    r = np.hypot(yy - centre[0], xx - centre[1])
    return np.maximum(radius - r, 0).astype(np.float32), r


def test_coherence_of_known_maps():
    checker = np.indices((8, 8)).sum(axis=0) % 2  # every neighbour pair is (+1, -1): I = -1 exactly
    ramp = np.add.outer(np.arange(16.0), np.arange(16.0))
    constant = np.ones((8, 8))
    noise = np.random.default_rng(0).random((64, 64))
    blob, _ = cone((64, 64), (32, 32), 12)
    out = spatial_coherence(np.stack([checker, checker, constant, constant]).astype(float))
    np.testing.assert_allclose(out, [-1, -1, 0, 0], atol=1e-6)
    assert spatial_coherence(ramp[None])[0] > 0.9
    assert abs(spatial_coherence(noise[None])[0]) < 0.05
    assert spatial_coherence(blob[None])[0] > 0.95
    # a smooth map plus as much independent noise: about half its variance is shared with neighbours
    rng = np.random.default_rng(1)
    mixed = blob / blob.std() + rng.normal(0, 1, blob.shape)
    assert 0.35 < spatial_coherence(mixed[None])[0] < 0.6


def test_incoherent_components_give_no_region():
    blob, _ = cone()
    rng = np.random.default_rng(0)
    noise = (rng.random((40, 40)) ** 4).astype(np.float32)  # sparse bright speckle
    noise[5:12, 5:12] = 1.0  # and one solid patch the threshold keeps
    maps = np.stack([blob, noise])
    plain = refine_regions(maps, method="yen", min_size=20)
    assert 1 in plain.component  # the paper's refinement keeps the patch of the noise map
    filtered = refine_regions(maps, method="yen", min_size=20, min_coherence=0.5)
    assert list(filtered.component) == [0]
    assert np.isnan(filtered.thresholds[1]) and np.isfinite(filtered.thresholds[0])
    np.testing.assert_allclose(filtered.coherence, spatial_coherence(maps))
    assert filtered.coherence[1] < 0.5 < filtered.coherence[0]


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_edge_at_a_fraction_of_the_peak(fraction):
    blob, r = cone(radius=10.0)
    regions = refine_regions(blob[None], method=None, min_size=5, edge_fraction=fraction)
    # weight 10 - r >= fraction * 10  <=>  r <= 10 (1 - fraction)
    expected = r <= 10.0 * (1 - fraction) + 1e-6
    assert regions.n_regions == 1
    np.testing.assert_array_equal(regions.maps[0] > 0, expected)
    np.testing.assert_array_equal(regions.maps[0][expected], blob[expected])
    whole = refine_regions(blob[None], method=None, min_size=5)
    np.testing.assert_array_equal(whole.maps[0] > 0, r < 10.0)


def test_edge_drops_regions_left_too_small():
    blob, r = cone(radius=10.0)
    kept = int((r <= 1.0 + 1e-6).sum())  # edge_fraction 0.9: r <= 1
    assert refine_regions(blob[None], method=None, min_size=kept, edge_fraction=0.9).n_regions == 1
    assert refine_regions(blob[None], method=None, min_size=kept + 1, edge_fraction=0.9).n_regions == 0
    with pytest.raises(ConfigError):
        refine_regions(blob[None], edge_fraction=1.0)


def test_analyze_defaults_per_feature_and_results_entries():
    blob, _ = cone()
    other, _ = cone(centre=(8, 30), radius=6)
    W = np.stack([blob.ravel(), other.ravel()], axis=1)
    for feature, expected in [("aa", EDGE_FRACTIONS["aa"]), ("bd", EDGE_FRACTIONS["bd"]), ("aa+bd", EDGE_FRACTIONS["aa"]),
                              ("xyz", 0.0)]:
        assert analyze(W, scan_shape=(40, 40), feature=feature).edge_fraction == expected
    result = analyze(W, scan_shape=(40, 40), feature="bd", edge_fraction=0.5)
    out = result.to_results()
    assert float(out["/regions/edge_fraction"]) == 0.5
    np.testing.assert_allclose(out["/components/coherence"], spatial_coherence(W.T.reshape(2, 40, 40)))
    # the paper's refinement: no edge, no coherence filter
    paper = analyze(W, scan_shape=(40, 40), feature="bd", edge_fraction=0, min_coherence=None)
    assert paper.edge_fraction == 0 and paper.regions.maps[0].astype(bool).sum() > result.regions.maps[0].astype(bool).sum()
    with pytest.raises(ConfigError):
        analyze(W, scan_shape=(40, 40), edge_fraction="half")
