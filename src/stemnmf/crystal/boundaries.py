"""Misorientation across region boundaries, and coincidence-site (Σ) boundaries of cubic phases.

Two regions share a boundary where a position of one has a 4-neighbour of the
other (a position belongs to the region of largest weight). The
misorientation ``R1^T R2`` (rotations crystal -> sample) is reduced over the
proper point-group rotations on both sides to its smallest angle; its axis is
given in the crystal frame of the first region. Between cubic grains of one
phase a boundary is Σ3 (60° about <111>) or Σ9 (38.94° about <110>) when its
misorientation is within Brandon's criterion, 15° / sqrt(Σ), of the ideal one.
"""

from __future__ import annotations

import numpy as np

from stemnmf.crystal.rotations import axis_angle_matrix, quaternions_to_matrices

__all__ = ["BOUNDARY_DTYPE", "CSL_CUBIC", "reduced_misorientation", "csl_deviation", "shared_boundaries", "boundary_table"]

#: Columns of ``/orientations/boundaries``.
BOUNDARY_DTYPE = np.dtype(
    [
        ("region_a", "i4"),
        ("region_b", "i4"),
        ("length", "i4"),
        ("angle", "f8"),
        ("axis_x", "f8"),
        ("axis_y", "f8"),
        ("axis_z", "f8"),
        ("type", "U12"),
    ]
)

#: Σ -> (axis, angle in degrees) of the cubic coincidence-site boundaries that are marked.
CSL_CUBIC = {3: ((1, 1, 1), 60.0), 9: ((1, 1, 0), 38.942)}

#: Misorientations below this are low-angle boundaries (degrees).
LOW_ANGLE = 15.0


def _angle(matrices) -> np.ndarray:
    trace = np.trace(matrices, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def reduced_misorientation(rotation_a, rotation_b, symmetry):
    """Smallest-angle misorientation between two orientations over the symmetry on both sides.

    Parameters
    ----------
    rotation_a, rotation_b : array (3, 3)
        Crystal -> sample rotations.
    symmetry : array (s, 3, 3)
        Proper rotations of the point group.

    Returns
    -------
    angle : float
        Degrees.
    axis : numpy.ndarray
        (3,) unit axis in the crystal frame of ``rotation_a``.
    """
    delta = np.asarray(rotation_a).T @ np.asarray(rotation_b)
    s = np.asarray(symmetry)
    candidates = np.einsum("aij,jk,bkl->abil", s, delta, s).reshape(-1, 3, 3)
    angles = _angle(candidates)
    best = int(np.argmin(angles))
    m = candidates[best]
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:
        axis = np.array([0.0, 0.0, 1.0]) if angles[best] < 90 else _half_turn_axis(m)
    else:
        axis = axis / norm
    axis = np.sort(np.abs(axis))[::-1] if len(s) == 24 else axis
    return float(angles[best]), axis


def _half_turn_axis(m) -> np.ndarray:
    w, v = np.linalg.eigh((m + np.eye(3)) / 2.0)
    return v[:, int(np.argmax(w))]


def csl_deviation(rotation_a, rotation_b, symmetry, sigma: int) -> float:
    """Smallest angle (degrees) between the misorientation and the ideal cubic Σ ``sigma`` one."""
    axis, angle = CSL_CUBIC[sigma]
    ideal_inverse = axis_angle_matrix(axis, angle).T
    delta = np.asarray(rotation_a).T @ np.asarray(rotation_b)
    s = np.asarray(symmetry)
    candidates = np.einsum("aij,jk,bkl,lm->abim", s, delta, s, ideal_inverse).reshape(-1, 3, 3)
    return float(_angle(candidates).min())


def shared_boundaries(region_maps) -> dict[tuple[int, int], int]:
    """{(a, b): number of 4-neighbour position pairs} of the regions that touch (a < b)."""
    maps = np.asarray(region_maps)
    if maps.ndim != 3 or maps.shape[0] == 0:
        return {}
    labels = np.where(maps.max(axis=0) > 0, maps.argmax(axis=0), -1)
    counts: dict[tuple[int, int], int] = {}
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        edge = (a != b) & (a >= 0) & (b >= 0)
        lo, hi = np.minimum(a[edge], b[edge]), np.maximum(a[edge], b[edge])
        pairs, n = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True) if edge.any() else (np.zeros((0, 2), int), [])
        for (i, j), c in zip(pairs, n):
            counts[(int(i), int(j))] = counts.get((int(i), int(j)), 0) + int(c)
    return counts


def _boundary_type(angle, phase_a, phase_b, symmetry, ra, rb) -> str:
    if phase_a != phase_b:
        return "phase"
    if len(symmetry) == 24:
        for sigma in sorted(CSL_CUBIC):
            if csl_deviation(ra, rb, symmetry, sigma) <= 15.0 / np.sqrt(sigma):
                return f"Σ{sigma}"
    return "low-angle" if angle < LOW_ANGLE else "high-angle"


def boundary_table(region_maps, quaternions, phases, template_sets) -> np.ndarray:
    """The table ``/orientations/boundaries`` (:data:`BOUNDARY_DTYPE`) of the regions that touch.

    Parameters
    ----------
    region_maps : array (r, sy, sx)
    quaternions : array (r, 4)
        Orientation of each region (crystal -> sample).
    phases : array (r,)
        Phase index of each region.
    template_sets : list of TemplateSet
        Per phase; their ``symmetry`` is used.
    """
    rotations = quaternions_to_matrices(np.asarray(quaternions).reshape(-1, 4))
    phases = np.asarray(phases)
    rows = []
    for (a, b), length in sorted(shared_boundaries(region_maps).items()):
        if phases[a] == phases[b]:
            symmetry = template_sets[int(phases[a])].symmetry
            angle, axis = reduced_misorientation(rotations[a], rotations[b], symmetry)
        else:
            symmetry, angle, axis = np.eye(3)[None], float("nan"), np.full(3, np.nan)
        kind = _boundary_type(angle, phases[a], phases[b], symmetry, rotations[a], rotations[b])
        rows.append((a, b, length, angle, *axis, kind))
    return np.array(rows, dtype=BOUNDARY_DTYPE)
