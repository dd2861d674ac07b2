"""AA and RV in the features pass: the polar-elliptical geometry, its operators per origin, and the columns.

Origins are split into a whole-pixel part and a fraction; per-position origins
have their fraction rounded to ``1 / steps`` of a pixel. The binning of pixel
offsets is an :class:`OffsetTemplate` per fraction (cached in each process);
the operator of one origin is its template moved to the whole-pixel part and
cut to the detector and the mask.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading

import numpy as np

from stemnmf.engine import token
from stemnmf.errors import CalibrationError
from stemnmf.features.angular import n_sectors, radial_bins
from stemnmf.features.description import make_columns
from stemnmf.features.geometry import edge_radius
from stemnmf.features.operators import (
    OffsetTemplate,
    Window,
    apply_windows,
    radial_bins_of,
    release_products,
    ring_sector_bins,
    window_half,
)
from stemnmf.features.options import FeatureGeometry
from stemnmf.features.rings import beam_edge, check_rings, find_rings

__all__ = ["PolarFeatures", "PolarSpec", "release_geometry"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class PolarSpec:
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


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 128
_WINDOWS: collections.OrderedDict = collections.OrderedDict()
_WINDOWS_SIZE = 128


def release_geometry() -> None:
    """Forget this process's templates, windows and their products once a pass is done (memory for later stages)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _WINDOWS.clear()
    release_products()


def _origin_groups(spec: PolarSpec, origin, origins, chunk):
    """(fraction, [(whole pixel, positions), ...]) for the chunk's positions, grouped by their origin's fraction."""
    if origins is None:
        key = spec.key(origin, exact=True)
        return [(key[2:], [(key[:2], np.arange(chunk.n_positions))])]
    keys = spec.keys(origins[chunk.positions])
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    groups: dict = {}
    for i, k in enumerate(uniq):  # sorted by whole pixel, then fraction
        fraction = (k[2] / spec.steps, k[3] / spec.steps)
        groups.setdefault(fraction, []).append(((int(k[0]), int(k[1])), np.flatnonzero(inverse == i)))
    return list(groups.items())


@dataclasses.dataclass(frozen=True, eq=False)
class PolarFeatures:
    """AA and/or RV of every pattern: one representation object of the features pass (picklable).

    Attributes
    ----------
    spec : PolarSpec
        The geometry, apart from the origin.
    origin : (float, float)
        The reference origin.
    origins : numpy.ndarray or None
        (n_positions, 2) per-position origins.
    aa_keep, rv_keep : numpy.ndarray or None
        The AA (ring x sector) and RV (radius) bins kept: those holding unmasked pixels at the reference origin.
    aa_columns, rv_columns : numpy.ndarray or None
        Their column descriptions.
    rings : numpy.ndarray or None
        (n_rings, 2) ring bounds in corrected pixels.
    """

    spec: PolarSpec
    origin: tuple[float, float]
    origins: np.ndarray | None
    aa_keep: np.ndarray | None
    rv_keep: np.ndarray | None
    aa_columns: np.ndarray | None
    rv_columns: np.ndarray | None
    rings: np.ndarray | None

    #: The kernel reads NaN and Inf as 0 itself, on the pixels it uses.
    reads_nonfinite = True

    @classmethod
    def setup(cls, reps, opts, geometry: FeatureGeometry, profiles, beam_half, settings: dict) -> PolarFeatures | None:
        """The AA / RV part of ``reps`` (None when neither is asked for); records its settings in ``settings``."""
        if "aa" not in reps and "rv" not in reps:
            return None
        out = _polar_setup(reps, opts, geometry, profiles, beam_half, settings)
        return cls(out["spec"], geometry.origin, geometry.origins, out["aa_keep"], out["rv_keep"], out["aa_columns"],
                   out["rv_columns"], out["rings"])

    def compute(self, patterns: np.ndarray, chunk) -> np.ndarray:
        """(n, n_aa + n_rv) float32 features of the chunk's patterns (n, qy, qx)."""
        n = patterns.shape[0]
        n_aa = 0 if self.aa_keep is None else self.aa_keep.size
        n_rv = 0 if self.rv_keep is None else self.rv_keep.size
        cols = np.empty((n, n_aa + n_rv), np.float32)
        for fraction, placements in _origin_groups(self.spec, self.origin, self.origins, chunk):
            rows = np.concatenate([idx for _, idx in placements])
            aa, rv = self.spec.apply(patterns, fraction, placements)
            if aa is not None:
                cols[rows, :n_aa] = aa[:, self.aa_keep]
            if rv is not None:
                cols[rows, n_aa:] = rv[:, self.rv_keep]
        return cols

    def assemble(self, values: np.ndarray, geometry: FeatureGeometry) -> tuple[dict, dict]:
        """({'aa': (X, columns), 'rv': (X, columns)} as asked, by-products) from the gathered features."""
        n_aa = 0 if self.aa_keep is None else self.aa_keep.size
        blocks = {}
        if self.aa_keep is not None:
            blocks["aa"] = values[:, :n_aa], self.aa_columns
        if self.rv_keep is not None:
            blocks["rv"] = values[:, n_aa:], self.rv_columns
        return blocks, ({} if self.rings is None else {"rings": self.rings})


def _polar_setup(reps, opts, geometry: FeatureGeometry, profiles, beam_half, settings) -> dict:
    """Radial range, rings, the geometry, the columns kept for AA and RV and their descriptions."""
    shape, mask, ellipse, ref, origins = geometry.shape, geometry.mask, geometry.ellipse, geometry.origin, geometry.origins
    out = dict(rings=None, aa_keep=None, aa_columns=None, rv_keep=None, rv_columns=None, spec=None)
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
    spec = PolarSpec(
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
        out.update(rv_keep=keep,
                   rv_columns=make_columns("rv", keep.size, radius=(0.5 * (edges[:-1] + edges[1:]))[keep]))
        settings["rv_edges"] = [float(edges[0]), float(edges[-1])]
    return out
