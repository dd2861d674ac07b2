import dask.array as da
import numpy as np
import pytest

from stemnmf.engine import Engine, RowChunk, parse_bytes, row_chunks
from stemnmf.errors import ConfigError, MemoryBudgetError, SchedulerError
from stemnmf.io import Dataset4D


def pattern_sums(block, chunk):
    own = block[chunk.own]
    return own.reshape(own.shape[0] * own.shape[1], -1).sum(axis=1), own[:, :, 0, 0].reshape(-1)


def scan_mean3(block, chunk):
    """Mean over the 3 x 1 column of scan neighbours (needs one row of halo)."""
    sums = np.zeros_like(block[chunk.own])
    counts = np.zeros(block[chunk.own].shape[:2] + (1, 1), np.float32)
    for dy in (-1, 0, 1):
        lo, hi = chunk.own.start + dy, chunk.own.stop + dy
        src_lo, src_hi = max(lo, 0), min(hi, block.shape[0])
        dst = slice(src_lo - lo, (src_lo - lo) + (src_hi - src_lo))
        sums[dst] += block[src_lo:src_hi]
        counts[dst] += 1
    out = sums / counts
    return out.reshape(-1, *out.shape[2:])


def test_row_chunks_cover_scan_once():
    chunks = row_chunks((10, 4), 3, halo=1)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert chunks[1].read_start == 2 and chunks[1].read_stop == 7
    assert chunks[0].own == slice(0, 3) and chunks[1].own == slice(1, 4)
    assert chunks[-1].positions == slice(36, 40)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_map_identical_whatever_the_chunking(small_dataset, small_array, chunk_rows, n_threads):
    sums, corner = Engine(chunk_rows=chunk_rows, n_threads=n_threads, progress=False).map(pattern_sums, small_dataset)
    flat = small_array.reshape(35, -1)
    np.testing.assert_array_equal(sums, flat.sum(axis=1))
    np.testing.assert_array_equal(corner, flat[:, 0])


def test_map_on_lazy_equals_in_memory(small_dataset, small_array):
    lazy = Dataset4D(da.from_array(small_array, chunks=(2, -1, -1, -1)))
    engine = Engine(progress=False)
    for a, b in zip(engine.map(pattern_sums, lazy), engine.map(pattern_sums, small_dataset)):
        np.testing.assert_array_equal(a, b)


def test_reduce_sum_and_max(small_dataset, small_array):
    def partials(block, chunk):
        own = block[chunk.own].astype(np.float64)
        return own.sum(axis=(0, 1)), own.max(axis=(0, 1))

    for rows in (1, 4):
        total, peak = Engine(chunk_rows=rows, progress=False).reduce(
            partials, small_dataset, combine=["sum", "max"]
        )
        np.testing.assert_allclose(total, small_array.sum(axis=(0, 1)), rtol=1e-12)
        np.testing.assert_array_equal(peak, small_array.max(axis=(0, 1)))


@pytest.mark.parametrize("chunk_rows", [1, 2, 5])
def test_halo_gives_same_answer_as_whole_scan(small_dataset, small_array, chunk_rows):
    whole = Engine(chunk_rows=100, progress=False).map(scan_mean3, small_dataset, halo=1)
    chunked = Engine(chunk_rows=chunk_rows, progress=False).map(scan_mean3, small_dataset, halo=1)
    np.testing.assert_array_equal(whole, chunked)
    # by hand at an inner position (3, 2): mean over rows 2, 3, 4
    expected = small_array[2:5, 2].mean(axis=0)
    np.testing.assert_allclose(whole[3 * 5 + 2], expected, rtol=1e-6)


