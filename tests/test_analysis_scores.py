"""Scores against ground truth: perfect on the truth itself, chance on random maps, hand examples."""

import json

import numpy as np
import pytest

from stemnmf.analysis import area_scores, dominant_grain, grain_scores, score_clusters
from stemnmf.errors import InputError
from stemnmf.io import Truth


def _truth(sy=30, sx=40):
    """Four grains: two side by side, one overlapping both, vacuum in the last 6 rows."""
    G = np.zeros((4, sy, sx), np.uint8)
    G[0, : sy - 6, :20] = 1
    G[1, : sy - 6, 20:] = 1
    G[2, 5:12, 15:28] = 1  # stacked on grains 0 and 1
    G[3, 14:20, 2:9] = 1  # stacked on grain 0
    thickness = G * np.array([10.0, 10.0, 30.0, 5.0])[:, None, None]
    return Truth(G, thickness=thickness)


def test_truth_against_itself_is_perfect():
    truth = _truth()
    # grain 3 lies inside grain 0: its cluster has the same weight sum on both, the IoU decides
    dominant = dominant_grain(truth.labels, truth.thickness)
    scores = score_clusters(truth.labels.astype(np.float32), truth, labels=dominant)
    area = scores.area
    assert (area["precision_A"], area["TPR_A"], area["TNR_A"]) == (1.0, 1.0, 1.0)
    assert (area["FPR_A"], area["FNR_A"]) == (0.0, 0.0)
    g = scores.grain
    np.testing.assert_array_equal(g["per_cluster"]["matched_grain"], [0, 1, 2, 3])
    for name in ("TPR_G", "TNR_G", "precision_G", "IoU_G"):
        assert g[name] == 1.0
        np.testing.assert_array_equal(g["per_cluster"][name], 1.0)
    assert g["type_I_error"] == 0.0 and g["type_II_error"] == 0.0
    assert g["grain_recall"] == 1.0 and g["per_grain"]["recalled"].all()
    np.testing.assert_array_equal(g["per_grain"]["best_cluster"], [0, 1, 2, 3])
    assert scores.ari == pytest.approx(1.0)


def test_random_maps_score_near_chance():
    rng = np.random.default_rng(0)
    sy, sx = 200, 200
    G = np.zeros((4, sy, sx), np.uint8)
    for h in range(4):
        G[h, :160, 50 * h : 50 * h + 50] = 1  # grains cover 80 % of the scan
    # each position is in one of 8 random clusters with probability 0.5, else in none
    pick = rng.integers(0, 8, size=(sy, sx))
    inside = rng.random((sy, sx)) < 0.5
    C = np.zeros((8, sy, sx), np.float32)
    C[pick[inside], *np.nonzero(inside)] = rng.uniform(0.5, 1, inside.sum())
    labels = np.where(inside, pick, -1)
    scores = score_clusters(C, G, labels=labels)
    area = scores.area
    assert area["precision_A"] == pytest.approx(0.8, abs=0.01)  # = the grain fraction
    assert area["TPR_A"] == pytest.approx(0.5, abs=0.01)
    assert area["TNR_A"] == pytest.approx(0.5, abs=0.01)
    assert area["FPR_A"] == pytest.approx(0.5, abs=0.01)
    g = scores.grain
    # a random cluster covers 1/16 of any grain
    assert g["TPR_G"] == pytest.approx(1 / 16, abs=0.01)
    assert g["precision_G"] == pytest.approx(0.2, abs=0.02)  # its positions spread over 5 areas
    assert g["grain_recall"] == 0.0
    assert abs(scores.ari) < 0.01


