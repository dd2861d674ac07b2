"""``featurize(dataset, representation)``: a Dataset4D -> (X, FeatureDescription), streaming.

At most two passes over the patterns, each through :class:`stemnmf.engine.Engine`:

1. statistics (:mod:`~stemnmf.features.statistics`), when something must be
   found on the data: maximum and mean pattern, each pattern moved by whole
   pixels so its direct beam sits on the reference origin; they give the
   origin (when unknown), the direct-beam radius, the rings (radial profile of
   the maximum pattern) and the BD probe template;
2. features: every requested representation from one read of each pattern.
   Each is one object with a set-up, a per-chunk kernel and an assembly:
   :class:`~stemnmf.features.polar_plan.PolarFeatures` (AA and RV: offset
   templates, one per sub-pixel fraction of the origin, cached in each
   process, applied to a window of each pattern around its origin),
   :class:`~stemnmf.features.representations.BraggFeatures` (the disks of
   each pattern, rasterised afterwards) and
   :class:`~stemnmf.features.representations.RawFeatures` (binned patterns).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from stemnmf.calibrate.disks import beam_hidden, unmasked_radius
from stemnmf.engine import Engine
from stemnmf.errors import ConfigError, InputError
from stemnmf.features.description import FeatureDescription
from stemnmf.features.geometry import check_ellipse
from stemnmf.features.options import (
    FeatureGeometry,
    FeatureOptions,
    check_options,
    parse_representation,
    resolve_origin,
    vacuum_positions,
)
from stemnmf.features.polar_plan import PolarFeatures, release_geometry
from stemnmf.features.representations import BraggFeatures, RawFeatures
from stemnmf.features.rings import estimate_beam_radius
from stemnmf.features.scaling import SCALINGS, scale_features
from stemnmf.features.statistics import RadialProfiles, find_origin, needs_statistics, pattern_statistics
from stemnmf.io.dataset import Dataset4D

__all__ = ["featurize"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """What the features pass runs on every chunk: the representation objects, in output order (picklable)."""

    shape: tuple[int, int]
    parts: tuple

    @property
    def reads_nonfinite(self) -> bool:
        """True when every part reads NaN and Inf as 0 itself (the engine then hands blocks over as stored)."""
        return all(part.reads_nonfinite for part in self.parts)


def _feature_kernel(block, chunk, *, plan: _Plan):
    qy, qx = plan.shape
    patterns = block[chunk.own].reshape(chunk.n_positions, qy, qx)
    return tuple(part.compute(patterns, chunk) for part in plan.parts)


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
    check_options(opts)
    engine = engine if engine is not None else Engine()
    settings: dict[str, Any] = {"representation": "+".join(reps), "scaling": scaling}
    geometry, stats = _geometry(dataset, reps, opts, engine, settings)
    extra: dict[str, Any] = {}
    profiles = RadialProfiles.of(stats, geometry.origin, geometry.ellipse, opts.r_step) if stats is not None else None
    if profiles is not None:
        extra.update(profiles.by_products(stats))
    beam_half = None
    hidden = beam_hidden(geometry.mask, geometry.origin)
    if hidden:  # a beam stop over the direct beam: the rings start past the stop, BD's template from the disks
        settings["beam_hidden"] = True
        if opts.r_min is None and ("aa" in reps or "rv" in reps):
            opts = dataclasses.replace(opts, r_min=unmasked_radius(geometry.mask, geometry.origin) + 2.0)
    if profiles is not None and not hidden and (
        ("rv" in reps and opts.r_min is None) or ("aa" in reps and opts.rings is None and opts.r_min is None)
        or ("bd" in reps and opts.disk_radius is None)
    ):
        beam_half = estimate_beam_radius(profiles.mean, profiles.radii)
        settings["beam_radius"] = beam_half
    parts = [PolarFeatures.setup(reps, opts, geometry, profiles, beam_half, settings)]
    if "bd" in reps:
        parts.append(BraggFeatures.setup(opts, stats, geometry, beam_half))
        settings["bd"] = parts[-1].settings
    if "raw" in reps:
        parts.append(RawFeatures.setup(opts, geometry))
        settings["raw"] = parts[-1].settings
    plan = _Plan(geometry.shape, tuple(part for part in parts if part is not None))
    try:
        outputs = engine.map(_feature_kernel, dataset, kwargs=dict(plan=plan), desc=f"features: {'+'.join(reps)}",
                             finite=not plan.reads_nonfinite)
    finally:
        release_geometry()
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, values in zip(plan.parts, outputs):
        part_blocks, part_extra = part.assemble(values, geometry)
        blocks.update(part_blocks)
        extra.update(part_extra)
    return _matrix(blocks, reps, scaling, settings, geometry, extra)


def _geometry(dataset: Dataset4D, reps, opts: FeatureOptions, engine: Engine, settings: dict):
    """(FeatureGeometry, PatternStatistics or None): the origin and ellipse, after the statistics pass if needed."""
    shape = dataset.pattern_shape
    mask = None if dataset.mask is None or not dataset.mask.any() else np.asarray(dataset.mask, bool)
    if opts.ellipse is False:
        ellipse = None
    else:
        ellipse = check_ellipse(opts.ellipse if opts.ellipse is not None else dataset.calibration.ellipse)
    ref, origins, source = resolve_origin(dataset, opts)
    stats = None
    if needs_statistics(reps, opts, ref is not None or origins is not None):
        vacuum = None
        if "bd" in reps and isinstance(opts.template, str) and opts.template == "vacuum":
            vacuum = vacuum_positions(opts.vacuum_region, dataset.scan_shape)
        shifts = None if origins is None else np.round(origins - np.asarray(ref)).astype(np.int64)
        stats = pattern_statistics(dataset, engine, shifts, mask, vacuum)
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
    return FeatureGeometry(tuple(shape), tuple(dataset.scan_shape), mask, ellipse, ref, origins), stats


def _matrix(blocks: dict, reps, scaling: str, settings: dict, geometry: FeatureGeometry, extra: dict):
    """X (blocks in the order the user named them, imputed, scaled) and its description."""
    X = np.concatenate([blocks[r][0] for r in reps], axis=1) if len(reps) > 1 else blocks[reps[0]][0]
    table = np.concatenate([blocks[r][1] for r in reps])
    X = _impute(np.asarray(X, dtype=np.float32), table)
    bounds = np.cumsum([0] + [blocks[r][0].shape[1] for r in reps])
    X, lo, hi = scale_features(X, scaling, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    description = FeatureDescription(
        representation="+".join(reps), columns=table, settings=settings, scale_min=lo, scale_max=hi,
        origin=np.asarray(geometry.origin, dtype=np.float32), ellipse=geometry.ellipse, **extra,
    )
    log.info("features %s: %d positions x %d features", description.representation, X.shape[0], X.shape[1])
    return X, description


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
