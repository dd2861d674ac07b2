"""``load(path)``: any supported 4D-STEM file or folder -> Dataset4D.

The work is split between the readers (``stemnmf.io.readers``, one module
per family of formats), which say what a file holds, and this module, which
applies the scan shape, decides between reading now and on demand, merges
the calibration with the user's options and checks the values.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from stemnmf.config import parse_scan_shape
from stemnmf.engine import Engine
from stemnmf.errors import FormatError, InputError, MemoryBudgetError, ScanShapeError, StemNMFError
from stemnmf.io.dataset import Calibration, Dataset4D
from stemnmf.io.files import file_checksum, split_input_path
from stemnmf.io.readers import reader_for
from stemnmf.io.readers._common import positive, quiet_libraries
from stemnmf.io.readers.layout import arrange, native, row_reader, suggest_scan_shapes
from stemnmf.io.scanfile import has_truth
from stemnmf.io.summary import apply_value_report, check_values

__all__ = ["InputFile", "inspect_input", "load", "parse_scan_shape", "LAZY_THRESHOLD", "SAMPLE_ROWS", "suggest_scan_shapes"]

log = logging.getLogger(__name__)

#: Data larger than this (in memory, or on disk) load lazily (dask) unless ``lazy`` says otherwise.
LAZY_THRESHOLD = 2 * 1024**3
#: Scan rows whose values are checked when a lazy dataset is loaded.
SAMPLE_ROWS = 16

_CALIBRATION_FIELDS = ("scan_step", "q_pixel", "beam_energy", "camera_length", "convergence_angle")


@dataclasses.dataclass(frozen=True)
class InputFile:
    """What a run needs to know of an input path before reading it (:func:`inspect_input`).

    Attributes
    ----------
    name : str
        The path as given, with a ``:/inner`` dataset if any.
    path : pathlib.Path
        The file or folder.
    inner : str or None
        The dataset inside an HDF5 file (``FILE:/group/dataset``).
    size : int
        Bytes on disk (a folder: all its files).
    has_truth : bool
        A stemnmf scan file with ground truth beside the data.
    """

    name: str
    path: Path
    inner: str | None
    size: int
    has_truth: bool

    def checksum(self) -> str:
        """:func:`~stemnmf.io.file_checksum` of the file or folder (reads it, or samples a large one)."""
        return file_checksum(self.path)


def inspect_input(source: str | os.PathLike) -> InputFile:
    """The path, inner dataset, size and truth of an input, without reading its data.

    Raises
    ------
    InputError
        If the file or folder does not exist.
    """
    path, inner = split_input_path(source)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path")
    return InputFile(os.fspath(source), path, inner, _size_on_disk(path), has_truth(path))


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _check_scan_shape(scan_shape) -> tuple[int, int] | None:
    if scan_shape is None:
        return None
    if isinstance(scan_shape, str):
        try:
            return parse_scan_shape(scan_shape)
        except StemNMFError as err:
            raise ScanShapeError(err.problem, err.fix) from None
    try:
        sy, sx = (int(n) for n in scan_shape)
    except (TypeError, ValueError):
        raise ScanShapeError(f"scan_shape={scan_shape!r} is not two integers", "give (rows, cols), e.g. (95, 165)") from None
    if sy < 1 or sx < 1:
        raise ScanShapeError(f"scan shape {sy}x{sx} must be positive", "give (rows, cols), e.g. (95, 165)")
    return sy, sx


def _nbytes(raw) -> int:
    shape = raw.data.shape
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(raw.data.dtype).itemsize


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


def _decide_lazy(lazy, raw, file_path: Path) -> bool:
    nbytes = _nbytes(raw)
    free = _available_memory()
    if lazy is None:
        lazy = max(nbytes, _size_on_disk(file_path)) > LAZY_THRESHOLD
        if not lazy and free is not None and nbytes > free // 2:
            log.info("%s needs %s in memory; reading it on demand instead", file_path, _size(nbytes))
            lazy = True
    elif not lazy and free is not None and nbytes > free:
        raise MemoryBudgetError(
            f"{file_path} needs {_size(nbytes)} in memory but only {_size(free)} are free",
            "read it on demand (leave out --no-lazy, or pass lazy=True)",
        )
    return bool(lazy)


def _read_error(file_path: Path, err: Exception) -> FormatError:
    text = str(err).split("\n")[0][:160]
    return FormatError(
        f"reading the patterns of {file_path} failed ({type(err).__name__}: {text})",
        "check that the file is complete (not cut short) and not corrupted",
    )


def _calibration(raw, overrides: dict) -> tuple[Calibration, dict]:
    values, sources = {}, {}
    for key, value in raw.calibration.items():
        if key in _CALIBRATION_FIELDS:
            value = positive(value)
            if value is None:
                continue
        elif key not in ("origin", "ellipse") or value is None:
            continue
        values[key] = value
        sources[key] = "file"
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            sources[key] = "option"
    return Calibration.from_dict(values), sources


def load(
    path: str | os.PathLike,
    lazy: bool | None = None,
    *,
    scan_shape: tuple[int, int] | str | None = None,
    scan_step: float | None = None,
    q_pixel: float | None = None,
    beam_energy: float | None = None,
    camera_length: float | None = None,
    convergence_angle: float | None = None,
) -> Dataset4D:
    """Read a 4D-STEM scan from any supported file or folder.

    Parameters
    ----------
    path : path-like
        A file (see docs/formats.md for the formats), ``file.h5:/group/dataset``,
        or a folder of one image per probe position.
    lazy : bool, optional
        Read on demand with dask (True) or now into memory (False). None:
        lazily when the data is larger than :data:`LAZY_THRESHOLD` or than
        half the free memory.
    scan_shape : (int, int) or str, optional
        (rows, cols) of the scan, e.g. ``(95, 165)`` or ``'95x165'``: needed
        for stacks of frames whose file does not say it; re-shapes a 4D scan
        with the same number of positions.
    scan_step, q_pixel, beam_energy, camera_length, convergence_angle : float, optional
        Override the calibration read from the file (nm, 1/Å, keV, mm, mrad).

    Returns
    -------
    Dataset4D
        ``metadata`` holds ``format``, ``scan_shape_source``,
        ``calibration_source`` (field -> 'file' or 'option') and what the
        reader kept; NaN/Inf/negative/large values are reported in the log.

    Raises
    ------
    InputError, FormatError, ScanShapeError, DataValueError, MemoryBudgetError
        With one line naming the problem and the fix.
    """
    file_path, inner = split_input_path(path)
    if not file_path.exists():
        raise InputError(f"{file_path} does not exist", "check the path")
    if file_path.is_file() and file_path.stat().st_size == 0:
        raise FormatError(f"{file_path} is empty (0 bytes)", "check that the file was written completely")
    user_shape = _check_scan_shape(scan_shape)
    reader = reader_for(file_path)
    with quiet_libraries():
        try:
            raw = reader(file_path, inner=inner, scan_shape=user_shape, beam_energy=beam_energy)
        except (StemNMFError, MemoryError):
            raise
        except PermissionError:
            raise InputError(f"{file_path} cannot be read (permission denied)", "check the file's permissions") from None
        except (OSError, ValueError, EOFError, KeyError, IndexError) as err:
            raise _read_error(file_path, err) from None
        lazy = _decide_lazy(lazy, raw, file_path)
        try:
            data, shape_source = arrange(raw, file_path, user_shape, lazy)
            if hasattr(data, "compute"):  # read the first and last pattern now: a damaged file fails here
                np.asarray(data[0, 0].compute(scheduler="synchronous"))
                np.asarray(data[-1, -1].compute(scheduler="synchronous"))
        except (StemNMFError, MemoryError):
            raise
        except Exception as err:
            raise _read_error(file_path, err) from None
    data = native(data)
    reader = row_reader(raw, data) if hasattr(data, "compute") else None
    calibration, cal_sources = _calibration(
        raw,
        dict(scan_step=scan_step, q_pixel=q_pixel, beam_energy=beam_energy, camera_length=camera_length,
             convergence_angle=convergence_angle),
    )
    detail = raw.metadata.get("calibration_source", {})
    cal_sources = {k: f"file ({detail[k]})" if v == "file" and k in detail else v for k, v in cal_sources.items()}
    metadata = {"format": raw.format, **raw.metadata, "scan_shape_source": shape_source,
                "calibration_source": cal_sources}
    if inner:
        metadata["dataset"] = inner
    dataset = Dataset4D(data, calibration, metadata, source=os.fspath(path), mask=raw.mask, reader=reader)
    for note in raw.metadata.get("notes", []):
        # a note on a value the user gave is moot
        if (q_pixel is not None and "pattern" in note) or (scan_step is not None and "scan" in note):
            continue
        log.warning("%s: %s", file_path, note)
    # lazy: one sampled row at a time, so that the check stays small whatever the row size
    check_engine = None
    if dataset.is_lazy:
        check_engine = Engine(progress=False, n_threads=1, chunk_rows=1, memory_budget=2**62)
    report = check_values(dataset, check_engine, max_rows=SAMPLE_ROWS if dataset.is_lazy else None)
    dataset = apply_value_report(dataset, report)
    dataset.metadata["value_check"] = {
        "n_nonfinite": report.n_nonfinite,
        "n_negative": report.n_negative,
        "n_inexact_float32": report.n_inexact,
        "sampled_rows": report.sampled_rows,
    }
    log.debug("loaded %s: %s", path, dataset)
    return dataset
