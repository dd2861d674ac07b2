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

__all__ = ["PolarGeometry", "apply_mean", "apply_operators", "apply_variance", "polar_transform", "radial_profile"]


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
        return cls((qy, qx), origin, ellipse, r_edges, theta_edges, op, counts)

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
        """Population variance along theta at each radius (..., n_r), masked pixels excluded."""
        flat, lead = _as_batch(patterns)
        self._check(flat)
        op, counts = self.radial_operator()
        return apply_variance(op, counts, flat).reshape(*lead, self.n_r)

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

