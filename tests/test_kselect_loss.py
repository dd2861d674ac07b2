"""K-component loss on matrices of known rank, and the warm start's new component."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.decompose import Compressed, RowBlocks
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect import append_component, find_knee, k_component_loss
from stemnmf.kselect.loss import positive_residual, residual_stats


def _separable(rank=4, n=240, m=80, seed=0):
    """X = W H with disjoint pattern supports and pure positions for every component."""
    rng = np.random.default_rng(seed)
    H = np.zeros((rank, m), np.float32)
    for i, cols in enumerate(np.array_split(np.arange(m), rank)):
        H[i, cols] = rng.uniform(0.5, 1.5, cols.size)
    W = np.zeros((n, rank), np.float32)
    W[np.arange(n), np.arange(n) % rank] = rng.uniform(0.5, 2.0, n)  # one component per position
    W[: n // 4] += rng.uniform(0, 0.3, (n // 4, rank)).astype(np.float32)  # and some mixtures
    return W @ H, W, H


@pytest.mark.parametrize("warm", [True, False])
def test_loss_vanishes_at_the_true_rank(warm):
    X, _, _ = _separable()
    before = X.copy()
    kl = k_component_loss(X, range(2, 8), warm_start=warm, random_state=0, max_iter=500, tol=1e-7)
    np.testing.assert_array_equal(X, before)  # X is never written
    np.testing.assert_array_equal(kl.k, np.arange(2, 8))
    assert kl.loss[0] > kl.loss[1] > 10 * kl.loss[2]
    assert kl.loss[2:].max() < 1e-3 * X.mean()  # rank 4 reconstructs X
    assert kl.explained[2] > 0.9999 and kl.explained[0] < 0.9
    np.testing.assert_array_equal(kl.warm, [False] + [warm] * 5)
    for k in kl.k:
        W, H = kl.components(k)
        assert W.shape == (240, k) and H.shape == (k, 80)
        # the recorded errors are those of the kept factors
        R = X - W @ H
        assert kl.loss[k - 2] == pytest.approx(np.abs(R).mean(), rel=1e-3, abs=1e-7)
        assert kl.frobenius[k - 2] == pytest.approx(np.linalg.norm(R), rel=1e-3, abs=1e-5)
    assert find_knee(kl.k, kl.loss).x == 4


def test_append_component_recovers_the_missing_one():
    X, W, H = _separable(rank=3, n=120, m=60, seed=1)
    # fit with the first two components exactly: the residual is w2 h2^T
    W1, H1 = append_component(X, W[:, :2], H[:2])
    assert W1.shape == (120, 3) and H1.shape == (3, 60)
    np.testing.assert_array_equal(W1[:, :2], W[:, :2])
    np.testing.assert_allclose(W1 @ H1, X, atol=1e-4 * X.max())
    # the new pattern has the support of the missing one
    assert set(np.flatnonzero(H1[2] > 1e-6)) == set(np.flatnonzero(H[2]))


def test_residual_statistics_by_hand():
    X = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    W = np.array([[1.0], [1.0]], np.float32)
    H = np.array([[1.0, 1.0]], np.float32)
    # R = [[0, 1], [2, -1]]
    abs_sum, sq_sum, x_sq, pos_sq = residual_stats(X, W, H)
    assert (abs_sum, sq_sum, x_sq) == (4.0, 6.0, 14.0)
    np.testing.assert_array_equal(pos_sq, [1.0, 4.0])
    np.testing.assert_array_equal(positive_residual(X, W, H), [1.0, 4.0])


def test_results_and_lookups():
    X, _, _ = _separable(rank=2, n=60, m=20)
    kl = k_component_loss(X, [3, 2], random_state=0)
    np.testing.assert_array_equal(kl.k, [2, 3])
    out = kl.to_results()
    assert out["/kselect/k"].dtype == np.int64
    assert out["/kselect/loss"].dtype == np.float64
    assert out["/kselect/seconds"].shape == (2,) and (out["/kselect/seconds"] > 0).all()
    with pytest.raises(ConfigError, match="no factors kept for k = 5"):
        kl.components(5)
    lean = k_component_loss(X, [2, 3], keep_factors=False, random_state=0)
    assert lean.factors == {}
    np.testing.assert_allclose(lean.loss, kl.loss, rtol=1e-6)


def test_bad_input():
    X, _, _ = _separable(rank=2, n=30, m=10)
    with pytest.raises(DataValueError, match="negative"):
        k_component_loss(-X, [2])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataValueError, match="NaN"):
        k_component_loss(bad, [2])
    with pytest.raises(ConfigError, match="larger than the data allows"):
        k_component_loss(X, [2, 11])
    with pytest.raises(ConfigError, match="no k values"):
        k_component_loss(X, [])
    with pytest.raises(DataValueError, match="2D"):
        k_component_loss(X[0], [2])


def _counting_blocks(X, rows=60):
    """RowBlocks over X that counts its passes (calls of the block generator)."""
    passes = []

    def blocks():
        passes.append(1)
        return (X[s : s + rows] for s in range(0, len(X), rows))

    return RowBlocks(blocks), passes


def test_compressed_scan_reads_x_once_per_k_and_finds_the_rank():
    X, _, _ = _separable()
    rng = np.random.default_rng(1)
    X = (X + rng.uniform(0, 0.01, X.shape)).astype(np.float32)  # noise: X is not exactly rank 4
    ks = range(2, 8)
    blocks, passes = _counting_blocks(X)
    compressed = k_component_loss(blocks, ks, solver="compressed", random_state=0, max_iter=500, tol=1e-7)
    n_compressed = len(passes)
    blocks, passes = _counting_blocks(X)
    exact = k_component_loss(blocks, ks, solver="hals", random_state=0, max_iter=500, tol=1e-7)
    # validation 1, compression 2 * power_iter + 2 = 6, row norms 1, per k the exact errors 1 and at
    # most one partial pass to fetch the worst-fitted row
    assert n_compressed <= 1 + 6 + 1 + 2 * len(ks)
    assert len(passes) > 4 * n_compressed  # every HALS iteration reads X
    # the same curve: both reach the noise at the true rank 4, within 2 % of each other past it
    # (beyond the rank the fits model noise, which Q B keeps only in part)
    assert find_knee(compressed.k, compressed.loss).x == find_knee(exact.k, exact.loss).x == 4
    np.testing.assert_allclose(compressed.loss[2:], exact.loss[2:], rtol=0.02)
    assert compressed.loss[1] > 5 * compressed.loss[2]


def test_compressed_x_spans_a_low_rank_matrix():
    X, _, _ = _separable()
    cx = Compressed(X, 4, oversample=2, random_state=0)
    assert cx.shape == X.shape and cx.columns == 6
    np.testing.assert_allclose(cx.Q.T @ cx.Q, np.eye(6), atol=1e-5)
    rel = np.linalg.norm(X - cx.Q @ cx.B) / np.linalg.norm(X)
    assert rel < 1e-5  # a rank-4 matrix lies in a 6-column range
    v = np.arange(X.shape[1], dtype=np.float32)
    np.testing.assert_allclose(cx.times(v), X @ v, rtol=1e-4)
    with pytest.raises(ConfigError):
        Compressed(X, 0)
