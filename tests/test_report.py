import json
import shutil
import re

import numpy as np
import pytest

from stemnmf.io import Results, save_results
from stemnmf.report import render_html, write_report
from stemnmf.report.figures import distinct_label_colors


def synthetic_results(k=3, sy=12, sx=10, q=16):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(k), sy * sx // k + 1)[: sy * sx].reshape(sy, sx).astype(np.int32)
    table = np.zeros(4, dtype=[("region", "i4"), ("component", "i4"), ("area_nm2", "f4"), ("max_feret_nm", "f4"), ("dissimilarity", "f4")])
    table["region"] = np.arange(4)
    table["area_nm2"] = [1.0, 2.0, 3.0, 4.0]
    table["max_feret_nm"] = [1.5, 2.5, 3.5, 4.5]
    datasets = {
        "/summary/mean_image": rng.random((sy, sx)).astype(np.float32),
        "/summary/max_pattern": rng.random((q, q)).astype(np.float32),
        "/features/origin": np.array([8.0, 8.0]),
        "/features/rings": np.array([[3.0, 5.0], [6.0, 7.5]]),
        "/features/settings": json.dumps({"sector_width": 30.0, "sector_offset": 0.0, "ellipse": [4.0, 3.6, 0.3]}),
        "/features/bd/bragg_vector_map": rng.random((q, q)).astype(np.float32),
        "/kselect/k": np.arange(3, 9),
        "/kselect/loss": np.array([5.0, 3.0, 2.0, 1.8, 1.7, 1.65]),
        "/kselect/knee": np.int64(5),
        "/kselect/range": np.array([3, 8]),
        "/kselect/chosen_k": np.int64(k),
        "/kselect/reason": "test reason",
        "/kselect/metric_choices": json.dumps({"ssim": 3, "psnr": 3, "gmsd": 4, "mdsi": 3}),
        "/components/maps": rng.random((k, sy, sx)).astype(np.float32),
        "/components/mean_patterns": rng.random((k, q, q)).astype(np.float32),
        "/components/representative_patterns": rng.random((k, q, q)).astype(np.float32),
        "/labels": labels,
        "/overlap/ratio": rng.random((sy, sx)).astype(np.float32),
        "/overlap/thresholds": np.array([0.75, 0.9], np.float32),
        "/analysis/nsd": rng.random((2, k)),
        "/regions/table": table,
        "/truth/labels": (rng.random((4, sy, sx)) > 0.6).astype(np.uint8),
        "/scores/tpr_g": rng.random(k),
        "/scores/summary": json.dumps({"precision_A": 0.9, "TPR_A": 0.8}),
        "/decompose/merge_history": json.dumps([[[9, [[0, 1]]], [8, []]], [[9, [[2, 3], [4, 5]]], [7, []]]]),
        "/decompose/final_history": json.dumps([[8, [[1, 2]]], [7, []]]),
        "/decompose/restart_errors": np.array([2.0, 1.5]),
        "/decompose/best_restart": np.int64(1),
        "/decompose/scree/explained_variance_ratio": np.array([0.5, 0.3, 0.1, 0.05, 0.03, 0.02]),
        "/decompose/scree/elbow": np.int64(3),
    }
    for metric in ("ssim", "psnr", "gmsd", "mdsi"):
        datasets[f"/kselect/iqa/{metric}/{k}"] = rng.random((k, k))
        datasets[f"/kselect/most_similar/{metric}"] = rng.random(3)
    datasets["/kselect/range_k"] = np.array([3, 4, 5])
    datasets["/kselect/thresholds"] = json.dumps({"ssim": 0.9, "psnr": 30.0, "gmsd": 0.05, "mdsi": 0.2})
    for kk in (3, 4, 5):
        datasets[f"/kselect/patterns/{kk}"] = rng.random((kk, q, q)).astype(np.float32)
    attrs = {"seed": 3, "config": {"features": {"representation": "aa"}}, "timings": {"load": 0.1, "nmf": 0.2}, "input": "scan.h5"}
    return Results(datasets, attrs)


