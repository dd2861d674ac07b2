"""``calibrate(dataset, ...)``: the whole calibration of a scan, as the pipeline runs it."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from stemnmf.calibrate.common import pattern_statistics
from stemnmf.calibrate.disks import beam_hidden
from stemnmf.calibrate.ellipse import EllipseFit, fit_ellipse
from stemnmf.calibrate.ellipse_profiles import fit_ellipse_profiles
from stemnmf.calibrate.geometry import (
    _check_factor,
    bin_coordinates,
    bin_dataset,
    binned_calibration,
    bin_mask,
    bin_patterns,
    crop_dataset,
    crop_slices,
)
from stemnmf.calibrate.masks import beam_stop_mask, edge_mask
from stemnmf.calibrate.measure import estimate_probe, measure_origins
from stemnmf.calibrate.shift import shift_patterns, shifted_mask
from stemnmf.calibrate.surface import JitterCheck, OriginFit, fit_origin_surface, follow_jitter
from stemnmf.calibrate.pixels import find_dead_pixels, find_hot_pixels, replace_pixels
from stemnmf.calibrate.quality import CalibrationQuality, assess_calibration, disk_radius_pixels
from stemnmf.calibrate.symmetry import (
    SymmetryOrigins,
    block_edges,
    block_origins,
    block_sums_kernel,
    fit_block_surface,
    recentred_block_mean,
    shadow_mask,
    symmetry_center,
    symmetry_origins,
)
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError

__all__ = ["CalibrateOptions", "CalibrationReport", "calibrate", "calibrate_with"]

log = logging.getLogger(__name__)

#: Symmetry centres of blocks whose median score (peak over rms of the normalised autoconvolution) is below
#: this are noise: pure Poisson noise scores 2.5-4, diffraction patterns of a few dozen positions 5-12.
MIN_SYMMETRY_SCORE = 4.5

#: The coarse symmetry check of the 'com' origins (origin='auto') bins detectors of at least this many pixels a
#: side 2 x 2: the centres are then found to about 0.1 px, ten times finer than the check's 1 px tolerance.
COARSE_MIN_PIXELS = 128


@dataclasses.dataclass
class CalibrationReport:
    """What :func:`calibrate` found and did.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        (sy, sx, qy, qx) before and after (crop and binning).
    hot_pixels, dead_pixels : numpy.ndarray
        (n, 2) int (qy, qx) coordinates on the cropped, unbinned detector.
    probe_center : tuple of float or None
        Direct beam of the mean pattern (qy, qx), final pixel grid.
    probe_radius : float or None
        Its radius in pixels.
    origin_method : str or None
        'com', 'xcorr' or 'symmetry' (the method whose origins were used).
    origin_choice : str
        Why that method (with ``origin='auto'``), e.g. the beam is behind the stop.
    symmetry : SymmetryOrigins or None
        Symmetry centres of blocks of positions, when computed.
    symmetry_fit : OriginFit or None
        The surface through them.
    quality : CalibrationQuality or None
        Accuracy figures and the problems that make the calibration unreliable.
    origins_measured : numpy.ndarray or None
        (sy, sx, 2) measured origins (NaN where no beam), final grid.
    origin_fit : OriginFit or None
        The surface fitted over the scan, with residuals and outliers.
    origin_jitter : JitterCheck or None
        The measured origins' scatter about the surface against their own
        noise, and whether the origins follow them (``origin_jitter``).
    n_no_beam : int
        Positions without a direct beam.
    origins : numpy.ndarray or None
        (sy, sx, 2) per-position origins of the calibrated dataset
        (``Dataset4D.origins``: the fitted surface, moved towards the
        measurements where they show scan jitter, or all equal to ``origin``
        after shift correction).
    origin : tuple of float or None
        Mean origin (qy, qx) = ``Calibration.origin`` of the result.
    shift_corrected : bool
    max_shift : float
        Largest shift applied (px), 0 when none.
    ellipse : EllipseFit or None
        The ellipse applied (``Calibration.ellipse``).
    ellipse_rejected : EllipseFit or None
        A fitted ellipse not applied: too close to a circle for its own
        uncertainty (``ellipse_min_significance``).
    beam_stop_pixels, edge_pixels : int
        Pixels masked by the beam stop and the edge mask (unbinned grid).
    beam_stop_source : str
        How the beam stop was found: 'given' (a mask), 'dark region' (dark
        pixels connected to the centre), 'shadow' (the dark band of an arm
        reaching the detector edge, also when the beam leaks through the stop),
        '+'-joined when several; '' when none.
    mask : numpy.ndarray or None
        Final (qy, qx) mask.
    n_masked : int
        Masked pixels of the final mask.
    warnings : list of str
        Every fallback taken.
    options : dict
        The options :func:`calibrate` was called with.
    """

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] = ()
    hot_pixels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.int32))
    dead_pixels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.int32))
    probe_center: tuple[float, float] | None = None
    probe_radius: float | None = None
    origin_method: str | None = None
    origin_choice: str = ""
    symmetry: SymmetryOrigins | None = None
    symmetry_fit: OriginFit | None = None
    quality: CalibrationQuality | None = None
    origins_measured: np.ndarray | None = None
    origin_fit: OriginFit | None = None
    origin_jitter: JitterCheck | None = None
    n_no_beam: int = 0
    origins: np.ndarray | None = None
    origin: tuple[float, float] | None = None
    shift_corrected: bool = False
    max_shift: float = 0.0
    ellipse: EllipseFit | None = None
    ellipse_rejected: EllipseFit | None = None
    beam_stop_pixels: int = 0
    beam_stop_source: str = ""
    edge_pixels: int = 0
    mask: np.ndarray | None = None
    n_masked: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_hot(self) -> int:
        return int(len(self.hot_pixels))

    @property
    def n_dead(self) -> int:
        return int(len(self.dead_pixels))

    def add_beam_stop_source(self, source: str) -> None:
        """Record one more way the beam stop was found."""
        self.beam_stop_source = "+".join(filter(None, (self.beam_stop_source, source)))

    def warn(self, message: str) -> None:
        """Record and log a fallback."""
        log.warning(message)
        self.warnings.append(message)

    def to_results(self) -> dict[str, Any]:
        """``{'/calibration/...': value}`` for the results file (see docs/calibration.md)."""
        out: dict[str, Any] = {
            "/calibration/hot_pixels": np.asarray(self.hot_pixels, dtype=np.int32).reshape(-1, 2),
            "/calibration/dead_pixels": np.asarray(self.dead_pixels, dtype=np.int32).reshape(-1, 2),
            "/calibration/n_masked": np.int64(self.n_masked),
            "/calibration/beam_stop_pixels": np.int64(self.beam_stop_pixels),
            "/calibration/beam_stop_source": self.beam_stop_source,
            "/calibration/shift_corrected": np.uint8(self.shift_corrected),
            "/calibration/max_shift": np.float64(self.max_shift),
            "/calibration/warnings": np.asarray(self.warnings, dtype=str).reshape(-1),
        }
        if self.mask is not None:
            out["/calibration/mask"] = np.asarray(self.mask, dtype=np.uint8)
        if self.origin is not None:
            out["/calibration/origin"] = np.asarray(self.origin, dtype=np.float64)
        if self.probe_radius is not None:
            out["/calibration/probe_radius"] = np.float64(self.probe_radius)
        if self.origin_method is not None:
            out["/calibration/origin_method"] = self.origin_method
        if self.origins_measured is not None:
            out["/calibration/origins_measured"] = np.asarray(self.origins_measured, dtype=np.float32)
            out["/calibration/n_no_beam"] = np.int64(self.n_no_beam)
        if self.origins is not None:
            out["/calibration/origins"] = np.asarray(self.origins, dtype=np.float32)
        if self.origin_fit is not None:
            fit = self.origin_fit
            out["/calibration/origin_fit/fitted"] = np.asarray(fit.fitted, dtype=np.float32)
            out["/calibration/origin_fit/model"] = fit.model
            out["/calibration/origin_fit/terms"] = np.asarray(fit.terms, dtype=str)
            out["/calibration/origin_fit/coefficients"] = np.asarray(fit.coefficients, dtype=np.float64)
            out["/calibration/origin_fit/residual_rms"] = np.float64(fit.residual_rms)
            out["/calibration/origin_fit/outliers"] = np.asarray(fit.outliers, dtype=np.uint8)
        if self.origin_jitter is not None:
            check = self.origin_jitter
            out["/calibration/origin_jitter/followed"] = np.uint8(check.followed)
            out["/calibration/origin_jitter/residual_sd"] = np.asarray(check.residual_sd, dtype=np.float64)
            out["/calibration/origin_jitter/noise_sd"] = np.asarray(check.noise_sd, dtype=np.float64)
            out["/calibration/origin_jitter/ratio"] = np.asarray(check.ratio, dtype=np.float64)
            out["/calibration/origin_jitter/threshold"] = np.float64(check.threshold)
            out["/calibration/origin_jitter/shrink"] = np.asarray(check.shrink, dtype=np.float64)
        if self.origin_choice:
            out["/calibration/origin_choice"] = self.origin_choice
        if self.symmetry is not None:
            out["/calibration/symmetry/centers"] = np.asarray(self.symmetry.centers, dtype=np.float32)
            out["/calibration/symmetry/scores"] = np.asarray(self.symmetry.scores, dtype=np.float32)
            out["/calibration/symmetry/row_edges"] = np.asarray(self.symmetry.row_edges, dtype=np.int32)
            out["/calibration/symmetry/col_edges"] = np.asarray(self.symmetry.col_edges, dtype=np.int32)
            if self.symmetry_fit is not None:
                out["/calibration/symmetry/fitted"] = np.asarray(self.symmetry_fit.fitted, dtype=np.float32)
                out["/calibration/symmetry/residual_rms"] = np.float64(self.symmetry_fit.residual_rms)
        if self.quality is not None:
            out.update(self.quality.to_results())
        if self.ellipse is not None:
            e = self.ellipse
            out["/calibration/ellipse"] = np.asarray(e.ellipse, dtype=np.float64)
            out["/calibration/ellipse_center"] = np.asarray(e.center, dtype=np.float64)
            out["/calibration/ellipse_rms"] = np.float64(e.rms)
            out["/calibration/ellipse_n_points"] = np.int64(e.n_points)
            out["/calibration/ellipse_axis_ratio"] = np.float64(e.axis_ratio)
            out["/calibration/ellipse_axis_ratio_std"] = np.float64(e.axis_ratio_std)
            out["/calibration/ellipse_angle_std"] = np.float64(e.angle_std)
            out["/calibration/ellipse_significance"] = np.float64(e.significance)
        if self.ellipse_rejected is not None:
            e = self.ellipse_rejected
            out["/calibration/ellipse_rejected"] = np.asarray(
                [e.a, e.b, e.angle, e.axis_ratio_std, e.angle_std, e.significance], dtype=np.float64
            )
        return out

    def summary(self) -> str:
        """A few lines for logs and reports."""
        lines = [
            f"shape {self.input_shape} -> {self.output_shape}",
            f"hot pixels {self.n_hot}, dead pixels {self.n_dead}, masked pixels {self.n_masked}",
        ]
        if self.beam_stop_pixels:
            lines.append(f"beam stop {self.beam_stop_pixels} px masked ({self.beam_stop_source})")
        if self.origin is not None:
            lines.append(f"origin ({self.origin[0]:.2f}, {self.origin[1]:.2f}) px via {self.origin_method}")
        if self.origin_choice:
            lines.append(f"origin method: {self.origin_choice}")
        if self.origin_fit is not None:
            lines.append(
                f"origin {self.origin_fit.model} fit: rms {self.origin_fit.residual_rms:.3f} px, "
                f"{int(self.origin_fit.outliers.sum())} outliers"
            )
        if self.origin_jitter is not None:
            lines.append(_jitter_text(self.origin_jitter))
        if self.shift_corrected:
            lines.append(f"shift corrected (max {self.max_shift:.2f} px)")
        if self.ellipse is not None:
            e = self.ellipse
            lines.append(
                f"ellipse a={e.a:.2f} b={e.b:.2f} px angle={np.degrees(e.angle):.1f} deg (rms {e.rms:.2f} px, "
                f"{e.significance:.1f} sd from a circle)"
            )
        if self.ellipse_rejected is not None:
            e = self.ellipse_rejected
            lines.append(f"ellipse not applied: a/b {e.axis_ratio:.4f} is {e.significance:.1f} sd from a circle")
        if self.quality is not None and not self.quality.reliable:
            lines.append("CALIBRATION UNRELIABLE: " + "; ".join(self.quality.problems))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _jitter_text(check: JitterCheck) -> str:
    """One line on the origins' scatter about their surface against their noise, and what was used."""
    used = ("the measurements (residuals kept x " + "/".join(f"{v:.2f}" for v in check.shrink) + ")"
            if check.followed else "the surface")
    return (f"origin scatter about the surface {'/'.join(f'{v:.3f}' for v in check.residual_sd)} px (qy/qx), "
            f"measurement noise {'/'.join(f'{v:.3f}' for v in check.noise_sd)} px: "
            f"variance ratio {'/'.join(f'{v:.1f}' for v in check.ratio)} (threshold {check.threshold:.1f}); "
            f"origins from {used}")


