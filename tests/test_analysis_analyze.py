"""The analysis stage end to end, its results paths, and `stemnmf score`."""

import json

import numpy as np
import pytest

from stemnmf.analysis import analyze, score_results
from stemnmf.cli import main
from stemnmf.engine import Engine
from stemnmf.io import Calibration, Dataset4D, Results, Truth, load_results, save_results, save_scan


def _scene(seed=0, q=8):
    """A 16 x 20 scan of three grains (vacuum in the last 3 rows) with known patterns and factors."""
    rng = np.random.default_rng(seed)
    sy, sx = 16, 20
    G = np.zeros((3, sy, sx), np.uint8)
    G[0, :13, :7] = 1
    G[1, :13, 7:14] = 1
    G[2, :13, 14:] = 1
    patterns = np.zeros((3, q, q), np.float32)
    patterns[0, 2, 2] = patterns[0, 5, 5] = 1.0
    patterns[1, 2, 5] = patterns[1, 5, 2] = 1.0
    patterns[2, 4, 1:7] = 0.5
    W = G.reshape(3, -1).T.astype(np.float32) * rng.uniform(0.8, 1.2, (sy * sx, 3)).astype(np.float32)
    W += rng.uniform(0, 0.02, W.shape).astype(np.float32)
    H = patterns.reshape(3, -1)
    data = (W @ H).reshape(sy, sx, q, q) + 0.01
    return Dataset4D(data.astype(np.float32), Calibration(scan_step=0.5)), W, H, G


def test_analyze_end_to_end_with_truth_and_results_file(tmp_path):
    dataset, W, H, G = _scene()
    vacuum = np.zeros((16, 20), bool)
    vacuum[13:] = True
    result = analyze(
        W, H, dataset=dataset, feature="aa", min_region_size=10, vacuum=vacuum, truth=Truth(G),
        engine=Engine(chunk_rows=3, n_threads=2),
    )
    expected_labels = np.where(G.any(axis=0), G.argmax(axis=0), -1)
    np.testing.assert_array_equal(result.labels, expected_labels)
    np.testing.assert_array_equal(result.n_positions, [13 * 7, 13 * 7, 13 * 6])
    assert result.regions.component.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(result.regions.masks, G.astype(bool))
    np.testing.assert_array_equal(result.region_table["area_px"], [91, 91, 78])
    np.testing.assert_allclose(result.region_table["area_nm2"], [91 * 0.25, 91 * 0.25, 78 * 0.25])
    np.testing.assert_allclose(result.region_table["max_feret_nm"], np.hypot(13, [7, 7, 6]) * 0.5, rtol=1e-6)
    # the mean pattern of each grain is its pattern times its mean weight, plus the offset
    for c in range(3):
        mean = result.mean_patterns[c]
        np.testing.assert_allclose(mean, dataset.data[G[c] > 0].mean(axis=0), rtol=1e-5)
    # every pattern of a cluster is the same up to scale: tiny dissimilarity
    assert (result.component_dissimilarity < 0.02).all() and (result.region_dissimilarity < 0.02).all()
    assert result.representative_kind == "weighted mean"
    np.testing.assert_array_equal(result.representative_patterns, result.weighted_mean_patterns)
    # ground truth: perfect clusters
    s = result.scores
    assert s.clusters == "regions"
    assert s.area["precision_A"] == 1.0 and s.area["TPR_A"] == 1.0 and s.area["TNR_A"] == 1.0
    assert s.grain["TPR_G"] == 1.0 and s.grain["grain_recall"] == 1.0 and s.ari == pytest.approx(1.0)

    out = result.to_results()
    for path in (
        "/components/maps", "/components/mean_patterns", "/components/representative_patterns", "/labels",
        "/overlap/ratio", "/overlap/thresholds", "/overlap/maps", "/overlap/pairs", "/regions/maps",
        "/regions/table", "/clusters/n_per_position", "/analysis/dissimilarity", "/scores/summary",
    ):
        assert path in out, path
    assert out["/overlap/maps"].shape == (5, 16, 20)
    np.testing.assert_array_equal(out["/clusters/vacuum"], vacuum)
    table = out["/analysis/dissimilarity"]
    assert table["source"].tolist() == ["component"] * 3 + ["region"] * 3
    save_results(Results(out), tmp_path / "results.h5")  # the schema of DESIGN.md holds
    back = load_results(tmp_path)
    np.testing.assert_array_equal(back["/labels"], result.labels)
    assert back["/regions/table"]["max_feret_nm"].dtype == np.float32
    again = score_results(back, Truth(G))
    assert again.to_dict() == s.to_dict()


def test_analyze_results_do_not_depend_on_chunking():
    dataset, W, H, G = _scene(1)
    a = analyze(W, H, dataset=dataset, feature="bd", engine=Engine(chunk_rows=1, n_threads=1))
    b = analyze(W, H, dataset=dataset, feature="bd", engine=Engine(chunk_rows=16))
    np.testing.assert_allclose(a.mean_patterns, b.mean_patterns, rtol=1e-6)
    np.testing.assert_allclose(a.region_mean_patterns, b.region_mean_patterns, rtol=1e-6)
    np.testing.assert_allclose(a.component_dissimilarity, b.component_dissimilarity, rtol=1e-5)
    np.testing.assert_allclose(a.dissimilarity_map, b.dissimilarity_map, rtol=1e-5, equal_nan=True)


