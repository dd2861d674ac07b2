"""The 4D-STEM container: array (in memory or lazy), calibration and metadata."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from stemnmf.errors import DataValueError, InputError

__all__ = ["Calibration", "Dataset4D", "electron_wavelength"]


def electron_wavelength(beam_energy_kev: float) -> float:
    """Relativistic electron wavelength in Å for a beam energy in keV.

    Examples
    --------
    >>> round(electron_wavelength(300.0), 5)
    0.01969
    """
    # lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))
    h = 6.62607015e-34
    m0 = 9.1093837015e-31
    e = 1.602176634e-19
    c = 299792458.0
    volts = beam_energy_kev * 1e3
    momentum = math.sqrt(2 * m0 * e * volts * (1 + e * volts / (2 * m0 * c**2)))
    return h / momentum * 1e10


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Calibration of a 4D-STEM scan. Every field may be unknown (None).

    Attributes
    ----------
    scan_step : float or None
        Distance between neighbouring probe positions, in nm (same along y and x).
    q_pixel : float or None
        Reciprocal-space size of one detector pixel, in 1/Å.
    beam_energy : float or None
        Beam energy in keV.
    camera_length : float or None
        Camera length in mm.
    convergence_angle : float or None
        Probe semi-convergence angle in mrad.
    origin : tuple of float or None
        Position (qy, qx) of the direct beam on the detector, in pixels, for the
        scan as a whole. Per-position origins live in ``Dataset4D.origins``.
    ellipse : tuple of float or None
        Elliptical distortion of the diffraction rings as ``(a, b, angle)``:
        semi-axes a >= b in pixels of a reference ring and the angle of the a
        axis in radians, measured from +qx towards +qy.
    """

    scan_step: float | None = None
    q_pixel: float | None = None
    beam_energy: float | None = None
    camera_length: float | None = None
    convergence_angle: float | None = None
    origin: tuple[float, float] | None = None
    ellipse: tuple[float, float, float] | None = None

    def __post_init__(self):
        for name in ("scan_step", "q_pixel", "beam_energy", "camera_length", "convergence_angle"):
            value = getattr(self, name)
            if value is None:
                continue
            value = float(value)
            if not math.isfinite(value) or value <= 0:
                raise DataValueError(
                    f"calibration {name}={value!r} is not a positive number",
                    f"give a positive {name} or leave it unset",
                )
            object.__setattr__(self, name, value)
        for name, size in (("origin", 2), ("ellipse", 3)):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != size:
                    raise DataValueError(f"calibration {name} must have {size} values, got {len(value)}")
                object.__setattr__(self, name, value)

    @property
    def wavelength(self) -> float | None:
        """Electron wavelength in Å, or None when the beam energy is unknown."""
        return None if self.beam_energy is None else electron_wavelength(self.beam_energy)

    def replace(self, **changes: Any) -> Calibration:
        """Return a copy with the given fields changed; ``None`` values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) of the fields."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Calibration:
        """Build from a dict, ignoring unknown keys and ``None`` values."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})


class RowWindow:
    """Row reader of scan rows ``start:stop`` of another reader's scan (picklable)."""

    def __init__(self, reader, start: int, stop: int):
        self.reader = reader
        self.start, self.stop = int(start), int(stop)
        self.fills_buffer = bool(getattr(reader, "fills_buffer", False))

    def __call__(self, start: int, stop: int, out=None):
        start, stop = max(0, int(start)), min(self.stop - self.start, int(stop))
        return self.reader(self.start + start, self.start + stop, out=out)

    def map(self, start: int, stop: int):
        """Rows mapped without a copy when the reader can (see ``RowReader.map``), else None."""
        mapper = getattr(self.reader, "map", None)
        if mapper is None:
            return None
        start, stop = max(0, int(start)), min(self.stop - self.start, int(stop))
        return mapper(self.start + start, self.start + stop)

    def __repr__(self) -> str:
        return f"RowWindow({self.reader!r}, rows {self.start}:{self.stop})"


