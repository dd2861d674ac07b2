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

__all__ = [
    "REGION_DTYPE",
    "OVERLAPPED_FRACTION",
    "region_table",
    "region_overlap",
    "region_confidence",
    "max_feret_diameter",
    "shape_descriptors",
]

#: A region is ``overlapped`` when at least this share of its positions lies in another region too.
OVERLAPPED_FRACTION = 0.1

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
        ("confidence", np.float32),
        ("overlap_fraction", np.float32),
        ("overlapped", np.bool_),
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


def region_overlap(region_maps) -> np.ndarray:
    """Share of each region's positions that lie in at least one other region, (r,) float64.

    Regions of different components overlap where grains overlap along the
    beam (a position sees both); 0 for a region alone at all its positions.

    Examples
    --------
    >>> maps = np.zeros((2, 4, 4), np.float32); maps[0, :2] = 1; maps[1, 1:3] = 1
    >>> region_overlap(maps).tolist()
    [0.5, 0.5]
    """
    masks = np.asarray(region_maps) > 0
    if masks.ndim != 3:
        raise DataValueError(f"region maps must be shaped (r, sy, sx), got {masks.shape}")
    count = masks.sum(axis=0)
    area = masks.reshape(masks.shape[0], -1).sum(axis=1)
    shared = (masks & (count > 1)[None]).reshape(masks.shape[0], -1).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, shared / np.maximum(area, 1), 0.0)


def region_confidence(region_maps, component, maps, scale=None) -> np.ndarray:
    """How much of the fitted signal at a region's positions its component explains, (r,) float32 in [0, 1].

    ``confidence_r = mean over the region of a_c(i) / sum_j a_j(i)`` with
    ``a_j(i) = W_ij * scale_j`` the size of component j's contribution at
    position i (``scale_j = ||H_j||``, which removes the scale NMF can move
    between W and H; 1 when not given) and c the region's component. 1 for a
    grain that its component alone explains; about 0.5 where two grains
    overlap along the beam with equal weight; low for a region cut from a map
    that other components explain better.
    """
    region_maps = np.asarray(region_maps) > 0
    maps = np.asarray(maps, np.float64)
    k = maps.shape[0]
    scale = np.ones(k) if scale is None else np.asarray(scale, np.float64).reshape(k)
    contribution = maps * scale[:, None, None]
    total = contribution.sum(axis=0)
    out = np.full(region_maps.shape[0], np.nan, np.float32)
    for r, (mask, c) in enumerate(zip(region_maps, np.asarray(component))):
        inside = mask & (total > 0)
        if c >= 0 and inside.any():
            out[r] = float(np.mean(contribution[c][inside] / total[inside]))
    return out


def region_table(
    region_maps, component=None, *, scan_step: float | None = None, dissimilarity=None, confidence=None
) -> np.ndarray:
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
    confidence : array (r,), optional
        :func:`region_confidence` of each region (NaN if not given).

    Returns
    -------
    numpy.ndarray
        Fields: ``region``, ``component``, ``area_px``, ``area_nm2``,
        ``equivalent_diameter_nm`` (diameter of the disk of the same area),
        ``max_feret_px``, ``max_feret_nm``, ``eccentricity``, ``orientation_deg``,
        ``centroid_y``, ``centroid_x`` (positions), ``mean_weight``,
        ``max_weight``, ``dissimilarity``, ``confidence``, ``overlap_fraction``
        (:func:`region_overlap`) and ``overlapped`` (overlap_fraction >=
        :data:`OVERLAPPED_FRACTION`).
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
    table["confidence"] = np.nan if confidence is None else np.asarray(confidence)
    if r:
        shared = region_overlap(region_maps)
        table["overlap_fraction"] = shared
        table["overlapped"] = shared >= OVERLAPPED_FRACTION
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
