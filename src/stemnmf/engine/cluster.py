"""Running chunks on a dask.distributed cluster, with results equal to the in-process run bit for bit.

Loaded only for a run given a scheduler (importing dask.distributed takes
about a second and a half).
"""

from __future__ import annotations

import logging
import pickle
import socket
import threading
from collections.abc import Sequence
from urllib.parse import urlsplit

import cloudpickle
import dask
import numpy as np
from distributed import Client, as_completed
from threadpoolctl import threadpool_limits

from stemnmf.engine.chunks import RowChunk
from stemnmf.engine.jobs import Job, detach, map_block, run_jobs
from stemnmf.errors import SchedulerError, StemNMFError

__all__ = ["CONNECT_DEADLINE", "Shipped", "aligned", "cluster_error", "connect", "run_on_cluster"]

log = logging.getLogger(__name__)

#: Seconds to wait for a dask scheduler to answer when connecting.
CONNECT_DEADLINE = 30.0


def aligned(a):
    """``a`` itself, or a copy aligned for its dtype when it is a misaligned NumPy array.

    Arrays that arrive over a network (dask frames) may start at any byte. NumPy
    then bypasses BLAS for products, and reductions run through buffers, so the
    rounding differs from the same call on an aligned array: every array a
    remote task computes with, and every array it returns, goes through here.
    Tuples and lists are handled item by item.
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
        return pickle.loads, (cloudpickle.dumps(self.obj, protocol=4),)


def _remote_chunk(reader, chunk: RowChunk, jobs: Sequence[Job]) -> list[tuple]:
    """A chunk read and processed on a dask worker, with single-threaded BLAS (as in-process)."""
    with threadpool_limits(limits=1, user_api="blas"):
        mapped = map_block(reader, chunk)
        if mapped is not None:
            return detach(run_jobs(mapped, chunk, jobs), None, mapped)
        block = aligned(np.asarray(reader(chunk.read_start, chunk.read_stop)))
        return run_jobs(block, chunk, jobs)


def _remote_block(block, chunk: RowChunk, jobs: Sequence[Job]) -> list[tuple]:
    """A chunk of a dataset without a reader (its rows come through dask), processed on a worker."""
    with threadpool_limits(limits=1, user_api="blas"):
        return run_jobs(aligned(np.asarray(block)), chunk, jobs)


def run_on_cluster(client, dataset, chunks: Sequence[RowChunk], jobs: Sequence[Job], bar):
    """Yield (chunk, outputs of every job) for every chunk, run on the workers, in completion order."""
    reader = dataset.reader
    # the functions and their options (templates, weights) travel once, not with every chunk;
    # every worker holds a copy, so the pass survives the loss of a worker
    [shared_jobs] = client.scatter([Shipped(list(jobs))], hash=False, broadcast=True)
    if reader is not None:
        futures = [client.submit(_remote_chunk, reader, chunk, shared_jobs, pure=False) for chunk in chunks]
    else:
        data = dataset.data
        tasks = [dask.delayed(_remote_block)(data[chunk.read_start : chunk.read_stop], chunk, shared_jobs)
                 for chunk in chunks]
        futures = client.compute(tasks)
    index = {future.key: chunk for future, chunk in zip(futures, chunks)}
    try:
        for future in as_completed(futures, loop=client.loop):
            chunk = index[future.key]
            try:
                outputs = [aligned(out) for out in future.result()]
            except Exception as err:
                raise cluster_error(err, f"scan rows {chunk.start}-{chunk.stop}") from err
            bar.update(chunk.n_positions)
            yield chunk, outputs
    finally:
        for future in futures:
            future.release()
        shared_jobs.release()


def connect(scheduler) -> Client:
    """A Client of ``scheduler`` (a Client is returned as it is), or one SchedulerError within
    :data:`CONNECT_DEADLINE` seconds when nothing, or not a dask scheduler, answers there."""
    if isinstance(scheduler, Client):
        return scheduler
    _check_reachable(str(scheduler))
    # connect in a thread with an overall deadline: something that accepts the connection
    # but is not a dask scheduler never answers the handshake
    outcome: dict = {}

    def attempt():
        try:
            outcome["client"] = Client(scheduler, timeout="10s", set_as_default=False)
        except BaseException as err:  # noqa: BLE001 - every failure becomes one SchedulerError below
            outcome["error"] = err

    thread = threading.Thread(target=attempt, name="stemnmf-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_DEADLINE)
    fix = "start it with `dask scheduler` and check the address, or leave out --scheduler to run here"
    if thread.is_alive():
        raise SchedulerError(
            f"no dask scheduler answered at {scheduler} within {CONNECT_DEADLINE:g} s "
            "(something listens there, but not a dask scheduler?)",
            fix,
        )
    if "error" in outcome:
        err = outcome["error"]
        raise SchedulerError(f"cannot connect to the dask scheduler at {scheduler} ({err.__class__.__name__})", fix)
    return outcome["client"]


def cluster_threads(client) -> tuple[int, int]:
    """(most threads of one worker, threads of all workers) of the cluster."""
    nthreads = dict(client.nthreads())
    if not nthreads:
        return 1, 1
    return max(1, max(nthreads.values())), max(1, sum(nthreads.values()))


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast (SchedulerError) when nothing listens at a tcp:// scheduler address."""
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


def cluster_error(err: Exception, where: str) -> Exception:
    """A failure on the cluster as a one-line SchedulerError, or the error itself (a user error)."""
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
