"""The statistics pass of featurize: aligned maximum and mean patterns, the origin, radial profiles.

Run only when something must be found on the data (the origin, rings, r_min,
the BD template or disk radius), or when asked for.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from stemnmf.errors import ConfigError
from stemnmf.features.options import FeatureOptions
from stemnmf.features.polar import radial_profile

__all__ = ["PatternStatistics", "RadialProfiles", "find_origin", "needs_statistics", "pattern_statistics"]

_STATS_BLOCK = 16  # patterns per block of the statistics pass (a block stays in cache for its sum)


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
class PatternStatistics:
    """The aligned maximum and mean patterns of a scan (and the mean over its vacuum region, for BD)."""

    max_pattern: np.ndarray  # float32, -inf where never valid
    mean_pattern: np.ndarray  # float32, 0 where never valid
    valid: np.ndarray  # bool, pixel seen unmasked at least once
    vacuum_mean: np.ndarray | None


def pattern_statistics(dataset, engine, shifts, mask, vacuum) -> PatternStatistics:
    """One pass: maximum and mean pattern, each pattern moved by ``shifts`` (whole pixels) onto the reference origin."""
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
    return PatternStatistics(vmax, mean, valid, vac_mean)


def needs_statistics(reps, opts: FeatureOptions, origin_known: bool) -> bool:
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
class RadialProfiles:
    """Radial profiles of the aligned maximum and mean patterns."""

    radii: np.ndarray
    max: np.ndarray
    mean: np.ndarray

    @classmethod
    def of(cls, stats: PatternStatistics, ref, ellipse, r_step) -> RadialProfiles:
        invalid = ~stats.valid
        finite_max = np.where(stats.valid, stats.max_pattern, np.nan)
        profile, radii = radial_profile(finite_max, ref, ellipse, invalid, r_step=r_step)
        mean, _ = radial_profile(stats.mean_pattern, ref, ellipse, invalid, r_step=r_step)
        return cls(radii, profile, mean)

    def by_products(self, stats: PatternStatistics) -> dict:
        finite = stats.max_pattern[stats.valid]
        low = float(finite.min()) if finite.size else 0.0
        return dict(
            max_pattern=np.where(stats.valid, stats.max_pattern, low).astype(np.float32),
            mean_pattern=stats.mean_pattern,
            radii=self.radii.astype(np.float32),
            radial_profile=self.max,
        )
