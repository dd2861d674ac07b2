"""The calibration section of the report: figures drawn from /calibration/... alone."""

from __future__ import annotations

import math

import numpy as np

from stemnmf.io import Results
from stemnmf.report import SECTIONS, render_html
from stemnmf.report.calibration import (
    fig_calibration_mask,
    fig_calibration_quality,
    fig_origin_maps,
    fig_radial_profiles,
)


def _ring(shape, centre, a, b, angle, radius=20.0):
    yy, xx = np.indices(shape, dtype=np.float64)
    dy, dx = yy - centre[0], xx - centre[1]
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    r = np.hypot(along / a, across / b)  # radius on the ellipse of semi-axes radius a, radius b
    return 1.0 + 100.0 * np.exp(-0.5 * ((r - radius) / 0.8) ** 2)


def _results(reliable=True):
    centre, a, b, angle = (35.0, 29.0), 1.05, 1 / 1.05, math.radians(30)
    origins = np.broadcast_to(np.asarray(centre, np.float32), (4, 5, 2)).copy()
    mask = np.zeros((64, 64), np.uint8)
    mask[30:40, 25:33] = 1
    data = {
        "/summary/mean_pattern": _ring((64, 64), centre, a, b, angle).astype(np.float32),
        "/calibration/origin": np.asarray(centre),
        "/calibration/origins_measured": origins + 0.1,
        "/calibration/origin_fit/fitted": origins,
        "/calibration/origin_method": "symmetry",
        "/calibration/origin_choice": "the direct beam is behind the beam stop (masked)",
        "/calibration/mask": mask,
        "/calibration/ellipse": np.array([20 * a, 20 * b, angle]),
        "/calibration/ellipse_center": np.asarray(centre),
        "/calibration/ellipse_axis_ratio": np.float64(a / b),
        "/calibration/ellipse_axis_ratio_std": np.float64(0.001),
        "/calibration/ellipse_angle_std": np.float64(0.01),
        "/calibration/quality/reliable": np.uint8(reliable),
        "/calibration/quality/problems": np.asarray([] if reliable else ["the origins scatter by 9 px"], dtype=str),
        "/calibration/quality/origin_rms": np.float64(0.1),
        "/calibration/quality/masked_fraction": np.float64(mask.mean()),
    }
    return Results(data, {})


def test_calibration_section_is_in_the_report():
    assert "Calibration" in [title for title, _, _ in SECTIONS]
    html = render_html(_results())
    assert "<h2>Calibration</h2>" in html and html.count("<img") >= 4


def test_quality_panel_says_how_and_shouts_when_unreliable():
    text = fig_calibration_quality(_results()).texts[0].get_text()
    assert "origin: symmetry" in text and "behind the beam stop" in text and "1.1025" in text
    loud = fig_calibration_quality(_results(reliable=False)).texts[0].get_text()
    assert loud.startswith("CALIBRATION UNRELIABLE") and "scatter by 9 px" in loud


def test_radial_profile_after_calibration_is_sharper():
    fig = fig_radial_profiles(_results())
    before, after = (line.get_ydata() for line in fig.axes[0].get_lines())
    # about the right centre and with the ellipse undone the ring is one sharp peak of ~100 counts
    assert np.nanmax(after) > 80 and np.nanmax(after) > 1.5 * np.nanmax(before)


def test_maps_and_mask_figures_draw():
    assert len(fig_origin_maps(_results()).axes) >= 6
    assert fig_calibration_mask(_results()) is not None
    empty = Results({}, {})
    assert fig_origin_maps(empty) is None and fig_calibration_mask(empty) is None and fig_calibration_quality(empty) is None


def test_quality_panel_names_the_beam_stop_and_the_bd_template():
    assert "beam stop:" not in fig_calibration_quality(_results()).texts[0].get_text()
    results = _results()
    results["/calibration/beam_stop_pixels"] = np.int64(80)
    results["/calibration/beam_stop_source"] = "shadow"
    results["/features/settings"] = ('{"bd": {"template": "disks", "disk_radius": 2.6, '
                                     '"template_reason": "the direct beam is behind the mask"}}')
    text = fig_calibration_quality(results).texts[0].get_text()
    assert "beam stop: 80 px masked (shadow)" in text
    assert "BD probe template: disks, disk radius 2.60 px (the direct beam is behind the mask)" in text


def test_quality_panel_names_an_ellipse_not_applied():
    assert "not applied" not in fig_calibration_quality(_results()).texts[0].get_text()
    results = _results()
    results["/calibration/ellipse_rejected"] = np.array([21.09, 21.0, np.radians(-39.5), 0.0025, 0.3, 1.9])
    text = fig_calibration_quality(results).texts[0].get_text()
    assert "ellipse not applied: a/b = 1.0043 +- 0.0025 at -39.5 deg is 1.9 sd from a circle" in text


def test_quality_panel_says_whether_the_origins_follow_scan_jitter():
    assert "origin scatter" not in fig_calibration_quality(_results()).texts[0].get_text()
    results = _results()
    for followed in (1, 0):
        results["/calibration/origin_jitter/followed"] = np.uint8(followed)
        results["/calibration/origin_jitter/residual_sd"] = np.array([0.2, 0.19])
        results["/calibration/origin_jitter/noise_sd"] = np.array([0.009, 0.0096])
        results["/calibration/origin_jitter/ratio"] = np.array([494.0, 400.0])
        text = fig_calibration_quality(results).texts[0].get_text()
        assert "origin scatter 0.200/0.190 px (qy/qx), noise 0.009/0.010 px" in text
        assert ("follow the measured jitter" in text) == bool(followed)
        assert ("follow the surface" in text) == (not followed)
