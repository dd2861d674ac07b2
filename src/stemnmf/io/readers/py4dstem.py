"""py4DSTEM files (EMD 1.0, written by py4DSTEM >= 0.13 through ``emdfile``), read with h5py.

Layout (https://emdatasets.com/format, emdfile): the file has attributes
``emd_group_type='file'``, ``version_major=1``; each top-level *root* group
(``emd_group_type='root'``) holds nodes. An *array* node
(``emd_group_type='array'``, ``python_class='DataCube'`` for 4D-STEM) holds
the dataset ``data`` and one dataset ``dim{n}`` per axis with attributes
``name`` and ``units`` (two values: first coordinate and the next, when
linear). Metadata lives in ``metadatabundle/<name>`` groups with one dataset
per item; py4DSTEM keeps its ``calibration`` there in the root's bundle (or
the array's), with ``R_pixel_size``/``R_pixel_units`` ('A', 'nm', 'pixels'),
``Q_pixel_size``/``Q_pixel_units`` ('A^-1', 'mrad', 'pixels'), the origin
``qx0_mean``/``qy0_mean`` and ``probe_convergence_semiangle_mrad``.

A DataCube is indexed (Rx, Ry, Qx, Qy) with the first index running down
the rows of py4DSTEM's images, which is stemnmf's (sy, sx, qy, qx).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from stemnmf.errors import FormatError
from stemnmf.io.dataset import electron_wavelength
from stemnmf.io.readers._common import Raw, angle_mrad, length_nm, positive, reciprocal_per_angstrom
from stemnmf.io.readers.h5files import attr, open_h5, read_h5_dataset

__all__ = ["read_emd1"]


def _arrays(h5: h5py.File) -> list[tuple[str, int, str]]:
    """(group path, ndim, python_class) of every EMD array node holding 3D/4D numbers."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and attr(obj, "emd_group_type") == "array" and "data" in obj:
            data = obj["data"]
            if isinstance(data, h5py.Dataset) and data.ndim in (3, 4) and data.dtype.kind in "biuf":
                found.append(("/" + name, data.ndim, str(attr(obj, "python_class", ""))))

    h5.visititems(visit)
    return found


def _value(dset: h5py.Dataset):
    value = dset[()]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, np.ndarray) and value.dtype.kind == "S":
        value = value.astype(str)
    elif isinstance(value, np.generic):
        value = value.item()
    return value


def _metadata_group(h5: h5py.File, group_path: str, name: str) -> dict:
    """Items of the Metadata ``name`` nearest to ``group_path`` (the node, then its parents)."""
    parts = group_path.strip("/").split("/")
    for depth in range(len(parts), 0, -1):
        bundle = "/" + "/".join(parts[:depth]) + "/metadatabundle/" + name
        if bundle in h5 and isinstance(h5[bundle], h5py.Group):
            return {k: _value(v) for k, v in h5[bundle].items() if isinstance(v, h5py.Dataset)}
    return {}


def _dims(group: h5py.Group, ndim: int) -> list[tuple[float | None, str]]:
    """(step, units) of each dim vector."""
    out = []
    for n in range(ndim):
        dim = group.get(f"dim{n}")
        if not isinstance(dim, h5py.Dataset) or dim.size < 2 or dim.dtype.kind not in "biuf":
            out.append((None, ""))
            continue
        values = dim[:2].astype(np.float64)
        out.append((float(values[1] - values[0]), str(attr(dim, "units", ""))))
    return out


