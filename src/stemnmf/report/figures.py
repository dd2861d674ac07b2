"""Figures of a run, each drawn from a Results object alone.

Every function takes a :class:`stemnmf.io.Results` and returns a matplotlib
Figure, or None when the run did not produce what the figure shows.
Figures are built with the object-oriented API (no pyplot state), so they
can be drawn from any thread.
"""

from __future__ import annotations

import colorsys
import json
import math

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.patches import Patch
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from stemnmf.features import detector_coordinates
from stemnmf.kselect.plots import plot_iqa, plot_loss, plot_most_similar

__all__ = [
    "distinct_label_colors",
    "fig_mean_image",
    "fig_max_pattern",
    "fig_bragg_vector_map",
    "fig_kloss",
    "fig_iqa",
    "fig_component_maps",
    "fig_label_map",
    "fig_overlap",
    "fig_cluster_patterns",
    "fig_nsd",
    "fig_region_boxplots",
    "fig_scores",
    "fig_truth",
]

PANEL = 2.2  # inches per image panel

#: Okabe & Ito's colour-blind-safe qualitative palette (black left out: it marks "none"), and a grey.
COLORBLIND_SAFE = np.array([(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
                            (213, 94, 0), (204, 121, 167), (153, 153, 153)]) / 255.0


def _get(results, path):
    return results[path] if path in results else None


def _grid(n: int, max_cols: int = 6) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _image_axes(fig: Figure, rows: int, cols: int):
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def _pattern_display(pattern: np.ndarray) -> np.ndarray:
    """Diffraction patterns span decades: show them on a log scale."""
    pattern = np.asarray(pattern, dtype=np.float64)
    low = np.percentile(pattern, 1)
    return np.log1p(np.clip(pattern - low, 0, None))


def _relative_key(fig, axes, cmap: str, label: str = "log intensity, each pattern on its own range"):
    """A colour bar from low to high for images shown on their own scales."""
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), ax=axes, ticks=[0, 1], shrink=0.6, pad=0.02)
    bar.ax.set_yticklabels(["low", "high"], fontsize=7)
    bar.set_label(label, fontsize=7)
    return bar


