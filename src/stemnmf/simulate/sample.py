"""Sample geometry: grains in a film, and the beam's path length through each.

Every grain is a convex polyhedron, the intersection of

* its own shape: Wulff-like facets around its centre ({111} and {100} for a
  cubic crystal, with the {100} facets ``wulff_ratio`` times further out; a
  26-facet near-sphere otherwise), scaled to the volume of a sphere of the
  grain's diameter, or no shape at all (``shape='cell'``: the grain fills its
  cell, for large crystals that tile the film);
* its power (Laguerre-Voronoi) cell against every neighbour it touches, so
  grains are cut flat where they meet (with equal sizes this is the Voronoi
  cut); the weight of a grain is the square of its radius;
* the film, 0 <= z <= film_thickness.

The beam travels along +z, so the path length at scan position (x, y) is the
length of the vertical segment inside the polyhedron, computed exactly from
the half-spaces. Scan position (i, j) sits at x = (j + 0.5) step,
y = (i + 0.5) step (Å).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from stemnmf.simulate.rotations import quaternion_to_matrix, random_quaternions

__all__ = ["Grain", "Sample", "wulff_shape", "path_lengths", "grain_halfspaces", "make_sample"]


@functools.lru_cache(maxsize=16)
def wulff_shape(cubic: bool, ratio: float = 1.1):
    """Facet normals of a unit grain shape and its volume and circumradius.

    Parameters
    ----------
    cubic : bool
        {111} facets at distance 1 and {100} facets at distance ``ratio`` (a
        truncated octahedron for 1 < ratio < sqrt(3)); otherwise the 26
        directions of {100}, {110} and {111} type at distance 1.
    ratio : float
        Distance of the {100} facets relative to the {111} facets (cubic only).

    Returns
    -------
    normals : numpy.ndarray
        (k, 3) unit normals in the crystal frame.
    distances : numpy.ndarray
        (k,) facet distances for a unit shape.
    volume : float
        Volume of the unit shape.
    circumradius : float
        Largest distance of a vertex from the centre.
    """
    from scipy.spatial import ConvexHull, HalfspaceIntersection

    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    axes = np.vstack([np.eye(3), -np.eye(3)])
    if cubic:
        normals = np.vstack([signs / math.sqrt(3), axes])
        distances = np.concatenate([np.ones(8), np.full(6, float(ratio))])
    else:
        edges = np.array(
            [v for v in np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3) if (v != 0).sum() == 2],
            float,
        )
        normals = np.vstack([signs / math.sqrt(3), axes, edges / math.sqrt(2)])
        distances = np.ones(len(normals))
    halfspaces = np.hstack([normals, -distances[:, None]])
    vertices = HalfspaceIntersection(halfspaces, np.zeros(3)).intersections
    volume = ConvexHull(vertices).volume
    circumradius = float(np.linalg.norm(vertices, axis=1).max())
    return normals, distances, float(volume), circumradius


@dataclasses.dataclass
class Grain:
    """One grain.

    Attributes
    ----------
    centre : numpy.ndarray
        (3,) position in Å (x, y, z), z measured into the film from its top surface.
    rotation : numpy.ndarray
        (3, 3) crystal -> lab rotation.
    diameter : float
        Volume-equivalent diameter of the grain's own shape in Å (before cuts).
    radius_out : float
        Radius of a sphere around the centre that holds the grain (for bounding boxes).
    weight : float
        Power-diagram weight (radius squared, Å^2).
    shape : tuple of numpy.ndarray or None
        (normals (k, 3) in the lab frame, distances (k,) in Å) of its facets, or
        None for a grain that fills its cell.
    orientation_id : int
        Index of the grain's orientation in the sample's orientation set.
    phase : int
        0 for the film's crystal, 1 for its second crystal (two-phase films).
    """

    centre: np.ndarray
    rotation: np.ndarray
    diameter: float
    radius_out: float
    weight: float
    shape: tuple | None
    orientation_id: int = 0
    phase: int = 0


def _make_grain(centre, rotation, diameter, unit_shape, orientation_id) -> Grain:
    centre = np.asarray(centre, dtype=np.float64)
    if unit_shape is None:
        return Grain(centre, rotation, float(diameter), math.inf, 0.0, None, orientation_id)
    normals, distances, volume, circumradius = unit_shape
    scale = (math.pi / 6 * diameter**3 / volume) ** (1 / 3)
    lab_normals = normals @ np.asarray(rotation).T
    return Grain(
        centre,
        np.asarray(rotation, dtype=np.float64),
        float(diameter),
        circumradius * scale,
        (diameter / 2) ** 2,
        (lab_normals, distances * scale),
        orientation_id,
    )


def grain_halfspaces(index: int, grains: list[Grain], film_thickness: float):
    """Half-spaces ``A @ p <= b`` that bound grain ``index``.

    Returns
    -------
    A : numpy.ndarray
        (m, 3)
    b : numpy.ndarray
        (m,)
    """
    grain = grains[index]
    rows = [np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, -1.0])]
    rhs = [film_thickness, 0.0]
    if grain.shape is not None:
        normals, distances = grain.shape
        rows.extend(normals)
        rhs.extend(distances + normals @ grain.centre)
    ci = grain.centre
    for j, other in enumerate(grains):
        if j == index:
            continue
        cj = other.centre
        if np.linalg.norm(cj - ci) >= grain.radius_out + other.radius_out:
            continue  # too far apart to touch
        rows.append(2.0 * (cj - ci))
        rhs.append(cj @ cj - ci @ ci - other.weight + grain.weight)
    return np.array(rows), np.array(rhs)


def path_lengths(A, b, x, y) -> np.ndarray:
    """Length of the vertical segments (x, y, z) inside ``A @ p <= b``.

    Parameters
    ----------
    A : array_like
        (m, 3) half-space normals; must bound z from both sides (the film does).
    b : array_like
        (m,)
    x, y : array_like
        Positions in Å, broadcast together.

    Returns
    -------
    numpy.ndarray
        Path lengths in Å, shaped like ``x + y``.
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    shape = x.shape
    x, y = x.ravel(), y.ravel()
    rhs = b[:, None] - A[:, :1] * x[None] - A[:, 1:2] * y[None]
    az = A[:, 2]
    eps = 1e-12
    up, down, flat = az > eps, az < -eps, np.abs(az) <= eps
    upper = np.min(rhs[up] / az[up, None], axis=0)
    lower = np.max(rhs[down] / az[down, None], axis=0)
    length = np.clip(upper - lower, 0.0, None)
    if flat.any():
        length[np.any(rhs[flat] < 0, axis=0)] = 0.0
    return length.reshape(shape)


