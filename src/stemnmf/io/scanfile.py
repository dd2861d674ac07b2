"""stemnmf's own scan file: HDF5 with the patterns, calibration and optional ground truth.

Layout::

    /data                   (sy, sx, qy, qx) patterns, chunked by scan row
    /mask                   (qy, qx) bool, optional; True = masked pixel
    /truth/labels           (n_grains, sy, sx) uint8, optional
    /truth/thickness        (n_grains, sy, sx) float32, optional (Å)
    /truth/orientations     (n_grains, 4) float32, optional (quaternions)
    /truth/...              anything else the simulator records
    attrs on /              stemnmf_format = "scan", calibration (JSON), metadata (JSON)

Any HDF5 reader sees a plain 4D dataset; :func:`stemnmf.io.load` reads the
calibration back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stemnmf.engine import row_chunks
from stemnmf.errors import FormatError, InputError
from stemnmf.io.dataset import Dataset4D
from stemnmf.io.files import atomic_output

__all__ = ["save_scan", "Truth", "has_truth", "load_truth"]


@dataclasses.dataclass
class Truth:
    """Ground truth of a scan.

    Attributes
    ----------
    labels : numpy.ndarray
        (n_grains, sy, sx) uint8, 1 where the grain is in the beam.
    thickness : numpy.ndarray or None
        (n_grains, sy, sx) float32, path length of the beam through each grain in Å.
    orientations : numpy.ndarray or None
        (n_grains, 4) unit quaternions (w, x, y, z).
    extra : dict
        Any other arrays stored under /truth.
    """

    labels: np.ndarray
    thickness: np.ndarray | None = None
    orientations: np.ndarray | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        if self.labels.ndim != 3:
            raise InputError(
                f"ground-truth labels must be shaped (n_grains, sy, sx), got {self.labels.shape}",
                "stack one binary map per grain",
            )
        if self.labels.dtype.kind not in "biuf":
            raise InputError(f"ground-truth labels must be numbers, got {self.labels.dtype}", "stack one binary map per grain")
        if self.labels.dtype.kind == "f" and not np.isfinite(self.labels).all():
            raise InputError("ground-truth labels contain NaN or inf", "give one 0/1 map per grain")
        if (self.labels < 0).any():
            raise InputError("ground-truth labels contain negative values", "give one 0/1 map per grain")
        self.labels = (self.labels > 0).astype(np.uint8)

    @property
    def n_grains(self) -> int:
        return int(self.labels.shape[0])

    @property
    def scan_shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape[1:])

    @property
    def grains_per_position(self) -> np.ndarray:
        """(sy, sx) number of grains in the beam at each position."""
        return self.labels.sum(axis=0, dtype=np.int32)


def _dumps(value) -> str:
    return json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))


def save_scan(
    path: str | os.PathLike,
    dataset: Dataset4D,
    *,
    truth: Truth | None = None,
    overwrite: bool = False,
    compression: str | None = None,
) -> Path:
    """Write a dataset (and its ground truth) as a stemnmf scan file, atomically.

    The patterns are written one chunk of scan rows at a time, so a lazy
    dataset is never loaded whole.
    """
    path = Path(path)
    sy, sx, qy, qx = dataset.shape
    row_bytes = max(1, sx * qy * qx * dataset.dtype.itemsize)
    rows = max(1, min(sy, (64 * 1024**2) // row_bytes))
    with atomic_output(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["stemnmf_format"] = "scan"
            h5.attrs["calibration"] = _dumps(dataset.calibration.to_dict())
            h5.attrs["metadata"] = _dumps(dataset.metadata)
            out = h5.create_dataset(
                "data",
                shape=dataset.shape,
                dtype=dataset.dtype,
                chunks=(1, sx, qy, qx),
                compression=compression,
            )
            for chunk in row_chunks((sy, sx), rows):
                out[chunk.start : chunk.stop] = dataset.read_rows(chunk.start, chunk.stop)
            if dataset.mask is not None:
                h5.create_dataset("mask", data=dataset.mask)
            if truth is not None:
                if truth.scan_shape != (sy, sx):
                    raise InputError(
                        f"ground truth scan shape {truth.scan_shape} does not match the data {(sy, sx)}"
                    )
                group = h5.create_group("truth")
                group.create_dataset("labels", data=truth.labels, compression="gzip")
                if truth.thickness is not None:
                    group.create_dataset("thickness", data=np.asarray(truth.thickness, np.float32), compression="gzip")
                if truth.orientations is not None:
                    group.create_dataset("orientations", data=np.asarray(truth.orientations, np.float32))
                for name, value in truth.extra.items():
                    group.create_dataset(name, data=value)
    return path


def _read_extra(dataset: h5py.Dataset) -> np.ndarray:
    """A truth dataset; byte strings decoded to ``str``."""
    value = dataset[()]
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel()]).reshape(value.shape)
    return value


def has_truth(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file holding ground truth (``/truth/labels``)."""
    path = Path(path)
    if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as h5:
            return "truth/labels" in h5
    except OSError:
        return False


def load_truth(path: str | os.PathLike) -> Truth:
    """Ground truth from a stemnmf scan file or a .npy of labels (n_grains, sy, sx).

    Raises
    ------
    InputError
        If the file does not exist or holds no ground truth.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"truth file {path} does not exist", "check the path")
    if path.suffix.lower() == ".npy":
        try:
            labels = np.load(path)
        except ValueError as err:
            raise FormatError(f"{path} is not a readable .npy file ({err})") from None
        return Truth(labels)
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        raise FormatError(
            f"{path} is neither a .npy of labels nor an HDF5 scan file",
            "give a file written by `stemnmf simulate` or a .npy shaped (n_grains, sy, sx)",
        ) from None
    with h5:
        if "truth/labels" not in h5:
            raise InputError(
                f"{path} holds no ground truth (/truth/labels is missing)",
                "give a file written by `stemnmf simulate` or a .npy of labels",
            )
        group = h5["truth"]
        known = {"labels", "thickness", "orientations"}
        return Truth(
            labels=group["labels"][()],
            thickness=group["thickness"][()] if "thickness" in group else None,
            orientations=group["orientations"][()] if "orientations" in group else None,
            extra={k: _read_extra(group[k]) for k in group if k not in known and isinstance(group[k], h5py.Dataset)},
        )
