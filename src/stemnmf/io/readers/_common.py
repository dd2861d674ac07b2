"""Helpers shared by the readers: the read result, units, scan shapes, names."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemnmf.errors import FormatError
from stemnmf.io.dataset import electron_wavelength


log = logging.getLogger(__name__)

__all__ = [
    "Raw",
    "quiet_libraries",
    "angle_mrad",
    "apply_mapping",
    "calibration_from_axes",
    "calibration_from_hyperspy_metadata",
    "get_path",
    "length_nm",
    "natural_key",
    "positive",
    "reciprocal_per_angstrom",
    "scan_shape_from_name",
]


@contextlib.contextmanager
def quiet_libraries():
    """Send the warnings of RosettaSciIO, tifffile and Pillow to the debug log instead of the terminal.

    Whatever matters reaches the user as a stemnmf warning or error instead.
    """
    loggers = [logging.getLogger(name) for name in ("rsciio", "tifffile", "PIL")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            log.debug("%s: %s", w.category.__name__, w.message)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclasses.dataclass
class Raw:
    """What a reader found in a file, before the scan shape is applied.

    Attributes
    ----------
    data : array-like
        Shape (sy, sx, qy, qx), or (n_frames, qy, qx) for a stack of frames.
        A NumPy array, a dask array, or a :class:`~stemnmf.io.readers.sources.FrameSource`.
    format : str
        Human-readable name of the format, e.g. ``'Merlin MIB'``.
    calibration : dict
        Calibration values read from the file (Calibration field names and units).
    metadata : dict
        JSON-serialisable metadata worth keeping.
    mask : numpy.ndarray, optional
        (qy, qx) bool, True where a pixel is masked out.
    scan_shape : tuple of int, optional
        Scan shape the file or its name suggests for a stack of frames.
    scan_shape_source : str
        Where ``scan_shape`` came from (for messages).
    """

    data: Any
    format: str
    calibration: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)
    mask: np.ndarray | None = None
    scan_shape: tuple[int, int] | None = None
    scan_shape_source: str = ""


def positive(value) -> float | None:
    """``float(value)`` when it is a finite positive number, else None."""
    try:
        value = float(np.asarray(value).reshape(-1)[0]) if np.ndim(value) else float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return value if math.isfinite(value) and value > 0 else None


# -- units -------------------------------------------------------------------------------

_LENGTH_NM = {
    "m": 1e9,
    "cm": 1e7,
    "mm": 1e6,
    "um": 1e3,
    "µm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "a": 0.1,
    "å": 0.1,
    "ang": 0.1,
    "angstrom": 0.1,
    "angstroms": 0.1,
    "pm": 1e-3,
}
_ANGLE_MRAD = {
    "rad": 1e3,
    "radian": 1e3,
    "radians": 1e3,
    "mrad": 1.0,
    "milliradian": 1.0,
    "urad": 1e-3,
    "µrad": 1e-3,
    "deg": 1e3 * math.pi / 180,
    "degree": 1e3 * math.pi / 180,
    "degrees": 1e3 * math.pi / 180,
    "°": 1e3 * math.pi / 180,
}
_NO_UNITS = {"", "<undefined>", "undefined", "none", "pixel", "pixels", "px", "unknown", "t.undefined"}


def _norm_units(units) -> str:
    if units is None:
        return ""
    if isinstance(units, bytes):
        units = units.decode("utf-8", "replace")
    text = str(units).strip().replace("\u212b", "å").replace("\u00c5", "å").replace("μ", "µ")
    text = text.replace("⁻¹", "^-1").replace("**", "^").replace(" ", "").lower()
    if text.startswith("[") and text.endswith("]"):  # EMD 0.x encodes 'nm' as '[n_m]'
        text = text[1:-1].replace("_", "")
    return text


def length_nm(scale, units) -> float | None:
    """Convert a length ``scale`` in ``units`` to nm; None when not a length."""
    scale = positive(scale)
    factor = _LENGTH_NM.get(_norm_units(units))
    return None if scale is None or factor is None else scale * factor


def _reciprocal_length(units: str) -> str | None:
    """``'1/nm'``, ``'nm^-1'``, ``'nm-1'`` -> ``'nm'``; None otherwise."""
    if units.startswith("1/"):
        return units[2:]
    for suffix in ("^-1", "-1", "^(-1)"):
        if units.endswith(suffix):
            return units[: -len(suffix)]
    return None


def reciprocal_per_angstrom(scale, units) -> float | None:
    """Convert a reciprocal-space ``scale`` (e.g. in 1/nm) to 1/Å; None otherwise."""
    scale = positive(scale)
    base = _reciprocal_length(_norm_units(units))
    factor = _LENGTH_NM.get(base) if base is not None else None
    return None if scale is None or factor is None else scale / (factor * 10.0)


def angle_mrad(scale, units) -> float | None:
    """Convert an angular ``scale`` to mrad; None when not an angle."""
    scale = positive(scale)
    factor = _ANGLE_MRAD.get(_norm_units(units))
    return None if scale is None or factor is None else scale * factor


def has_units(units) -> bool:
    """False for empty or placeholder units such as ``'<undefined>'`` or ``'pixels'``."""
    return _norm_units(units) not in _NO_UNITS


# -- calibration from RosettaSciIO dictionaries -----------------------------------------

def get_path(tree: Mapping, path: str, default=None):
    """``tree['a']['b c']`` for ``'a.b c'``; spaces and underscores in keys are equivalent."""
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return default
        if part in node:
            node = node[part]
            continue
        wanted = part.replace(" ", "_").lower()
        for key in node:
            if str(key).replace(" ", "_").lower() == wanted:
                node = node[key]
                break
        else:
            return default
    return node


def _set_path(tree: dict, path: str, value) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def apply_mapping(original_metadata: Mapping, mapping: Mapping | None, metadata: dict, *, skip=()) -> dict:
    """Apply a RosettaSciIO ``mapping`` (original path -> (target path, function)).

    RosettaSciIO returns the mapping and leaves it to HyperSpy to apply; this
    does the same for the entries stemnmf uses. Targets in ``skip`` are left out.
    """
    for source, (target, function) in (mapping or {}).items():
        if target in skip:
            continue
        value = get_path(original_metadata, source)
        if value is None:
            continue
        try:
            value = function(value) if function is not None else value
        except Exception:  # a malformed tag is not worth failing the load
            continue
        if value is not None:
            _set_path(metadata, target, value)
    return metadata


def calibration_from_hyperspy_metadata(metadata: Mapping) -> dict:
    """Beam energy (keV), camera length (mm) and convergence angle (mrad).

    Reads HyperSpy's conventions: ``Acquisition_instrument.TEM.beam_energy``
    (keV), ``.camera_length`` (mm), ``.convergence_angle`` (mrad), and pyxem's
    ``Acquisition_instrument.TEM.Detector.Diffraction.camera_length`` (cm).
    """
    out = {}
    tem = get_path(metadata, "Acquisition_instrument.TEM") or get_path(metadata, "Acquisition_instrument.SEM") or {}
    if positive(get_path(tem, "beam_energy")):
        out["beam_energy"] = positive(get_path(tem, "beam_energy"))
    camera = positive(get_path(tem, "camera_length"))
    if camera is None and positive(get_path(tem, "Detector.Diffraction.camera_length")):
        camera = positive(get_path(tem, "Detector.Diffraction.camera_length")) * 10.0
    if camera is not None:
        out["camera_length"] = camera
    if positive(get_path(tem, "convergence_angle")):
        out["convergence_angle"] = positive(get_path(tem, "convergence_angle"))
    return out


def _axis_value(axis: Mapping, key: str, default=None):
    value = axis.get(key, default)
    return default if value is None else value


def calibration_from_axes(axes, ndim: int, beam_energy: float | None = None) -> tuple[dict, list[str]]:
    """Scan step (nm) and q_pixel (1/Å) from RosettaSciIO axes in array order.

    The last two axes are the pattern axes; for 4D data the first two are
    the scan axes. Pattern axes in angular units are converted with the
    electron wavelength when the beam energy is known (q = theta / lambda).

    Returns
    -------
    calibration : dict
    notes : list of str
        What could not be converted, for the metadata and the log.
    """
    axes = sorted(axes, key=lambda a: a.get("index_in_array", 0)) if axes else []
    cal: dict = {}
    notes: list[str] = []
    if len(axes) != ndim:
        return cal, notes
    if ndim == 4:
        steps = [length_nm(_axis_value(a, "scale"), a.get("units")) for a in axes[:2]]
        if all(steps):
            if not math.isclose(steps[0], steps[1], rel_tol=1e-3):
                notes.append(f"scan steps differ along y ({steps[0]:g} nm) and x ({steps[1]:g} nm); x is used")
            cal["scan_step"] = steps[1]
        elif any(has_units(a.get("units")) and length_nm(_axis_value(a, "scale"), a.get("units")) is None
                 and positive(_axis_value(a, "scale")) for a in axes[:2]):
            units = axes[1].get("units")
            notes.append(f"scan axes are in {units}, not a length; the scan step is unknown unless given with --scan-step")
    qs = []
    for axis in axes[-2:]:
        scale, units = _axis_value(axis, "scale"), axis.get("units")
        if not has_units(units) or positive(scale) is None:
            qs.append(None)
            continue
        q = reciprocal_per_angstrom(scale, units)
        if q is None and angle_mrad(scale, units) is not None:
            if beam_energy:
                q = angle_mrad(scale, units) * 1e-3 / electron_wavelength(beam_energy)
            else:
                notes.append(
                    f"pattern axes are in {units}; give the beam energy to convert them to 1/Å"
                )
        elif q is None:
            notes.append(
                f"pattern axes are in {units}, not a reciprocal length or an angle; "
                "q_pixel is unknown unless given with --q-pixel"
            )
        qs.append(q)
    if all(qs):
        if not math.isclose(qs[0], qs[1], rel_tol=1e-3):
            notes.append(f"pattern pixel sizes differ along qy ({qs[0]:g}) and qx ({qs[1]:g}) 1/Å; qx is used")
        cal["q_pixel"] = qs[1]
    return cal, sorted(set(notes), key=notes.index)


# -- names -------------------------------------------------------------------------------

_NUMBER = re.compile(r"(\d+)")


def natural_key(name: str):
    """Sort key putting ``'2.bmp'`` before ``'10.bmp'``."""
    return [int(part) if part.isdigit() else part.lower() for part in _NUMBER.split(str(name))]


_SHAPE_PATTERNS = (
    # Cao et al. folder names: ..._Row_222_Col_102_dim_384_384
    re.compile(r"row[_-]?(\d+)[_-]+col[_-]?(\d+)", re.IGNORECASE),
    # EMPAD raw names: scan_x256_y128 (x first)
    re.compile(r"(?:^|[_-])x(\d+)[_-]y(\d+)(?:$|[_.-])", re.IGNORECASE),
    # ..._95x165
    re.compile(r"(?<![0-9a-z])(\d+)\s*[x×]\s*(\d+)(?![0-9])", re.IGNORECASE),
)


def scan_shape_from_name(name: str, n_frames: int | None = None) -> tuple[int, int] | None:
    """Scan shape (rows, cols) written in a file or folder name, or None.

    Understands ``..._95x165`` (rows x cols), ``..._Row_222_Col_102_...``
    and ``scan_x256_y128`` (x first). With ``n_frames``, only a shape whose
    product is ``n_frames`` is returned (a name such as ``dp_256x256`` may
    give the detector size instead).
    """
    for index, pattern in enumerate(_SHAPE_PATTERNS):
        for match in reversed(list(pattern.finditer(str(name)))):
            a, b = int(match.group(1)), int(match.group(2))
            shape = (b, a) if index == 1 else (a, b)
            if min(shape) < 1:
                continue
            if n_frames is None or shape[0] * shape[1] == n_frames:
                return shape
    return None


def check_file_size(path: Path, needed: int, what: str) -> None:
    """Raise FormatError when ``path`` is shorter than ``needed`` bytes."""
    size = path.stat().st_size
    if size < needed:
        raise FormatError(
            f"{path} is truncated: {what} needs {needed} bytes but the file has {size}",
            "copy or export the file again",
        )
