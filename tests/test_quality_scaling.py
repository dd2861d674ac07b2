"""Robust (median-to-max) feature scaling, and the pipeline's default scaling."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.config import Config
from stemnmf.errors import ConfigError
from stemnmf.features.scaling import SCALINGS, scale_features


def test_robust_scaling_by_hand():
    X = np.array([[1.0, 5.0, 7.0], [3.0, 5.0, 7.0], [2.0, 9.0, 7.0], [2.0, 4.0, 7.0]])
    # column 0: median 2, max 3; column 1: median 5, max 9; column 2 constant
    Y, lo, hi = scale_features(X, "robust")
    expected = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(Y, expected)
    assert Y.dtype == np.float32
    np.testing.assert_array_equal(lo, [1, 4, 7])  # lo and hi stay the column minimum and maximum
    np.testing.assert_array_equal(hi, [3, 9, 7])


def test_robust_scaling_puts_the_shared_background_at_zero():
    rng = np.random.default_rng(0)
    background = 10 + rng.normal(0, 0.1, size=(200, 6))  # what most positions share
    background[:20, 2] += 5  # a few positions with a reflection in column 2
    Y, _, _ = scale_features(background, "robust")
    minmax, _, _ = scale_features(background, "minmax")
    assert (Y >= 0).all() and (Y <= 1).all()
    # half the background positions are exactly 0 after robust scaling; none after min-max
    assert np.mean(Y[20:] == 0) >= 0.5
    assert np.mean(minmax[20:] == 0) < 0.05
    np.testing.assert_allclose(Y[:20, 2].mean(), 1.0, atol=0.05)


def test_robust_is_a_known_scaling():
    assert "robust" in SCALINGS
    with pytest.raises(ConfigError):
        scale_features(np.ones((2, 2)), "median")


def test_pipeline_default_scaling_is_robust_except_for_raw():
    config = Config()
    assert config.features.featurize_options()["scaling"] == "robust"
    raw = Config.from_dict({"features": {"representation": "raw"}})
    assert raw.features.featurize_options()["scaling"] == "none"
    paper = Config.from_dict({"features": {"scaling": "minmax"}})
    assert paper.features.featurize_options()["scaling"] == "minmax"