def test_report_has_every_section_and_embedded_images(tmp_path):
    save_results(synthetic_results(), tmp_path / "results.h5")
    path = write_report(tmp_path)
    assert path == tmp_path / "report.html"
    text = path.read_text()
    for heading in ("The data", "Choosing the number of components", "Components and clusters", "Cluster patterns", "Grains", "Ground truth"):
        assert f"<h2>{heading}</h2>" in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 15  # 3 data, 4 k (loss, IQA, patterns per k, merging), 3 maps, 2 patterns, 1 grains, 2 truth
    assert "test reason" in text and "precision_A" in text and "scan.h5" in text
    assert "http://" not in text and "https://" not in text  # self-contained


def test_report_leaves_out_what_the_run_did_not_produce(tmp_path):
    minimal = Results({"/components/maps": np.ones((2, 4, 4), np.float32), "/labels": np.zeros((4, 4), np.int32)}, {"seed": 0})
    text = render_html(minimal)
    assert "<h2>Components and clusters</h2>" in text
    assert "<h2>Ground truth</h2>" not in text and "<h2>Grains</h2>" not in text


def test_kselect_figures_show_every_k_and_each_metric():
    from stemnmf.report.figures import fig_iqa, fig_kselect_patterns

    results = synthetic_results()
    fig = fig_kselect_patterns(results)
    assert len(fig.subfigs) == 3  # k = 3, 4, 5
    assert [sum(bool(ax.images) for ax in sub.axes) for sub in fig.subfigs] == [3, 4, 5]
    iqa = fig_iqa(results)
    assert len(iqa.axes) >= 8  # four matrices (plus colour bars) and four most-similar curves
    curve_axes = [ax for ax in iqa.axes if ax.get_xlabel() == "k"]
    assert len(curve_axes) == 4 and all(ax.lines[1].get_ydata()[0] in (0.9, 30.0, 0.05, 0.2) for ax in curve_axes)


def test_merging_figure_shows_every_restart_and_the_winner():
    from stemnmf.report.figures import fig_merging

    fig = fig_merging(synthetic_results())
    scree, rounds, errors = fig.axes
    assert [list(line.get_ydata()) for line in rounds.lines] == [[9, 8], [9, 7], [8, 7]]
    assert rounds.lines[1].get_color() == "C3" and rounds.lines[0].get_color() == "0.6"  # restart 1 is kept
    assert errors.collections[1].get_offsets().tolist() == [[7.0, 1.5]]  # the kept restart: final k 7, error 1.5
    assert any(line.get_xdata()[0] == 3 for line in scree.lines[1:])  # the elbow
    assert fig_merging(Results({"/labels": np.zeros((2, 2), np.int32)}, {})) is None


def test_max_pattern_shows_ring_bounds_and_sectors():
    from stemnmf.report.figures import fig_max_pattern

    fig = fig_max_pattern(synthetic_results())
    # 2 rings x 2 bounds, and 360 / 30 = 12 sector lines
    assert len(fig.axes[0].lines) == 4 + 12
    assert "2 rings, 30° sectors" in fig.axes[0].get_title()


def test_neighbouring_labels_get_distinct_colours():
    labels = np.array([[0, 1, 2, 3, 4, 5]] * 3)
    colors = distinct_label_colors(labels, 6)
    assert len({tuple(c) for c in colors}) == 6
    for a, b in zip(range(5), range(1, 6)):
        assert np.linalg.norm(colors[a] - colors[b]) > 0.25


def test_report_cli_redraws(tmp_path, capsys):
    from stemnmf.cli import main

    save_results(synthetic_results(), tmp_path / "results.h5")
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results file" in capsys.readouterr().err


@pytest.mark.browser
def test_report_loads_in_headless_chromium_with_every_image_shown(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "make test installs chromium and chromium-driver (Debian packages)"
    save_results(synthetic_results(), tmp_path / "results.h5")
    report = write_report(tmp_path)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(report.as_uri())
        state = driver.execute_script(
            "const imgs = Array.from(document.images);"
            "return {n: imgs.length, shown: imgs.filter(i => i.complete && i.naturalWidth > 0).length,"
            " title: document.title};"
        )
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert state["n"] == 15 and state["shown"] == state["n"]
    assert state["title"].startswith("stemnmf report")
    assert errors == []
