"""Figures of the calibration section of the report, drawn from ``/calibration/...`` of a results file.

Each function takes a :class:`~stemnmf.io.Results` and returns a matplotlib
Figure, or None when the run recorded nothing to draw.
"""

from __future__ import annotations

import json
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

__all__ = ["fig_calibration_quality", "fig_origin_maps", "fig_calibration_mask", "fig_radial_profiles"]


def _value(results, path):
    return results[path] if path in results else None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _display(pattern) -> np.ndarray:
    pattern = np.nan_to_num(np.asarray(pattern, dtype=np.float64))
    return np.log1p(np.clip(pattern - np.percentile(pattern, 1), 0, None))


def _quality_lines(results) -> tuple[list[str], bool]:
    lines = []
    method = _value(results, "/calibration/origin_method")
    if method is not None:
        lines.append(f"origin: {_text(method)}")
    choice = _value(results, "/calibration/origin_choice")
    if choice is not None:
        lines.append(f"  why: {_text(choice)}")
    rms = _value(results, "/calibration/quality/origin_rms")
    if rms is not None:
        radius = _value(results, "/calibration/quality/disk_radius")
        inliers = _value(results, "/calibration/quality/origin_inlier_fraction")
        lines.append(
            f"origin fit residual: {float(rms):.2f} px rms"
            + (f" (disk radius {float(radius):.1f} px)" if radius is not None else "")
            + (f", {100 * float(inliers):.0f} % inliers" if inliers is not None else "")
        )
    jitter = _value(results, "/calibration/origin_jitter/ratio")
    if jitter is not None:
        residual = np.asarray(_value(results, "/calibration/origin_jitter/residual_sd"), dtype=np.float64)
        noise = np.asarray(_value(results, "/calibration/origin_jitter/noise_sd"), dtype=np.float64)
        followed = bool(int(_value(results, "/calibration/origin_jitter/followed")))
        lines.append(
            f"origin scatter {'/'.join(f'{v:.3f}' for v in residual)} px (qy/qx), noise "
            f"{'/'.join(f'{v:.3f}' for v in noise)} px: origins follow "
            + ("the measured jitter" if followed else "the surface")
        )
    ratio = _value(results, "/calibration/ellipse_axis_ratio")
    if ratio is not None:
        angle = float(_value(results, "/calibration/ellipse")[2])
        lines.append(
            f"ellipse a/b = {float(ratio):.4f} +- {float(_value(results, '/calibration/ellipse_axis_ratio_std')):.4f}, "
            f"angle {math.degrees(angle):.1f} +- {math.degrees(float(_value(results, '/calibration/ellipse_angle_std'))):.1f} deg"
        )
    rejected = _value(results, "/calibration/ellipse_rejected")
    if rejected is not None:
        a, b, angle, ratio_std, _, significance = (float(v) for v in rejected)
        lines.append(
            f"ellipse not applied: a/b = {a / b:.4f} +- {ratio_std:.4f} at {math.degrees(angle):.1f} deg is "
            f"{significance:.1f} sd from a circle"
        )
    masked = _value(results, "/calibration/quality/masked_fraction")
    if masked is not None:
        lines.append(f"masked: {100 * float(masked):.1f} % of the detector")
    stop = _value(results, "/calibration/beam_stop_pixels")
    if stop is not None and int(stop):
        lines.append(f"beam stop: {int(stop)} px masked ({_text(_value(results, '/calibration/beam_stop_source'))})")
    settings = _value(results, "/features/settings")
    bd = json.loads(_text(settings)).get("bd") if settings is not None else None
    if bd:
        why = bd.get("template_reason")
        lines.append(f"BD probe template: {bd.get('template')}, disk radius {float(bd.get('disk_radius', 0)):.2f} px"
                     + (f" ({why})" if why else ""))
    reliable = _value(results, "/calibration/quality/reliable")
    ok = reliable is None or bool(int(reliable))
    if not ok:
        problems = [_text(p) for p in np.atleast_1d(_value(results, "/calibration/quality/problems"))]
        lines = ["CALIBRATION UNRELIABLE: the maps may be meaningless", *[f"  {p}" for p in problems], *lines]
    return lines, ok


def fig_calibration_quality(results) -> Figure | None:
    """How the origin was found and how accurate the calibration is (red when it failed its checks)."""
    lines, ok = _quality_lines(results)
    if not lines:
        return None
    fig = Figure(figsize=(7.5, 0.35 * len(lines) + 0.6))
    fig.text(0.02, 0.95, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9,
             color="black" if ok else "#b00000", weight="normal" if ok else "bold", wrap=True)  # fmt: skip
    if not ok:
        fig.patch.set_facecolor("#ffe8e8")
    return fig


