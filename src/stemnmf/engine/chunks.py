"""Units of work: chunks of whole scan rows, reading them, and sizes in bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
from dask.utils import parse_bytes as dask_parse_bytes

from stemnmf.errors import ConfigError

__all__ = ["DEFAULT_MEMORY_BUDGET", "RowChunk", "format_bytes", "parse_bytes", "read_block", "row_chunks",
           "storage_rows"]

#: Memory budget of an engine when none is given (bytes).
DEFAULT_MEMORY_BUDGET = 2 * 1024**3


def parse_bytes(value: int | float | str | None, default: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Bytes from an int or a string such as ``'2GiB'``, ``'512 MB'``, ``'1e9'``.

    Raises
    ------
    ConfigError
        If the value cannot be read or is not positive.
    """
    if value is None:
        return default
    try:
        nbytes = int(value) if isinstance(value, (int, float)) else int(dask_parse_bytes(str(value)))
    except (ValueError, TypeError, KeyError):
        raise ConfigError(
            f"cannot read the memory size {value!r}", "write it like 2GiB, 512MB or 1e9"
        ) from None
    if nbytes <= 0:
        raise ConfigError(f"memory size {value!r} is not positive", "give a size such as 2GiB")
    return nbytes


def format_bytes(nbytes: float) -> str:
    """``nbytes`` for people: ``'512 B'``, ``'1.5 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


@dataclasses.dataclass(frozen=True)
class RowChunk:
    """One unit of work: scan rows ``start:stop``, read with ``halo`` rows either side.

    Attributes
    ----------
    index : int
        Position of the chunk in the sequence of chunks.
    start, stop : int
        The chunk's own scan rows.
    read_start, read_stop : int
        The rows actually read (own rows plus halo, clipped to the scan).
    sx : int
        Scan width, to turn rows into flat position indices.
    """

    index: int
    start: int
    stop: int
    read_start: int
    read_stop: int
    sx: int

    @property
    def own(self) -> slice:
        """The chunk's own rows inside the block that was read."""
        return slice(self.start - self.read_start, self.stop - self.read_start)

    @property
    def positions(self) -> slice:
        """Flat indices (y * sx + x) of the chunk's own positions."""
        return slice(self.start * self.sx, self.stop * self.sx)

    @property
    def n_positions(self) -> int:
        return (self.stop - self.start) * self.sx


def row_chunks(scan_shape: tuple[int, int], rows_per_chunk: int, halo: int = 0) -> list[RowChunk]:
    """Split a scan into chunks of ``rows_per_chunk`` whole rows."""
    sy, sx = scan_shape
    rows_per_chunk = max(1, int(rows_per_chunk))
    chunks = []
    for index, start in enumerate(range(0, sy, rows_per_chunk)):
        stop = min(sy, start + rows_per_chunk)
        chunks.append(RowChunk(index, start, stop, max(0, start - halo), min(sy, stop + halo), sx))
    return chunks


def read_block(data, chunk: RowChunk, reader=None, out=None) -> np.ndarray:
    """The rows of one chunk (with halo) as a NumPy array in the stored dtype.

    With a ``reader`` (see :class:`~stemnmf.io.Dataset4D`) the rows are read
    straight from the file, into ``out`` when given; otherwise they are sliced
    from ``data`` (a view for NumPy, computed for dask).
    """
    if reader is not None:
        return np.asarray(reader(chunk.read_start, chunk.read_stop, out=out))
    block = data[chunk.read_start : chunk.read_stop]
    if not isinstance(block, np.ndarray):
        block = block.compute(scheduler="synchronous")
    return np.asarray(block)


def storage_rows(data) -> int | None:
    """Rows per storage chunk of a lazy (dask) array, when regular; None otherwise."""
    chunks = getattr(data, "chunks", None)
    if not chunks or not isinstance(chunks[0], tuple) or len(chunks[0]) == 0:
        return None
    return int(chunks[0][0])
