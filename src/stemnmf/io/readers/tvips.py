"""TVIPS camera streams (``name_000.tvips``, ``name_001.tvips``, ...).

The first file starts with a general header (its size in its first uint32;
``dimx``, ``dimy``, ``bitsperpixel``, ``ht`` in kV, ``pixelsize`` in 1/nm in
diffraction mode, ``frameheaderbytes``); then, in every file, records of a
frame header followed by the frame (little-endian unsigned integers).
RosettaSciIO parses the headers; the frames are read here, record by record,
so that a lazy array only reads what it needs and can go to dask.distributed
workers. The stream is a stack of frames: give the scan shape.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from stemnmf.errors import FormatError
from stemnmf.io.readers._common import Raw
from stemnmf.io.readers.rosetta import call_reader, choose_signal, raw_from_signal
from stemnmf.io.readers.sources import RawFrames

__all__ = ["read_tvips"]

_GENERAL = np.dtype(
    [("size", "<u4"), ("version", "<u4"), ("dimx", "<u4"), ("dimy", "<u4"), ("bitsperpixel", "<u4"),
     ("offsetx", "<u4"), ("offsety", "<u4"), ("binx", "<u4"), ("biny", "<u4"), ("pixelsize", "<u4"),
     ("ht", "<u4"), ("magtotal", "<u4"), ("frameheaderbytes", "<u4")]
)


def _files(path: Path) -> list[Path]:
    match = re.match(r"(.*)_(\d{3})$", path.stem)
    if not match or int(match.group(2)) != 0:
        raise FormatError(
            f"{path} is not the first file of a TVIPS stream (name_000.tvips)",
            "give the file whose name ends in _000.tvips",
        )
    files, index = [], 0
    while True:
        candidate = path.with_name(f"{match.group(1)}_{index:03d}{path.suffix}")
        if not candidate.exists():
            return files
        files.append(candidate)
        index += 1


def read_tvips(path: Path, beam_energy=None, **_) -> Raw:
    """Read a TVIPS stream as a stack of frames."""
    files = _files(path)
    with open(path, "rb") as fh:
        head = np.frombuffer(fh.read(_GENERAL.itemsize), dtype=_GENERAL)
    if head.size == 0:
        raise FormatError(f"{path} is truncated: it has no TVIPS header", "copy the file again")
    head = head[0]
    version, bits = int(head["version"]), int(head["bitsperpixel"])
    if version not in (1, 2) or bits not in (8, 16, 32):
        raise FormatError(f"{path} has an unknown TVIPS header (version {version}, {bits} bits)", "give a TVIPS .tvips file")
    frame_header = 12 if version == 1 else int(head["frameheaderbytes"])
    frame_shape = (int(head["dimy"]), int(head["dimx"]))
    dtype = np.dtype(f"<u{bits // 8}")
    record = frame_header + frame_shape[0] * frame_shape[1] * dtype.itemsize
    layout = []
    for i, name in enumerate(files):
        offset = int(head["size"]) if i == 0 else 0
        count, remainder = divmod(name.stat().st_size - offset, record)
        if remainder or count < 0:
            raise FormatError(
                f"{name} is truncated: it ends {remainder} bytes into a frame",
                "copy the TVIPS files again",
            )
        layout.append((name, offset, count))
    frames = RawFrames(layout, frame_shape, dtype, pre=frame_header)
    if frames.n_frames == 0:
        raise FormatError(f"{path} holds no frames", "give a complete TVIPS stream")
    signal = choose_signal(path, call_reader(path, "tvips"), "TVIPS")
    raw = raw_from_signal(path, {**signal, "data": np.empty((0, 0, 0))}, "TVIPS", beam_energy=beam_energy)
    raw.data = frames
    raw.metadata.pop("axes", None)
    raw.metadata["files"] = [f.name for f in files]
    return raw
