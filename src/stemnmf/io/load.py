"""``load(path)``: any supported 4D-STEM file or folder -> Dataset4D."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from stemnmf.errors import FormatError, InputError
from stemnmf.io.dataset import Calibration, Dataset4D

__all__ = ["load", "LAZY_THRESHOLD"]

log = logging.getLogger(__name__)

#: Files larger than this load lazily (dask) unless ``lazy`` says otherwise.
LAZY_THRESHOLD = 2 * 1024**3


def _split_h5_path(path: str) -> tuple[str, str | None]:
    """``'file.h5:/group/data'`` -> ``('file.h5', '/group/data')``."""
    text = str(path)
    for ext in (".h5:", ".hdf5:", ".hdf:", ".emd:", ".hspy:"):
        i = text.lower().find(ext)
        if i >= 0:
            cut = i + len(ext) - 1
            return text[:cut], text[cut + 1 :] or None
    return text, None


def _find_4d_datasets(h5: h5py.File) -> list[str]:
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 4:
            found.append("/" + name)

    h5.visititems(visit)
    return found


def _read_h5(path: Path, inner: str | None, lazy: bool):
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise FormatError(f"{path} is not a readable HDF5 file ({err})", "check the file is complete") from None
    if inner is None:
        candidates = _find_4d_datasets(h5)
        if not candidates:
            h5.close()
            raise FormatError(
                f"{path} holds no 4D dataset",
                "give the dataset as FILE.h5:/group/dataset, or reshape a 3D stack with --scan-shape",
            )
        if len(candidates) > 1:
            h5.close()
            raise FormatError(
                f"{path} holds {len(candidates)} 4D datasets ({', '.join(candidates[:4])})",
                f"choose one as {path}:{candidates[0]}",
            )
        inner = candidates[0]
    if inner not in h5 or not isinstance(h5[inner], h5py.Dataset):
        h5.close()
        raise FormatError(f"{path} has no dataset {inner}", "list its contents with h5ls or `stemnmf info`")
    dset = h5[inner]
    calibration = {}
    metadata = {"dataset": inner}
    if h5.attrs.get("stemnmf_format") == "scan":
        calibration = json.loads(h5.attrs.get("calibration", "{}"))
        metadata.update(json.loads(h5.attrs.get("metadata", "{}")))
    mask = h5["mask"][()] if "mask" in h5 and h5.attrs.get("stemnmf_format") == "scan" else None
    if lazy:
        import dask.array as da

        chunks = (max(1, dset.chunks[0]) if dset.chunks else 1, -1, -1, -1)
        data = da.from_array(dset, chunks=chunks)
    else:
        data = dset[()]
        h5.close()
    return data, calibration, metadata, mask


def _read_npy(path: Path, lazy: bool):
    try:
        array = np.load(path, mmap_mode="r")
    except ValueError as err:
        raise FormatError(f"{path} is not a readable .npy file ({err})", "check the file is complete") from None
    if lazy:
        import dask.array as da

        data = da.from_array(array, chunks=(1, -1, -1, -1))
    else:
        data = np.asarray(array)
    return data, {}, {}, None


_READERS = {
    ".h5": _read_h5,
    ".hdf5": _read_h5,
    ".hdf": _read_h5,
    ".npy": _read_npy,
}


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def load(
    path: str | os.PathLike,
    lazy: bool | None = None,
    *,
    scan_step: float | None = None,
    q_pixel: float | None = None,
    beam_energy: float | None = None,
    camera_length: float | None = None,
    convergence_angle: float | None = None,
) -> Dataset4D:
    """Read a 4D-STEM scan.

    Parameters
    ----------
    path : path-like
        A file, ``file.h5:/group/dataset``, or a folder of one image per position.
    lazy : bool, optional
        Read on demand with dask. None: lazily when the file is larger than
        :data:`LAZY_THRESHOLD`.
    scan_step, q_pixel, beam_energy, camera_length, convergence_angle : float, optional
        Override the calibration read from the file (nm, 1/Å, keV, mm, mrad).

    Returns
    -------
    Dataset4D

    Raises
    ------
    InputError, FormatError, ScanShapeError
        With one line naming the problem and the fix.
    """
    file_part, inner = _split_h5_path(str(path))
    file_path = Path(file_part)
    if not file_path.exists():
        raise InputError(f"{file_path} does not exist", "check the path")
    suffix = file_path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        known = ", ".join(sorted(_READERS))
        raise FormatError(f"{file_path} has an unsupported extension '{suffix}'", f"supported: {known}")
    if lazy is None:
        lazy = _size_on_disk(file_path) > LAZY_THRESHOLD
    if reader is _read_h5:
        data, calibration, metadata, mask = reader(file_path, inner, lazy)
    else:
        data, calibration, metadata, mask = reader(file_path, lazy)
    cal = Calibration.from_dict(calibration).replace(
        scan_step=scan_step,
        q_pixel=q_pixel,
        beam_energy=beam_energy,
        camera_length=camera_length,
        convergence_angle=convergence_angle,
    )
    dataset = Dataset4D(data, cal, metadata, source=str(path), mask=mask)
    log.debug("loaded %s: %s", path, dataset)
    return dataset
