"""The "Orientations" section of the report: IPF-Z map with its colour key, phase map, boundaries.

Drawn from the ``/orientations`` datasets alone. The IPF-Z colour of a cubic
crystal is that of the crystal direction along the beam reduced to the
standard triangle [001]-[101]-[111] (red, green, blue at the corners); other
crystal systems are coloured by the same rule applied to the direction's
absolute coordinates (a simplified key, stated on the figure).
"""

from __future__ import annotations

import html

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from stemnmf.crystal.rotations import quaternions_to_matrices
from stemnmf.crystal.workflow import ambiguous_regions

__all__ = ["ipf_z_colors", "fig_orientation_map", "fig_phase_map", "fig_boundary_map", "boundary_table_html"]

_BOUNDARY_COLORS = {"Σ3": "red", "Σ9": "blue", "low-angle": "0.6", "high-angle": "black", "phase": "orange"}


def _direction_colors(directions) -> np.ndarray:
    """RGB (..., 3) of crystal directions (..., 3) in the cubic standard-triangle key."""
    d = np.sort(np.abs(np.asarray(directions, dtype=np.float64)), axis=-1)  # a <= b <= c
    a, b, c = d[..., 0], d[..., 1], d[..., 2]
    rgb = np.stack([c - b, b - a, a * np.sqrt(3)], axis=-1)
    rgb = np.clip(rgb, 0, None)
    peak = rgb.max(axis=-1, keepdims=True)
    return np.divide(rgb, peak, out=np.zeros_like(rgb), where=peak > 0) ** 0.5


def ipf_z_colors(quaternions) -> np.ndarray:
    """IPF-Z colours (..., 3) of orientations (..., 4) that rotate crystal into sample coordinates."""
    matrices = quaternions_to_matrices(quaternions)
    beam_in_crystal = matrices[..., 2, :]  # R^T z: the third row of R
    return _direction_colors(beam_in_crystal)


def _orientation_map(results):
    """Per-position quaternions, phase ids (-1 outside) and the region labels."""
    if "/orientations/positions" in results:
        q = np.asarray(results["/orientations/positions"])
        return q, np.asarray(results["/orientations/positions_phase"]), None
    if "/orientations/regions" not in results or "/regions/maps" not in results:
        return None
    maps = np.asarray(results["/regions/maps"])
    if maps.shape[0] == 0:
        return None
    labels = np.where(maps.max(axis=0) > 0, maps.argmax(axis=0), -1)
    quaternions = np.asarray(results["/orientations/regions"])
    q = np.zeros((*labels.shape, 4))
    q[..., 0] = 1.0
    q[labels >= 0] = quaternions[labels[labels >= 0]]
    phase = np.full(labels.shape, -1)
    phase[labels >= 0] = np.asarray(results["/orientations/regions_phase"])[labels[labels >= 0]]
    return q, phase, labels


def _triangle_key(ax) -> None:
    """The cubic IPF colour key: the standard triangle in stereographic projection."""
    n = 120
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    # directions (x, y, 1) with 0 <= y <= x <= 1 cover [001]-[101]-[111]
    directions = np.stack([u, u * v, np.ones_like(u)], axis=-1)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    px = directions[..., 0] / (1 + directions[..., 2])
    py = directions[..., 1] / (1 + directions[..., 2])
    ax.scatter(px.ravel(), py.ravel(), c=_direction_colors(directions).reshape(-1, 3), s=4, marker="s", linewidths=0)
    for label, d in (("001", (0, 0, 1)), ("101", (1, 0, 1)), ("111", (1, 1, 1))):
        d = np.asarray(d, float) / np.linalg.norm(d)
        ax.annotate(label, (d[0] / (1 + d[2]), d[1] / (1 + d[2])), fontsize=8, ha="center", va="bottom")
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("IPF-Z key (cubic)", fontsize=9)


def fig_orientation_map(results) -> Figure | None:
    """Orientation map coloured by the crystal direction along the beam (IPF-Z), with its colour key."""
    found = _orientation_map(results)
    if found is None:
        return None
    q, phase, _ = found
    rgb = ipf_z_colors(q)
    rgb[phase < 0] = 1.0
    fig = Figure(figsize=(7.5, 3.6))
    ax, key = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("IPF-Z (white: not indexed)", fontsize=9)
    _triangle_key(key)
    fig.tight_layout()
    return fig


