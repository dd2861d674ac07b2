"""Polar operators for many origins, from offset templates applied to windows.

A per-position origin ``o = i + f`` (whole pixels ``i``, fraction ``f``) only
changes which detector pixel sits at a given offset from the beam. So the
binning of pixel *offsets* is computed once per fraction ``f``: a sparse
matrix from the pixels of a square window centred on ``i`` to the bins (an
:class:`OffsetTemplate`). A pattern is applied by copying its window (pixels
off the detector and masked pixels are 0) and multiplying; the unmasked area of
each bin is the same matrix applied to the window of the mask. Fractions are
quantised to ``1 / n`` of a pixel by the caller, so at most ``n**2`` templates
exist, and nothing is rebuilt per position.

Within every bin the pixels are summed in row-major order whatever the origin,
so results do not depend on how positions are grouped.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp

from stemnmf.features.geometry import correct_offsets
from stemnmf.features.polar import RadialResidual, entry_radii, interpolation_weights

__all__ = ["OffsetTemplate", "Window", "apply_windows", "radial_bins_of", "ring_sector_bins", "window_half"]


def ring_sector_bins(rings, sector_width: float, sector_offset: float):
    """A binner for AA: (rho, theta) -> (sample index, bin = ring * n_sectors + sector) pairs."""
    rings = np.asarray(rings, dtype=np.float64)
    ns = int(round(360.0 / sector_width))

    def binner(rho, theta):
        sector = np.floor(((theta - sector_offset) % 360.0) / sector_width).astype(np.int64) % ns
        samples, bins = [], []
        for k, (lo, hi) in enumerate(rings):  # rings may overlap: a sample may fall in several
            sel = np.flatnonzero((rho >= lo) & (rho < hi))
            samples.append(sel)
            bins.append(k * ns + sector[sel])
        return np.concatenate(samples), np.concatenate(bins)

    return binner, rings.shape[0] * ns, float(rings[:, 1].max())


def radial_bins_of(edges):
    """A binner for RV: rho -> (sample index, radial bin) pairs."""
    edges = np.asarray(edges, dtype=np.float64)

    def binner(rho, theta):
        idx = np.searchsorted(edges, rho, side="right") - 1
        sel = np.flatnonzero((idx >= 0) & (idx < edges.size - 1))
        return sel, idx[sel]

    return binner, edges.size - 1, float(edges[-1])


@dataclasses.dataclass(frozen=True, eq=False)
class OffsetTemplate:
    """Bins of the pixels of a window around an origin with a given fractional part.

    Attributes
    ----------
    half : int
        The window spans whole-pixel offsets ``-half .. half`` along each axis.
    matrix : scipy.sparse.csr_matrix
        (n_bins, (2 * half + 1) ** 2) fraction of each window pixel in each bin;
        within a bin the pixels are in row-major order.
    """

    half: int
    matrix: sp.csr_matrix
    interpolation: tuple | None = None

    @property
    def n_bins(self) -> int:
        return self.matrix.shape[0]

    @classmethod
    def build(cls, fraction, ellipse, binner, n_bins: int, half: int, subpixel: int = 1) -> OffsetTemplate:
        """Bin every pixel of the window around an origin at ``fraction`` of a pixel.

        Parameters
        ----------
        fraction : (float, float)
            Fractional part (fy, fx) of the origin, in [0, 1).
        ellipse : (a, b, angle) or None
        binner : callable
            ``binner(rho, theta) -> (sample indices, bins)``.
        n_bins : int
        half : int
            Half width of the window in pixels; :func:`window_half` gives one
            that holds every bin.
        subpixel : int
            Samples per pixel along each axis.
        """
        d = np.arange(-half, half + 1)
        n, s = d.size, int(subpixel)
        sub = (np.arange(s) + 0.5) / s - 0.5
        # samples in pixel-major, row-major order: window pixel = sample // s**2
        yy = (d[:, None, None, None] + sub[None, None, :, None]) - fraction[0]
        xx = (d[None, :, None, None] + sub[None, None, None, :]) - fraction[1]
        yy = np.broadcast_to(yy, (n, n, s, s)).reshape(-1)
        xx = np.broadcast_to(xx, (n, n, s, s)).reshape(-1)
        cy, cx = correct_offsets(yy, xx, ellipse)
        rho = np.hypot(cy, cx)
        theta = np.degrees(np.arctan2(cy, cx)) % 360.0
        samples, bins = binner(rho, theta)
        pixel = samples // (s * s)
        # one entry per (bin, pixel), sorted by bin then pixel; weight = share of the pixel's samples
        key, counts = np.unique(bins.astype(np.int64) * (n * n) + pixel, return_counts=True)
        bins, pixel = np.divmod(key, n * n)
        indptr = np.zeros(n_bins + 1, dtype=np.int64)
        np.cumsum(np.bincount(bins, minlength=n_bins), out=indptr[1:])
        matrix = sp.csr_matrix((counts / float(s * s), pixel, indptr), shape=(n_bins, n * n))
        matrix.has_sorted_indices = True
        # the radius of each entry's pixel: where RV evaluates the radial profile
        return cls(int(half), matrix, interpolation_weights(matrix, entry_radii(matrix, rho, s)))


def window_half(radius: float, ellipse=None) -> int:
    """Half width of a window that holds every pixel within corrected ``radius`` of the origin."""
    stretch = 1.0 if ellipse is None else math.sqrt(ellipse[0] / ellipse[1])
    return int(math.ceil(radius * stretch)) + 2


class Window:
    """Where a window centred on whole pixel ``(iy, ix)`` meets a ``shape`` detector, and its mask.

    Attributes
    ----------
    target, source : tuple of slice
        ``window[target] = pattern[source]``.
    valid : numpy.ndarray
        ((2 half + 1) ** 2,) float64, 1 for window pixels on the detector and unmasked.
    masked : numpy.ndarray
        Flat window indices of masked detector pixels (set to 0 after each copy).
    """

    def __init__(self, whole, half: int, shape, valid=None):
        qy, qx = shape
        side = 2 * half + 1
        iy, ix = int(whole[0]), int(whole[1])
        y0, y1 = max(0, iy - half), min(qy, iy + half + 1)
        x0, x1 = max(0, ix - half), min(qx, ix + half + 1)
        self.side = side
        if y1 <= y0 or x1 <= x0:  # the window misses the detector
            y0 = y1 = x0 = x1 = 0
        self.source = (slice(y0, y1), slice(x0, x1))
        self.target = (slice(y0 - (iy - half), y1 - (iy - half)), slice(x0 - (ix - half), x1 - (ix - half)))
        grid = np.zeros((side, side))
        grid[self.target] = 1.0 if valid is None else valid[self.source]
        self.valid = grid.reshape(-1)
        inside = np.zeros((side, side), bool)
        inside[self.target] = True
        self.masked = np.flatnonzero(inside.reshape(-1) & (self.valid == 0))


def apply_windows(patterns, window: Window, means=(), variances=(), rows=None) -> list[np.ndarray]:
    """Bin means and variances of patterns that share one window (one origin key).

    Parameters
    ----------
    patterns : numpy.ndarray
        (m, qy, qx).
    window : Window
    means, variances : sequence of OffsetTemplate
        Templates (with the window's half width) whose bin means, or RV (the
        variance along theta about the radial profile interpolated at each
        pixel's radius, :class:`stemnmf.features.polar.RadialResidual`), are wanted.
    rows : array_like of int, optional
        Only these patterns (default all), without copying them first.

    Returns
    -------
    list of numpy.ndarray
        float32 (m, n_bins) per template, means first; NaN where a bin has no
        unmasked pixel. Sums are accumulated in float64.
    """
    from stemnmf.features.polar import _matvec

    rows = np.arange(patterns.shape[0]) if rows is None else np.asarray(rows).reshape(-1)
    m = rows.size
    side = window.side
    buf = np.zeros((side, side))
    row = buf.reshape(-1)
    mean_ops = [t.matrix for t in means]
    residuals = [RadialResidual(t.matrix, t.interpolation, t.matrix @ window.valid, window.valid) for t in variances]
    sums = [np.zeros((m, op.shape[0])) for op in mean_ops]
    vsums = [(np.zeros((m, 3 * t.n_bins)), np.zeros((m, t.n_bins))) for t in variances]
    square = np.empty_like(row) if variances else None
    target, source, masked = window.target, window.source, window.masked
    for i, p in enumerate(rows):
        buf[target] = patterns[p][source]
        if masked.size:
            row[masked] = 0.0
        for op, out in zip(mean_ops, sums):
            _matvec(op, row, out[i])
        if residuals:
            np.multiply(row, row, out=square)
            for res, (s1, s2) in zip(residuals, vsums):
                res.accumulate(row, square, s1[i], s2[i])
    results = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for op, total in zip(mean_ops, sums):
            results.append((total / (op @ window.valid)).astype(np.float32))
    for res, (s1, s2) in zip(residuals, vsums):
        results.append(res.finish(s1, s2))
    return results