def distinct_label_colors(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """RGB colours (n_labels, 3) such that labels sharing a border differ strongly.

    Up to 8 labels take the colour-blind-safe palette of Okabe & Ito
    (:data:`COLORBLIND_SAFE`, black left for "none"); more take evenly spaced
    hues at two lightness levels. Labels are coloured
    greedily, most-connected first, each taking the free colour farthest (in
    RGB) from the colours of its neighbours in the map.
    """
    n_labels = max(int(n_labels), 1)
    if n_labels <= len(COLORBLIND_SAFE):
        palette = COLORBLIND_SAFE[:n_labels]
    else:
        palette = []
        for i in range(n_labels):
            hue = (i * 0.618033988749895) % 1.0
            lightness = 0.45 if i % 2 == 0 else 0.62
            palette.append(colorsys.hls_to_rgb(hue, lightness, 0.85))
        palette = np.array(palette)
    adjacency = np.zeros((n_labels, n_labels), dtype=np.int64)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        mask = (a != b) & (a >= 0) & (b >= 0) & (a < n_labels) & (b < n_labels)
        np.add.at(adjacency, (a[mask], b[mask]), 1)
    adjacency = adjacency + adjacency.T
    order = np.argsort(-adjacency.sum(axis=1), kind="stable")
    colors = np.zeros((n_labels, 3))
    free = list(range(n_labels))
    assigned = np.zeros(n_labels, dtype=bool)
    for label in order:
        neighbours = np.flatnonzero((adjacency[label] > 0) & assigned)
        if len(neighbours) == 0:
            choice = free[0]
        else:
            distances = [np.min(np.linalg.norm(colors[neighbours] - palette[c], axis=1)) for c in free]
            choice = free[int(np.argmax(distances))]
        colors[label] = palette[choice]
        free.remove(choice)
        assigned[label] = True
    return colors


def fig_mean_image(results) -> Figure | None:
    image = _get(results, "/summary/mean_image")
    if image is None:
        return None
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    shown = ax.imshow(image, cmap="gray")
    ax.set_title("mean intensity per probe position")
    ax.set_xlabel("x (position)")
    ax.set_ylabel("y (position)")
    fig.colorbar(shown, ax=ax, shrink=0.8)
    return fig


def _feature_settings(results) -> dict:
    settings = _get(results, "/features/settings")
    return json.loads(str(settings)) if settings is not None else {}


def fig_max_pattern(results) -> Figure | None:
    """The brightest value of each detector pixel over the scan, with the rings and sectors of the features."""
    pattern = _get(results, "/features/max_pattern")
    if pattern is None:
        pattern = _get(results, "/summary/max_pattern")
    if pattern is None:
        return None
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    shown = ax.imshow(_pattern_display(np.where(np.isfinite(pattern), pattern, 0)), cmap="magma")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="log(1 + intensity above the 1st percentile)")
    settings = _feature_settings(results)
    rings = _get(results, "/features/rings")
    origin = _get(results, "/features/origin")
    if rings is not None and origin is not None and len(rings):
        ellipse = settings.get("ellipse")
        theta = np.linspace(0, 360, 361)
        for k, (r0, r1) in enumerate(np.asarray(rings, dtype=float)):
            for r in (r0, r1):
                qy, qx = detector_coordinates(r, theta, origin, ellipse)
                ax.plot(qx, qy, color=f"C{k % 10}", lw=0.9)
        width = float(settings.get("sector_width") or 0)
        if width > 0:
            inner, outer = float(np.min(rings)), float(np.max(rings))
            offset = float(settings.get("sector_offset") or 0)
            for angle in np.arange(offset, offset + 360, width):
                qy, qx = detector_coordinates(np.array([inner, outer]), angle, origin, ellipse)
                ax.plot(qx, qy, color="w", lw=0.3, alpha=0.6)
        ax.set_title(f"maximum pattern (log): {len(rings)} rings, {width:g}° sectors", fontsize=9)
    else:
        ax.set_title("maximum pattern (log)", fontsize=9)
    ax.set_xlim(-0.5, pattern.shape[1] - 0.5)
    ax.set_ylim(pattern.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def fig_bragg_vector_map(results) -> Figure | None:
    """Where Bragg disks were found, summed over the scan."""
    bvm = _get(results, "/features/bd/bragg_vector_map")
    if bvm is None:
        return None
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    shown = ax.imshow(np.log1p(np.clip(bvm, 0, None)), cmap="inferno")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="log(1 + disks found)")
    ax.set_title("Bragg vector map (log)")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def fig_kloss(results) -> Figure | None:
    """Decision level 1: the K-component loss against k, its knee, the range of interest and the chosen k."""
    k = _get(results, "/kselect/k")
    loss = _get(results, "/kselect/loss")
    if k is None or loss is None or len(k) < 2:
        return None
    knee = _get(results, "/kselect/knee")
    chosen = _get(results, "/kselect/chosen_k")
    elbow = _get(results, "/kselect/pca/elbow")
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    plot_loss(ax, k, loss, knee=None if knee is None or int(knee) <= 0 else int(knee), k_range=_get(results, "/kselect/range"),
              chosen_k=None if chosen is None else int(chosen), pca_elbow=None if elbow is None else int(elbow))
    ax.set_title("decision level 1: K-component loss")
    return fig


def fig_iqa(results) -> Figure | None:
    """Decision level 2: the four IQA matrices between the chosen k's components, and each metric's most similar pair against k."""
    chosen = _get(results, "/kselect/chosen_k")
    if chosen is None:
        return None
    metrics = [m for m in ("ssim", "psnr", "gmsd", "mdsi") if f"/kselect/iqa/{m}/{int(chosen)}" in results]
    if not metrics:
        return None
    range_k = _get(results, "/kselect/range_k")
    thresholds = _get(results, "/kselect/thresholds")
    thresholds = json.loads(str(thresholds)) if thresholds is not None else {}
    curves = range_k is not None and all(f"/kselect/most_similar/{m}" in results for m in metrics)
    fig = Figure(figsize=(3.6 * len(metrics), 6.6 if curves else 3.4))
    axes = fig.subplots(2 if curves else 1, len(metrics), squeeze=False)
    for column, metric in enumerate(metrics):
        plot_iqa(axes[0, column], results[f"/kselect/iqa/{metric}/{int(chosen)}"], metric=metric)
        if curves:
            plot_most_similar(axes[1, column], range_k, results[f"/kselect/most_similar/{metric}"], metric=metric,
                              threshold=thresholds.get(metric), chosen_k=int(chosen))
    fig.suptitle(f"decision level 2: similarity between components (k = {int(chosen)}) and the most similar pair per k")
    fig.tight_layout()
    return fig


