"""Rotations as unit quaternions (w, x, y, z) and 3 x 3 matrices.

Convention: a rotation maps crystal Cartesian coordinates to lab coordinates,
``v_lab = R @ v_crystal``. The lab frame has x along the scan columns, y along
the scan rows and z along the beam.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "twin_orientations",
    "random_quaternions",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "rotation_about_z",
    "rotation_to_z",
]


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations uniformly distributed over SO(3), as (n, 4) unit quaternions with w >= 0."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q


def quaternion_to_matrix(q) -> np.ndarray:
    """Unit quaternion(s) (..., 4) as (w, x, y, z) -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quaternion(matrix) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (w, x, y, z) with w >= 0."""
    m = np.asarray(matrix, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def rotation_about_z(angle_rad: float) -> np.ndarray:
    """Rotation by ``angle_rad`` about the beam (lab z) axis."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_to_z(direction) -> np.ndarray:
    """The smallest rotation taking ``direction`` (3,) onto +z."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(d, z)
    sin = np.linalg.norm(axis)
    cos = float(d @ z)
    if sin < 1e-12:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / sin
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * kx + (1 - cos) * (kx @ kx)


def twin_orientations(rotations, zone_axes, n_twins: int, rng: np.random.Generator):
    """Replace the last ``n_twins`` of a cubic orientation set by Σ3 twins of the first ones.

    The twin of crystal -> lab rotation R is ``R @ T``, T the half turn about a
    <111> (drawn from ``rng``) of the crystal frame: 60° about <111> up to the
    cube's symmetry. Its beam direction in the crystal frame is T u for the
    parent's u (``zone_axes``, integers: 2 (u . n) n - 3 u over n = <111>,
    divided by their common factor).

    Returns
    -------
    rotations, zone_axes : (k, 3, 3), (k, 3) or None
    """
    rotations = np.array(rotations, dtype=np.float64)
    zone_axes = None if zone_axes is None else np.array(zone_axes, dtype=np.int64)
    k = len(rotations)
    for i in range(n_twins):
        n = np.array([1, 1, 1]) * rng.choice([-1, 1], size=3)
        half_turn = 2.0 * np.outer(n, n) / 3.0 - np.eye(3)
        rotations[k - 1 - i] = rotations[i] @ half_turn
        if zone_axes is not None:
            u = zone_axes[i]
            twin_axis = 2 * int(u @ n) * n - 3 * u
            zone_axes[k - 1 - i] = twin_axis // max(1, int(np.gcd.reduce(np.abs(twin_axis))))
    return rotations, zone_axes
