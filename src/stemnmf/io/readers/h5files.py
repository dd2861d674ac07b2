"""HDF5 primitives shared by the HDF5 readers: open a file, read an attribute, tell whose layout it is."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from stemnmf.errors import FormatError
from stemnmf.io.readers.sources import H5Array

__all__ = ["attr", "find_datasets", "h5_kind", "open_h5", "read_h5_dataset"]


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


def attr(obj, name, default=None):
    """Attribute ``name`` of an HDF5 object as a Python value (bytes decoded, one-element arrays unpacked)."""
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
    if attr(h5, "stemnmf_format") == "scan":
        return "stemnmf"
    if attr(h5, "emd_group_type") == "file" and str(attr(h5, "version_major", "")) == "1":
        return "emd1"
    if any(
        isinstance(g, h5py.Group) and attr(g, "emd_group_type") == "root" for g in h5.values()
    ):
        return "emd1"
    if str(attr(h5, "file_format", "")).lower() == "hyperspy" or "Experiments" in h5:
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