def fig_kselect_patterns(results) -> Figure | None:
    """The component patterns of every k in the range of interest, one row per k."""
    range_k = _get(results, "/kselect/range_k")
    if range_k is None:
        return None
    ks = [int(k) for k in range_k if f"/kselect/patterns/{int(k)}" in results]
    if not ks:
        return None
    fig = Figure(figsize=(min(1.1 * max(ks), 16), 1.6 * len(ks) * 1.1), layout="constrained")
    subfigures = np.atleast_1d(fig.subfigures(len(ks), 1))
    for subfigure, k in zip(subfigures, ks):
        patterns = np.asarray(results[f"/kselect/patterns/{k}"])
        axes = subfigure.subplots(1, max(ks), squeeze=False)[0]
        for i, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if i < len(patterns):
                ax.imshow(_pattern_display(patterns[i]), cmap="inferno")
            else:
                ax.axis("off")
        subfigure.supylabel(f"k = {k}", fontsize=9)
    _relative_key(fig, list(subfigures[-1].axes), "inferno")
    return fig


def fig_merging(results) -> Figure | None:
    """Iterative merging NMF: the PCA scree and its elbow, k over the merge rounds of every restart, and each restart's error."""
    history = _get(results, "/decompose/merge_history")
    if history is None:
        return None
    restarts = json.loads(str(history))
    final = _get(results, "/decompose/final_history")
    final = json.loads(str(final)) if final is not None else []
    errors = _get(results, "/decompose/restart_errors")
    best = _get(results, "/decompose/best_restart")
    best = None if best is None else int(best)
    scree = _get(results, "/decompose/scree/explained_variance_ratio")
    fig = Figure(figsize=(12, 3.6))
    ax_scree, ax_rounds, ax_errors = fig.subplots(1, 3)
    if scree is not None:
        scree = np.asarray(scree, dtype=float)
        ax_scree.semilogy(np.arange(1, len(scree) + 1), scree, "o-", ms=3, color="C0")
        elbow = _get(results, "/decompose/scree/elbow")
        if elbow is not None:
            ax_scree.axvline(int(elbow), color="C1", ls="--", label=f"elbow = {int(elbow)}")
            ax_scree.legend(fontsize=8)
        ax_scree.set_xlabel("principal component")
        ax_scree.set_ylabel("explained variance ratio")
    ax_scree.set_title("PCA scree (initial k = factor x elbow)", fontsize=9)
    for i, run in enumerate(restarts):
        ks = [int(entry[0]) for entry in run]
        winner = i == best
        ax_rounds.plot(range(len(ks)), ks, "-", color="C3" if winner else "0.6", lw=2 if winner else 0.8,
                       alpha=1.0 if winner else 0.6, zorder=3 if winner else 1,
                       label="best restart" if winner else None)
    if final:
        ks = [int(entry[0]) for entry in final]
        ax_rounds.plot(range(len(ks)), ks, "o--", color="C2", ms=4, label="best, refitted on every position")
    ax_rounds.set_xlabel("merge round")
    ax_rounds.set_ylabel("components k")
    ax_rounds.set_title("merging: k per round of each restart", fontsize=9)
    if best is not None or final:
        ax_rounds.legend(fontsize=8)
    if errors is not None:
        errors = np.asarray(errors, dtype=float)
        final_k = [int(run[-1][0]) if run else 0 for run in restarts]
        ax_errors.scatter(final_k[: len(errors)], errors, s=14, color="0.5")
        if best is not None and best < len(errors):
            ax_errors.scatter([final_k[best]], [errors[best]], s=40, color="C3", label="kept (lowest error)")
            ax_errors.legend(fontsize=8)
        ax_errors.set_xlabel("final k of the restart")
        ax_errors.set_ylabel("reconstruction error")
    ax_errors.set_title("restarts: the lowest error is kept", fontsize=9)
    fig.tight_layout()
    return fig


