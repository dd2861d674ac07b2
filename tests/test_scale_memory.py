"""A run on a lazy scan: few passes over the data, and peak memory within --memory-budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import stemnmf
from stemnmf.engine import Engine
from stemnmf.io import save_scan
from stemnmf.io import summary_images
from stemnmf.pipeline import run


class CountingEngine(Engine):
    """An engine that records every pass it makes: (function, rows, functions riding along)."""

    def __init__(self, **options):
        super().__init__(progress=False, **options)
        self.passes = []

    def _pass(self, job, dataset, halo, desc):
        self.passes.append((job.name, dataset.scan_shape, [r.job.name for r in self._riders(dataset)]))
        yield from super()._pass(job, dataset, halo, desc)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "tiny.h5"
    stemnmf.simulate.simulate_to_file(path, "tiny", seed=3)
    return path


def _config(representation="aa", budget="2GiB", **run_options):
    return {
        "input": {"lazy": True},
        "features": {"representation": representation},
        "nmf": {"k": "4"},
        "run": {"report": False, "memory_budget": budget, **run_options},
    }


def test_a_lazy_run_reads_the_scan_six_times_and_fused_results_equal_their_own_passes(tiny_file):
    engine = CountingEngine()
    results = run(tiny_file, _config(), engine=engine)
    names = [p[0] for p in engine.passes]
    # calibration 2 (statistics with the block sums for the symmetry origin, origins), features 2 (statistics, features), analysis 2 (means, dissimilarity);
    # the summary images and the vacuum test ride along with the features' first pass (8 passes before)
    assert names == ["block_sums_kernel", "_origin_kernel", "_stats_kernel", "_feature_kernel", "_weighted_sums",
                     "_dissimilarity_kernel"]
    assert engine.passes[2][2] == ["_summary_totals", "_summary_means", "_scattered_fraction", "_navigator_kernel"]
    assert all(p[1] == (12, 12) for p in engine.passes)

    # the same calibrated patterns summarised and tested for vacuum in passes of their own
    from stemnmf.analysis import vacuum_mask
    from stemnmf.calibrate import calibrate

    dataset = stemnmf.load(tiny_file, lazy=True)
    calibrated, _ = calibrate(dataset, engine=Engine(progress=False))
    alone = summary_images(calibrated, Engine(progress=False))
    for path, value in alone.items():
        np.testing.assert_allclose(results[path], value, rtol=1e-6, err_msg=path)
    np.testing.assert_array_equal(results["/clusters/vacuum"], vacuum_mask(calibrated, engine=Engine(progress=False)))
    from stemnmf.io.navigator import attach_navigator

    navigator = attach_navigator(calibrated, Engine(progress=False), origin=results["/calibration/origin"],
                                 probe_radius=results["/calibration/probe_radius"])()
    for path, value in navigator.items():
        np.testing.assert_array_equal(results[path], value, err_msg=path)
    # by hand: the mean image is each pattern's mean over its pixels
    np.testing.assert_allclose(results["/summary/mean_image"], np.asarray(calibrated.data).mean(axis=(2, 3)),
                               rtol=1e-5)


def test_raw_features_that_do_not_fit_go_to_disk_with_the_same_values(tiny_file, tmp_path):
    from stemnmf.calibrate import calibrate
    from stemnmf.features import featurize
    from stemnmf.decompose import RowBlocks
    from stemnmf.features.raw_file import raw_features_on_grid, raw_features_to_file

    dataset, _ = calibrate(stemnmf.load(tiny_file, lazy=True), engine=Engine(progress=False))
    for scaling in ("none", "minmax"):
        X, description = featurize(dataset, "raw", engine=Engine(progress=False), scaling=scaling)
        X, shape = raw_features_on_grid(X, description)
        rows, on_disk, grid = raw_features_to_file(dataset, tmp_path / f"{scaling}.h5", engine=Engine(progress=False),
                                                   scaling=scaling, block_rows=10)
        blocks = RowBlocks(rows, block_rows=10)
        assert grid == shape == (48, 48)
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), X, err_msg=scaling)
        np.testing.assert_array_equal(on_disk.scale_max, description.scale_max)
        for name in description.columns.dtype.names:
            np.testing.assert_array_equal(on_disk.columns[name], description.columns[name])

    # a run whose 144 x 2304 raw features (1.3 MiB, three copies) do not fit half of a 6 MiB budget
    small = run(tiny_file, _config("raw", budget="6MiB"), outdir=tmp_path / "disk")
    large = run(tiny_file, _config("raw"), outdir=tmp_path / "memory")
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["results.h5"]  # the scratch file is gone
    # NMF read X in smaller row blocks (other float32 rounding): the same labels and reconstruction
    # (the weak components of this 4-component fit of a one-grain-dominated scan move more)
    np.testing.assert_array_equal(small["/labels"], large["/labels"])

    def reconstruction(results):
        maps = results["/components/maps"]
        return maps.reshape(len(maps), -1).T @ results["/components/patterns"]

    a, b = reconstruction(small), reconstruction(large)
    assert np.linalg.norm(a - b) < 0.02 * np.linalg.norm(b)


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from stemnmf.pipeline import run

    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

    warm, big, budget, rep, out = sys.argv[1:]
    config = {"input": {"lazy": True}, "features": {"representation": rep}, "nmf": {"k": "4"},
              "run": {"report": False, "memory_budget": budget}}
    run(warm, config, outdir=out + "/warm-" + rep)  # the same run on a tiny scan: the fixed overhead
    fixed = status("VmHWM:")
    run(big, config, outdir=out + "/" + rep)
    print(json.dumps({"fixed": fixed, "peak": status("VmHWM:")}))
    """
)


