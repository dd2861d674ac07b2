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
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from stemnmf.crystal.phases import phase_key, require_crystal_extra

__all__ = ["ReflectionTable", "reflection_table", "kinematic_spots"]

log = logging.getLogger(__name__)

#: Bumped whenever the cached tables change meaning.
TABLE_FORMAT = 1


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


def reflection_table(
    phase, *, q_max: float, wavelength: float, minimum_intensity: float = 1e-6, cache_dir: str | os.PathLike | None = None
) -> ReflectionTable:
    """The reflections of an orix ``phase`` with |g| <= ``q_max`` (1/Å) and their |F|^2 (diffsims).

    Reflections weaker than ``minimum_intensity`` of the strongest (the
    forbidden ones) are dropped. With ``cache_dir`` the table is kept there as
    ``.npz``, keyed by the phase and the settings (a spinel table out to 3.7 1/Å
    takes 15-55 s to compute).
    """
    require_crystal_extra("orientation refinement")
    path = None
    if cache_dir is not None:
        import diffsims

        settings = [phase_key(phase), round(float(q_max), 4), round(float(wavelength), 8), float(minimum_intensity),
                    diffsims.__version__, TABLE_FORMAT]
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        safe_name = "".join(ch if ch.isalnum() else "_" for ch in phase.name) or "phase"
        path = Path(cache_dir) / f"reflections-{safe_name}-{key}.npz"
        if path.is_file():
            try:
                with np.load(path) as stored:
                    return ReflectionTable(stored["g"], stored["intensity"], float(stored["wave_number"]))
            except (OSError, ValueError, KeyError) as err:
                log.warning("reflection cache %s is unreadable (%s); computing again", path, err)
    table = _compute_table(phase, q_max, wavelength, minimum_intensity)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
            np.savez(partial, g=table.g, intensity=table.intensity, wave_number=table.wave_number)
            os.replace(partial, path)  # whole files only, for other processes reading the cache
        except OSError as err:
            log.warning("cannot cache reflections in %s (%s)", path.parent, err)
    return table


def _compute_table(phase, q_max: float, wavelength: float, minimum_intensity: float) -> ReflectionTable:
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
