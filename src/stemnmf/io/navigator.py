"""The navigator of a run: every position's pattern, binned and quantised, and virtual images.

The report's explorer (:mod:`stemnmf.report.explorer`) shows the pattern of
any position clicked on a map; since the report is drawn from the results
file alone, the file keeps a small copy of every pattern. It is computed in
the same pass over the data as the features (:func:`attach_navigator`) and
stored as

* ``/navigator/patterns`` (ny, nx, b, b) uint8: the pattern at scan position
  (y * s, x * s), binned by ``bin`` (mean of bin x bin detector pixels, the
  detector cropped to a multiple of ``bin``, masked pixels, NaN and negative
  values read as 0) and quantised on a log scale of its own:
  ``code = round(255 * log1p(v / f) / log1p(vmax / f))`` with
  ``f, vmax = /navigator/scale[y, x]`` (``vmax`` the pattern's largest binned
  value, ``f = vmax / 10**4``); decode with
  ``v = f * expm1(code / 255 * log1p(vmax / f))``;
* ``/navigator/scale`` (ny, nx, 2) float32: ``f, vmax`` of each pattern (1, 1 for an empty one);
* ``/navigator/stride`` () int: ``s``, the scan subsampling (1 keeps every position);
* ``/navigator/bin`` () int: the detector bin factor;
* ``/navigator/virtual_bf``, ``/navigator/virtual_df`` (sy, sx) float32: at every
  position, the sum of the detector pixels within ``bf_radius`` of the origin
  (virtual bright field) and between ``df_inner`` and ``df_outer`` (virtual
  annular dark field);
* ``/navigator/detector``: JSON with ``origin`` (qy, qx), ``bf_radius``,
  ``df_inner``, ``df_outer`` in detector pixels.

Each chunk's patterns are quantised where they are read, so the pass
gathers only the uint8 stack (and one scale per pattern), never the patterns
in float.

Size rule (:func:`navigator_geometry`): the stack holds at most
``budget`` bytes (default :data:`NAVIGATOR_BUDGET`, 12 MiB; a run gives it
the smaller of that and a sixteenth of its memory budget). The detector
is binned to at most :data:`MAX_SIDE` pixels a side; when the whole scan
does not fit, to at most :data:`MIN_SIDE`; when it still does not fit, the
scan is subsampled with the smallest stride ``s`` that fits. Maps (virtual
images, component maps, labels) always keep every position.
"""

from __future__ import annotations

import json
import math

import numpy as np

from stemnmf.io.dataset import Dataset4D

__all__ = [
    "NAVIGATOR_BUDGET",
    "MAX_SIDE",
    "MIN_SIDE",
    "navigator_geometry",
    "bin_pattern_stack",
    "quantise_log",
    "dequantise_log",
    "attach_navigator",
    "navigator_results",
]

#: Bytes the navigator's pattern stack may take (uint8 codes).
NAVIGATOR_BUDGET = 12 * 2**20
#: Largest side of a binned navigator pattern.
MAX_SIDE = 64
#: Side the patterns are binned down to before the scan is subsampled.
MIN_SIDE = 32
#: Dynamic range of the log quantisation (vmax / f).
LOG_RANGE = 1e4


