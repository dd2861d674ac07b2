"""Crystal phases: built-in structures written from their published lattice and basis, or CIF files.

A phase is an :class:`orix.crystal_map.Phase` whose ``structure`` (a
diffpy.structure ``Structure``) holds every atom of the unit cell. The built-in
phases (lattice parameter, space group, Wyckoff positions):

========  ========  ==========  ===================================================
name      a (Å)     group       atoms (fractional, origin choice 1 for Fd-3m)
========  ========  ==========  ===================================================
Ag        4.0862    Fm-3m 225   Ag 4a (0, 0, 0)
Au        4.0782    Fm-3m 225   Au 4a (0, 0, 0)
Pd        3.8907    Fm-3m 225   Pd 4a (0, 0, 0)
Cu        3.6149    Fm-3m 225   Cu 4a (0, 0, 0)
Al        4.0495    Fm-3m 225   Al 4a (0, 0, 0)
Si        5.4310    Fd-3m 227   Si 8a (0, 0, 0)
LNMO      8.1720    Fd-3m 227   Li 8a (0, 0, 0); Ni 0.25 + Mn 0.75 on 16d (5/8, 5/8, 5/8);
                                O 32e (u, u, u), u = 0.388 (x = 0.263 in origin choice 2)
========  ========  ==========  ===================================================

The metals are the room-temperature values of the standard powder-diffraction
references (e.g. Swanson & Tatge, NBS Circular 539); Si is the SRM 640 value;
LiNi0.5Mn1.5O4 is the disordered spinel (Fd-3m) with a = 8.172 Å and the
oxygen parameter of published Rietveld refinements. ``spinel`` and
``LiNi0.5Mn1.5O4`` are aliases of ``LNMO``.

Crystal frame: the Cartesian frame of the phase's lattice as orix sets it
(a along x, c* along z); for the cubic phases it is the cube axes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from stemnmf.errors import ConfigError, PhaseError

__all__ = [
    "BUILTIN_PHASES",
    "PhaseSpec",
    "canonical_phase_name",
    "load_phase",
    "load_phases",
    "phase_key",
    "require_crystal_extra",
]

EXTRA_FIX = "install the crystal extra: pip install 'stemnmf[crystal]'"


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
    """A built-in phase: cubic lattice parameter, space group and asymmetric unit.

    Attributes
    ----------
    name : str
    a : float
        Cubic lattice parameter in Å.
    space_group : int
        International Tables number.
    sites : tuple of (element, (x, y, z), occupancy)
        Asymmetric unit in fractional coordinates (origin choice 1).
    """

    name: str
    a: float
    space_group: int
    sites: tuple


#: The built-in phases (see the module docstring for the sources).
BUILTIN_PHASES: dict[str, PhaseSpec] = {
    "Ag": PhaseSpec("Ag", 4.0862, 225, (("Ag", (0.0, 0.0, 0.0), 1.0),)),
    "Au": PhaseSpec("Au", 4.0782, 225, (("Au", (0.0, 0.0, 0.0), 1.0),)),
    "Pd": PhaseSpec("Pd", 3.8907, 225, (("Pd", (0.0, 0.0, 0.0), 1.0),)),
    "Cu": PhaseSpec("Cu", 3.6149, 225, (("Cu", (0.0, 0.0, 0.0), 1.0),)),
    "Al": PhaseSpec("Al", 4.0495, 225, (("Al", (0.0, 0.0, 0.0), 1.0),)),
    "Si": PhaseSpec("Si", 5.4310, 227, (("Si", (0.0, 0.0, 0.0), 1.0),)),
    "LNMO": PhaseSpec(
        "LNMO",
        8.172,
        227,
        (
            ("Li", (0.0, 0.0, 0.0), 1.0),
            ("Ni", (0.625, 0.625, 0.625), 0.25),
            ("Mn", (0.625, 0.625, 0.625), 0.75),
            ("O", (0.388, 0.388, 0.388), 1.0),
        ),
    ),
}

_ALIASES = {"spinel": "LNMO", "lini0.5mn1.5o4": "LNMO", "lnmo": "LNMO"}


def canonical_phase_name(name) -> str:
    """A phase name for comparison: first word, lower case, aliases resolved (``b'Spinel'`` -> ``'lnmo'``).

    Tells the simulator's crystal names (``'Ag (FCC, a=4.086 Å)'``) and the
    indexing's phase names (``'Ag'``) apart from each other's phases only.
    """
    text = name.decode() if isinstance(name, bytes) else str(name)
    word = (text.strip().split() or [""])[0].lower()
    return _ALIASES.get(word, word).lower()


def require_crystal_extra(what: str = "indexing") -> None:
    """Raise a one-line :class:`ConfigError` naming the extra when orix or diffsims is missing."""
    try:
        import diffpy.structure  # noqa: F401
        import diffsims  # noqa: F401
        import orix  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"{what} needs orix and diffsims ({err.name or err} is not installed)", EXTRA_FIX) from None


def _builtin(spec: PhaseSpec):
    from diffpy.structure import Atom, Lattice, Structure
    from diffpy.structure.spacegroups import GetSpaceGroup
    from diffpy.structure.symmetryutilities import ExpandAsymmetricUnit
    from orix.crystal_map import Phase

    group = GetSpaceGroup(spec.space_group)
    atoms = []
    for element, xyz, occupancy in spec.sites:
        for position in ExpandAsymmetricUnit(group, [list(xyz)]).expandedpos[0]:
            atoms.append(Atom(element, np.mod(position, 1.0), occupancy=occupancy))
    lattice = Lattice(spec.a, spec.a, spec.a, 90, 90, 90)
    return Phase(spec.name, space_group=spec.space_group, structure=Structure(atoms, lattice))


def _from_cif(path: Path):
    from orix.crystal_map import Phase

    if not path.is_file():
        raise PhaseError(f"CIF file {path} does not exist", "check the path or give a built-in phase name")
    try:
        phase = Phase.from_cif(str(path))
    except Exception as err:  # diffpy/orix raise many kinds of parse errors
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PhaseError(f"cannot read CIF file {path} ({type(err).__name__}: {message})", "check the file") from None
    if phase.structure is None or len(phase.structure) == 0:
        raise PhaseError(f"CIF file {path} has no atoms", "check its atom_site loop")
    if phase.point_group is None:
        raise PhaseError(f"CIF file {path} has no space group", "add _symmetry_space_group_name_H-M")
    if not phase.name:
        phase.name = path.stem
    return phase


def load_phase(spec):
    """A phase by built-in name (``'Ag'``, ``'spinel'``, ...) or CIF path, as an orix ``Phase``.

    Parameters
    ----------
    spec : str, path-like or orix.crystal_map.Phase

    Raises
    ------
    PhaseError
        For an unknown name or a missing or unreadable CIF file.
    ConfigError
        If the crystal extra is not installed.
    """
    require_crystal_extra("crystal phases")
    from orix.crystal_map import Phase

    if isinstance(spec, Phase):
        return spec
    text = os.fspath(spec)
    if text.lower().endswith(".cif") or os.sep in text:
        return _from_cif(Path(text))
    name = _ALIASES.get(text.lower(), text)
    match = {key.lower(): key for key in BUILTIN_PHASES}.get(name.lower())
    if match is None:
        raise PhaseError(
            f"unknown phase {text!r}",
            f"give a CIF file or one of {', '.join(BUILTIN_PHASES)} (spinel = LNMO)",
        )
    return _builtin(BUILTIN_PHASES[match])


def load_phases(specs) -> list:
    """:func:`load_phase` of each entry; names must be distinct."""
    if isinstance(specs, str | os.PathLike):
        specs = [specs]
    phases = [load_phase(s) for s in specs]
    if not phases:
        raise PhaseError("no phase given", "give at least one --phase (a built-in name or a CIF file)")
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise PhaseError(f"phase names repeat: {', '.join(names)}", "give each phase once")
    return phases


def phase_key(phase) -> str:
    """A digest of everything that defines a phase's diffraction (name, group, lattice, atoms)."""
    structure = phase.structure
    atoms = [
        [str(atom.element), np.round(atom.xyz, 6).tolist(), round(float(atom.occupancy), 6), round(float(atom.Uisoequiv), 6)]
        for atom in structure
    ]
    text = json.dumps(
        {
            "name": phase.name,
            "group": phase.space_group.number if phase.space_group is not None else None,
            "point_group": phase.point_group.name,
            "lattice": np.round(structure.lattice.abcABG(), 6).tolist(),
            "atoms": atoms,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
