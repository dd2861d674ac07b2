"""Cluster maps, labels, components per position and overlap maps, on hand-made weights."""

import numpy as np
import pytest

from stemnmf.analysis import (
    cluster_labels,
    clusters_per_position,
    component_maps,
    overlap_level,
    overlap_maps,
    overlap_pairs,
    overlap_ratio,
    presence,
    typical_weights,
)
from stemnmf.errors import ConfigError, DataValueError


def test_component_maps_reshape_columns_in_c_order():
    W = np.arange(12, dtype=np.float32).reshape(6, 2)  # positions 0..5 of a 2 x 3 scan
    maps = component_maps(W, (2, 3))
    assert maps.shape == (2, 2, 3) and maps.dtype == np.float32
    np.testing.assert_array_equal(maps[0], [[0, 2, 4], [6, 8, 10]])
    np.testing.assert_array_equal(maps[1], [[1, 3, 5], [7, 9, 11]])


def test_typical_weight_is_median_where_largest():
    W = np.array([[1.0, 0.0], [3.0, 1.0], [5.0, 0.0], [0.5, 4.0], [0.0, 6.0]], np.float32)
    np.testing.assert_allclose(typical_weights(W), [3.0, 5.0])


def test_labels_argmax_with_significance_vacuum_and_zero_rows():
    # component 0 typical weight 1 (median of 1, 1, 0.2, 1, 1), component 1 typical
    # weight 2 (median of 2, 2, 0.6, 0.4, 2, 2)
    W = np.array(
        [
            [1.0, 0.1],  # 0
            [1.0, 0.0],  # 0
            [0.0, 2.0],  # 1
            [0.1, 2.0],  # 1
            [0.2, 0.0],  # 0 but 0.2 < 0.25 * 1 -> -1
            [0.0, 0.6],  # 1 and 0.6 >= 0.25 * 2 -> 1
            [0.0, 0.4],  # 1 but 0.4 < 0.5 -> -1
            [0.0, 0.0],  # nothing -> -1
            [1.0, 0.0],  # vacuum -> -1
            [0.0, 2.0],  # 1
            [0.0, 2.0],  # 1
            [1.0, 0.0],  # 0
        ],
        np.float32,
    )
    np.testing.assert_allclose(typical_weights(W), [1.0, 2.0])
    vacuum = np.zeros(12, bool)
    vacuum[8] = True
    labels = cluster_labels(W, (3, 4), significance=0.25, vacuum=vacuum.reshape(3, 4))
    assert labels.dtype == np.int32 and labels.shape == (3, 4)
    np.testing.assert_array_equal(labels.ravel(), [0, 0, 1, 1, -1, 1, -1, -1, -1, 1, 1, 0])
    # with no significance rule only the zero row and the vacuum are unlabelled
    loose = cluster_labels(W, (3, 4), significance=0.0, vacuum=vacuum.reshape(3, 4))
    np.testing.assert_array_equal(loose.ravel(), [0, 0, 1, 1, 0, 1, 1, -1, -1, 1, 1, 0])


def test_presence_and_clusters_per_position():
    W = np.array([[1.0, 0.0], [1.0, 2.0], [0.2, 2.0], [0.3, 0.3], [0.0, 0.0], [1.0, 1.0]], np.float32)
    # typical: component 0 -> 1 (rows 0, 5), component 1 -> 2 (rows 1, 2)
    member = presence(W, threshold=0.25)
    np.testing.assert_array_equal(member > 0, [[1, 0], [1, 1], [0, 1], [1, 0], [0, 0], [1, 1]])
    np.testing.assert_array_equal(member[1], [1.0, 2.0])
    n = clusters_per_position(W, (2, 3), threshold=0.25)
    np.testing.assert_array_equal(n, [[1, 2, 1], [1, 0, 2]])


def test_bad_weights_and_options():
    with pytest.raises(DataValueError, match="rows but the scan"):
        cluster_labels(np.ones((5, 2)), (2, 3))
    with pytest.raises(DataValueError, match="negative"):
        cluster_labels(-np.ones((6, 2)), (2, 3))
    with pytest.raises(DataValueError, match="NaN"):
        component_maps(np.full((6, 2), np.nan), (2, 3))
    with pytest.raises(ConfigError, match="significance"):
        cluster_labels(np.ones((6, 2)), (2, 3), significance=2)


