"""Kinematic templates: the spots of a phase for a set of beam directions, cached on disk.

Orientations are sampled with orix ``get_sample_reduced_fundamental`` (beam
directions over the fundamental sector of the Laue group, in-plane angle 0;
the in-plane angle and the mirror image are searched by the matching), and the
spots of each are computed by diffsims ``SimulationGenerator.calculate_diffraction2d``.

Frames. stemnmf's rotations map crystal coordinates into the sample/lab frame
(x along scan columns, y along scan rows, z along the beam, which travels
towards +z). diffsims returns the reciprocal vectors ``M.T @ g`` for an orix
rotation with matrix ``M`` and excites those with ``v_z ~ +|g|^2 / (2 K)``,
i.e. its beam travels towards -z. A half turn about x turns one into the
other, so the template of orix rotation ``M`` is the lab orientation
``R0 = diag(1, -1, -1) @ M.T`` and its spot at diffsims (x, y) lies at lab
(x, -y). The hkl labels of diffsims are not used: only its vectors and
intensities.
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

__all__ = [
    "TemplateSet",
    "SpotTable",
    "make_templates",
    "spots_for_rotations",
    "default_cache_dir",
    "symmetry_matrices",
    "TEMPLATE_FORMAT",
]

log = logging.getLogger(__name__)

#: Bumped whenever the cached arrays change meaning.
TEMPLATE_FORMAT = 2

_HALF_TURN_X = np.diag([1.0, -1.0, -1.0])

#: Reflections with |F|^2 below this fraction of the strongest are forbidden (:class:`SpotTable`).
FORBIDDEN = 1e-12


@dataclasses.dataclass(eq=False)
class TemplateSet:
    """The spots of one phase for ``n`` orientations (in-plane angle 0).

    Attributes
    ----------
    phase_name : str
    rotations : numpy.ndarray
        (n, 3, 3) crystal -> lab rotations of the templates.
    radius : numpy.ndarray
        (n, m) float32 spot distance from the direct beam, 1/Å (rows padded with 0).
    angle : numpy.ndarray
        (n, m) float32 spot azimuth in the lab frame, radians from +x towards +y.
    intensity : numpy.ndarray
        (n, m) float32 kinematic intensity (0 for padding).
    symmetry : numpy.ndarray
        (s, 3, 3) proper rotations of the phase's point group (crystal frame).
    settings : dict
        What the templates were made with (beam energy, q_max, resolution, ...).
    """

    phase_name: str
    rotations: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    intensity: np.ndarray
    symmetry: np.ndarray
    settings: dict

    @property
    def n_templates(self) -> int:
        return int(self.rotations.shape[0])

    def save(self, path: Path) -> None:
        """Write to ``path`` (.npz) under a temporary name, then rename."""
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                rotations=self.rotations,
                radius=self.radius,
                angle=self.angle,
                intensity=self.intensity,
                symmetry=self.symmetry,
                meta=np.array(json.dumps({"phase_name": self.phase_name, "settings": self.settings})),
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TemplateSet:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(
                meta["phase_name"],
                data["rotations"],
                data["radius"],
                data["angle"],
                data["intensity"],
                data["symmetry"],
                meta["settings"],
            )


def default_cache_dir() -> Path:
    """``$STEMNMF_CACHE/templates`` or ``~/.cache/stemnmf/templates``."""
    root = os.environ.get("STEMNMF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stemnmf")
    return Path(root) / "templates"


def symmetry_matrices(phase) -> np.ndarray:
    """(s, 3, 3) proper rotations of an orix phase's point group."""
    group = phase.point_group.proper_subgroup
    return np.asarray(group.to_matrix(), dtype=np.float64).reshape(-1, 3, 3)


