"""Decision level 2: redundant pairs and the vote, on patterns built to be distinct or duplicated."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect import DEFAULT_THRESHOLDS, decide_k, most_similar_pair


@pytest.fixture(scope="module")
def textures():
    """Four independent smooth random textures in [0, 1], 32 x 32: distinct for every metric."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(4):
        t = ndimage.gaussian_filter(rng.random((32, 32)), 1.5)
        out.append((t - t.min()) / (t.max() - t.min()))
    return np.stack(out)


def test_duplicate_component_is_redundant(textures):
    a, b, c, _ = textures
    by_k = {2: np.stack([a, b]), 3: np.stack([a, b, c]), 4: np.stack([a, b, c, 0.995 * a])}
    decision = decide_k(by_k)
    assert decision.chosen_k == 3
    assert decision.choices == {"ssim": 3, "psnr": 3, "gmsd": 3, "mdsi": 3}
    for metric in ("ssim", "psnr", "gmsd", "mdsi"):
        np.testing.assert_array_equal(decision.redundant[metric], [False, False, True])
        assert tuple(decision.pairs[metric][2]) == (0, 3)  # the duplicate pair
        assert decision.matrices[metric][4].shape == (4, 4)
    assert "median k = 3" in decision.reason and "components 0 and 3" in decision.reason
    np.testing.assert_array_equal(decision.k, [2, 3, 4])


def test_no_redundancy_chooses_the_largest_k(textures):
    by_k = {2: textures[:2], 3: textures[:3], 4: textures}
    decision = decide_k(by_k)
    assert decision.chosen_k == 4
    assert "no component is redundant" in decision.reason


def test_redundant_from_the_start_chooses_the_smallest_k(textures):
    a, b, c, _ = textures
    by_k = {3: np.stack([a, 0.995 * a, b]), 4: np.stack([a, 0.995 * a, b, c])}
    decision = decide_k(by_k)
    assert decision.chosen_k == 3
    assert "already at the smallest k" in decision.reason


def test_first_redundancy_stops_the_climb(textures):
    # k = 3 has a duplicate, k = 4 does not: the choice stays at 2 (the last k before the first redundancy)
    a, b, c, d = textures
    by_k = {2: np.stack([a, b]), 3: np.stack([a, b, 0.995 * b]), 4: np.stack([a, b, c, d])}
    assert decide_k(by_k).chosen_k == 2


def test_nearly_empty_component_is_redundant(textures):
    a, b, c, _ = textures
    # a fourth component at 0.1 % of the others: PSNR against the empty pattern is
    # -10 log10(mean((0.001 c)^2)) > 50 dB, GMSD against it ~0; pairwise it is distinct from a, b, c
    by_k = {3: np.stack([a, b, c]), 4: np.stack([a, b, c, 0.001 * c])}
    decision = decide_k(by_k)
    assert decision.choices["psnr"] == 3 and decision.choices["gmsd"] == 3
    expected = -10 * np.log10(np.mean((0.001 * c) ** 2) + 1e-8)
    assert decision.emptiest["psnr"][1] == pytest.approx(expected, rel=1e-9)
    assert decision.empty["psnr"][4].shape == (4,)
    assert np.isnan(decision.emptiest["ssim"]).all()  # SSIM does not compare with the empty pattern
    assert "component 3 is nearly empty" in decision.reason
    # without the check, PSNR and GMSD see no redundancy
    off = decide_k(by_k, empty_metrics=())
    assert off.choices["psnr"] == 4 and off.choices["gmsd"] == 4


def test_the_lower_median_decides(textures):
    a, b, c, d = textures
    by_k = {2: np.stack([a, b]), 3: np.stack([a, b, c]), 4: textures}
    # thresholds every pair exceeds make a metric choose 2; the defaults choose 4
    decision = decide_k(by_k, thresholds={"ssim": -1.0, "psnr": 0.0})
    assert decision.choices == {"ssim": 2, "psnr": 2, "gmsd": 4, "mdsi": 4}
    assert decision.chosen_k == 2  # sorted choices 2, 2, 4, 4: the lower median
    three = decide_k(by_k, thresholds={"ssim": -1.0})
    assert sorted(three.choices.values()) == [2, 4, 4, 4]
    assert three.chosen_k == 4  # three of four agree


def test_ties_go_to_the_smaller_k(textures):
    a, b, c, _ = textures
    by_k = {2: np.stack([a, b]), 3: np.stack([a, b, c])}
    # SSIM with a threshold every pair exceeds calls k = 2 redundant (chooses 2); GMSD chooses 3
    decision = decide_k(by_k, metrics=("ssim", "gmsd"), thresholds={"ssim": -1.0})
    assert decision.choices == {"ssim": 2, "gmsd": 3}
    assert decision.chosen_k == 2
    assert decision.thresholds["ssim"] == -1.0
    assert decision.thresholds["gmsd"] == DEFAULT_THRESHOLDS["representative"]["gmsd"]


def test_intensity_scale_does_not_matter(textures):
    a, b, c, _ = textures
    by_k = {2: np.stack([a, b]), 3: np.stack([a, b, 0.995 * a])}
    scaled = {k: 1000.0 * p for k, p in by_k.items()}
    one, other = decide_k(by_k), decide_k(scaled)
    assert one.chosen_k == other.chosen_k == 2
    np.testing.assert_allclose(one.matrices["mdsi"][3], other.matrices["mdsi"][3], rtol=1e-9)


def test_most_similar_pair_by_hand():
    m = np.array([[1.0, 0.2, 0.9], [0.3, 1.0, 0.1], [0.7, 0.4, 1.0]])
    # symmetrised: (0, 1) 0.25, (0, 2) 0.8, (1, 2) 0.25
    assert most_similar_pair(m, "ssim") == (pytest.approx(0.8), (0, 2))
    assert most_similar_pair(m, "gmsd") == (pytest.approx(0.25), (0, 1))
    value, pair = most_similar_pair(np.ones((1, 1)), "psnr")
    assert np.isnan(value) and pair == (-1, -1)


def test_bad_options(textures):
    with pytest.raises(ConfigError, match="unknown IQA metric"):
        decide_k({2: textures[:2]}, metrics=("vif",))
    with pytest.raises(ConfigError, match="threshold for unknown"):
        decide_k({2: textures[:2]}, thresholds={"lpips": 0.1})
    with pytest.raises(DataValueError, match=r"shape \(3, qy, qx\)"):
        decide_k({3: textures[:2]})
    with pytest.raises(DataValueError, match="no component patterns"):
        decide_k({})


def test_weighted_mean_patterns_use_their_own_defaults(textures):
    a, b, c, _ = textures
    by_k = {3: np.stack([a, b, c]), 4: np.stack([a, b, c, 0.001 * c])}
    decision = decide_k(by_k, source="weighted_mean")
    assert decision.thresholds == DEFAULT_THRESHOLDS["weighted_mean"]
    assert decision.empty_metrics == ()  # a weighted mean of raw patterns is never empty
    assert decision.empty == {}
    assert decision.choices["psnr"] == 4
    with pytest.raises(ConfigError, match="unknown pattern source"):
        decide_k(by_k, source="mean")


def test_ssim_sits_out_on_patterns_smaller_than_its_window(textures):
    small = textures[:, :8, :8]
    by_k = {2: small[:2], 3: np.stack([small[0], small[1], 0.995 * small[0]])}
    decision = decide_k(by_k)
    assert set(decision.choices) == {"psnr", "gmsd", "mdsi"}
    assert decision.chosen_k == 2
    with pytest.raises(DataValueError, match="SSIM window"):
        decide_k(by_k, metrics=("ssim",))
