"""Polar-elliptical transform and radial profiles, as sparse operators applied to batches.

The geometry (which pixel falls in which (radius, angle) bin, with the mask and
the ellipse) is computed once into a :class:`PolarGeometry`; it is applied to
:data:`BATCH` patterns at a time by one product with a block-diagonal sparse
operator (:class:`BatchOperator`). Masked pixels have no weight in any bin: a
bin's value is the mean of its unmasked pixels, and a bin with none is NaN.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import weakref

import numpy as np
import scipy.sparse as sp

from stemnmf.errors import ConfigError, DataValueError
from stemnmf.features.geometry import binning_operator, check_ellipse, edge_radius, polar_coordinates

__all__ = [
    "BATCH",
    "BatchOperator",
    "PolarGeometry",
    "RadialResidual",
    "apply_mean",
    "apply_radial_variance",
    "entry_radii",
    "profile_slopes",
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
    """The operator as float64 CSR with sorted indices (what the products below expect)."""
    op = sp.csr_matrix(op, dtype=np.float64)
    if not op.has_sorted_indices:
        op.sort_indices()
    return op


try:  # scipy's own kernel for csr @ vector (it releases the GIL), without the checks of ``op @ x``
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - private API moved: use the public product
    _csr_matvec = None

#: Patterns per sparse product. A batch is multiplied by the block-diagonal
#: operator (the operator once per pattern) in one call, which releases the
#: GIL once per batch: per-pattern calls left two threads 1.1x faster than one.
BATCH = 8

#: Bytes of block-diagonal operators kept built (least recently used dropped first);
#: rebuilding one costs about as much as a few batches, so few are kept.
_BUILT_BYTES = 4 * 1024**2
_BUILT: collections.OrderedDict = collections.OrderedDict()
_BUILT_LOCK = threading.Lock()


class BatchOperator:
    """Sparse operators applied to one pattern, or to a batch of :data:`BATCH` with one product.

    For a batch, the block-diagonal operator repeats each block once per
    pattern, rows ordered (block, pattern, bin), so the first block alone is
    a prefix of its rows. Each pattern's sums are accumulated in float64 in
    the same order as ``block @ pattern``, so results do not depend on how
    patterns are batched.

    Parameters
    ----------
    blocks : sequence of scipy.sparse matrices
        (n_bins, n_pixels) operators of the same shape.
    """

    def __init__(self, blocks):
        self.blocks = [_csr64(b) for b in blocks]
        self.n_bins, self.n_pixels = self.blocks[0].shape
        self._built = None

    def built(self):
        """The block-diagonal operator's (indptr, indices, data), built when not kept.

        A caller that applies the operator to many batches holds these, so
        that its products never wait for a rebuild when the operator is
        dropped from the ones kept.
        """
        built = self._built
        if built is None:
            built = self._build()
            self._built = built
        with _BUILT_LOCK:
            for key in [key for key, (ref, _) in _BUILT.items() if ref() is None]:
                del _BUILT[key]  # operators gone, and their arrays with them
            _BUILT[id(self)] = (weakref.ref(self), sum(a.nbytes for a in built))
            _BUILT.move_to_end(id(self))
            total = sum(size for _, size in _BUILT.values())
            while total > _BUILT_BYTES and len(_BUILT) > 1:
                _, (ref, size) = _BUILT.popitem(last=False)
                old = ref()
                if old is not None:
                    old._built = None  # a product in flight keeps its own reference
                total -= size
        return built

    def _build(self):
        k, n_pix = BATCH, self.n_pixels
        nnz = sum(b.nnz for b in self.blocks) * k
        itype = np.int32 if max(nnz, k * n_pix) < 2**31 else np.int64
        shift = (np.arange(k, dtype=itype) * n_pix)[:, None]
        indices = np.concatenate([(b.indices.astype(itype)[None, :] + shift).ravel() for b in self.blocks])
        data = np.concatenate([np.tile(b.data, k) for b in self.blocks])
        per_row = np.concatenate([np.tile(np.diff(b.indptr), k) for b in self.blocks])
        indptr = np.zeros(per_row.size + 1, dtype=itype)
        np.cumsum(per_row, out=indptr[1:])
        return indptr, indices, data

    def apply(self, x, out, n_blocks: int | None = None, built=None) -> None:
        """``out += diag(blocks) @ x`` for one pattern or one batch.

        Parameters
        ----------
        x : numpy.ndarray
            (k, n_pixels) float64, C-contiguous; k is 1 or :data:`BATCH`.
        out : numpy.ndarray
            C-contiguous float64 holding (n_blocks, k, n_bins) values.
        n_blocks : int, optional
            Only the first ``n_blocks`` blocks (default all).
        built : tuple, optional
            From :meth:`built`, for a batch (default: fetched here).
        """
        n_blocks = len(self.blocks) if n_blocks is None else int(n_blocks)
        flat, sums = x.reshape(-1), out.reshape(n_blocks, -1)
        if x.shape[0] == 1:  # one pattern: the blocks themselves
            for block, total in zip(self.blocks, sums):
                _matvec(block, flat, total)
            return
        indptr, indices, data = self.built() if built is None else built
        n_rows = n_blocks * BATCH * self.n_bins
        if _csr_matvec is None:  # pragma: no cover
            op = sp.csr_matrix((data, indices, indptr), shape=(indptr.size - 1, BATCH * self.n_pixels))
            out.reshape(-1)[:] += (op @ flat)[:n_rows]
            return
        _csr_matvec(n_rows, BATCH * self.n_pixels, indptr, indices, data, flat, out.reshape(-1))


def _matvec(op, x, out) -> None:
    """``out += op @ x`` for float64 CSR ``op`` and float64 vectors."""
    if _csr_matvec is None:  # pragma: no cover
        out += op @ x
        return
    _csr_matvec(op.shape[0], op.shape[1], op.indptr, op.indices, op.data, x, out)


def _batches(flat):
    """(batch index, rows filled, buffer): ``flat`` (n, n_pixels) copied BATCH rows at a time to float64."""
    buf = np.zeros((BATCH, flat.shape[1]))
    for b, start in enumerate(range(0, flat.shape[0], BATCH)):
        k = min(BATCH, flat.shape[0] - start)
        buf[:k] = flat[start : start + k]
        yield b, k, buf


def apply_mean(op, counts, flat) -> np.ndarray:
    """Bin means ``(op @ x) / counts`` for a batch ``flat`` (n, n_pixels); NaN where a bin is empty.

    Sums are accumulated in float64; the result is float32 (n, n_bins).
    """
    flat = np.asarray(flat)
    product = BatchOperator([op])
    built = product.built()
    n = flat.shape[0]
    sums = np.zeros((-(-n // BATCH), BATCH, product.n_bins))
    for b, _, buf in _batches(flat):
        product.apply(buf, sums[b], built=built)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums.reshape(-1, product.n_bins)[:n] / counts).astype(np.float32)


def profile_slopes(op, entry_radius):
    """The radial profile's tangent in every bin of a radial operator, and each entry's offset along it.

    Each bin's node is the mean radius of its pixels. The profile's slope at
    a node is that of the parabola through the means of three consecutive
    bins at their nodes: the bin and its two neighbours (the two inner or
    outer ones at the first and last bin). With fewer than three bins, or
    coinciding nodes, the slope is 0.

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
        (n_r, 3) the three bins each bin's slope comes from.
    slope : numpy.ndarray
        (n_r, 3) the slope at bin ``k`` is ``sum(slope[k] * means[index[k]])``.
    offset : numpy.ndarray
        (nnz,) each entry's radius minus its bin's node.
    """
    n_r = op.shape[0]
    own = np.repeat(np.arange(n_r), np.diff(op.indptr))
    r = np.asarray(entry_radius, dtype=np.float64)
    area = np.bincount(own, op.data, n_r)
    with np.errstate(invalid="ignore", divide="ignore"):
        nodes = np.bincount(own, op.data * r, n_r) / area
    offset = r - nodes[own]
    offset[~np.isfinite(offset)] = 0.0
    if n_r < 3:
        return np.repeat(np.arange(n_r)[:, None], 3, axis=1), np.zeros((n_r, 3)), offset
    centre = np.clip(np.arange(n_r), 1, n_r - 2)
    index = np.column_stack([centre - 1, centre, centre + 1])
    x0, x1, x2 = nodes[index].T
    at = nodes  # d/dr of the three Lagrange polynomials, at the bin's own node
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.column_stack([
            ((at - x1) + (at - x2)) / ((x0 - x1) * (x0 - x2)),
            ((at - x0) + (at - x2)) / ((x1 - x0) * (x1 - x2)),
            ((at - x0) + (at - x1)) / ((x2 - x0) * (x2 - x1)),
        ])
    slope[~np.isfinite(slope).all(axis=1)] = 0.0
    return index, slope, offset


class RadialResidual:
    """Variance along theta about the azimuthal-mean profile, for one radial operator.

    A pixel's deviation is taken from the profile's tangent at its bin's
    node, evaluated at the pixel's own radius (:func:`profile_slopes`), not
    from its bin's mean, so the radial slope of a smooth ring inside a bin is
    not counted as variance: with ``d`` the pixel's offset from the node,
    ``RV = A(x - mean - slope d)**2 / counts``.

    Expanding the square, each pattern needs only three sparse products:
    ``A x`` and ``A_d x`` (A weighted by ``d``), which :attr:`product` gives,
    and ``A x**2``, its first block alone. The rest is per bin and done for a
    whole batch in :meth:`finish`, with the mask's terms from :meth:`terms`.
    Where one of the three bins a slope comes from has no unmasked pixel,
    the slope is 0 (the bin's own mean). Pixels with zero weight (masked,
    off the detector) do not count.

    Parameters
    ----------
    op : scipy.sparse matrix
        (n_r, n_pixels) radial binning operator.
    slopes : (index, slope, offset)
        From :func:`profile_slopes`.
    """

    def __init__(self, op, slopes):
        op = _csr64(op)
        self.index, self.slope, self.offset = slopes
        self.n_r = op.shape[0]
        self.own = np.repeat(np.arange(self.n_r), np.diff(op.indptr))
        self.op = op
        self.product = BatchOperator([op, sp.csr_matrix((op.data * self.offset, op.indices, op.indptr), shape=op.shape)])

    def terms(self, valid=None):
        """(area, offset sum, squared offset sum, fallback) per bin for pixel weights ``valid``.

        ``valid`` (n_pixels,) is 1 for unmasked pixels, 0 for masked (default
        all 1); ``fallback`` marks bins whose slope is 0 here.
        """
        data = self.op.data if valid is None else self.op.data * np.asarray(valid, np.float64)[self.op.indices]
        counts = np.bincount(self.own, data, self.n_r)
        first = np.bincount(self.own, data * self.offset, self.n_r)
        second = np.bincount(self.own, data * self.offset**2, self.n_r)
        return counts, first, second, ~(counts[self.index] > 0).all(axis=1)

    def finish(self, sums, squares, terms) -> np.ndarray:
        """float32 (m, n_r) RV; NaN where a bin has no unmasked pixel.

        ``sums`` (2, m, n_r): ``A x``, ``A_d x``; ``squares`` (m, n_r): ``A x**2``.
        """
        counts, first, second, fallback = terms
        total, moment = sums
        empty = ~(counts > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(empty, 0.0, total / counts)
            slope = np.einsum("nkc,kc->nk", mean[:, self.index], self.slope)
            slope[:, fallback] = 0.0
            # sum of (x - mean - slope d)**2 over the bin, with total = mean * counts
            rss = squares - mean * total - 2.0 * slope * (moment - mean * first) + slope * slope * second
            var = rss / counts
        np.maximum(var, 0.0, out=var)
        var[:, empty] = np.nan
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


def apply_radial_variance(op, slopes, flat, valid=None) -> np.ndarray:
    """RV of a batch ``flat`` (n, n_pixels): variance along theta about the radial profile's tangent.

    See :class:`RadialResidual`; pixels with ``valid`` 0 must be 0 in ``flat``
    or have no entry in ``op``. Sums in float64, float32 (n, n_r) out, NaN
    where a bin is empty.
    """
    flat = np.asarray(flat)
    residual = RadialResidual(op, slopes)
    n, n_r = flat.shape[0], residual.n_r
    sums = np.zeros((-(-n // BATCH), 2, BATCH, n_r))
    squares = np.zeros((sums.shape[0], BATCH, n_r))
    square = np.empty((BATCH, flat.shape[1]))
    built = residual.product.built()
    for b, _, buf in _batches(flat):
        residual.product.apply(buf, sums[b], built=built)
        np.multiply(buf, buf, out=square)
        residual.product.apply(square, squares[b], n_blocks=1, built=built)
    sums = sums.transpose(1, 0, 2, 3).reshape(2, -1, n_r)[:, :n]
    return residual.finish(sums, squares.reshape(-1, n_r)[:n], residual.terms(valid))


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

        Each pixel deviates from the azimuthal-mean profile's tangent, at its
        own radius (see :class:`RadialResidual`), so a smooth isotropic pattern
        has RV close to 0 however steep its radial profile.
        """
        flat, lead = _as_batch(patterns)
        self._check(flat)
        op, _ = self.radial_operator()
        rho, _ = polar_coordinates(self.shape, self.origin, self.ellipse, self.subpixel)
        slopes = profile_slopes(op, entry_radii(op, rho, self.subpixel))
        return apply_radial_variance(op, slopes, flat).reshape(*lead, self.n_r)

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

