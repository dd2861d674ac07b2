"""Components whose map is more noise than structure are dropped from the fit (issue 21).

Truth by construction: grains on blocks of positions with their own peaks, plus a
noise-only component (a spatially white map with a pattern every position shares)
that must be dropped; two real grains, stacked or small, must both be kept.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls

from stemnmf.decompose import IterativeNMF
from stemnmf.decompose.iterative import prune_components
from stemnmf.decompose.prune import incoherent, refit_patterns, spatial_coherence
from stemnmf.errors import ConfigError
from test_merge_evidence import grains_scene

SCAN, M = (30, 30), 60


def peaks_at(places, height=2.0):
    """(M,) pattern: a smooth background and one-entry peaks."""
    h = 0.2 + 0.1 * np.sin(np.arange(M) / 7.0)
    h[list(places)] += height
    return h


def scene(seed=0, noise_component=True):
    """(X, true maps (g, n), true patterns (g, M), noise map (n,), noise pattern (M,)).

    Three grains on blocks of the scan (one 6 x 6, small), their peaks in different places; X is their
    W H, plus (``noise_component``) a spatially white weight at every position times a smooth pattern
    every position shares, plus Gaussian noise (sd 0.02).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SCAN[0], : SCAN[1]]
    maps = np.stack([(xx < 15).ravel(), ((xx >= 15) & (yy < 20)).ravel(),
                     ((xx >= 20) & (xx < 26) & (yy >= 22) & (yy < 28)).ravel()]).astype(np.float64)
    H = np.stack([peaks_at(range(3, 20, 4)), peaks_at(range(22, 40, 4)), peaks_at(range(42, 58, 4))])
    white = rng.random(maps.shape[1])
    shared = 1.0 + 0.5 * np.cos(np.arange(M) / 11.0)
    X = maps.T @ H + (np.outer(white, shared) if noise_component else 0) + rng.normal(0, 0.02, (maps.shape[1], M))
    return np.clip(X, 0, None).astype(np.float32), maps, H, white, shared


def test_the_noise_only_component_is_dropped_and_the_grains_kept():
    X, maps, H, white, shared = scene()
    Wt = np.vstack([maps, white[None]]).astype(np.float32)
    H0 = np.vstack([H, shared[None]]).astype(np.float32)
    coherence = spatial_coherence(Wt.reshape(-1, *SCAN))
    assert (coherence[:3] > 0.5).all() and abs(coherence[3]) < 0.1  # the measure itself, by construction
    Wt2, H2, dropped = prune_components(X, Wt, H0, SCAN, refit="patterns")
    assert dropped == [3] and Wt2.shape[0] == 3
    np.testing.assert_array_equal(Wt2, Wt[:3])  # the kept maps stay as fitted
    # the kept patterns refitted: each grain's own peaks, and the shared pattern's mean weight on top
    for j in range(3):
        assert np.abs(H2[j] - (H[j] + white.mean() * shared)).max() < 0.1


def test_the_full_refit_drops_the_noise_component_and_keeps_the_large_grains_on_their_positions():
    X, maps, H, white, shared = scene()
    Wt = np.vstack([maps, white[None]]).astype(np.float32)
    H0 = np.vstack([H, shared[None]]).astype(np.float32)
    Wt2, H2, dropped = prune_components(X, Wt, H0, SCAN, refit="full")
    assert dropped == [3] and Wt2.shape[0] == 3
    for j in range(2):
        on = maps[j] > 0
        foot = Wt2[j] >= 0.5 * Wt2[j].max()
        assert (foot & on).sum() / (foot | on).sum() > 0.9
        assert Wt2[j][on].mean() > 3 * Wt2[j][~on].mean()
    # the refit hands the dropped component's white noise to the kept maps; the small grain's map takes most of
    # it (its footprint no longer its grain), which the patterns-only refit avoids (docs/nmf.md)
    assert np.corrcoef(Wt2[2], white)[0, 1] > 0.5


def test_two_real_grains_both_stay_also_when_small_or_stacked():
    X, maps, H, _, _ = scene(noise_component=False)
    stacked = maps[0] * (1 + (np.arange(maps.shape[1]) % SCAN[1] >= 5))  # grain 0 thicker over part of itself
    Wt = np.vstack([maps[0], stacked - maps[0], maps[1], maps[2]]).astype(np.float32)  # two parts of grain 0
    H0 = np.vstack([H[0], H[0], H[1], H[2]]).astype(np.float32)
    Wt2, H2, dropped = prune_components(X, Wt, H0, SCAN, refit="patterns")
    assert dropped == [] and Wt2.shape[0] == 4
    np.testing.assert_array_equal(H2, H0)  # nothing dropped: the fit is returned as given
    assert prune_components(X, Wt, H0, SCAN, refit="full")[2] == []  # the full refit keeps all four too


