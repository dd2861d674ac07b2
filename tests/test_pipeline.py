"""The whole run through the Python API and the command line, on simulated scans with truth."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import stemnmf
from stemnmf.cli import main
from stemnmf.errors import ConfigError, ResultsError
from stemnmf.io import load_results
from stemnmf.simulate import simulate_to_file

CONTRACT = {
    "/components/maps": ("k", "sy", "sx"),
    "/components/patterns": ("k", None),
    "/components/mean_patterns": ("k", "qy", "qx"),
    "/components/representative_patterns": ("k", "qy", "qx"),
    "/labels": ("sy", "sx"),
    "/overlap/ratio": ("sy", "sx"),
    "/overlap/thresholds": (None,),
    "/regions/maps": (None, "sy", "sx"),
    "/regions/table": (None,),
}


def error_line(stderr: str) -> str:
    """The one error line of a failed command (progress logs may precede it), checking there is no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("stemnmf: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "tiny.h5"
    simulate_to_file(path, "tiny", seed=1)
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_file, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("run") / "out"
    config = {"features": {"representation": "aa"}, "nmf": {"k": 4}, "run": {"seed": 1}}
    return stemnmf.run(tiny_file, config, outdir=outdir), outdir


def test_results_file_follows_the_contract(tiny_run, tiny_file):
    results, outdir = tiny_run
    stored = load_results(outdir)
    sizes = {"k": 4, "sy": 12, "sx": 12, "qy": 48, "qx": 48}
    for path, dims in CONTRACT.items():
        assert path in stored, path
        shape = stored[path].shape
        assert len(shape) == len(dims), path
        for dim, size in zip(dims, shape):
            if dim is not None:
                assert size == sizes[dim], (path, shape)
    assert stored["/labels"].dtype == np.int32 and stored["/components/maps"].dtype == np.float32
    assert int(stored["/kselect/chosen_k"]) == 4
    assert stored["/labels"].min() >= -1 and stored["/labels"].max() < 4
    np.testing.assert_array_equal(stored["/labels"], results["/labels"])


def test_run_records_configuration_seed_version_checksum_and_timings(tiny_run, tiny_file):
    _, outdir = tiny_run
    stored = load_results(outdir)
    attrs = stored.attrs
    assert attrs["seed"] == 1 and attrs["config"]["nmf"]["k"] == 4
    assert attrs["config"]["features"]["representation"] == "aa"
    assert attrs["stemnmf_version"] == stemnmf.__version__
    assert attrs["input"] == str(tiny_file)
    assert attrs["input_checksum"] == stemnmf.io.file_checksum(tiny_file)
    for stage in ("load", "calibrate", "features", "nmf", "analysis"):
        assert attrs["timings"][stage] >= 0
    assert (outdir / "report.html").stat().st_size > 10_000


def test_report_of_a_real_run_shows_every_section(tiny_run):
    _, outdir = tiny_run
    text = (outdir / "report.html").read_text()
    for heading in ("The data", "Components and clusters", "Cluster patterns", "Grains", "Ground truth"):
        assert f"<h2>{heading}</h2>" in text, heading
    for figure in ("mean image", "max pattern", "component maps", "label map", "overlap", "cluster patterns", "nsd", "region boxplots", "truth", "scores"):
        assert f'alt="{figure}"' in text, figure


def test_scores_against_the_simulated_truth(tiny_run):
    results, _ = tiny_run
    scores = json.loads(str(results["/scores/summary"]))
    # random labels give ARI ~ 0; four components on five small grains find most of them
    assert scores["ARI"] > 0.3
    assert scores["grain_recall"] >= 0.6
    assert scores["TPR_G"] > 0.9


def test_same_seed_same_results(tiny_file):
    config = {"features": {"representation": "aa"}, "nmf": {"k": 3}, "run": {"seed": 5, "report": False}}
    a = stemnmf.run(tiny_file, config)
    b = stemnmf.run(tiny_file, config)
    np.testing.assert_array_equal(a["/components/maps"], b["/components/maps"])
    np.testing.assert_array_equal(a["/labels"], b["/labels"])


def test_run_on_an_array_from_python():
    dataset, truth = stemnmf.simulate("tiny", seed=2)
    results = stemnmf.run(dataset.data, {"nmf": {"k": 3}, "run": {"report": False}})
    assert results["/components/maps"].shape == (3, 12, 12)
    assert results.attrs["input"] == "(array)" and results.attrs["input_checksum"] == ""


def test_kscan_chooses_the_number_of_orientations(tmp_path, capsys):
    scan = tmp_path / "crystals.h5"
    simulate_to_file(scan, "crystals", scan=32, det=64, seed=0, n_orientations=4)
    assert main(["kscan", str(scan), "-o", str(tmp_path / "k"), "--k", "3:8", "-q"]) == 0
    out = capsys.readouterr().out
    assert "components: k = " in out and "report:" in out
    stored = load_results(tmp_path / "k")
    assert abs(int(stored["/kselect/chosen_k"]) - 4) <= 1
    assert stored["/kselect/k"].tolist() == list(range(3, 9))
    assert stored.config["features"]["representation"] == "raw"
    scores = json.loads(str(stored["/scores/summary"]))
    assert scores["ARI"] > 0.35


def test_second_run_into_the_same_outdir_needs_overwrite(tiny_file, tmp_path, capsys):
    outdir = tmp_path / "out"
    args = ["run", str(tiny_file), "-o", str(outdir), "--k", "3", "--no-report", "-q"]
    assert main(args) == 0
    before = (outdir / "results.h5").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    err = error_line(capsys.readouterr().err)
    assert "already holds a run" in err and "--overwrite" in err
    assert (outdir / "results.h5").stat().st_mtime_ns == before
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--k", "lots"], "k='lots' is not valid"),
        (["--k", "500"], "k=500 is larger than the scan's 144 positions"),
        (["--sector-width", "0"], "sector_width=0.0 must be in (0, 180]"),
        (["--config", "missing.toml"], "config file missing.toml does not exist"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tiny_file, tmp_path, capsys, extra, message):
    outdir = tmp_path / "out"
    assert main(["run", str(tiny_file), "-o", str(outdir), *extra]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (outdir / "results.h5").exists()


def test_bad_input_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "scan.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["run", str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "scan.h5" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "out" / "results.h5").exists()


def test_failure_midway_leaves_no_results(tiny_file, tmp_path, monkeypatch):
    import stemnmf.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("killed in analysis")

    monkeypatch.setattr(stemnmf.pipeline, "analyze", broken)
    with pytest.raises(RuntimeError):
        stemnmf.run(tiny_file, {"nmf": {"k": 3}}, outdir=tmp_path / "out")
    assert not (tmp_path / "out" / "results.h5").exists()
    assert not (tmp_path / "out" / "report.html").exists()


def test_killed_run_leaves_no_results_file(tmp_path):
    scan = tmp_path / "scan.h5"
    simulate_to_file(scan, "crystals", scan=48, det=96, seed=0, n_orientations=6)
    outdir = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stemnmf", "run", str(scan), "-o", str(outdir), "--k", "iterative", "--n-restarts", "25"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait until the run is factorising, then kill it without warning
    deadline = time.time() + 60
    for line in proc.stderr:
        if line.startswith("nmf ...") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (outdir / "results.h5").exists() and not (outdir / "report.html").exists()


def test_config_file_and_print_config(tiny_file, tmp_path, capsys):
    assert main(["run", "--print-config"]) == 0
    text = capsys.readouterr().out
    config_path = tmp_path / "run.toml"
    config_path.write_text(text.replace('representation = "aa"', 'representation = "rv"').replace("# k =        (unset)", "k = 3"))
    assert main(["run", str(tiny_file), "-o", str(tmp_path / "out"), "--config", str(config_path), "--no-report", "-q"]) == 0
    stored = load_results(tmp_path / "out")
    assert stored.config["features"]["representation"] == "rv" and int(stored["/kselect/chosen_k"]) == 3
    with h5py.File(tmp_path / "out" / "results.h5") as h5:
        assert "config" in h5.attrs


def test_python_run_rejects_bad_config():
    with pytest.raises(ConfigError):
        stemnmf.run(np.ones((4, 4, 8, 8), np.float32), {"nmf": {"k": "many"}})
    with pytest.raises(ConfigError):
        stemnmf.run(np.ones((4, 4, 8, 8), np.float32), 42)


def test_unset_k_follows_the_feature(tiny_file, tmp_path):
    """No --k: AA runs the merging NMF (Bruefach et al.), raw the K-component loss scan (Cao et al.)."""
    base = {"run": {"seed": 1, "report": False}, "nmf": {"n_restarts": 2, "k_range": "3:5"}}
    aa = stemnmf.run(tiny_file, {**base, "features": {"representation": "aa"}}, outdir=tmp_path / "aa")
    assert "/decompose/merge_history" in aa and "/kselect/knee" not in aa
    assert str(aa["/kselect/reason"]).startswith("iterative merging NMF")
    raw = stemnmf.run(tiny_file, {**base, "features": {"representation": "raw"}}, outdir=tmp_path / "raw")
    assert "/kselect/knee" in raw and "/decompose/merge_history" not in raw and 3 <= int(raw["/kselect/chosen_k"]) <= 5
    assert "knee" in str(raw["/kselect/reason"])


def test_k_range_beyond_the_data_is_clipped_with_a_warning(caplog):
    data = np.random.default_rng(0).poisson(5.0, (4, 4, 6, 6)).astype(np.float32)
    config = {"features": {"representation": "raw"}, "nmf": {"k": "auto", "k_range": "3:99"}, "run": {"report": False}}
    with caplog.at_level("WARNING", logger="stemnmf.pipeline"):
        results = stemnmf.run(data, config)
    assert "scanning k = 3..15" in caplog.text
    assert list(results["/kselect/k"]) == list(range(3, 16))
