"""select_k end to end: a scan built from four known patterns, its results, and the simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.io import Dataset4D, Results, load_results, save_results
from stemnmf.kselect import KSelection, select_k


@pytest.fixture(scope="module")
def four_patterns():
    """A 20 x 24 scan of 24 x 24 patterns: four textures in four blocks, noise 1 %."""
    rng = np.random.default_rng(3)
    patterns = []
    for _ in range(4):
        t = ndimage.gaussian_filter(rng.random((24, 24)), 1.5)
        patterns.append((t - t.min()) / (t.max() - t.min()))
    patterns = np.stack(patterns).astype(np.float32)
    sy, sx = 20, 24
    labels = (np.arange(sy)[:, None] >= sy // 2) * 2 + (np.arange(sx)[None, :] >= sx // 2)
    weights = rng.uniform(0.8, 1.2, (sy, sx)).astype(np.float32)
    data = weights[..., None, None] * patterns[labels]
    data += rng.normal(0, 0.01, data.shape).astype(np.float32)
    data = np.clip(data, 0, None)
    return Dataset4D(data), labels


def test_select_k_on_four_known_patterns(four_patterns):
    dataset, _ = four_patterns
    X = dataset.data.reshape(dataset.n_positions, -1)
    selection = select_k(X, k_values=range(2, 9), pattern_shape=(24, 24), random_state=0, pca=False, evidence="cao")
    assert isinstance(selection, KSelection)
    assert selection.knee == 4
    np.testing.assert_array_equal(selection.range, np.arange(2, 9))
    # at k <= 4 the components are the four distinct textures: no metric calls a pair redundant
    for metric, flags in selection.decision.redundant.items():
        assert not flags[:3].any(), metric
    assert selection.chosen_k >= 4
    assert selection.chosen_k == selection.decision.chosen_k
    assert selection.pattern_source == "representative"
    assert selection.patterns[4].shape == (4, 24, 24)
    W, H = selection.components()
    assert W.shape == (480, selection.chosen_k) and H.shape == (selection.chosen_k, 576)
    assert selection.reason.startswith(f"k = {selection.chosen_k}: the knee of the K-component loss is at k = 4")


def test_results_round_trip(four_patterns, tmp_path):
    dataset, _ = four_patterns
    X = dataset.data.reshape(dataset.n_positions, -1)
    selection = select_k(X, k_values=range(2, 7), pattern_shape=(24, 24), random_state=0, pca=False)
    out = selection.to_results()
    assert out["/kselect/chosen_k"].dtype == np.int64 and out["/kselect/chosen_k"].ndim == 0
    assert out["/kselect/knee"] == selection.knee
    np.testing.assert_array_equal(out["/kselect/range"], [selection.range[0], selection.range[-1]])
    choices = json.loads(out["/kselect/metric_choices"])
    assert set(choices) == {"ssim", "psnr", "gmsd", "mdsi"}
    for metric in choices:
        for k in selection.range:
            assert out[f"/kselect/iqa/{metric}/{k}"].shape == (k, k)
        assert out[f"/kselect/most_similar/{metric}"].shape == selection.range.shape
    for k in selection.range:
        assert out[f"/kselect/patterns/{k}"].shape == (k, 24, 24)
    path = save_results(Results(out), tmp_path / "results.h5")
    back = load_results(path)
    assert int(back["/kselect/chosen_k"]) == selection.chosen_k
    assert back["/kselect/reason"] == selection.reason
    np.testing.assert_allclose(back["/kselect/loss"], selection.kloss.loss)


def test_other_features_use_weighted_mean_patterns(four_patterns):
    dataset, labels = four_patterns
    # features that are not patterns: 2 x 2 block sums (144 values per position)
    X = dataset.data.reshape(20, 24, 12, 2, 12, 2).sum(axis=(3, 5)).reshape(480, -1)
    selection = select_k(
        X, k_values=[3, 4, 5], dataset=dataset, feature="aa", engine=Engine(progress=False), random_state=0, pca=False
    )
    assert selection.pattern_source == "weighted_mean"
    assert selection.patterns[4].shape == (4, 24, 24)
    # at k = 4 each weighted mean pattern is close to one of the four textures
    truth = np.stack([dataset.data[labels == i].mean(axis=0) for i in range(4)])
    best = [max(np.corrcoef(p.ravel(), t.ravel())[0, 1] for t in truth) for p in selection.patterns[4]]
    assert min(best) > 0.95


def test_select_k_errors(four_patterns):
    dataset, _ = four_patterns
    X = dataset.data.reshape(dataset.n_positions, -1)
    with pytest.raises(ConfigError, match="needs the dataset"):
        select_k(X, k_values=[2, 3, 4], feature="aa")
    with pytest.raises(DataValueError, match="does not match"):
        select_k(X, k_values=[2, 3, 4], pattern_shape=(20, 20))
    with pytest.raises(ConfigError, match="pattern shape"):
        select_k(X[:, :500], k_values=[2, 3, 4])


def test_pixel_wise_scaled_raw_features_fall_back_to_weighted_means(four_patterns, caplog):
    dataset, _ = four_patterns
    X = dataset.data.reshape(dataset.n_positions, -1)
    low, high = X.min(axis=0), X.max(axis=0)
    scaled = (X - low) / (high - low)  # every pixel column on its own [0, 1]: rows of H are not patterns
    engine = Engine(progress=False)
    selection = select_k(scaled, k_values=[3, 4, 5], dataset=dataset, engine=engine, random_state=0, pca=False)
    assert selection.pattern_source == "weighted_mean"
    assert "min-max scaled on its own" in caplog.text
    # globally scaled raw features keep the representative patterns
    kept = select_k(X / X.max(), k_values=[3, 4, 5], dataset=dataset, engine=engine, random_state=0, pca=False)
    assert kept.pattern_source == "representative"
    forced = select_k(
        X, k_values=[3, 4, 5], dataset=dataset, engine=engine, patterns="weighted_mean", random_state=0, pca=False
    )
    assert forced.pattern_source == "weighted_mean"


def test_pattern_option_errors(four_patterns):
    dataset, _ = four_patterns
    X = dataset.data.reshape(dataset.n_positions, -1)
    with pytest.raises(ConfigError, match="unknown"):
        select_k(X, k_values=[2, 3], patterns="mean")
    with pytest.raises(ConfigError, match="need the dataset"):
        select_k(X, k_values=[2, 3], patterns="weighted_mean")
    with pytest.raises(ConfigError, match="need raw features"):
        select_k(X, k_values=[2, 3], dataset=dataset, feature="aa", patterns="representative")