def test_overlap_ratio_of_two_known_weight_fields():
    sy, sx = 4, 9
    ramp = np.tile(np.linspace(0, 1, sx), (sy, 1))  # 0 at the left, 1 at the right
    w0, w1 = ramp, 1 - ramp
    W = np.stack([w0.ravel(), w1.ravel(), np.full(sy * sx, 0.01)], axis=1).astype(np.float32)
    ratio = overlap_ratio(W, (sy, sx))
    lo, hi = np.minimum(w0, w1), np.maximum(w0, w1)
    expected = np.maximum(lo, 0.01) / hi  # the third component is second where min < 0.01
    np.testing.assert_allclose(ratio, expected, rtol=1e-6)
    # columns x = 0..8 give ratios 0.01, 1/7, 1/3, 3/5, 1, 3/5, 1/3, 1/7, 0.01
    np.testing.assert_allclose(ratio[0, 4], 1.0)
    np.testing.assert_allclose(ratio[0, 3], 0.6, rtol=1e-6)

    maps = overlap_maps(ratio, (0.5, 0.95))
    assert maps.shape == (2, sy, sx) and maps.dtype == bool
    np.testing.assert_array_equal(maps[0][0], [0, 0, 0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(maps[1][0], [0, 0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(overlap_level(ratio, (0.95, 0.5))[0], [0, 0, 0, 1, 2, 1, 0, 0, 0])


def test_overlap_ratio_edge_cases():
    np.testing.assert_array_equal(overlap_ratio(np.array([[2.0], [0.0]]), (1, 2)), [[0, 0]])
    np.testing.assert_array_equal(overlap_ratio(np.zeros((2, 3)), (1, 2)), [[0, 0]])
    with pytest.raises(ConfigError, match="thresholds"):
        overlap_maps(np.zeros((2, 2)), (0.5, 1.5))
    with pytest.raises(ConfigError, match="no overlap thresholds"):
        overlap_maps(np.zeros((2, 2)), ())


def test_overlap_pairs_name_which_components_overlap_where():
    # 1 x 6 scan: components 0 and 1 overlap at positions 0-2 (three times), 1 and 2 at 4
    W = np.array(
        [[1.0, 0.9, 0.0], [0.8, 1.0, 0.0], [1.0, 1.0, 0.1], [1.0, 0.1, 0.0], [0.0, 1.0, 0.85], [0, 0, 1.0]],
        np.float32,
    )
    table, pair_map = overlap_pairs(W, (1, 6), thresholds=(0.8, 0.9))
    assert len(table) == 2
    first, second = table
    assert (first["component_a"], first["component_b"], first["n_positions"]) == (0, 1, 3)
    np.testing.assert_array_equal(first["n_at"], [3, 2])
    np.testing.assert_allclose(first["mean_ratio"], (0.9 + 0.8 + 1.0) / 3, rtol=1e-6)
    assert (second["component_a"], second["component_b"], second["n_positions"]) == (1, 2, 1)
    np.testing.assert_array_equal(second["n_at"], [1, 0])
    np.testing.assert_array_equal(pair_map, [[0, 0, 0, -1, 1, -1]])
    empty, none = overlap_pairs(np.eye(3, dtype=np.float32), (1, 3))
    assert len(empty) == 0 and (none == -1).all()


def test_overlap_ratio_properties():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=60, deadline=None)
    @given(arrays(np.float32, (12, 4), elements=st.floats(0, 10, width=32)))
    def check(W):
        ratio = overlap_ratio(W, (3, 4)).ravel()
        assert ((ratio >= 0) & (ratio <= 1)).all()
        top2 = np.sort(W, axis=1)[:, -2:]
        expected = np.where(top2[:, 1] > 0, top2[:, 0] / np.where(top2[:, 1] > 0, top2[:, 1], 1), 0)
        np.testing.assert_allclose(ratio, expected, rtol=1e-6)
        level = overlap_level(ratio.reshape(3, 4))
        defaults = np.array([0.75, 0.8, 0.85, 0.9, 0.95], np.float32)
        np.testing.assert_array_equal(level.ravel(), (ratio[:, None] >= defaults).sum(1))

    check()
