"""Fast kinematic spots of a phase for any rotation, for continuous orientation refinement.

The reflections of a phase (reciprocal vectors ``g`` in the crystal frame of
orix, and their kinematic intensity |F|^2 from diffsims) are computed once;
for a crystal -> sample rotation ``R`` and a thickness ``t`` the spots are then
a matrix product away (beam along +z, wave number K = 1 / lambda):

    g_lab = R g,   s = -g_z - |g|^2 / (2 K),   I = |F|^2 sinc^2(s t),

the excitation error and rocking curve of a uniform slab (side lobes
included). The spot lies at (g_lab_x, g_lab_y) in the sample frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stemnmf.crystal.phases import require_crystal_extra

__all__ = ["ReflectionTable", "reflection_table", "kinematic_spots"]


@dataclasses.dataclass(frozen=True, eq=False)
class ReflectionTable:
    """Reflections of one phase out to ``q_max``.

    Attributes
    ----------
    g : numpy.ndarray
        (m, 3) reciprocal vectors in the crystal frame, 1/Å.
    intensity : numpy.ndarray
        (m,) |F|^2, relative.
    wave_number : float
        K = 1 / lambda of the beam, 1/Å.
    """

    g: np.ndarray
    intensity: np.ndarray
    wave_number: float


def reflection_table(phase, *, q_max: float, wavelength: float, minimum_intensity: float = 1e-6) -> ReflectionTable:
    """The reflections of an orix ``phase`` with |g| <= ``q_max`` (1/Å) and their |F|^2 (diffsims).

    Reflections weaker than ``minimum_intensity`` of the strongest (the
    forbidden ones) are dropped.
    """
    require_crystal_extra("orientation refinement")
    from diffsims.crystallography import ReciprocalLatticeVector

    vectors = ReciprocalLatticeVector.from_min_dspacing(phase.deepcopy(), min_dspacing=1.0 / float(q_max))
    vectors.sanitise_phase()
    vectors.calculate_structure_factor()
    g = np.asarray(vectors.data, dtype=np.float64).reshape(-1, 3)
    intensity = np.abs(np.asarray(vectors.structure_factor).reshape(-1)) ** 2
    keep = (np.linalg.norm(g, axis=1) <= q_max) & (intensity >= minimum_intensity * intensity.max())
    return ReflectionTable(g[keep], intensity[keep] / intensity[keep].max(), 1.0 / float(wavelength))


def kinematic_spots(table: ReflectionTable, rotation, thickness: float):
    """Spot positions x, y (1/Å, sample frame) and intensities (m,) for one rotation (3, 3) and thickness (Å)."""
    g_lab = table.g @ np.asarray(rotation, dtype=np.float64).T
    s = -g_lab[:, 2] - np.einsum("ij,ij->i", g_lab, g_lab) * (0.5 / table.wave_number)
    return g_lab[:, 0], g_lab[:, 1], table.intensity * np.sinc(s * float(thickness)) ** 2