def test_grain_match_uses_the_sum_of_weights_not_the_count():
    # 1 x 10 scan, grain A = 0..4, grain B = 5..9; the cluster covers 3..7 with
    # weight 1 on A (2 positions) and 0.2 on B (3 positions): A wins 2 to 0.6
    G = np.zeros((2, 1, 10), np.uint8)
    G[0, 0, :5] = 1
    G[1, 0, 5:] = 1
    C = np.zeros((1, 1, 10), np.float32)
    C[0, 0, 3:5] = 1.0
    C[0, 0, 5:8] = 0.2
    g = grain_scores(C, G)
    pc = g["per_cluster"]
    assert pc["matched_grain"].tolist() == [0]
    # TP = 2, FP = 3, FN = 3, TN = 2
    assert pc["TPR_G"][0] == pytest.approx(0.4) and pc["TNR_G"][0] == pytest.approx(0.4)
    assert pc["type_I_error"][0] == pytest.approx(0.6) and pc["type_II_error"][0] == pytest.approx(0.6)
    assert pc["precision_G"][0] == pytest.approx(0.4) and pc["IoU_G"][0] == pytest.approx(0.25)
    assert g["per_grain"]["best_cluster"].tolist() == [0, -1]
    assert np.isnan(g["per_grain"]["TPR_G"][1])
    assert g["grain_recall"] == 0.0  # TPR 0.4 < 0.5
    assert grain_scores(C, G, recall_tpr=0.4)["grain_recall"] == 0.5


def test_area_scores_by_hand_and_unmatched_clusters():
    G = np.zeros((1, 2, 5), np.uint8)
    G[0, 0, :] = 1  # first row is the grain
    C = np.zeros((2, 2, 5), np.float32)
    C[0, 0, :3] = 1  # 3 TP
    C[1, 1, :2] = 1  # 2 FP, a cluster entirely in vacuum
    area = area_scores(C, G)
    assert (area["TP_A"], area["FP_A"], area["FN_A"], area["TN_A"]) == (3, 2, 2, 3)
    assert area["precision_A"] == pytest.approx(0.6) and area["TPR_A"] == pytest.approx(0.6)
    assert area["TNR_A"] == pytest.approx(0.6) and area["FNR_A"] == pytest.approx(0.4)
    g = grain_scores(C, G)
    assert g["per_cluster"]["matched_grain"].tolist() == [0, -1]
    assert g["n_matched_clusters"] == 1 and g["n_unmatched_clusters"] == 1
    assert np.isnan(g["per_cluster"]["TPR_G"][1])
    assert g["TPR_G"] == pytest.approx(0.6)  # the mean skips the unmatched cluster


def test_dominant_grain_by_thickness_or_index():
    truth = _truth()
    dom = dominant_grain(truth.labels, truth.thickness)
    assert dom[6, 16] == 2  # grain 2 is thickest where it overlaps grain 0
    assert dom[15, 3] == 0  # grain 3 is thinner than grain 0
    assert dom[-1, 0] == -1
    assert dominant_grain(truth.labels)[6, 16] == 0  # without thickness: the lowest index


def test_scan_shape_mismatch_and_json():
    truth = _truth()
    with pytest.raises(InputError, match="does not match"):
        score_clusters(np.ones((2, 10, 10), np.float32), truth)
    scores = score_clusters(truth.labels[:2].astype(np.float32), truth)
    data = scores.to_dict()
    text = json.dumps(data, allow_nan=False)  # NaN become null
    parsed = json.loads(text)
    assert parsed["per_grain"]["best_cluster"] == [0, 1, -1, -1]
    assert parsed["per_grain"]["TPR_G"][2] is None
    assert parsed["grain_recall"] == 0.5
    summary = json.loads(scores.to_results()["/scores/summary"])
    assert summary["TPR_G"] == 1.0 and summary["n_grains"] == 4


@pytest.mark.parametrize("labels, message", [
    (np.full((2, 4, 4), np.nan), "NaN or inf"),
    (-np.ones((2, 4, 4)), "negative values"),
    (np.array([[["a"]]]), "must be numbers"),
])
def test_truth_with_bad_values_is_one_clear_error(labels, message):
    from stemnmf.errors import InputError
    from stemnmf.io import Truth

    with pytest.raises(InputError, match=message):
        Truth(labels)