def fig_origin_maps(results) -> Figure | None:
    """Origin over the scan: measured (per position, or per block for 'symmetry'), the fitted surface, their difference."""
    measured = _value(results, "/calibration/origins_measured")
    fitted = _value(results, "/calibration/origin_fit/fitted")
    if measured is None:
        return None
    if fitted is None:
        fitted = _value(results, "/calibration/origins")
    panels = [("measured", measured)]
    if fitted is not None:
        panels += [("fitted", fitted), ("measured - fitted", np.asarray(measured) - np.asarray(fitted))]
    fig = Figure(figsize=(2.6 * len(panels), 4.8))
    axes = fig.subplots(2, len(panels), squeeze=False)
    reference = np.asarray(panels[min(1, len(panels) - 1)][1], dtype=np.float64)
    for col, (title, values) in enumerate(panels):
        values = np.asarray(values, dtype=np.float64)
        for row, name in enumerate(("qy", "qx")):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if "-" in title:  # residuals: symmetric, outliers saturate
                limit = max(0.5, float(np.nanpercentile(np.abs(values[..., row]), 95)))
                limits = dict(vmin=-limit, vmax=limit, cmap="coolwarm")
            else:  # measured and fitted on the same scale, that of the fit (+- 1 px)
                limits = dict(vmin=np.nanmin(reference[..., row]) - 1, vmax=np.nanmax(reference[..., row]) + 1)
            shown = ax.imshow(values[..., row], **limits)
            ax.set_title(f"{title}: {name}", fontsize=8)
            fig.colorbar(shown, ax=ax, shrink=0.75)
    return fig


def fig_calibration_mask(results) -> Figure | None:
    """The mean pattern with the masked pixels (beam stop, bad pixels) in red, the origin and the fitted ellipse."""
    pattern = _value(results, "/summary/mean_pattern")
    if pattern is None:
        return None
    fig = Figure(figsize=(4.8, 4.5))
    ax = fig.subplots()
    ax.imshow(_display(pattern), cmap="gray")
    mask = _value(results, "/calibration/mask")
    if mask is not None and np.shape(mask) == np.shape(pattern):
        overlay = np.zeros((*np.shape(mask), 4))
        overlay[np.asarray(mask, bool)] = (1.0, 0.1, 0.1, 0.6)
        ax.imshow(overlay)
    origin = _value(results, "/calibration/origin")
    if origin is not None:
        ax.plot(origin[1], origin[0], "+", color="cyan", markersize=12)
    ellipse = _value(results, "/calibration/ellipse")
    centre = _value(results, "/calibration/ellipse_center")
    if ellipse is not None and centre is not None:
        a, b, angle = (float(v) for v in ellipse)
        ax.add_patch(Ellipse((centre[1], centre[0]), 2 * a, 2 * b, angle=math.degrees(angle), fill=False,
                             color="yellow", linewidth=1))  # fmt: skip
    ax.set_title("mask (red), origin (+), ellipse", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _radial_profile(pattern, centre, ellipse=None, mask=None):
    qy, qx = pattern.shape
    yy, xx = np.indices((qy, qx), dtype=np.float64)
    dy, dx = yy - centre[0], xx - centre[1]
    if ellipse is not None:
        a, b, angle = ellipse
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        radius = np.hypot(along * math.sqrt(b / a), across * math.sqrt(a / b))  # area-preserving
    else:
        radius = np.hypot(dy, dx)
    valid = np.ones(pattern.shape, bool) if mask is None else ~np.asarray(mask, bool)
    bins = np.round(radius[valid]).astype(np.int64)
    counts = np.bincount(bins)
    sums = np.bincount(bins, weights=np.asarray(pattern, np.float64)[valid])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.arange(len(counts)), sums / counts


def fig_radial_profiles(results) -> Figure | None:
    """Azimuthal mean of the mean pattern about the detector centre (before) and about the origin, ellipse corrected (after)."""
    pattern = _value(results, "/summary/mean_pattern")
    origin = _value(results, "/calibration/origin")
    if pattern is None or origin is None:
        return None
    pattern = np.asarray(pattern, dtype=np.float64)
    qy, qx = pattern.shape
    mask = _value(results, "/calibration/mask")
    mask = None if mask is None or np.shape(mask) != pattern.shape else mask
    ellipse = _value(results, "/calibration/ellipse")
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    r, before = _radial_profile(pattern, ((qy - 1) / 2.0, (qx - 1) / 2.0))
    ax.semilogy(r, np.clip(before, 1e-12, None), color="0.6", label="before: about the detector centre")
    r, after = _radial_profile(pattern, origin, None if ellipse is None else tuple(float(v) for v in ellipse), mask)
    label = "after: about the origin" + (", ellipse corrected" if ellipse is not None else "") + ", masked pixels out"
    ax.semilogy(r, np.clip(after, 1e-12, None), color="C0", label=label)
    ax.set_xlim(0, min(qy, qx) / 2)
    ax.set_xlabel("radius (px)")
    ax.set_ylabel("mean counts")
    ax.legend(fontsize=7)
    return fig
