"""Simulation parameters and the named presets.

Units: lengths of the sample in Å, ``scan_step`` in Å, ``q_pixel`` in 1/Å,
``beam_energy`` in keV, ``convergence_angle`` in mrad, ``dose`` in electrons
per pattern, blurs in positions (scan) and pixels (detector).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from stemnmf.errors import ConfigError
from stemnmf.simulate.instrument import (
    FIELDS as INSTRUMENT_FIELDS,
    InstrumentParameters,
    check_instrument,
    instrument_preset,
    make_instrument,
)

__all__ = ["SimulationParameters", "PRESETS", "preset_parameters", "resolve_parameters"]


@dataclasses.dataclass(frozen=True)
class SimulationParameters:
    """Everything that defines a simulated scan (besides the seed).

    Attributes
    ----------
    scan : (int, int)
        Probe positions (sy, sx).
    det : (int, int)
        Detector pixels (qy, qx).
    scan_step : float
        Distance between probe positions, Å.
    q_pixel : float
        Detector pixel size, 1/Å.
    beam_energy : float
        keV.
    convergence_angle : float
        Probe semi-convergence angle, mrad (disk radius = angle / wavelength).
    crystal : str or Crystal
        ``'Ag'`` for the built-in FCC silver, a path to a CIF file (needs the
        ``crystal`` extra), or a :class:`~stemnmf.simulate.Crystal`.
    second_crystal : str or Crystal or None
        A second phase (as ``crystal``, or ``'Si'`` for built-in diamond-cubic
        silicon): each grain is of it with probability ``second_fraction``
        (drawn per grain, seeded); the truth then holds ``phase_id`` per grain
        (0: ``crystal``, 1: ``second_crystal``). None: one phase.
    second_fraction : float
        Probability that a grain is of ``second_crystal``.
    lattice_parameter : float
        Å, for the built-in FCC crystal.
    debye_waller : float
        B factor in Å^2 for the built-in crystal (and CIF sites without one).
    film_thickness : float
        Å.
    n_grains : int
        Grains in the field of view (for ``grain_shape='cell'``: crystals).
    grain_diameter : (float, float)
        Range of volume-equivalent grain diameters, Å (drawn uniformly).
    grain_shape : {'wulff', 'cell'}
        Wulff-like grains at random positions, or crystals that fill the film.
    wulff_ratio : float
        Distance of the {100} facets relative to the {111} facets.
    n_orientations : int or None
        Number of distinct orientations (near low-index zone axes, checked to
        give distinct patterns); None draws every grain's orientation at random.
    orientation_tilt : (float, float)
        With ``n_orientations``: each orientation is tilted off its zone axis
        by an angle drawn uniformly from this range, degrees.
    twins : int
        With ``n_orientations`` (cubic crystals): the last ``twins`` orientations
        of the set are replaced by Σ3 twins (a half turn about a random <111>)
        of the first ones, so that twin boundaries form where their crystals meet.
    z_spread : float
        'cell' grains: depth of the centres spreads over this fraction of the
        film, which inclines their boundaries so that borders overlap.
    centres_in_view : bool
        'wulff' grains: centres inside the field of view only (no grains around it).
    carbon_thickness : float
        Amorphous carbon support film, Å (0 for none).
    amorphous_matrix : bool
        Fill the film around the grains with amorphous carbon.
    scan_blur : float
        Gaussian blur across the scan (source size), standard deviation in positions.
    detector_blur : float
        Detector/probe point-spread function, standard deviation in pixels.
    dose : float
        Incident electrons per pattern.
    noise : bool
        Draw Poisson noise at ``dose``; False stores the expected counts.
    min_intensity : float
        Reflections whose intensity never reaches this fraction of the beam are not drawn.
    max_scattered : float
        Cap on the total scattered fraction at a position (kinematic intensities
        of thick stacks are scaled down to it).
    instrument : InstrumentParameters
        Descan, distortions, beam stop, gain, bad pixels, detector noise and
        binning (:mod:`stemnmf.simulate.instrument`; all off by default). Its
        fields can be given directly as overrides, and ``instrument='realistic'``
        starts from a named instrument.
    """

    scan: tuple[int, int] = (100, 100)
    det: tuple[int, int] = (256, 256)
    scan_step: float = 2.5
    q_pixel: float = 0.01
    beam_energy: float = 300.0
    convergence_angle: float = 1.05
    crystal: Any = "Ag"
    second_crystal: Any = None
    second_fraction: float = 0.5
    lattice_parameter: float = 4.086
    debye_waller: float = 0.64
    film_thickness: float = 300.0
    n_grains: int = 31
    grain_diameter: tuple[float, float] = (35.0, 41.0)
    grain_shape: str = "wulff"
    wulff_ratio: float = 1.1
    n_orientations: int | None = None
    orientation_tilt: tuple[float, float] = (0.0, 1.0)
    twins: int = 0
    z_spread: float = 0.25
    centres_in_view: bool = False
    carbon_thickness: float = 50.0
    amorphous_matrix: bool = False
    scan_blur: float = 2.0
    detector_blur: float = 0.5
    dose: float = 1e5
    noise: bool = True
    min_intensity: float = 1e-5
    max_scattered: float = 0.9
    instrument: InstrumentParameters = InstrumentParameters()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable values."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = list(value)
            elif field.name in ("crystal", "second_crystal") and value is not None and not isinstance(value, str | os.PathLike):
                value = value.describe() if hasattr(value, "describe") else str(value)
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            elif isinstance(value, InstrumentParameters):
                value = value.to_dict()
            out[field.name] = value
        return out


#: The presets: values that differ from the defaults of SimulationParameters.
PRESETS: dict[str, dict[str, Any]] = {
    # Bruefach et al. (2022) Ag films: 250 x 250 Å at 2.5 Å, 256 x 256 patterns of 0.01 1/Å.
    "ag1": dict(n_grains=31, grain_diameter=(35.0, 41.0)),
    "ag2": dict(n_grains=36, grain_diameter=(52.0, 62.0)),
    "ag3": dict(n_grains=42, grain_diameter=(70.0, 82.0)),
    # sparse small Ag precipitates in an amorphous-carbon matrix
    "precipitates": dict(
        scan=(64, 64),
        det=(128, 128),
        q_pixel=0.02,
        film_thickness=200.0,
        n_grains=8,
        grain_diameter=(20.0, 35.0),
        carbon_thickness=0.0,
        amorphous_matrix=True,
        scan_blur=1.0,
    ),
    # a few large crystals of a few distinct orientations with overlapping borders (Cao et al.)
    "crystals": dict(
        scan=(64, 64),
        det=(128, 128),
        q_pixel=0.02,
        scan_step=5.0,
        film_thickness=150.0,
        n_grains=8,
        grain_shape="cell",
        n_orientations=4,
        scan_blur=1.0,
    ),
    # for tests: a second or less
    "tiny": dict(
        scan=(12, 12),
        det=(48, 48),
        q_pixel=0.04,
        scan_step=5.0,
        film_thickness=60.0,
        n_grains=5,
        grain_diameter=(25.0, 35.0),
        centres_in_view=True,
        scan_blur=1.0,
    ),
}

_FIELDS = {f.name for f in dataclasses.fields(SimulationParameters)}

#: Presets whose field of view stays the same when the scan size changes (the step changes instead).
KEEP_FIELD_OF_VIEW = frozenset({"crystals"})


def preset_parameters(preset: str) -> SimulationParameters:
    """The parameters of a preset as given (before scan/detector changes)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}", f"choose one of {', '.join(PRESETS)}")
    return SimulationParameters(**PRESETS[preset])


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = (int(v) for v in value)
        if (a, b) != tuple(float(v) for v in value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a size", f"give {name} as N or (N, M)") from None
    if a < 1 or b < 1:
        raise ConfigError(f"{name}={value!r} must be positive")
    return a, b


def _mean_radius(diameter) -> float:
    return (diameter[0] + diameter[1]) / 4.0


def _expected_in_view(n_per_area: float, scan, step, radius) -> float:
    """Grains whose disk of ``radius`` meets a field of view, at ``n_per_area`` centres per Å^2."""
    ly, lx = scan[0] * step, scan[1] * step
    return n_per_area * (lx * ly + 2 * radius * (lx + ly) + math.pi * radius**2)


def _check(p: SimulationParameters) -> None:
    positive = [
        "scan_step", "q_pixel", "beam_energy", "convergence_angle", "lattice_parameter",
        "film_thickness", "wulff_ratio", "dose", "max_scattered",
    ]  # fmt: skip
    for name in positive:
        value = getattr(p, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name}={value!r} must be a positive number")
    for name in ("debye_waller", "carbon_thickness", "scan_blur", "detector_blur", "min_intensity", "z_spread"):
        value = getattr(p, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name}={value!r} must be a non-negative number")
    if not (isinstance(p.second_fraction, int | float) and 0 <= p.second_fraction <= 1):
        raise ConfigError(f"second_fraction={p.second_fraction!r} must be a number from 0 to 1")
    if p.max_scattered >= 1:
        raise ConfigError(f"max_scattered={p.max_scattered} must be below 1")
    if p.z_spread > 1:
        raise ConfigError(f"z_spread={p.z_spread} must be at most 1")
    if p.grain_shape not in ("wulff", "cell"):
        raise ConfigError(f"grain_shape={p.grain_shape!r} is unknown", "use 'wulff' or 'cell'")
    lo, hi = p.grain_diameter
    if not (0 < lo <= hi):
        raise ConfigError(f"grain_diameter={p.grain_diameter!r} must be a range 0 < low <= high")
    if not (isinstance(p.n_grains, int) and p.n_grains >= 1):
        raise ConfigError(f"n_grains={p.n_grains!r} must be a positive integer")
    if p.n_orientations is not None:
        if not (isinstance(p.n_orientations, int) and p.n_orientations >= 1):
            raise ConfigError(f"n_orientations={p.n_orientations!r} must be a positive integer or None")
        if p.grain_shape == "cell" and p.n_orientations > p.n_grains:
            raise ConfigError(
                f"n_orientations={p.n_orientations} is more than the {p.n_grains} crystals",
                "raise n_grains or lower n_orientations",
            )
        if not (isinstance(p.twins, int) and 0 <= p.twins <= p.n_orientations // 2):
            raise ConfigError(f"twins={p.twins!r} must be an integer from 0 to half of n_orientations ({p.n_orientations})")
        if p.n_orientations > 24:
            raise ConfigError(f"n_orientations={p.n_orientations} is too many to keep apart", "use at most 24")
    if p.convergence_angle * 1e-3 > 0.1:
        raise ConfigError(f"convergence_angle={p.convergence_angle} mrad is not a small angle", "give it in mrad")
    if p.dose * 1.0 > 1e12:
        raise ConfigError(f"dose={p.dose:g} electrons per pattern is too large", "use at most 1e12")


def _instrument(instrument, values, det) -> InstrumentParameters:
    """The instrument: a named one (lengths scaled to the detector), a dict or an InstrumentParameters, then overrides."""
    if isinstance(instrument, InstrumentParameters):
        start = instrument.to_dict()
    elif instrument is None:
        start = {}
    elif isinstance(instrument, str):
        start = instrument_preset(instrument, det)
    elif isinstance(instrument, Mapping):
        start = dict(instrument)
    else:
        raise ConfigError(f"instrument={instrument!r} is not understood", "give 'none', 'realistic' or a dict of parameters")
    start.update(values)
    params = make_instrument(start)
    check_instrument(params, det)
    return params


def resolve_parameters(
    preset: str = "tiny",
    scan=None,
    det=None,
    overrides: Mapping[str, Any] | None = None,
) -> SimulationParameters:
    """Parameters of a preset with a scan size, detector size and overrides applied.

    * ``scan`` keeps the scan step; unless ``n_grains`` is given, Wulff-grain
      presets keep their density of grains, so the number in view scales with
      the field of view. The ``crystals`` preset instead keeps its field of
      view (320 Å) and changes the step, so its crystals stay the same.
    * ``det`` keeps the reciprocal-space extent of the detector: unless
      ``q_pixel`` is given, it becomes preset q_pixel x preset size / new size.
    * For ``grain_shape='cell'``, ``n_orientations`` above the preset's crystal
      count raises it to ``n_orientations`` unless ``n_grains`` is given.

    Raises
    ------
    ConfigError
        For an unknown preset, an unknown parameter or a bad value.
    """
    base = preset_parameters(preset)
    overrides = dict(overrides or {})
    instrument = overrides.pop("instrument", None)
    instrument_values = {k: overrides.pop(k) for k in list(overrides) if k in INSTRUMENT_FIELDS}
    unknown = sorted(set(overrides) - _FIELDS - {"scan", "det"})
    if unknown:
        raise ConfigError(
            f"unknown simulation parameter(s) {', '.join(unknown)}",
            f"known: {', '.join(sorted(_FIELDS | INSTRUMENT_FIELDS))}",
        )
    if scan is None:
        scan = overrides.pop("scan", None)
    else:
        overrides.pop("scan", None)
    if det is None:
        det = overrides.pop("det", None)
    else:
        overrides.pop("det", None)
    values = dataclasses.asdict(base)
    values["crystal"] = base.crystal
    values.update(overrides)
    if "grain_diameter" in overrides:
        try:
            lo, hi = (float(v) for v in overrides["grain_diameter"])
        except (TypeError, ValueError):
            raise ConfigError(f"grain_diameter={overrides['grain_diameter']!r} must be two numbers (low, high)") from None
        values["grain_diameter"] = (lo, hi)
    if "orientation_tilt" in overrides:
        try:
            lo, hi = (float(v) for v in overrides["orientation_tilt"])
        except (TypeError, ValueError):
            raise ConfigError(f"orientation_tilt={overrides['orientation_tilt']!r} must be two angles (low, high) in degrees") from None
        if not (0 <= lo <= hi <= 45):
            raise ConfigError(f"orientation_tilt=({lo:g}, {hi:g}) must satisfy 0 <= low <= high <= 45 degrees")
        values["orientation_tilt"] = (lo, hi)
    values["scan"] = _pair("scan", scan) if scan is not None else base.scan
    if scan is not None and preset in KEEP_FIELD_OF_VIEW and "scan_step" not in overrides:
        values["scan_step"] = base.scan_step * max(base.scan) / max(values["scan"])
    values["det"] = _pair("det", det) if det is not None else base.det
    if det is not None and "q_pixel" not in overrides:
        values["q_pixel"] = base.q_pixel * min(base.det) / min(values["det"])
    shape = values["grain_shape"]
    if "n_grains" not in overrides:
        if shape == "wulff":
            radius = _mean_radius(base.grain_diameter)
            density = base.n_grains / _expected_in_view(1.0, base.scan, base.scan_step, radius)
            radius = _mean_radius(values["grain_diameter"])
            expected = _expected_in_view(density, values["scan"], values["scan_step"], radius)
            values["n_grains"] = max(1, int(round(expected)))
        elif values.get("n_orientations"):
            values["n_grains"] = max(base.n_grains, int(values["n_orientations"]))
    values["instrument"] = _instrument(instrument, instrument_values, values["det"])
    for name in ("n_grains", "n_orientations"):
        value = values.get(name)
        if isinstance(value, float) and value.is_integer():
            values[name] = int(value)
    params = SimulationParameters(**values)
    _check(params)
    return params
