"""Polar operators for many origins, from offset templates applied to windows.

A per-position origin ``o = i + f`` (whole pixels ``i``, fraction ``f``) only
changes which detector pixel sits at a given offset from the beam. So the
binning of pixel *offsets* is computed once per fraction ``f``: a sparse
matrix from the pixels of a square window centred on ``i`` to the bins (an
:class:`OffsetTemplate`). Patterns are applied by copying their windows (pixels
off the detector and masked pixels are 0) into a batch and multiplying the
batch by the block-diagonal template (:class:`stemnmf.features.polar.BatchOperator`),
so patterns with the same fraction share products whatever their whole pixel;
the unmasked area of each bin is the template applied to the window of the
mask (a :class:`Window`). Fractions are quantised to ``1 / n`` of a pixel by
the caller, so at most ``n**2`` templates exist, and nothing is rebuilt per
position.

Within every bin the pixels are summed in row-major order whatever the origin,
so results do not depend on how positions are grouped or batched.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import threading

import numpy as np
import scipy.sparse as sp

from stemnmf.features import polar
from stemnmf.features.geometry import correct_offsets
from stemnmf.features.polar import BATCH, BatchOperator, RadialResidual, entry_radii, profile_slopes

__all__ = [
    "OffsetTemplate",
    "Window",
    "apply_windows",
    "radial_bins_of",
    "release_products",
    "ring_sector_bins",
    "window_half",
]


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
    slopes: tuple | None = None

    @property
    def n_bins(self) -> int:
        return self.matrix.shape[0]

    @functools.cached_property
    def product(self) -> BatchOperator:
        """The template for batches of windows (bin sums)."""
        return BatchOperator([self.matrix])

    @functools.cached_property
    def residual(self) -> RadialResidual:
        """The template as an RV operator."""
        return RadialResidual(self.matrix, self.slopes)

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
        return cls(int(half), matrix, profile_slopes(matrix, entry_radii(matrix, rho, s)))


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
        ((2 half + 1) ** 2,) float64, 1 for window pixels on the detector and unmasked
        (stored as booleans; made on each use).
    masked : numpy.ndarray
        Flat window indices of masked detector pixels (set to 0 after each copy).
    full : bool
        The window lies on the detector and holds no masked pixel.
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
        grid = np.zeros((side, side), bool)
        grid[self.target] = True if valid is None else valid[self.source]
        self._valid = grid.reshape(-1)
        inside = np.zeros((side, side), bool)
        inside[self.target] = True
        self.masked = np.flatnonzero(inside.reshape(-1) & ~self._valid)
        self.full = bool(inside.all()) and self.masked.size == 0

    @property
    def valid(self) -> np.ndarray:
        return self._valid.astype(np.float64)

    def copy(self, patterns, rows, out) -> None:
        """``out`` (k, side, side) float64 = the windows of ``patterns[rows]`` (increasing row indices)."""
        if rows.size and rows[-1] - rows[0] == rows.size - 1:
            picked = patterns[rows[0] : rows[-1] + 1]  # consecutive rows: a view, no copy
        else:
            picked = np.take(patterns, rows, axis=0)
        if self.full:
            out[...] = picked[(slice(None), *self.source)]
            return
        out[...] = 0.0
        out[(slice(None), *self.target)] = picked[(slice(None), *self.source)]
        if self.masked.size:
            out.reshape(out.shape[0], -1)[:, self.masked] = 0.0

    def terms(self, template: OffsetTemplate, variance: bool):
        """The template's unmasked area per bin here (means), or its RV terms (variance).

        Kept for the :data:`_TERMS_SIZE` (template, window) pairs used last.
        """
        key = (id(template), id(self), variance)
        with _TERMS_LOCK:
            entry = _TERMS.get(key)
            if entry is not None:
                _TERMS.move_to_end(key)
                return entry[2]
        terms = template.residual.terms(self.valid) if variance else template.matrix @ self.valid
        with _TERMS_LOCK:
            _TERMS[key] = (template, self, terms)  # the references keep both ids in use
            while len(_TERMS) > _TERMS_SIZE:
                _TERMS.popitem(last=False)
        return terms


_TERMS: collections.OrderedDict = collections.OrderedDict()
_TERMS_LOCK = threading.Lock()
_TERMS_SIZE = 1024


_THREAD = threading.local()


def _buffers(k: int, side: int):
    """This thread's (k, side, side) window buffer and (k, side**2) square buffer, reused by later calls."""
    held = getattr(_THREAD, "buffers", None)
    if held is None or held[0].shape[:2] != (k, side):
        held = _THREAD.buffers = (np.zeros((k, side, side)), np.empty((k, side * side)))
    return held