def _pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _spots(phase, sampled, settings: dict):
    """Spot radii, azimuths and intensities (lab frame) of orix rotations ``sampled``."""
    from diffsims.generators.simulation_generator import SimulationGenerator

    generator = SimulationGenerator(
        settings["beam_energy"],
        shape_factor_model="sin2c",
        minimum_intensity=settings["minimum_intensity"],
        minima_number=1,
    )
    simulation = generator.calculate_diffraction2d(
        phase,
        sampled,
        reciprocal_radius=settings["q_max"],
        with_direct_beam=False,
        max_excitation_error=2.0 * settings["excitation_error"],
        shape_factor_width=settings["excitation_error"],
    )
    vectors = simulation.coordinates if sampled.size > 1 else [simulation.coordinates]
    radius, angle, intensity = [], [], []
    for vector in vectors:
        xyz = np.asarray(vector.data, dtype=np.float64).reshape(-1, 3)
        x, y = xyz[:, 0], -xyz[:, 1]  # diffsims frame -> lab frame (half turn about x)
        radius.append(np.hypot(x, y))
        angle.append(np.arctan2(y, x))
        intensity.append(np.asarray(vector.intensity, dtype=np.float64).reshape(-1))
    width = max(1, max(len(r) for r in radius))
    return _pad(radius, width), _pad(angle, width), _pad(intensity, width)


def spots_for_rotations(phase, rotations, settings: dict):
    """Spots (radius, angle, intensity), each (n, m), of lab rotations (n, 3, 3) (crystal -> lab)."""
    from orix.quaternion import Rotation

    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    orix_matrices = np.swapaxes(rotations, 1, 2) @ _HALF_TURN_X  # M with diag(1, -1, -1) M^T = R
    return _spots(phase, Rotation.from_matrix(orix_matrices), settings)


class SpotTable:
    """The spots of :func:`spots_for_rotations` for many rotations at once, without diffsims' per-rotation set-up.

    The reciprocal lattice vectors out to ``q_max`` and their kinematic
    intensities |F|^2 (both from diffsims, as it computes them) are found
    once; each rotation then needs a matrix product, diffsims' excitation
    error ``sqrt(K^2 - r^2)`` form, its sinc^2 rel-rod (first zero at
    ``excitation_error``, spots out to twice that) and its relative
    intensity floor. The spots equal diffsims' (checked in the tests), but for
    reflections with |F|^2 below ``FORBIDDEN`` of the strongest, which are
    left out (diffsims keeps them only in a pattern with no spot above
    ``FORBIDDEN / minimum_intensity`` of the strongest reflection).

    Parameters
    ----------
    phase : orix.crystal_map.Phase
    settings : dict
        ``beam_energy``, ``q_max``, ``excitation_error`` and ``minimum_intensity``
        (as in :attr:`TemplateSet.settings`).
    """

    def __init__(self, phase, settings: dict):
        from diffsims.crystallography import ReciprocalLatticeVector
        from diffsims.generators.simulation_generator import SimulationGenerator
        from diffsims.utils.sim_utils import get_kinematical_intensities

        generator = SimulationGenerator(settings["beam_energy"])
        vectors = ReciprocalLatticeVector.from_min_dspacing(phase, min_dspacing=1.0 / settings["q_max"])
        g = np.asarray(vectors.data, dtype=np.float64).reshape(-1, 3)
        intensity = np.asarray(
            get_kinematical_intensities(
                phase.structure, vectors.hkl, vectors.gspacing, prefactor=1.0, scattering_params=generator.scattering_params
            ),
            dtype=np.float64,
        ).reshape(-1)
        allowed = intensity > FORBIDDEN * intensity.max()  # forbidden reflections: |F|^2 ~ 1e-30 of the strongest
        self.g, self.intensity = g[allowed], intensity[allowed]
        self.wave_number = 1.0 / float(generator.wavelength)
        self.excitation_error = float(settings["excitation_error"])
        self.minimum_intensity = float(settings["minimum_intensity"])

    def spots(self, rotations):
        """(radius, angle, intensity), each (n, m) float32 zero-padded, of lab rotations (n, 3, 3) (crystal -> lab)."""
        rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
        orix_matrices = np.swapaxes(rotations, 1, 2) @ _HALF_TURN_X
        xyz = np.einsum("mj,njk->nmk", self.g, orix_matrices)  # diffsims' rotated vectors M^T g, as rows
        r_spot = np.hypot(xyz[..., 0], xyz[..., 1])
        k = self.wave_number
        error = k - np.sqrt(k * k - r_spot * r_spot) - xyz[..., 2]
        fac = np.pi / self.excitation_error
        arg = fac * error
        with np.errstate(invalid="ignore", divide="ignore"):
            shape = np.where(arg != 0, np.abs(np.sin(arg) / np.where(arg != 0, arg, 1.0)), 0.0) ** 2
        intensity = np.where(np.abs(error) < 2.0 * self.excitation_error, shape * self.intensity, 0.0)
        floor = intensity.max(axis=1, keepdims=True) * self.minimum_intensity
        intensity = np.where(intensity > floor, intensity, 0.0)
        x, y = xyz[..., 0], -xyz[..., 1]  # diffsims frame -> lab frame (half turn about x)
        keep = intensity > 0
        width = max(1, int(keep.sum(axis=1).max()))
        order = np.argsort(~keep, axis=1, kind="stable")[:, :width]  # the kept spots first, padded with zeros

        def packed(values):
            return np.take_along_axis(np.where(keep, values, 0.0), order, axis=1).astype(np.float32)

        return packed(np.hypot(x, y)), packed(np.arctan2(y, x)), packed(intensity)


