"""Kneedle knee of a convex decreasing curve, and the range of interest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemnmf.reproduce import LMNO_FIXTURE
from stemnmf.errors import DataValueError
from stemnmf.kselect import find_knee, range_of_interest

FIXTURE = LMNO_FIXTURE  # published outputs of Cao et al. 2025, see src/stemnmf/reproduce/data/README.md


@pytest.mark.parametrize("run", ["kloss_run1", "kloss_run2"])
def test_knee_of_the_published_loss_curves(run):
    # Worked out by hand from the published curves (k = 3..20, 18 points):
    # x_n = (k - 3) / 17, y_n = (y - min) / (max - min), D = 1 - x_n - y_n.
    # run 1 (max 0.00503466 at k=3, min 0.00263715 at k=20):
    #   D(7) = 1 - 0.2353 - 0.3369 = 0.4278, D(8) = 1 - 0.2941 - 0.2711 = 0.4348,
    #   D(9) = 1 - 0.3529 - 0.2582 = 0.3889, D(10) = 0.3851, D(11) = 0.3448.
    #   D rises to its first local maximum at k = 8; threshold 0.4348 - 1/17 = 0.3760,
    #   crossed at k = 11 before the next local maximum (k = 12): knee k = 8.
    # run 2 (max 0.00500843 at k=3, min 0.00273927 at k=19):
    #   D(7) = 0.4156, D(8) = 1 - 0.2941 - 0.2418 = 0.4641, D(9) = 0.4556, D(10) = 0.4183,
    #   D(11) = 0.3793: threshold 0.4641 - 0.0588 = 0.4053, crossed at k = 11: knee k = 8.
    # The study chose k = 8 for this dataset.
    data = np.load(FIXTURE)
    knee = find_knee(data["kloss_k"], data[run])
    assert knee.x == 8
    assert knee.index == 5
    assert knee.confirmed
    if run == "kloss_run1":
        assert knee.difference[5] == pytest.approx(0.4348, abs=1e-4)
        assert knee.difference[4] == pytest.approx(0.4278, abs=1e-4)


def test_knee_of_a_piecewise_linear_curve():
    # D = 1 - i/6 - y/10 = [0, .233, .467, .35, .233, .117, 0]; threshold .467 - 1/6 = .3 crossed at x=4
    knee = find_knee([0, 1, 2, 3, 4, 5, 6], [10, 6, 2, 1.5, 1, 0.5, 0])
    assert knee.x == 2.0
    np.testing.assert_allclose(knee.difference, [0, 7 / 30, 14 / 30, 0.35, 7 / 30, 3.5 / 30, 0], atol=1e-12)


def test_a_later_maximum_resets_the_threshold():
    # built from D = [0, .30, .25, .40, .10, .05, 0] with x_n = i / 6:
    # the maximum at i = 1 is not confirmed (D stays above .30 - 1/6 until the maximum at i = 3),
    # the one at i = 3 is (.10 < .40 - 1/6)
    x = np.arange(7.0)
    d = np.array([0, 0.30, 0.25, 0.40, 0.10, 0.05, 0])
    y = 1 - x / 6 - d
    knee = find_knee(x, y)
    assert knee.x == 3.0
    assert knee.confirmed


def test_unconfirmed_knee_falls_back_to_the_largest_distance():
    # D = [0, .1, .2, .15, .12, .1, 0]: with S = 5 the drop after the maximum (i = 2) never
    # exceeds 5/6, so nothing is confirmed and the global maximum of D is used
    x = np.arange(7.0)
    d = np.array([0, 0.1, 0.2, 0.15, 0.12, 0.1, 0])
    knee = find_knee(x, 1 - x / 6 - d, sensitivity=5.0)
    assert knee.x == 2.0
    assert not knee.confirmed


def test_uneven_spacing_uses_x_values():
    # k = 2, 4, 8, 16: x_n = [0, 2/14, 6/14, 1]; y = [1, .3, .1, 0]; D = [0, .557, .471, 0]
    knee = find_knee([2, 4, 8, 16], [1.0, 0.3, 0.1, 0.0])
    assert knee.x == 4.0


def test_flat_curve():
    knee = find_knee([3, 4, 5, 6], [1.0, 1.0, 1.0, 1.0])
    assert knee.x == 3.0
    assert not knee.confirmed


def test_bad_curves():
    with pytest.raises(DataValueError, match="at least 3"):
        find_knee([1, 2], [2, 1])
    with pytest.raises(DataValueError, match="increasing"):
        find_knee([1, 3, 2], [3, 2, 1])
    with pytest.raises(DataValueError, match="NaN"):
        find_knee([1, 2, 3], [3, np.nan, 1])
    with pytest.raises(DataValueError, match="lengths"):
        find_knee([1, 2, 3], [3, 2])


def test_range_of_interest():
    ks = np.arange(3, 21)
    np.testing.assert_array_equal(range_of_interest(8, ks), np.arange(4, 13))
    np.testing.assert_array_equal(range_of_interest(3, ks), np.arange(3, 8))
    np.testing.assert_array_equal(range_of_interest(19, ks), np.arange(15, 21))
    np.testing.assert_array_equal(range_of_interest(10, ks, half_width=1), [9, 10, 11])
    np.testing.assert_array_equal(range_of_interest(8, [3, 5, 8, 13, 20], half_width=4), [5, 8])
