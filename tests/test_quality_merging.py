"""Iterative merging NMF: the pattern link, restarts on a subset of positions, the final refit."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.decompose import IterativeNMF, merge_groups
from stemnmf.decompose.iterative import PATTERN_THRESHOLD, RESTART_POSITIONS, RESTART_TOL
from stemnmf.errors import ConfigError

SCAN = (20, 20)


def corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def split_grain(seed=0):
    """X = W H on a 20 x 20 scan: a grain in two overlapping halves with related patterns, and a second grain.

    Maps 0 and 1 are the left and right parts of one square grain, overlapping
    in two columns (correlation about 0.2, below a 0.45 threshold); their
    patterns share the grain's reflections (cosine 0.8). Map 2 is another grain
    with a pattern of its own (cosine 0 with the others).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : SCAN[0], 0 : SCAN[1]]
    left = ((yy >= 2) & (yy < 12) & (xx >= 2) & (xx < 9)).astype(float)
    right = ((yy >= 2) & (yy < 12) & (xx >= 7) & (xx < 14)).astype(float)
    other = ((yy >= 14) & (xx >= 10)).astype(float)
    W = np.stack([left, right, other], axis=-1).reshape(-1, 3)
    H = np.zeros((3, 30))
    H[0, 0:10] = 1.0
    H[1, 0:10] = 0.5
    H[1, 10:13] = 0.6  # the same reflections plus a few that thickness brings out in this half
    H[2, 20:30] = 0.5 + rng.random(10)
    return W, H, (W @ H).astype(np.float32)


def test_pattern_link_by_hand():
    W, H, _ = split_grain()
    Wt = W.T
    r = corr(Wt[0], Wt[1])
    cos = H[0] @ H[1] / np.linalg.norm(H[0]) / np.linalg.norm(H[1])
    assert 0 < r < 0.45 and cos > 0.5
    assert merge_groups(Wt, 0.45) == [[0], [1], [2]]
    assert merge_groups(Wt, 0.45, H, 0.5) == [[0, 1], [2]]
    assert merge_groups(Wt, 0.45, H, cos + 1e-9) == [[0], [1], [2]]  # inclusive threshold
    # anti-correlated maps are never linked by their patterns
    anti = np.stack([Wt[0], 1 - Wt[0]])
    assert corr(anti[0], anti[1]) < 0
    assert merge_groups(anti, 0.45, np.stack([H[0], H[0]]), 0.5) == [[0], [1]]
    # orthogonal patterns: nothing new
    assert merge_groups(Wt, 0.45, np.eye(3, 30), 0.5) == [[0], [1], [2]]


def test_the_two_halves_of_a_grain_merge_with_the_pattern_link_only():
    W, _, X = split_grain()
    # links free of the noise budget: X is noise-free, so any merge costs more than the noise
    common = dict(initial_components=3, merge_threshold=0.45, n_restarts=2, max_iter=2000, tol=1e-7,
                  restart_tol=1e-7, random_state=0, n_jobs=1, link_tolerance=None)
    paper = IterativeNMF(pattern_threshold=None, **common).fit(X)
    ours = IterativeNMF(**common).fit(X)
    assert paper.n_components_ == 3
    assert ours.n_components_ == 2
    maps = ours.transform(X)
    grain = W[:, 0] + W[:, 1] > 0
    best = max(corr(maps[:, j], grain.astype(float)) for j in range(2))
    assert best > 0.9


def test_restarts_on_a_subset_then_refit_on_every_position():
    W, _, X = split_grain()
    model = IterativeNMF(initial_components=3, merge_threshold=0.45, n_restarts=3, restart_positions=150,
                         max_iter=2000, tol=1e-7, random_state=0, n_jobs=1, link_tolerance=None)
    Wfit = model.fit_transform(X)
    assert model.restart_positions_ == 150
    assert Wfit.shape == (400, model.n_components_) and model.n_components_ == 2
    assert model.final_history_[-1][1] == [] and model.final_history_[0][0] == 2
    # the refit on all 400 positions fits X as well as a model that saw them all
    full = IterativeNMF(initial_components=3, merge_threshold=0.45, n_restarts=3, max_iter=2000, tol=1e-7,
                        random_state=0, n_jobs=1, link_tolerance=None).fit(X)
    assert full.restart_positions_ == 400
    assert model.reconstruction_err_ <= full.reconstruction_err_ * 1.05 + 1e-3 * np.linalg.norm(X)
    np.testing.assert_allclose(np.linalg.norm(X - Wfit @ model.components_), model.reconstruction_err_, rtol=1e-3)
    # the same seed gives the same subset and the same model
    again = IterativeNMF(**model.get_params()).fit(X)
    np.testing.assert_array_equal(again.components_, model.components_)


def test_defaults_and_bad_options():
    model = IterativeNMF(feature="aa")
    assert model.pattern_threshold == PATTERN_THRESHOLD == 0.5
    assert model.restart_tol == RESTART_TOL == 1e-3
    assert model.restart_positions == RESTART_POSITIONS
    _, _, X = split_grain()
    for options, message in [
        ({"restart_tol": -1.0}, "restart_tol"),
        ({"restart_positions": 0}, "restart_positions"),
        ({"pattern_threshold": 2.0}, "pattern_threshold"),
    ]:
        with pytest.raises(ConfigError, match=message):
            IterativeNMF(merge_threshold=0.5, **options).fit(X)
