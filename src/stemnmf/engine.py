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

``Engine.map`` concatenates those outputs over the scan (or writes them into
``out``, e.g. an HDF5 dataset); ``Engine.reduce`` combines them with a sum,
maximum or minimum (the first axis is then free); ``Engine.transform`` builds a
new Dataset4D from per-pattern outputs, lazily when the input is lazy.
``Engine.attach`` fuses passes: a function attached to a dataset runs on the
blocks of the engine's next pass over it, and a later ``map``/``reduce`` of the
same function and options returns the stored result without reading again.

Lazy datasets are read through their row reader (``Dataset4D.reader``: rows
mapped from the file or read with ``preadv`` into a buffer each thread reuses,
see docs/scale.md), or through dask when they have none.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import pickle
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from stemnmf.errors import ConfigError, MemoryBudgetError, SchedulerError
from stemnmf.io.dataset import Dataset4D

__all__ = ["Attached", "Engine", "RowChunk", "Shipped", "TransformedRows", "aligned", "parse_bytes", "row_chunks"]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
_COMBINE = {"sum": np.add, "max": np.maximum, "min": np.minimum}


#: Seconds to wait for a dask scheduler to answer when connecting.
CONNECT_DEADLINE = 30.0


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


def _read_block(data, chunk: RowChunk, reader=None, out=None) -> np.ndarray:
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


def _finite(block: np.ndarray) -> bool:
    """True when a float block holds no NaN or Inf (one read: NaN and Inf times 0 are NaN)."""
    flat = block.reshape(-1, block.shape[-1]) if block.ndim > 1 else block.reshape(1, -1)
    if flat.size == 0:
        return True
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isfinite(flat @ np.zeros(flat.shape[1], dtype=flat.dtype)).all())


def _convert(block, dtype, out=None, finite: bool = True) -> np.ndarray:
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


def _apply(block, chunk: RowChunk, func: Callable, kwargs: dict, dtype) -> tuple:
    """Convert one block to ``dtype`` (NaN and Inf read as 0) and run ``func`` on it."""
    return _as_tuple(func(_convert(block, dtype), chunk, **kwargs))


@dataclasses.dataclass(frozen=True)
class _Job:
    """A function run on every chunk of a pass: ``func(block, chunk, **kwargs)`` on ``dtype`` blocks.

    With ``finite`` False the block keeps NaN and Inf (the function reads them as 0 itself).
    """

    func: Callable
    kwargs: dict
    dtype: Any
    finite: bool = True


def _run_jobs(block, chunk: RowChunk, jobs: Sequence[_Job], scratch: dict | None = None) -> list[tuple]:
    """Outputs of every job on one block (each dtype converted once, in a reusable buffer when given)."""
    converted: dict = {}
    outputs = []
    for job in jobs:
        dtype = None if job.dtype is None else np.dtype(job.dtype)
        key = (dtype, job.finite)
        if key not in converted:
            buffer = None
            if scratch is not None and dtype is not None and block.dtype != dtype:
                buffer = _scratch(scratch, ("convert", *key), block.shape, dtype)
            converted[key] = _convert(block, dtype, buffer, job.finite)
        outputs.append(_as_tuple(job.func(converted[key], chunk, **job.kwargs)))
    return outputs