@dataclasses.dataclass
class ThicknessMap:
    """Path lengths of one grain on a window of the padded scan grid.

    ``t[i, j]`` is the path length at padded-grid position (y0 + i, x0 + j);
    padded-grid index p corresponds to scan index p - pad.
    """

    y0: int
    x0: int
    t: np.ndarray


@dataclasses.dataclass
class Sample:
    """Grains in a film over a scan, with the path length of the beam through each.

    Attributes
    ----------
    grains : list of Grain
    film_thickness : float
        Å.
    scan_shape : (int, int)
        (sy, sx) probe positions in the field of view.
    scan_step : float
        Å between positions.
    pad : int
        Extra positions computed on each side of the field of view (for the
        blur across the scan).
    maps : list of ThicknessMap
        One per grain, on the padded grid.
    """

    grains: list[Grain]
    film_thickness: float
    scan_shape: tuple[int, int]
    scan_step: float
    pad: int
    maps: list[ThicknessMap]

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.scan_shape[0] + 2 * self.pad, self.scan_shape[1] + 2 * self.pad

    def dense(self, index: int, padded: bool = False) -> np.ndarray:
        """Path length of grain ``index`` over the field of view (or the padded grid)."""
        py, px = self.padded_shape
        out = np.zeros((py, px), np.float64)
        m = self.maps[index]
        out[m.y0 : m.y0 + m.t.shape[0], m.x0 : m.x0 + m.t.shape[1]] = m.t
        if padded:
            return out
        sy, sx = self.scan_shape
        return out[self.pad : self.pad + sy, self.pad : self.pad + sx]

    def in_view(self) -> np.ndarray:
        """Indices of the grains the beam crosses at some position of the field of view."""
        return np.array([i for i in range(len(self.grains)) if self.dense(i).max() > 0], dtype=np.int64)

    def thickness(self) -> np.ndarray:
        """(n_in_view, sy, sx) path lengths of the grains in view, in Å."""
        index = self.in_view()
        sy, sx = self.scan_shape
        if len(index) == 0:
            return np.zeros((0, sy, sx))
        return np.stack([self.dense(i) for i in index])


