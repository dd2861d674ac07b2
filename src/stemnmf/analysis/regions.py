"""Sizes and shapes of refined regions: area, Feret diameter, ellipse, centroid.

A region is the set of scan positions where its map is positive; each position
is a square of side ``scan_step`` (nm) centred on the probe position. Lengths
are in nm when the scan step is known and NaN otherwise; the ``_px`` fields are
in positions.
"""

from __future__ import annotations

import math

import numpy as np

from stemnmf.errors import DataValueError

__all__ = ["REGION_DTYPE", "region_table", "max_feret_diameter", "shape_descriptors"]

#: Fields of the region table (``/regions/table``).
REGION_DTYPE = np.dtype(
    [
        ("region", np.int32),
        ("component", np.int32),
        ("area_px", np.int32),
        ("area_nm2", np.float32),
        ("equivalent_diameter_nm", np.float32),
        ("max_feret_px", np.float32),
        ("max_feret_nm", np.float32),
        ("eccentricity", np.float32),
        ("orientation_deg", np.float32),
        ("centroid_y", np.float32),
        ("centroid_x", np.float32),
        ("mean_weight", np.float32),
        ("max_weight", np.float32),
        ("dissimilarity", np.float32),
    ]
)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices of 2D integer points (Andrew's monotone chain)."""
    pts = np.unique(points, axis=0)
    if len(pts) <= 2:
        return pts
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]

    def half(seq):
        chain: list = []
        for p in seq:
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) <= 0:
                    chain.pop()
                else:
                    break
            chain.append((p[0], p[1]))
        return chain

    lower = half(pts)
    upper = half(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.int64)


def max_feret_diameter(mask) -> float:
    """Largest caliper width of a region, in positions (pixel sides).

    The region is the union of unit squares centred on its positions; the
    maximum Feret diameter is the largest distance between two of their
    corners. A rectangle of h x w positions gives ``sqrt(h**2 + w**2)``; one
    position gives ``sqrt(2)``; an empty mask gives 0.

    Examples
    --------
    >>> m = np.zeros((8, 8), bool); m[1:4, 2:6] = True
    >>> max_feret_diameter(m)
    5.0
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise DataValueError(f"a region mask must be 2D, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0.0
    sub = mask[rows]
    left = np.argmax(sub, axis=1)
    right = sub.shape[1] - np.argmax(sub[:, ::-1], axis=1)
    # corners (y, x) of the leftmost and rightmost square of every row
    corners = np.concatenate(
        [
            np.stack([rows, left], 1),
            np.stack([rows + 1, left], 1),
            np.stack([rows, right], 1),
            np.stack([rows + 1, right], 1),
        ]
    )
    hull = _hull(corners).astype(np.float64)
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff**2).sum(-1).max()))


def shape_descriptors(mask) -> dict[str, float]:
    """Centroid, eccentricity and orientation of a region from its second moments.

    Returns
    -------
    dict
        ``centroid_y``, ``centroid_x`` (positions), ``eccentricity`` (0 for a
        disk, towards 1 for a line; from the eigenvalues l1 >= l2 of the
        covariance of the position coordinates, ``sqrt(1 - l2 / l1)``), and
        ``orientation_deg``: the angle of the major axis from the +x (fast scan)
        axis towards +y (down the scan), in (-90, 90].
    """
    y, x = np.nonzero(np.asarray(mask, dtype=bool))
    if y.size == 0:
        nan = float("nan")
        return dict(centroid_y=nan, centroid_x=nan, eccentricity=nan, orientation_deg=nan)
    cy, cx = float(y.mean()), float(x.mean())
    dy, dx = y - cy, x - cx
    myy, mxx, mxy = float((dy * dy).mean()), float((dx * dx).mean()), float((dx * dy).mean())
    half_trace = 0.5 * (mxx + myy)
    root = math.sqrt(max(0.25 * (mxx - myy) ** 2 + mxy**2, 0.0))
    l1, l2 = half_trace + root, half_trace - root
    eccentricity = math.sqrt(max(0.0, 1.0 - l2 / l1)) if l1 > 0 else 0.0
    angle = 0.5 * math.degrees(math.atan2(2 * mxy, mxx - myy)) if root > 0 else 0.0
    if angle <= -90.0:
        angle += 180.0
    return dict(centroid_y=cy, centroid_x=cx, eccentricity=eccentricity, orientation_deg=angle)


def region_table(region_maps, component=None, *, scan_step: float | None = None, dissimilarity=None) -> np.ndarray:
    """Size and shape of every region, as a structured array (r,) of :data:`REGION_DTYPE`.

    Parameters
    ----------
    region_maps : array (r, sy, sx)
        Weights of each region (positive inside, 0 outside).
    component : array (r,), optional
        Component each region came from (-1 if not given).
    scan_step : float, optional
        Distance between probe positions in nm; the nm fields are NaN without it.
    dissimilarity : array (r,), optional
        Dissimilarity score of each region (NaN if not given).

    Returns
    -------
    numpy.ndarray
        Fields: ``region``, ``component``, ``area_px``, ``area_nm2``,
        ``equivalent_diameter_nm`` (diameter of the disk of the same area),
        ``max_feret_px``, ``max_feret_nm``, ``eccentricity``, ``orientation_deg``,
        ``centroid_y``, ``centroid_x`` (positions), ``mean_weight``,
        ``max_weight``, ``dissimilarity``.
    """
    region_maps = np.asarray(region_maps, dtype=np.float32)
    if region_maps.ndim != 3:
        raise DataValueError(f"region maps must be shaped (r, sy, sx), got {region_maps.shape}")
    r = region_maps.shape[0]
    step = float("nan") if scan_step is None else float(scan_step)
    table = np.zeros(r, REGION_DTYPE)
    table["region"] = np.arange(r)
    table["component"] = -1 if component is None else np.asarray(component)
    table["dissimilarity"] = np.nan if dissimilarity is None else np.asarray(dissimilarity)
    for i in range(r):
        weights = region_maps[i]
        mask = weights > 0
        area = int(mask.sum())
        row = table[i : i + 1]
        row["area_px"] = area
        row["area_nm2"] = area * step**2
        row["equivalent_diameter_nm"] = math.sqrt(4 * area / math.pi) * step
        feret = max_feret_diameter(mask)
        row["max_feret_px"] = feret
        row["max_feret_nm"] = feret * step
        for name, value in shape_descriptors(mask).items():
            row[name] = value
        row["mean_weight"] = weights[mask].mean() if area else np.nan
        row["max_weight"] = weights.max() if area else np.nan
    return table
