"""The report's explorer: maps you click to see each position's pattern, weights, cluster and region.

:func:`explorer_html` turns a :class:`~stemnmf.io.Results` into one HTML
section: the data embedded as base64 of little-endian arrays in a JSON
script element, and the script and style of ``assets/`` inlined. Nothing is
fetched: the page works offline and its Content-Security-Policy
(:data:`CSP`) forbids every request.

What is embedded (the size rule is that of :mod:`stemnmf.io.navigator`):

* maps (sy, sx), every position: virtual bright/dark field, mean intensity,
  each component map (uint8, each on its own min..max), clusters and regions
  (int32 labels), the overlap ratio (float32, so that the threshold slider is
  exact), orientations coloured by IPF-Z (RGB) and phases when the results
  hold them;
* the navigator's pattern stack as stored (uint8 log codes, each pattern on
  its own scale, which the explorer puts back on one scale for the scan), the
  clusters' mean and representative patterns binned to the same size (uint8
  log codes, each on its own scale), rings and sectors of the features in binned
  detector coordinates, the matched templates' spots when present, and the
  Bragg disks found at every position the navigator keeps (BD runs; at most
  :data:`MAX_DISKS_SHOWN` strongest per position, detector pixels x 8 as uint16);
* the region table (every row).
"""

from __future__ import annotations

import base64
import colorsys
import json
import math
from importlib import resources

import numpy as np
from matplotlib import colormaps

from stemnmf.features import detector_coordinates
from stemnmf.io import Results
from stemnmf.io.navigator import bin_pattern_stack, quantise_log
from stemnmf.report.figures import distinct_label_colors

__all__ = ["CSP", "COLORMAPS", "explorer_html", "explorer_data", "ipf_z_colors", "ipf_key", "asset"]

#: Content-Security-Policy of the report: inline script and style, data: images, no request of any kind.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"

#: Label maps with more labels than this get hues by label id instead of the neighbour-aware colouring.
MAX_GREEDY_LABELS = 64

#: Most disks (the strongest) drawn per position: bounds the report at about 64 bytes per navigator position.
MAX_DISKS_SHOWN = 16

#: Colour maps offered (all perceptually uniform; viridis and cividis are colour-blind safe).
COLORMAPS = ("viridis", "cividis", "magma", "gray")


def asset(name: str) -> str:
    """The text of a file in ``stemnmf/report/assets``."""
    return resources.files("stemnmf.report").joinpath("assets", name).read_text(encoding="utf-8")


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode("ascii")


def _get(results, path):
    return results[path] if path in results else None


