"""Rotation matrices and unit quaternions (w, x, y, z), vectorised.

Convention (as in :mod:`stemnmf.simulate.rotations`): a rotation maps crystal
coordinates into the sample frame, ``v_sample = R @ v_crystal``; x along the
scan columns, y along the scan rows, z along the beam.
"""

from __future__ import annotations

import numpy as np

__all__ = ["matrices_to_quaternions", "quaternions_to_matrices", "axis_angle_matrix"]


def quaternions_to_matrices(quaternions) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(quaternions, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, -1) for row in rows], -2)


def matrices_to_quaternions(matrices) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions with w >= 0."""
    m = np.asarray(matrices, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    # the largest of 4 w^2, 4 x^2, 4 y^2, 4 z^2 gives a well-conditioned division
    diagonal = np.stack(
        [
            1 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2],
            1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
            1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
            1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2],
        ],
        axis=1,
    )
    pick = diagonal.argmax(axis=1)
    s = 2.0 * np.sqrt(np.clip(diagonal[np.arange(len(m)), pick], 1e-300, None))
    d21, d02, d10 = m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]
    a01, a02, a12 = m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1]
    candidates = np.stack(
        [
            np.stack([s / 4, d21 / s, d02 / s, d10 / s], 1),
            np.stack([d21 / s, s / 4, a01 / s, a02 / s], 1),
            np.stack([d02 / s, a01 / s, s / 4, a12 / s], 1),
            np.stack([d10 / s, a02 / s, a12 / s, s / 4], 1),
        ],
        axis=1,
    )
    q = candidates[np.arange(len(m)), pick]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q.reshape(*shape, 4)


def axis_angle_matrix(axis, angle_deg: float) -> np.ndarray:
    """Rotation (3, 3) by ``angle_deg`` about ``axis``."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    a = np.radians(angle_deg)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)