def fig_phase_map(results) -> Figure | None:
    """Phase of every position (from its region or its own pattern) and the match score."""
    found = _orientation_map(results)
    if found is None or "/orientations/phases" not in results:
        return None
    _, phase, labels = found
    names = [str(n) for n in np.atleast_1d(results["/orientations/phases"])]
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    colors = ["white", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    cmap = ListedColormap(colors[: len(names) + 1])
    image = ax.imshow(phase + 1, cmap=cmap, vmin=-0.5, vmax=len(names) + 0.5, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, ticks=range(len(names) + 1))
    bar.ax.set_yticklabels(["none", *names])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("phase", fontsize=9)
    fig.tight_layout()
    return fig


def fig_boundary_map(results) -> Figure | None:
    """Region boundaries coloured by type: Σ3 red, Σ9 blue, low-angle grey, high-angle black, phase orange."""
    found = _orientation_map(results)
    if found is None or "/orientations/boundaries" not in results:
        return None
    q, phase, labels = found
    if labels is None:
        return None
    table = results["/orientations/boundaries"]
    kinds = {(int(r["region_a"]), int(r["region_b"])): str(r["type"]) for r in table}
    rgb = ipf_z_colors(q) * 0.35 + 0.65
    rgb[labels < 0] = 1.0
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    ax.imshow(rgb, interpolation="nearest")
    for axis in (0, 1):
        a = labels[:-1, :] if axis == 0 else labels[:, :-1]
        b = labels[1:, :] if axis == 0 else labels[:, 1:]
        for i, j in zip(*np.nonzero((a != b) & (a >= 0) & (b >= 0))):
            pair = (min(a[i, j], b[i, j]), max(a[i, j], b[i, j]))
            color = _BOUNDARY_COLORS.get(kinds.get(pair, "high-angle"), "black")
            if axis == 0:
                ax.plot([j - 0.5, j + 0.5], [i + 0.5, i + 0.5], color=color, lw=1.5)
            else:
                ax.plot([j + 0.5, j + 0.5], [i - 0.5, i + 0.5], color=color, lw=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("boundaries", fontsize=9)
    fig.tight_layout()
    return fig


def _second_crystals(results, names, r: int) -> list[str]:
    """Per region: the phase, quaternion and share of its second crystal when fitted as a sum of two, else ''."""
    if "/orientations/regions_second_phase" not in results:
        return [""] * r
    phase = np.asarray(results["/orientations/regions_second_phase"])
    q = np.asarray(results["/orientations/regions_second"])
    share = np.asarray(results["/orientations/regions_second_share"])
    return [
        f"{html.escape(names[phase[i]])} ({', '.join(f'{v:.4f}' for v in q[i])}), share {share[i]:.2f}" if phase[i] >= 0 else ""
        for i in range(r)
    ]


def boundary_table_html(results, max_rows: int = 200) -> str:
    """HTML tables of the region orientations and of the boundaries between touching regions."""
    if "/orientations/regions" not in results:
        return ""
    names = [str(n) for n in np.atleast_1d(results["/orientations/phases"])]
    q = np.asarray(results["/orientations/regions"])
    phase = np.asarray(results["/orientations/regions_phase"])
    score = np.asarray(results["/orientations/regions_score"])
    confidence = np.asarray(results["/orientations/regions_confidence"])
    second = _second_crystals(results, names, len(q))
    why = {int(line.split(":", 1)[0]): line.split(":", 1)[1].strip() for line in ambiguous_regions(results)}
    rows = [
        f"<tr><td>{r}</td><td>{html.escape(names[phase[r]])}</td><td>{', '.join(f'{v:.4f}' for v in q[r])}</td>"
        f"<td>{score[r]:.3f}</td><td>{confidence[r]:.3f}</td><td>{second[r]}</td>"
        f"<td>{'AMBIGUOUS: ' + html.escape(why[r]) if r in why else ''}</td></tr>"
        for r in range(min(len(q), max_rows))
    ]
    out = (
        "<h3>Region orientations</h3><table><tr><th>region</th><th>phase</th><th>quaternion (w, x, y, z)</th>"
        "<th>score</th><th>confidence</th><th>second crystal (overlap)</th><th>ambiguous</th></tr>" + "".join(rows) + "</table>"
    )
    if "/orientations/boundaries" in results and len(results["/orientations/boundaries"]):
        table = results["/orientations/boundaries"]
        rows = [
            f"<tr><td>{b['region_a']}</td><td>{b['region_b']}</td><td>{b['length']}</td><td>{b['angle']:.2f}</td>"
            f"<td>[{b['axis_x']:.3f}, {b['axis_y']:.3f}, {b['axis_z']:.3f}]</td><td>{html.escape(str(b['type']))}</td></tr>"
            for b in table[:max_rows]
        ]
        out += (
            "<h3>Boundaries</h3><table><tr><th>region a</th><th>region b</th><th>length (positions)</th>"
            "<th>misorientation (°)</th><th>axis (crystal)</th><th>type</th></tr>" + "".join(rows) + "</table>"
        )
    return out
