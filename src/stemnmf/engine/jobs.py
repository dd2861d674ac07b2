"""The kernel contract and what runs on one chunk: convert the block, run every job, gather outputs.

A job is ``func(block, chunk, **kwargs)`` returning one array or a tuple of
arrays, and declares what each output is (:data:`OUTPUT_MODES`): ``'map'``, one
entry per own position of the chunk (first axis ``chunk.n_positions``, C order
of the scan), concatenated over the scan; or a reduction, ``'sum'``, ``'max'``,
``'min'`` or a callable ``op(total, part)``, combined over the chunks in chunk
order, so that the result never depends on which chunk finished first. One
job may return both kinds in one pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stemnmf.engine.chunks import RowChunk, read_block

__all__ = ["Accumulator", "Job", "OUTPUT_MODES", "as_tuple", "chunk_task", "convert", "detach", "run_jobs"]

#: Names of the built-in output modes: per position, or combined over chunks.
OUTPUT_MODES = ("map", "sum", "max", "min")
_COMBINE = {"sum": np.add, "max": np.maximum, "min": np.minimum}


@dataclasses.dataclass(frozen=True)
class Job:
    """A function run on every chunk of a pass: ``func(block, chunk, **kwargs)`` on ``dtype`` blocks.

    Attributes
    ----------
    func : callable
    kwargs : dict
    dtype : numpy dtype or None
        Blocks are converted to it first (None: as stored).
    finite : bool
        False hands the block with NaN and Inf kept (the function reads them
        as 0 itself); True reads them as 0 first.
    modes : str, callable or sequence of them
        What each output is: ``'map'`` or a reduction (module docstring); one
        value applies to every output.
    """

    func: Callable
    kwargs: dict
    dtype: Any
    finite: bool = True
    modes: Any = "map"

    @property
    def name(self) -> str:
        return str(getattr(self.func, "__name__", self.func))


def as_tuple(output) -> tuple:
    """A function's output as a tuple of outputs."""
    return output if isinstance(output, tuple) else (output,)


def _finite(block: np.ndarray) -> bool:
    """True when a float block holds no NaN or Inf (one read: NaN and Inf times 0 are NaN)."""
    flat = block.reshape(-1, block.shape[-1]) if block.ndim > 1 else block.reshape(1, -1)
    if flat.size == 0:
        return True
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isfinite(flat @ np.zeros(flat.shape[1], dtype=flat.dtype)).all())


def convert(block, dtype, out=None, finite: bool = True) -> np.ndarray:
    """``block`` as ``dtype`` (into ``out`` when given and needed), NaN and Inf read as 0 when ``finite``."""
    block = np.asarray(block)
    if dtype is None:
        return block
    if block.dtype != dtype:
        if out is not None and out.shape == block.shape and out.dtype == np.dtype(dtype):
            np.copyto(out, block, casting="unsafe")
            block = out
        else:
            block = block.astype(dtype)
    if finite and block.dtype.kind == "f" and not _finite(block):
        block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
    return block


def run_jobs(block, chunk: RowChunk, jobs: Sequence[Job], scratch: dict | None = None) -> list[tuple]:
    """Outputs of every job on one block (each dtype converted once, in a reusable buffer when given)."""
    converted: dict = {}
    outputs = []
    for job in jobs:
        dtype = None if job.dtype is None else np.dtype(job.dtype)
        key = (dtype, job.finite)
        if key not in converted:
            buffer = None
            if scratch is not None and dtype is not None and block.dtype != dtype:
                buffer = scratch_buffer(scratch, ("convert", *key), block.shape, dtype)
            converted[key] = convert(block, dtype, buffer, job.finite)
        outputs.append(as_tuple(job.func(converted[key], chunk, **job.kwargs)))
    return outputs


def scratch_buffer(scratch: dict, name, shape, dtype) -> np.ndarray:
    """A buffer of ``shape`` and ``dtype`` from ``scratch`` (grown as needed, reused by later chunks)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = scratch.get(name)
    if raw is None or raw.nbytes < nbytes:
        raw = scratch[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
    return raw[:nbytes].view(dtype).reshape(shape)


def detach(outputs: list[tuple], scratch: dict | None, mapped=None) -> list[tuple]:
    """Copy outputs that are views of a scratch buffer (reused by the next chunk) or of a memory map
    of the file (which would stay mapped as long as they live)."""
    buffers = list(scratch.values()) if scratch else []
    if mapped is not None:
        buffers.append(mapped)
    if not buffers:
        return outputs

    def own(a):
        if isinstance(a, np.ndarray) and any(np.may_share_memory(a, b) for b in buffers):
            return a.copy()
        return a

    return [tuple(own(a) for a in out) for out in outputs]


def map_block(reader, chunk: RowChunk):
    """The chunk's rows mapped from the file when the reader can (see ``RowReader.map``), else None."""
    mapper = getattr(reader, "map", None)
    return None if mapper is None else mapper(chunk.read_start, chunk.read_stop)