def _simulate(phase, settings: dict) -> TemplateSet:
    from orix.sampling import get_sample_reduced_fundamental

    sampled = get_sample_reduced_fundamental(settings["resolution"], point_group=phase.point_group)
    radius, angle, intensity = _spots(phase, sampled, settings)
    matrices = np.asarray(sampled.to_matrix(), dtype=np.float64).reshape(-1, 3, 3)
    rotations = _HALF_TURN_X @ np.swapaxes(matrices, 1, 2)
    return TemplateSet(phase.name, rotations, radius, angle, intensity, symmetry_matrices(phase), settings)


def make_templates(
    phase,
    *,
    beam_energy: float,
    q_max: float,
    resolution: float = 1.0,
    excitation_error: float = 0.01,
    minimum_intensity: float = 1e-4,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> TemplateSet:
    """Templates of ``phase`` at a beam energy out to ``q_max``, from the disk cache when there.

    Parameters
    ----------
    phase : orix.crystal_map.Phase
    beam_energy : float
        keV.
    q_max : float
        Largest spot distance kept, 1/Å.
    resolution : float, default 1
        Angular spacing of the sampled beam directions, degrees.
    excitation_error : float, default 0.01
        First zero of the kinematic rocking curve sinc^2(pi s t), 1/Å: one over
        the thickness t. Spots out to twice this are kept.
    minimum_intensity : float, default 1e-4
        Spots weaker than this fraction of the template's strongest are dropped
        (so are the forbidden reflections, whose intensity is ~0).
    cache_dir : path-like, optional
        Where templates are kept (default :func:`default_cache_dir`).
    use_cache : bool, default True

    Returns
    -------
    TemplateSet
    """
    require_crystal_extra("template simulation")
    import diffsims

    settings = {
        "beam_energy": round(float(beam_energy), 4),
        "q_max": round(float(q_max), 4),
        "resolution": float(resolution),
        "excitation_error": float(excitation_error),
        "minimum_intensity": float(minimum_intensity),
        "diffsims": diffsims.__version__,
        "format": TEMPLATE_FORMAT,
    }
    key = hashlib.sha256(json.dumps([phase_key(phase), settings], sort_keys=True).encode()).hexdigest()[:20]
    safe_name = "".join(ch if ch.isalnum() else "_" for ch in phase.name) or "phase"
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{safe_name}-{key}.npz"
    if use_cache and path.is_file():
        try:
            return TemplateSet.load(path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("template cache %s is unreadable (%s); simulating again", path, err)
    log.info("simulating %s templates at %.4g keV to %.3g 1/Å every %.3g deg", phase.name, beam_energy, q_max, resolution)
    templates = _simulate(phase, settings)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            templates.save(path)
        except OSError as err:
            log.warning("cannot cache templates in %s (%s)", path.parent, err)
    return templates
