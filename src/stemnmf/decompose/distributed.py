"""NMF as a map-reduce on a dask.distributed cluster: W row-local on the workers, H from small reductions.

:class:`DistributedRowBlocks` splits X (positions x features) into the same row
blocks the in-process solvers use and persists them on the workers. Every
:class:`~stemnmf.decompose.NMF` and :class:`~stemnmf.decompose.IterativeNMF`
fit whose X is a ``DistributedRowBlocks`` runs its iterations there::

    each worker, for each of its blocks b:   W_b, partial_b = w_step(X_b, W_b, H)   # kernels.py
    client:                                  partial = sum_b partial_b (block order, float64)
                                             H = h_step(H, partial)                   # k x n_features

Only H (k x n_features) goes out and the partials W_b^T X_b (k x n_features),
W_b^T W_b (k x k) come back each iteration; W_b stays where X_b is and is
gathered once, at the end of a fit. The blocks, the kernels and the order of
the sums are those of the in-process solver, so the factors equal the local
run's up to floating-point rounding (in practice bit for bit).

The other passes over X (validation, initialisation, exact errors, PCA scree)
read the blocks in this process from ``source``.

Worker failures: the blocks of X are reloaded (from a file every worker can
read, or scattered again from this process) and the fit restarts from the
factors it started from, so it ends with the same result; after
:data:`MAX_RETRIES` failures a lost worker or memory error becomes one
:class:`~stemnmf.errors.SchedulerError` line and any other error (a bug, not the
cluster's fault) is raised as it is, the same rule as every other pass of the
engine (:func:`stemnmf.engine.cluster.cluster_error`).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import threading

import numpy as np
from distributed import wait

from stemnmf.decompose import kernels
from stemnmf.decompose.blocks import RowBlocks
from stemnmf.decompose.nmf import FitResult, Iterations, frobenius_start, kl_eps
from stemnmf.engine.cluster import aligned, cluster_error
from stemnmf.errors import SchedulerError, StemNMFError

__all__ = ["DistributedRowBlocks", "MAX_RETRIES", "nmf_input"]

log = logging.getLogger(__name__)

#: Times a fit is restarted after a worker failure before giving up.
MAX_RETRIES = 3


def _load_rows(source, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of a source every worker can read (e.g. an HDF5 file), as C-contiguous float32."""
    return np.ascontiguousarray(np.asarray(source[start:stop]), dtype=np.float32)


def _settle(X_b) -> np.ndarray:
    """A scattered block kept on its worker as an aligned array (a network frame may start at any byte)."""
    return aligned(np.ascontiguousarray(X_b, dtype=np.float32))


def _weights(previous) -> np.ndarray:
    """A copy of W_b^T from the block's previous step ((W_b^T, partial)) or its start (an array)."""
    Wt_b = previous[0] if isinstance(previous, tuple) else previous
    return np.array(Wt_b, dtype=np.float32, copy=True)  # inputs held by dask are never changed


def _frobenius_task(X_b, previous, H, HHt, solver, l1, l2, sweeps):
    """One block of a Frobenius iteration on a worker: (updated W_b^T, partial sums)."""
    from threadpoolctl import threadpool_limits

    Wt_b = _weights(previous)
    X_b, H, HHt = aligned((X_b, H, HHt))
    with threadpool_limits(limits=1, user_api="blas"):
        partial = kernels.frobenius_w_step(X_b, Wt_b, H, HHt, solver=solver, l1=l1, l2=l2, sweeps=sweeps)
    return Wt_b, partial


def _kl_task(X_b, previous, H, H_sum, eps, l1, l2):
    """One block of a KL iteration on a worker: (updated W_b^T, partial sums)."""
    from threadpoolctl import threadpool_limits

    Wt_b = _weights(previous)
    X_b, H, H_sum = aligned((X_b, H, H_sum))
    with threadpool_limits(limits=1, user_api="blas"):
        partial = kernels.kl_w_step(X_b, Wt_b, H, H_sum, eps=eps, l1=l1, l2=l2)
    return Wt_b, partial


