"""The report's explorer driven in headless Chromium: clicks, table, slider, no request, a screenshot per section.

One browser and one report serve every test here (module fixtures); answers
come from the results file the report was drawn from, read with h5py.
"""

import csv
import io
import json
import shutil
import time

import h5py
import matplotlib
import matplotlib.image
import numpy as np
import pytest

from stemnmf.io import Results, save_results
from stemnmf.report import write_report

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SY, SX, K, Q = 12, 10, 3, 16


def explorer_results() -> Results:
    """A small run with a navigator subsampled by 2 and every map the explorer shows; values seeded."""
    rng = np.random.default_rng(7)
    labels = np.zeros((SY, SX), np.int32)
    labels[:, 4:] = 1
    labels[6:, 7:] = 2
    labels[0, 0] = -1
    regions = labels.copy()
    regions[:6, :4] = 3  # cluster 0 split into two regions
    regions[0, 0] = -1
    table = np.zeros(4, dtype=[("region", "i4"), ("component", "i4"), ("area_nm2", "f4"), ("max_feret_nm", "f4")])
    table["region"] = [0, 1, 2, 3]
    table["component"] = [0, 1, 2, 0]
    table["area_nm2"] = [np.count_nonzero(regions == r) * 0.25 for r in range(4)]
    table["max_feret_nm"] = [4.5, 1.5, 3.5, 2.5]
    ratio = rng.random((SY, SX)).astype(np.float32)
    vmax = rng.uniform(100, 1000, (SY // 2, SX // 2))
    vmax[2, 3] = 1000.0  # the scan's brightest pattern
    ratio[0, :5] = [0.749, 0.751, 0.899, 0.9, 0.951]  # around the thresholds
    datasets = {
        "/components/maps": rng.random((K, SY, SX)).astype(np.float32),
        "/components/mean_patterns": rng.random((K, Q, Q)).astype(np.float32),
        "/components/representative_patterns": rng.random((K, Q, Q)).astype(np.float32),
        "/labels": labels,
        "/overlap/ratio": ratio,
        "/overlap/thresholds": np.array([0.75, 0.85, 0.95], np.float32),
        "/regions/labels": regions,
        "/regions/table": table,
        "/summary/mean_image": rng.random((SY, SX)).astype(np.float32),
        "/navigator/patterns": rng.integers(0, 256, (SY // 2, SX // 2, Q // 2, Q // 2)).astype(np.uint8),
        "/navigator/scale": np.stack([vmax / 1e4, vmax], axis=-1).astype(np.float32),
        "/navigator/stride": np.int64(2),
        "/navigator/bin": np.int64(2),
        "/navigator/virtual_bf": rng.random((SY, SX)).astype(np.float32),
        "/navigator/virtual_df": rng.random((SY, SX)).astype(np.float32),
        "/navigator/detector": json.dumps({"origin": [8, 8], "bf_radius": 2, "df_inner": 4, "df_outer": 7}),
        "/features/origin": np.array([8.0, 8.0]),
        "/features/rings": np.array([[3.0, 5.0]]),
        "/features/settings": json.dumps({"sector_width": 30.0, "sector_offset": 0.0, "ellipse": None}),
    }
    # clusters 0, 1, 2 indexed with the beam along crystal [001], [101], [111]: red, green, blue in the IPF-Z key
    half = np.radians(-45) / 2
    tilt = np.arccos(1 / np.sqrt(3)) / 2
    datasets["/orientations/components"] = np.array([
        [1.0, 0, 0, 0], [np.cos(half), 0, np.sin(half), 0],
        [np.cos(tilt), np.sin(tilt) / np.sqrt(2), -np.sin(tilt) / np.sqrt(2), 0]])
    datasets["/orientations/phases"] = np.array(["Ag", "Si"])
    datasets["/orientations/components_phase"] = np.array([0, 1, 0], np.int32)
    datasets["/orientations/spots/components"] = np.array([[[4.0, 4.0], [12.0, 12.0]], [[4.0, 12.0], [np.nan, np.nan]],
                                                           [[8.0, 2.0], [np.nan, np.nan]]])
    return Results(datasets, {"seed": 0, "input": "scan.h5"})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explorer")
    save_results(explorer_results(), folder / "results.h5")
    return write_report(folder)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "make test installs chromium and chromium-driver (Debian packages)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, report):
    browser.get(report.as_uri())
    assert browser.execute_script("return document.body.dataset.explorer") == "ready"
    yield browser
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []


def canvas_rgb(driver, canvas_id) -> np.ndarray:
    pixels = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return [c.height, c.width, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];",
        canvas_id,
    )
    height, width, values = pixels
    return np.asarray(values, np.uint8).reshape(height, width, 4)[..., :3]


def click_position(driver, y, x, scan=(SY, SX)):
    from selenium.webdriver.common.action_chains import ActionChains

    overlay = driver.find_element("id", "ex-map-overlay")
    rect = overlay.rect
    dx = (x + 0.5) * rect["width"] / scan[1] - rect["width"] / 2
    dy = (y + 0.5) * rect["height"] / scan[0] - rect["height"] / 2
    ActionChains(driver).move_to_element_with_offset(overlay, int(round(dx)), int(round(dy))).click().perform()


def choose(driver, select_id, text):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_visible_text(text)


def test_click_shows_the_positions_pattern_weights_and_cluster(page, report):
    with h5py.File(report.parent / "results.h5", "r") as h5:
        codes = h5["navigator/patterns"][()]
        maps = h5["components/maps"][()]
        labels = h5["labels"][()]
        representative = h5["components/representative_patterns"][()]
        scale = h5["navigator/scale"][()]
    # each pattern is stored on its own log scale; shown on the scan's (the brightest pattern's: f 0.1, vmax 1000)
    values = scale[..., 0, None, None] * np.expm1(codes / 255 * np.log1p(scale[..., 1, None, None] / scale[..., 0, None, None]))
    on_scan_scale = np.rint(255 * np.log1p(values / 0.1) / np.log1p(1e4))
    choose(page, "ex-pattern-cmap", "gray")  # log scale, fixed range: grey level = code on the scan's scale
    for y, x in ((6, 4), (11, 9), (1, 3)):
        click_position(page, y, x)
        shown = canvas_rgb(page, "ex-pattern-canvas")[..., 0]
        # the navigator keeps every 2nd position: the nearest kept one, halves rounded up
        nearest = (min(int(y / 2 + 0.5), SY // 2 - 1), min(int(x / 2 + 0.5), SX // 2 - 1))
        assert np.abs(shown.astype(int) - on_scan_scale[nearest]).max() <= 1
        assert page.find_element("id", "ex-pattern-canvas").get_attribute("data-position") == f"{2 * nearest[0]},{2 * nearest[1]}"
        weights = [float(li.get_attribute("data-value")) for li in page.find_elements("css selector", "#ex-weights-list li")]
        step = (maps.max(axis=(1, 2)) - maps.min(axis=(1, 2))) / 255  # maps travel as uint8 on their own range
        np.testing.assert_allclose(weights, maps[:, y, x], atol=float(step.max()) / 2 + 1e-6)
        assert page.find_element("id", "ex-cluster-title").text == f"Its cluster: {labels[y, x]}"
    # the cluster panel shows the representative pattern of the last position's cluster, binned 16 -> 8
    rep = canvas_rgb(page, "ex-cluster-rep")[..., 0].astype(float)
    expected = representative[labels[1, 3]].reshape(8, 2, 8, 2).mean(axis=(1, 3))
    assert rep.shape == (8, 8) and np.corrcoef(rep.ravel(), np.log1p(expected.ravel() / (expected.max() / 1e4)))[0, 1] > 0.99


def test_maps_scales_overlays_and_hover(page, report):
    with h5py.File(report.parent / "results.h5", "r") as h5:
        codes = h5["navigator/patterns"][()]
        maps = h5["components/maps"][()]
        labels = h5["labels"][()]
        f, vmax = h5["navigator/scale"][1, 1]
    choose(page, "ex-map", "component 1")
    rgb = canvas_rgb(page, "ex-map-canvas")
    expected = np.rint((maps[1] - maps[1].min()) / np.ptp(maps[1]) * 255) / 255
    np.testing.assert_array_equal(rgb, np.rint(matplotlib.colormaps["viridis"](expected)[..., :3] * 255))
    choose(page, "ex-map", "orientation (IPF-Z, cubic key; components)")
    rgb = canvas_rgb(page, "ex-map-canvas").astype(int)
    hand = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]])  # none, [001], [101], [111]
    assert np.abs(rgb - hand[labels + 1]).max() <= 1
    choose(page, "ex-map", "phase (components)")  # clusters 0 and 2 are Ag, 1 is Si
    rgb = canvas_rgb(page, "ex-map-canvas").astype(int)
    phase = np.array([-1, 0, 1, 0])[labels + 1]
    assert len({tuple(c) for c in rgb[phase == 0]}) == 1 and len({tuple(c) for c in rgb[phase == 1]}) == 1
    assert (rgb[phase == 0][0] != rgb[phase == 1][0]).any() and (rgb[phase == -1] == 0).all()
    # gamma scale: 255 (v / vmax)^gamma of the decoded values
    choose(page, "ex-pattern-cmap", "gray")
    choose(page, "ex-scale", "gamma")
    click_position(page, 2, 2)
    shown = canvas_rgb(page, "ex-pattern-canvas")[..., 0].astype(int)
    values = f * np.expm1(codes[1, 1] / 255 * np.log1p(vmax / f))
    assert np.abs(shown - np.rint(255 * (values / 1000) ** 0.5)).max() <= 1  # over the scan's vmax
    choose(page, "ex-scale", "log")

    def overlay_pixels(color):
        return page.execute_script(
            "const c = document.getElementById('ex-pattern-overlay'), want = arguments[0];"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 0; i < d.length; i += 4) { if (d[i + 3] > 0 && (want === null ||"
            " (Math.abs(d[i] - want[0]) < 40 && Math.abs(d[i + 1] - want[1]) < 40 && Math.abs(d[i + 2] - want[2]) < 40))) n++; }"
            "return n;", color)

    assert overlay_pixels([0, 255, 102]) > 0  # cluster 0's template spots
    page.find_element("id", "ex-spots").click()
    assert overlay_pixels([0, 255, 102]) == 0 and overlay_pixels(None) > 0  # rings stay
    page.find_element("id", "ex-rings").click()
    assert overlay_pixels(None) == 0
    # hover previews a position; leaving the map returns to the selected one
    from selenium.webdriver.common.action_chains import ActionChains

    overlay = page.find_element("id", "ex-map-overlay")
    rect = overlay.rect
    ActionChains(page).move_to_element_with_offset(overlay, int((8.5 / SX - 0.5) * rect["width"]),
                                                   int((10.5 / SY - 0.5) * rect["height"])).perform()
    assert page.find_element("id", "ex-pattern-canvas").get_attribute("data-position") == "10,8"
    ActionChains(page).move_to_element(page.find_element("tag name", "h1")).perform()
    assert page.find_element("id", "ex-pattern-canvas").get_attribute("data-position") == "2,2"


def test_region_table_sorts_filters_exports_and_links_with_the_map(page, report, downloads):
    with h5py.File(report.parent / "results.h5", "r") as h5:
        table = h5["regions/table"][()]
        regions = h5["regions/labels"][()]

    def first_column():
        return [int(td.text) for td in page.find_elements("css selector", "#ex-regions tbody tr td:first-child")]

    def header():  # area_nm2 (the table is redrawn on every sort)
        return page.find_element("css selector", "#ex-regions th[data-column='2']")

    header().click()
    assert first_column() == [int(r) for r in table["region"][np.argsort(table["area_nm2"], kind="stable")]]
    assert header().get_attribute("aria-sort") == "ascending"
    header().click()
    assert first_column() == [int(r) for r in table["region"][np.argsort(-table["area_nm2"], kind="stable")]]
    box = page.find_element("id", "ex-filter")
    box.send_keys("component=0")
    assert sorted(first_column()) == [int(r) for r in table["region"][table["component"] == 0]]
    page.find_element("id", "ex-csv").click()  # the filtered, sorted rows as a file
    for _ in range(100):
        if (downloads / "regions.csv").exists():
            break
        time.sleep(0.05)
    rows = list(csv.reader(io.StringIO((downloads / "regions.csv").read_text())))
    assert rows[0] == list(table.dtype.names) and len(rows) == 1 + np.count_nonzero(table["component"] == 0)
    for row in rows[1:]:
        stored = table[table["region"] == int(row[0])][0]
        assert [float(v) for v in row[1:]] == pytest.approx([float(stored[n]) for n in table.dtype.names[1:]], rel=1e-6)
    box.clear()
    box.send_keys("x")  # no match: an empty table, then back
    assert first_column() == [] and page.find_element("id", "ex-count").text == "0 of 4 regions"
    page.execute_script("const b = document.getElementById('ex-filter'); b.value = ''; b.dispatchEvent(new Event('input'));")
    # a row -> its region outlined on the map (magenta pixels only along that region's border)
    page.find_element("css selector", "#ex-regions tbody tr[data-region='3']").click()
    assert page.execute_script("return window.stemnmfExplorer.state.region") == 3
    overlay = page.execute_script(
        "const c = document.getElementById('ex-map-overlay');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 0; i < d.length; i += 4) { if (d[i] > 200 && d[i + 1] < 80 && d[i + 2] > 200) n++; } return [n, c.width, c.height];"
    )
    assert overlay[0] > 0
    # a position on the map -> its region's row selected
    click_position(page, 9, 8)
    selected = page.find_elements("css selector", "#ex-regions tbody tr.selected")
    assert [int(r.get_attribute("data-region")) for r in selected] == [int(regions[9, 8])]


def test_slider_redraws_the_overlap_map(page, report):
    with h5py.File(report.parent / "results.h5", "r") as h5:
        ratio = h5["overlap/ratio"][()]
    counts = {}
    for percent in (75, 90, 95):
        page.execute_script(
            "const s = document.getElementById('ex-threshold'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input'));", percent)
        rgb = canvas_rgb(page, "ex-map-canvas")
        on = np.all(rgb == [240, 228, 66], axis=-1)
        np.testing.assert_array_equal(on, ratio >= percent / 100)
        counts[percent] = int(on.sum())
    assert counts[75] > counts[90] > counts[95]
    assert page.find_element("id", "ex-threshold-value").text == "95 %"


def test_no_request_leaves_the_page_and_every_section_has_a_screenshot(page, report, tmp_path):
    text = report.read_text()
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    page.get_log("performance")  # drop what the browser did before (its new-tab page)
    page.get(report.as_uri())
    # the page loaded and exercised: clicks, hover, map changes, the table's CSV
    click_position(page, 3, 3)
    choose(page, "ex-map", "virtual bright field")
    urls = []
    for entry in page.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert urls and all(u == report.as_uri() or u.startswith("data:") for u in urls), urls
    assert page.execute_script("return performance.getEntriesByType('resource').length") == 0
    folder = tmp_path / "screenshots"
    folder.mkdir()
    headings = page.find_elements("css selector", "h2")
    assert len(headings) >= 3
    for i, heading in enumerate(headings):
        page.execute_script("arguments[0].scrollIntoView()", heading)
        path = folder / f"{i:02d}-{heading.text.replace(' ', '_')}.png"
        page.save_screenshot(str(path))
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image[..., :3].std() > 0.01  # drawn, not blank


@pytest.fixture(scope="module")
def bd_report(tmp_path_factory):
    """A whole BD run of the tiny simulated scan (12 x 12 x 48^2: navigator bin 1, stride 1)."""
    import stemnmf
    from stemnmf.simulate import simulate_to_file

    folder = tmp_path_factory.mktemp("bd")
    simulate_to_file(folder / "tiny.h5", "tiny", seed=1)
    config = {"features": {"representation": "bd"}, "nmf": {"k": 3}, "run": {"seed": 1}}
    stemnmf.run(folder / "tiny.h5", config, outdir=folder / "out")
    return folder / "out" / "report.html"


def overlay_alpha(driver) -> np.ndarray:
    height, width, values = driver.execute_script(
        "const c = document.getElementById('ex-pattern-overlay');"
        "return [c.height, c.width, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];")
    return np.asarray(values, np.uint8).reshape(height, width, 4)[..., 3]


def test_found_disks_are_drawn_over_the_clicked_pattern(browser, bd_report, report):
    browser.get(report.as_uri())  # no BD features: no disk toggle
    assert browser.find_elements("id", "ex-disks") == []
    browser.get(bd_report.as_uri())
    assert browser.execute_script("return document.body.dataset.explorer") == "ready"
    with h5py.File(bd_report.parent / "results.h5", "r") as h5:
        disks = h5["features/bd/disks"][()].astype(np.float64)
        factor, stride = int(h5["navigator/bin"][()]), int(h5["navigator/stride"][()])
        side = h5["navigator/patterns"].shape[3]
    assert stride == 1
    scan = disks.shape[:2]
    counts = np.isfinite(disks[..., 0]).sum(axis=-1)
    for box in ("ex-rings", "ex-spots"):  # only the disks on the overlay
        if browser.find_element("id", box).is_selected():
            browser.find_element("id", box).click()
    busiest = np.unravel_index(np.argmax(counts), scan)
    fewest = np.unravel_index(np.argmin(counts), scan)
    assert counts[busiest] >= 3 and counts[fewest] < counts[busiest]
    click_position(browser, *fewest, scan=scan)
    assert browser.find_element("id", "ex-pattern-overlay").get_attribute("data-disks") == str(counts[fewest])
    assert overlay_alpha(browser).any() == (counts[fewest] > 0)
    click_position(browser, *busiest, scan=scan)
    assert browser.find_element("id", "ex-pattern-canvas").get_attribute("data-position") == f"{busiest[0]},{busiest[1]}"
    n = min(int(counts[busiest]), 16)  # the explorer draws at most the 16 strongest
    assert browser.find_element("id", "ex-pattern-overlay").get_attribute("data-disks") == str(n)
    alpha = overlay_alpha(browser)
    scale = alpha.shape[1] / side
    # detector pixel q is at (q + 0.5) / bin binned pixels; one binned pixel is `scale` canvas pixels
    centres = (disks[busiest][:n, :2] + 0.5) / factor * scale
    yy, xx = np.nonzero(alpha)
    distance = np.hypot(yy[:, None] + 0.5 - centres[:, 0], xx[:, None] + 0.5 - centres[:, 1])
    nearest = distance.argmin(axis=1)
    radius = max(4, 1.2 * scale)
    assert distance.min(axis=1).max() <= radius + 2  # nothing drawn away from a stored disk
    for i, (cy, cx) in enumerate(centres):  # a ring about each stored disk
        own = nearest == i
        assert own.sum() > 10
        assert abs(yy[own].mean() + 0.5 - cy) < 1 and abs(xx[own].mean() + 0.5 - cx) < 1
    browser.find_element("id", "ex-disks").click()  # the toggle hides them
    assert not overlay_alpha(browser).any()
    assert browser.find_element("id", "ex-pattern-overlay").get_attribute("data-disks") == "0"