def _prepare(patterns, *, bad, mask, factor):
    """Hot-pixel replacement, then detector binning, of (n, qy, qx) patterns."""
    if bad is not None:
        patterns, _ = replace_pixels(patterns, bad, mask=mask)
    if factor > 1:
        patterns = bin_patterns(patterns, factor)
    return patterns


def _prepare_kernel(block, chunk, *, prepare):
    own = block[chunk.own]
    return prepare[0](own.reshape(-1, *own.shape[2:]), **prepare[1])


def _final_kernel(block, chunk, *, prepare, shifts):
    """Engine transform kernel: prepare (hot pixels, binning), then shift correction."""
    own = block[chunk.own]
    patterns = own.reshape(-1, *own.shape[2:])
    if prepare is not None:
        patterns = prepare[0](patterns, **prepare[1])
    if shifts is not None:
        patterns = shift_patterns(patterns, shifts[chunk.positions])
    return patterns


def _input_edges(edges: np.ndarray, factor: int, size: int) -> np.ndarray:
    """Block edges of a scan binned by ``factor`` on the unbinned grid (the remainder joins the last block)."""
    out = np.asarray(edges) * factor
    out[-1] = size
    return out


def _symmetry_centre_and_shadow(mean, mask, origin, beam_stop, report, n_averaged=1,
                                found_stop=None) -> tuple[float, float] | None:
    """Symmetry centre of the mean pattern; with ``beam_stop='auto'`` its shadows are masked (``mask`` grows).

    ``found_stop`` (the dark region already masked as the beam stop) counts as shadow, so an arm that
    region covers only in part is still followed out to the detector edge.
    """
    qy, qx = mean.shape
    guess = origin if origin is not None else ((qy - 1) / 2.0, (qx - 1) / 2.0)
    try:
        centre, _ = symmetry_center(mean, mask=mask, guess=guess, search_radius=min(qy, qx) / 4.0)
        if isinstance(beam_stop, str) and beam_stop == "auto":
            given = mask if found_stop is None else mask & ~found_stop
            shadow = shadow_mask(mean, centre, mask=given, n_averaged=n_averaged) & ~mask
            if shadow.any() and not (mask | shadow).all():
                log.info("shadow of a beam stop found: %d pixels", int(shadow.sum()))
                report.beam_stop_pixels += int(shadow.sum())
                report.add_beam_stop_source("shadow")
                mask |= shadow
                centre, _ = symmetry_center(mean, mask=mask, guess=centre, search_radius=min(qy, qx) / 8.0)
    except CalibrationError:
        return None
    return centre