def _scratch(scratch: dict, name, shape, dtype) -> np.ndarray:
    """A buffer of ``shape`` and ``dtype`` from ``scratch`` (grown as needed, reused by later chunks)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = scratch.get(name)
    if raw is None or raw.nbytes < nbytes:
        raw = scratch[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
    return raw[:nbytes].view(dtype).reshape(shape)


def _detach(outputs: list[tuple], scratch: dict | None, mapped=None) -> list[tuple]:
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


def _run_chunk(data, chunk: RowChunk, func: Callable, kwargs: dict, dtype, reader=None) -> tuple:
    return _apply(_read_block(data, chunk, reader), chunk, func, kwargs, dtype)


def _chunk_task(data, reader, chunk: RowChunk, jobs: Sequence[_Job], scratch: dict | None = None) -> list[tuple]:
    """Read one chunk and run every job on it (in a thread here, or on a dask worker)."""
    mapped = _map_block(reader, chunk)
    if mapped is not None:  # straight from the page cache, no copy
        return _detach(_run_jobs(mapped, chunk, jobs, scratch), scratch, mapped)
    out = None
    if reader is not None and scratch is not None and getattr(reader, "fills_buffer", False):
        sy, sx = data.shape[:2]
        rows = chunk.read_stop - chunk.read_start
        out = _scratch(scratch, "block", (rows, sx, *data.shape[2:]), data.dtype)
    block = _read_block(data, chunk, reader, out)
    return _detach(_run_jobs(block, chunk, jobs, scratch), scratch)


def _map_block(reader, chunk: RowChunk):
    """The chunk's rows mapped from the file when the reader can (see ``RowReader.map``), else None."""
    mapper = getattr(reader, "map", None)
    return None if mapper is None else mapper(chunk.read_start, chunk.read_stop)


def aligned(a):
    """``a`` itself, or a copy aligned for its dtype when it is a misaligned NumPy array.

    Arrays that arrive over a network (dask frames) may start at any byte. NumPy
    then bypasses BLAS for products and reductions run through buffers, so the
    rounding differs from the same call on an aligned array: every array a remote
    task computes with, and every array it returns, goes through here.
    """
    if isinstance(a, np.ndarray) and not a.flags.aligned:
        return np.array(a, copy=True)
    if isinstance(a, tuple):
        return tuple(aligned(x) for x in a)
    if isinstance(a, list):
        return [aligned(x) for x in a]
    return a


class Shipped:
    """An object sent to dask workers whose NumPy arrays arrive aligned.

    Pickled (by cloudpickle, protocol 4) into one byte string, so unpickling on
    the worker allocates every array afresh instead of viewing a network frame;
    there the object unpickles to ``obj`` itself.
    """

    def __init__(self, obj):
        self.obj = obj

    def __reduce__(self):
        import cloudpickle

        return pickle.loads, (cloudpickle.dumps(self.obj, protocol=4),)


def _remote_chunk(reader, chunk: RowChunk, jobs: Sequence[_Job]) -> list[tuple]:
    """A chunk read and processed on a dask worker, with single-threaded BLAS (as in-process)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        mapped = _map_block(reader, chunk)
        if mapped is not None:
            return _detach(_run_jobs(mapped, chunk, jobs), None, mapped)
        block = aligned(np.asarray(reader(chunk.read_start, chunk.read_stop)))
        return _run_jobs(block, chunk, jobs)


def _remote_block(block, chunk: RowChunk, jobs: Sequence[_Job]) -> list[tuple]:
    """A chunk of a dataset without a reader (its rows come through dask), processed on a worker."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _run_jobs(aligned(np.asarray(block)), chunk, jobs)


class _Accumulator:
    """Gathers one job's per-chunk outputs: concatenated (``map``) or combined in chunk order (``reduce``)."""

    def __init__(self, mode: str, combine=None, name: str = "function"):
        self.mode = mode
        self.combine = combine
        self.name = name
        self.parts: dict[int, tuple] = {}
        self.total: list | None = None
        self.ops: list = []
        self.next_index = 0

    def add(self, chunk: RowChunk, outputs: tuple) -> None:
        if self.mode == "map":
            for out in outputs:
                if np.shape(out)[:1] != (chunk.n_positions,):
                    raise ValueError(
                        f"{self.name} returned shape {np.shape(out)} for a chunk "
                        f"of {chunk.n_positions} positions; the first axis must be per position"
                    )
            self.parts[chunk.index] = outputs
            return
        # partials are combined in chunk order as soon as their predecessors are in, so the result
        # does not depend on which thread finished first; only out-of-order partials are held
        self.parts[chunk.index] = outputs
        while self.next_index in self.parts:
            part = self.parts.pop(self.next_index)
            self.next_index += 1
            if self.total is None:
                combine = self.combine
                ops = combine if isinstance(combine, (list, tuple)) else [combine] * len(part)
                if len(ops) != len(part):
                    raise ValueError(f"{len(ops)} combine operations for {len(part)} outputs")
                self.ops = [_COMBINE[op] if isinstance(op, str) else op for op in ops]
                self.total = [np.array(p, copy=True) for p in part]
            else:
                self.total = [_combine_into(op, t, p) for op, t, p in zip(self.ops, self.total, part)]

    def result(self):
        if self.mode == "map":
            ordered = [self.parts[i] for i in sorted(self.parts)]
            result = tuple(np.concatenate([p[j] for p in ordered]) for j in range(len(ordered[0])))
        else:
            result = tuple(self.total)
        return result if len(result) > 1 else result[0]


