"""Where per-pattern work runs.

Every stage that touches diffraction patterns hands a function to an
:class:`Engine`, which applies it to the dataset in chunks of whole scan rows
and gathers what it returns. In-process (the default) the chunks run on a
thread pool with a bounded number in flight, so memory stays within a budget;
with a scheduler address the same chunks run on a dask.distributed cluster,
each worker reading its own rows. Per-position results never depend on the
chunking or the executor.

The function contract::

    def func(block, chunk, **kwargs):
        # block: float32 array (rows, sx, qy, qx), holding scan rows
        #        chunk.read_start:chunk.read_stop (the chunk plus its halo)
        # chunk: RowChunk telling which rows are the chunk's own
        # return: an array, or a tuple of arrays, whose first axis has one entry
        #         per own position (chunk.n_positions), in C order of the scan
        ...

``Engine.map`` concatenates those outputs over the scan; ``Engine.reduce``
combines them with a sum, maximum or minimum (the first axis is then free);
``Engine.transform`` builds a new Dataset4D from per-pattern outputs, lazily
when the input is lazy.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from stemnmf.errors import ConfigError, MemoryBudgetError, SchedulerError
from stemnmf.io.dataset import Dataset4D

__all__ = ["Engine", "RowChunk", "parse_bytes", "row_chunks"]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
_COMBINE = {"sum": np.add, "max": np.maximum, "min": np.minimum}


def parse_bytes(value: int | float | str | None, default: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Bytes from an int or a string such as ``'2GiB'``, ``'512 MB'``, ``'1e9'``.

    Raises
    ------
    ConfigError
        If the value cannot be read or is not positive.
    """
    if value is None:
        return default
    from dask.utils import parse_bytes as dask_parse_bytes

    try:
        nbytes = int(value) if isinstance(value, (int, float)) else int(dask_parse_bytes(str(value)))
    except (ValueError, TypeError, KeyError):
        raise ConfigError(
            f"cannot read the memory size {value!r}", "write it like 2GiB, 512MB or 1e9"
        ) from None
    if nbytes <= 0:
        raise ConfigError(f"memory size {value!r} is not positive", "give a size such as 2GiB")
    return nbytes


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


def _as_tuple(output) -> tuple:
    return output if isinstance(output, tuple) else (output,)


def _read_block(data, chunk: RowChunk) -> np.ndarray:
    """The rows of one chunk (with halo) as a NumPy array in the stored dtype."""
    block = data[chunk.read_start : chunk.read_stop]
    if not isinstance(block, np.ndarray):
        block = block.compute(scheduler="synchronous")
    return np.asarray(block)


def _apply(block, chunk: RowChunk, func: Callable, kwargs: dict, dtype) -> tuple:
    """Convert one block to ``dtype`` (NaN and Inf read as 0) and run ``func`` on it."""
    if dtype is not None:
        block = np.asarray(block).astype(dtype, copy=False)
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
    return _as_tuple(func(block, chunk, **kwargs))


def _run_chunk(data, chunk: RowChunk, func: Callable, kwargs: dict, dtype) -> tuple:
    return _apply(_read_block(data, chunk), chunk, func, kwargs, dtype)


