"""Runs on a dask.distributed LocalCluster (two worker processes) equal the in-process run; bad input is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import stemnmf
from stemnmf.decompose import NMF, IterativeNMF, RowBlocks
from stemnmf.decompose.distributed import DistributedRowBlocks
from stemnmf.engine import Engine
from stemnmf.pipeline import run

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        with distributed.Client(c) as client:
            yield c, client


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster") / "tiny.h5"
    stemnmf.simulate.simulate_to_file(path, "tiny", seed=2)
    return path


def _prefixes(client) -> set[str]:
    """Names of the functions the scheduler has run tasks of."""
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))


def _config(**run_options):
    return {"input": {"lazy": True}, "features": {"representation": "aa"}, "nmf": {"k": "4"},
            "run": {"report": False, **run_options}}


def test_features_and_nmf_on_the_cluster_equal_the_local_run(cluster, tiny_file, tmp_path):
    c, client = cluster
    dataset = stemnmf.load(tiny_file, lazy=True)
    X_local, _ = stemnmf.featurize(dataset, "aa+rv", engine=Engine(progress=False))
    X_remote, _ = stemnmf.featurize(dataset, "aa+rv", engine=Engine(scheduler=client, progress=False))
    np.testing.assert_array_equal(X_remote, X_local)

    # NMF: the same blocks, kernels and order of sums on the workers as here
    rng = np.random.default_rng(0)
    X = (rng.random((900, 6)) @ rng.random((6, 40)) + 0.01 * rng.random((900, 40))).astype(np.float32)
    for solver in ("hals", "mu", "kl"):
        local = NMF(6, solver=solver, max_iter=25, tol=0, random_state=1)
        W_local = local.fit_transform(RowBlocks(X, block_rows=200))
        remote = NMF(6, solver=solver, max_iter=25, tol=0, random_state=1)
        W_remote = remote.fit_transform(DistributedRowBlocks(X, client, block_rows=200))
        np.testing.assert_array_equal(W_remote, W_local, err_msg=solver)
        np.testing.assert_array_equal(remote.components_, local.components_, err_msg=solver)
    # X in a file every worker reads its own blocks from (raw features on disk)
    import h5py

    from stemnmf.io.readers.sources import H5Array

    with h5py.File(tmp_path / "X.h5", "w") as h5:
        h5["X"] = X
    on_disk = NMF(6, max_iter=25, tol=0, random_state=1)
    W_disk = on_disk.fit_transform(DistributedRowBlocks(H5Array(tmp_path / "X.h5", "/X", X.shape, X.dtype), client,
                                                        block_rows=200))
    hals = NMF(6, max_iter=25, tol=0, random_state=1)
    np.testing.assert_array_equal(W_disk, hals.fit_transform(RowBlocks(X, block_rows=200)))
    iterative = IterativeNMF(feature="aa", n_restarts=2, max_iter=30, random_state=0)
    W_it = iterative.fit_transform(DistributedRowBlocks(X, client, block_rows=300))
    reference = IterativeNMF(feature="aa", n_restarts=2, max_iter=30, random_state=0)
    np.testing.assert_array_equal(W_it, reference.fit_transform(RowBlocks(X, block_rows=300)))
    assert {"remote_chunk", "frobenius_task", "kl_task", "load_rows"} <= _prefixes(client)  # (dask drops the leading _)


def test_a_run_on_the_cluster_equals_the_local_run(cluster, tiny_file, tmp_path):
    c, client = cluster
    with distributed.get_task_stream(client) as stream:
        remote = run(tiny_file, _config(scheduler=c.scheduler_address), outdir=tmp_path / "remote")
    ran = {task["key"].split("-")[0] for task in stream.data}
    assert {"_remote_chunk", "_frobenius_task"} <= ran, ran  # the passes and the NMF ran on the workers
    local = run(tiny_file, _config(), outdir=tmp_path / "local")
    for path in ("/components/maps", "/components/patterns", "/labels", "/summary/mean_image", "/clusters/vacuum",
                 "/components/mean_patterns", "/calibration/origins", "/features/rings"):
        np.testing.assert_array_equal(remote[path], local[path], err_msg=path)


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "stemnmf", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _nmf_workers(dask_scheduler):
    """Workers holding results of NMF tasks (the rows of W)."""
    out = set()
    for key, ts in dask_scheduler.tasks.items():
        if "_frobenius_task" in str(key):
            out.update(ws.address for ws in (ts.who_has or ()))
    return sorted(out)


@pytest.mark.slow
def test_a_worker_killed_mid_run_gives_the_same_results_or_one_clear_line(cluster, tiny_file, tmp_path):
    c, client = cluster
    args = [tiny_file, "--lazy", "--feature", "aa", "--k", "4", "--max-iter", "150", "--tol", "0", "--no-report", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "stemnmf", "run", *map(str, args), "-o", tmp_path / "killed",
                             "--scheduler", c.scheduler_address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and killed is None:
        holders = client.run_on_scheduler(_nmf_workers)
        if holders:  # NMF is under way: kill a worker process that holds rows of W
            killed = holders[0]
            os.kill(client.run(os.getpid)[killed], signal.SIGKILL)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=240)
    assert killed is not None, "the run ended before its NMF could be interrupted"
    if proc.returncode == 0:  # dask and the NMF's restart recovered: the results are those of a local run
        local = _cli("run", *args, "-o", tmp_path / "local")
        assert local.returncode == 0, local.stderr
        import h5py

        with h5py.File(tmp_path / "killed" / "results.h5") as a, h5py.File(tmp_path / "local" / "results.h5") as b:
            for path in ("components/maps", "components/patterns", "labels"):
                np.testing.assert_allclose(a[path][()], b[path][()], rtol=1e-5, atol=1e-6, err_msg=path)
    else:
        lines = err.strip().splitlines()
        assert proc.returncode == 2 and lines[-1].startswith("stemnmf: error: "), err[-2000:]
        assert not (tmp_path / "killed" / "results.h5").exists()
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker for the other tests


def test_cli_errors_are_one_line_and_write_nothing(tiny_file, tmp_path):
    # nothing listens on port 9: fails before any work
    out = _cli("run", tiny_file, "-o", tmp_path / "a", "--scheduler", "tcp://127.0.0.1:9", "-q")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("stemnmf: error: cannot reach the dask scheduler at tcp://127.0.0.1:9")
    assert not (tmp_path / "a" / "results.h5").exists()
    # a budget too small for one chunk: says how much is needed
    out = _cli("run", tiny_file, "-o", tmp_path / "b", "--memory-budget", "64KiB", "-q")
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("stemnmf: error: memory budget 64.0 KiB is too small for one chunk") and "raise the budget" in last
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "results.h5").exists()
    out = _cli("run", tiny_file, "-o", tmp_path / "c", "--memory-budget", "lots", "-q")
    assert out.returncode == 2 and "cannot read the memory size 'lots'" in out.stderr


def test_distributed_blocks_refuse_what_workers_cannot_read(cluster):
    c, client = cluster
    blocks = DistributedRowBlocks(np.ones((10, 3), np.float32), client)
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(blocks)
    assert [b - a for a, b in blocks.bounds] == [10]
    blocks.release()


def test_an_address_that_is_not_a_dask_scheduler_is_one_clear_error(monkeypatch):
    import socket
    import threading

    import stemnmf.engine.cluster as engine_module
    from stemnmf.errors import SchedulerError

    monkeypatch.setattr(engine_module, "CONNECT_DEADLINE", 2.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []
    stop = threading.Event()

    def accept():  # accept connections and never answer, like a web server waiting for a request
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        start = time.perf_counter()
        with pytest.raises(SchedulerError, match="no dask scheduler answered at .* within 2 s"):
            _ = Engine(scheduler=address).client
        assert time.perf_counter() - start < 15
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
    # other schemes are not checked for a listener first; their failure is one SchedulerError too
    with pytest.raises(SchedulerError, match="tls://127.0.0.1:9"):
        _ = Engine(scheduler="tls://127.0.0.1:9").client


def test_a_lost_worker_is_one_line_that_says_what_failed():
    from stemnmf.engine.cluster import cluster_error as _cluster_error
    from stemnmf.errors import SchedulerError

    KilledWorker = type("KilledWorker", (Exception,), {})
    long = "Attempted to run task on a worker that died " + "while the task was running; " * 12 + "end"
    error = _cluster_error(KilledWorker(long), "the features pass")
    assert isinstance(error, SchedulerError)
    line = error.line
    assert line.count("\n") == 0 and "the cluster failed on the features pass (KilledWorker: Attempted" in line
    assert " ...)" in line and len(line) < 320 and "check the workers' memory and logs" in line
    user_error = ValueError("bad option")
    assert _cluster_error(user_error, "x") is user_error  # not the cluster's fault: the error itself