def _combine_into(op, total, part):
    """``op(total, part)``, in place for the built-in combinations (the total is the accumulator's own copy)."""
    if op in (np.add, np.maximum, np.minimum) and isinstance(total, np.ndarray) and total.shape == np.shape(part) \
            and np.result_type(total, part) == total.dtype:
        return op(total, part, out=total)
    return op(total, part)


@dataclasses.dataclass
class Attached:
    """A pass over a dataset riding along with the engine's next pass over the same data.

    Returned by :meth:`Engine.attach`. After that pass, :meth:`Engine.map` or
    :meth:`Engine.reduce` called with the same function, dataset and keyword
    arguments return the stored result without reading the data again;
    :meth:`result` returns it too (running the pass itself if none came).
    """

    engine: Any
    dataset: Dataset4D
    mode: str
    job: _Job
    combine: Any
    desc: str | None
    key: str
    value: Any = None
    done: bool = False

    def result(self):
        """The job's output (as :meth:`Engine.map` or :meth:`Engine.reduce` would return it)."""
        if not self.done:
            if self.mode == "map":
                return self.engine.map(self.job.func, self.dataset, kwargs=self.job.kwargs, desc=self.desc,
                                       dtype=self.job.dtype)
            return self.engine.reduce(self.job.func, self.dataset, combine=self.combine, kwargs=self.job.kwargs,
                                      desc=self.desc, dtype=self.job.dtype)
        self.engine._attached.pop(self.key, None)
        return self.value


