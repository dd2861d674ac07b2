""".npy files: memory-mapped, read a few rows at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stemnmf.errors import FormatError
from stemnmf.io.readers._common import Raw, check_file_size
from stemnmf.io.readers.sources import NpyArray

__all__ = ["read_npy"]


def _header(path: Path):
    """(shape, fortran_order, dtype, header_bytes) from the .npy header."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            else:  # pragma: no cover - future versions
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            raise FormatError(
                f"{path} is not a readable .npy file ({err})", "check that the file is complete"
            ) from None
        return shape, fortran, dtype, fh.tell()


def read_npy(path: Path, **_) -> Raw:
    """Read a .npy array of shape (sy, sx, qy, qx) or (n_frames, qy, qx)."""
    shape, fortran, dtype, offset = _header(path)
    if dtype.hasobject:
        raise FormatError(f"{path} holds Python objects, not numbers", "save the patterns as a numeric array")
    if len(shape) not in (3, 4):
        raise FormatError(
            f"{path} holds a {len(shape)}D array of shape {tuple(shape)}, not 4D-STEM data",
            "save an array shaped (sy, sx, qy, qx), or (n_frames, qy, qx) with --scan-shape",
        )
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    check_file_size(path, offset + nbytes, f"an array of shape {tuple(shape)} {dtype}")
    return Raw(
        NpyArray(path, shape, dtype, fortran),
        format="NumPy .npy",
        metadata={"fortran_order": bool(fortran)} if fortran else {},
    )
