"""The Engine: sizes chunks for a memory budget, runs jobs over them here or on a cluster, fuses passes."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from tqdm.auto import tqdm

from stemnmf.engine.chunks import RowChunk, format_bytes, parse_bytes, row_chunks, storage_rows
from stemnmf.engine.jobs import Accumulator, Job, transform_block
from stemnmf.engine.local import run_in_threads
from stemnmf.engine.memory import bound_heap
from stemnmf.engine.transformed import TransformedRows
from stemnmf.errors import ConfigError, MemoryBudgetError

if TYPE_CHECKING:  # the engine is the ground floor: datasets are only read through their attributes
    from stemnmf.io.dataset import Dataset4D

__all__ = ["Attached", "Engine"]

log = logging.getLogger(__name__)


def _modes(mode: str, combine) -> Any:
    """The output modes of a ``map`` (``'map'``) or ``reduce`` (its ``combine``) pass."""
    if mode not in ("map", "reduce"):
        raise ValueError(f"mode={mode!r} must be 'map' or 'reduce'")
    return "map" if mode == "map" else combine


def _job_key(func, dataset, kwargs: dict, modes, dtype) -> str:
    """What identifies a pass: the function, the data object, the options (by content), the output modes."""
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"
    mode_names = [getattr(m, "__name__", str(m)) for m in (modes if isinstance(modes, (list, tuple)) else [modes])]
    return tokenize(name, id(dataset.data), kwargs, mode_names, str(dtype))


@dataclasses.dataclass
class Attached:
    """A pass over a dataset riding along with the engine's next pass over the same data.

    Returned by :meth:`Engine.attach`. After that pass, :meth:`Engine.apply`
    (or :meth:`Engine.map` / :meth:`Engine.reduce`) called with the same
    function, dataset, keyword arguments and output modes returns the stored
    result without reading the data again; :meth:`result` returns it too
    (running the pass itself if none came).
    """

    engine: Any
    dataset: Dataset4D
    job: Job
    desc: str | None
    key: str
    value: Any = None
    done: bool = False

    def result(self):
        """The job's outputs (as :meth:`Engine.apply` would return them)."""
        if not self.done:
            return self.engine.apply(self.job.func, self.dataset, outputs=self.job.modes, kwargs=self.job.kwargs,
                                     desc=self.desc, dtype=self.job.dtype)
        self.engine.forget(self.key)
        return self.value


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
        bound_heap()  # freed arrays go back to the system, so the budget bounds the resident memory

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
        return max(self.n_threads, self._cluster().cluster_threads(self._get_client())[0])

    def rows_per_chunk(self, dataset: Dataset4D, halo: int = 0) -> int:
        """Scan rows per chunk that keep ``parallelism`` chunks within the budget."""
        sy, sx, qy, qx = dataset.shape
        row_bytes = sx * qy * qx * (dataset.dtype.itemsize + 4 * self.working_copies)
        fit = int(self.memory_budget * self.chunk_share) // (self.parallelism * row_bytes) - 2 * halo
        if fit < 1:
            need = (1 + 2 * halo) * row_bytes * self.parallelism
            share = "" if self.chunk_share == 1 else f"; {self.chunk_share:.0%} of the budget is for chunks"
            raise MemoryBudgetError(
                f"memory budget {format_bytes(self.memory_budget)} is too small for one chunk "
                f"of {1 + 2 * halo} scan row(s) of {sx} x {qy} x {qx} patterns "
                f"({format_bytes(need)} with {self.parallelism} in flight{share})",
                f"raise the budget to at least {format_bytes(math.ceil(need / self.chunk_share))} or bin the patterns",
            )
        if self.chunk_rows is not None:
            return int(min(self.chunk_rows, fit))
        # enough chunks to keep every thread busy and the progress bar moving (the same count here
        # and on a cluster, so that results are the same)
        balanced = math.ceil(sy / (4 * self.n_threads))
        rows = int(min(fit, max(1, balanced)))
        storage = storage_rows(dataset.data)
        if storage and storage <= fit and rows % storage:
            rows = max(storage, rows - rows % storage)
        return rows

    def chunks(self, dataset: Dataset4D, halo: int = 0) -> list[RowChunk]:
        """The chunks the engine would use for ``dataset``."""
        return row_chunks(dataset.scan_shape, self.rows_per_chunk(dataset, halo), halo)

    # -- where chunks run ----------------------------------------------------------------
    @staticmethod
    def _cluster():
        from stemnmf.engine import cluster  # dask.distributed takes ~1.5 s to import: only for a cluster run

        return cluster

    def _get_client(self):
        if self._client is None:
            self._client = self._cluster().connect(self.scheduler)
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

    def _bar(self, dataset: Dataset4D, desc: str | None):
        disable = None if self.progress is None else not self.progress
        return tqdm(total=dataset.n_positions, unit="pattern", unit_scale=True, desc=desc or "patterns", delay=2.0,
                    disable=disable, leave=False)

    def _pass(self, job: Job, dataset: Dataset4D, halo: int, desc: str | None):
        """Yield (chunk, outputs) of ``job`` for every chunk, in completion order, feeding the attached
        jobs that ride along on the same blocks."""
        riders = self._riders(dataset)
        sinks = [Accumulator(r.job.modes, r.job.name) for r in riders]
        chunks = self.chunks(dataset, halo)
        jobs = [job] + [r.job for r in riders]
        with self._bar(dataset, desc) as bar:
            if self.scheduler is None:
                results = run_in_threads(dataset, chunks, jobs, bar, self.n_threads)
            else:
                results = self._cluster().run_on_cluster(self._get_client(), dataset, chunks, jobs, bar)
            for chunk, outputs in results:
                for sink, out in zip(sinks, outputs[1:]):
                    sink.add(chunk, out)
                yield chunk, outputs[0]
        for rider, sink in zip(riders, sinks):
            rider.value, rider.done = sink.result(), True

    # -- passes that ride along ----------------------------------------------------------
    def _riders(self, dataset: Dataset4D) -> list[Attached]:
        """The attached jobs that ride along with the next pass over ``dataset``'s data."""
        return [a for a in self._attached.values() if not a.done and a.dataset.data is dataset.data]

    def attach(
        self,
        func: Callable,
        dataset: Dataset4D,
        *,
        mode: str = "reduce",
        combine: str | Callable | Sequence[str | Callable] = "sum",
        outputs=None,
        kwargs: dict | None = None,
        desc: str | None = None,
        dtype=np.float32,
    ) -> Attached:
        """Run ``func`` with the next pass this engine makes over ``dataset`` (fusing two passes into one).

        The next :meth:`apply`, :meth:`map`, :meth:`reduce` or in-memory
        :meth:`transform` over the same data object (all its rows) also applies
        ``func`` to every block it reads. Afterwards the same call with the
        same function, dataset, keyword arguments and output modes returns the
        stored result without reading the data again, as does the returned
        handle's ``result()``. Results are the same as those of a pass of its own.

        Parameters
        ----------
        mode, combine
            ``mode='map'``, or ``mode='reduce'`` with ``combine``, as in :meth:`map` / :meth:`reduce`.
        outputs : optional
            Output modes as in :meth:`apply` (overrides ``mode`` and ``combine``).

        Returns
        -------
        Attached
        """
        modes = outputs if outputs is not None else _modes(mode, combine)
        kwargs = dict(kwargs or {})
        key = _job_key(func, dataset, kwargs, modes, dtype)
        if key in self._attached:  # attached already (and perhaps done): the same job
            return self._attached[key]
        handle = Attached(self, dataset, Job(func, kwargs, dtype, modes=modes), desc, key)
        self._attached[key] = handle
        return handle

    def forget(self, key: str) -> None:
        """Drop the attached job of ``key`` (its result has been taken)."""
        self._attached.pop(key, None)

    def _stored(self, func, dataset, kwargs, modes, dtype):
        """The attached handle that matches this call once its pass is done, or None (forgetting a pending match)."""
        if not self._attached:
            return None
        key = _job_key(func, dataset, dict(kwargs or {}), modes, dtype)
        handle = self._attached.pop(key, None)
        if handle is None or not handle.done:  # asked for before any pass carried it: this call is its pass
            return None
        log.debug("%s: result of an earlier fused pass", getattr(func, "__name__", func))
        return handle

    # -- public entry points -------------------------------------------------------------
    def apply(
        self,
        func: Callable,
        dataset: Dataset4D,
        *,
        outputs="map",
        kwargs: dict | None = None,
        halo: int = 0,
        desc: str | None = None,
        dtype=np.float32,
        finite: bool = True,
    ):
        """Apply ``func`` to every chunk; each of its outputs is per position or reduced, as declared.

        Parameters
        ----------
        func : callable
            ``func(block, chunk, **kwargs)`` returning an array or a tuple of
            arrays (:mod:`stemnmf.engine.jobs`).
        outputs : str, callable or sequence of them, default 'map'
            One per output, or one for all: ``'map'`` concatenates the
            per-position outputs over the scan (first axis ``n_positions``,
            C order); ``'sum'``, ``'max'``, ``'min'`` or ``op(total, part)``
            combine them over the chunks, in chunk order. Sums should be
            float64 so that they do not depend on the chunking beyond rounding.
        halo : int
            Scan rows read either side of each chunk (the function sees them,
            returns outputs for the chunk's own rows only).
        dtype : numpy dtype or None
            Blocks are converted to it first (None: as stored).
        finite : bool, default True
            Read NaN and Inf as 0 before ``func`` sees a block (a pass over
            the block). False hands ``func`` the values as stored, for a
            function that reads them as 0 itself where they matter.

        Returns
        -------
        numpy.ndarray or tuple
            One value per output (the value itself for a single output).
        """
        stored = self._stored(func, dataset, kwargs, outputs, dtype) if not halo else None
        if stored is not None:
            return stored.value
        job = Job(func, dict(kwargs or {}), dtype, finite, outputs)
        sink = Accumulator(outputs, job.name)
        for chunk, result in self._pass(job, dataset, halo, desc):
            sink.add(chunk, result)
        return sink.result()

    def map(self, func: Callable, dataset: Dataset4D, *, kwargs: dict | None = None, halo: int = 0,
            desc: str | None = None, dtype=np.float32, out=None, finite: bool = True):
        """:meth:`apply` with every output per position; with ``out``, written there as chunks complete.

        Parameters
        ----------
        out : array-like or tuple of array-likes, optional
            Write each output into it at the chunk's positions as the chunk
            completes (e.g. an HDF5 dataset of shape (n_positions, ...)),
            instead of gathering the outputs in memory; ``out`` is returned.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            One array per output of ``func``, with first axis ``n_positions``
            in C order of the scan.
        """
        if out is None:
            return self.apply(func, dataset, outputs="map", kwargs=kwargs, halo=halo, desc=desc, dtype=dtype,
                              finite=finite)
        targets = out if isinstance(out, tuple) else (out,)
        job = Job(func, dict(kwargs or {}), dtype, finite)
        for chunk, outputs in self._pass(job, dataset, halo, desc):
            if len(outputs) != len(targets):
                raise ValueError(f"{len(outputs)} outputs for {len(targets)} arrays in out")
            for target, value in zip(targets, outputs):
                if np.shape(value)[:1] != (chunk.n_positions,):
                    raise ValueError(
                        f"{job.name} returned shape {np.shape(value)} for a chunk "
                        f"of {chunk.n_positions} positions; the first axis must be per position"
                    )
                target[chunk.positions.start : chunk.positions.stop] = value
        return out

    def reduce(self, func: Callable, dataset: Dataset4D, *, combine: str | Callable | Sequence[str | Callable] = "sum",
               kwargs: dict | None = None, halo: int = 0, desc: str | None = None, dtype=np.float32,
               finite: bool = True):
        """:meth:`apply` with every output combined over the chunks by ``combine`` (one, or one per output)."""
        return self.apply(func, dataset, outputs=combine, kwargs=kwargs, halo=halo, desc=desc, dtype=dtype,
                          finite=finite)

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
            for chunk, outputs in self._pass(Job(func, kwargs, np.float32), dataset, halo, desc):
                out[chunk.positions] = outputs[0]
            return dataset.replace(data=out.reshape(sy, sx, *pattern_shape), **changes)
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
                task = dask.delayed(transform_block)(block, chunk, func, kwargs, pattern_shape, out_dtype)
            pieces.append(da.from_delayed(task, shape=shape, dtype=out_dtype))
        return dataset.replace(data=da.concatenate(pieces, axis=0), reader=reader, **changes)