def _merged_blocks(blocks, row_edges, col_edges):
    """2 x 2 neighbouring blocks summed (an odd last row or column of blocks joins the one before)."""
    if min(blocks.shape[:2]) < 4:
        return blocks, row_edges, col_edges
    ny, nx = blocks.shape[0] // 2 * 2, blocks.shape[1] // 2 * 2
    merged = blocks[:ny, :nx].reshape(ny // 2, 2, nx // 2, 2, *blocks.shape[2:]).sum(axis=(1, 3))
    if ny < blocks.shape[0]:
        merged[-1] += blocks[ny:, :nx].reshape(-1, nx // 2, 2, *blocks.shape[2:]).sum(axis=(0, 2))
    if nx < blocks.shape[1]:
        merged[:, -1] += blocks[:ny, nx:].reshape(ny // 2, 2, -1, *blocks.shape[2:]).sum(axis=(1, 2))
    if ny < blocks.shape[0] and nx < blocks.shape[1]:
        merged[-1, -1] += blocks[ny:, nx:].sum(axis=(0, 1))
    return merged, np.append(row_edges[:ny:2], row_edges[-1]), np.append(col_edges[:nx:2], col_edges[-1])


def _symmetry(report, blocks, row_edges, col_edges, mask, centre, model, *, coarse=False) -> None:
    """Symmetry centres of the blocks and their surface into the report (None when they cannot be found).

    ``coarse`` merges 2 x 2 blocks first and, on detectors of at least ``COARSE_MIN_PIXELS`` a side, bins
    2 x 2 detector pixels (a sixteenth of the work): enough to check another method.
    """
    report.symmetry = report.symmetry_fit = None
    if centre is None:
        return
    factor = 1
    if coarse:
        blocks, row_edges, col_edges = _merged_blocks(blocks, row_edges, col_edges)
        if min(blocks.shape[2:]) >= COARSE_MIN_PIXELS:
            factor = 2
            blocks, mask, centre = bin_patterns(blocks, 2), bin_mask(mask, 2), tuple(bin_coordinates(centre, 2))
    try:
        symmetry = symmetry_origins(blocks, row_edges, col_edges, mask=mask, guess=centre)
        if factor > 1:  # back to the detector's pixels
            symmetry.centers = symmetry.centers * factor + (factor - 1) / 2.0
            symmetry.per_position = symmetry.per_position * factor + (factor - 1) / 2.0
        report.symmetry = symmetry
        report.symmetry_fit = None if model is None else fit_block_surface(symmetry, model=model)
    except CalibrationError as err:
        report.symmetry = report.symmetry_fit = None
        log.info("no symmetry origins: %s", err.problem)


def _use_symmetry(report, blocks, mask):
    """Take the symmetry origins: (per-position origins, recentred mean for the ellipse)."""
    symmetry, fit = report.symmetry, report.symmetry_fit
    if symmetry is None:
        raise CalibrationError("no direct beam and no symmetric diffraction to find the origin from")
    score = float(np.median(symmetry.scores))
    if score < MIN_SYMMETRY_SCORE:
        raise CalibrationError(
            f"no direct beam found, and the patterns are not symmetric enough to find the origin from "
            f"(median symmetry score {score:.1f} < {MIN_SYMMETRY_SCORE})"
        )
    report.origin_method = "symmetry"
    report.origin_fit = fit
    report.origin_jitter = None
    report.origins_measured = symmetry.per_position.astype(np.float32)
    report.n_no_beam = 0
    origins = (fit.fitted if fit is not None else symmetry.per_position).astype(np.float32)
    reference = tuple(float(v) for v in origins.reshape(-1, 2).mean(axis=0))
    image, image_mask = recentred_block_mean(blocks, block_origins(symmetry, fit), reference, mask=mask)
    return origins, (image, reference, image_mask)


def _com_or_symmetry(report) -> tuple[str, str]:
    """Keep the direct-beam origins or take the symmetry ones (origin='auto'), and why."""
    com, sym = report.origin_fit, report.symmetry_fit
    n = report.origins_measured[..., 0].size
    visible = 1.0 - report.n_no_beam / n
    tolerance = max(0.5, 0.25 * float(report.probe_radius or 0.0))
    com_ok = com is not None and visible >= 0.9 and com.residual_rms <= tolerance
    usable = sym is not None and float(np.median(report.symmetry.scores)) >= MIN_SYMMETRY_SCORE
    sym_ok = usable and sym.residual_rms <= 2.0 * tolerance and np.mean(sym.outliers) <= 0.5
    seen = f"direct beam in {100 * visible:.0f} % of the patterns"
    if com_ok and not sym_ok:
        return "com", f"{seen}; the symmetry centres are not consistent enough to compare"
    if com_ok:
        gap = float(np.sqrt(np.mean(np.sum((com.fitted - sym.fitted) ** 2, axis=-1))))
        if gap <= max(1.0, 2.0 * tolerance):
            return "com", f"{seen}, {gap:.2f} px rms from the symmetry centres"
        return "symmetry", f"{seen}, but its fit is {gap:.1f} px rms from the symmetry centres (rms {sym.residual_rms:.2f} px)"
    if usable:
        fit = "" if com is None else f", its fit rms {com.residual_rms:.2f} px"
        return "symmetry", f"{seen}{fit}: not enough to trust; the symmetry centres are used"
    return "com", f"{seen} and no symmetric diffraction to check it against"


def _coords(flags: np.ndarray) -> np.ndarray:
    return np.argwhere(flags).astype(np.int32).reshape(-1, 2)


@dataclasses.dataclass(frozen=True)
class CalibrateOptions:
    """The options of :func:`calibrate` (see there), checked by :meth:`checked`."""

    hot_pixels: bool = True
    hot_pixel_threshold: float = 0.55
    hot_pixel_mode: str = "relative"
    hot_pixel_reference: str = "mean"
    dead_pixels: bool = True
    dead_pixel_threshold: float = 0.1
    bin_q: int = 1
    bin_scan: int = 1
    crop_q: Any = None
    crop_scan: Any = None
    origin: str | None = "auto"
    origin_fit: str | None = "plane"
    origin_jitter: str = "auto"
    correct_shift: bool = False
    probe: Any = None
    ellipse: bool = False
    ring: Any = None
    beam_stop: Any = "auto"
    edge_pixels: int = 0
    strict: bool = False
    on_unreliable: str = "stop"
    symmetry_blocks: int = 10
    ellipse_min_significance: float = 5.0

    def checked(self) -> CalibrateOptions:
        """The same options with the binning factors checked; :class:`ConfigError` on an invalid one."""
        if self.origin not in ("auto", "com", "xcorr", "symmetry", None):
            raise ConfigError(f"origin={self.origin!r} is unknown", "use 'auto', 'com', 'xcorr', 'symmetry' or None")
        if self.on_unreliable not in ("stop", "warn"):
            raise ConfigError(f"on_unreliable={self.on_unreliable!r} is unknown", "use 'stop' or 'warn'")
        blocks = self.symmetry_blocks
        if isinstance(blocks, bool) or not isinstance(blocks, int | np.integer) or blocks < 1:
            raise ConfigError(f"symmetry_blocks={blocks!r} must be a positive integer")
        significance = self.ellipse_min_significance
        if isinstance(significance, bool) or not isinstance(significance, int | float) or not significance >= 0:
            raise ConfigError(f"ellipse_min_significance={significance!r} must be a number >= 0")
        if self.origin_fit not in ("plane", "quadratic", None):
            raise ConfigError(f"origin_fit={self.origin_fit!r} is unknown", "use 'plane', 'quadratic' or None")
        if self.origin_jitter not in ("auto", "follow", "surface"):
            raise ConfigError(f"origin_jitter={self.origin_jitter!r} is unknown", "use 'auto', 'follow' or 'surface'")
        if self.hot_pixel_reference not in ("mean", "max"):
            raise ConfigError(f"hot_pixel_reference={self.hot_pixel_reference!r} is unknown", "use 'mean' or 'max'")
        if self.auto_beam_stop is False and isinstance(self.beam_stop, str):
            raise ConfigError(f"beam_stop={self.beam_stop!r} is unknown", "use 'auto', None or a mask array")
        return dataclasses.replace(
            self, bin_q=_check_factor(self.bin_q, "bin_q"), bin_scan=_check_factor(self.bin_scan, "bin_scan")
        )

    @property
    def auto_beam_stop(self) -> bool:
        return isinstance(self.beam_stop, str) and self.beam_stop == "auto"

    @property
    def use_symmetry(self) -> bool:
        """Whether the block sums for the symmetry origins are accumulated."""
        return self.origin in ("auto", "symmetry")

    def record(self) -> dict[str, Any]:
        """The options as the report records them (lists for tuples, 'array' for a mask)."""
        beam_stop = self.beam_stop
        return dict(
            hot_pixels=self.hot_pixels, hot_pixel_threshold=self.hot_pixel_threshold,
            hot_pixel_mode=self.hot_pixel_mode, hot_pixel_reference=self.hot_pixel_reference,
            dead_pixels=self.dead_pixels, dead_pixel_threshold=self.dead_pixel_threshold, bin_q=self.bin_q,
            bin_scan=self.bin_scan, crop_q=None if self.crop_q is None else list(self.crop_q),
            crop_scan=None if self.crop_scan is None else list(self.crop_scan), origin=self.origin,
            origin_fit=self.origin_fit, origin_jitter=self.origin_jitter, correct_shift=self.correct_shift,
            ellipse=self.ellipse,
            ring=None if self.ring is None else list(self.ring),
            beam_stop=beam_stop if beam_stop is None or isinstance(beam_stop, str) else "array",
            edge_pixels=self.edge_pixels, strict=self.strict, on_unreliable=self.on_unreliable,
            symmetry_blocks=self.symmetry_blocks, ellipse_min_significance=self.ellipse_min_significance,
        )


@dataclasses.dataclass
class _State:
    """What the steps of :func:`calibrate` pass on to each other."""

    options: CalibrateOptions
    engine: Any
    report: CalibrationReport
    ds: Any = None  # the cropped input (its chunks are what the final transform reads)
    qshape: tuple[int, int] = (0, 0)  # detector shape before binning
    mask: np.ndarray | None = None  # (qshape, then pshape) mask, grown step by step
    mean: np.ndarray | None = None
    maximum: np.ndarray | None = None
    blocks: np.ndarray | None = None  # (ny, nx, qy, qx) block sums for the symmetry origins
    row_edges: np.ndarray | None = None
    col_edges: np.ndarray | None = None
    hot: np.ndarray | None = None
    found_stop: np.ndarray | None = None  # the beam stop found as a dark region (beam_stop='auto')
    symmetry_centre: tuple[float, float] | None = None
    raw: Any = None  # what the final transform reads (cropped, or scan-binned)
    cal: Any = None  # the calibration of the result, updated step by step
    origins_in: np.ndarray | None = None
    pshape: tuple[int, int] = (0, 0)  # detector shape after binning
    prepare: tuple | None = None  # (function, kwargs): hot pixels and detector binning, per chunk
    hidden: bool = False  # the direct beam is behind the mask
    origins: np.ndarray | None = None  # final per-position origins
    recentred: tuple | None = None  # (image, centre, mask) of the re-centred mean for the ellipse
    shifts: np.ndarray | None = None
    out_mask: np.ndarray | None = None
    out_origins: np.ndarray | None = None

    @property
    def mask_or_none(self) -> np.ndarray | None:
        return self.mask if self.mask.any() else None

    def fallback(self, err: CalibrationError, what: str) -> None:
        """Raise with ``strict``, else record the fallback taken."""
        if self.options.strict:
            raise err
        self.report.warn(f"{err.problem}; {what}")

    def symmetry(self, *, coarse: bool = False) -> None:
        """Symmetry centres of the blocks and their surface into the report."""
        _symmetry(self.report, self.blocks, self.row_edges, self.col_edges, self.mask_or_none,
                  self.symmetry_centre, self.options.origin_fit, coarse=coarse)

    def use_symmetry(self) -> None:
        """Take the symmetry origins (raises :class:`CalibrationError` when there are none to trust)."""
        self.origins, self.recentred = _use_symmetry(self.report, self.blocks, self.mask_or_none)


def calibrate(
    dataset,
    *,
    engine=None,
    hot_pixels: bool = True,
    hot_pixel_threshold: float = 0.55,
    hot_pixel_mode: str = "relative",
    hot_pixel_reference: str = "mean",
    dead_pixels: bool = True,
    dead_pixel_threshold: float = 0.1,
    bin_q: int = 1,
    bin_scan: int = 1,
    crop_q=None,
    crop_scan=None,
    origin: str | None = "auto",
    origin_fit: str | None = "plane",
    origin_jitter: str = "auto",
    correct_shift: bool = False,
    probe=None,
    ellipse: bool = False,
    ring=None,
    beam_stop="auto",
    edge_pixels: int = 0,
    strict: bool = False,
    on_unreliable: str = "stop",
    symmetry_blocks: int = 10,
    ellipse_min_significance: float = 5.0,
):
    """Calibrate a 4D-STEM scan: bad pixels, crop and binning, masks, origins, shift, ellipse.

    The steps run in this order: crop; one streamed pass for the mean and
    maximum patterns; edge, dead-pixel and beam-stop masks; hot pixels found
    on the mean (or max) pattern; scan binning; origin per position (one pass
    in which every chunk is cleaned and binned first, and which also sums the
    re-centred patterns); surface fit; ellipse fit on the mean of the
    re-centred patterns; and finally one per-pattern transform of the input
    that replaces hot pixels, bins the detector and corrects the shift (lazy
    for lazy input). Lazy input is read twice.

    Parameters
    ----------
    dataset : Dataset4D
    engine : Engine, optional
        Where per-pattern work runs; default ``Engine()``.
    hot_pixels : bool, default True
        Find and replace hot pixels (Bruefach et al. 2022 rule).
    hot_pixel_threshold : float, default 0.55
        Fraction above the local sorted intensity (``hot_pixel_mode='relative'``)
        or counts (``'absolute'``).
    hot_pixel_mode : {'relative', 'absolute'}
    hot_pixel_reference : {'mean', 'max'}
        Pattern the hot pixels are found on.
    dead_pixels : bool, default True
        Mask pixels darker than ``dead_pixel_threshold`` x their darkest neighbour.
    dead_pixel_threshold : float, default 0.1
    bin_q, bin_scan : int, default 1
        Binning factors (sums); ``q_pixel`` and ``scan_step`` are scaled.
    crop_q, crop_scan : tuple of 4 int, optional
        ``(y0, y1, x0, x1)`` crops, applied first (on the input grid).
    origin : {'auto', 'com', 'xcorr', 'symmetry', None}, default 'auto'
        How the origin is found: 'com' / 'xcorr' measure the direct beam at
        each position; 'symmetry' takes the centre of inversion symmetry of
        the patterns summed over blocks of positions (works with the beam
        blocked or saturated); 'auto' uses 'com' where the direct beam is
        visible and consistent with the symmetry centres, else 'symmetry'
        (``report.origin_choice`` says why). None skips it.
    origin_fit : {'plane', 'quadratic', None}, default 'plane'
        Surface fitted over the scan; its values replace the measurements
        (outliers and positions without a beam included). None keeps the
        measurements (missing ones filled with their median).
    origin_jitter : {'auto', 'follow', 'surface'}, default 'auto'
        With 'com' origins and a surface: 'auto' compares the measurements'
        scatter about the surface with their own noise (from the checkerboard
        halves of each beam) and, where the scatter's variance is at least
        four times the noise's (scan jitter), keeps the measurements shrunk
        towards the surface by the noise-to-scatter variance ratio; 'follow'
        always does; 'surface' keeps the surface (``report.origin_jitter``).
    correct_shift : bool, default False
        Shift every pattern so its origin lands on the mean origin (bilinear,
        sub-pixel); the mask grows by the largest shift.
    probe : array_like, optional
        (qy, qx) probe image for ``origin='xcorr'`` (final pixel grid).
    ellipse : bool, default False
        Fit the elliptical distortion of a ring of the mean pattern.
    ring : tuple of float, optional
        (r_min, r_max) ring window in final-grid pixels from the origin;
        default the most prominent ring. The ring is fitted on the mean of the
        patterns each re-centred on its measured origin (accumulated in the
        origin pass), or on the plain mean pattern when no origins are measured.
    beam_stop : 'auto', None or array_like, default 'auto'
        Detect a beam stop (dark region of the mean pattern connected to the
        centre and, with ``origin`` 'auto' or 'symmetry', the shadow of an arm
        reaching the detector edge, also when the beam leaks through the stop),
        skip it, or give its mask (input or cropped detector shape).
    edge_pixels : int, default 0
        Mask this many pixels along the detector edges.
    strict : bool, default False
        Raise :class:`CalibrationError` instead of falling back (no direct
        beam, no ring) with a warning.
    on_unreliable : {'stop', 'warn'}, default 'stop'
        When the accuracy checks fail (origins scattering by more than a disk
        radius about their surface, a surface leaving the detector, most of
        the detector masked, an uncertain ellipse): raise
        :class:`CalibrationError` or go on with a loud warning
        (``report.quality.problems``).
    symmetry_blocks : int, default 10
        The scan is cut into about this many blocks per side for 'symmetry'.
    ellipse_min_significance : float, default 5
        The fitted ellipse is applied only when it stands at least this many
        bootstrap standard deviations from a circle (``EllipseFit.significance``);
        otherwise it is kept in ``report.ellipse_rejected`` with a warning. 0
        applies every fit.

    Returns
    -------
    dataset : Dataset4D
        Calibrated (lazy when the input is lazy) with ``mask``, ``origins``,
        ``Calibration.origin`` and ``Calibration.ellipse`` set.
    report : CalibrationReport

    Raises
    ------
    ConfigError
        Invalid options.
    CalibrationError
        A mask covering everything; an unreliable calibration with
        ``on_unreliable='stop'``; with ``strict``, any failed step.
    """
    options = {name: value for name, value in locals().items() if name not in ("dataset", "engine")}
    return calibrate_with(dataset, CalibrateOptions(**options), engine=engine)


def calibrate_with(dataset, options: CalibrateOptions, *, engine=None):
    """:func:`calibrate` with its options in a :class:`CalibrateOptions`; same returns and errors."""
    record = options.record()
    options = options.checked()
    state = _State(options=options, engine=engine or Engine(),
                   report=CalibrationReport(input_shape=dataset.shape, options=record))
    _crop_and_given_masks(state, dataset)
    _statistics(state)
    _found_masks(state)
    _hot_pixels(state)
    if options.use_symmetry:
        state.symmetry_centre = _symmetry_centre_and_shadow(
            state.mean, state.mask, state.ds.calibration.origin, options.beam_stop, state.report,
            n_averaged=state.ds.n_positions, found_stop=state.found_stop,
        )
    _detector_binning(state)
    _scan_binning(state)
    _origins(state)
    _shift_correction(state)
    if options.ellipse:
        _ellipse(state)
    return _finish(state)


def _crop_and_given_masks(state: _State, dataset) -> None:
    """1. crop; 2. the masks given up front (edges, a beam-stop array)."""
    opts, report = state.options, state.report
    state.ds = crop_dataset(dataset, q=opts.crop_q, scan=opts.crop_scan)
    qshape = state.qshape = state.ds.pattern_shape
    mask = state.mask = np.zeros(qshape, dtype=bool) if state.ds.mask is None else state.ds.mask.copy()
    if opts.edge_pixels:
        edges = edge_mask(qshape, opts.edge_pixels)
        report.edge_pixels = int((edges & ~mask).sum())
        mask |= edges
    if opts.beam_stop is not None and not isinstance(opts.beam_stop, str):
        stop = np.asarray(opts.beam_stop, dtype=bool)
        if stop.shape == dataset.pattern_shape and stop.shape != qshape:
            ys, xs = crop_slices(dataset.pattern_shape, opts.crop_q, "crop_q")
            stop = stop[ys, xs]
        if stop.shape != qshape:
            raise ConfigError(
                f"beam_stop mask shape {stop.shape} does not match the detector {qshape}",
                "give one value per detector pixel",
            )
        report.beam_stop_pixels = int((stop & ~mask).sum())
        report.add_beam_stop_source("given")
        mask |= stop


def _statistics(state: _State) -> None:
    """3. one pass for the mean and max patterns (and the block sums for the symmetry origins)."""
    opts, ds, engine = state.options, state.ds, state.engine
    need_stats = (opts.hot_pixels or opts.dead_pixels or opts.auto_beam_stop or opts.origin is not None
                  or opts.ellipse)
    if opts.use_symmetry:
        # blocks of the (scan-binned) grid, accumulated on the input grid in the same pass as the mean
        sy, sx = ds.scan_shape
        # each partial sum in flight (and each copy while they are cleaned) holds every block: 1/64 of the budget
        fit = int(np.sqrt(engine.memory_budget / 64 / (4 * ds.pattern_shape[0] * ds.pattern_shape[1])))
        n_blocks = max(3, min(int(opts.symmetry_blocks), fit))
        bin_scan = opts.bin_scan
        state.row_edges, state.col_edges = block_edges((sy // bin_scan, sx // bin_scan), n_blocks)
        mean, maximum, blocks = engine.reduce(
            block_sums_kernel, ds, combine=["sum", "max", "sum"], desc="mean pattern and block sums",
            kwargs=dict(row_edges=_input_edges(state.row_edges, bin_scan, sy),
                        col_edges=_input_edges(state.col_edges, bin_scan, sx)),
        )
        state.blocks = np.asarray(blocks, dtype=np.float64)
        state.mean = (mean / ds.n_positions).astype(np.float32)
        state.maximum = np.asarray(maximum, dtype=np.float32)
    elif need_stats:
        state.mean, state.maximum = pattern_statistics(ds, engine)


def _found_masks(state: _State) -> None:
    """Dead pixels and the beam stop found on the mean pattern."""
    opts, report, mask, mean, qshape = state.options, state.report, state.mask, state.mean, state.qshape
    if opts.dead_pixels:
        dead = find_dead_pixels(mean, threshold=opts.dead_pixel_threshold, mask=mask)
        report.dead_pixels = _coords(dead)
        mask |= dead
        if dead.any():
            log.info("%d dead pixels masked", int(dead.sum()))
    if opts.auto_beam_stop:
        centres = [((qshape[0] - 1) / 2.0, (qshape[1] - 1) / 2.0)]
        if state.ds.calibration.origin is not None:
            centres.append(state.ds.calibration.origin)
        else:
            try:
                centres.append(estimate_probe(mean, mask=mask).center)
            except CalibrationError:
                pass
        stop = np.zeros(qshape, dtype=bool)
        for centre in centres:
            stop |= beam_stop_mask(mean, center=centre, mask=mask)
        report.beam_stop_pixels = int((stop & ~mask).sum())
        if report.beam_stop_pixels:
            report.add_beam_stop_source("dark region")
        state.found_stop = stop & ~mask
        mask |= stop
    if mask.all():
        raise CalibrationError("the masks cover every detector pixel", "mask fewer pixels (edge_pixels, beam_stop)")


def _hot_pixels(state: _State) -> None:
    """4. hot pixels found on the mean (or max) pattern, replaced there (and in the later passes)."""
    opts, report, mask, qshape = state.options, state.report, state.mask, state.qshape
    state.hot = np.zeros(qshape, dtype=bool)
    if not opts.hot_pixels:
        return
    reference = state.mean if opts.hot_pixel_reference == "mean" else state.maximum
    hot = state.hot = find_hot_pixels(reference, threshold=opts.hot_pixel_threshold, mode=opts.hot_pixel_mode,
                                      mask=mask)
    report.hot_pixels = _coords(hot)
    if not hot.any():
        return
    log.info("%d hot pixels replaced by their 3 x 3 median", int(hot.sum()))
    cal = state.ds.calibration
    if cal.convergence_angle and cal.q_pixel and cal.beam_energy:
        beam_radius = disk_radius_pixels(cal, qshape)
    else:
        try:
            beam_radius = estimate_probe(state.mean, mask=mask).radius
        except CalibrationError:
            beam_radius = None
    if beam_radius is not None and beam_radius < 2.0:
        report.warn(
            f"the direct beam is only {beam_radius:.1f} px in radius and disks this small can pass for "
            f"hot pixels ({int(hot.sum())} found); check report.hot_pixels or raise hot_pixel_threshold"
        )
    state.mean, unfixed = replace_pixels(state.mean, hot, mask=mask)
    if state.blocks is not None:
        blocks = state.blocks
        state.blocks = replace_pixels(blocks.reshape(-1, *qshape), hot, mask=mask)[0].reshape(blocks.shape)
    if unfixed.any():
        report.warn(f"{int(unfixed.sum())} hot pixels have no usable neighbour; they are masked")
        mask |= unfixed


def _detector_binning(state: _State) -> None:
    """The per-chunk preparation (hot pixels, detector binning) and the calibration on the binned grid."""
    bin_q, hot, report = state.options.bin_q, state.hot, state.report
    state.raw = state.ds.replace(mask=state.mask_or_none)
    state.cal, state.origins_in = state.ds.calibration, state.ds.origins
    state.pshape = state.qshape
    if not (hot.any() or bin_q > 1):
        return
    qy, qx = state.qshape
    state.pshape = (qy // bin_q, qx // bin_q)
    if 0 in state.pshape:
        raise ConfigError(f"bin_q={bin_q} is larger than the pattern ({qy} x {qx})", "use a smaller bin")
    if bin_q > 1 and (qy % bin_q or qx % bin_q):
        report.warn(f"bin_q={bin_q} does not divide the {qy} x {qx} pattern; the remainder is dropped")
    state.prepare = (_prepare, {"bad": hot if hot.any() else None, "mask": state.mask.copy(), "factor": bin_q})
    if bin_q > 1:
        state.cal = binned_calibration(state.cal, bin_q)
        if state.origins_in is not None:
            state.origins_in = bin_coordinates(state.origins_in, bin_q).astype(np.float32)
        state.mask = bin_mask(state.mask, bin_q)
        if state.mean is not None:
            state.mean = bin_patterns(state.mean, bin_q)
        if state.blocks is not None:
            state.blocks = bin_patterns(state.blocks, bin_q)
            state.symmetry_centre = tuple(bin_coordinates(state.symmetry_centre, bin_q))
    if state.mask.all():
        raise CalibrationError("the masks cover every detector pixel", "mask fewer pixels (edge_pixels, beam_stop)")


def _scan_binning(state: _State) -> None:
    """5. scan binning: the prepared patterns are binned lazily and become the new base."""
    bin_scan, raw = state.options.bin_scan, state.raw
    if bin_scan > 1:
        sy, sx = raw.scan_shape
        if sy % bin_scan or sx % bin_scan:
            state.report.warn(f"bin_scan={bin_scan} does not divide the {sy} x {sx} scan; the remainder is dropped")
        base = raw
        if state.prepare is not None:
            base = state.engine.transform(
                _prepare_kernel, raw, pattern_shape=state.pshape, kwargs={"prepare": state.prepare},
                desc="hot pixels / binning",
            )
        base = base.replace(calibration=state.cal, mask=state.mask_or_none, origins=state.origins_in)
        state.raw = bin_dataset(base, bin_scan=bin_scan, engine=state.engine)
        state.cal, state.origins_in, state.prepare = state.raw.calibration, state.raw.origins, None
        if state.mean is not None:
            state.mean = state.mean * float(bin_scan) ** 2
    origin = state.cal.origin if state.cal.origin is not None else state.symmetry_centre
    if origin is None:
        origin = ((state.pshape[0] - 1) / 2.0, (state.pshape[1] - 1) / 2.0)
    state.hidden = beam_hidden(state.mask_or_none, origin)


def _origins(state: _State) -> None:
    """6. origins (and, in the same pass, the mean of the re-centred patterns for the ellipse)."""
    origin, report = state.options.origin, state.report
    state.origins = state.origins_in
    if origin == "symmetry" or (origin == "auto" and state.hidden):
        state.symmetry()
        try:
            state.use_symmetry()
        except CalibrationError as err:
            state.fallback(err, "per-position origins were not set")
        else:
            report.origin_choice = (
                "asked for" if origin == "symmetry" else "the direct beam is behind the beam stop (masked)"
            )
    elif origin is not None and state.hidden:
        state.fallback(
            CalibrationError("the direct beam is behind the beam stop (the mask covers the detector centre)"),
            "per-position origins were not measured; the ellipse centre is the origin when ellipse=True",
        )
    elif origin is not None:
        _measured_origins(state)
    if origin == "auto" and report.origin_method == "com":
        state.symmetry(coarse=True)  # a check of the direct beam: 2 x 2 blocks merged
        use, report.origin_choice = _com_or_symmetry(report)
        if use == "symmetry":
            state.symmetry()
            state.use_symmetry()
    if state.origins is not None and report.origin_method is not None:
        report.origin = tuple(float(v) for v in np.asarray(state.origins, np.float64).reshape(-1, 2).mean(axis=0))
        state.cal = state.cal.replace(origin=report.origin)


def _measured_origins(state: _State) -> None:
    """Origins of the direct beam at each position ('com' or 'xcorr'), then their surface."""
    opts, report = state.options, state.report
    method = "com" if opts.origin == "auto" else opts.origin
    try:
        measurement = measure_origins(
            state.raw, method=method, engine=state.engine, mean_pattern=state.mean, probe=opts.probe,
            recentred_mean=opts.ellipse, prepare=state.prepare, mask=state.mask_or_none,
        )
    except CalibrationError as err:
        try:
            if opts.origin != "auto":
                raise err
            state.symmetry()
            state.use_symmetry()
            report.origin_choice = err.problem
        except CalibrationError:
            report.symmetry = report.symmetry_fit = None
            state.fallback(err, "per-position origins were not measured")
        return
    measured, probe_est = measurement.origins, measurement.probe
    if measurement.recentred_mean is not None:
        state.recentred = (measurement.recentred_mean, probe_est.center, measurement.recentred_mask)
    report.origin_method = method
    report.probe_center = probe_est.center
    report.probe_radius = probe_est.radius
    report.origins_measured = measured.astype(np.float32)
    missing = ~np.isfinite(measured).all(axis=-1)
    report.n_no_beam = int(missing.sum())
    if opts.origin_fit is not None:
        try:
            fit = fit_origin_surface(measured, model=opts.origin_fit)
        except CalibrationError as err:
            state.fallback(err, "per-position origins were not set")
        else:
            report.origin_fit = fit
            state.origins, report.origin_jitter = follow_jitter(measured, fit, measurement.halves,
                                                                mode=opts.origin_jitter)
            if report.origin_jitter is not None:
                log.info(_jitter_text(report.origin_jitter))
            if report.n_no_beam:
                report.warn(
                    f"no direct beam in {report.n_no_beam} of {missing.size} patterns; "
                    f"their origins come from the fitted {opts.origin_fit}"
                )
    elif missing.all():
        state.fallback(CalibrationError("no direct beam in any pattern"), "origins were not set")
    else:
        origins = measured.copy()
        if missing.any():
            fill = np.median(measured[~missing], axis=0)
            origins[missing] = fill
            report.warn(
                f"no direct beam in {report.n_no_beam} of {missing.size} patterns; "
                f"their origin is the median origin ({fill[0]:.2f}, {fill[1]:.2f})"
            )
        state.origins = origins.astype(np.float32)


def _shift_correction(state: _State) -> None:
    """7. shift correction, fused with hot pixels and binning into one lazy per-pattern transform."""
    report, origins = state.report, state.origins
    state.out_mask, state.out_origins = state.mask_or_none, origins
    if not state.options.correct_shift:
        return
    if origins is None:
        state.fallback(CalibrationError("no origins to correct the shift with"), "shift correction was skipped")
    elif not np.isfinite(origins).all():
        state.fallback(CalibrationError("the dataset's origins have missing values"), "shift correction was skipped")
    else:
        given = np.asarray(origins, np.float64).reshape(-1, 2)
        if report.origin is None:  # origins that came with the dataset
            report.origin = tuple(float(v) for v in given.mean(axis=0))
            state.cal = state.cal.replace(origin=report.origin)
        state.shifts = np.asarray(report.origin)[None, :] - given
        report.max_shift = float(np.abs(state.shifts).max())
        state.out_mask = shifted_mask(state.mask_or_none, state.shifts, state.pshape)
        state.out_origins = np.broadcast_to(np.asarray(report.origin, np.float32), origins.shape).copy()
        report.shift_corrected = True


def _fit_ellipse_of(state: _State, image, centre, image_mask, exclude) -> EllipseFit:
    """The ellipse of ``image``: from the sectors' radial profiles about a known centre, else one ring's crest."""
    ring = state.options.ring
    if state.recentred is not None and ring is None:
        # on the re-centred mean the rings' centre is the origin: every ring, sector by sector
        try:
            radius = state.report.probe_radius
            if radius is None:
                radius = estimate_probe(image, mask=image_mask).radius
        except CalibrationError:
            radius = 1.0
        try:
            return fit_ellipse_profiles(image, center=centre, mask=image_mask, r_min=max(4.0, 1.5 * radius + 2.0))
        except CalibrationError as err:
            log.info("no ellipse from the sectors' profiles (%s); the ring's crest is fitted", err.problem)
    # on the re-centred mean the ring's centre is the origin: fit the axes only (well conditioned on a ring of a
    # few Bragg spots)
    return fit_ellipse(image, center=centre, ring=ring, mask=image_mask, exclude_radius=exclude,
                       fix_center=state.recentred is not None)


def _ellipse(state: _State) -> None:
    """8. ellipse: on the mean of the re-centred patterns (sharp rings) when origins were measured."""
    report, recentred, pshape = state.report, state.recentred, state.pshape
    exclude = None
    if recentred is not None:
        image, centre, image_mask = recentred
    else:
        image, centre, image_mask = state.mean, state.cal.origin, state.mask_or_none
        if state.hidden:
            # rays from the detector centre (or known origin); the ring search starts past the stop
            centre = centre if centre is not None else ((pshape[0] - 1) / 2.0, (pshape[1] - 1) / 2.0)
            yy, xx = np.nonzero(~state.mask)
            exclude = float(np.hypot(yy - centre[0], xx - centre[1]).min()) + 2.0
    try:
        fit = _fit_ellipse_of(state, image, centre, image_mask, exclude)
    except CalibrationError as err:
        state.fallback(err, "no ellipse correction is applied")
        return
    if recentred is not None and report.origin is not None:
        # from the frame of the re-centred mean to the mean origin of the data
        offset = np.asarray(report.origin) - np.asarray(centre)
        fit = dataclasses.replace(fit, center=tuple(float(v) for v in np.asarray(fit.center) + offset))
    threshold = state.options.ellipse_min_significance
    if threshold > 0 and np.isfinite(fit.significance) and fit.significance < threshold:
        report.ellipse_rejected = fit
        report.warn(
            f"the fitted ellipse (a/b = {fit.axis_ratio:.4f} +- {fit.axis_ratio_std:.4f}, angle "
            f"{np.degrees(fit.angle):.1f} +- {np.degrees(fit.angle_std):.1f} deg) is {fit.significance:.1f} standard "
            f"deviations from a circle (< {threshold:g}): no ellipse correction is applied"
        )
        return
    if fit.axis_ratio_std > 0.005 or np.degrees(fit.angle_std) > 1.0:
        report.warn(
            f"the ellipse is poorly determined: a/b = {fit.axis_ratio:.4f} +- {fit.axis_ratio_std:.4f}, "
            f"angle {np.degrees(fit.angle):.1f} +- {np.degrees(fit.angle_std):.1f} deg; it is applied anyway"
        )
    report.ellipse = fit
    changes = {"ellipse": fit.ellipse}
    if state.cal.origin is None:
        changes["origin"] = fit.center
        report.origin = fit.center
        log.info("origin taken from the ellipse centre (%.2f, %.2f)", *fit.center)
    state.cal = state.cal.replace(**changes)


def _finish(state: _State):
    """The calibrated dataset (one per-pattern transform of the input, lazy for lazy input) and its checks."""
    report, raw = state.report, state.raw
    if state.prepare is None and state.shifts is None:
        ds = raw.replace(calibration=state.cal, mask=state.out_mask, origins=state.out_origins)
    else:
        ds = state.engine.transform(
            _final_kernel,
            raw,
            pattern_shape=state.pshape,
            kwargs={"prepare": state.prepare, "shifts": state.shifts},
            desc="calibration",
            calibration=state.cal,
            mask=state.out_mask,
            origins=state.out_origins,
        )
    report.output_shape = ds.shape
    report.origins = None if ds.origins is None else np.asarray(ds.origins, dtype=np.float32).copy()
    report.mask = None if ds.mask is None else ds.mask.copy()
    report.n_masked = 0 if ds.mask is None else int(ds.mask.sum())
    report.quality = assess_calibration(report, disk_radius=disk_radius_pixels(state.cal, state.pshape),
                                        pattern_shape=state.pshape)
    if not report.quality.reliable:
        problems = "; ".join(report.quality.problems)
        if state.options.on_unreliable == "stop":
            raise CalibrationError(
                "the calibration is unreliable: " + problems,
                "check the data and the calibration options, or go on with on_unreliable='warn' "
                "(--calibration-unreliable warn)",
            )
        report.warn("CALIBRATION UNRELIABLE (going on as asked): " + problems)
    log.info("calibration: %s", report.summary().replace("\n", "; "))
    return ds, report