def _job_key(mode: str, func, dataset: Dataset4D, kwargs: dict, combine, dtype) -> str:
    """What identifies a pass: the function, the data object, the options (by content)."""
    from dask.base import tokenize

    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"
    combine_names = [getattr(c, "__name__", str(c)) for c in (combine if isinstance(combine, (list, tuple)) else [combine])]
    return tokenize(mode, name, id(dataset.data), kwargs, combine_names, str(dtype))


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
        Threads in-process; default the number of CPU cores. Chunks are sized
        for this many in flight, in-process and on a cluster alike.
    chunk_rows : int, optional
        Scan rows per chunk; default chosen from the budget and the scan size.
    progress : bool, optional
        Show a progress bar (patterns per second). None shows it on a terminal
        once a stage has run for more than two seconds.
    working_copies : float, default 4
        Float32 copies of a chunk a function may hold at once; used to size chunks.
    chunk_share : float, default 1
        Fraction of ``memory_budget`` the chunks in flight may use; the rest
        is left to what the caller holds beside them (a run gives half to its
        per-position arrays: features, NMF factors, maps).
    """

    def __init__(
        self,
        memory_budget: int | str | None = None,
        scheduler=None,
        n_threads: int | None = None,
        chunk_rows: int | None = None,
        progress: bool | None = None,
        working_copies: float = 4.0,
        chunk_share: float = 1.0,
    ):
        self.memory_budget = parse_bytes(memory_budget)
        if not 0 < float(chunk_share) <= 1:
            raise ConfigError(f"chunk_share={chunk_share} must be in (0, 1]")
        self.chunk_share = float(chunk_share)
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
        self._attached: dict[str, Attached] = {}

    def __repr__(self) -> str:
        where = self.scheduler if self.scheduler is not None else f"{self.n_threads} threads"
        return f"Engine(memory_budget={self.memory_budget}, on={where!s})"

    # -- sizing --------------------------------------------------------------------------
    @property
    def parallelism(self) -> int:
        """Chunks sized to be in flight at once in this process, or in one worker of a cluster.

        On a cluster this is the larger of ``n_threads`` and the most threads
        of a worker, so that chunks are the same as in-process (and reductions
        round the same way) whenever the workers have at most ``n_threads``
        threads each.
        """
        if self.scheduler is None:
            return self.n_threads
        return max(self.n_threads, self._cluster_threads()[0])

    def _cluster_threads(self) -> tuple[int, int]:
        """(most threads of one worker, threads of all workers) of the cluster."""
        nthreads = dict(self._get_client().nthreads())
        if not nthreads:
            return 1, 1
        return max(1, max(nthreads.values())), max(1, sum(nthreads.values()))

    def rows_per_chunk(self, dataset: Dataset4D, halo: int = 0) -> int:
        """Scan rows per chunk that keep ``parallelism`` chunks within the budget."""
        sy, sx, qy, qx = dataset.shape
        row_bytes = sx * qy * qx * (dataset.dtype.itemsize + 4 * self.working_copies)
        fit = int(self.memory_budget * self.chunk_share) // (self.parallelism * row_bytes) - 2 * halo
        if fit < 1:
            need = (1 + 2 * halo) * row_bytes * self.parallelism
            share = "" if self.chunk_share == 1 else f"; {self.chunk_share:.0%} of the budget is for chunks"
            raise MemoryBudgetError(
                f"memory budget {_format_bytes(self.memory_budget)} is too small for one chunk "
                f"of {1 + 2 * halo} scan row(s) of {sx} x {qy} x {qx} patterns "
                f"({_format_bytes(need)} with {self.parallelism} in flight{share})",
                f"raise the budget to at least {_format_bytes(math.ceil(need / self.chunk_share))} or bin the patterns",
            )
        if self.chunk_rows is not None:
            return int(min(self.chunk_rows, fit))
        # enough chunks to keep every thread busy and the progress bar moving (the same count here
        # and on a cluster, so that results are the same)
        balanced = math.ceil(sy / (4 * self.n_threads))
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

    def _results(self, func, dataset, kwargs, halo, desc, dtype, riders=(), finite=True):
        """Yield (chunk, outputs, rider outputs) for every chunk, in completion order.

        ``riders`` are (Attached) jobs run on the same blocks.
        """
        chunks = self.chunks(dataset, halo)
        jobs = [_Job(func, dict(kwargs or {}), dtype, finite)] + [r.job for r in riders]
        with self._bar(dataset, desc) as bar:
            if self.scheduler is None:
                results = self._run_threads(dataset, chunks, jobs, bar)
            else:
                results = self._run_distributed(dataset, chunks, jobs, bar)
            for chunk, outputs in results:
                yield chunk, outputs[0], outputs[1:]

    def _run_threads(self, dataset, chunks, jobs, bar):
        data, reader = dataset.data, dataset.reader
        if self.n_threads == 1 or len(chunks) == 1:
            scratch: dict = {}
            for chunk in chunks:
                outputs = _chunk_task(data, reader, chunk, jobs, scratch)
                bar.update(chunk.n_positions)
                yield chunk, outputs
            return
        import queue

        from threadpoolctl import threadpool_limits

        pending = collections.deque(chunks)
        free: queue.SimpleQueue = queue.SimpleQueue()  # one scratch dict per chunk in flight, reused

        def task(chunk):
            try:
                scratch = free.get_nowait()
            except queue.Empty:
                scratch = {}
            try:
                return _chunk_task(data, reader, chunk, jobs, scratch)
            finally:
                free.put(scratch)

        # the chunks already use every core: BLAS threads inside them would oversubscribe
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(
            self.n_threads, thread_name_prefix="stemnmf"
        ) as pool:
            running = {}
            try:
                while pending or running:
                    while pending and len(running) < self.n_threads:
                        chunk = pending.popleft()
                        running[pool.submit(task, chunk)] = chunk
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
        _check_reachable(str(self.scheduler))
        # connect in a thread with an overall deadline: something that accepts the connection
        # but is not a dask scheduler never answers the handshake
        outcome: dict = {}

        def connect():
            try:
                outcome["client"] = Client(self.scheduler, timeout="10s", set_as_default=False)
            except BaseException as err:  # noqa: BLE001 - every failure becomes one SchedulerError below
                outcome["error"] = err

        thread = threading.Thread(target=connect, name="stemnmf-connect", daemon=True)
        thread.start()
        thread.join(CONNECT_DEADLINE)
        fix = "start it with `dask scheduler` and check the address, or leave out --scheduler to run here"
        if thread.is_alive():
            raise SchedulerError(
                f"no dask scheduler answered at {self.scheduler} within {CONNECT_DEADLINE:g} s "
                "(something listens there, but not a dask scheduler?)",
                fix,
            )
        if "error" in outcome:
            err = outcome["error"]
            raise SchedulerError(f"cannot connect to the dask scheduler at {self.scheduler} ({err.__class__.__name__})", fix)
        self._client = outcome["client"]
        return self._client

    @property
    def client(self):
        """The dask.distributed Client (None in-process); connects on first use."""
        return None if self.scheduler is None else self._get_client()

    def close(self) -> None:
        """Close the Client this engine opened from an address (a Client it was given stays open)."""
        client, self._client = self._client, None
        if client is not None and not (self.scheduler is client):
            client.close()

    def _run_distributed(self, dataset, chunks, jobs, bar):
        import dask

        client = self._get_client()
        reader = dataset.reader
        # the functions and their options (templates, weights) travel once, not with every chunk;
        # every worker holds a copy, so the pass survives the loss of a worker
        [shared_jobs] = client.scatter([Shipped(list(jobs))], hash=False, broadcast=True)
        if reader is not None:
            futures = [
                client.submit(_remote_chunk, reader, chunk, shared_jobs, pure=False) for chunk in chunks
            ]
        else:
            data = dataset.data
            tasks = [dask.delayed(_remote_block)(data[chunk.read_start : chunk.read_stop], chunk, shared_jobs)
                     for chunk in chunks]
            futures = client.compute(tasks)
        index = {future.key: chunk for future, chunk in zip(futures, chunks)}
        try:
            yield from self._collect(futures, index, bar)
        finally:
            for future in futures:
                future.release()
            shared_jobs.release()

    def _collect(self, futures, index, bar):
        from distributed import as_completed

        for future in as_completed(futures, loop=self._get_client().loop):
            chunk = index[future.key]
            try:
                outputs = [aligned(out) for out in future.result()]
            except Exception as err:
                raise _cluster_error(err, f"scan rows {chunk.start}-{chunk.stop}") from err
            bar.update(chunk.n_positions)
            yield chunk, outputs

    # -- passes that ride along ----------------------------------------------------------
    def attach(
        self,
        func: Callable,
        dataset: Dataset4D,
        *,
        mode: str = "reduce",
        combine: str | Callable | Sequence[str | Callable] = "sum",
        kwargs: dict | None = None,
        desc: str | None = None,
        dtype=np.float32,
    ) -> Attached:
        """Run ``func`` with the next pass this engine makes over ``dataset`` (fusing two passes into one).

        The next :meth:`map`, :meth:`reduce` or in-memory :meth:`transform`
        over the same data object (all its rows) also applies ``func`` to
        every block it reads. Afterwards :meth:`map` (``mode='map'``) or
        :meth:`reduce` (``mode='reduce'``) called with the same function,
        dataset and keyword arguments returns the stored result without
        reading the data again, as does the returned handle's ``result()``.
        Results are the same as those of a pass of its own.

        Returns
        -------
        Attached
        """
        if mode not in ("map", "reduce"):
            raise ValueError(f"mode={mode!r} must be 'map' or 'reduce'")
        kwargs = dict(kwargs or {})
        key = _job_key(mode, func, dataset, kwargs, combine if mode == "reduce" else None, dtype)
        if key in self._attached:  # attached already (and perhaps done): the same job
            return self._attached[key]
        handle = Attached(self, dataset, mode, _Job(func, kwargs, dtype), combine, desc, key)
        self._attached[key] = handle
        return handle

    def _riders(self, dataset: Dataset4D) -> list[Attached]:
        return [a for a in self._attached.values() if not a.done and a.dataset.data is dataset.data]

    def _stored(self, mode, func, dataset, kwargs, combine, dtype):
        """The result of an attached job that matches this call, or None (and forgets a pending match)."""
        if not self._attached:
            return None
        key = _job_key(mode, func, dataset, dict(kwargs or {}), combine if mode == "reduce" else None, dtype)
        handle = self._attached.get(key)
        if handle is None:
            return None
        if not handle.done:  # asked for before any pass carried it: this call is its pass
            del self._attached[key]
            return None
        del self._attached[key]
        log.debug("%s: result of an earlier fused pass", getattr(func, "__name__", func))
        return handle

    def _pass(self, func, dataset, kwargs, halo, desc, dtype, finite=True):
        """Yield (chunk, outputs) for every chunk, feeding the attached jobs that ride along."""
        riders = self._riders(dataset)
        sinks = [_Accumulator(r.mode, r.combine, getattr(r.job.func, "__name__", "function")) for r in riders]
        for chunk, outputs, extra in self._results(func, dataset, kwargs, halo, desc, dtype, riders, finite):
            for sink, out in zip(sinks, extra):
                sink.add(chunk, out)
            yield chunk, outputs
        for rider, sink in zip(riders, sinks):
            rider.value, rider.done = sink.result(), True

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
        out=None,
        finite: bool = True,
    ):
        """Apply ``func`` to every chunk and concatenate its per-position outputs.

        Parameters
        ----------
        out : array-like or tuple of array-likes, optional
            Write each output into it at the chunk's positions as the chunk
            completes (e.g. an HDF5 dataset of shape (n_positions, ...)),
            instead of gathering the outputs in memory; ``out`` is returned.
        finite : bool, default True
            Read NaN and Inf as 0 before ``func`` sees a block (a pass over
            the block). False hands ``func`` the values as stored, for a
            function that reads them as 0 itself where they matter.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            One array per output of ``func``, with first axis ``n_positions``
            in C order of the scan.
        """
        if out is None:
            stored = self._stored("map", func, dataset, kwargs, None, dtype) if not halo else None
            if stored is not None:
                return stored.value
        sink = _Accumulator("map", name=str(getattr(func, "__name__", func)))
        targets = None if out is None else (out if isinstance(out, tuple) else (out,))
        for chunk, outputs in self._pass(func, dataset, kwargs, halo, desc, dtype, finite):
            if targets is None:
                sink.add(chunk, outputs)
                continue
            if len(outputs) != len(targets):
                raise ValueError(f"{len(outputs)} outputs for {len(targets)} arrays in out")
            for target, value in zip(targets, outputs):
                if np.shape(value)[:1] != (chunk.n_positions,):
                    raise ValueError(
                        f"{getattr(func, '__name__', func)} returned shape {np.shape(value)} for a chunk "
                        f"of {chunk.n_positions} positions; the first axis must be per position"
                    )
                target[chunk.positions.start : chunk.positions.stop] = value
        return out if targets is not None else sink.result()

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
        finite: bool = True,
    ):
        """Apply ``func`` to every chunk and combine its outputs elementwise.

        Sums should be returned in float64 by ``func`` so that the result does
        not depend on the chunking beyond rounding.

        Parameters
        ----------
        combine : {'sum', 'max', 'min'} or callable, or one per output
            How two partial results are combined.
        finite : bool, default True
            As in :meth:`map`.
        """
        stored = self._stored("reduce", func, dataset, kwargs, combine, dtype) if not halo else None
        if stored is not None:
            return stored.value
        # partials are combined in chunk order as soon as their predecessors are in (bounded
        # memory, and the result does not depend on which thread finished first)
        sink = _Accumulator("reduce", combine)
        for chunk, outputs in self._pass(func, dataset, kwargs, halo, desc, dtype, finite):
            sink.add(chunk, outputs)
        return sink.result()

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
        the new dataset (calibration, mask, origins). A lazy input with a
        row reader gives an output with one too (the rows are read and
        transformed on demand, by whichever process reads them).
        """
        sy, sx, qy, qx = dataset.shape
        pattern_shape = tuple(pattern_shape or (qy, qx))
        kwargs = dict(kwargs or {})
        if not dataset.is_lazy:
            out = np.empty((sy * sx, *pattern_shape), dtype=out_dtype)
            for chunk, outputs in self._pass(func, dataset, kwargs, halo, desc, np.float32):
                out[chunk.positions] = outputs[0]
            return dataset.replace(data=out.reshape(sy, sx, *pattern_shape), **changes)

        import dask
        import dask.array as da

        reader = None
        if dataset.reader is not None:
            reader = TransformedRows(dataset.reader, dataset.shape, func, kwargs, pattern_shape, out_dtype, halo)
        pieces = []
        for chunk in self.chunks(dataset, halo):
            shape = (chunk.stop - chunk.start, sx, *pattern_shape)
            if reader is not None:
                task = dask.delayed(reader)(chunk.start, chunk.stop)
            else:
                block = dataset.data[chunk.read_start : chunk.read_stop]
                task = dask.delayed(_transform_block)(block, chunk, func, kwargs, pattern_shape, out_dtype)
            pieces.append(da.from_delayed(task, shape=shape, dtype=out_dtype))
        return dataset.replace(data=da.concatenate(pieces, axis=0), reader=reader, **changes)


