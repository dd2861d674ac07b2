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
from stemnmf.io.readers.sources import H5Array

__all__ = ["open_h5", "read_h5", "read_h5_dataset", "h5_kind"]


def open_h5(path: Path) -> h5py.File:
    """Open read-only; a FormatError for anything that is not a complete HDF5 file."""
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        text = str(err)
        if "truncated" in text.lower():
            reason = "it is truncated"
        elif "signature not found" in text.lower():
            reason = "no HDF5 signature"
        else:
            reason = text.split("(")[0].strip().rstrip(".") or type(err).__name__
        raise FormatError(
            f"{path} is not a readable HDF5 file ({reason})",
            "check that the file is complete (a copy may have been cut short)",
        ) from None


def _attr(obj, name, default=None):
    value = obj.attrs.get(name, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
    return value


def h5_kind(h5: h5py.File) -> str:
    """'stemnmf', 'emd1' (py4DSTEM), 'ncem', 'hspy' or 'plain'."""
    if _attr(h5, "stemnmf_format") == "scan":
        return "stemnmf"
    if _attr(h5, "emd_group_type") == "file" and str(_attr(h5, "version_major", "")) == "1":
        return "emd1"
    if any(
        isinstance(g, h5py.Group) and _attr(g, "emd_group_type") == "root" for g in h5.values()
    ):
        return "emd1"
    if str(_attr(h5, "file_format", "")).lower() == "hyperspy" or "Experiments" in h5:
        return "hspy"
    if "version_major" in h5.attrs or any(
        isinstance(g, h5py.Group) and "version_major" in g.attrs for g in h5.values()
    ):
        return "ncem"
    return "plain"


def find_datasets(h5: h5py.Group, ndims=(4,)) -> list[str]:
    """Paths of the datasets with ``ndim`` in ``ndims``, in file order."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in ndims and obj.dtype.kind in "biuf":
            found.append("/" + name if not name.startswith("/") else name)

    h5.visititems(visit)
    return found


def read_h5_dataset(path: Path, h5: h5py.File, inner: str) -> H5Array:
    """A lazy view of one dataset, checked to be numeric and 3D or 4D."""
    if inner not in h5 or not isinstance(h5[inner], h5py.Dataset):
        raise FormatError(f"{path} has no dataset {inner}", "list its datasets with `h5ls -r` and give one as FILE:/path")
    dset = h5[inner]
    if dset.dtype.kind not in "biuf":
        raise FormatError(
            f"{path}:{inner} holds {dset.dtype} values, not numbers", "give a dataset of integer or float patterns"
        )
    if dset.ndim not in (3, 4):
        raise FormatError(
            f"{path}:{inner} is {dset.ndim}D (shape {dset.shape}), not 4D-STEM data",
            "give a dataset shaped (sy, sx, qy, qx), or (n_frames, qy, qx) with --scan-shape",
        )
    return H5Array(path, dset.name, dset.shape, dset.dtype, dset.chunks)


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
        from stemnmf.io.readers.py4dstem import read_emd1

        return read_emd1(path, inner=inner, **options)
    from stemnmf.io.readers.rosetta import read_with_rosettasciio

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
        calibration = json.loads(_attr(h5, "calibration", "{}") or "{}")
        metadata = json.loads(_attr(h5, "metadata", "{}") or "{}")
    except json.JSONDecodeError:
        raise FormatError(f"{path} has unreadable stemnmf attributes", "write it again with stemnmf") from None
    mask = np.asarray(h5["mask"][()], dtype=bool) if "mask" in h5 else None
    metadata = {**metadata, "dataset": "/data"}
    if "truth" in h5:
        metadata["has_truth"] = True
    return Raw(array, format="stemnmf scan (HDF5)", calibration=calibration, metadata=metadata, mask=mask)