def navigator_geometry(scan_shape, pattern_shape, budget: int = NAVIGATOR_BUDGET) -> tuple[int, int]:
    """``(bin, stride)`` of the navigator stack of a scan, by the size rule of this module.

    Examples
    --------
    >>> navigator_geometry((100, 100), (256, 256))
    (8, 1)
    >>> navigator_geometry((64, 64), (128, 128))
    (4, 1)
    >>> navigator_geometry((300, 300), (256, 256))
    (8, 3)
    """
    sy, sx = (int(v) for v in scan_shape)
    side = max(int(v) for v in pattern_shape)
    factor = max(1, math.ceil(side / MAX_SIDE))

    def size(f, s):
        qy, qx = (int(v) // f for v in pattern_shape)
        return math.ceil(sy / s) * math.ceil(sx / s) * qy * qx

    if size(factor, 1) > budget:
        factor = max(factor, math.ceil(side / MIN_SIDE))
    stride = 1
    while size(factor, stride) > budget:
        stride += 1
    return factor, stride


def bin_pattern_stack(patterns: np.ndarray, factor: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` detector pixels of patterns (..., qy, qx), cropped to a multiple.

    Masked pixels (``mask`` True), NaN and negative values count as 0.
    """
    patterns = np.array(patterns, dtype=np.float32)  # one working copy
    if mask is not None:
        patterns[..., np.asarray(mask, bool)] = 0
    np.nan_to_num(patterns, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(patterns, 0, out=patterns)
    qy, qx = patterns.shape[-2:]
    by, bx = qy // factor, qx // factor
    cropped = patterns[..., : by * factor, : bx * factor]
    shape = (*patterns.shape[:-2], by, factor, bx, factor)
    return cropped.reshape(shape).mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def quantise_log(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 codes of non-negative patterns (..., by, bx), each on a log scale of its own, and the scales.

    ``code = round(255 * log1p(v / f) / log1p(vmax / f))`` with ``vmax`` the
    pattern's largest value and ``f = vmax / 10**4``. Returns the codes and
    ``scale`` (..., 2) float32 holding ``f, vmax``; an all-zero pattern gives
    zeros and ``(1, 1)``.
    """
    values = np.maximum(np.asarray(patterns, dtype=np.float32), 0)
    vmax = values.max(axis=(-2, -1), initial=0.0)
    empty = ~(vmax > 0)
    vmax = np.where(empty, np.float32(1), vmax).astype(np.float32)
    floor = np.where(empty, np.float32(1), vmax / np.float32(LOG_RANGE)).astype(np.float32)
    span = np.where(empty, np.float32(1), np.float32(math.log1p(LOG_RANGE)))
    codes = np.log1p(values / floor[..., None, None])
    codes *= (255 / span)[..., None, None]
    codes = np.clip(np.rint(codes), 0, 255).astype(np.uint8)
    return codes, np.stack([floor, vmax], axis=-1)


def dequantise_log(codes: np.ndarray, scale) -> np.ndarray:
    """The values (float64) of :func:`quantise_log` codes (..., by, bx) with their scales (..., 2)."""
    scale = np.asarray(scale, dtype=np.float64)
    floor, vmax = scale[..., 0, None, None], scale[..., 1, None, None]
    return floor * np.expm1(np.asarray(codes, dtype=np.float64) / 255 * np.log1p(vmax / floor))


def _concatenate(a, b):
    return np.concatenate([a, b])


#: Patterns handled at a time inside a chunk (bounds the kernel's working copies).
GROUP = 16


def _navigator_kernel(block, chunk, *, factor, stride, mask, bf, df):
    """Per chunk: flat indices of the kept positions, their quantised patterns and scales, and BF/DF of every position.

    Patterns are taken 16 at a time, so the working copies stay small whatever the chunk.
    """
    own = block[chunk.own]
    rows, sx = own.shape[:2]
    flat = own.reshape(rows * sx, *own.shape[2:])
    sums = np.empty((len(flat), 2), np.float64)
    for start in range(0, len(flat), GROUP):
        group = flat[start : start + GROUP]
        sums[start : start + GROUP, 0] = np.einsum("nij,ij->n", group, bf, dtype=np.float64)
        sums[start : start + GROUP, 1] = np.einsum("nij,ij->n", group, df, dtype=np.float64)
    y = np.arange(chunk.start, chunk.stop)
    keep_rows = np.flatnonzero(y % stride == 0)
    keep_cols = np.arange(0, sx, stride)
    index = ((y[keep_rows][:, None] // stride) * math.ceil(sx / stride) + keep_cols[None, :] // stride).reshape(-1)
    kept = [(r, c) for r in keep_rows for c in keep_cols]
    codes = np.empty((len(kept), *((n // factor) for n in own.shape[2:])), np.uint8)
    scale = np.empty((len(kept), 2), np.float32)
    for start in range(0, len(kept), GROUP):
        part = kept[start : start + GROUP]
        patterns = own[[r for r, _ in part], [c for _, c in part]]
        codes[start : start + GROUP], scale[start : start + GROUP] = quantise_log(bin_pattern_stack(patterns, factor, mask))
    return index.astype(np.int64), codes, scale, sums[:, 0], sums[:, 1]


def _detector_masks(pattern_shape, origin, probe_radius):
    qy, qx = pattern_shape
    if origin is None or not np.all(np.isfinite(np.asarray(origin, float))):
        origin = ((qy - 1) / 2, (qx - 1) / 2)
    oy, ox = (float(v) for v in np.asarray(origin, float).reshape(-1)[:2])
    radius = float(probe_radius) if probe_radius is not None and np.isfinite(probe_radius) and probe_radius > 0 \
        else min(qy, qx) / 16
    edge = min(oy, ox, qy - 1 - oy, qx - 1 - ox)
    geometry = {"origin": [oy, ox], "bf_radius": 1.1 * radius, "df_inner": 2.0 * radius,
                "df_outer": max(2.0 * radius + 1, 0.95 * edge)}
    yy, xx = np.mgrid[:qy, :qx]
    r = np.hypot(yy - oy, xx - ox)
    bf = (r <= geometry["bf_radius"]).astype(np.float32)
    df = ((r >= geometry["df_inner"]) & (r <= geometry["df_outer"])).astype(np.float32)
    return bf, df, geometry


def attach_navigator(dataset: Dataset4D, engine, *, origin=None, probe_radius=None,
                     budget: int = NAVIGATOR_BUDGET):
    """Let the engine's next pass over ``dataset`` also gather the navigator (no pass of its own).

    Parameters
    ----------
    origin : (2,) array-like, optional
        Direct-beam position (qy, qx) in detector pixels; default the detector centre.
    probe_radius : float, optional
        Radius of the direct disk in pixels; default a sixteenth of the detector.
    budget : int
        Bytes the pattern stack may take (see the module's size rule).

    Returns
    -------
    callable
        Call it after the pass: it returns the ``/navigator/*`` datasets
        (running a pass of its own if none came).
    """
    factor, stride = navigator_geometry(dataset.scan_shape, dataset.pattern_shape, budget)
    bf, df, geometry = _detector_masks(dataset.pattern_shape, origin, probe_radius)
    handle = engine.attach(_navigator_kernel, dataset, mode="reduce", combine=_concatenate,
                           kwargs=dict(factor=factor, stride=stride, mask=dataset.mask, bf=bf, df=df),
                           desc="navigator", dtype=np.float32)
    sy, sx = dataset.scan_shape

    def finish() -> dict:
        index, codes, scale, bf_sum, df_sum = handle.result()
        return navigator_results(index, codes, scale, bf_sum.reshape(sy, sx), df_sum.reshape(sy, sx),
                                 factor=factor, stride=stride, geometry=geometry, scan_shape=(sy, sx))

    return finish


def navigator_results(index, codes, scale, virtual_bf, virtual_df, *, factor, stride, geometry, scan_shape) -> dict:
    """The ``/navigator/*`` datasets from the gathered pieces (see the module's docstring).

    ``codes`` (n, b, b) and ``scale`` (n, 2) from :func:`quantise_log` of the
    kept positions, ``index`` their flat indices on the (ny, nx) grid.
    """
    sy, sx = scan_shape
    ny, nx = math.ceil(sy / stride), math.ceil(sx / stride)
    index = np.asarray(index, np.int64)
    stack = np.zeros((ny * nx, *codes.shape[1:]), np.uint8)
    stack[index] = codes
    scales = np.ones((ny * nx, 2), np.float32)
    scales[index] = scale
    return {
        "/navigator/patterns": stack.reshape(ny, nx, *codes.shape[1:]),
        "/navigator/scale": scales.reshape(ny, nx, 2),
        "/navigator/stride": np.int64(stride),
        "/navigator/bin": np.int64(factor),
        "/navigator/virtual_bf": np.asarray(virtual_bf, np.float32),
        "/navigator/virtual_df": np.asarray(virtual_df, np.float32),
        "/navigator/detector": json.dumps(geometry),
    }
