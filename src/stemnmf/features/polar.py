"""Polar-elliptical transform and radial profiles, as sparse operators applied to batches.

The geometry (which pixel falls in which (radius, angle) bin, with the mask and
the ellipse) is computed once into a :class:`PolarGeometry`; applying it to a
batch of patterns is one sparse matrix product, so the cost per pattern is
close to that of reading it. Masked pixels have no weight in any bin: a bin's
value is the mean of its unmasked pixels, and a bin with none is NaN.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from stemnmf.errors import ConfigError, DataValueError
from stemnmf.features.geometry import binning_operator, check_ellipse, edge_radius, polar_coordinates

__all__ = [
    "PolarGeometry",
    "RadialResidual",
    "apply_mean",
    "apply_operators",
    "apply_radial_variance",
    "apply_variance",
    "entry_radii",
    "interpolation_weights",
    "polar_transform",
    "radial_profile",
]


def _as_batch(patterns) -> tuple[np.ndarray, tuple[int, ...]]:
    """(..., qy, qx) -> (n, qy * qx) float32 and the leading shape."""
    arr = np.asarray(patterns)
    if arr.ndim < 2:
        raise DataValueError(f"patterns must be (qy, qx) or (..., qy, qx), got shape {arr.shape}")
    lead = arr.shape[:-2]
    return arr.reshape(-1, arr.shape[-2] * arr.shape[-1]), lead


def _check_mask(mask, shape):
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise DataValueError(
            f"mask shape {mask.shape} does not match the pattern shape {tuple(shape)}",
            "give a mask with one value per detector pixel",
        )
    return mask


def _csr64(op) -> sp.csr_matrix:
    """The operator as float64 CSR with sorted indices (what the product below expects)."""
    op = sp.csr_matrix(op, dtype=np.float64)
    if not op.has_sorted_indices:
        op.sort_indices()
    return op


try:  # scipy's own kernel for csr @ vector, without the per-call checks of ``op @ x``
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - private API moved: use the public product
    _csr_matvec = None


def _matvec(op, x, out) -> None:
    """``out += op @ x`` for float64 CSR ``op`` and float64 vectors (out starts at 0)."""
    if _csr_matvec is None:  # pragma: no cover
        out += op @ x
        return
    _csr_matvec(op.shape[0], op.shape[1], op.indptr, op.indices, op.data, x, out)


def apply_operators(flat, means=(), variances=()) -> list[np.ndarray]:
    """Bin means and bin variances of a batch of flattened patterns.

    Each pattern is converted to float64 and multiplied by the operators one
    row at a time (a row stays in cache, which beats transposing the batch),
    so sums are accumulated in float64 and each pattern's result does not
    depend on the batch it came in.

    Parameters
    ----------
    flat : numpy.ndarray
        (n, n_pixels) patterns.
    means, variances : sequence of (operator, counts)
        Sparse (n_bins, n_pixels) operators with the unmasked area per bin.
        A mean is ``(op @ x) / counts``; a variance is the population variance
        ``op @ x**2 / counts - mean**2`` (clipped at 0).

    Returns
    -------
    list of numpy.ndarray
        One float32 (n, n_bins) array per operator, means first; NaN where a
        bin has no unmasked pixel.
    """
    flat = np.asarray(flat)
    n = flat.shape[0]
    means = [(_csr64(op), counts) for op, counts in means]
    variances = [(_csr64(op), counts) for op, counts in variances]
    sums = [np.zeros((n, op.shape[0])) for op, _ in means]
    vsums = [(np.zeros((n, op.shape[0])), np.zeros((n, op.shape[0]))) for op, _ in variances]
    row = np.empty(flat.shape[1], dtype=np.float64)
    square = np.empty_like(row) if variances else None
    for i in range(n):
        row[:] = flat[i]
        for (op, _), out in zip(means, sums):
            _matvec(op, row, out[i])
        if variances:
            np.multiply(row, row, out=square)
            for (op, _), (s1, s2) in zip(variances, vsums):
                _matvec(op, row, s1[i])
                _matvec(op, square, s2[i])
    results = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for (_, counts), total in zip(means, sums):
            results.append((total / counts).astype(np.float32))
        for (_, counts), (s1, s2) in zip(variances, vsums):
            mean = s1 / counts
            var = s2 / counts - mean * mean
            np.maximum(var, 0.0, out=var)
            results.append(var.astype(np.float32))
    return results


def apply_mean(op, counts, flat) -> np.ndarray:
    """Bin means ``(op @ x) / counts`` for a batch ``flat`` (n, n_pixels); NaN where a bin is empty.

    Sums are accumulated in float64; the result is float32 (n, n_bins).
    """
    return apply_operators(flat, means=[(op, counts)])[0]


def apply_variance(op, counts, flat) -> np.ndarray:
    """Population variance of the pixels in each bin (weighted by pixel area); NaN where empty.

    Computed as E[x^2] - E[x]^2 in float64 (clipped at 0), float32 out (n, n_bins).
    """
    return apply_operators(flat, variances=[(op, counts)])[0]


def interpolation_weights(op, entry_radius):
    """How to evaluate the azimuthal-mean profile at the radius of every entry of a radial operator.

    The profile is interpolated by the parabola through the means of three
    consecutive bins placed at the bins' mean pixel radii: the entry's bin and
    its two neighbours (the two inner or outer ones at the first and last bin).
    With fewer than three bins, or a bin without pixels among the three, the
    entry's own bin mean is used.

    Parameters
    ----------
    op : scipy.sparse.csr_matrix
        (n_r, n_pixels) radial binning operator (sorted indices); entry ``e``
        is the share of one pixel in one radial bin.
    entry_radius : numpy.ndarray
        (nnz,) corrected radius of the pixel behind each entry (:func:`entry_radii`).

    Returns
    -------
    index : numpy.ndarray
        (n_r, 3) the three bins each bin interpolates between.
    weight : numpy.ndarray
        (nnz, 3) weights: the profile at entry ``e`` (in bin ``k``) is
        ``sum(weight[e] * means[index[k]])``; the weights sum to 1.
    """
    n_r = op.shape[0]
    own = np.repeat(np.arange(n_r), np.diff(op.indptr))
    area = np.bincount(own, op.data, n_r)
    with np.errstate(invalid="ignore", divide="ignore"):
        nodes = np.bincount(own, op.data * entry_radius, n_r) / area
    weight = np.zeros((own.size, 3))
    if n_r < 3:
        weight[:, 0] = 1.0
        return np.repeat(np.arange(n_r)[:, None], 3, axis=1), weight
    centre = np.clip(np.arange(n_r), 1, n_r - 2)
    index = np.column_stack([centre - 1, centre, centre + 1])
    x = nodes[index[own]]
    r = np.asarray(entry_radius, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.column_stack([
            (r - x[:, 1]) * (r - x[:, 2]) / ((x[:, 0] - x[:, 1]) * (x[:, 0] - x[:, 2])),
            (r - x[:, 0]) * (r - x[:, 2]) / ((x[:, 1] - x[:, 0]) * (x[:, 1] - x[:, 2])),
            (r - x[:, 0]) * (r - x[:, 1]) / ((x[:, 2] - x[:, 0]) * (x[:, 2] - x[:, 1])),
        ])
    ok = np.isfinite(w).all(axis=1)
    weight[ok] = w[ok]
    weight[~ok, 0] = 0.0
    weight[np.flatnonzero(~ok), (own - index[own, 0])[~ok]] = 1.0  # the entry's own bin mean
    return index, weight


class RadialResidual:
    """Variance along theta about the azimuthal-mean profile, for one radial operator and one mask.

    A pixel's deviation is taken from the profile interpolated at its own
    radius (:func:`interpolation_weights`), not from its bin's mean, so the
    radial slope of a smooth ring inside a bin is not counted as variance:
    ``RV = A(r**2) / counts`` with ``r = x - B(A x / counts)``. Entries with
    zero weight (masked pixels, pixels off the detector) do not count.

    Expanding the square, each pattern needs only sparse products with the
    pixels (``A x**2`` and ``P_c x``, ``P_c`` = A weighted by the c-th
    interpolation weight, whose sum is ``A x``); the rest is per bin and done
    for the whole batch in :meth:`finish`.

    Parameters
    ----------
    op : scipy.sparse.csr_matrix
        (n_r, n_pixels) radial binning operator, float64, sorted indices.
    interpolation : (index, weight)
        From :func:`interpolation_weights`.
    counts : numpy.ndarray
        (n_r,) weighted area per bin (``op @ valid``).
    valid : numpy.ndarray, optional
        (n_pixels,) weight of each pixel (1 unmasked, 0 masked); default all 1.
        Masked pixels must be 0 in the patterns given to :meth:`accumulate`.
    """

    def __init__(self, op, interpolation, counts, valid=None):
        index, weight = interpolation
        n_r = op.shape[0]
        self.counts = np.asarray(counts, dtype=np.float64)
        self.empty = ~(self.counts > 0)
        own = np.repeat(np.arange(n_r), np.diff(op.indptr))
        bad = (self.empty[index[own]] & (weight != 0)).any(axis=1)
        if bad.any():  # a bin without unmasked pixels among the three: the entry's own bin mean
            weight = weight.copy()
            weight[bad] = 0.0
            weight[np.flatnonzero(bad), (own - index[own, 0])[bad]] = 1.0
        self.index = index
        data = op.data if valid is None else op.data * np.asarray(valid, dtype=np.float64)[op.indices]
        parts = [sp.csr_matrix((data * weight[:, c], op.indices, op.indptr), shape=op.shape) for c in range(3)]
        self.stacked = _csr64(sp.vstack(parts, format="csr"))
        self.square = _csr64(op)
        wd = data[:, None, None] * weight[:, :, None] * weight[:, None, :]
        self.quad = np.stack([np.bincount(own, wd[:, c, d], n_r) for c in range(3) for d in range(3)], axis=1)
        self.quad = self.quad.reshape(n_r, 3, 3)
        self.n_r = n_r

    def accumulate(self, row, square, p, s2) -> None:
        """One pattern ``row`` (float64; ``square`` = row**2): ``p += P row`` (3 n_r), ``s2 += A row**2``."""
        _matvec(self.stacked, row, p)
        _matvec(self.square, square, s2)

    def finish(self, p, s2) -> np.ndarray:
        """float32 (m, n_r) RV from the accumulated sums; NaN where a bin has no unmasked pixel."""
        n_r = self.n_r
        p = p.reshape(p.shape[0], 3, n_r)
        s1 = p.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.empty, 0.0, s1 / self.counts)
        m3 = mean[:, self.index]  # (m, n_r, 3)
        cross = np.einsum("nkc,nck->nk", m3, p)
        quad = np.einsum("nkc,kcd,nkd->nk", m3, self.quad, m3)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (s2 - 2.0 * cross + quad) / self.counts
        np.maximum(var, 0.0, out=var)
        return var.astype(np.float32)


def entry_radii(op, rho, subpixel: int = 1) -> np.ndarray:
    """Radius of the pixel behind each entry of a binning operator (mean over its samples).

    ``rho`` is per sample, pixel-major (``subpixel**2`` samples per pixel), as
    from :func:`stemnmf.features.geometry.polar_coordinates`. A pixel split
    between bins is one intensity, so it is compared with the profile at the
    pixel's radius in every bin it falls in.
    """
    s2 = int(subpixel) ** 2
    return np.asarray(rho, dtype=np.float64).reshape(op.shape[1], s2).mean(axis=1)[op.indices]


def apply_radial_variance(op, interpolation, counts, flat, valid=None) -> np.ndarray:
    """RV of a batch ``flat`` (n, n_pixels): variance along theta about the interpolated radial profile.

    See :class:`RadialResidual`; sums in float64, float32 (n, n_r) out, NaN where a bin is empty.
    """
    op = _csr64(op)
    flat = np.asarray(flat)
    res = RadialResidual(op, interpolation, counts, valid)
    n = flat.shape[0]
    p = np.zeros((n, 3 * op.shape[0]))
    s2 = np.zeros((n, op.shape[0]))
    row = np.empty(flat.shape[1], dtype=np.float64)
    square = np.empty_like(row)
    for i in range(n):
        row[:] = flat[i]
        np.multiply(row, row, out=square)
        res.accumulate(row, square, p[i], s2[i])
    return res.finish(p, s2)


@dataclasses.dataclass(frozen=True, eq=False)
class PolarGeometry:
    """Pixels of a pattern binned in corrected radius and angle.

    Build with :meth:`PolarGeometry.create`; apply with :meth:`transform`,
    :meth:`mean`, :meth:`variance`.

    Attributes
    ----------
    shape : (int, int)
        Pattern shape (qy, qx).
    origin : (float, float)
        Direct beam (qy, qx) in pixels.
    ellipse : (a, b, angle) or None
        Elliptical distortion.
    r_edges : numpy.ndarray
        (n_r + 1,) radial bin edges in corrected pixels.
    theta_edges : numpy.ndarray
        (n_theta + 1,) angular bin edges in degrees; bins wrap at 360.
    operator : scipy.sparse.csr_matrix
        (n_r * n_theta, qy * qx) fraction of each pixel in each bin (masked
        pixels have no weight). Bin index = r_index * n_theta + theta_index.
    counts : numpy.ndarray
        (n_r * n_theta,) unmasked pixel area per bin.
    """

    shape: tuple[int, int]
    origin: tuple[float, float]
    ellipse: tuple[float, float, float] | None
    r_edges: np.ndarray
    theta_edges: np.ndarray
    operator: sp.csr_matrix
    counts: np.ndarray
    subpixel: int = 1

    @classmethod
    def create(
        cls,
        shape,
        origin=None,
        ellipse=None,
        mask=None,
        *,
        r_edges=None,
        r_step: float = 1.0,
        r_max: float | None = None,
        theta_step: float = 5.0,
        theta_offset: float = 0.0,
        subpixel: int = 1,
    ) -> PolarGeometry:
        """Compute the geometry once.

        Parameters
        ----------
        shape : (int, int)
            Pattern shape (qy, qx).
        origin : (float, float), optional
            Direct beam (qy, qx); default the pattern centre.
        ellipse : (a, b, angle), optional
            Elliptical distortion; None for circular rings.
        mask : numpy.ndarray of bool, optional
            (qy, qx), True = masked out (no weight anywhere).
        r_edges : array_like, optional
            Radial bin edges in corrected pixels; overrides ``r_step``/``r_max``.
        r_step : float, default 1
            Radial bin width in pixels.
        r_max : float, optional
            Outer radius; default the farthest detector corner.
        theta_step : float, default 5
            Angular bin width in degrees; must divide 360.
        theta_offset : float, default 0
            Start of the first angular bin, degrees from +qx towards +qy.
        subpixel : int, default 1
            Split each pixel into subpixel x subpixel samples (smoother bins).
        """
        qy, qx = (int(n) for n in shape)
        origin = ((qy - 1) / 2, (qx - 1) / 2) if origin is None else tuple(float(v) for v in origin)
        ellipse = check_ellipse(ellipse)
        mask = _check_mask(mask, (qy, qx))
        subpixel = int(subpixel)
        if subpixel < 1:
            raise ConfigError(f"subpixel={subpixel} must be at least 1")
        theta_step = float(theta_step)
        n_theta = 360.0 / theta_step if theta_step > 0 else 0.0
        if theta_step <= 0 or abs(n_theta - round(n_theta)) > 1e-6:
            raise ConfigError(f"angular bin width {theta_step} degrees does not divide 360", "use e.g. 1, 2, 5, 10")
        n_theta = int(round(n_theta))
        rho, theta = polar_coordinates((qy, qx), origin, ellipse, subpixel)
        if r_edges is None:
            if r_step <= 0:
                raise ConfigError(f"radial bin width r_step={r_step} must be positive")
            top = float(rho.max()) + 1e-9 if r_max is None else float(r_max)
            r_edges = np.arange(0.0, top + r_step * 0.999, r_step)
        r_edges = np.asarray(r_edges, dtype=np.float64)
        if r_edges.ndim != 1 or r_edges.size < 2 or np.any(np.diff(r_edges) <= 0):
            raise ConfigError("radial bin edges must be increasing, at least two of them")
        theta_edges = theta_offset + theta_step * np.arange(n_theta + 1)
        r_idx = np.searchsorted(r_edges, rho, side="right") - 1
        t_idx = np.floor(((theta - theta_offset) % 360.0) / theta_step).astype(np.int64) % n_theta
        n_r = r_edges.size - 1
        bins = np.where((r_idx >= 0) & (r_idx < n_r), r_idx * n_theta + t_idx, -1)
        valid = None if mask is None else ~mask
        op, counts = binning_operator(bins, n_r * n_theta, qy * qx, subpixel, valid)
        return cls((qy, qx), origin, ellipse, r_edges, theta_edges, op, counts, subpixel)

    @property
    def n_r(self) -> int:
        return self.r_edges.size - 1

    @property
    def n_theta(self) -> int:
        return self.theta_edges.size - 1

    @property
    def radii(self) -> np.ndarray:
        """Radial bin centres in pixels."""
        return 0.5 * (self.r_edges[:-1] + self.r_edges[1:])

    @property
    def angles(self) -> np.ndarray:
        """Angular bin centres in degrees."""
        return 0.5 * (self.theta_edges[:-1] + self.theta_edges[1:])

    def transform(self, patterns) -> np.ndarray:
        """Polar images (..., n_r, n_theta) float32: mean of the unmasked pixels per bin, NaN if none."""
        flat, lead = _as_batch(patterns)
        self._check(flat)
        return apply_mean(self.operator, self.counts, flat).reshape(*lead, self.n_r, self.n_theta)

    def radial_operator(self):
        """(n_r, n_pixels) operator and counts summing over all angles."""
        op = self.operator.tocoo()
        rows = op.row // self.n_theta
        red = sp.csr_matrix((op.data, (rows, op.col)), shape=(self.n_r, op.shape[1]))
        red.sum_duplicates()
        red.sort_indices()
        return red, self.counts.reshape(self.n_r, self.n_theta).sum(axis=1)

    def mean(self, patterns) -> np.ndarray:
        """Azimuthal mean at each radius (..., n_r): the radial profile; NaN where no pixel."""
        flat, lead = _as_batch(patterns)
        self._check(flat)
        op, counts = self.radial_operator()
        return apply_mean(op, counts, flat).reshape(*lead, self.n_r)

    def variance(self, patterns) -> np.ndarray:
        """RV: variance along theta at each radius (..., n_r), masked pixels excluded.

        Each pixel deviates from the azimuthal-mean profile interpolated at its
        own radius (see :class:`RadialResidual`), so a smooth isotropic pattern
        has RV close to 0 however steep its radial profile.
        """
        flat, lead = _as_batch(patterns)
        self._check(flat)
        op, counts = self.radial_operator()
        rho, _ = polar_coordinates(self.shape, self.origin, self.ellipse, self.subpixel)
        interpolation = interpolation_weights(op, entry_radii(op, rho, self.subpixel))
        return apply_radial_variance(op, interpolation, counts, flat).reshape(*lead, self.n_r)

    def _check(self, flat):
        if flat.shape[1] != self.shape[0] * self.shape[1]:
            raise DataValueError(f"patterns do not match the geometry's pattern shape {self.shape}")

    def edge_radius(self) -> float:
        """Largest corrected radius whose whole circle lies on the detector."""
        return edge_radius(self.shape, self.origin, self.ellipse)


def polar_transform(
    patterns,
    origin=None,
    ellipse=None,
    mask=None,
    *,
    r_step: float = 1.0,
    r_max: float | None = None,
    theta_step: float = 5.0,
    theta_offset: float = 0.0,
    subpixel: int = 1,
):
    """Polar-elliptical transform of one pattern or a batch.

    Parameters
    ----------
    patterns : array_like
        (qy, qx) or (..., qy, qx).
    origin, ellipse, mask, r_step, r_max, theta_step, theta_offset, subpixel
        As in :meth:`PolarGeometry.create`.

    Returns
    -------
    polar : numpy.ndarray
        (..., n_r, n_theta) float32, mean of the unmasked pixels in each bin
        (NaN where a bin has none).
    radii : numpy.ndarray
        (n_r,) bin centres in pixels.
    angles : numpy.ndarray
        (n_theta,) bin centres in degrees from +qx towards +qy.

    Examples
    --------
    >>> p = np.ones((32, 32), np.float32)
    >>> polar, radii, angles = polar_transform(p, r_max=10)
    >>> polar.shape, float(np.nanmax(polar))
    ((10, 72), 1.0)
    """
    arr = np.asarray(patterns)
    geometry = PolarGeometry.create(
        arr.shape[-2:], origin, ellipse, mask, r_step=r_step, r_max=r_max,
        theta_step=theta_step, theta_offset=theta_offset, subpixel=subpixel,
    )
    return geometry.transform(arr), geometry.radii, geometry.angles


def radial_profile(pattern, origin=None, ellipse=None, mask=None, *, r_step: float = 1.0, r_max=None, subpixel: int = 1):
    """Azimuthal mean of a pattern (or batch) at each corrected radius.

    Returns
    -------
    profile : numpy.ndarray
        (..., n_r) float32, NaN where no unmasked pixel.
    radii : numpy.ndarray
        (n_r,) bin centres in pixels.
    """
    arr = np.asarray(pattern)
    geometry = PolarGeometry.create(
        arr.shape[-2:], origin, ellipse, mask, r_step=r_step, r_max=r_max, theta_step=360.0, subpixel=subpixel
    )
    return geometry.mean(arr), geometry.radii

