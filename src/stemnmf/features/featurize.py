"""``featurize(dataset, representation)``: a Dataset4D -> (X, FeatureDescription), streaming.

At most two passes over the patterns, each through :class:`stemnmf.engine.Engine`:

1. statistics, when something must be found on the data: maximum and mean
   pattern, each pattern moved by whole pixels so its direct beam sits on the
   reference origin; they give the origin (when unknown), the direct-beam
   radius, the rings (radial profile of the maximum pattern) and the BD probe
   template;
2. features: every requested representation from one read of each pattern.
   AA and RV apply offset templates (one per sub-pixel fraction of the origin,
   cached in each process) to a window of each pattern around its origin; BD
   returns the disks of each pattern, rasterised afterwards.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
from typing import Any

import numpy as np
from scipy import ndimage

from stemnmf.engine import Engine, token
from stemnmf.errors import CalibrationError, ConfigError, DataValueError, InputError
from stemnmf.features.angular import n_sectors, radial_bins
from stemnmf.features.bragg import (
    bragg_vector_map,
    calibrated_vectors,
    find_disks,
    grid_columns,
    masked_fraction,
    probe_kernel,
    probe_template,
    rasterize_disks,
    synthetic_disk,
)
from stemnmf.features.description import FeatureDescription, make_columns
from stemnmf.features.geometry import check_ellipse, correct_offsets, edge_radius
from stemnmf.features.operators import (
    OffsetTemplate,
    Window,
    apply_windows,
    radial_bins_of,
    release_products,
    ring_sector_bins,
    window_half,
)
from stemnmf.features.polar import radial_profile
from stemnmf.features.raw import auto_bin, bin_patterns, raw_columns
from stemnmf.features.rings import beam_edge, check_rings, estimate_beam_radius, find_rings
from stemnmf.features.scaling import SCALINGS, scale_features
from stemnmf.io.dataset import Dataset4D

__all__ = ["REPRESENTATIONS", "FeatureOptions", "featurize", "find_origin", "parse_representation"]

log = logging.getLogger(__name__)

REPRESENTATIONS = ("aa", "rv", "bd", "raw")

#: Bytes of float64 working arrays per sub-batch inside a chunk.
_SUB_BATCH_BYTES = 32 * 1024**2
_STATS_BLOCK = 16  # patterns per block of the statistics pass (a block stays in cache for its sum)


@dataclasses.dataclass(frozen=True)
class FeatureOptions:
    """Options of :func:`featurize`, with their defaults (pixels are detector pixels).

    Geometry (AA, RV, ring finding)
        ``origin`` None: per-position ``dataset.origins``, else
        ``calibration.origin``, else found on the mean pattern; or (qy, qx), or
        'centre'. ``ellipse`` None: ``calibration.ellipse``; (a, b, angle); or
        False for circular. ``origin_step`` 0.1: per-position origins are
        rounded to this step to share geometry. ``subpixel`` 1: split pixels
        into subpixel x subpixel samples. ``r_step`` 1.0: radial bin width.
        ``r_min`` None: the end of the direct beam's tail (first prominent
        minimum of the maximum pattern's profile beyond the beam's half
        maximum). ``r_max`` None: largest radius whose circle stays on the
        detector for every position.
    Rings (AA)
        ``rings`` None: found (or [(r0, r1), ...] in corrected pixels).
        ``ring_smoothing`` 1 px, ``ring_prominence`` 0.05 (fraction of the
        profile's range), ``ring_noise_floor`` 8 (times the profile's noise; a
        ring must stand above both), ``ring_min_width`` 3 px.
    AA
        ``sector_width`` 5 degrees (72 per ring), ``sector_offset`` 0 degrees
        (from +qx towards +qy).
    BD
        ``template`` 'beam' (mean central beam), 'vacuum' (mean of
        ``vacuum_region``), 'synthetic' (disk of ``disk_radius``), or an image.
        ``disk_radius`` None: half-maximum radius of the mean central beam.
        ``vacuum_region``: (sy, sx) bool or (y0, y1, x0, x1). ``kernel_background``
        'annular' or 'none'. ``corr_power`` 1 (cross-correlation; 0 phase).
        ``corr_sigma`` 0. ``min_relative`` 0.001 of the strongest peak,
        ``min_absolute`` 0, ``min_snr`` 6 (noise standard deviations of the
        correlation). ``min_spacing`` None: 1.5 x disk radius (at least 3).
        ``edge`` None: disk radius + 1. ``max_disks`` 70. ``max_masked_fraction``
        0.25. ``bd_bin`` 3 px. ``bd_weight`` 'intensity' or 'count'.
        ``bd_interpolation`` 'nearest' or 'bilinear'. ``bd_include_beam`` False.
        ``bd_drop_empty`` True: drop grid bins empty at every position.
    Raw
        ``raw_bin`` 'auto' (at most 4096 features) or an int. ``raw_transform``
        None, 'log' or 'sqrt'. ``raw_masked`` True: masked pixels excluded
        (fully masked bins dropped).
    Passes
        ``statistics`` None: read the scan once more first (maximum and mean
        pattern) only when something must be found on the data (origin, rings,
        r_min, template, disk radius); True: always (the report's maximum
        pattern); False: never (an error if something must be found).
    """

    origin: Any = None
    ellipse: Any = None
    origin_step: float = 0.1
    subpixel: int = 1
    r_step: float = 1.0
    r_min: float | None = None
    r_max: float | None = None
    rings: Any = None
    ring_smoothing: float = 1.0
    ring_prominence: float = 0.05
    ring_noise_floor: float = 8.0
    ring_min_width: float = 3.0
    sector_width: float = 5.0
    sector_offset: float = 0.0
    template: Any = "beam"
    disk_radius: float | None = None
    vacuum_region: Any = None
    kernel_background: str = "annular"
    corr_power: float = 1.0
    corr_sigma: float = 0.0
    min_relative: float = 0.001
    min_absolute: float = 0.0
    min_snr: float = 6.0
    min_spacing: float | None = None
    edge: int | None = None
    max_disks: int = 70
    max_masked_fraction: float = 0.25
    bd_bin: float = 3.0
    bd_weight: str = "intensity"
    bd_interpolation: str = "nearest"
    bd_include_beam: bool = False
    bd_drop_empty: bool = True
    raw_bin: Any = "auto"
    raw_transform: str | None = None
    raw_masked: bool = True
    statistics: bool | None = None

    @classmethod
    def from_kwargs(cls, options: dict) -> FeatureOptions:
        """Options from keyword arguments.

        Raises
        ------
        ConfigError
            On an unknown option name.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(
                f"unknown feature option(s) {', '.join(unknown)}",
                f"known options: {', '.join(sorted(names))}",
            )
        return cls(**options)


