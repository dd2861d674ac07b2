"""Component patterns in raw pattern space: representative and weighted mean."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.engine import Engine
from stemnmf.errors import DataValueError
from stemnmf.io import Dataset4D
from stemnmf.kselect import representative_patterns, weighted_mean_patterns


def test_representative_patterns_by_hand():
    W = np.array([[1.0, 0.0], [3.0, 2.0], [0.5, 4.0]])
    H = np.array([[1.0, 2.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.5, 1.0, 0.0, 0.0, 2.0]])
    out = representative_patterns(W, H, (2, 3))
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [[3, 6, 0], [3, 0, 0]])  # largest weight 3
    np.testing.assert_allclose(out[1], [[0, 2, 4], [0, 0, 8]])  # largest weight 4


def test_representative_patterns_bad_shapes():
    with pytest.raises(DataValueError, match="pixels"):
        representative_patterns(np.ones((3, 2)), np.ones((2, 6)), (2, 2))
    with pytest.raises(DataValueError, match="k = 2"):
        representative_patterns(np.ones((3, 2)), np.ones((3, 6)), (2, 3))
    with pytest.raises(DataValueError, match="negative"):
        representative_patterns(-np.ones((3, 2)), np.ones((2, 6)), (2, 3))


def test_weighted_mean_patterns_by_hand(small_dataset, small_array):
    # small_array value = 1000 y + 100 x + 3 v + u; 35 positions of 12 x 10 pixels
    n = small_dataset.n_positions
    W = np.zeros((n, 3))
    W[0, 0] = 1.0  # position (0, 0) only
    W[6, 1], W[7, 1] = 1.0, 3.0  # positions (1, 1) and (1, 2), weights 1 and 3
    W[:, 2] = 2.0  # every position alike: the plain mean
    out = weighted_mean_patterns(small_dataset, W, engine=Engine(n_threads=1, progress=False))
    assert out.shape == (3, 12, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], small_array[0, 0])
    np.testing.assert_allclose(out[1], 0.25 * small_array[1, 1] + 0.75 * small_array[1, 2])
    np.testing.assert_allclose(out[2], small_array.reshape(n, 12, 10).mean(axis=0), rtol=1e-6)


def test_weighted_mean_does_not_depend_on_chunks(small_dataset):
    rng = np.random.default_rng(0)
    W = rng.random((small_dataset.n_positions, 4))
    one = weighted_mean_patterns(small_dataset, W, engine=Engine(chunk_rows=1, n_threads=2, progress=False))
    whole = weighted_mean_patterns(small_dataset, W, engine=Engine(chunk_rows=100, n_threads=1, progress=False))
    np.testing.assert_allclose(one, whole, rtol=1e-6)


def test_weighted_mean_lazy_dataset_and_mask(small_array):
    import dask.array as da

    mask = np.zeros((12, 10), dtype=bool)
    mask[0, :3] = True
    lazy = Dataset4D(da.from_array(small_array, chunks=(2, 5, 12, 10)), mask=mask)
    W = np.ones((35, 1))
    out = weighted_mean_patterns(lazy, W, engine=Engine(progress=False))
    expected = small_array.reshape(35, 12, 10).mean(axis=0)
    expected[mask] = 0.0  # masked pixels are not averaged
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def test_component_without_weight_gives_zeros(small_dataset):
    W = np.zeros((small_dataset.n_positions, 2))
    W[:, 0] = 1.0
    out = weighted_mean_patterns(small_dataset, W, engine=Engine(progress=False))
    assert not out[1].any()
    assert out[0].any()


def test_weighted_mean_checks_inputs(small_dataset):
    with pytest.raises(DataValueError, match="34 rows"):
        weighted_mean_patterns(small_dataset, np.ones((34, 2)))
    with pytest.raises(DataValueError, match="Dataset4D"):
        weighted_mean_patterns(np.zeros((7, 5, 12, 10)), np.ones((35, 2)))
