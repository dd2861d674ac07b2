"""What featurize can be asked: the representations, every option with its default, and the checks
that can be made before reading anything."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from stemnmf.errors import ConfigError, DataValueError
from stemnmf.features.angular import n_sectors
from stemnmf.features.rings import check_rings

__all__ = ["REPRESENTATIONS", "FeatureGeometry", "FeatureOptions", "check_options", "parse_representation", "resolve_origin",
           "vacuum_positions"]

REPRESENTATIONS = ("aa", "rv", "bd", "raw")


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
        ``template`` 'beam' (mean central beam; the mean of the brightest Bragg
        disks when the mask hides the beam), 'vacuum' (mean of
        ``vacuum_region``), 'synthetic' (disk of ``disk_radius``), or an image.
        ``disk_radius`` None: half-maximum radius of the mean central beam (or
        of those Bragg disks).
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


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureGeometry:
    """Where the patterns' features are measured, as featurize resolved it.

    Attributes
    ----------
    shape : (int, int)
        Pattern shape (qy, qx).
    scan_shape : (int, int)
        Scan shape (sy, sx).
    mask : numpy.ndarray or None
        (qy, qx) bool, True = masked out; None when nothing is masked.
    ellipse : (float, float, float) or None
        Elliptical distortion (a, b, angle), None for circular.
    origin : (float, float)
        The reference origin (qy, qx).
    origins : numpy.ndarray or None
        (n_positions, 2) per-position origins, or None (every pattern at ``origin``).
    """

    shape: tuple[int, int]
    scan_shape: tuple[int, int]
    mask: np.ndarray | None
    ellipse: tuple[float, float, float] | None
    origin: tuple[float, float]
    origins: np.ndarray | None


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


def check_options(opts: FeatureOptions) -> None:
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


def vacuum_positions(region, scan_shape) -> np.ndarray:
    """Flat indices mask (n_positions,) bool of BD's vacuum region: a (sy, sx) bool array or (y0, y1, x0, x1)."""
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


def resolve_origin(dataset, opts: FeatureOptions):
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