class DistributedRowBlocks(RowBlocks):
    """X in row blocks persisted on the workers of a dask.distributed cluster.

    Parameters
    ----------
    source : array-like
        X (n_positions, n_features): a NumPy array in this process (its blocks
        are scattered to the workers), or a picklable array-like every worker
        can read, such as :class:`stemnmf.io.readers.sources.H5Array` over an
        HDF5 file on a shared file system (each worker loads its own blocks).
    client : distributed.Client
    block_rows : int, optional
        Rows per block; default the in-process solvers' partition (about 8 MiB
        per block), which keeps the results equal to theirs.

    Notes
    -----
    The blocks are persisted on first use and released by :meth:`release`
    (or when the object is garbage collected).
    """

    def __init__(self, source, client, block_rows: int | None = None):
        super().__init__(source, block_rows=block_rows)
        if self._array is None:
            raise SchedulerError(
                "distributed NMF needs X as an array or an array-like the workers can read",
                "pass a NumPy array or an H5Array over a file on a shared file system",
            )
        self.client = client
        self._futures: list | None = None
        self._bounds: list[tuple[int, int]] = []
        self._lock = threading.RLock()  # restarts of IterativeNMF fit on threads, sharing the blocks

    # -- the persisted blocks -----------------------------------------------------------
    @property
    def bounds(self) -> list[tuple[int, int]]:
        """(start, stop) rows of every block, in order."""
        n, m = (int(s) for s in self._array.shape)
        step = self.block_rows(m, n)
        return [(start, min(n, start + step)) for start in range(0, n, step)]

    @property
    def local(self) -> bool:
        """True when the blocks come from an array in this process (scattered), not read by the workers."""
        return isinstance(self._array, np.ndarray)

    def persist(self) -> list:
        """Futures of the blocks on the workers (created on first use)."""
        with self._lock:
            return self._persist()

    def _persist(self) -> list:
        if self._futures is not None:
            return self._futures
        self._bounds = self.bounds
        try:
            if self.local:
                blocks = [np.ascontiguousarray(self._array[a:b], dtype=np.float32) for a, b in self._bounds]
                scattered = self.client.scatter(blocks, hash=False)
                self._futures = [self.client.submit(_settle, f, pure=False) for f in scattered]
            else:
                self._futures = [
                    self.client.submit(_load_rows, self._array, a, b, pure=False) for a, b in self._bounds
                ]
            with self.client.as_current():
                wait(self._futures)  # so that W's blocks can be placed beside them
        except Exception as err:  # the cluster went away
            raise cluster_error(err, "persisting X") from err
        log.info("X persisted on the cluster in %d row blocks", len(self._futures))
        return self._futures

    def release(self) -> None:
        """Free the blocks on the workers."""
        futures, self._futures = self._futures, None
        for future in futures or []:
            try:
                future.release()
            except Exception:  # pragma: no cover - the client is already closed
                pass

    def __del__(self):  # pragma: no cover - timing of garbage collection
        try:
            self.release()
        except Exception:
            pass

    def __getstate__(self):  # futures belong to one client; the workers get the blocks, not this object
        raise TypeError("DistributedRowBlocks holds futures of a cluster and cannot be pickled")

    # -- the solver hook ----------------------------------------------------------------
    def solve_distributed(self, Wt, H, setup, *, summary=None, callback=None):
        """Run the HALS / MU iterations (Frobenius or KL) of ``setup`` on the cluster.

        Same contract as :func:`stemnmf.decompose.nmf.solve`: updates ``Wt``
        (k, n) and ``H`` (k, m) in place and returns a ``FitResult``. After a
        worker failure the fit restarts from the factors it started from.
        """
        summary = summary or self.summary()
        start_Wt, start_H = Wt.copy(), H.copy()
        for attempt in range(MAX_RETRIES + 1):
            try:
                return self._iterate(Wt, H, setup, summary, callback)
            except StemNMFError:
                raise
            except Exception as err:
                if attempt == MAX_RETRIES:
                    raise cluster_error(err, f"NMF (after {MAX_RETRIES} restarts of the fit)") from err
                log.warning("a dask worker failed during NMF (%s: %s); restarting the fit from its start",
                            type(err).__name__, str(err).splitlines()[0][:120] if str(err) else "")
                self._recover()
                Wt[...] = start_Wt
                H[...] = start_H

    def _recover(self) -> None:
        """Reload the blocks of X after a failure (those that were lost)."""
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        futures = self._futures or []
        lost = [i for i, f in enumerate(futures) if f.status != "finished"]
        if not futures or len(lost) == len(futures):
            self.release()
            self._persist()
            return
        for i in lost:
            a, b = self._bounds[i]
            if self.local:
                [block] = self.client.scatter([np.ascontiguousarray(self._array[a:b], dtype=np.float32)], hash=False)
                self._futures[i] = self.client.submit(_settle, block, pure=False)
            else:
                self._futures[i] = self.client.submit(_load_rows, self._array, a, b, pure=False)

    def _scatter_weights(self, Wt, futures) -> list:
        """W^T blocks placed on the workers holding the matching blocks of X."""
        who = self.client.who_has(futures)
        out = []
        for (a, b), future in zip(self._bounds, futures):
            workers = list(who.get(future.key, ())) or None
            [f] = self.client.scatter([np.ascontiguousarray(Wt[:, a:b])], workers=workers, hash=False)
            out.append(f)
        return out

    def _iterate(self, Wt, H, setup, summary, callback):
        client = self.client
        X_futures = self.persist()
        W_futures = self._scatter_weights(Wt, X_futures)
        k, m = H.shape
        kl = setup.loss == "kl"
        iterations = Iterations(setup, callback)
        it = 0
        if kl:
            partial = kernels.KLPartial.zeros(k, m)
            eps = kl_eps(summary)
        else:
            partial, HHt64, solver, w_sweeps, h_sweeps = frobenius_start(Wt, H, setup)
        try:
            for it in range(1, setup.max_iter + 1):
                partial.fill(0.0)
                # H (k x n_features) travels with the tasks; each step stays on its block's worker and
                # holds (W_b^T, partial): the next iteration reads W_b^T from it there, only the partial comes here
                if kl:
                    H_sum = H.sum(axis=1, dtype=np.float64)
                    args = (H.copy(), H_sum, eps, setup.l1_W, setup.l2_W)
                    task = _kl_task
                else:
                    HHt = HHt64.astype(np.float32)
                    args = (H.copy(), HHt, solver, setup.l1_W, setup.l2_W, w_sweeps)
                    task = _frobenius_task
                steps = [client.submit(task, X_f, W_f, *args, pure=False) for X_f, W_f in zip(X_futures, W_futures)]
                parts = client.gather([client.submit(operator.getitem, s, 1, pure=False) for s in steps])
                for part in parts:  # in block order, as the in-process solver adds them
                    partial += part  # elementwise float64 sums: the alignment of the frames does not matter
                W_futures = steps
                if kl:
                    value = kernels.kl_objective(summary.total, H, partial, l1_W=setup.l1_W, l2_W=setup.l2_W,
                                                 l1_H=setup.l1_H, l2_H=setup.l2_H)
                    kernels.kl_h_step(H, partial, l1=setup.l1_H, l2=setup.l2_H)
                else:
                    kernels.frobenius_h_step(H, partial, solver=solver, l1=setup.l1_H, l2=setup.l2_H, sweeps=h_sweeps)
                    H64 = H.astype(np.float64)
                    HHt64 = H64 @ H64.T
                    value = kernels.frobenius_objective(summary.sq_norm, H, HHt64, partial, l1_W=setup.l1_W,
                                                        l2_W=setup.l2_W, l1_H=setup.l1_H, l2_H=setup.l2_H)
                if iterations.stop(it, Wt, H, value, prepare=lambda: self._gather_weights(Wt, W_futures)):
                    break
            self._gather_weights(Wt, W_futures)
        finally:
            for future in W_futures:
                future.release()
        return FitResult(Wt, H, it, iterations.losses)

    def _gather_weights(self, Wt, futures) -> None:
        weights = [self.client.submit(_weights, f, pure=False) for f in futures]
        for (a, b), block in zip(self._bounds, self.client.gather(weights)):
            Wt[:, a:b] = block  # an elementwise copy: the alignment of the frame does not matter


def nmf_input(X, engine, cleanup: contextlib.ExitStack | None = None):
    """X for the NMF: as it is in-process; on a cluster, row blocks persisted on the workers.

    On a cluster (``engine.scheduler``) the iterations then run on the workers
    (:mod:`stemnmf.decompose.distributed`), W row-local, with results equal to
    the in-process ones. A feature matrix in memory is scattered once; one on
    disk is read by each worker from the file (which must be on a shared file
    system).
    """
    if engine.scheduler is None:
        return X
    # the same row blocks as in-process, so that the results are the same
    source, block_rows = (X._array, X._block_rows) if isinstance(X, RowBlocks) else (X, None)
    blocks = DistributedRowBlocks(source, engine.client, block_rows=block_rows)
    if cleanup is not None:
        cleanup.callback(blocks.release)
    return blocks