def _grid_coords(index, step, pad):
    return (np.asarray(index) - pad + 0.5) * step


def _thickness_maps(grains, film_thickness, padded_shape, step, pad) -> list[ThicknessMap]:
    py, px = padded_shape
    maps = []
    for i, grain in enumerate(grains):
        if math.isfinite(grain.radius_out):
            reach = grain.radius_out / step
            cy = grain.centre[1] / step + pad - 0.5
            cx = grain.centre[0] / step + pad - 0.5
            y0, y1 = max(0, math.floor(cy - reach)), min(py, math.ceil(cy + reach) + 1)
            x0, x1 = max(0, math.floor(cx - reach)), min(px, math.ceil(cx + reach) + 1)
        else:
            y0, y1, x0, x1 = 0, py, 0, px
        if y1 <= y0 or x1 <= x0:
            maps.append(ThicknessMap(0, 0, np.zeros((0, 0))))
            continue
        A, b = grain_halfspaces(i, grains, film_thickness)
        ys = _grid_coords(np.arange(y0, y1), step, pad)
        xs = _grid_coords(np.arange(x0, x1), step, pad)
        t = path_lengths(A, b, xs[None, :], ys[:, None])
        maps.append(ThicknessMap(y0, x0, t))
    return maps


def _count_in_view(maps, scan_shape, pad) -> int:
    sy, sx = scan_shape
    count = 0
    for m in maps:
        ny, nx = m.t.shape
        a0, a1 = max(m.y0, pad), min(m.y0 + ny, pad + sy)
        b0, b1 = max(m.x0, pad), min(m.x0 + nx, pad + sx)
        if a1 > a0 and b1 > b0 and m.t[a0 - m.y0 : a1 - m.y0, b0 - m.x0 : b1 - m.x0].max() > 0:
            count += 1
    return count


