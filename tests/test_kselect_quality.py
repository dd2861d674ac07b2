"""The choice of k on small simulated crystals with a known number of orientations.

A small version of ``bench/kselect_quality.py``: the 'crystals' preset on a 32 x 32
scan of 64 x 64 patterns (binned 2 x 2), 4, 6, 8 and 10 distinct orientations.
"""

from __future__ import annotations

import numpy as np

from stemnmf.kselect import select_k
from stemnmf.simulate import simulate


def _case(n, seed=0):
    dataset, truth = simulate("crystals", scan=(32, 32), det=(64, 64), n_orientations=n, n_grains=max(8, n + 2), seed=seed)
    n_true = len(np.unique(np.asarray(truth.extra["orientation_id"])))
    data = np.asarray(dataset.data, dtype=np.float32)
    X = data.reshape(32, 32, 32, 2, 32, 2).mean(axis=(3, 5)).reshape(32 * 32, 32 * 32)
    selection = select_k(X / X.max(), k_values=range(3, 16), pattern_shape=(32, 32), random_state=0, pca=False)
    return n_true, selection


def test_chosen_k_is_within_one_of_the_truth():
    results = [_case(n) for n in (4, 6, 8, 10)]
    truths = [truth for truth, _ in results]
    assert truths == [4, 6, 8, 10]  # every orientation is in view
    chosen = [s.chosen_k for _, s in results]
    hits = sum(abs(k - truth) <= 1 for k, truth in zip(chosen, truths))
    assert hits >= 3, f"chosen {chosen} for truths {truths}"
    for truth, s in results:
        # every choice stays in the range of interest around the knee
        assert s.range[0] <= s.chosen_k <= s.range[-1]
        assert abs(s.knee - truth) <= 2