def chunk_task(data, reader, chunk: RowChunk, jobs: Sequence[Job], scratch: dict | None = None) -> list[tuple]:
    """Read one chunk and run every job on it (in a thread here, or on a dask worker)."""
    mapped = map_block(reader, chunk)
    if mapped is not None:  # straight from the page cache, no copy
        return detach(run_jobs(mapped, chunk, jobs, scratch), scratch, mapped)
    out = None
    if reader is not None and scratch is not None and getattr(reader, "fills_buffer", False):
        sy, sx = data.shape[:2]
        rows = chunk.read_stop - chunk.read_start
        out = scratch_buffer(scratch, "block", (rows, sx, *data.shape[2:]), data.dtype)
    block = read_block(data, chunk, reader, out)
    return detach(run_jobs(block, chunk, jobs, scratch), scratch)


def transform_block(block, chunk: RowChunk, func, kwargs, pattern_shape, out_dtype) -> np.ndarray:
    """``func``'s per-position patterns of one block, shaped (own rows, sx, *pattern_shape)."""
    out = as_tuple(func(convert(block, np.float32), chunk, **kwargs))[0]
    return np.asarray(out, dtype=out_dtype).reshape(chunk.stop - chunk.start, chunk.sx, *pattern_shape)


class Accumulator:
    """Gathers one job's per-chunk outputs: each concatenated (``'map'``) or combined in chunk order.

    Parameters
    ----------
    modes : str, callable or sequence of them
        One per output, or one for all (see the module docstring).
    name : str
        The job's name, for error messages.
    """

    def __init__(self, modes="map", name: str = "function"):
        self.modes = modes
        self.name = name
        self.ops: list | None = None  # per output: None for 'map', else the combining function
        self.pieces: dict[int, tuple] = {}  # chunk index -> the 'map' outputs
        self.pending: dict[int, tuple] = {}  # chunk index -> outputs not yet combined
        self.total: list | None = None
        self.next_index = 0

    def _resolve(self, n_outputs: int) -> list:
        modes = self.modes if isinstance(self.modes, (list, tuple)) else [self.modes] * n_outputs
        if len(modes) != n_outputs:
            raise ValueError(f"{len(modes)} output modes for {n_outputs} outputs of {self.name}")
        ops = []
        for mode in modes:
            if mode == "map":
                ops.append(None)
            elif isinstance(mode, str):
                if mode not in _COMBINE:
                    raise ValueError(f"output mode {mode!r} is not one of {OUTPUT_MODES} or a callable")
                ops.append(_COMBINE[mode])
            else:
                ops.append(mode)
        return ops

    def add(self, chunk: RowChunk, outputs: tuple) -> None:
        """Take the outputs of one chunk (in any order of chunks)."""
        if self.ops is None:
            self.ops = self._resolve(len(outputs))
        elif len(outputs) != len(self.ops):
            raise ValueError(f"{self.name} returned {len(outputs)} outputs, earlier {len(self.ops)}")
        mapped = []
        for op, out in zip(self.ops, outputs):
            if op is None:
                if np.shape(out)[:1] != (chunk.n_positions,):
                    raise ValueError(
                        f"{self.name} returned shape {np.shape(out)} for a chunk of {chunk.n_positions} "
                        "positions; the first axis must be per position"
                    )
                mapped.append(out)
        if mapped:
            self.pieces[chunk.index] = tuple(mapped)
        if any(op is not None for op in self.ops):
            self._combine(chunk.index, [out for op, out in zip(self.ops, outputs) if op is not None])

    def _combine(self, index: int, parts: list) -> None:
        # partials are combined in chunk order as soon as their predecessors are in, so the result
        # does not depend on which thread finished first; only out-of-order partials are held
        self.pending[index] = parts
        ops = [op for op in self.ops if op is not None]
        while self.next_index in self.pending:
            part = self.pending.pop(self.next_index)
            self.next_index += 1
            if self.total is None:
                self.total = [np.array(p, copy=True) for p in part]
            else:
                self.total = [_combine_into(op, t, p) for op, t, p in zip(ops, self.total, part)]

    def result(self):
        """One value per output (the value itself when there is one output)."""
        ordered = [self.pieces[i] for i in sorted(self.pieces)]
        maps = iter(tuple(np.concatenate([p[j] for p in ordered]) for j in range(len(ordered[0]))) if ordered else ())
        totals = iter(self.total or ())
        result = tuple(next(maps) if op is None else next(totals) for op in (self.ops or []))
        return result if len(result) != 1 else result[0]


def _combine_into(op, total, part):
    """``op(total, part)``, in place for the built-in combinations (the total is the accumulator's own copy)."""
    if op in (np.add, np.maximum, np.minimum) and isinstance(total, np.ndarray) and total.shape == np.shape(part) \
            and np.result_type(total, part) == total.dtype:
        return op(total, part, out=total)
    return op(total, part)