class Dataset4D:
    """A 4D-STEM scan: patterns indexed (sy, sx, qy, qx), in memory or lazy.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        The patterns, shape (sy, sx, qy, qx). A dask array is read chunk by
        chunk and never loaded whole.
    calibration : Calibration, optional
        Scan and detector calibration.
    metadata : dict, optional
        Metadata read from the file (JSON-serialisable values).
    source : str, optional
        The file the data came from.
    mask : numpy.ndarray of bool, optional
        Shape (qy, qx). True where a detector pixel is masked out (beam stop,
        dead pixels, detector edges); later stages ignore those pixels.
    origins : numpy.ndarray, optional
        Shape (sy, sx, 2): the direct-beam position (qy, qx) in pixels at each
        probe position, when measured.
    reader : callable, optional
        For lazy data: a picklable ``reader(start, stop, out=None)`` returning
        scan rows ``start:stop`` as a NumPy array (rows, sx, qy, qx) in
        ``dtype`` (written into ``out`` when given), reading straight from the
        file. :class:`stemnmf.engine.Engine` and :meth:`read_rows` use it
        instead of going through ``data``; ``data`` stays a dask array (for
        users and dask.distributed). Replacing ``data`` drops it.
    """

    def __init__(self, data, calibration=None, metadata=None, source=None, mask=None, origins=None, reader=None):
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            data = np.asarray(data)
        if data.ndim != 4:
            raise InputError(
                f"a 4D-STEM dataset needs 4 dimensions (sy, sx, qy, qx), got shape {tuple(data.shape)}",
                "reshape the array or give the scan shape",
            )
        if 0 in data.shape:
            raise InputError(f"the dataset is empty (shape {tuple(data.shape)})")
        if not (np.issubdtype(data.dtype, np.number) and not np.issubdtype(data.dtype, np.complexfloating)):
            raise DataValueError(
                f"pattern values must be real numbers, got dtype {data.dtype}",
                "convert the data to an integer or float type",
            )
        self.data = data
        self.calibration = calibration if calibration is not None else Calibration()
        self.metadata = dict(metadata or {})
        self.source = None if source is None else str(source)
        self.mask = None if mask is None else self._check_mask(mask)
        self.origins = None if origins is None else self._check_origins(origins)
        if reader is not None and not callable(reader):
            raise TypeError(f"reader must be callable, got {type(reader).__name__}")
        self.reader = reader if self.is_lazy else None

    def _check_mask(self, mask) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.pattern_shape:
            raise DataValueError(
                f"mask shape {mask.shape} does not match the pattern shape {self.pattern_shape}",
                "give a mask with one value per detector pixel",
            )
        if mask.all():
            raise DataValueError("the mask covers every detector pixel", "mask fewer pixels")
        return mask

    def _check_origins(self, origins) -> np.ndarray:
        origins = np.asarray(origins, dtype=np.float32)
        if origins.shape != (*self.scan_shape, 2):
            raise DataValueError(
                f"origins shape {origins.shape} does not match (sy, sx, 2) = {(*self.scan_shape, 2)}"
            )
        return origins

    # -- shape ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(sy, sx, qy, qx)."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def scan_shape(self) -> tuple[int, int]:
        """(sy, sx): probe positions."""
        return self.shape[:2]

    @property
    def pattern_shape(self) -> tuple[int, int]:
        """(qy, qx): detector pixels."""
        return self.shape[2:]

    @property
    def n_positions(self) -> int:
        """Number of probe positions, sy * sx."""
        return self.shape[0] * self.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes as stored (uncompressed)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def is_lazy(self) -> bool:
        """True when the data is a dask array read on demand."""
        return not isinstance(self.data, np.ndarray)

    # -- access --------------------------------------------------------------------------
    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Scan rows ``start:stop`` as a NumPy array (r, sx, qy, qx) in the stored dtype."""
        if self.reader is not None:
            return np.asarray(self.reader(start, stop))
        block = self.data[start:stop]
        if self.is_lazy:
            block = block.compute(scheduler="synchronous")
        return np.asarray(block)

    def row_slice(self, start: int, stop: int) -> Dataset4D:
        """Scan rows ``start:stop`` as a dataset (lazy stays lazy, and keeps its row reader)."""
        sy = self.scan_shape[0]
        start, stop = max(0, int(start)), min(sy, int(stop))
        if start == 0 and stop == sy:
            return self
        reader = None if self.reader is None else RowWindow(self.reader, start, stop)
        origins = None if self.origins is None else self.origins[start:stop]
        return self.replace(data=self.data[start:stop], origins=origins, reader=reader)

    def compute(self) -> Dataset4D:
        """An in-memory copy of this dataset (the data is read whole)."""
        if not self.is_lazy:
            return self
        if self.reader is not None:  # straight from the file, into one array
            return self.replace(data=np.asarray(self.reader(0, self.scan_shape[0])))
        return self.replace(data=np.asarray(self.data.compute()))

    def replace(self, **changes: Any) -> Dataset4D:
        """A new dataset sharing everything but the given attributes."""
        values = dict(
            data=self.data,
            calibration=self.calibration,
            metadata=self.metadata,
            source=self.source,
            mask=self.mask,
            origins=self.origins,
            reader=self.reader,
        )
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"unknown Dataset4D attributes: {sorted(unknown)}")
        values.update(changes)
        if "data" in changes and "reader" not in changes:
            values["reader"] = None  # the reader read the old data
        if "data" in changes and changes["data"].shape[:2] != self.scan_shape and "origins" not in changes:
            values["origins"] = None
        if "data" in changes and changes["data"].shape[2:] != self.pattern_shape and "mask" not in changes:
            values["mask"] = None
        return Dataset4D(**values)

    def __repr__(self) -> str:
        kind = "lazy" if self.is_lazy else "in memory"
        return f"<Dataset4D scan {self.scan_shape} x pattern {self.pattern_shape} {self.dtype} ({kind})>"