def _continuous(name: str, image, cmap: str, unit: str = "") -> dict | None:
    if image is None:
        return None
    image = np.nan_to_num(np.asarray(image, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(image.min()), float(image.max())
    span = high - low if high > low else 1.0
    codes = np.rint((image - low) / span * 255).astype(np.uint8)
    return {"name": name, "kind": "continuous", "dtype": "u8", "data": _b64(codes, "u1"), "min": low, "max": high,
            "cmap": cmap, "unit": unit}


def _labels(name: str, labels, names=None) -> dict | None:
    if labels is None:
        return None
    labels = np.asarray(labels, np.int32)
    n = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 1
    if n <= MAX_GREEDY_LABELS:
        colors = distinct_label_colors(labels, n)
    else:  # many labels: golden-ratio hues at three lightness levels (the greedy colouring is quadratic in n)
        ids = np.arange(n)
        colors = np.array([colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, (0.4, 0.55, 0.7)[i % 3], 0.8) for i in ids])
    colors = np.rint(colors * 255).astype(int).tolist()
    return {"name": name, "kind": "labels", "dtype": "i32", "data": _b64(labels, "i4"), "n": n, "colors": colors,
            "names": names or [str(i) for i in range(n)]}


def ipf_z_colors(quaternions: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of the beam direction (sample z) in the crystal frame, cubic m-3m IPF key.

    Quaternions (..., 4) (w, x, y, z) rotate crystal into sample coordinates;
    the beam direction in the crystal frame is ``R^T z``. Its absolute, sorted
    components (h <= k <= l) lie in the standard triangle [001]-[101]-[111]
    coloured red-green-blue.
    """
    q = np.asarray(quaternions, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    # third row of R (crystal -> sample) is R^T z
    v = np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1)
    h, k, l = np.moveaxis(np.sort(np.abs(v), axis=-1), -1, 0)
    red = l - k
    green = k - h
    blue = h * math.sqrt(3)
    rgb = np.stack([red, green, blue], axis=-1)
    rgb /= np.maximum(rgb.max(axis=-1, keepdims=True), 1e-12)
    return np.sqrt(np.clip(rgb, 0, 1))


def ipf_key(side: int = 64) -> np.ndarray:
    """The IPF-Z colour key (side, side, 3) uint8: the standard triangle in stereographic projection, white outside.

    [001] at the bottom left, [101] at the bottom right, [111] at the top.
    """
    extent = math.sqrt(2) - 1  # stereographic x of [101]
    u = (np.arange(side) + 0.5) / side * extent
    X, Y = np.meshgrid(u, u[::-1] * 0.9)  # up to y 0.373 > 0.366, the height of [111]
    norm = 1 + X**2 + Y**2
    v = np.stack([2 * X / norm, 2 * Y / norm, (1 - X**2 - Y**2) / norm], axis=-1)
    inside = (v[..., 2] >= v[..., 0]) & (v[..., 0] >= v[..., 1])
    h, k, l = v[..., 1], v[..., 0], v[..., 2]
    rgb = np.stack([l - k, k - h, h * math.sqrt(3)], axis=-1)
    rgb = np.sqrt(np.clip(rgb / np.maximum(rgb.max(axis=-1, keepdims=True), 1e-12), 0, 1))
    rgb[~inside] = 1.0
    return np.rint(rgb * 255).astype(np.uint8)


def _orientation_map(results) -> dict | None:
    """IPF-Z colours per position from per-position, per-region or per-component orientations."""
    sources = [("/orientations/positions", None), ("/orientations/regions", "/regions/labels"),
               ("/orientations/components", "/labels")]
    for path, index_path in sources:
        quaternions = _get(results, path)
        if quaternions is None or (index_path and index_path not in results):
            continue
        quaternions = np.asarray(quaternions, np.float64)
        if index_path is None:
            rgb = ipf_z_colors(quaternions.reshape(*quaternions.shape[:-1], 4))
            if rgb.ndim == 2:  # stored flat (n_positions, 4)
                rgb = rgb.reshape(*results["/labels"].shape, 3)
        else:
            index = np.asarray(results[index_path])
            colors = ipf_z_colors(quaternions)
            rgb = np.zeros((*index.shape, 3))
            valid = (index >= 0) & (index < len(colors))
            rgb[valid] = colors[index[valid]]
        codes = np.rint(rgb * 255).astype(np.uint8)
        return {"name": f"orientation (IPF-Z, cubic key; {path.rsplit('/', 1)[-1]})", "kind": "rgb", "dtype": "u8",
                "data": _b64(codes, "u1"), "key_image": _b64(ipf_key(), "u1"), "key_side": 64}
    return None


def _phase_map(results) -> dict | None:
    """Phase index per position from per-position, per-region or per-component phases, named by /orientations/phases."""
    sources = [("/orientations/positions_phase", None), ("/orientations/regions_phase", "/regions/labels"),
               ("/orientations/components_phase", "/labels")]
    for path, index_path in sources:
        phase = _get(results, path)
        if phase is None or (index_path and index_path not in results):
            continue
        phase = np.asarray(phase, np.int32)
        if index_path is not None:
            index = np.asarray(results[index_path])
            valid = (index >= 0) & (index < len(phase))
            phase = np.where(valid, phase[np.clip(index, 0, len(phase) - 1)], -1)
        entry = _labels(f"phase ({path.rsplit('/', 1)[-1].split('_')[0]})", phase)
        names = _get(results, "/orientations/phases")
        names = [str(n) for n in np.atleast_1d(names)] if names is not None else []
        if len(names) >= entry["n"]:
            entry["names"] = names[: entry["n"]]
        return entry
    return None


def _maps(results) -> list[dict]:
    maps = [
        _continuous("virtual bright field", _get(results, "/navigator/virtual_bf"), "gray"),
        _continuous("virtual dark field (annular)", _get(results, "/navigator/virtual_df"), "gray"),
        _continuous("mean intensity", _get(results, "/summary/mean_image"), "gray"),
        _labels("clusters (argmax component)", _get(results, "/labels")),
        _labels("regions", _get(results, "/regions/labels")),
        _continuous("overlap ratio (second / largest weight)", _get(results, "/overlap/ratio"), "cividis"),
    ]
    if "/overlap/ratio" in results:
        maps.append({"name": "overlap at threshold (slider)", "kind": "overlap"})
    component_maps = _get(results, "/components/maps")
    if component_maps is not None:
        for i, image in enumerate(component_maps):
            entry = _continuous(f"component {i}", image, "viridis", "weight")
            entry["component"] = i
            maps.append(entry)
    maps.append(_orientation_map(results))
    maps.append(_phase_map(results))
    return [m for m in maps if m is not None]


def _pattern_stack(stack, side: int) -> dict | None:
    """Patterns (n, qy, qx) binned to about ``side`` pixels, each quantised on its own log scale."""
    if stack is None or len(stack) == 0:
        return None
    stack = np.asarray(stack, np.float32)
    factor = max(1, math.ceil(max(stack.shape[1:]) / side))
    binned = bin_pattern_stack(stack, factor)
    codes, scales = quantise_log(binned)
    return {"shape": list(codes.shape), "data": _b64(codes, "u1"), "scales": scales.astype(float).tolist(), "bin": factor}


def _overlay(results, factor: int) -> dict:
    """Ring bounds and sector lines of the features, in binned navigator pixel coordinates (y, x)."""
    rings = _get(results, "/features/rings")
    origin = _get(results, "/features/origin")
    if rings is None or origin is None or len(rings) == 0:
        return {}
    settings = _get(results, "/features/settings")
    settings = json.loads(str(settings)) if settings is not None else {}
    ellipse = settings.get("ellipse")
    theta = np.linspace(0, 360, 121)
    circles = []
    for r0, r1 in np.asarray(rings, float):
        for r in (r0, r1):
            qy, qx = detector_coordinates(r, theta, origin, ellipse)
            circles.append(np.round(np.stack([qy, qx], -1) / factor, 2).tolist())
    lines = []
    width = float(settings.get("sector_width") or 0)
    if width > 0:
        inner, outer = float(np.min(rings)), float(np.max(rings))
        offset = float(settings.get("sector_offset") or 0)
        for angle in np.arange(offset, offset + 360, max(width, 360 / 72)):
            qy, qx = detector_coordinates(np.array([inner, outer]), angle, origin, ellipse)
            lines.append(np.round(np.stack([qy, qx], -1) / factor, 2).tolist())
    return {"rings": circles, "sectors": lines}


def _spots(results, factor: int) -> dict:
    """Matched templates' spots (qy, qx in detector pixels, NaN-padded) per region or component, binned."""
    out = {}
    for level in ("regions", "components"):
        spots = _get(results, f"/orientations/spots/{level}")
        if spots is not None:
            spots = np.asarray(spots, np.float64)[..., :2] / factor
            out[level] = [[p for p in row.round(2).tolist() if all(math.isfinite(v) for v in p)] for row in spots]
    return out


def _disks(results, stride: int) -> dict | None:
    """Disks found at the navigator's positions (y s, x s): counts (ny, nx) uint8 and (qy, qx) x 8 as uint16, strongest first."""
    disks = _get(results, "/features/bd/disks")
    if disks is None:
        return None
    kept = np.asarray(disks[::stride, ::stride, :MAX_DISKS_SHOWN, :2], np.float64)
    found = np.isfinite(kept).all(axis=-1)  # disks are packed strongest first, NaN after
    counts = found.sum(axis=-1).astype(np.uint8)
    coords = np.clip(np.rint(kept[found] * 8), 0, 65535).astype(np.uint16)
    return {"shape": list(counts.shape), "counts": _b64(counts, "u1"), "coords": _b64(coords, "u2")}


def _region_table(results) -> dict | None:
    table = _get(results, "/regions/table")
    if table is None or table.dtype.names is None:
        return None
    columns = list(table.dtype.names)
    rows = []
    for row in table:
        values = []
        for name in columns:
            value = row[name]
            if isinstance(value, (np.floating, float)):
                value = float(value) if np.isfinite(value) else None
            elif isinstance(value, (np.integer, int, np.bool_)):
                value = int(value)
            else:
                value = str(value)
            values.append(value)
        rows.append(values)
    return {"columns": columns, "rows": rows}


def _colormap_luts() -> dict:
    lut = {}
    for name in COLORMAPS:
        rgb = colormaps[name](np.linspace(0, 1, 256))[:, :3]
        lut[name] = _b64(np.rint(rgb * 255).astype(np.uint8), "u1")
    return lut


def explorer_data(results: Results) -> dict | None:
    """Everything the explorer shows, as a JSON-ready dict; None when there is no map to show."""
    maps = _maps(results)
    if not maps:
        return None
    first = _get(results, "/labels")
    if first is None:
        first = _get(results, "/components/maps")[0] if "/components/maps" in results else None
    scan = list(np.shape(first)) if first is not None else None
    data = {"scan": scan, "maps": maps, "colormaps": _colormap_luts()}
    patterns = _get(results, "/navigator/patterns")
    side = 32
    factor = 1
    if patterns is not None:
        side = max(patterns.shape[2:])
        factor = int(results["/navigator/bin"])
        data["navigator"] = {"shape": list(patterns.shape), "stride": int(results["/navigator/stride"]), "bin": factor,
                             "scales": _b64(results["/navigator/scale"], "f4"),
                             "data": _b64(patterns, "u1")}
    if data["scan"] is None and patterns is not None:
        data["scan"] = list(np.shape(results["/navigator/virtual_bf"]))
    clusters = {}
    for key, path in (("representative", "/components/representative_patterns"), ("mean", "/components/mean_patterns")):
        stack = _pattern_stack(_get(results, path), side)
        if stack is not None:
            clusters[key] = stack
    data["clusters"] = clusters
    data["overlay"] = _overlay(results, factor) if patterns is not None else {}
    data["spots"] = _spots(results, factor) if patterns is not None else {}
    data["disks"] = _disks(results, int(results["/navigator/stride"])) if patterns is not None else None
    data["regions"] = _region_table(results)
    thresholds = _get(results, "/overlap/thresholds")
    if "/overlap/ratio" in results:
        data["overlap"] = {"ratio": _b64(results["/overlap/ratio"], "f4"),
                           "thresholds": [] if thresholds is None else [float(t) for t in thresholds]}
    return data


def explorer_html(results: Results) -> str:
    """The explorer section (HTML with its data, script and style inlined); '' when there is nothing to explore."""
    data = explorer_data(results)
    if data is None:
        return ""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        f"<style>{asset('explorer.css')}</style>\n"
        + asset("explorer.html")
        + f'\n<script type="application/json" id="stemnmf-data">{payload}</script>\n'
        + f"<script>{asset('explorer.js')}</script>\n"
    )
