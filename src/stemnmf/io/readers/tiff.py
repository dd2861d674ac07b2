"""Multi-page TIFF: a stack of patterns (one page each), or a 4D array saved by tifffile.

Pixels are read with tifffile (memory-mapped when stored uncompressed and
contiguous, page by page otherwise); the calibration of the pattern axes
comes from RosettaSciIO's TIFF reader (ImageJ, FEI, Zeiss and resolution tags).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from stemnmf.errors import FormatError
from stemnmf.io.readers._common import Raw, calibration_from_axes
from stemnmf.io.readers.rosetta import call_reader
from stemnmf.io.readers.sources import RawFrames, TiffFrames

__all__ = ["read_tiff"]

log = logging.getLogger(__name__)


def _open(path: Path):
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except Exception as err:  # tifffile raises several types for bad files
        raise FormatError(
            f"{path} is not a readable TIFF file ({type(err).__name__}: {str(err)[:120]})",
            "check that the file is complete",
        ) from None


def read_tiff(path: Path, beam_energy=None, **_) -> Raw:
    """Read a multi-page TIFF as a stack of frames (or 4D when saved with its shape)."""
    size = path.stat().st_size
    with _open(path) as tif:
        series = [s for s in tif.series if len(s.shape) >= 2]
        if not series:
            raise FormatError(f"{path} holds no images", "give a TIFF stack of diffraction patterns")
        s = max(series, key=lambda s: math.prod(s.shape))
        index = tif.series.index(s)
        if len(series) > 1:
            log.warning("%s holds %d image series; using the largest, shaped %s", path, len(series), tuple(s.shape))
        if "S" in s.axes:
            raise FormatError(
                f"{path} holds colour (RGB) images", "save the patterns as single-channel (grayscale) TIFF"
            )
        shape = tuple(int(n) for n in s.shape)
        if len(shape) < 3:
            raise FormatError(
                f"{path} holds a single {shape[0]} x {shape[1]} image, not a stack of patterns",
                "give a multi-page TIFF (one page per probe position) or a folder of images",
            )
        dtype = np.dtype(s.dtype).newbyteorder(tif.byteorder)
        frame_shape = shape[-2:]
        n = math.prod(shape[:-2])
        frame_bytes = math.prod(frame_shape) * dtype.itemsize
        offset = s.dataoffset
        if offset is not None:
            needed = offset + n * frame_bytes
            if needed > size:
                raise FormatError(
                    f"{path} is truncated: its {n} frames need {needed} bytes but the file has {size}",
                    "copy or export the file again",
                )
            frames = RawFrames([(path, offset, n)], frame_shape, dtype)
        else:
            pages = list(s.pages)
            ends = [
                max((o + c for o, c in zip(p.dataoffsets, p.databytecounts)), default=0)
                for p in pages if p is not None
            ]
            if ends and max(ends) > size:
                raise FormatError(
                    f"{path} is truncated: page data runs to byte {max(ends)} but the file has {size}",
                    "copy or export the file again",
                )
            if index != 0:
                raise FormatError(
                    f"{path}: the patterns are in image series {index}, which can only be read when uncompressed",
                    "save the stack as the first (or only) series of the TIFF",
                )
            per_page = n // max(1, len(pages)) if len(pages) and n % len(pages) == 0 else 1
            frames = TiffFrames(path, n, frame_shape, np.dtype(s.dtype), per_page)
    calibration, metadata = _calibration(path, len(shape), beam_energy)
    raw = Raw(frames, format="TIFF", calibration=calibration, metadata=metadata)
    if len(shape) == 4:
        raw.scan_shape, raw.scan_shape_source = shape[:2], "the shape stored in the TIFF"
    return raw


def _calibration(path: Path, ndim: int, beam_energy):
    try:
        signals = call_reader(path, "tiff")
    except FormatError as err:
        log.debug("no TIFF calibration from RosettaSciIO: %s", err)
        return {}, {}
    signals = [s for s in signals if len(getattr(s.get("data"), "shape", ())) == ndim]
    if not signals:
        return {}, {}
    axes = signals[0].get("axes") or []
    cal, notes = calibration_from_axes(axes, ndim, beam_energy)
    metadata = {"notes": notes} if notes else {}
    return cal, metadata
