"""Polar-elliptical geometry: detector pixels -> (radius, angle) and back.

Conventions (shared with :mod:`stemnmf.calibrate`):

* pixel ``(i, j)`` of a ``(qy, qx)`` pattern has its centre at ``(qy, qx) = (i, j)``;
* ``origin`` is the direct-beam position ``(qy, qx)`` in pixels;
* ``ellipse = (a, b, angle)``: semi-axes ``a >= b`` of a reference ring in pixels
  and the angle of the ``a`` axis in radians, from +qx towards +qy;
* the corrected radius ``rho`` maps that ellipse onto the circle of radius
  ``sqrt(a * b)``: offsets are stretched by ``sqrt(b / a)`` along the a axis and
  by ``sqrt(a / b)`` along the b axis (an area-preserving map), so one pixel
  keeps a unit area in corrected coordinates;
* the angle ``theta`` is measured in degrees in [0, 360), from +qx towards +qy,
  in the corrected frame.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from stemnmf.errors import CalibrationError, ConfigError

__all__ = [
    "binning_operator",
    "check_ellipse",
    "correct_offsets",
    "detector_coordinates",
    "edge_radius",
    "polar_coordinates",
]


def check_ellipse(ellipse) -> tuple[float, float, float] | None:
    """Validate ``(a, b, angle)``; None stays None.

    Raises
    ------
    CalibrationError
        If the semi-axes are not positive and finite.
    """
    if ellipse is None:
        return None
    try:
        a, b, angle = (float(v) for v in ellipse)
    except (TypeError, ValueError):
        raise CalibrationError(
            f"ellipse {ellipse!r} is not three numbers (a, b, angle)", "give semi-axes in pixels and an angle in radians"
        ) from None
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(angle)) or a <= 0 or b <= 0:
        raise CalibrationError(f"ellipse semi-axes ({a}, {b}) must be positive and finite", "fit the ellipse again")
    if b > a:  # keep a >= b: swap axes and turn the angle by 90 degrees
        a, b, angle = b, a, angle + math.pi / 2
    return a, b, angle


def _stretch(ellipse):
    """2 x 2 matrix M with corrected = M @ (dx, dy)."""
    if ellipse is None:
        return None
    a, b, angle = ellipse
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])  # columns: a axis, b axis in (x, y)
    scale = np.diag([math.sqrt(b / a), math.sqrt(a / b)])
    return rot @ scale @ rot.T


def correct_offsets(dqy, dqx, ellipse=None):
    """Elliptically corrected offsets ``(dqy', dqx')`` from the origin.

    Parameters
    ----------
    dqy, dqx : array_like
        Offsets from the direct beam in pixels.
    ellipse : (a, b, angle), optional
        Elliptical distortion; None leaves the offsets unchanged.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Corrected offsets, float64.
    """
    dqy = np.asarray(dqy, dtype=np.float64)
    dqx = np.asarray(dqx, dtype=np.float64)
    m = _stretch(check_ellipse(ellipse))
    if m is None:
        return dqy, dqx
    return m[1, 0] * dqx + m[1, 1] * dqy, m[0, 0] * dqx + m[0, 1] * dqy


def polar_coordinates(shape, origin, ellipse=None, subpixel: int = 1):
    """Corrected radius and angle of every pixel (or sub-pixel) of a pattern.

    Parameters
    ----------
    shape : (int, int)
        Pattern shape (qy, qx).
    origin : (float, float)
        Direct-beam position (qy, qx) in pixels.
    ellipse : (a, b, angle), optional
        Elliptical distortion.
    subpixel : int, default 1
        Each pixel is split into ``subpixel x subpixel`` samples.

    Returns
    -------
    rho : numpy.ndarray
        (qy * qx * subpixel**2,) corrected radius in pixels, pixel-major order
        (all samples of pixel 0 first).
    theta : numpy.ndarray
        Same shape, angle in degrees in [0, 360).
    """
    qy, qx = (int(n) for n in shape)
    s = int(subpixel)
    offsets = (np.arange(s) + 0.5) / s - 0.5
    yy = (np.arange(qy)[:, None] + offsets[None, :]).reshape(qy, 1, s, 1) - float(origin[0])
    xx = (np.arange(qx)[:, None] + offsets[None, :]).reshape(1, qx, 1, s) - float(origin[1])
    dy = np.broadcast_to(yy, (qy, qx, s, s)).reshape(-1)
    dx = np.broadcast_to(xx, (qy, qx, s, s)).reshape(-1)
    dy, dx = correct_offsets(dy, dx, ellipse)
    rho = np.hypot(dy, dx)
    theta = np.degrees(np.arctan2(dy, dx)) % 360.0
    return rho, theta


def detector_coordinates(radius, angle_deg, origin, ellipse=None):
    """Detector position ``(qy, qx)`` of corrected polar coordinates (the inverse map).

    Use it to draw rings and sectors on a pattern: ``radius`` and ``angle_deg``
    broadcast against each other.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        qy and qx in pixels.
    """
    t = np.radians(np.asarray(angle_deg, dtype=np.float64))
    r = np.asarray(radius, dtype=np.float64)
    cy, cx = r * np.sin(t), r * np.cos(t)
    m = _stretch(check_ellipse(ellipse))
    if m is not None:
        inv = np.linalg.inv(m)
        cx, cy = inv[0, 0] * cx + inv[0, 1] * cy, inv[1, 0] * cx + inv[1, 1] * cy
    return cy + float(origin[0]), cx + float(origin[1])


def edge_radius(shape, origin, ellipse=None) -> float:
    """Largest corrected radius whose whole circle lies on the detector."""
    qy, qx = shape
    n = 4 * max(qy, qx) + 1
    ty, tx = np.linspace(-0.5, qy - 0.5, n), np.linspace(-0.5, qx - 0.5, n)
    ys = np.concatenate([ty, ty, np.full(n, -0.5), np.full(n, qy - 0.5)])
    xs = np.concatenate([np.full(n, -0.5), np.full(n, qx - 0.5), tx, tx])
    dy, dx = correct_offsets(ys - origin[0], xs - origin[1], ellipse)
    inside = 0 <= origin[0] <= qy - 1 and 0 <= origin[1] <= qx - 1
    return float(np.hypot(dy, dx).min()) if inside else 0.0


def binning_operator(bins, n_bins: int, n_pixels: int, subpixel: int = 1, valid=None, dtype=np.float64):
    """Sparse operator summing pixels into bins: ``sums = op @ pattern.ravel()``.

    Parameters
    ----------
    bins : numpy.ndarray of int
        Bin of every sample, as from :func:`polar_coordinates` (pixel-major, with
        ``subpixel**2`` samples per pixel); negative = no bin.
    n_bins, n_pixels : int
        Operator shape.
    subpixel : int
        Samples per pixel along each axis; each sample weighs ``1 / subpixel**2``.
    valid : numpy.ndarray of bool, optional
        (n_pixels,) False for masked pixels, which get no weight at all.

    Returns
    -------
    op : scipy.sparse.csr_matrix
        (n_bins, n_pixels); the weight of a pixel in a bin is the fraction of
        its area that falls in the bin.
    counts : numpy.ndarray
        (n_bins,) float64 sum of weights per bin (unmasked pixel area).
    """
    s2 = int(subpixel) ** 2
    bins = np.asarray(bins).reshape(-1)
    if bins.size != n_pixels * s2:
        raise ConfigError(f"{bins.size} samples for {n_pixels} pixels at subpixel={subpixel}")
    pixel = np.repeat(np.arange(n_pixels), s2)
    keep = bins >= 0
    if valid is not None:
        keep &= np.repeat(np.asarray(valid, dtype=bool).reshape(-1), s2)
    rows, cols = bins[keep], pixel[keep]
    data = np.full(rows.size, 1.0 / s2, dtype=dtype)
    op = sp.csr_matrix((data, (rows, cols)), shape=(n_bins, n_pixels), dtype=dtype)
    op.sum_duplicates()
    op.sort_indices()
    counts = np.asarray(op.sum(axis=1), dtype=np.float64).reshape(-1)
    return op, counts