def fig_component_maps(results) -> Figure | None:
    maps = _get(results, "/components/maps")
    if maps is None:
        return None
    rows, cols = _grid(len(maps))
    fig = Figure(figsize=(PANEL * cols, PANEL * rows + 0.4), layout="constrained")
    axes = _image_axes(fig, rows, cols)
    for i, ax in enumerate(axes.flat):
        if i >= len(maps):
            ax.axis("off")
            continue
        shown = ax.imshow(maps[i], cmap="viridis")
        fig.colorbar(shown, ax=ax, shrink=0.7, pad=0.02).ax.tick_params(labelsize=6)
        ax.set_title(f"component {i}", fontsize=9)
    fig.suptitle("component maps (columns of W)")
    return fig


def fig_label_map(results) -> Figure | None:
    labels = _get(results, "/labels")
    if labels is None:
        return None
    n = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 1
    colors = distinct_label_colors(labels, n)
    rgb = np.ones((*labels.shape, 3))
    valid = labels >= 0
    rgb[valid] = colors[labels[valid]]
    rgb[~valid] = 0.0
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title("clusters (argmax component; black = none)")
    handles = [
        ax.scatter([], [], color=colors[i], marker="s", label=str(i)) for i in range(n) if np.any(labels == i)
    ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title="component")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def fig_overlap(results) -> Figure | None:
    ratio = _get(results, "/overlap/ratio")
    if ratio is None:
        return None
    thresholds = _get(results, "/overlap/thresholds")
    thresholds = [] if thresholds is None else list(thresholds)
    n = 1 + len(thresholds) + (1 if thresholds else 0)
    rows, cols = _grid(n, 4)
    fig = Figure(figsize=(PANEL * 1.2 * cols, PANEL * 1.2 * rows + 0.4))
    axes = _image_axes(fig, rows, cols)
    flat = list(axes.flat)
    im = flat[0].imshow(ratio, cmap="cividis", vmin=0, vmax=1)
    flat[0].set_title("second / largest weight", fontsize=9)
    fig.colorbar(im, ax=flat[0], shrink=0.7)
    for i, t in enumerate(thresholds):
        flat[1 + i].imshow(ratio >= t, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        flat[1 + i].set_title(f"overlap at {t:.0%} ({np.mean(ratio >= t):.1%} of positions)", fontsize=8)
    if thresholds:
        combined = np.zeros(ratio.shape, dtype=float)
        for t in sorted(thresholds):
            combined[ratio >= t] = t
        level_colors = [colormaps["cividis"](0.25 + 0.75 * i / max(1, len(thresholds) - 1)) for i in range(len(thresholds))]
        cmap = ListedColormap(["#000000", *level_colors])
        levels = np.searchsorted(sorted(thresholds), combined, side="right") * (combined > 0)
        flat[1 + len(thresholds)].imshow(levels, cmap=cmap, vmin=0, vmax=len(thresholds), interpolation="nearest")
        flat[1 + len(thresholds)].set_title("combined: colour = highest threshold met", fontsize=8)
        flat[1 + len(thresholds)].legend(handles=[Patch(color=level_colors[i], label=f"≥ {t:.0%}") for i, t in enumerate(sorted(thresholds))],
                                         fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        flat[1].legend(handles=[Patch(facecolor="w", edgecolor="k", label="at or above"), Patch(color="k", label="below")],
                       fontsize=6, loc="upper right")
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle("overlap maps")
    return fig


def fig_cluster_patterns(results) -> Figure | None:
    """Each cluster's mean calibrated pattern beside its representative pattern."""
    mean = _get(results, "/components/mean_patterns")
    rep = _get(results, "/components/representative_patterns")
    stacks = [(name, s) for name, s in (("mean", mean), ("representative", rep)) if s is not None]
    if not stacks:
        return None
    k = len(stacks[0][1])
    per_row = max(1, 6 // len(stacks))  # clusters per row, each with its panels side by side
    rows = math.ceil(k / per_row)
    cols = per_row * len(stacks)
    fig = Figure(figsize=(PANEL * 0.9 * cols + 0.8, PANEL * rows + 0.4), layout="constrained")
    axes = _image_axes(fig, rows, cols)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(k):
        for j, (name, stack) in enumerate(stacks):
            ax = axes[i // per_row, (i % per_row) * len(stacks) + j]
            ax.axis("on")
            ax.imshow(_pattern_display(stack[i]), cmap="magma")
            ax.set_title(f"cluster {i}: {name}", fontsize=8)
    _relative_key(fig, list(axes.flat), "magma")
    fig.suptitle("per-cluster patterns (log)")
    return fig


def fig_nsd(results) -> Figure | None:
    """Noise standard deviation of each cluster's patterns."""
    nsd = _get(results, "/analysis/nsd")
    if nsd is None:
        return None
    nsd = np.atleast_2d(np.asarray(nsd, dtype=float))
    names = _get(results, "/analysis/nsd_labels")
    names = [str(n) for n in names] if names is not None else [f"set {i}" for i in range(nsd.shape[0])]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    width = 0.8 / nsd.shape[0]
    x = np.arange(nsd.shape[1])
    for i, row in enumerate(nsd):
        ax.bar(x + i * width, row, width, label=names[i])
    ax.set_xlabel("cluster")
    ax.set_ylabel("NSD")
    ax.set_xticks(x + 0.4 - width / 2, [str(i) for i in x])
    ax.legend(fontsize=8)
    ax.set_title("noise standard deviation per cluster")
    return fig


def fig_region_boxplots(results) -> Figure | None:
    table = _get(results, "/regions/table")
    if table is None or len(table) == 0:
        return None
    columns = [(c, unit) for c, unit in (("area_nm2", "nm²"), ("max_feret_nm", "nm"), ("dissimilarity", "")) if c in table.dtype.names]
    fig = Figure(figsize=(3 * len(columns), 3.5))
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, (name, unit) in zip(axes, columns):
        values = np.asarray(table[name], dtype=float)
        values = values[np.isfinite(values)]
        ax.boxplot(values, widths=0.5)
        ax.scatter(np.random.default_rng(0).normal(1, 0.04, len(values)), values, s=6, alpha=0.5)
        ax.set_title(f"{name.replace('_', ' ')}" + (f" ({unit})" if unit else ""), fontsize=9)
        ax.set_xticks([])
    fig.suptitle(f"{len(table)} refined regions")
    return fig


def fig_scores(results) -> Figure | None:
    tpr = _get(results, "/scores/tpr_g")
    if tpr is None:
        return None
    panels = [("TPR_G", tpr)]
    for name in ("precision_g", "iou_g"):
        values = _get(results, f"/scores/{name}")
        if values is not None:
            panels.append((name.replace("_g", "_G").replace("precision", "precision").replace("iou", "IoU"), values))
    fig = Figure(figsize=(3.2 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, values) in zip(axes, panels):
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        ax.hist(values, bins=np.linspace(0, 1, 11), color="C2", edgecolor="k")
        ax.axvline(values.mean() if len(values) else 0, color="C3", label=f"mean {values.mean() if len(values) else 0:.3f}")
        ax.set_xlabel(name)
        ax.set_ylabel("clusters")
        ax.legend(fontsize=8)
    fig.suptitle("scores against ground truth")
    return fig


def fig_truth(results) -> Figure | None:
    truth = _get(results, "/truth/labels")
    if truth is None:
        return None
    count = truth.sum(axis=0)
    dominant = np.where(count > 0, np.argmax(truth, axis=0), -1)
    fig = Figure(figsize=(8, 3.8))
    axes = fig.subplots(1, 2)
    colors = distinct_label_colors(dominant, truth.shape[0])
    rgb = np.zeros((*dominant.shape, 3))
    rgb[dominant >= 0] = colors[dominant[dominant >= 0]]
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title(f"ground truth: {truth.shape[0]} grains (first in beam)", fontsize=9)
    if truth.shape[0] <= 12:
        axes[0].legend(handles=[Patch(color=colors[i], label=f"grain {i}") for i in range(truth.shape[0])],
                       fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    im = axes[1].imshow(count, cmap="viridis", interpolation="nearest")
    axes[1].set_title("grains along the beam", fontsize=9)
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
