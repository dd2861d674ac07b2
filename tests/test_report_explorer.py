"""The explorer's data, without a browser: IPF colours by hand, what is embedded, and what is not."""

import base64
import json
import re

import numpy as np

from stemnmf.io import Results
from stemnmf.report import render_html
from stemnmf.report.explorer import explorer_data, ipf_key, ipf_z_colors


def _rotation_about(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    half = np.radians(degrees) / 2
    return np.array([np.cos(half), *(np.sin(half) * axis)])


def test_ipf_z_colours_of_the_three_corners_and_their_symmetric_equivalents():
    red, green, blue = [1, 0, 0], [0, 1, 0], [0, 0, 1]
    cases = [
        (np.array([1.0, 0, 0, 0]), red),  # beam along [001]
        (_rotation_about([1, 0, 0], 90), red),  # along [0-10] or [010]: cubic-equivalent to [001]
        (_rotation_about([0, 1, 0], -45), green),  # along [101]
        (_rotation_about([0, 0, 1], 30) * -1, red),  # q and -q are the same rotation; about the beam: still [001]
        (_rotation_about([1, -1, 0], np.degrees(np.arccos(1 / np.sqrt(3)))), blue),  # along [111]
    ]
    for q, expected in cases:
        np.testing.assert_allclose(ipf_z_colors(q), expected, atol=1e-7)
    key = ipf_key(32)
    assert key.shape == (32, 32, 3) and key.dtype == np.uint8
    key = key.astype(int)
    assert key[-1, 0, 0] == 255 and key[-1, 0, 1:].max() < 60  # [001] at the bottom left: red
    assert key[-1, -1, 1] == 255 and key[-1, -1, [0, 2]].max() < 60  # [101] at the bottom right: green
    coloured = (key != 255).any(axis=-1)
    top = np.argwhere(coloured)[0]  # the triangle's top is [111]: blue
    assert key[tuple(top)][2] == 255 and key[tuple(top)][:2].max() < 60
    assert not coloured[0, 0] and not coloured[0, -1]  # outside the triangle: white


def test_explorer_data_without_a_navigator_and_with_many_regions():
    rng = np.random.default_rng(3)
    regions = np.arange(40 * 50).reshape(40, 50) // 10  # 200 regions
    results = Results({"/components/maps": rng.random((2, 40, 50)).astype(np.float32),
                       "/labels": np.zeros((40, 50), np.int32), "/regions/labels": regions.astype(np.int32)})
    data = explorer_data(results)
    assert "navigator" not in data and data["scan"] == [40, 50]
    names = [m["name"] for m in data["maps"]]
    assert names == ["clusters (argmax component)", "regions", "component 0", "component 1"]
    region_map = data["maps"][1]
    assert region_map["n"] == 200 and len({tuple(c) for c in region_map["colors"]}) > 100
    decoded = np.frombuffer(base64.b64decode(region_map["data"]), "<i4").reshape(40, 50)
    np.testing.assert_array_equal(decoded, regions)
    component = data["maps"][2]
    codes = np.frombuffer(base64.b64decode(component["data"]), np.uint8).reshape(40, 50)
    maps = results["/components/maps"][0]
    np.testing.assert_allclose(component["min"] + codes / 255 * (component["max"] - component["min"]), maps,
                               atol=(maps.max() - maps.min()) / 510 + 1e-7)


def test_found_disks_are_stored_compactly_and_embedded_at_the_navigators_positions():
    from stemnmf.features import FeatureDescription

    sy, sx, most = 4, 4, 20
    disks = np.full((sy * sx, most, 3), np.nan, np.float32)
    disks[0, :18] = [[10 + i, 20 + 0.5 * i, 100 - i] for i in range(18)]  # 18 disks, strongest first
    for p in range(2, sy * sx):  # position 1 has none
        disks[p, :2] = [[5.25, 6.75, 50.0], [30.0, 31.0, 25.0]]
    columns = np.zeros(0, dtype=[("representation", "U8")])
    description = FeatureDescription("bd", columns, {}, np.zeros(0), np.zeros(0), np.zeros(2), disks=disks,
                                     n_disks=np.zeros((sy, sx), np.int32))
    stored = description.to_results()
    compact = stored["/features/bd/disks"]
    assert compact.shape == (sy, sx, 18, 3) and compact.dtype == np.float16  # padded to the most found, not 20
    assert stored["/features/bd/disks_intensity"] == 100.0
    np.testing.assert_allclose(compact[0, 0, :, :2].astype(float), disks[0, :18, :2], atol=0.02)
    np.testing.assert_allclose(compact[0, 0, :, 2].astype(float), (100 - np.arange(18)) / 100, rtol=1e-3)
    assert np.isnan(compact[0, 1].astype(float)).all() and np.isnan(compact[1, 1, 2:].astype(float)).all()
    results = Results({**stored, "/labels": np.zeros((sy, sx), np.int32),
                       "/navigator/patterns": np.zeros((2, 2, 8, 8), np.uint8), "/navigator/scale": np.ones((2, 2, 2)),
                       "/navigator/stride": np.int64(2), "/navigator/bin": np.int64(4)})
    embedded = explorer_data(results)["disks"]
    counts = np.frombuffer(base64.b64decode(embedded["counts"]), np.uint8).reshape(2, 2)
    # kept positions (0, 0), (0, 2), (2, 0), (2, 2): 18 disks capped at the 16 strongest, then 2 each
    np.testing.assert_array_equal(counts, [[16, 2], [2, 2]])
    coords = np.frombuffer(base64.b64decode(embedded["coords"]), "<u2").reshape(-1, 2) / 8
    expected = np.concatenate([disks[0, :16, :2], np.tile([[5.25, 6.75], [30.0, 31.0]], (3, 1))])
    np.testing.assert_allclose(coords, expected, atol=0.07)
    assert explorer_data(Results({k: v for k, v in results.items() if "bd" not in k}))["disks"] is None


def test_the_page_names_no_address_and_forbids_every_request():
    results = Results({"/components/maps": np.ones((2, 4, 4), np.float32), "/labels": np.zeros((4, 4), np.int32)})
    text = render_html(results)
    assert re.search(r"https?:|//cdn|<link|src=\"(?!data:)", text) is None
    assert "default-src 'none'" in text and '<section id="explore"' in text
    payload = re.search(r'<script type="application/json" id="stemnmf-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(payload)["scan"] == [4, 4]
    assert '<section id="explore"' not in render_html(results, explorer=False)