def make_sample(
    *,
    scan_shape: tuple[int, int],
    scan_step: float,
    pad: int,
    film_thickness: float,
    n_grains: int,
    grain_diameter: tuple[float, float],
    shape: str,
    cubic: bool,
    wulff_ratio: float,
    rotations: np.ndarray | None,
    z_spread: float,
    rng: np.random.Generator,
    centres_in_view: bool = False,
) -> Sample:
    """Place grains so that exactly ``n_grains`` of them are in the field of view.

    Parameters
    ----------
    scan_shape, scan_step, pad
        The scan (positions, Å) and the extra positions on each side.
    film_thickness : float
        Å.
    n_grains : int
        Grains to have in view.
    grain_diameter : (float, float)
        Range of volume-equivalent diameters (Å), drawn uniformly.
    shape : {'wulff', 'cell'}
        Wulff-like grains placed at uniform density over the field of view and
        its surroundings until ``n_grains`` are in view, or ``n_grains``
        crystals that fill their cells of the film, centred in the field of view.
    cubic, wulff_ratio
        Facets of the Wulff-like shape (see :func:`wulff_shape`).
    rotations : numpy.ndarray or None
        (k, 3, 3) set of orientations to draw from (each used at least once in
        'cell' mode); None draws uniformly random orientations.
    z_spread : float
        'cell' mode: centres lie at depth film_thickness * (0.5 +- z_spread / 2).
    rng : numpy.random.Generator
    centres_in_view : bool, default False
        'wulff' mode: draw the grain centres inside the field of view only
        (small test scans), instead of at uniform density around it.
    """
    sy, sx = scan_shape
    T = float(film_thickness)
    Lx, Ly = sx * scan_step, sy * scan_step
    padded_shape = (sy + 2 * pad, sx + 2 * pad)

    def draw_rotation(k=None):
        if rotations is None:
            return quaternion_to_matrix(random_quaternions(1, rng)[0]), 0
        k = int(rng.integers(len(rotations))) if k is None else k
        return np.asarray(rotations[k]), k

    if shape == "cell":
        n = int(n_grains)
        ids = np.arange(n) % (1 if rotations is None else len(rotations))
        rng.shuffle(ids)
        spacing = 0.7 * math.sqrt(Lx * Ly / max(n, 1))
        centres = []
        tries = 0
        while len(centres) < n:
            candidate = np.array([rng.uniform(0.5, sx - 0.5) * scan_step, rng.uniform(0.5, sy - 0.5) * scan_step])
            if all(np.linalg.norm(candidate - c) >= spacing for c in centres):
                centres.append(candidate)
            tries += 1
            if tries % 2000 == 0:
                spacing *= 0.9
        grains = []
        for i, (cx, cy) in enumerate(centres):
            z = T * (0.5 + rng.uniform(-0.5, 0.5) * z_spread)
            rotation, k = draw_rotation(int(ids[i]) if rotations is not None else None)
            grains.append(_make_grain((cx, cy, z), rotation, max(Lx, Ly, T), None, k))
        maps = _thickness_maps(grains, T, padded_shape, scan_step, pad)
        return Sample(grains, T, (sy, sx), float(scan_step), pad, maps)

    unit_shape = wulff_shape(bool(cubic), float(wulff_ratio))
    d_lo, d_hi = grain_diameter
    reach_max = unit_shape[3] * (math.pi / 6 * d_hi**3 / unit_shape[2]) ** (1 / 3)
    margin = pad * scan_step + reach_max
    fov_x = (0.5 * scan_step, Lx - 0.5 * scan_step)
    fov_y = (0.5 * scan_step, Ly - 0.5 * scan_step)
    x_range = fov_x if centres_in_view else (-margin, Lx + margin)
    y_range = fov_y if centres_in_view else (-margin, Ly + margin)

    grains: list[Grain] = []
    estimate = 0
    target = int(n_grains)
    limit = 20 * target + 200
    maps = []
    while len(grains) < limit:
        diameter = rng.uniform(d_lo, d_hi)
        r = diameter / 2
        z_lo, z_hi = (r, T - r) if T > 2 * r else (T / 2, T / 2)
        centre = (rng.uniform(*x_range), rng.uniform(*y_range), rng.uniform(z_lo, z_hi))
        rotation, k = draw_rotation()
        grain = _make_grain(centre, rotation, diameter, unit_shape, k)
        grains.append(grain)
        dx = max(fov_x[0] - centre[0], 0.0, centre[0] - fov_x[1])
        dy = max(fov_y[0] - centre[1], 0.0, centre[1] - fov_y[1])
        if math.hypot(dx, dy) < grain.radius_out:
            estimate += 1
        if estimate >= target:
            maps = _thickness_maps(grains, T, padded_shape, scan_step, pad)
            estimate = _count_in_view(maps, (sy, sx), pad)
            if estimate >= target:
                break
    if not maps or len(maps) != len(grains):
        maps = _thickness_maps(grains, T, padded_shape, scan_step, pad)
    return Sample(grains, T, (sy, sx), float(scan_step), pad, maps)
