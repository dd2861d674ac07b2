import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from stemnmf.errors import ResultsError
from stemnmf.io import Results, atomic_output, file_checksum, load_results, save_results


def full_results(k=3, sy=4, sx=5):
    rng = np.random.default_rng(0)
    table = np.zeros(2, dtype=[("region", "i4"), ("component", "i4"), ("area_nm2", "f4"), ("name", "U8")])
    table["region"] = [0, 1]
    table["name"] = ["a", "bb"]
    return Results(
        {
            "/components/maps": rng.random((k, sy, sx)).astype(np.float32),
            "/components/patterns": rng.random((k, 7)).astype(np.float32),
            "/labels": rng.integers(-1, k, (sy, sx)).astype(np.int32),
            "/overlap/thresholds": np.linspace(0.75, 0.95, 5, dtype=np.float32),
            "/regions/table": table,
            "/kselect/k": np.arange(3, 6),
            "/kselect/loss": np.array([3.0, 2.0, 1.5]),
            "/kselect/chosen_k": np.int64(4),
            "/kselect/reason": "knee at k=4",
        },
        {"seed": 7, "config": {"feature": "aa", "k": "auto"}, "timings": {"load": 0.5}, "input": "x.h5"},
    )


def test_round_trip(tmp_path):
    original = full_results()
    path = save_results(original, tmp_path / "results.h5")
    loaded = load_results(tmp_path)
    assert set(loaded) == set(original)
    for key in original:
        if isinstance(original[key], str):
            assert loaded[key] == original[key]
        elif original[key].dtype.names:
            assert loaded[key]["name"].tolist() == ["a", "bb"]
            np.testing.assert_array_equal(loaded[key]["region"], [0, 1])
        else:
            np.testing.assert_array_equal(loaded[key], original[key])
            assert loaded[key].dtype == np.asarray(original[key]).dtype
    assert loaded.config == {"feature": "aa", "k": "auto"}
    assert loaded.seed == 7 and loaded.timings == {"load": 0.5}
    assert loaded.attrs["stemnmf_version"]
    with h5py.File(path) as h5:  # readable by plain h5py as documented
        assert json.loads(h5.attrs["config"][len("json:") :])["feature"] == "aa"


def test_schema_rejects_inconsistent_shapes(tmp_path):
    bad = full_results()
    bad["/labels"] = np.zeros((9, 9), np.int32)
    with pytest.raises(ResultsError, match="disagree on sy"):
        save_results(bad, tmp_path / "r.h5")
    bad = full_results()
    bad["/labels"] = np.zeros((4, 5), np.float32)
    with pytest.raises(ResultsError, match="must be int32"):
        save_results(bad, tmp_path / "r.h5")
    assert not list(tmp_path.iterdir())


def test_refuses_to_overwrite_unless_asked(tmp_path):
    save_results(full_results(), tmp_path / "r.h5")
    with pytest.raises(ResultsError, match="already exists"):
        save_results(full_results(), tmp_path / "r.h5")
    save_results(full_results(k=2), tmp_path / "r.h5", overwrite=True)
    assert load_results(tmp_path / "r.h5").n_components == 2


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_killed_process_leaves_no_results_file(tmp_path):
    script = (
        "import time, numpy as np\n"
        "from stemnmf.io import atomic_output\n"
        f"with atomic_output({str(tmp_path / 'results.h5')!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "results.h5").exists()


def test_load_results_errors(tmp_path):
    with pytest.raises(ResultsError, match="no results file"):
        load_results(tmp_path)
    (tmp_path / "results.h5").write_bytes(b"not hdf5")
    with pytest.raises(ResultsError, match="not a readable HDF5"):
        load_results(tmp_path)


def test_checksum_full_and_sampled(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(os.urandom(3 * 1024 * 1024))
    full = file_checksum(a)
    assert full.startswith("sha256:") and full == file_checksum(a)
    sampled = file_checksum(a, full_limit=1024)
    assert sampled.startswith("sha256-sampled:")
    data = bytearray(a.read_bytes())
    data[0] ^= 1
    a.write_bytes(bytes(data))
    assert file_checksum(a) != full and file_checksum(a, full_limit=1024) != sampled
