"""Cluster mean patterns and the dissimilarity score, streamed through the engine."""

import dask.array as da
import numpy as np
import pytest

from stemnmf.analysis import cluster_mean_patterns, dissimilarity, mean_patterns, minmax_scale, one_hot
from stemnmf.engine import Engine
from stemnmf.errors import DataValueError
from stemnmf.io import Dataset4D


def _random_scan(seed=0, shape=(7, 5, 6, 4)):
    rng = np.random.default_rng(seed)
    data = rng.random(shape).astype(np.float32) * 100
    labels = rng.integers(-1, 3, size=shape[:2]).astype(np.int32)
    return data, labels


def _direct_means(data, labels, k):
    sy, sx, qy, qx = data.shape
    flat = data.reshape(sy * sx, qy, qx).astype(np.float64)
    out = np.zeros((k, qy, qx))
    for c in range(k):
        members = flat[labels.ravel() == c]
        if len(members):
            out[c] = members.mean(axis=0)
    return out


@pytest.mark.parametrize(
    "engine",
    [Engine(chunk_rows=1, n_threads=1), Engine(chunk_rows=3, n_threads=2), Engine(chunk_rows=7)],
    ids=["rows1", "rows3-threads2", "one-chunk"],
)
def test_cluster_means_equal_numpy_and_do_not_depend_on_chunking(engine):
    data, labels = _random_scan()
    means, counts = cluster_mean_patterns(Dataset4D(data), labels, 4, engine=engine)
    assert means.shape == (4, 6, 4) and means.dtype == np.float32
    np.testing.assert_allclose(means, _direct_means(data, labels, 4), rtol=1e-6)
    np.testing.assert_array_equal(counts, [np.sum(labels == c) for c in range(4)])
    assert counts[3] == 0 and (means[3] == 0).all()  # an empty cluster gives zeros


