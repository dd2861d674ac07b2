"""Crystal structures, reflections and kinematic structure factors.

The built-in structure is FCC silver (a = 4.086 Å). Any CIF file can be read
through orix (the optional ``crystal`` extra).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from stemnmf.errors import ConfigError, InputError
from stemnmf.simulate.rotations import rotation_about_z, rotation_to_z
from stemnmf.simulate.scattering import scattering_factor

__all__ = ["Crystal", "diamond", "fcc", "from_cif", "spinel", "zone_axis_rotation"]

#: Room-temperature Debye-Waller B factor of Ag in Å^2 (literature values are 0.6-0.7 Å^2).
AG_B_FACTOR = 0.64


@dataclasses.dataclass(frozen=True, eq=False)
class Crystal:
    """A crystal structure.

    Attributes
    ----------
    name : str
        A label, e.g. ``'Ag (FCC, a=4.086 Å)'``.
    basis : numpy.ndarray
        (3, 3) direct lattice vectors a1, a2, a3 as rows, Cartesian, in Å.
    elements : tuple of str
        Chemical symbol of each atom of the unit cell.
    positions : numpy.ndarray
        (n_atoms, 3) fractional coordinates.
    occupancy : numpy.ndarray
        (n_atoms,) site occupancies.
    b_factors : numpy.ndarray
        (n_atoms,) Debye-Waller B factors in Å^2.
    cubic : bool
        True for a cubic lattice (grains then get {111}/{100} Wulff facets).
    """

    name: str
    basis: np.ndarray
    elements: tuple[str, ...]
    positions: np.ndarray
    occupancy: np.ndarray
    b_factors: np.ndarray
    cubic: bool = False

    def __post_init__(self):
        basis = np.asarray(self.basis, dtype=np.float64).reshape(3, 3)
        positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        n = len(positions)
        occupancy = np.broadcast_to(np.asarray(self.occupancy, dtype=np.float64), (n,)).copy()
        b_factors = np.broadcast_to(np.asarray(self.b_factors, dtype=np.float64), (n,)).copy()
        if len(self.elements) != n or n == 0:
            raise ConfigError(f"crystal {self.name!r} has {len(self.elements)} elements for {n} atom positions")
        if abs(np.linalg.det(basis)) < 1e-6:
            raise ConfigError(f"crystal {self.name!r} has a degenerate lattice")
        object.__setattr__(self, "basis", basis)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "occupancy", occupancy)
        object.__setattr__(self, "b_factors", b_factors)
        object.__setattr__(self, "elements", tuple(str(e) for e in self.elements))

    @property
    def volume(self) -> float:
        """Unit-cell volume in Å^3."""
        return float(abs(np.linalg.det(self.basis)))

    @property
    def reciprocal_basis(self) -> np.ndarray:
        """(3, 3) reciprocal vectors b1, b2, b3 as rows (a_i . b_j = delta_ij, no 2 pi), in 1/Å."""
        return np.linalg.inv(self.basis).T

    def g_vectors(self, hkl) -> np.ndarray:
        """Cartesian reciprocal vectors (m, 3) in 1/Å of Miller indices (m, 3)."""
        return np.asarray(hkl, dtype=np.float64) @ self.reciprocal_basis

    def direction(self, uvw) -> np.ndarray:
        """Cartesian unit vector of the lattice direction [uvw]."""
        d = np.asarray(uvw, dtype=np.float64) @ self.basis
        return d / np.linalg.norm(d)

    def structure_factor(self, hkl) -> np.ndarray:
        """Kinematic electron structure factors F(hkl) in Å (complex, non-relativistic).

        F = sum_j occ_j f_j(g) exp(-B_j s^2) exp(2 pi i h . x_j), s = g / 2.
        """
        hkl = np.atleast_2d(np.asarray(hkl, dtype=np.float64))
        g = np.linalg.norm(self.g_vectors(hkl), axis=1)
        s2 = (g / 2.0) ** 2
        total = np.zeros(len(hkl), dtype=np.complex128)
        factors = {e: scattering_factor(e, g) for e in set(self.elements)}
        for element, xyz, occ, b in zip(self.elements, self.positions, self.occupancy, self.b_factors):
            total += occ * factors[element] * np.exp(-b * s2) * np.exp(2j * np.pi * (hkl @ xyz))
        return total

    def reflections(self, g_max: float, *, min_relative: float = 1e-6):
        """All reflections with 0 < |g| <= g_max and a non-vanishing structure factor.

        Returns
        -------
        hkl : numpy.ndarray
            (m, 3) int Miller indices.
        g : numpy.ndarray
            (m, 3) Cartesian reciprocal vectors in 1/Å (crystal frame).
        F : numpy.ndarray
            (m,) complex structure factors in Å.
        """
        limits = [int(math.floor(g_max * np.linalg.norm(a))) for a in self.basis]
        ranges = [np.arange(-n, n + 1) for n in limits]
        hkl = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
        g = self.g_vectors(hkl)
        length = np.linalg.norm(g, axis=1)
        keep = (length > 0) & (length <= g_max)
        hkl, g = hkl[keep], g[keep]
        if len(hkl) == 0:
            return hkl.astype(np.int64), g, np.zeros(0, np.complex128)
        F = self.structure_factor(hkl)
        strong = np.abs(F) > min_relative * np.abs(F).max()
        return hkl[strong].astype(np.int64), g[strong], F[strong]

    def describe(self) -> dict:
        """JSON-serialisable summary for metadata."""
        return {
            "name": self.name,
            "basis": self.basis.round(6).tolist(),
            "elements": list(self.elements),
            "positions": self.positions.round(6).tolist(),
            "occupancy": self.occupancy.tolist(),
            "b_factors": self.b_factors.tolist(),
        }


def fcc(a: float = 4.086, element: str = "Ag", b_factor: float = AG_B_FACTOR) -> Crystal:
    """A face-centred cubic crystal of one element (default Ag, a = 4.086 Å)."""
    if not (a > 0):
        raise ConfigError(f"lattice parameter {a!r} is not positive")
    positions = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    return Crystal(
        name=f"{element} (FCC, a={a:g} Å)",
        basis=np.eye(3) * a,
        elements=(element,) * 4,
        positions=positions,
        occupancy=1.0,
        b_factors=b_factor,
        cubic=True,
    )


def diamond(a: float = 5.431, element: str = "Si", b_factor: float = 0.46) -> Crystal:
    """A diamond-cubic crystal of one element (Fd-3m; default Si, a = 5.431 Å, B = 0.46 Å^2).

    Eight atoms: the F-centred cell with a second atom at (1/4, 1/4, 1/4). Si needs
    the scattering factors of the ``crystal`` extra.
    """
    if not (a > 0):
        raise ConfigError(f"lattice parameter {a!r} is not positive")
    centring = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    positions = np.concatenate([centring, centring + 0.25])
    return Crystal(
        name=f"{element} (diamond, a={a:g} Å)",
        basis=np.eye(3) * a,
        elements=(element,) * 8,
        positions=positions,
        occupancy=1.0,
        b_factors=b_factor,
        cubic=True,
    )


def spinel(a: float = 8.17, oxygen_x: float = 0.263, b_factor: float = 0.5) -> Crystal:
    """Disordered LiNi0.5Mn1.5O4 spinel (Fd-3m, origin choice 2; default a = 8.17 Å).

    Li on 8a (1/8, 1/8, 1/8), Mn 0.75 + Ni 0.25 on 16d (1/2, 1/2, 1/2), O on
    32e (x, x, x) with ``oxygen_x`` (0.263 for LNMO): 56 sites, expanded here
    by the F-centring and the Fd-3m orbits. Needs scattering factors for Li,
    Ni, Mn and O (the ``crystal`` extra).
    """
    if not (a > 0):
        raise ConfigError(f"lattice parameter {a!r} is not positive")
    x = float(oxygen_x) + 0.125  # the 32e parameter in origin choice 1, where the orbits are written
    shift = np.full(3, -0.125)  # origin choice 1 -> 2
    lithium = [[0, 0, 0], [0.75, 0.25, 0.75]]
    metal = [[0.625, 0.625, 0.625], [0.375, 0.875, 0.125], [0.875, 0.125, 0.375], [0.125, 0.375, 0.875]]
    oxygen = [
        [x, x, x], [1 - x, 0.5 - x, 0.5 + x], [0.5 - x, 0.5 + x, 1 - x], [0.5 + x, 1 - x, 0.5 - x],
        [x - 0.25, x + 0.25, 0.75 - x], [1.25 - x, 1.25 - x, 1.25 - x], [x + 0.25, 0.75 - x, x - 0.25],
        [0.75 - x, x - 0.25, x + 0.25],
    ]  # fmt: skip
    centring = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])

    def expand(sites):
        return [np.mod(np.asarray(s) + t + shift, 1.0) for s in sites for t in centring]

    li, tm, ox = expand(lithium), expand(metal), expand(oxygen)
    positions = li + tm + tm + ox
    elements = ("Li",) * len(li) + ("Mn",) * len(tm) + ("Ni",) * len(tm) + ("O",) * len(ox)
    occupancy = [1.0] * len(li) + [0.75] * len(tm) + [0.25] * len(tm) + [1.0] * len(ox)
    return Crystal(
        name=f"LiNi0.5Mn1.5O4 (spinel Fd-3m, a={a:g} Å)",
        basis=np.eye(3) * a,
        elements=elements,
        positions=np.array(positions),
        occupancy=np.array(occupancy),
        b_factors=float(b_factor),
        cubic=True,
    )


def from_cif(path: str | os.PathLike, b_factor: float = 0.0) -> Crystal:
    """Read a crystal structure from a CIF file (needs orix, the ``crystal`` extra).

    Symmetry-equivalent positions are expanded. Sites without a thermal
    parameter get ``b_factor`` (Å^2).

    Raises
    ------
    InputError
        If the file is missing or cannot be read.
    ConfigError
        If orix is not installed.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"CIF file {path} does not exist", "check the path")
    try:
        from orix.crystal_map import Phase
    except ImportError:
        raise ConfigError(
            f"reading {path.name} needs orix and diffsims",
            "install the crystal extra: pip install 'stemnmf[crystal]'",
        ) from None
    try:
        phase = Phase.from_cif(str(path))
    except Exception as err:  # orix/diffpy raise many kinds of parse errors
        raise InputError(f"cannot read CIF file {path} ({type(err).__name__}: {err})", "check the file") from None
    structure = phase.structure
    if len(structure) == 0:
        raise InputError(f"CIF file {path} has no atoms", "check the atom_site loop")
    elements, positions, occupancy, b_factors = [], [], [], []
    for atom in structure:
        symbol = "".join(ch for ch in str(atom.element) if ch.isalpha()) or str(atom.element)
        elements.append(symbol.capitalize())
        positions.append(np.asarray(atom.xyz, dtype=np.float64))
        occupancy.append(float(atom.occupancy))
        u = float(getattr(atom, "Uisoequiv", 0.0) or 0.0)
        b_factors.append(8 * math.pi**2 * u if u > 0 else b_factor)
    basis = np.asarray(structure.lattice.base, dtype=np.float64)
    a, b, c, alpha, beta, gamma = structure.lattice.abcABG()
    cubic = np.allclose([a, b], c, rtol=1e-4) and np.allclose([alpha, beta, gamma], 90.0, atol=1e-3)
    return Crystal(
        name=f"{phase.name or path.stem} (CIF {path.name})",
        basis=basis,
        elements=tuple(elements),
        positions=np.array(positions),
        occupancy=np.array(occupancy),
        b_factors=np.array(b_factors),
        cubic=bool(cubic),
    )


def zone_axis_rotation(crystal: Crystal, uvw, in_plane: float = 0.0) -> np.ndarray:
    """Rotation (crystal -> lab) that puts the zone axis [uvw] along the beam (+z).

    Parameters
    ----------
    crystal : Crystal
    uvw : sequence of 3 numbers
        The lattice direction to align with the beam.
    in_plane : float, default 0
        Extra rotation about the beam, in degrees.
    """
    return rotation_about_z(math.radians(in_plane)) @ rotation_to_z(crystal.direction(uvw))