def parse_representation(representation: str) -> list[str]:
    """``'aa+bd'`` -> ``['aa', 'bd']``.

    Raises
    ------
    ConfigError
        If a name is unknown or repeated.
    """
    if not isinstance(representation, str) or not representation.strip():
        raise ConfigError(f"feature representation {representation!r} is not a name", "use aa, rv, bd, raw or e.g. aa+bd")
    names = [part.strip().lower() for part in representation.split("+")]
    for name in names:
        if name not in REPRESENTATIONS:
            raise ConfigError(f"unknown feature representation {name!r}", "use aa, rv, bd, raw or a '+'-joined combination")
    if len(set(names)) != len(names):
        raise ConfigError(f"representation {representation!r} repeats a name", "list each representation once")
    return names


def find_origin(pattern, mask=None) -> tuple[float, float] | None:
    """Direct beam of a (mean) pattern: centroid of the bright region around the smoothed maximum.

    Returns None when no region stands out (the caller falls back to the centre).
    """
    img = np.asarray(pattern, dtype=np.float64)
    valid = np.ones(img.shape, bool) if mask is None else ~np.asarray(mask, bool)
    floor = float(np.median(img[valid]))
    smooth = ndimage.gaussian_filter(np.where(valid, img, floor), 1.5)
    peak = np.unravel_index(int(np.argmax(np.where(valid, smooth, -np.inf))), img.shape)
    top = float(smooth[peak])
    spread = float(np.percentile(np.abs(smooth[valid] - floor), 90))
    if not top > floor + 5 * max(spread, 1e-12):
        return None
    labels, _ = ndimage.label((smooth > floor + 0.5 * (top - floor)) & valid)
    region = labels == labels[peak]
    w = np.where(region, img - floor, 0.0).clip(min=0)
    if not w.sum() > 0:  # pragma: no cover - the peak pixel is in the region
        return None
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    return float((w * y).sum() / w.sum()), float((w * x).sum() / w.sum())


# --------------------------------------------------------------------------------------
# pass 1: statistics
# --------------------------------------------------------------------------------------


