"""AA (angular average per ring sector) and RV (variance along theta about the radial profile).

Both are sparse operators on the detector pixels, built once per geometry
(origin, ellipse, mask) and applied to batches of patterns.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from stemnmf.errors import ConfigError
from stemnmf.features.geometry import binning_operator, check_ellipse, edge_radius, polar_coordinates
from stemnmf.features.operators import OffsetTemplate, Window, apply_windows, radial_bins_of, window_half
from stemnmf.features.polar import _as_batch, _check_mask, apply_mean
from stemnmf.features.rings import check_rings

__all__ = [
    "angular_average",
    "n_sectors",
    "radial_bins",
    "radial_variance",
    "radial_variance_operator",
    "sector_operator",
]


def n_sectors(sector_width: float) -> int:
    """Number of sectors of ``sector_width`` degrees in a full turn.

    Raises
    ------
    ConfigError
        If the width does not divide 360.
    """
    width = float(sector_width)
    n = 360.0 / width if width > 0 else 0.0
    if width <= 0 or abs(n - round(n)) > 1e-6:
        raise ConfigError(f"sector width {sector_width} degrees does not divide 360", "use e.g. 5, 10 or 15")
    return int(round(n))


def _origin(shape, origin):
    return ((shape[0] - 1) / 2, (shape[1] - 1) / 2) if origin is None else (float(origin[0]), float(origin[1]))


def sector_operator(
    shape, origin, ellipse=None, mask=None, *, rings, sector_width: float = 5.0, sector_offset: float = 0.0,
    subpixel: int = 1,
):
    """Operator summing the pixels of each (ring, sector): bin = ring * n_sectors + sector.

    Returns
    -------
    (scipy.sparse.csr_matrix, numpy.ndarray)
        The operator (n_rings * n_sectors, qy * qx) and the unmasked pixel
        area of each bin.
    """
    shape = tuple(int(n) for n in shape)
    rings = check_rings(rings).astype(np.float64)
    ns = n_sectors(sector_width)
    rho, theta = polar_coordinates(shape, _origin(shape, origin), check_ellipse(ellipse), subpixel)
    sector = np.floor(((theta - sector_offset) % 360.0) / float(sector_width)).astype(np.int64) % ns
    valid = None if mask is None else ~_check_mask(mask, shape)
    n_pix, n_bins = shape[0] * shape[1], rings.shape[0] * ns
    order = np.argsort(rings[:, 0], kind="stable")
    lo, hi = rings[order, 0], rings[order, 1]
    if np.all(hi[:-1] <= lo[1:]):  # disjoint rings (the usual case): one pass
        pos = np.searchsorted(lo, rho, side="right") - 1
        inside = (pos >= 0) & (rho < hi[np.maximum(pos, 0)])
        ring = order[np.maximum(pos, 0)]
        return binning_operator(np.where(inside, ring * ns + sector, -1), n_bins, n_pix, subpixel, valid)
    total, counts = None, []
    for k, (r0, r1) in enumerate(rings):  # overlapping rings: a pixel may count in several
        bins = np.where((rho >= r0) & (rho < r1), k * ns + sector, -1)
        op, c = binning_operator(bins, n_bins, n_pix, subpixel, valid)
        total = op if total is None else total + op
        counts.append(c)
    total = sp.csr_matrix(total)
    total.sort_indices()
    return total, np.sum(counts, axis=0)


def radial_bins(r_min: float, r_max: float, r_step: float = 1.0) -> np.ndarray:
    """Radial bin edges from ``r_min`` in steps of ``r_step``, the last edge at most ``r_max``.

    Raises
    ------
    ConfigError
        If fewer than one bin fits.
    """
    if r_step <= 0:
        raise ConfigError(f"r_step={r_step} must be positive")
    n = int(np.floor((float(r_max) - float(r_min)) / float(r_step) + 1e-9))
    if n < 1:
        raise ConfigError(
            f"no radial bin fits between r_min={r_min:.1f} and r_max={r_max:.1f} px",
            "lower r_min or raise r_max",
        )
    return float(r_min) + float(r_step) * np.arange(n + 1)


def radial_variance_operator(shape, origin, ellipse=None, mask=None, *, r_edges, subpixel: int = 1):
    """Operator summing the pixels of each radial bin, and the unmasked area per bin.

    RV itself (:func:`radial_variance`) also needs each pixel's radius, to
    evaluate the radial profile there: see :meth:`PolarGeometry.variance`.
    """
    shape = tuple(int(n) for n in shape)
    r_edges = np.asarray(r_edges, dtype=np.float64)
    rho, _ = polar_coordinates(shape, _origin(shape, origin), check_ellipse(ellipse), subpixel)
    idx = np.searchsorted(r_edges, rho, side="right") - 1
    bins = np.where((idx >= 0) & (idx < r_edges.size - 1), idx, -1)
    valid = None if mask is None else ~_check_mask(mask, shape)
    return binning_operator(bins, r_edges.size - 1, shape[0] * shape[1], subpixel, valid)


def angular_average(
    patterns, rings, origin=None, ellipse=None, mask=None, *, sector_width: float = 5.0,
    sector_offset: float = 0.0, subpixel: int = 1,
):
    """AA: mean intensity in every angular sector of every ring.

    Parameters
    ----------
    patterns : array_like
        (qy, qx) or (..., qy, qx).
    rings : array_like
        (n_rings, 2) inner and outer corrected radius of each ring, pixels.
    origin : (float, float), optional
        Direct beam (qy, qx); default the pattern centre.
    ellipse : (a, b, angle), optional
        Elliptical distortion.
    mask : numpy.ndarray of bool, optional
        True = masked out; those pixels are excluded from every mean.
    sector_width : float, default 5
        Sector width in degrees (72 sectors per ring).
    sector_offset : float, default 0
        Start of sector 0, degrees from +qx towards +qy.
    subpixel : int, default 1
        Split pixels into subpixel x subpixel samples.

    Returns
    -------
    numpy.ndarray
        (..., n_rings * n_sectors) float32; column ``ring * n_sectors + sector``;
        NaN where a sector has no unmasked pixel.
    """
    flat, lead = _as_batch(patterns)
    op, counts = sector_operator(
        np.shape(patterns)[-2:], origin, ellipse, mask, rings=rings, sector_width=sector_width,
        sector_offset=sector_offset, subpixel=subpixel,
    )
    return apply_mean(op, counts, flat).reshape(*lead, -1)


def radial_variance(
    patterns, origin=None, ellipse=None, mask=None, *, r_min: float = 0.0, r_max: float | None = None,
    r_step: float = 1.0, subpixel: int = 1,
):
    """RV: variance of the intensity along theta at each radius.

    Every unmasked pixel whose corrected radius falls in a radial bin is one
    sample along theta (weighted by the pixel's area in the bin when
    ``subpixel > 1``). Its deviation is taken from the azimuthal-mean profile's
    tangent at its bin, evaluated at the pixel's own radius (the slope of the
    parabola through the means of three neighbouring bins at the bins' mean
    radii), not from its bin's mean, so a smooth
    isotropic ring gives RV close to 0 however steep its radial profile, while
    spots on a ring give a large RV. Masked pixels are excluded.

    Returns
    -------
    rv : numpy.ndarray
        (..., n_r) float32, NaN where a bin has no unmasked pixel.
    radii : numpy.ndarray
        (n_r,) bin centres in pixels.

    Examples
    --------
    >>> y, x = np.mgrid[:48, :48]
    >>> ring = 100 * np.exp(-((np.hypot(y - 23.5, x - 23.5) - 12) ** 2) / 8)
    >>> rv, radii = radial_variance(ring.astype(np.float32), r_min=4, r_max=20)
    >>> bool(rv.max() < 1e-3 * 100**2)
    True
    """
    import math

    shape = tuple(int(n) for n in np.shape(patterns)[-2:])
    origin = _origin(shape, origin)
    ellipse = check_ellipse(ellipse)
    if r_max is None:
        r_max = edge_radius(shape, origin, ellipse)
    edges = radial_bins(r_min, r_max, r_step)
    flat, lead = _as_batch(patterns)
    valid = None if mask is None else ~_check_mask(mask, shape)
    # the offset template of the origin, as the pipeline applies it: identical sums and results
    whole = (math.floor(origin[0]), math.floor(origin[1]))
    binner, n_bins, radius = radial_bins_of(edges)
    template = OffsetTemplate.build(
        (origin[0] - whole[0], origin[1] - whole[1]), ellipse, binner, n_bins, window_half(radius, ellipse),
        int(subpixel),
    )
    window = Window(whole, template.half, shape, valid)
    rv = apply_windows(flat.reshape(-1, *shape), [(window, np.arange(flat.shape[0]))], variances=[template])[0]
    return rv.reshape(*lead, -1), 0.5 * (edges[:-1] + edges[1:])