class TransformedRows:
    """Row reader of a transformed dataset: reads the input rows (with halo) and applies the function.

    Picklable when the function and its options are (the engine contract), so
    it runs on dask.distributed workers; per-position results do not depend on
    which rows are asked for together.
    """

    fills_buffer = False  # the function makes its own output array

    def __init__(self, reader, shape, func, kwargs, pattern_shape, out_dtype, halo=0):
        self.reader = reader
        self.input_shape = tuple(int(n) for n in shape)
        self.func = func
        self.kwargs = dict(kwargs)
        self.pattern_shape = tuple(int(n) for n in pattern_shape)
        self.dtype = np.dtype(out_dtype)
        self.halo = int(halo)

    def __call__(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        sy, sx = self.input_shape[:2]
        start, stop = max(0, int(start)), min(sy, int(stop))
        chunk = RowChunk(0, start, stop, max(0, start - self.halo), min(sy, stop + self.halo), sx)
        block = np.asarray(self.reader(chunk.read_start, chunk.read_stop))
        result = _transform_block(block, chunk, self.func, self.kwargs, self.pattern_shape, self.dtype)
        if out is not None:
            out[...] = result
            return out
        return result

    def __repr__(self) -> str:
        return f"TransformedRows({getattr(self.func, '__name__', self.func)} of {self.reader!r})"


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast (SchedulerError) when nothing listens at a tcp:// scheduler address."""
    import socket
    from urllib.parse import urlsplit

    if "://" in address and not address.startswith("tcp://"):
        return  # tls://, inproc://, ...: left to distributed
    try:
        parts = urlsplit(address if "://" in address else "tcp://" + address)
        host, port = parts.hostname, parts.port or 8786
    except ValueError:
        host = None
    if not host:
        raise SchedulerError(f"cannot read the scheduler address {address!r}", "give it as tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise SchedulerError(
            f"cannot reach the dask scheduler at {address} ({err.strerror or type(err).__name__})",
            "start it with `dask scheduler` and check the address, or leave out --scheduler to run here",
        ) from None


def _first_line(err: Exception, limit: int = 160) -> str:
    """The first line of an error's message, shortened at a word boundary."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def _cluster_error(err: Exception, where: str) -> Exception:
    """A failure on the cluster as a one-line SchedulerError, or the error itself (a user error)."""
    from stemnmf.errors import StemNMFError

    if isinstance(err, StemNMFError):
        return err
    name = type(err).__name__
    lost = isinstance(err, (MemoryError, OSError)) or name in ("KilledWorker", "CancelledError", "FutureCancelledError") \
        or "lost" in str(err).lower()
    if lost:
        return SchedulerError(
            f"the cluster failed on {where} ({name}: {_first_line(err)})",
            "check the workers' memory and logs, then run again",
        )
    return err


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
