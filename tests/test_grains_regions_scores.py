"""One region per grain (region table: component, confidence, overlap) and the grain-finding scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stemnmf.analysis import analyze, score_clusters
from stemnmf.analysis.regions import OVERLAPPED_FRACTION, region_confidence, region_overlap, region_table
from stemnmf.analysis.scores import detection_scores, dominant_grain
from stemnmf.io import Results, load_results, save_results


def squares(shape, boxes):
    out = np.zeros((len(boxes), *shape), np.float32)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = 1
    return out


def test_overlap_and_confidence_by_hand():
    # two components; grain regions 0 (rows 0-9) and 1 (rows 5-14) overlap on rows 5-9 (half of each)
    maps = np.zeros((2, 20, 10), np.float32)
    maps[0, 0:10] = 2.0
    maps[1, 5:15] = 1.0
    regions = maps.copy()
    assert region_overlap(regions).tolist() == [0.5, 0.5]
    # contributions with |H| = (1, 2): rows 0-4 only component 0 (share 1); rows 5-9 shares 2/(2+2) = 0.5
    conf = region_confidence(regions, [0, 1], maps, scale=[1.0, 2.0])
    assert conf[0] == pytest.approx(0.75)  # (50 * 1 + 50 * 0.5) / 100
    assert conf[1] == pytest.approx(0.75)  # rows 5-9: 2/(2+2); rows 10-14: alone
    table = region_table(regions, [0, 1], confidence=conf)
    assert table["overlapped"].tolist() == [True, True]
    assert table["overlap_fraction"].tolist() == [0.5, 0.5]
    # 20 of 220 positions shared (0.09): not overlapped; the small region lies wholly inside: overlapped
    assert region_table(squares((20, 20), [(0, 11, 0, 20), (0, 10, 18, 20)]))["overlapped"].tolist() == [False, True]
    assert table["component"].tolist() == [0, 1]
    alone = region_table(squares((10, 10), [(0, 3, 0, 3), (5, 9, 5, 9)]))
    assert alone["overlapped"].tolist() == [False, False] and np.isnan(alone["confidence"]).all()
    # just under and at the documented fraction
    maps = squares((20, 20), [(0, 10, 0, 10), (9, 19, 0, 10)])  # 10 of 100 positions shared
    assert region_overlap(maps).tolist() == [0.1, 0.1] and OVERLAPPED_FRACTION == 0.1
    assert region_table(maps)["overlapped"].tolist() == [True, True]


def test_analyze_writes_the_new_columns_and_one_component_gives_two_regions():
    # one component covering two separate grains, a second component on a third grain overlapping the first
    truth = squares((30, 30), [(2, 12, 2, 12), (18, 28, 18, 28), (7, 17, 7, 17)])
    W = np.stack([(truth[0] + truth[1]).ravel(), truth[2].ravel()], 1).astype(np.float32)
    H = np.eye(2, 4, dtype=np.float32)
    result = analyze(W, H, (30, 30), truth=truth, edge_fraction=0, min_coherence=None, refine="yen",
                     min_region_size=10)
    table = result.region_table
    assert table["component"].tolist() == [0, 0, 1]
    # grain 0 and grain 2 overlap on 5 x 5 = 25 of 100 positions
    assert table["overlap_fraction"].tolist() == pytest.approx([0.25, 0.0, 0.25])
    assert table["overlapped"].tolist() == [True, False, True]
    # each region's component explains all of its signal where alone, half where the two overlap
    assert table["confidence"].tolist() == pytest.approx([1 - 0.25 / 2, 1.0, 1 - 0.25 / 2])
    out = result.to_results()["/regions/table"]
    assert {"confidence", "overlap_fraction", "overlapped", "component"} <= set(out.dtype.names)


def test_detection_scores_by_hand():
    # three grains: 0 and 1 separate (100 positions each); 2 (16 positions) lies under thicker grain 0
    truth = squares((30, 30), [(0, 10, 0, 10), (15, 25, 15, 25), (2, 6, 2, 6)])
    thickness = truth * np.array([300.0, 300.0, 100.0])[:, None, None]
    dominant = dominant_grain(truth, thickness)
    # clusters: grain 0 exactly; the left half of grain 1 (IoU 0.5, TPR 0.5); nothing for grain 2
    clusters = squares((30, 30), [(0, 10, 0, 10), (15, 25, 15, 20)])
    recalled = np.array([True, True, False])
    d = detection_scores(clusters, truth, dominant, recalled, min_visible=25, recall_iou=0.5)
    assert d["n_visible_grains"] == 2  # grain 2 dominates no position
    assert d["per_grain"]["visible"].tolist() == [True, True, False]
    assert d["grain_recall_visible"] == 1.0
    assert d["per_grain"]["best_IoU"].tolist() == pytest.approx([1.0, 0.5, 16 / 100])
    assert d["grain_recall_iou"] == pytest.approx(2 / 3)
    assert d["grain_recall_iou_visible"] == 1.0
    assert d["clusters_per_grain"] == pytest.approx(2 / 3) and d["clusters_per_visible_grain"] == 1.0
    # areas: clusters 100 and 50 (median 75); grains 100, 100, 16 (median 100)
    assert d["cluster_area_median"] == 75 and d["grain_area_median"] == 100
    assert d["area_median_error"] == pytest.approx(-0.25)
    # Feret: 10 x 10 -> sqrt(200), 10 x 5 -> sqrt(125); grains: sqrt(200) twice and 4 x 4 -> sqrt(32)
    assert d["cluster_feret_median"] == pytest.approx((np.sqrt(200) + np.sqrt(125)) / 2)
    assert d["grain_feret_median"] == pytest.approx(np.sqrt(200))


def test_own_region_recall_tells_a_nested_grains_region_from_its_covers():
    # grain 1 (8 x 8 = 64 positions) lies inside grain 0 (10 x 10) and is thicker there: visible
    truth = squares((20, 20), [(0, 10, 0, 10), (1, 9, 1, 9)])
    thickness = truth * np.array([100.0, 300.0])[:, None, None]
    dominant = dominant_grain(truth, thickness)
    # cluster 0: grain 1's extent and one row of grain 0 beside it (the blur of a real region), IoU 64/72 with
    # grain 1; the weight-sum matching gives it to grain 0 (72 positions in 0, 64 in 1): recall by TPR misses grain 1
    spill = squares((20, 20), [(1, 10, 1, 9)])
    recalled = np.array([False, False])
    d = detection_scores(spill, truth, dominant, recalled, min_visible=25, recall_iou=0.5)
    assert d["per_grain"]["visible"].tolist() == [True, True]
    assert d["per_grain"]["own"].tolist() == [False, True]
    assert d["grain_recall_own_visible"] == 0.5 and d["grain_recall_own"] == 0.5
    # the cover's region alone (grain 0's extent) covers grain 1 at IoU 0.64: recall at IoU counts grain 1, own does not
    cover = squares((20, 20), [(0, 10, 0, 10)])
    d = detection_scores(cover, truth, dominant, np.array([True, False]), min_visible=25, recall_iou=0.5)
    assert d["grain_recall_iou_visible"] == 1.0
    assert d["per_grain"]["own"].tolist() == [True, False] and d["grain_recall_own_visible"] == 0.5


def test_no_cluster_finds_no_grain():
    truth = squares((20, 20), [(0, 10, 0, 10), (10, 20, 10, 20)])
    d = detection_scores(np.zeros((0, 20, 20)), truth, dominant_grain(truth), np.zeros(2, bool))
    assert d["grain_recall_iou"] == 0.0 and d["grain_recall_visible"] == 0.0 and d["clusters_per_grain"] == 0.0
    assert np.isnan(d["area_median_error"]) and d["per_grain"]["best_IoU"].tolist() == [0.0, 0.0]


def test_score_clusters_reports_detection_everywhere():
    truth = squares((20, 20), [(0, 10, 0, 10), (10, 20, 10, 20)])
    scores = score_clusters(truth.copy(), truth)
    summary = scores.summary()
    for name in ("grain_recall_visible", "grain_recall_iou", "clusters_per_grain", "area_median_error",
                 "feret_median_error", "ARI_regions"):
        assert name in summary
    assert summary["grain_recall_visible"] == 1.0 and summary["area_median_error"] == 0.0
    data = scores.to_dict()
    assert data["detection"]["n_visible_grains"] == 2
    assert data["per_grain"]["visible"] == [True, True]
    json.dumps(data, allow_nan=False)
    stored = scores.to_results()
    assert float(stored["/scores/detection/grain_recall_iou"]) == 1.0
    assert stored["/scores/per_grain/best_IoU"].tolist() == [1.0, 1.0]


def test_new_columns_round_trip_through_a_results_file(tmp_path):
    maps = squares((8, 8), [(0, 4, 0, 8), (2, 6, 0, 8)])
    results = Results()
    results["/regions/maps"] = maps
    results["/regions/table"] = region_table(maps, [0, 1], confidence=[0.5, 0.9])
    table = load_results(save_results(results, tmp_path / "results.h5"))["/regions/table"]
    assert table["overlapped"].dtype == bool and table["overlapped"].tolist() == [True, True]
    assert table["confidence"].tolist() == pytest.approx([0.5, 0.9])
    assert table["overlap_fraction"].tolist() == [0.5, 0.5]