def test_weighted_means_of_several_matrices_in_one_pass_and_lazy_input():
    data, labels = _random_scan(1)
    rng = np.random.default_rng(2)
    W = rng.random((35, 3)).astype(np.float32)
    W[W < 0.4] = 0
    flat = data.reshape(35, -1).astype(np.float64)
    expected = (W.T.astype(np.float64) @ flat) / W.sum(axis=0)[:, None]
    lazy = Dataset4D(da.from_array(data, chunks=(2, 5, 6, 4)))
    (hard, n), (weighted, totals) = mean_patterns(lazy, one_hot(labels, 3), W, engine=Engine(chunk_rows=2))
    np.testing.assert_allclose(weighted.reshape(3, -1), expected, rtol=1e-6)
    np.testing.assert_allclose(totals, W.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(hard, _direct_means(data, labels, 3), rtol=1e-6)
    np.testing.assert_array_equal(n, [np.sum(labels == c) for c in range(3)])


def test_masked_pixels_are_zero_and_left_out():
    data, labels = _random_scan(3)
    mask = np.zeros((6, 4), bool)
    mask[0, :] = True
    means, _ = cluster_mean_patterns(Dataset4D(data, mask=mask), labels, 3, engine=Engine(chunk_rows=2))
    assert (means[:, 0, :] == 0).all()
    np.testing.assert_allclose(means[:, 1:], _direct_means(data, labels, 3)[:, 1:], rtol=1e-6)


def test_one_hot_and_minmax_scale():
    m = one_hot(np.array([[2, -1], [0, 2]]), 3).toarray()
    np.testing.assert_array_equal(m, [[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]])
    with pytest.raises(DataValueError):
        one_hot(np.array([0, 3]), 3)
    scaled = minmax_scale(np.array([[2.0, 4.0, 6.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(scaled, [[0, 0.5, 1], [0, 0, 0]])
    valid = np.array([True, True, False])
    np.testing.assert_allclose(minmax_scale(np.array([[2.0, 4.0, 100.0]]), valid), [[0, 1, 0]])


def test_dissimilarity_of_identical_patterns_is_zero():
    rng = np.random.default_rng(4)
    pattern = rng.random((5, 6)).astype(np.float32)
    # every position of a cluster holds the same pattern up to scale and offset:
    # min-max scaling makes them identical, so the score is 0
    scale = rng.uniform(0.5, 3, size=(4, 4, 1, 1)).astype(np.float32)
    data = scale * pattern + 2 * scale
    W = rng.uniform(0.1, 1, size=(16, 2)).astype(np.float32)
    (means, _), = mean_patterns(Dataset4D(data), W, engine=Engine(chunk_rows=1))
    scores, _ = dissimilarity(Dataset4D(data), W, means, engine=Engine(chunk_rows=3))
    np.testing.assert_allclose(scores, 0, atol=1e-6)


def test_dissimilarity_known_by_hand_and_position_map():
    # two patterns a = [0 0; 0 1] and b = [0 0; 1 0] in one cluster of equal weights:
    # mean [0 0; .5 .5] -> scaled [0 0; 1 1]; each pattern differs in 1 of 4 pixels by 1
    data = np.zeros((1, 3, 2, 2), np.float32)
    data[0, 0, 1, 1] = 1.0
    data[0, 1, 1, 0] = 1.0
    data[0, 2] = [[4.0, 0.0], [0.0, 0.0]]  # a third position, in cluster 1 alone
    W = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)
    ds = Dataset4D(data)
    (means, totals), = mean_patterns(ds, W)
    np.testing.assert_allclose(means[0], [[0, 0], [0.5, 0.5]])
    labels = np.array([[0, 0, -1]])
    scores, position = dissimilarity(ds, W, means, labels=labels, label_references=means, engine=Engine(chunk_rows=1))
    np.testing.assert_allclose(scores, [0.25, 0.0], atol=1e-7)
    np.testing.assert_allclose(position[0, :2], [0.25, 0.25], atol=1e-7)
    assert np.isnan(position[0, 2])
    # weights change the weighted mean but a pattern equal to its cluster's mean still scores 0
    zero_weight = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    (m2, t2), = mean_patterns(ds, zero_weight)
    s2, _ = dissimilarity(ds, zero_weight, m2)
    assert s2[0] == 0 and np.isnan(s2[1]) and t2[1] == 0


def test_dissimilarity_ignores_masked_pixels_and_chunking():
    rng = np.random.default_rng(5)
    data = rng.random((6, 5, 4, 4)).astype(np.float32)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    wild = data.copy()
    wild[..., 0, 0] = rng.random((6, 5)) * 1e6  # a hot masked pixel must not matter
    W = rng.random((30, 3)).astype(np.float32)
    results = []
    for array, chunk_rows in ((data, 1), (wild, 4)):
        ds = Dataset4D(array, mask=mask)
        (means, _), = mean_patterns(ds, W, engine=Engine(chunk_rows=chunk_rows))
        scores, _ = dissimilarity(ds, W, means, engine=Engine(chunk_rows=chunk_rows))
        results.append(scores)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)
    assert ((results[0] > 0) & (results[0] < 1)).all()


def test_weights_must_fit_the_scan():
    data, labels = _random_scan()
    with pytest.raises(DataValueError, match="positions"):
        mean_patterns(Dataset4D(data), np.ones((10, 2)))


def test_weighted_means_agree_with_kselect():
    from stemnmf.kselect import weighted_mean_patterns

    data, _ = _random_scan(6)
    W = np.random.default_rng(7).random((35, 3)).astype(np.float32)
    (ours, _), = mean_patterns(Dataset4D(data), W, engine=Engine(chunk_rows=2))
    np.testing.assert_allclose(ours, weighted_mean_patterns(Dataset4D(data), W), rtol=1e-6)


def test_passes_split_into_row_groups_when_outputs_exceed_the_budget():
    from stemnmf.analysis.patterns import _row_groups

    data, labels = _random_scan(8)  # 7 x 5 scan of 6 x 4 float32 patterns: 2400 bytes per row
    ds = Dataset4D(data)
    W = np.random.default_rng(9).random((35, 4)).astype(np.float32)
    tight = Engine(memory_budget=3000, n_threads=1)  # one row per chunk, one chunk per group
    groups = _row_groups(tight, ds, bytes_per_chunk=4 * 24 * 8)
    assert groups == [(r, r + 1) for r in range(7)]
    assert _row_groups(Engine(), ds, bytes_per_chunk=4 * 24 * 8) == [(0, 7)]
    (m_tight, _), = mean_patterns(ds, W, engine=tight)
    (m_wide, _), = mean_patterns(ds, W, engine=Engine(chunk_rows=7))
    np.testing.assert_allclose(m_tight, m_wide, rtol=1e-6)
    hard, _ = cluster_mean_patterns(ds, labels, 3, engine=Engine())
    s_tight, p_tight = dissimilarity(ds, W, m_wide, labels=labels, label_references=hard, engine=tight)
    s_wide, p_wide = dissimilarity(ds, W, m_wide, labels=labels, label_references=hard, engine=Engine(chunk_rows=7))
    np.testing.assert_allclose(s_tight, s_wide, rtol=1e-6)
    np.testing.assert_allclose(p_tight, p_wide, rtol=1e-6, equal_nan=True)


def test_vacuum_mask_flags_patterns_with_only_the_direct_beam():
    from stemnmf.analysis import scattered_fraction, vacuum_mask

    rng = np.random.default_rng(10)
    q = 32
    v, u = np.mgrid[0:q, 0:q]
    beam = 100.0 * ((v - 16) ** 2 + (u - 16) ** 2 <= 9)
    spots = 20.0 * (((v - 6) ** 2 + (u - 16) ** 2 <= 4) | ((v - 26) ** 2 + (u - 16) ** 2 <= 4))
    data = np.empty((6, 8, q, q), np.float32)
    for y in range(6):
        for x in range(8):
            specimen = x >= 3  # columns 0-2 are vacuum
            pattern = beam * (0.6 if specimen else 1.0) + (spots + 2.0 if specimen else 0.0)
            data[y, x] = rng.poisson(pattern + 0.05)
    ds = Dataset4D(data)
    frac = scattered_fraction(ds, engine=Engine(chunk_rows=2))
    assert frac[:, :3].max() < 0.05 and frac[:, 3:].min() > 0.3
    expected = np.zeros((6, 8), bool)
    expected[:, :3] = True
    np.testing.assert_array_equal(vacuum_mask(ds), expected)
    # a scan fully covered by specimen has no vacuum
    np.testing.assert_array_equal(vacuum_mask(Dataset4D(data[:, 3:])), np.zeros((6, 5), bool))


@pytest.mark.slow
def test_passes_on_a_local_cluster_match_in_process():
    import distributed

    from stemnmf.analysis import vacuum_mask

    data, labels = _random_scan(11)
    W = np.random.default_rng(12).random((35, 3)).astype(np.float32)
    W[W < 0.5] = 0
    ds = Dataset4D(data)
    local = Engine(chunk_rows=3)
    (h_local, _), (w_local, _) = mean_patterns(ds, one_hot(labels, 3), W, engine=local)
    s_local, p_local = dissimilarity(ds, W, w_local, labels=labels, label_references=h_local, engine=local)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            remote = Engine(scheduler=client, chunk_rows=2, progress=False)
            (h, _), (w, _) = mean_patterns(ds, one_hot(labels, 3), W, engine=remote)
            s, p = dissimilarity(ds, W, w_local, labels=labels, label_references=h_local, engine=remote)
            vac = vacuum_mask(ds, engine=remote)
    np.testing.assert_allclose(h, h_local, rtol=1e-6)
    np.testing.assert_allclose(w, w_local, rtol=1e-6)
    np.testing.assert_allclose(s, s_local, rtol=1e-6)
    np.testing.assert_allclose(p, p_local, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(vac, vacuum_mask(ds, engine=local))