class Engine:
    """Runs per-pattern functions over a Dataset4D in chunks of scan rows.

    Parameters
    ----------
    memory_budget : int or str, default '2GiB'
        Upper bound on the memory used by chunks in flight (all threads or,
        on a cluster, per worker).
    scheduler : str or distributed.Client, optional
        Address of a dask.distributed scheduler (``'tcp://host:8786'``) or a
        Client. None runs in this process.
    n_threads : int, optional
        Threads in-process; default the number of CPU cores.
    chunk_rows : int, optional
        Scan rows per chunk; default chosen from the budget and the scan size.
    progress : bool, optional
        Show a progress bar (patterns per second). None shows it on a terminal
        once a stage has run for more than two seconds.
    working_copies : float, default 4
        Float32 copies of a chunk a function may hold at once; used to size chunks.
    """

    def __init__(
        self,
        memory_budget: int | str | None = None,
        scheduler=None,
        n_threads: int | None = None,
        chunk_rows: int | None = None,
        progress: bool | None = None,
        working_copies: float = 4.0,
    ):
        self.memory_budget = parse_bytes(memory_budget)
        self.scheduler = scheduler
        self.n_threads = int(n_threads or os.cpu_count() or 1)
        if self.n_threads < 1:
            raise ConfigError(f"n_threads={n_threads} must be at least 1")
        if chunk_rows is not None and int(chunk_rows) < 1:
            raise ConfigError(f"chunk_rows={chunk_rows} must be at least 1")
        self.chunk_rows = None if chunk_rows is None else int(chunk_rows)
        self.progress = progress
        self.working_copies = float(working_copies)
        self._client = None

    def __repr__(self) -> str:
        where = self.scheduler if self.scheduler is not None else f"{self.n_threads} threads"
        return f"Engine(memory_budget={self.memory_budget}, on={where!s})"

    # -- sizing --------------------------------------------------------------------------
    @property
    def parallelism(self) -> int:
        """Chunks that may be in flight at once in this process."""
        return 1 if self.scheduler is not None else self.n_threads

    def rows_per_chunk(self, dataset: Dataset4D, halo: int = 0) -> int:
        """Scan rows per chunk that keep ``parallelism`` chunks within the budget."""
        sy, sx, qy, qx = dataset.shape
        row_bytes = sx * qy * qx * (dataset.dtype.itemsize + 4 * self.working_copies)
        fit = self.memory_budget // (self.parallelism * row_bytes) - 2 * halo
        if fit < 1:
            need = (1 + 2 * halo) * row_bytes * self.parallelism
            raise MemoryBudgetError(
                f"memory budget {_format_bytes(self.memory_budget)} is too small for one chunk "
                f"of {1 + 2 * halo} scan row(s) of {sx} x {qy} x {qx} patterns "
                f"({_format_bytes(need)} with {self.parallelism} in flight)",
                f"raise the budget to at least {_format_bytes(need)} or bin the patterns",
            )
        if self.chunk_rows is not None:
            return int(min(self.chunk_rows, fit))
        # enough chunks to keep every thread busy and the progress bar moving
        balanced = math.ceil(sy / (4 * self.parallelism))
        rows = int(min(fit, max(1, balanced)))
        storage = _storage_rows(dataset)
        if storage and storage <= fit and rows % storage:
            rows = max(storage, rows - rows % storage)
        return rows

    def chunks(self, dataset: Dataset4D, halo: int = 0) -> list[RowChunk]:
        """The chunks the engine would use for ``dataset``."""
        return row_chunks(dataset.scan_shape, self.rows_per_chunk(dataset, halo), halo)

    # -- execution -----------------------------------------------------------------------
    def _bar(self, dataset: Dataset4D, desc: str | None):
        disable = None if self.progress is None else not self.progress
        return tqdm(
            total=dataset.n_positions,
            unit="pattern",
            unit_scale=True,
            desc=desc or "patterns",
            delay=2.0,
            disable=disable,
            leave=False,
        )

    def _results(self, func, dataset, kwargs, halo, desc, dtype):
        """Yield (chunk, outputs) for every chunk, in completion order."""
        chunks = self.chunks(dataset, halo)
        kwargs = dict(kwargs or {})
        with self._bar(dataset, desc) as bar:
            if self.scheduler is None:
                yield from self._run_threads(func, dataset, chunks, kwargs, dtype, bar)
            else:
                yield from self._run_distributed(func, dataset, chunks, kwargs, dtype, bar)

    def _run_threads(self, func, dataset, chunks, kwargs, dtype, bar):
        if self.n_threads == 1 or len(chunks) == 1:
            for chunk in chunks:
                outputs = _run_chunk(dataset.data, chunk, func, kwargs, dtype)
                bar.update(chunk.n_positions)
                yield chunk, outputs
            return
        from threadpoolctl import threadpool_limits

        pending = collections.deque(chunks)
        # the chunks already use every core: BLAS threads inside them would oversubscribe
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(
            self.n_threads, thread_name_prefix="stemnmf"
        ) as pool:
            running = {}
            try:
                while pending or running:
                    while pending and len(running) < self.n_threads:
                        chunk = pending.popleft()
                        future = pool.submit(_run_chunk, dataset.data, chunk, func, kwargs, dtype)
                        running[future] = chunk
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        chunk = running.pop(future)
                        outputs = future.result()
                        bar.update(chunk.n_positions)
                        yield chunk, outputs
            finally:
                for future in running:
                    future.cancel()

    def _get_client(self):
        if self._client is not None:
            return self._client
        try:
            from distributed import Client
        except ImportError as err:  # pragma: no cover - distributed is a dependency
            raise SchedulerError("dask.distributed is not installed", "pip install distributed") from err
        if isinstance(self.scheduler, Client):
            self._client = self.scheduler
            return self._client
        try:
            self._client = Client(self.scheduler, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise SchedulerError(
                f"cannot reach the dask scheduler at {self.scheduler} ({err.__class__.__name__})",
                "start it with `dask scheduler` and check the address, or leave out --scheduler to run here",
            ) from None
        return self._client

    def _run_distributed(self, func, dataset, chunks, kwargs, dtype, bar):
        import dask
        from distributed import as_completed

        client = self._get_client()
        data = dataset.data
        tasks = [
            dask.delayed(_apply)(data[chunk.read_start : chunk.read_stop], chunk, func, kwargs, dtype)
            for chunk in chunks
        ]
        futures = client.compute(tasks)
        index = {future.key: chunk for future, chunk in zip(futures, chunks)}
        try:
            for future in as_completed(futures):
                chunk = index[future.key]
                try:
                    outputs = future.result()
                except Exception as err:
                    if isinstance(err, (MemoryError, OSError)) or "KilledWorker" in type(err).__name__:
                        raise SchedulerError(
                            f"the cluster failed on scan rows {chunk.start}-{chunk.stop} "
                            f"({type(err).__name__}: {err})",
                            "check the workers' memory and logs, then run again",
                        ) from err
                    raise
                bar.update(chunk.n_positions)
                yield chunk, outputs
        finally:
            for future in futures:
                future.release()

    # -- public entry points -------------------------------------------------------------
    def map(
        self,
        func: Callable,
        dataset: Dataset4D,
        *,
        kwargs: dict | None = None,
        halo: int = 0,
        desc: str | None = None,
        dtype=np.float32,
    ):
        """Apply ``func`` to every chunk and concatenate its per-position outputs.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            One array per output of ``func``, with first axis ``n_positions``
            in C order of the scan.
        """
        parts: dict[int, tuple] = {}
        for chunk, outputs in self._results(func, dataset, kwargs, halo, desc, dtype):
            for out in outputs:
                if np.shape(out)[:1] != (chunk.n_positions,):
                    raise ValueError(
                        f"{getattr(func, '__name__', func)} returned shape {np.shape(out)} for a chunk "
                        f"of {chunk.n_positions} positions; the first axis must be per position"
                    )
            parts[chunk.index] = outputs
        ordered = [parts[i] for i in sorted(parts)]
        result = tuple(np.concatenate([p[j] for p in ordered]) for j in range(len(ordered[0])))
        return result if len(result) > 1 else result[0]

    def reduce(
        self,
        func: Callable,
        dataset: Dataset4D,
        *,
        combine: str | Callable | Sequence[str | Callable] = "sum",
        kwargs: dict | None = None,
        halo: int = 0,
        desc: str | None = None,
        dtype=np.float32,
    ):
        """Apply ``func`` to every chunk and combine its outputs elementwise.

        Sums should be returned in float64 by ``func`` so that the result does
        not depend on the chunking beyond rounding.

        Parameters
        ----------
        combine : {'sum', 'max', 'min'} or callable, or one per output
            How two partial results are combined.
        """
        # Partials are combined in chunk order as soon as their predecessors are in, so the
        # result does not depend on which thread finished first, and only the partials
        # that arrived out of order are held.
        total: list | None = None
        ops: list = []
        waiting: dict[int, tuple] = {}
        next_index = 0
        for chunk, outputs in self._results(func, dataset, kwargs, halo, desc, dtype):
            waiting[chunk.index] = outputs
            while next_index in waiting:
                part = waiting.pop(next_index)
                next_index += 1
                if total is None:
                    ops = combine if isinstance(combine, (list, tuple)) else [combine] * len(part)
                    if len(ops) != len(part):
                        raise ValueError(f"{len(ops)} combine operations for {len(part)} outputs")
                    ops = [_COMBINE[op] if isinstance(op, str) else op for op in ops]
                    total = [np.array(p, copy=True) for p in part]
                else:
                    total = [op(t, p) for op, t, p in zip(ops, total, part)]
        return tuple(total) if len(total) > 1 else total[0]

    def transform(
        self,
        func: Callable,
        dataset: Dataset4D,
        *,
        pattern_shape: tuple[int, int] | None = None,
        out_dtype=np.float32,
        kwargs: dict | None = None,
        halo: int = 0,
        desc: str | None = None,
        **changes: Any,
    ) -> Dataset4D:
        """A new dataset whose patterns are ``func``'s per-position outputs.

        ``func`` returns an array (n_positions, *pattern_shape). A lazy input
        gives a lazy output (nothing is computed until read); an in-memory
        input is computed now. Other keyword arguments replace attributes of
        the new dataset (calibration, mask, origins).
        """
        sy, sx, qy, qx = dataset.shape
        pattern_shape = tuple(pattern_shape or (qy, qx))
        kwargs = dict(kwargs or {})
        if not dataset.is_lazy:
            out = np.empty((sy * sx, *pattern_shape), dtype=out_dtype)
            for chunk, outputs in self._results(func, dataset, kwargs, halo, desc, np.float32):
                out[chunk.positions] = outputs[0]
            return dataset.replace(data=out.reshape(sy, sx, *pattern_shape), **changes)

        import dask
        import dask.array as da

        pieces = []
        for chunk in self.chunks(dataset, halo):
            block = dataset.data[chunk.read_start : chunk.read_stop]
            task = dask.delayed(_transform_block)(block, chunk, func, kwargs, pattern_shape, out_dtype)
            shape = (chunk.stop - chunk.start, sx, *pattern_shape)
            pieces.append(da.from_delayed(task, shape=shape, dtype=out_dtype))
        return dataset.replace(data=da.concatenate(pieces, axis=0), **changes)


def _transform_block(block, chunk, func, kwargs, pattern_shape, out_dtype):
    out = _apply(block, chunk, func, kwargs, np.float32)[0]
    return np.asarray(out, dtype=out_dtype).reshape(chunk.stop - chunk.start, chunk.sx, *pattern_shape)


def _storage_rows(dataset: Dataset4D) -> int | None:
    """Rows per storage chunk of a lazy dataset, when regular."""
    chunks = getattr(dataset.data, "chunks", None)
    if not chunks or not isinstance(chunks[0], tuple) or len(chunks[0]) == 0:
        return None
    return int(chunks[0][0])


def _format_bytes(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # pragma: no cover