def test_transform_lazy_stays_lazy_and_matches(small_dataset):
    def double(block, chunk):
        own = block[chunk.own]
        return 2 * own.reshape(-1, *own.shape[2:])

    lazy = small_dataset.replace(data=da.from_array(small_dataset.data, chunks=(3, -1, -1, -1)))
    engine = Engine(chunk_rows=2, progress=False)
    eager = engine.transform(double, small_dataset)
    deferred = engine.transform(double, lazy)
    assert not eager.is_lazy and deferred.is_lazy
    np.testing.assert_array_equal(deferred.compute().data, eager.data)
    np.testing.assert_array_equal(eager.data, 2 * small_dataset.data)
    assert eager.calibration == small_dataset.calibration


def test_nan_and_inf_reach_functions_as_zero():
    data = np.ones((2, 2, 4, 4), np.float32)
    data[0, 1, 2, 2] = np.nan
    data[1, 0, 0, 0] = np.inf
    sums = Engine(progress=False).map(pattern_sums, Dataset4D(data))[0]
    np.testing.assert_array_equal(sums, [16, 15, 15, 16])
    # finite=False: the function sees the values as stored (and reads them as 0 itself)
    kept = Engine(progress=False).map(pattern_sums, Dataset4D(data), finite=False)[0]
    assert np.isnan(kept[1]) and np.isinf(kept[2]) and kept[0] == kept[3] == 16


def test_wrong_output_length_is_reported(small_dataset):
    with pytest.raises(ValueError, match="first axis must be per position"):
        Engine(progress=False).map(lambda block, chunk: np.zeros(3), small_dataset)


def test_budget_sizes_chunks_and_rejects_too_small(small_dataset):
    row_bytes = 5 * 12 * 10 * (4 + 16)
    engine = Engine(memory_budget=3 * row_bytes, n_threads=1, progress=False)
    assert engine.rows_per_chunk(small_dataset) <= 3
    with pytest.raises(MemoryBudgetError, match="too small for one chunk"):
        Engine(memory_budget=row_bytes // 2, n_threads=1).rows_per_chunk(small_dataset)


@pytest.mark.parametrize("text,expected", [("2GiB", 2 * 1024**3), ("512MB", 512 * 10**6), (1000, 1000)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1", 0])
def test_parse_bytes_rejects(text):
    with pytest.raises(ConfigError):
        parse_bytes(text)


def test_unreachable_scheduler_is_a_clear_error(small_dataset):
    engine = Engine(scheduler="tcp://127.0.0.1:9", progress=False)
    with pytest.raises(SchedulerError, match="cannot reach the dask scheduler"):
        engine.map(pattern_sums, small_dataset)


@pytest.mark.slow
def test_local_cluster_gives_identical_results(small_dataset):
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            remote = Engine(scheduler=client, chunk_rows=2, progress=False).map(pattern_sums, small_dataset)
    local = Engine(progress=False).map(pattern_sums, small_dataset)
    for a, b in zip(remote, local):
        np.testing.assert_array_equal(a, b)


def test_progress_bar_counts_patterns_on_stderr(small_dataset, monkeypatch, capsys):
    """progress=True shows a tqdm bar in patterns (shown after 2 s; the delay is made 0 here)."""
    import stemnmf.engine.core as engine_module

    real_tqdm = engine_module.tqdm
    seen = []

    def no_delay(*args, **kwargs):
        seen.append(dict(kwargs))
        return real_tqdm(*args, **{**kwargs, "delay": 0})

    monkeypatch.setattr(engine_module, "tqdm", no_delay)
    expected = small_dataset.data.reshape(35, -1).sum(axis=1)

    sums, _ = Engine(chunk_rows=2, n_threads=1, progress=True).map(pattern_sums, small_dataset)
    np.testing.assert_array_equal(sums, expected)
    err = capsys.readouterr().err
    assert seen and seen[0]["total"] == 35 and seen[0]["unit"] == "pattern" and seen[0]["delay"] == 2.0
    assert "pattern/s" in err and "/35" in err  # e.g. "patterns:   0%|   | 0.00/35.0 [00:00<?, ?pattern/s]"

    sums, _ = Engine(chunk_rows=2, n_threads=1, progress=False).map(pattern_sums, small_dataset)
    np.testing.assert_array_equal(sums, expected)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
