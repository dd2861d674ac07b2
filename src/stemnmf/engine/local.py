"""Running chunks in this process: a thread pool with a bounded number of chunks in flight."""

from __future__ import annotations

import collections
import queue
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from threadpoolctl import threadpool_limits

from stemnmf.engine.chunks import RowChunk
from stemnmf.engine.jobs import Job, chunk_task

__all__ = ["run_in_threads"]


def run_in_threads(dataset, chunks: Sequence[RowChunk], jobs: Sequence[Job], bar, n_threads: int):
    """Yield (chunk, outputs of every job) for every chunk, at most ``n_threads`` in flight, in completion order.

    Each chunk in flight reuses a scratch dict of buffers (read and converted
    blocks) from one that finished, so memory stays bounded.
    """
    data, reader = dataset.data, dataset.reader
    if n_threads == 1 or len(chunks) == 1:
        scratch: dict = {}
        for chunk in chunks:
            outputs = chunk_task(data, reader, chunk, jobs, scratch)
            bar.update(chunk.n_positions)
            yield chunk, outputs
        return
    pending = collections.deque(chunks)
    free: queue.SimpleQueue = queue.SimpleQueue()  # one scratch dict per chunk in flight, reused

    def task(chunk):
        try:
            scratch = free.get_nowait()
        except queue.Empty:
            scratch = {}
        try:
            return chunk_task(data, reader, chunk, jobs, scratch)
        finally:
            free.put(scratch)

    # the chunks already use every core: BLAS threads inside them would oversubscribe
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(n_threads, thread_name_prefix="stemnmf") as pool:
        running = {}
        try:
            while pending or running:
                while pending and len(running) < n_threads:
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
