"""Simulated 4D-STEM scans of polycrystalline films, with ground truth.

    >>> import stemnmf
    >>> dataset, truth = stemnmf.simulate("tiny", seed=1)          # doctest: +SKIP
    >>> stemnmf.simulate.simulate_to_file("ag1.h5", "ag1", seed=0)  # doctest: +SKIP

The module itself is callable: ``stemnmf.simulate(...)`` is
:func:`stemnmf.simulate.simulate`, whether or not the subpackage has been
imported.

Physics (kinematic): reflections of the crystal with structure factors from
tabulated electron scattering factors, the Ewald sphere at the beam energy and
the excitation error of each reflection, intensity ~ |F|^2 sinc^2(pi t s) for
the path length t through each grain, disks of radius alpha / lambda, the
central beam, an amorphous-carbon ring, detector blur, Gaussian blur across the
scan and Poisson noise. See ``docs/simulate.md``.
"""

from __future__ import annotations

import sys
import types

from stemnmf.simulate.core import (
    LAZY_LIMIT,
    grains_per_position_fractions,
    make_crystal,
    simulate,
    simulate_to_file,
    simulate_truth,
)
from stemnmf.simulate.crystal import Crystal, diamond, fcc, from_cif, spinel, zone_axis_rotation
from stemnmf.simulate.physics import Optics, diffraction_pattern
from stemnmf.simulate.presets import PRESETS, SimulationParameters, preset_parameters, resolve_parameters
from stemnmf.simulate.preview import preview as _preview
from stemnmf.simulate.rotations import matrix_to_quaternion, quaternion_to_matrix

__all__ = [
    "simulate",
    "simulate_to_file",
    "simulate_truth",
    "preview",
    "PRESETS",
    "SimulationParameters",
    "preset_parameters",
    "resolve_parameters",
    "Crystal",
    "diamond",
    "fcc",
    "spinel",
    "from_cif",
    "make_crystal",
    "zone_axis_rotation",
    "Optics",
    "diffraction_pattern",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "grains_per_position_fractions",
    "LAZY_LIMIT",
]


def preview(dataset, truth=None, path="preview.png", **kwargs):
    """Save a preview figure (mean and max pattern, dark-field image, truth maps); returns its path.

    See :func:`stemnmf.simulate.preview.preview`.
    """
    return _preview(dataset, truth, path, **kwargs)


class _CallableModule(types.ModuleType):
    """The ``stemnmf.simulate`` module, callable as :func:`simulate`."""

    def __call__(self, *args, **kwargs):
        return simulate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