def test_analyze_raw_features_representative_and_raw_vs_nmf():
    dataset, W, H, G = _scene(2, q=16)  # IQA windows need patterns of at least 11 x 11
    result = analyze(W, H, dataset=dataset, feature="raw", refine=None)
    assert result.regions is None and "/regions/maps" not in result.to_results()
    assert result.representative_kind == "basis x largest weight"
    np.testing.assert_allclose(
        result.representative_patterns, H.reshape(3, 16, 16) * W.max(axis=0)[:, None, None], rtol=1e-6
    )
    table = result.raw_vs_nmf
    assert table["component"].tolist() == [0, 1, 2]
    # the raw mean patterns are the NMF patterns up to scale and offset: near-perfect similarity
    assert (table["ssim"] > 0.95).all() and (table["psnr"] > 30).all()
    # a binned raw feature (8 x 8) is repeated onto the 16 x 16 detector
    binned = H.reshape(3, 8, 2, 8, 2).sum(axis=(2, 4)).reshape(3, 64)
    coarse = analyze(W, binned, dataset=dataset, feature="raw", pattern_shape=(8, 8), refine=None)
    assert coarse.representative_patterns.shape == (3, 16, 16)
    expected = binned.reshape(3, 8, 8) * W.max(axis=0)[:, None, None]
    np.testing.assert_allclose(coarse.representative_patterns[:, 1::2, ::2], expected, rtol=1e-6)
    # patterns too small for the IQA windows give NaN, not an error
    small, W, H, G = _scene(2, q=8)
    tiny = analyze(W, H, dataset=small, feature="raw", refine=None)
    assert np.isnan(tiny.raw_vs_nmf["ssim"]).all() and np.isfinite(tiny.raw_vs_nmf["psnr"]).all()


def test_analyze_without_data_gives_maps_and_regions_only():
    _, W, H, G = _scene(3)
    result = analyze(W, H, (16, 20), refine="otsu", clean=True, min_region_size=10)
    out = result.to_results()
    assert "/components/mean_patterns" not in out and "/scores/summary" not in out
    assert out["/regions/method"] == "otsu"
    assert np.isnan(result.region_table["area_nm2"]).all()  # no scan step known
    assert result.regions.masks.sum(axis=0).max() == 1


def _results_dir(tmp_path, G, *, regions=True):
    maps = G.astype(np.float32) * 0.8
    datasets = {
        "/components/maps": maps,
        "/labels": np.where(G.any(axis=0), G.argmax(axis=0), -1).astype(np.int32),
        "/clusters/presence": np.float32(0.25),
    }
    if regions:
        datasets["/regions/maps"] = maps[:2]  # the third grain was lost in refinement
    outdir = tmp_path / "run"
    outdir.mkdir()
    save_results(Results(datasets), outdir / "results.h5")
    return outdir


def test_score_cli_end_to_end(tmp_path, capsys):
    G = np.zeros((3, 6, 9), np.uint8)
    G[0, :, :3] = 1
    G[1, :, 3:6] = 1
    G[2, :, 6:] = 1
    outdir = _results_dir(tmp_path, G)
    np.save(tmp_path / "truth.npy", G)
    assert main(["score", str(outdir), "--truth", str(tmp_path / "truth.npy")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["clusters"] == "regions" and data["n_clusters"] == 2 and data["n_grains"] == 3
    assert data["area_based"]["TPR_A"] == pytest.approx(2 / 3)
    assert data["area_based"]["precision_A"] == 1.0 and data["area_based"]["TNR_A"] is None
    assert data["grain_based"]["TPR_G"] == 1.0
    assert data["grain_recall"] == pytest.approx(2 / 3)
    assert data["per_grain"]["recalled"] == [True, True, False]
    assert data["ARI"] == pytest.approx(1.0)  # /labels still has all three grains

    # components instead of regions, and the truth from a simulated scan file
    scan = save_scan(tmp_path / "sim.h5", Dataset4D(np.ones((6, 9, 4, 4), np.float32)), truth=Truth(G))
    assert main(["score", str(outdir), "--truth", str(scan), "--clusters", "components", "--indent", "0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["clusters"] == "components" and data["grain_recall"] == 1.0
    assert data["per_cluster"]["matched_grain"] == [0, 1, 2]


def test_score_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    G = np.zeros((2, 6, 9), np.uint8)
    G[0, :, :4] = 1
    np.save(tmp_path / "truth.npy", G)
    assert main(["score", str(tmp_path / "nothing"), "--truth", str(tmp_path / "truth.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stemnmf: error: no results file") and "\n" not in err

    outdir = _results_dir(tmp_path, np.ones((2, 5, 5), np.uint8), regions=False)
    assert main(["score", str(outdir), "--truth", str(tmp_path / "truth.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "scan shape (6, 9) does not match" in err and "\n" not in err

    assert main(["score", str(outdir), "--truth", str(tmp_path / "missing.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err

    np.save(tmp_path / "small.npy", np.ones((2, 5, 5), np.uint8))
    assert main(["score", str(outdir), "--truth", str(tmp_path / "small.npy"), "--clusters", "regions"]) == 2
    assert "no /regions/maps" in capsys.readouterr().err