@pytest.mark.slow
def test_peak_memory_of_a_run_stays_within_the_budget(tiny_file, tmp_path):
    """AA and raw runs on a 225 MiB scan file with a 64 MiB budget: the peak resident memory
    stays within the budget above the fixed overhead (the peak of the same run on a tiny scan),
    and the per-position results are those of the tiled scan."""
    dataset, _ = stemnmf.simulate("tiny", scan=24, det=160, seed=1)
    tiled = np.tile(np.asarray(dataset.data), (4, 1, 1, 1))  # 96 x 24 x 160 x 160 float32
    big = save_scan(tmp_path / "big.h5", dataset.replace(data=tiled))
    assert big.stat().st_size > 3.5 * 64 * 2**20
    growth = {}
    for rep in ("aa", "raw"):
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_file), str(big), "64MiB", rep, str(tmp_path)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        growth[rep] = (measured["peak"] - measured["fixed"]) / 2**20
    assert max(growth.values()) <= 64, f"peak memory above the fixed overhead (MiB): {growth}; budget 64 MiB"
    with h5py.File(tmp_path / "aa" / "results.h5", "r") as h5:
        mean_image = h5["summary/mean_image"][()]
        labels = h5["labels"][()]
    # the scan is one 24 x 24 scan four times over: so are its mean image and labels
    np.testing.assert_allclose(mean_image[:24], mean_image[72:], rtol=1e-6)
    np.testing.assert_array_equal(labels[:24], labels[24:48])
    assert mean_image.shape == (96, 24) and np.ptp(mean_image) > 0


def test_a_file_larger_than_half_the_budget_is_read_on_demand_without_asking(tmp_path):
    from stemnmf.config import Config
    from stemnmf.io import inspect_input
    from stemnmf.pipeline import _lazy_for_budget, _load

    path = tmp_path / "scan.npy"
    np.save(path, np.ones((8, 8, 64, 64), np.float32))  # 1 MiB + header
    found = inspect_input(path)
    assert found.size == path.stat().st_size and found.path == path and found.inner is None and not found.has_truth
    config = Config.from_dict({"run": {"memory_budget": "1536KiB"}})
    assert _lazy_for_budget(found, config) is True
    config.run.memory_budget = "1GiB"
    assert _lazy_for_budget(found, config) is None  # load's own rule (small files in memory)
    config.run.scheduler = "tcp://127.0.0.1:8786"
    assert _lazy_for_budget(found, config) is True  # each worker reads its own rows
    config.input.lazy = False
    assert _lazy_for_budget(found, config) is False  # the user's word wins
    dataset, _ = _load(path, Config.from_dict({"run": {"memory_budget": "1536KiB"}}))
    assert dataset.is_lazy
    dataset, _ = _load(path, Config())
    assert not dataset.is_lazy