def _calibration(cal: dict, dims, ndim: int, beam_energy: float | None) -> tuple[dict, dict, list[str]]:
    """Calibration fields, where each came from, and notes."""
    out, source, notes = {}, {}, []
    r_size, r_units = cal.get("R_pixel_size"), cal.get("R_pixel_units")
    q_size, q_units = cal.get("Q_pixel_size"), cal.get("Q_pixel_units")
    scan = length_nm(r_size, r_units) if r_units is not None else None
    if scan is not None:
        out["scan_step"], source["scan_step"] = scan, "calibration R_pixel_size"
    elif ndim == 4 and dims[1][0] is not None and length_nm(dims[1][0], dims[1][1]) is not None:
        out["scan_step"], source["scan_step"] = length_nm(dims[1][0], dims[1][1]), "dim1"
    q = reciprocal_per_angstrom(q_size, q_units) if q_units is not None else None
    q_source = "calibration Q_pixel_size"
    if q is None and q_units is None and dims[-1][0] is not None:
        q_size, q_units, q_source = dims[-1][0], dims[-1][1], f"dim{ndim - 1}"
        q = reciprocal_per_angstrom(q_size, q_units)
    if q is None and angle_mrad(q_size, q_units) is not None:
        if beam_energy:
            q = angle_mrad(q_size, q_units) * 1e-3 / electron_wavelength(beam_energy)
        else:
            notes.append(f"pattern pixels are {q_size:g} {q_units}; give the beam energy to convert them to 1/Å")
    if q is not None:
        out["q_pixel"], source["q_pixel"] = q, q_source
    qx0, qy0 = cal.get("qx0_mean", cal.get("qx0")), cal.get("qy0_mean", cal.get("qy0"))
    if qx0 is not None and qy0 is not None and np.ndim(qx0) == 0 and np.ndim(qy0) == 0:
        if np.isfinite(qx0) and np.isfinite(qy0):
            # py4DSTEM's qx is the first pattern axis (rows): our qy
            out["origin"], source["origin"] = (float(qx0), float(qy0)), "calibration qx0_mean, qy0_mean"
    conv = positive(cal.get("probe_convergence_semiangle_mrad"))
    if conv is not None:
        out["convergence_angle"], source["convergence_angle"] = conv, "calibration probe_convergence_semiangle_mrad"
    return out, source, notes


def read_emd1(path: Path, inner: str | None = None, beam_energy: float | None = None, **_) -> Raw:
    """Read the 4D array of a py4DSTEM / EMD 1.0 file, with its calibration."""
    h5 = open_h5(path)
    with h5:
        arrays = _arrays(h5)
        if inner is not None:
            wanted = "/" + inner.strip("/")
            if wanted.endswith("/data"):
                wanted = wanted[: -len("/data")]
            arrays = [a for a in arrays if a[0] == wanted]
            if not arrays:
                # not an EMD array node: read the dataset as plain HDF5
                array = read_h5_dataset(path, h5, inner)
                return Raw(array, format="py4DSTEM EMD 1.0 (dataset)", metadata={"dataset": array.name})
        if not arrays:
            raise FormatError(
                f"{path} is an EMD 1.0 file with no 3D or 4D array",
                "save the datacube with py4DSTEM, or give a dataset as FILE:/path",
            )
        four = [a for a in arrays if a[1] == 4]
        cubes = [a for a in four if a[2] == "DataCube"] or four or arrays
        if len(cubes) > 1:
            names = ", ".join(a[0] for a in cubes[:4])
            raise FormatError(
                f"{path} holds {len(cubes)} datacubes ({names})", f"choose one as {path}:{cubes[0][0]}"
            )
        group_path, ndim, python_class = cubes[0]
        array = read_h5_dataset(path, h5, group_path + "/data")
        cal_items = _metadata_group(h5, group_path, "calibration")
        dims = _dims(h5[group_path], ndim)
        authoring = str(attr(h5, "authoring_program", ""))
    calibration, sources, notes = _calibration(cal_items, dims, ndim, beam_energy)
    metadata = {
        "dataset": group_path + "/data",
        "emd_python_class": python_class,
        "calibration_source": sources,
    }
    if authoring:
        metadata["authoring_program"] = authoring
    if notes:
        metadata["notes"] = notes
    return Raw(array, format="py4DSTEM EMD 1.0", calibration=calibration, metadata=metadata)
