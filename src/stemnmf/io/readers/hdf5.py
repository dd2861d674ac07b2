"""Plain HDF5 files (one 4D dataset, or ``file.h5:/group/dataset``) and stemnmf scan files.

HDF5 files written by other programs are recognised by their attributes and
handed to the right reader: py4DSTEM (EMD 1.0), NCEM EMD and HyperSpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from stemnmf.errors import FormatError
from stemnmf.io.readers._common import Raw
from stemnmf.io.readers.h5files import attr, find_datasets, h5_kind, open_h5, read_h5_dataset
from stemnmf.io.readers.py4dstem import read_emd1
from stemnmf.io.readers.rosetta import read_with_rosettasciio

__all__ = ["read_h5"]


def read_h5(path: Path, inner: str | None = None, **options) -> Raw:
    """Read an HDF5 file; other programs' layouts go to their readers."""
    h5 = open_h5(path)
    with h5:
        kind = h5_kind(h5)
        if kind == "stemnmf" and inner is None:
            return _read_stemnmf(path, h5)
        if kind in ("plain", "stemnmf") or (inner is not None and kind != "emd1"):
            return _read_plain(path, h5, inner)
    if kind == "emd1":
        return read_emd1(path, inner=inner, **options)
    plugin = "hspy" if kind == "hspy" else "emd"
    return read_with_rosettasciio(path, plugin, **options)


def _read_plain(path: Path, h5: h5py.File, inner: str | None) -> Raw:
    if inner is None:
        candidates = find_datasets(h5, (4,))
        if not candidates:
            stacks = find_datasets(h5, (3,))
            if len(stacks) == 1:
                inner = stacks[0]
            elif stacks:
                raise FormatError(
                    f"{path} holds no 4D dataset but {len(stacks)} 3D ones ({', '.join(stacks[:4])})",
                    f"choose a stack as {path}:{stacks[0]} and give --scan-shape",
                )
            else:
                raise FormatError(
                    f"{path} holds no 4D dataset",
                    "give the dataset as FILE.h5:/group/dataset, or reshape a 3D stack with --scan-shape",
                )
        elif len(candidates) > 1:
            raise FormatError(
                f"{path} holds {len(candidates)} 4D datasets ({', '.join(candidates[:4])})",
                f"choose one as {path}:{candidates[0]}",
            )
        else:
            inner = candidates[0]
    array = read_h5_dataset(path, h5, inner)
    return Raw(array, format="HDF5", metadata={"dataset": array.name})


def _read_stemnmf(path: Path, h5: h5py.File) -> Raw:
    array = read_h5_dataset(path, h5, "/data")
    try:
        calibration = json.loads(attr(h5, "calibration", "{}") or "{}")
        metadata = json.loads(attr(h5, "metadata", "{}") or "{}")
    except json.JSONDecodeError:
        raise FormatError(f"{path} has unreadable stemnmf attributes", "write it again with stemnmf") from None
    mask = np.asarray(h5["mask"][()], dtype=bool) if "mask" in h5 else None
    metadata = {**metadata, "dataset": "/data"}
    if "truth" in h5:
        metadata["has_truth"] = True
    return Raw(array, format="stemnmf scan (HDF5)", calibration=calibration, metadata=metadata, mask=mask)
