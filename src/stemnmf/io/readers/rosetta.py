"""Formats read through RosettaSciIO: DigitalMicrograph, NanoMegas blockfile, HyperSpy
(.hspy, .zspy), EMD (NCEM, Velox), MRC, TopSpin .app5, TIA .ser/.emi.

RosettaSciIO is always asked for a lazy array, so nothing is read until
needed; arrays it builds on an open HDF5 file (which cannot be sent to
dask.distributed workers) are rebuilt on :class:`~stemnmf.io.readers.sources.H5Array`.
Axes calibrations (nm, 1/nm, mrad, ...) are converted to stemnmf's units, and
the metadata mapping RosettaSciIO returns (which HyperSpy would apply) is
applied for beam energy, camera length and convergence angle.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import struct
from pathlib import Path

import numpy as np

from stemnmf.errors import FormatError, StemNMFError
from stemnmf.io.readers._common import (
    Raw,
    quiet_libraries,
    apply_mapping,
    calibration_from_axes,
    calibration_from_hyperspy_metadata,
    get_path,
)
from stemnmf.io.readers.sources import H5Array, dask_from_arraylike, rows_per_chunk

__all__ = ["read_with_rosettasciio", "PLUGINS"]

log = logging.getLogger(__name__)

#: plugin key -> (RosettaSciIO module, format name, metadata targets not to trust)
PLUGINS = {
    "dm": ("rsciio.digitalmicrograph", "Gatan DigitalMicrograph", ()),
    # the blockfile header's camera length unit is undocumented; its pattern axes are in cm
    # on the camera, not in reciprocal space
    "blo": ("rsciio.blockfile", "NanoMegas blockfile", ("Acquisition_instrument.TEM.camera_length",)),
    "hspy": ("rsciio.hspy", "HyperSpy HDF5", ()),
    "zspy": ("rsciio.zspy", "HyperSpy zarr (.zspy)", ()),
    "emd": ("rsciio.emd", "EMD (NCEM/Velox)", ()),
    "mrc": ("rsciio.mrc", "MRC", ()),
    "app5": ("rsciio.topspin", "NanoMegas TopSpin .app5", ()),
    "tia": ("rsciio.tia", "FEI TIA", ()),
    "mib": ("rsciio.quantumdetector", "Merlin MIB", ()),
    "tvips": ("rsciio.tvips", "TVIPS", ()),
    "tiff": ("rsciio.tiff", "TIFF", ()),
}

#: Size of the chunks asked of RosettaSciIO's memory-mapped readers.
MAP_CHUNK_BYTES = 4 * 1024**2
#: plugins whose lazy arrays are memory maps chunked by RosettaSciIO (``chunks`` argument)
_CHUNKED = ("dm", "blo", "mib", "mrc")

_EXTRAS = {"zarr": "zspy", "numcodecs": "zspy", "msgpack": "zspy", "hdf5plugin": "arina", "mrcz": "mrcz"}


def _missing_package(err: ImportError, plugin: str, name: str) -> FormatError:
    """The FormatError for a package a plugin needs and does not find, naming the extra that brings it."""
    extra = _EXTRAS.get(getattr(err, "name", "") or "", plugin)
    return FormatError(
        f"reading {name} files needs the Python package {err.name!r}, which is not installed",
        f"pip install 'rosettasciio[{extra}]'",
    )


def call_reader(path: Path, plugin: str, **kwargs) -> list[dict]:
    """``file_reader(path, lazy=True, **kwargs)`` of a plugin, errors turned into FormatError."""
    module_name, name, _ = PLUGINS[plugin]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise _missing_package(err, plugin, name) from None
    if plugin in _CHUNKED:
        # small chunks of whole frames (or scan rows): a chunk of a memory map is read whole
        # when any part of it is needed
        kwargs.setdefault("chunks", {0: "auto"})
    try:
        import dask

        with quiet_libraries(), dask.config.set({"array.chunk-size": MAP_CHUNK_BYTES}):
            signals = module.file_reader(str(path), lazy=True, **kwargs)
    except StemNMFError:
        raise
    except ImportError as err:
        raise _missing_package(err, plugin, name) from None
    except MemoryError:
        raise
    except (struct.error, EOFError) as err:
        raise FormatError(
            f"{path} could not be read as a {name} file: it ends too early ({type(err).__name__})",
            "check that the file is complete (a copy may have been cut short)",
        ) from None
    except Exception as err:
        text = str(err).split("\n")[0][:160]
        raise FormatError(
            f"{path} could not be read as a {name} file ({type(err).__name__}: {text})",
            "check that the file is complete and not corrupted",
        ) from None
    if isinstance(signals, dict):
        signals = [signals]
    return list(signals or [])


def _ndim(signal) -> int:
    return len(getattr(signal.get("data"), "shape", ()))


def _deepest_slice(signal: dict) -> dict:
    """A 5D Prismatic stack of 4D scans over depth (a navigation axis named ``*depth*``): its last depth."""
    axes = sorted(signal.get("axes") or [], key=lambda a: a.get("index_in_array", 0))
    depth = [a for a in axes if "depth" in str(a.get("name", "")).lower() and a.get("navigate", True)]
    if _ndim(signal) != 5 or len(axes) != 5 or len(depth) != 1:
        return signal
    index = depth[0]["index_in_array"]
    log.warning("%s holds the scan at %d depths; using the last (the full thickness)", signal.get("path", "file"),
                signal["data"].shape[index])
    data = np.take(signal["data"], signal["data"].shape[index] - 1, axis=index)
    kept = [dict(a, index_in_array=i) for i, a in enumerate(a for a in axes if a is not depth[0])]
    return {**signal, "data": data, "axes": kept}


def choose_signal(path: Path, signals: list[dict], name: str) -> dict:
    """The largest 4D signal (a 5D scan over depth gives its last depth), else the largest 3D stack."""
    signals = [_deepest_slice(s) for s in signals]
    for ndim in (4, 3):
        found = [s for s in signals if _ndim(s) == ndim and np.dtype(s["data"].dtype).kind in "biuf"]
        if found:
            found.sort(key=lambda s: -int(np.prod(s["data"].shape, dtype=np.int64)))
            if len(found) > 1:
                log.warning(
                    "%s holds %d %dD datasets; using the largest, shaped %s",
                    path, len(found), ndim, tuple(found[0]["data"].shape),
                )
            return found[0]
    shapes = ", ".join(str(tuple(getattr(s.get("data"), "shape", ()))) for s in signals[:4]) or "nothing"
    raise FormatError(
        f"{path} holds no 4D-STEM data (found {shapes})",
        "give a file with a 4D scan, or a 3D stack of patterns with --scan-shape",
    )


def _signal_last(signal) -> dict:
    """Transpose so that the two signal (pattern) axes are last."""
    axes = sorted(signal.get("axes") or [], key=lambda a: a.get("index_in_array", 0))
    data = signal["data"]
    if len(axes) != data.ndim:
        return signal
    nav = [a["index_in_array"] for a in axes if a.get("navigate", True)]
    sig = [a["index_in_array"] for a in axes if not a.get("navigate", True)]
    if len(sig) != 2 or nav + sig == list(range(data.ndim)):
        return signal
    order = nav + sig
    data = data.transpose(order)
    new_axes = []
    for i, index in enumerate(order):
        axis = dict(axes[index])
        axis["index_in_array"] = i
        new_axes.append(axis)
    return {**signal, "data": data, "axes": new_axes}


def distributable(data, name_parts=()):
    """Rebuild a dask array made on an open HDF5 dataset on a picklable :class:`H5Array`."""
    try:
        import dask.array as da
        import h5py
    except ImportError:  # pragma: no cover - dependencies
        return data
    if not isinstance(data, da.Array):
        return data
    dsets = [v for v in dict(data.__dask_graph__()).values() if isinstance(v, h5py.Dataset)]
    if len(dsets) != 1:
        return data
    dset = dsets[0]
    source = H5Array(dset.file.filename, dset.name, dset.shape, dset.dtype, dset.chunks)
    if tuple(data.shape) == tuple(dset.shape):
        axis, reverse = 0, False
    elif tuple(data.shape) == tuple(dset.shape[::-1]):
        axis, reverse = dset.ndim - 1, True
    else:
        log.debug("cannot rebuild %s on a picklable HDF5 source", data)
        return data
    frame_bytes = int(np.prod(source.shape, dtype=np.int64)) // source.shape[axis] * source.dtype.itemsize
    storage = source.storage_chunks[axis] if source.storage_chunks else None
    rows = min(source.shape[axis], rows_per_chunk(frame_bytes, storage))
    chunks = [-1] * source.ndim
    chunks[axis] = rows
    array = dask_from_arraylike(source, tuple(chunks), ("h5", source.path, source.name, *name_parts))
    # the reader's own handle on the file is no longer needed
    with contextlib.suppress(Exception):
        from rsciio.hspy import _api as hspy_api

        hspy_api._close_tracked_handles(source.path)
    with contextlib.suppress(Exception):
        dset.file.close()
    return array.T if reverse else array


def _json_safe(value):
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def read_with_rosettasciio(
    path: Path,
    plugin: str,
    *,
    beam_energy: float | None = None,
    reader_kwargs: dict | None = None,
    **_,
) -> Raw:
    """Read ``path`` with a RosettaSciIO plugin and convert what it returns."""
    _, name, skip = PLUGINS[plugin]
    signals = call_reader(path, plugin, **(reader_kwargs or {}))
    signal = _signal_last(choose_signal(path, signals, name))
    return raw_from_signal(path, signal, name, beam_energy=beam_energy, skip=skip)


def raw_from_signal(path: Path, signal: dict, name: str, *, beam_energy=None, skip=(), data=None) -> Raw:
    """A :class:`Raw` from one RosettaSciIO signal dictionary."""
    data = signal["data"] if data is None else data
    if not hasattr(data, "dask") and not isinstance(data, np.ndarray):
        data = np.asarray(data)
    data = distributable(data, (plugin_stamp(path),))
    md = signal.get("metadata") or {}
    om = signal.get("original_metadata") or {}
    mapped = apply_mapping(om, signal.get("mapping"), {}, skip=skip)
    calibration = calibration_from_hyperspy_metadata(mapped)
    for key, value in calibration_from_hyperspy_metadata(md).items():
        calibration.setdefault(key, value)
    energy = beam_energy or calibration.get("beam_energy")
    axes_cal, notes = calibration_from_axes(signal.get("axes") or [], data.ndim, energy)
    calibration.update(axes_cal)
    axes = sorted(signal.get("axes") or [], key=lambda a: a.get("index_in_array", 0))
    metadata = {
        "title": _json_safe(get_path(md, "General.title")) or "",
        "axes": [
            {k: _json_safe(a.get(k)) for k in ("name", "scale", "offset", "units", "navigate")} for a in axes
        ],
    }
    if notes:
        metadata["notes"] = notes
    return Raw(data, format=name, calibration=calibration, metadata=metadata)


def plugin_stamp(path: Path) -> str:
    st = Path(path).stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"
