"""BD and raw in the features pass: one representation object each (set up, per-chunk kernel, assembly)."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from stemnmf.calibrate.disks import beam_hidden, disk_template
from stemnmf.errors import CalibrationError, ConfigError
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
from stemnmf.features.description import make_columns
from stemnmf.features.geometry import correct_offsets
from stemnmf.features.options import FeatureGeometry, FeatureOptions
from stemnmf.features.raw import auto_bin, bin_patterns, raw_columns
from stemnmf.features.statistics import PatternStatistics, find_origin

__all__ = ["BraggFeatures", "RawFeatures"]

#: A visible direct beam whose intensity is below this multiple of the brightest Bragg disk's is no probe image.
#: Mean patterns of simulated 20 x 20 scans, com origin: unobstructed 1.6 ('crystals': the beam is weak) to 1300
#: ('precipitates'); a beam leaking through an arm stop's 0.1 % 0.02-1.4 (where the penumbra leaks more, or the
#: brightest blob taken for the beam is a Bragg disk: then a fine template anyway).
MIN_BEAM_OVER_DISK = 0.5
#: ... nor is one whose half-maximum radius is below this fraction of the Bragg disks' (same scans: unobstructed
#: 1.04-1.9, cut by an arm stop's 1.5 px penumbra 0.66-0.79).
MIN_BEAM_RADIUS_RATIO = 0.85

#: Most passes of the disks' template, each with the radius the last one measured (from 3 px, 256-px
#: patterns of disks 5.3 px in radius: 3.8, 4.7, 5.3, 5.3).
MAX_TEMPLATE_PASSES = 5

log = logging.getLogger(__name__)

#: Bytes of float64 working arrays per sub-batch inside a chunk.
SUB_BATCH_BYTES = 32 * 1024**2


@dataclasses.dataclass(frozen=True, eq=False)
class BraggFeatures:
    """BD: Bragg disks found in every pattern, rasterised on a grid of calibrated positions afterwards.

    Attributes
    ----------
    detection : dict
        Keyword arguments of :func:`~stemnmf.features.bragg.find_disks` but the kernel.
    kernel_ft : numpy.ndarray
        Fourier transform of the probe kernel (complex64).
    mask : numpy.ndarray or None
        Detector mask.
    settings : dict
        The resolved settings (recorded in the description).
    template : numpy.ndarray
        The probe template.
    """

    detection: dict
    kernel_ft: np.ndarray
    mask: np.ndarray | None
    settings: dict
    template: np.ndarray

    reads_nonfinite = False

    @classmethod
    def setup(cls, opts: FeatureOptions, stats: PatternStatistics | None, geometry: FeatureGeometry,
              beam_half) -> BraggFeatures:
        """Template, kernels and thresholds from the options (and the statistics for 'beam' and 'vacuum' templates)."""
        detection, settings, template = _bd_setup(opts, stats, geometry.origin, beam_half, geometry.shape, geometry.mask)
        kernel_ft = detection.pop("kernel_ft")
        return cls(detection, kernel_ft, geometry.mask, settings, template)

    def compute(self, patterns: np.ndarray, chunk) -> np.ndarray:
        """(n, max_disks, 3) float32 disks (qy, qx, intensity; NaN rows where none) of the patterns (n, qy, qx)."""
        n, qy, qx = patterns.shape
        per_batch = max(1, SUB_BATCH_BYTES // (16 * qy * qx))
        disks = np.empty((n, self.detection["max_disks"], 3), np.float32)
        for sel in _sub_batches(n, per_batch):
            disks[sel] = find_disks(patterns[sel], self.kernel_ft, mask=self.mask, **self.detection)
        return disks

    def assemble(self, disks: np.ndarray, geometry: FeatureGeometry) -> tuple[dict, dict]:
        """({'bd': (X, columns)}, by-products: Bragg vector map, disks per position, the disks, the template)."""
        X, columns, extra = _bd_features(disks, geometry.origins, geometry.origin, geometry.ellipse,
                                         bd_settings=self.settings, shape=geometry.shape,
                                         scan_shape=geometry.scan_shape)
        return {"bd": (X, columns)}, {**extra, "template": self.template}


@dataclasses.dataclass(frozen=True, eq=False)
class RawFeatures:
    """Raw: binned patterns (optionally log or sqrt), masked pixels left out."""

    factor: int
    transform: str | None
    masked: bool
    mask: np.ndarray | None
    settings: dict

    reads_nonfinite = False

    @classmethod
    def setup(cls, opts: FeatureOptions, geometry: FeatureGeometry) -> RawFeatures:
        """The binning factor and transform from the options."""
        raw, settings = _raw_setup(opts, geometry.shape)
        return cls(raw["factor"], raw["transform"], raw["masked"], geometry.mask, settings)

    def compute(self, patterns: np.ndarray, chunk) -> np.ndarray:
        """(n, n_bins) binned patterns."""
        return bin_patterns(patterns, self.factor, self.mask if self.masked else None, transform=self.transform,
                            drop_masked=self.masked)

    def assemble(self, values: np.ndarray, geometry: FeatureGeometry) -> tuple[dict, dict]:
        """({'raw': (X, columns)}, no by-products)."""
        _, cy, cx = raw_columns(geometry.shape, self.factor, self.mask if self.masked else None)
        return {"raw": (values, make_columns("raw", cy.size, qy=cy, qx=cx))}, {}


def _sub_batches(n_total, per_batch):
    """Slices (views, no copy) of at most ``per_batch`` positions."""
    for start in range(0, n_total, per_batch):
        yield slice(start, min(n_total, start + per_batch))


def _raw_setup(opts: FeatureOptions, shape):
    factor = auto_bin(shape) if opts.raw_bin == "auto" else int(opts.raw_bin)
    if factor > min(shape):
        raise ConfigError(f"raw_bin={factor} is larger than the patterns {shape}")
    transform = None if opts.raw_transform == "none" else opts.raw_transform
    raw = dict(factor=factor, transform=transform, masked=bool(opts.raw_masked))
    settings = dict(bin=factor, transform=transform, masked=raw["masked"],
                    binned_shape=[shape[0] // factor, shape[1] // factor])
    return raw, settings


def _beam_not_a_probe(stats: PatternStatistics, ref, radius, mask, *, compare_radius: bool) -> str:
    """Why the visible direct beam of the mean pattern is no image of the probe ('' when it is one).

    The unobstructed beam of a film carries at least about as many electrons
    as its brightest Bragg disk; one with less than :data:`MIN_BEAM_OVER_DISK` x that disk's
    intensity (both above the local background), or, with ``compare_radius``,
    whose half-maximum ``radius`` is below :data:`MIN_BEAM_RADIUS_RATIO` x
    that of the Bragg disks (cut by a stop's penumbra), is a beam leaking
    through a stop. No Bragg disks: nothing to compare with, the beam is kept.
    """
    if radius is None:
        return ""
    if not radius >= 0.5:
        return f"the direct beam has no measurable radius ({radius:.2f} px)"
    mean = stats.mean_pattern
    blocked = ~stats.valid if mask is None else mask | ~stats.valid
    try:
        beam = float(probe_template(mean, ref, radius).sum())
        _, found, disks = disk_template(mean, ref, radius=max(radius, 2.0), mask=blocked, return_intensities=True)
    except CalibrationError:
        return ""
    if disks.size and beam < MIN_BEAM_OVER_DISK * disks[0]:
        return (f"the direct beam holds {beam / disks[0]:.2g} x the brightest Bragg disk's intensity "
                f"(below {MIN_BEAM_OVER_DISK:g}: a beam leaking through a stop)")
    if compare_radius and radius < MIN_BEAM_RADIUS_RATIO * found:
        return (f"the direct beam's radius {radius:.2f} px is below {MIN_BEAM_RADIUS_RATIO:g} x the Bragg disks' "
                f"{found:.2f} px (cut by a beam stop)")
    return ""


def _bd_setup(opts: FeatureOptions, stats: PatternStatistics | None, ref, beam_half, shape, mask):
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
    reason = ""
    if kind == "beam":
        if beam_hidden(mask, ref):  # a beam stop over the direct beam: the Bragg disks are the probe
            reason = "the direct beam is behind the mask"
        else:  # a beam leaking through a stop is no image of the probe either
            reason = _beam_not_a_probe(stats, ref, radius, mask, compare_radius=opts.disk_radius is None)
    if reason:
        log.info("BD probe template from the Bragg disks: %s", reason)
        hidden = ~stats.valid if mask is None else mask | ~stats.valid
        t, found = disk_template(stats.mean_pattern, ref, radius=opts.disk_radius or 3.0, mask=hidden)
        if opts.disk_radius is None:  # again with the disks' own radius, until it settles (disks far from 3 px)
            for _ in range(MAX_TEMPLATE_PASSES):
                t, radius = disk_template(stats.mean_pattern, ref, radius=found, mask=hidden)
                settled, found = abs(radius - found) < 0.1, radius
                if settled:
                    break
        kind = "disks"
    radius = float(radius)
    if not radius > 0:
        raise ConfigError(f"disk_radius={radius} must be positive")
    if kind == "beam":
        t = probe_template(stats.mean_pattern, ref, radius)
    elif kind == "vacuum":
        t = probe_template(stats.vacuum_mean, find_origin(stats.vacuum_mean, mask) or ref, radius)
    elif kind == "synthetic":
        t = synthetic_disk(radius)
    elif kind != "disks":
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
        template=kind, template_reason=reason, disk_radius=radius, kernel_background=opts.kernel_background,
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