def _shift_groups(shifts):
    """Positions grouped by their whole-pixel shift: {(dy, dx): indices}."""
    if shifts is None:
        return None
    keys, inverse = np.unique(shifts, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [(int(k[0]), int(k[1]), np.flatnonzero(inverse == i)) for i, k in enumerate(keys)]


def _windows(dy, dx, qy, qx):
    """Target and source slices of out[y, x] = pattern[y + dy, x + dx]."""
    ty = slice(max(0, -dy), min(qy, qy - dy))
    tx = slice(max(0, -dx), min(qx, qx - dx))
    sy = slice(ty.start + dy, ty.stop + dy)
    sx = slice(tx.start + dx, tx.stop + dx)
    return ty, tx, sy, sx


def _max_and_sum(sub):
    """Maximum and float32 sum over the first axis, reading ``sub`` once (blocks of patterns in cache)."""
    gmax = sub[0].copy()
    gsum = np.zeros(sub.shape[1:], np.float32)
    for start in range(0, sub.shape[0], _STATS_BLOCK):
        part = sub[start : start + _STATS_BLOCK]
        np.maximum(gmax, part.max(axis=0), out=gmax)
        gsum += part.sum(axis=0)
    return gmax, gsum


def _stats_kernel(block, chunk, *, shifts, mask, vacuum):
    """Aligned max, sum and count of unmasked values, and the same sum/count over vacuum positions.

    Sums are taken per scan row in float32 (a row always lies in one chunk, so
    they do not depend on the chunking) and accumulated over rows in float64.
    NaN and Inf read as 0: a group whose sum is not finite is summed again
    with them replaced (the engine does not look for them first).
    """
    own = block[chunk.own]
    rows, sx = own.shape[:2]
    qy, qx = own.shape[-2:]
    valid = np.ones((qy, qx), bool) if mask is None else ~mask
    vmax = np.full((qy, qx), -np.inf, np.float32)
    vsum = np.zeros((qy, qx), np.float64)
    vcount = np.zeros((qy, qx), np.float64)
    vac_sum = np.zeros((qy, qx), np.float64)
    vac_count = np.zeros((qy, qx), np.float64)
    for r in range(rows):
        first = (chunk.start + r) * sx
        row = own[r]
        local = None if shifts is None else shifts[first : first + sx]
        vac = None if vacuum is None else vacuum[first : first + sx]
        for dy, dx, idx in _shift_groups(local) or [(0, 0, slice(None))]:
            ty, tx, sy, sx_ = _windows(dy, dx, qy, qx)
            sub = row[idx, sy, sx_] if isinstance(idx, slice) else row[idx][:, sy, sx_]
            ok = valid[sy, sx_]  # within a group the masked pixels sit at the same aligned place
            gmax, gsum = _max_and_sum(sub)
            if not np.isfinite(gsum[ok]).all():  # a finite sum means every value is finite
                sub = np.nan_to_num(sub, nan=0.0, posinf=0.0, neginf=0.0)
                gmax, gsum = _max_and_sum(sub)
            gmax[~ok] = -np.inf
            np.maximum(vmax[ty, tx], gmax, out=vmax[ty, tx])
            gsum[~ok] = 0.0
            vsum[ty, tx] += gsum
            vcount[ty, tx] += ok * sub.shape[0]
            if vac is not None and vac[idx].any():
                vsel = vac[idx]
                gsum = sub[vsel].sum(axis=0)
                gsum[~ok] = 0.0
                vac_sum[ty, tx] += gsum
                vac_count[ty, tx] += ok * int(vsel.sum())
    return vmax, vsum, vcount, vac_sum, vac_count


@dataclasses.dataclass
class _Stats:
    max_pattern: np.ndarray  # float32, -inf where never valid
    mean_pattern: np.ndarray  # float32, 0 where never valid
    valid: np.ndarray  # bool, pixel seen unmasked at least once
    vacuum_mean: np.ndarray | None


def _statistics(dataset, engine, shifts, mask, vacuum) -> _Stats:
    vmax, vsum, vcount, vac_sum, vac_count = engine.reduce(
        _stats_kernel,
        dataset,
        combine=["max", "sum", "sum", "sum", "sum"],
        kwargs=dict(shifts=shifts, mask=mask, vacuum=vacuum),
        desc="features: statistics",
        finite=False,
    )
    valid = vcount > 0
    # float64 sums rounded to float32 so the mean does not depend on the chunking
    mean = np.where(valid, vsum / np.maximum(vcount, 1), 0.0).astype(np.float32)
    vac_mean = None
    if vacuum is not None:
        if not (vac_count > 0).any():
            raise ConfigError("the vacuum region holds no position", "give vacuum_region inside the scan")
        vac_mean = np.where(vac_count > 0, vac_sum / np.maximum(vac_count, 1), 0.0).astype(np.float32)
    return _Stats(vmax, mean, valid, vac_mean)


# --------------------------------------------------------------------------------------
# pass 2: features
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _PolarSpec:
    """The AA and RV geometry, apart from the origin; picklable, builds operators per origin.

    Origins are split into a whole-pixel part and a fraction; per-position
    origins have their fraction rounded to ``1 / steps`` of a pixel. The
    binning of pixel offsets is an :class:`OffsetTemplate` per fraction (cached
    in each process); the operator of one origin is its template moved to the
    whole-pixel part and cut to the detector and the mask.
    """

    token: str
    shape: tuple[int, int]
    valid: np.ndarray | None
    ellipse: tuple[float, float, float] | None
    subpixel: int
    steps: int
    rings: np.ndarray | None
    sector_width: float
    sector_offset: float
    rv_edges: np.ndarray | None

    def key(self, origin, exact: bool = False):
        """(whole y, whole x, fraction y, fraction x) of an origin; rounded unless ``exact``."""
        if exact:
            wy, wx = math.floor(origin[0]), math.floor(origin[1])
            return wy, wx, float(origin[0]) - wy, float(origin[1]) - wx
        qy, qx = round(float(origin[0]) * self.steps), round(float(origin[1]) * self.steps)
        wy, ky = divmod(qy, self.steps)
        wx, kx = divmod(qx, self.steps)
        return int(wy), int(wx), ky / self.steps, kx / self.steps

    def keys(self, origins) -> np.ndarray:
        """Rounded keys of many origins as integer rows (whole y, whole x, steps y, steps x)."""
        q = np.round(np.asarray(origins, dtype=np.float64) * self.steps).astype(np.int64)
        whole, frac = np.divmod(q, self.steps)
        return np.column_stack([whole, frac])

    @property
    def half(self) -> int:
        """Half width of the windows: every bin of AA and RV fits."""
        radius = max(0.0 if self.rings is None else float(self.rings[:, 1].max()),
                     0.0 if self.rv_edges is None else float(self.rv_edges[-1]))
        return window_half(radius, self.ellipse)

    def templates(self, fraction):
        """(AA template or None, RV template or None) for an origin fraction, cached per process."""
        cache_key = (self.token, float(fraction[0]), float(fraction[1]))
        with _CACHE_LOCK:
            if cache_key in _CACHE:
                _CACHE.move_to_end(cache_key)
                return _CACHE[cache_key]
        aa = rv = None
        if self.rings is not None:
            binner, n_bins, _ = ring_sector_bins(self.rings, self.sector_width, self.sector_offset)
            aa = OffsetTemplate.build(fraction, self.ellipse, binner, n_bins, self.half, self.subpixel)
        if self.rv_edges is not None:
            binner, n_bins, _ = radial_bins_of(self.rv_edges)
            rv = OffsetTemplate.build(fraction, self.ellipse, binner, n_bins, self.half, self.subpixel)
        with _CACHE_LOCK:
            _CACHE[cache_key] = (aa, rv)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return aa, rv

    def window(self, whole) -> Window:
        """The window around whole pixel ``(iy, ix)``, cut by the detector and the mask; cached per process."""
        cache_key = (self.token, int(whole[0]), int(whole[1]))
        with _CACHE_LOCK:
            window = _WINDOWS.get(cache_key)
            if window is not None:
                _WINDOWS.move_to_end(cache_key)
                return window
        window = Window(whole, self.half, self.shape, self.valid)
        with _CACHE_LOCK:
            _WINDOWS[cache_key] = window
            while len(_WINDOWS) > _WINDOWS_SIZE:
                _WINDOWS.popitem(last=False)
        return window

    def apply(self, patterns, fraction, placements) -> tuple:
        """(AA means or None, RV variances or None) of patterns (m, qy, qx) whose origins share ``fraction``.

        ``placements`` is a sequence of (whole pixel, rows); the results' rows
        follow them in order.
        """
        aa, rv = self.templates(fraction)
        placed = [(self.window(whole), rows) for whole, rows in placements]
        parts = apply_windows(patterns, placed, means=[aa] if aa else [], variances=[rv] if rv else [],
                              zero_nonfinite=True)
        return (parts.pop(0) if aa else None), (parts.pop(0) if rv else None)

    def counts(self, key) -> tuple:
        """Unmasked area of every AA and RV bin for an origin ``key``."""
        aa, rv = self.templates(key[2:])
        window = self.window(key[:2])
        return (None if aa is None else aa.matrix @ window.valid), (None if rv is None else rv.matrix @ window.valid)


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """Everything the feature kernel needs; picklable, sent to every chunk."""

    shape: tuple[int, int]
    mask: np.ndarray | None
    origin: tuple[float, float]
    origins: np.ndarray | None  # (n_positions, 2) float64 or None
    polar_spec: _PolarSpec | None
    aa_keep: np.ndarray | None
    rv_keep: np.ndarray | None
    bd: dict | None
    raw: dict | None

    @property
    def polar(self) -> bool:
        return self.polar_spec is not None


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 128
_WINDOWS: collections.OrderedDict = collections.OrderedDict()
_WINDOWS_SIZE = 128


def _release_geometry() -> None:
    """Forget this process's templates, windows and their products once a pass is done (memory for later stages)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _WINDOWS.clear()
    release_products()


def _origin_groups(plan: _Plan, chunk):
    """(fraction, [(whole pixel, positions), ...]) for the chunk's positions, grouped by their origin's fraction."""
    spec = plan.polar_spec
    if plan.origins is None:
        key = spec.key(plan.origin, exact=True)
        return [(key[2:], [(key[:2], np.arange(chunk.n_positions))])]
    keys = spec.keys(plan.origins[chunk.positions])
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    groups: dict = {}
    for i, k in enumerate(uniq):  # sorted by whole pixel, then fraction
        fraction = (k[2] / spec.steps, k[3] / spec.steps)
        groups.setdefault(fraction, []).append(((int(k[0]), int(k[1])), np.flatnonzero(inverse == i)))
    return list(groups.items())


def _sub_batches(n_total, per_batch):
    """Slices (views, no copy) of at most ``per_batch`` positions."""
    for start in range(0, n_total, per_batch):
        yield slice(start, min(n_total, start + per_batch))


def _feature_kernel(block, chunk, *, plan: _Plan):
    n = chunk.n_positions
    qy, qx = plan.shape
    flat = block[chunk.own].reshape(n, qy * qx)
    per_batch = max(1, _SUB_BATCH_BYTES // (16 * qy * qx))
    outputs = []
    if plan.polar:
        n_aa = 0 if plan.aa_keep is None else plan.aa_keep.size
        n_rv = 0 if plan.rv_keep is None else plan.rv_keep.size
        cols = np.empty((n, n_aa + n_rv), np.float32)
        patterns = flat.reshape(n, qy, qx)
        for fraction, placements in _origin_groups(plan, chunk):
            rows = np.concatenate([idx for _, idx in placements])
            aa, rv = plan.polar_spec.apply(patterns, fraction, placements)
            if aa is not None:
                cols[rows, :n_aa] = aa[:, plan.aa_keep]
            if rv is not None:
                cols[rows, n_aa:] = rv[:, plan.rv_keep]
        outputs.append(cols)
    if plan.bd is not None:
        bd = dict(plan.bd)
        kernel_ft = bd.pop("kernel_ft")
        disks = np.empty((n, bd["max_disks"], 3), np.float32)
        for sel in _sub_batches(n, per_batch):
            disks[sel] = find_disks(flat[sel].reshape(-1, qy, qx), kernel_ft, mask=plan.mask, **bd)
        outputs.append(disks)
    if plan.raw is not None:
        outputs.append(bin_patterns(flat.reshape(n, qy, qx), plan.raw["factor"], plan.mask if plan.raw["masked"] else None,
                                    transform=plan.raw["transform"], drop_masked=plan.raw["masked"]))
    return tuple(outputs)


# --------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------


def _vacuum_positions(region, scan_shape) -> np.ndarray:
    sy, sx = scan_shape
    if region is None:
        raise ConfigError("template='vacuum' needs vacuum_region", "give vacuum_region=(y0, y1, x0, x1) or a (sy, sx) bool array")
    arr = np.asarray(region)
    if arr.dtype == bool:
        if arr.shape != (sy, sx):
            raise ConfigError(f"vacuum_region shape {arr.shape} does not match the scan {(sy, sx)}")
        sel = arr
    else:
        try:
            y0, y1, x0, x1 = (int(v) for v in arr.reshape(-1))
        except (TypeError, ValueError):
            raise ConfigError(f"vacuum_region {region!r} is not (y0, y1, x0, x1)") from None
        sel = np.zeros((sy, sx), bool)
        sel[y0:y1, x0:x1] = True
    if not sel.any():
        raise ConfigError("vacuum_region selects no position", "give rows and columns inside the scan")
    return sel.reshape(-1)


def _resolve_origin(dataset: Dataset4D, opts: FeatureOptions):
    """(reference origin or None, per-position origins or None, source)."""
    qy, qx = dataset.pattern_shape
    centre = ((qy - 1) / 2, (qx - 1) / 2)
    if isinstance(opts.origin, str):
        if opts.origin != "centre":
            raise ConfigError(f"origin={opts.origin!r} is not understood", "give (qy, qx), 'centre' or leave it unset")
        return centre, None, "centre"
    if opts.origin is not None:
        try:
            oy, ox = (float(v) for v in opts.origin)
        except (TypeError, ValueError):
            raise ConfigError(f"origin={opts.origin!r} is not (qy, qx)") from None
        return (oy, ox), None, "option"
    cal = dataset.calibration.origin
    if dataset.origins is not None:
        origins = np.asarray(dataset.origins, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(origins).all():
            raise DataValueError("dataset.origins holds NaN or Inf", "fit the origins again or give origin=(qy, qx)")
        ref = tuple(cal) if cal is not None else tuple(origins.mean(axis=0))
        return ref, origins, "dataset.origins"
    if cal is not None:
        return tuple(cal), None, "calibration"
    return None, None, "found"


def featurize(dataset, representation: str, *, engine: Engine | None = None, scaling: str = "minmax", **options):
    """Feature matrix of a 4D-STEM scan: AA, RV, BD, raw or a '+'-joined combination.

    Parameters
    ----------
    dataset : Dataset4D
        The (calibrated) scan, in memory or lazy. ``dataset.mask`` (True =
        masked out) is honoured everywhere; ``dataset.origins`` and the
        calibration's ``origin`` and ``ellipse`` define the polar-elliptical
        geometry.
    representation : str
        'aa' (angular average per 5 degree sector of each ring), 'rv'
        (variance along theta per radius), 'bd' (Bragg disks rasterised on a
        grid), 'raw' (binned patterns), or a combination such as 'aa+bd'
        (columns concatenated in that order).
    engine : Engine, optional
        Where the per-pattern work runs; default ``Engine()`` (this process).
    scaling : {'minmax', 'robust', 'pattern', 'none'}, default 'minmax'
        Per-feature min-max to [0, 1] (the paper), per-feature median-to-max
        (the shared background level becomes 0), per-pattern (each row of each
        representation divided by its maximum), or none.
    **options
        See :class:`FeatureOptions` for every option and its default.

    Returns
    -------
    X : numpy.ndarray
        (n_positions, n_features) float32, rows in C order of the scan.
    description : FeatureDescription
        What each column is, the resolved settings, and by-products (maximum
        and mean pattern, radial profile, rings, Bragg vector map).

    Raises
    ------
    ConfigError
        Unknown representation or option, or an invalid option value.
    CalibrationError
        No direct beam, no ring, or a geometry that leaves no pixel.
    """
    if not isinstance(dataset, Dataset4D):
        raise InputError(f"featurize needs a Dataset4D, got {type(dataset).__name__}", "load the scan with stemnmf.load")
    reps = parse_representation(representation)
    if scaling not in SCALINGS:
        raise ConfigError(f"unknown scaling {scaling!r}", f"use one of {', '.join(SCALINGS)}")
    opts = FeatureOptions.from_kwargs(options)
    _check_options(opts)
    engine = engine if engine is not None else Engine()
    shape = dataset.pattern_shape
    mask = None if dataset.mask is None or not dataset.mask.any() else np.asarray(dataset.mask, bool)
    if opts.ellipse is False:
        ellipse = None
    else:
        ellipse = check_ellipse(opts.ellipse if opts.ellipse is not None else dataset.calibration.ellipse)
    ref, origins, source = _resolve_origin(dataset, opts)
    settings: dict[str, Any] = {"representation": "+".join(reps), "scaling": scaling}
    extra: dict[str, Any] = {}

    # pass 1: statistics, when something has to be found on the data
    stats = None
    if _needs_statistics(reps, opts, ref is not None or origins is not None):
        vacuum = None
        if "bd" in reps and isinstance(opts.template, str) and opts.template == "vacuum":
            vacuum = _vacuum_positions(opts.vacuum_region, dataset.scan_shape)
        shifts = None if origins is None else np.round(origins - np.asarray(ref)).astype(np.int64)
        stats = _statistics(dataset, engine, shifts, mask, vacuum)
        if ref is None:
            ref = find_origin(stats.mean_pattern, mask)
            if ref is None:
                source = "centre"
                log.warning("no direct beam stands out in the mean pattern; using the pattern centre as origin")
            else:
                log.info("direct beam found at (%.2f, %.2f) in the mean pattern", *ref)
    if ref is None:
        ref = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
        source = "centre" if source == "found" else source
    ref = (float(ref[0]), float(ref[1]))
    settings.update(origin=list(ref), origin_source=source, ellipse=None if ellipse is None else list(ellipse))

    # geometry and per-representation set-up
    profiles = _Profiles.of(stats, ref, ellipse, opts.r_step) if stats is not None else None
    if profiles is not None:
        extra.update(profiles.by_products(stats))
    beam_half = None
    if profiles is not None and (
        ("rv" in reps and opts.r_min is None) or ("aa" in reps and opts.rings is None and opts.r_min is None)
        or ("bd" in reps and opts.disk_radius is None)
    ):
        beam_half = estimate_beam_radius(profiles.mean, profiles.radii)
        settings["beam_radius"] = beam_half
    polar = _polar_setup(reps, opts, shape, mask, ellipse, ref, origins, profiles, beam_half, settings)
    if polar.get("rings") is not None:
        extra["rings"] = polar["rings"]
    bd = raw = None
    if "bd" in reps:
        bd, settings["bd"], extra["template"] = _bd_setup(opts, stats, ref, beam_half, shape, mask)
    if "raw" in reps:
        raw, settings["raw"] = _raw_setup(opts, shape)

    # pass 2: the features
    plan = _Plan(
        shape=shape, mask=mask, origin=ref, origins=origins, polar_spec=polar["spec"], aa_keep=polar["aa_keep"],
        rv_keep=polar["rv_keep"], bd=bd, raw=raw,
    )
    try:
        # AA and RV read NaN and Inf as 0 themselves, on the pixels they use: no pass over the block for it
        outputs = engine.map(_feature_kernel, dataset, kwargs=dict(plan=plan), desc=f"features: {'+'.join(reps)}",
                             finite=not (plan.polar and plan.bd is None and plan.raw is None))
    finally:
        _release_geometry()
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]

    # assemble the blocks in the order the user named them
    blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if plan.polar:
        values = outputs.pop(0)
        n_aa = 0 if plan.aa_keep is None else plan.aa_keep.size
        if plan.aa_keep is not None:
            blocks["aa"] = values[:, :n_aa], polar["aa_columns"]
        if plan.rv_keep is not None:
            blocks["rv"] = values[:, n_aa:], polar["rv_columns"]
    if bd is not None:
        X_bd, bd_columns, bd_extra = _bd_features(outputs.pop(0), origins, ref, ellipse, bd_settings=settings["bd"],
                                                  shape=shape, scan_shape=dataset.scan_shape)
        blocks["bd"] = X_bd, bd_columns
        extra.update(bd_extra)
    if raw is not None:
        _, cy, cx = raw_columns(shape, raw["factor"], mask if raw["masked"] else None)
        blocks["raw"] = outputs.pop(0), make_columns("raw", cy.size, qy=cy, qx=cx)

    X = np.concatenate([blocks[r][0] for r in reps], axis=1) if len(reps) > 1 else blocks[reps[0]][0]
    table = np.concatenate([blocks[r][1] for r in reps])
    X = _impute(np.asarray(X, dtype=np.float32), table)
    bounds = np.cumsum([0] + [blocks[r][0].shape[1] for r in reps])
    X, lo, hi = scale_features(X, scaling, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    description = FeatureDescription(
        representation="+".join(reps), columns=table, settings=settings, scale_min=lo, scale_max=hi,
        origin=np.asarray(ref, dtype=np.float32), ellipse=ellipse, **extra,
    )
    log.info("features %s: %d positions x %d features", description.representation, X.shape[0], X.shape[1])
    return X, description


def _check_options(opts: FeatureOptions) -> None:
    """Values that can be checked before reading anything."""
    inverse = 1.0 / opts.origin_step if opts.origin_step > 0 else 0.0
    if not opts.origin_step > 0 or abs(inverse - round(inverse)) > 1e-6 or opts.origin_step > 1:
        raise ConfigError(f"origin_step={opts.origin_step} must be 1/n of a pixel", "use e.g. 0.5, 0.25, 0.1 or 0.05")
    if int(opts.subpixel) < 1:
        raise ConfigError(f"subpixel={opts.subpixel} must be at least 1")
    if not opts.r_step > 0:
        raise ConfigError(f"r_step={opts.r_step} must be positive")
    n_sectors(opts.sector_width)
    if opts.rings is not None:
        check_rings(opts.rings)
    if opts.statistics not in (None, True, False):
        raise ConfigError(f"statistics={opts.statistics!r} must be None, True or False")
    if opts.bd_weight not in ("intensity", "count"):
        raise ConfigError(f"unknown bd_weight {opts.bd_weight!r}", "use 'intensity' or 'count'")
    if opts.bd_interpolation not in ("nearest", "bilinear"):
        raise ConfigError(f"unknown bd_interpolation {opts.bd_interpolation!r}", "use 'nearest' or 'bilinear'")
    if not opts.bd_bin > 0:
        raise ConfigError(f"bd_bin={opts.bd_bin} must be positive")
    if int(opts.max_disks) < 1:
        raise ConfigError(f"max_disks={opts.max_disks} must be at least 1")
    if opts.kernel_background not in ("annular", "none"):
        raise ConfigError(f"unknown kernel_background {opts.kernel_background!r}", "use 'annular' or 'none'")
    if isinstance(opts.template, str) and opts.template not in ("beam", "vacuum", "synthetic"):
        raise ConfigError(f"unknown template {opts.template!r}", "use 'beam', 'vacuum', 'synthetic' or an image")
    if opts.raw_transform not in (None, "none", "log", "sqrt"):
        raise ConfigError(f"unknown raw_transform {opts.raw_transform!r}", "use None, 'log' or 'sqrt'")
    if opts.raw_bin != "auto" and (isinstance(opts.raw_bin, str) or int(opts.raw_bin) < 1):
        raise ConfigError(f"raw_bin={opts.raw_bin!r} must be 'auto' or a positive integer")


def _needs_statistics(reps, opts: FeatureOptions, origin_known: bool) -> bool:
    """Whether the statistics pass is needed (or asked for); explains when it is refused but needed."""
    reasons = []
    if not origin_known and any(r in ("aa", "rv", "bd") for r in reps):
        reasons.append("origin")
    if "aa" in reps and opts.rings is None:
        reasons.append("rings")
    if "rv" in reps and opts.r_min is None:
        reasons.append("r_min")
    if "bd" in reps:
        if isinstance(opts.template, str) and opts.template in ("beam", "vacuum"):
            reasons.append("template (an image or 'synthetic')")
        elif isinstance(opts.template, str) and opts.disk_radius is None:
            reasons.append("disk_radius")
    if opts.statistics is False:
        if reasons:
            raise ConfigError(
                "statistics=False, but the statistics pass is needed to find the " + ", ".join(reasons),
                "give " + ", ".join(reasons) + " or leave statistics unset",
            )
        return False
    return bool(opts.statistics) or bool(reasons)


@dataclasses.dataclass
class _Profiles:
    """Radial profiles of the aligned maximum and mean patterns."""

    radii: np.ndarray
    max: np.ndarray
    mean: np.ndarray

    @classmethod
    def of(cls, stats: _Stats, ref, ellipse, r_step) -> _Profiles:
        invalid = ~stats.valid
        finite_max = np.where(stats.valid, stats.max_pattern, np.nan)
        profile, radii = radial_profile(finite_max, ref, ellipse, invalid, r_step=r_step)
        mean, _ = radial_profile(stats.mean_pattern, ref, ellipse, invalid, r_step=r_step)
        return cls(radii, profile, mean)

    def by_products(self, stats: _Stats) -> dict:
        finite = stats.max_pattern[stats.valid]
        low = float(finite.min()) if finite.size else 0.0
        return dict(
            max_pattern=np.where(stats.valid, stats.max_pattern, low).astype(np.float32),
            mean_pattern=stats.mean_pattern,
            radii=self.radii.astype(np.float32),
            radial_profile=self.max,
        )


def _polar_setup(reps, opts, shape, mask, ellipse, ref, origins, profiles, beam_half, settings) -> dict:
    """Radial range, rings, the columns kept for AA and RV and their descriptions."""
    out = dict(rings=None, aa_keep=None, aa_columns=None, rv_edges=None, rv_keep=None, rv_columns=None, spec=None)
    if "aa" not in reps and "rv" not in reps:
        return out
    r_max = opts.r_max
    if r_max is None:
        excursion = 0.0
        if origins is not None:
            stretch = 1.0 if ellipse is None else math.sqrt(ellipse[0] / ellipse[1])
            excursion = float(np.abs(origins - np.asarray(ref)).max()) * math.sqrt(2) * stretch
        r_max = edge_radius(shape, ref, ellipse) - excursion
    r_max = float(r_max)
    r_min = opts.r_min
    if r_min is None and profiles is not None and beam_half is not None:
        r_min = beam_edge(profiles.max, profiles.radii, beam_half, smoothing=opts.ring_smoothing)
    settings.update(r_max=r_max, r_step=float(opts.r_step), subpixel=int(opts.subpixel),
                    origin_step=float(opts.origin_step))
    if r_min is not None:
        r_min = float(r_min)
        settings["r_min"] = r_min
        if not r_max > r_min:
            raise CalibrationError(
                f"no radii left between r_min={r_min:.1f} and r_max={r_max:.1f} px "
                f"(origin {ref[0]:.1f}, {ref[1]:.1f} on a {shape[0]} x {shape[1]} detector)",
                "check the origin, or give r_min and r_max",
            )
    rings = edges = None
    if "aa" in reps:
        if opts.rings is not None:
            rings = check_rings(opts.rings)
        else:
            rings = find_rings(profiles.max, profiles.radii, r_min=r_min, r_max=r_max, smoothing=opts.ring_smoothing,
                               prominence=opts.ring_prominence, min_width=opts.ring_min_width,
                               noise_floor=opts.ring_noise_floor)
            if rings.shape[0] == 0:
                raise CalibrationError(
                    f"no diffraction ring found between {r_min:.1f} and {r_max:.1f} px in the maximum pattern "
                    f"(a ring must stand above {opts.ring_prominence:g} of the profile's range and "
                    f"{opts.ring_noise_floor:g} x its noise)",
                    "give rings=[(r0, r1), ...], or lower ring_prominence or ring_noise_floor",
                )
    if "rv" in reps:
        edges = radial_bins(r_min, r_max, opts.r_step)
    steps = int(round(1.0 / opts.origin_step))
    spec = _PolarSpec(
        token=token(shape, mask, ellipse, int(opts.subpixel), rings, opts.sector_width, opts.sector_offset, edges),
        shape=tuple(shape), valid=None if mask is None else ~mask, ellipse=ellipse, subpixel=int(opts.subpixel),
        steps=steps, rings=None if rings is None else rings.astype(np.float64), sector_width=float(opts.sector_width),
        sector_offset=float(opts.sector_offset), rv_edges=edges,
    )
    out["spec"] = spec
    # columns: the bins that hold unmasked pixels at the reference origin
    aa_ref, rv_ref = spec.counts(spec.key(ref, exact=True))
    if rings is not None:
        ns = n_sectors(opts.sector_width)
        counts = aa_ref
        keep = np.flatnonzero(counts > 0)
        if keep.size < counts.size:
            log.info("AA: %d of %d ring sectors hold no unmasked pixel and are left out", counts.size - keep.size,
                     counts.size)
        kept = np.bincount(keep // ns, minlength=rings.shape[0])
        for k in np.flatnonzero(kept < ns / 2):  # more than a beam stop's arm: the ring is mostly lost
            log.warning("AA: ring %d (%.1f-%.1f px) keeps only %d of %d sectors on the detector and unmasked; "
                        "check the rings and the origin", k, rings[k, 0], rings[k, 1], kept[k], ns)
        ring, sector = np.divmod(keep, ns)
        out.update(rings=rings, aa_keep=keep, aa_columns=make_columns(
            "aa", keep.size, ring=ring, radius=rings[ring].mean(axis=1),
            angle=(opts.sector_offset + (sector + 0.5) * opts.sector_width) % 360.0,
        ))
        settings.update(rings=rings.tolist(), sector_width=float(opts.sector_width),
                        sector_offset=float(opts.sector_offset), n_sectors=ns)
    if edges is not None:
        keep = np.flatnonzero(rv_ref > 0)
        out.update(rv_edges=edges, rv_keep=keep,
                   rv_columns=make_columns("rv", keep.size, radius=(0.5 * (edges[:-1] + edges[1:]))[keep]))
        settings["rv_edges"] = [float(edges[0]), float(edges[-1])]
    return out


def _raw_setup(opts: FeatureOptions, shape):
    factor = auto_bin(shape) if opts.raw_bin == "auto" else int(opts.raw_bin)
    if factor > min(shape):
        raise ConfigError(f"raw_bin={factor} is larger than the patterns {shape}")
    transform = None if opts.raw_transform == "none" else opts.raw_transform
    raw = dict(factor=factor, transform=transform, masked=bool(opts.raw_masked))
    settings = dict(bin=factor, transform=transform, masked=raw["masked"],
                    binned_shape=[shape[0] // factor, shape[1] // factor])
    return raw, settings


def _impute(X, table):
    """Replace NaN (a sector with no unmasked pixel at some origin) by its column mean."""
    bad = ~np.isfinite(X)
    if not bad.any():
        return X
    cols = np.flatnonzero(bad.any(axis=0))
    with np.errstate(invalid="ignore"):
        means = np.nanmean(np.where(bad[:, cols], np.nan, X[:, cols]), axis=0)
    means = np.where(np.isfinite(means), means, 0.0)
    X[:, cols] = np.where(bad[:, cols], means, X[:, cols])
    reps = sorted(set(table["representation"][cols]))
    log.warning(
        "%d feature values in %d columns (%s) had no unmasked pixel at their position's origin; "
        "they were set to their column mean",
        int(bad.sum()), cols.size, ", ".join(reps),
    )
    return X


def _bd_setup(opts: FeatureOptions, stats: _Stats | None, ref, beam_half, shape, mask):
    """Template, kernels and thresholds for BD; returns (kernel options, settings, template)."""
    template = opts.template
    if isinstance(template, str):
        kind = template
    else:
        kind = "image"
        template = np.asarray(template, dtype=np.float32)
        if template.ndim != 2 or not np.all(np.isfinite(template)) or not template.max() > 0:
            raise ConfigError("the probe template must be a finite 2D image with positive values")
    radius = opts.disk_radius
    if radius is None:
        if kind == "image":  # the template's own area above half maximum
            radius = math.sqrt(np.count_nonzero(template >= 0.5 * template.max()) / math.pi)
        else:
            radius = beam_half
    radius = float(radius)
    if not radius > 0:
        raise ConfigError(f"disk_radius={radius} must be positive")
    if kind == "beam":
        t = probe_template(stats.mean_pattern, ref, radius)
    elif kind == "vacuum":
        t = probe_template(stats.vacuum_mean, find_origin(stats.vacuum_mean, mask) or ref, radius)
    elif kind == "synthetic":
        t = synthetic_disk(radius)
    else:
        t = template
    kernel_ft = probe_kernel(t, shape, background=opts.kernel_background, radius=radius)
    min_spacing = opts.min_spacing if opts.min_spacing is not None else max(3.0, 1.5 * radius)
    edge = opts.edge if opts.edge is not None else int(math.ceil(radius)) + 1
    refine_ft = None
    if opts.kernel_background != "none":
        refine_ft = probe_kernel(t, shape, background="none").astype(np.complex64)
    bd = dict(
        kernel_ft=kernel_ft.astype(np.complex64),
        refine_ft=refine_ft,
        corr_power=float(opts.corr_power),
        corr_sigma=float(opts.corr_sigma),
        min_relative=float(opts.min_relative),
        min_absolute=float(opts.min_absolute),
        min_snr=float(opts.min_snr),
        min_spacing=float(min_spacing),
        edge=int(edge),
        max_disks=int(opts.max_disks),
        masked_fraction_map=masked_fraction(mask, radius),
        max_masked_fraction=float(opts.max_masked_fraction),
    )
    settings = dict(
        template=kind, disk_radius=radius, kernel_background=opts.kernel_background,
        corr_power=bd["corr_power"], corr_sigma=bd["corr_sigma"], min_relative=bd["min_relative"],
        min_absolute=bd["min_absolute"], min_snr=bd["min_snr"], min_spacing=bd["min_spacing"], edge=bd["edge"], max_disks=bd["max_disks"],
        max_masked_fraction=bd["max_masked_fraction"], bin=float(opts.bd_bin), weight=opts.bd_weight,
        interpolation=opts.bd_interpolation, include_beam=bool(opts.bd_include_beam),
        exclude_radius=0.0 if opts.bd_include_beam else radius, drop_empty=bool(opts.bd_drop_empty),
    )
    return bd, settings, t


def _bd_features(disks, origins, ref, ellipse, *, bd_settings, shape, scan_shape):
    """Rasterised BD block, its columns, and the by-products (BVM, disk counts)."""
    per_position = origins if origins is not None else np.asarray(ref)
    qy, qx = shape
    # farthest corrected distance from any position's beam to a detector corner (convex in the
    # origin, so the corners of the origins' bounding box bound it)
    corners = np.array([[-0.5, -0.5], [-0.5, qx - 0.5], [qy - 0.5, -0.5], [qy - 0.5, qx - 0.5]])
    pts = np.atleast_2d(per_position)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    far = 0.0
    for oy, ox in ((lo[0], lo[1]), (lo[0], hi[1]), (hi[0], lo[1]), (hi[0], hi[1])):
        dy, dx = correct_offsets(corners[:, 0] - oy, corners[:, 1] - ox, ellipse)
        far = max(far, float(np.hypot(dy, dx).max()))
    bin_size = bd_settings["bin"]
    half = int(math.ceil(far / bin_size))
    exclude = bd_settings["exclude_radius"]
    grid = rasterize_disks(
        disks, per_position, ellipse, bin_size=bin_size, half_width=half, weight=bd_settings["weight"],
        interpolation=bd_settings["interpolation"], exclude_radius=exclude,
    ).tocsc()
    gy, gx = grid_columns(half, bin_size)
    if bd_settings["drop_empty"]:
        keep = np.flatnonzero(np.diff(grid.indptr) > 0)
    else:
        keep = np.arange(grid.shape[1])
    X = np.asarray(grid[:, keep].toarray(), dtype=np.float32)
    if X.shape[1] == 0:
        raise CalibrationError(
            "no Bragg disk found at any position",
            "lower min_relative / min_absolute, check disk_radius and the template, or use another representation",
        )
    ky, kx = gy[keep], gx[keep]
    cols = make_columns("bd", keep.size, qy=ky, qx=kx, radius=np.hypot(ky, kx),
                        angle=np.degrees(np.arctan2(ky, kx)) % 360.0)
    bd_settings["grid_half_width"] = half
    bvm = bragg_vector_map(disks, per_position, ellipse, half_width=int(math.ceil(far)), weight=bd_settings["weight"],
                           exclude_radius=exclude)
    found = np.isfinite(disks[..., 0])
    if exclude > 0:
        kqy, kqx = calibrated_vectors(disks, per_position, ellipse)
        found &= ~(np.hypot(kqy, kqx) < exclude)
    n_disks = found.sum(axis=1).astype(np.int32).reshape(scan_shape)
    return X, cols, dict(bragg_vector_map=bvm, n_disks=n_disks, disks=disks)