def release_products() -> None:
    """Drop the kept window terms, block-diagonal operators and this thread's buffers."""
    with _TERMS_LOCK:
        _TERMS.clear()
    with polar._BUILT_LOCK:
        for ref, _ in polar._BUILT.values():
            product = ref()
            if product is not None:
                product._built = None
        polar._BUILT.clear()
    _THREAD.__dict__.pop("buffers", None)


def apply_windows(patterns, placements, means=(), variances=(), zero_nonfinite: bool = False) -> list[np.ndarray]:
    """Bin means and RV of patterns whose origins share one fraction (one set of templates).

    Parameters
    ----------
    patterns : numpy.ndarray
        (n, qy, qx).
    placements : sequence of (Window, rows)
        The patterns ``rows`` (increasing indices) whose origin's whole pixel
        is the window's; the windows have the templates' half width.
    means, variances : sequence of OffsetTemplate
        Templates whose bin means, or RV (the variance along theta about the
        radial profile's tangent, :class:`stemnmf.features.polar.RadialResidual`),
        are wanted.
    zero_nonfinite : bool, default False
        Read NaN and Inf pixels as 0 (else they make their bins NaN). Checked
        on the sums: a batch with a sum that is not finite is cleaned and
        multiplied again, so finite patterns cost nothing more.

    Returns
    -------
    list of numpy.ndarray
        float32 (m, n_bins) per template, means first, rows in the order of
        the placements (m rows in all); NaN where a bin has no unmasked pixel.
        Sums are accumulated in float64.
    """
    placements = [(window, np.asarray(rows).reshape(-1)) for window, rows in placements]
    m = sum(rows.size for _, rows in placements)
    k = BATCH if m >= BATCH else 1  # a few patterns go one at a time: no block-diagonal operator to build
    n_batches = -(-m // k)
    side = placements[0][0].side if placements else 1
    mean_sums = [np.zeros((n_batches, k, t.n_bins)) for t in means]
    rv_sums = [np.zeros((n_batches, 2, k, t.n_bins)) for t in variances]
    rv_squares = [np.zeros((n_batches, k, t.n_bins)) for t in variances]
    buf, square = _buffers(k, side)
    flat = buf.reshape(k, -1)
    outputs = [*mean_sums, *rv_sums, *rv_squares]
    # the block-diagonal operators, held for the whole call
    mean_built = [t.product.built() if k > 1 else None for t in means]
    rv_built = [t.residual.product.built() if k > 1 else None for t in variances]

    def products(b):
        for t, built, sums in zip(means, mean_built, mean_sums):
            t.product.apply(flat, sums[b], built=built)
        if variances:
            np.multiply(flat, flat, out=square)
        for t, built, sums, squares in zip(variances, rv_built, rv_sums, rv_squares):
            t.residual.product.apply(flat, sums[b], built=built)
            t.residual.product.apply(square, squares[b], n_blocks=1, built=built)

    def multiply(b):
        products(b)
        if zero_nonfinite and not all(np.isfinite(out[b]).all() for out in outputs):
            np.nan_to_num(flat, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            for out in outputs:
                out[b] = 0.0
            products(b)

    b = filled = 0
    for window, rows in placements:
        start = 0
        while start < rows.size:
            take = min(k - filled, rows.size - start)
            window.copy(patterns, rows[start : start + take], buf[filled : filled + take])
            filled += take
            start += take
            if filled == k:
                multiply(b)
                b, filled = b + 1, 0
    if filled:  # the rest of the buffer holds earlier windows; their sums are not used
        multiply(b)

    results = []
    offsets = np.cumsum([0] + [rows.size for _, rows in placements])
    with np.errstate(invalid="ignore", divide="ignore"):
        for t, sums in zip(means, mean_sums):
            sums = sums.reshape(-1, t.n_bins)
            out = np.empty((m, t.n_bins), np.float32)
            for (window, _), lo, hi in zip(placements, offsets[:-1], offsets[1:]):
                out[lo:hi] = sums[lo:hi] / window.terms(t, variance=False)
            results.append(out)
    for t, sums, squares in zip(variances, rv_sums, rv_squares):
        sums = sums.transpose(1, 0, 2, 3).reshape(2, -1, t.n_bins)
        squares = squares.reshape(-1, t.n_bins)
        out = np.empty((m, t.n_bins), np.float32)
        for (window, _), lo, hi in zip(placements, offsets[:-1], offsets[1:]):
            out[lo:hi] = t.residual.finish(sums[:, lo:hi], squares[lo:hi], window.terms(t, variance=True))
        results.append(out)
    return results