def test_a_fit_whose_maps_are_all_noise_keeps_every_component():
    rng = np.random.default_rng(2)
    Wt = rng.random((3, SCAN[0] * SCAN[1])).astype(np.float32)
    assert not incoherent(Wt, SCAN).any()
    H = rng.random((3, M)).astype(np.float32)
    for refit in ("full", "patterns"):
        Wt2, _, dropped = prune_components(Wt.T @ H, Wt, H, SCAN, refit=refit)
        assert dropped == [] and Wt2.shape == Wt.shape


def test_refit_patterns_is_the_non_negative_least_squares_solution():
    rng = np.random.default_rng(3)
    Wt = rng.random((4, 50))
    X = rng.normal(0.5, 1.0, (50, 6))
    H = refit_patterns(Wt, np.ones((4, 6)), Wt @ X, max_iter=5000, tol=1e-14)
    expected = np.stack([nnls(Wt.T, X[:, f])[0] for f in range(6)], axis=1)
    np.testing.assert_allclose(H, expected, atol=1e-4)


@pytest.fixture(scope="module")
def fits():
    """The thickness-fringe scene of tests/test_merge_evidence.py with a noise-only component added, fitted
    without the pruning, with it and the patterns refitted (the defaults), and with the full refit."""
    X, grains = grains_scene()
    rng = np.random.default_rng(5)
    X = X + np.outer(rng.random(X.shape[0]), np.full(X.shape[1], 0.2, np.float32)).astype(np.float32)
    options = dict(random_state=0, merge_threshold=0.4, n_restarts=4, n_jobs=1, scan_shape=(40, 40),
                   initial_components=8)
    plain = IterativeNMF(min_coherence=None, **options)
    W1 = plain.fit_transform(X)
    pruned = IterativeNMF(min_coherence=0.5, prune_refit="patterns", **options)
    W2 = pruned.fit_transform(X)
    full = IterativeNMF(min_coherence=0.5, prune_refit="full", **options)
    W3 = full.fit_transform(X)
    return plain, W1, pruned, W2, full, W3, grains


def test_the_estimator_drops_exactly_the_incoherent_components_of_the_same_fit(fits):
    plain, W1, pruned, W2, full, W3, grains = fits
    low = incoherent(W1.T, (40, 40))
    assert low.any()  # the added noise has a component of its own in this fit
    assert pruned.pruned_ == [int(j) for j in np.flatnonzero(low)]
    assert pruned.n_components_ == plain.n_components_ - int(low.sum())
    np.testing.assert_array_equal(W2, W1[:, ~low])  # the kept maps as fitted
    assert (spatial_coherence(W2.T.reshape(-1, 40, 40)) >= 0.5).all()
    assert plain.pruned_ == [] and pruned.to_results()["/decompose/pruned"].tolist() == pruned.pruned_
    n = len(pruned.pruned_)
    assert f"after {n} component{'s' if n > 1 else ''} whose map is noise" in pruned.to_results()["/kselect/reason"]
    assert "whose map is noise" not in plain.to_results()["/kselect/reason"]
    # the full refit refits every factor after the same drop: the same components are left, each on the same grain
    assert full.pruned_ == pruned.pruned_ and full.n_components_ == pruned.n_components_
    on = np.stack([m.ravel() for m in grains.values()])  # (grains, positions)
    assert ((on @ W3).argmax(axis=0) == (on @ W2).argmax(axis=0)).all()


def test_min_coherence_is_checked():
    with pytest.raises(ConfigError):
        IterativeNMF(min_coherence=2.0, n_restarts=1, merge_threshold=0.4).fit(np.ones((4, 3), np.float32))
    with pytest.raises(ConfigError):
        IterativeNMF(prune_refit="maps", n_restarts=1, merge_threshold=0.4).fit(np.ones((4, 3), np.float32))
    with pytest.raises(ConfigError, match="refit"):
        prune_components(np.ones((4, 3), np.float32), np.ones((1, 4)), np.ones((1, 3)), (2, 2), refit="maps")
