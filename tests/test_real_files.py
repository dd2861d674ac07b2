"""Files written by real instruments and peer software (/work/shared/fixtures/real, see its README).

Each loads with the shape, dtype and calibration its README and RosettaSciIO's own
tests give (checked against the bytes read independently where the format is simple),
and ``stemnmf run`` completes on the ASTAR .blo and the Merlin .mib with a report, or
stops with one clear line where the data cannot give the features asked for.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from stemnmf.cli import main
from stemnmf.io import load

#: shared/ lies beside the repository (in a checkout and in CI's clone alike); $STEMNMF_SHARED overrides it
REAL = Path(os.environ.get("STEMNMF_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "fixtures" / "real"


def test_the_real_fixtures_are_there():
    assert REAL.is_dir(), f"{REAL} is missing: put the project's shared/ beside the repository or set STEMNMF_SHARED"

MIB_HEADER = 384  # bytes before each frame ("MQ1,000001,00384,...")


@pytest.fixture(scope="module")
def merlin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("merlin")
    with zipfile.ZipFile(REAL / "Merlin_navigation4x2_ROI.zip") as zipped:
        zipped.extractall(folder)
    return folder


def _mib_frames(path: Path, shape) -> np.ndarray:
    """The frames of a U08 .mib, read straight from the bytes, upside down as RosettaSciIO returns them."""
    raw = np.fromfile(path, dtype=np.uint8)
    size = shape[0] * shape[1]
    frames = raw.reshape(-1, MIB_HEADER + size)
    assert bytes(frames[0, :4]) == b"MQ1,"
    return frames[:, MIB_HEADER:].reshape(-1, *shape)[:, ::-1]


def test_astar_blockfile():
    ds = load(REAL / "test1.blo")
    # README / RosettaSciIO test_blockfile: 3 rows x 2 columns at 12.8 nm, 144 x 144 uint8, 200 kV
    assert ds.shape == (3, 2, 144, 144) and np.dtype(ds.data.dtype) == np.uint8
    assert ds.calibration.scan_step == pytest.approx(12.8)
    assert ds.calibration.beam_energy == pytest.approx(200.0)
    assert ds.calibration.q_pixel is None  # the pattern axes are in cm on the camera, not 1/Å
    data = np.asarray(ds.data)
    assert data.max() > 100 and len(np.unique(data[0, 0])) > 50  # real counts, not an empty frame


@pytest.mark.parametrize("name, pattern", [("001_4x2_6bit.mib", (256, 256)), ("002_4x2_6bit_roi128.mib", (128, 256))])
def test_merlin_mib(merlin, name, pattern):
    path = merlin / name
    ds = load(path, scan_shape=(2, 4))  # README: 2 x 4 positions (RosettaSciIO: navigation_shape (4, 2) = x, y)
    assert ds.shape == (2, 4, *pattern) and np.dtype(ds.data.dtype) == np.uint8
    frames = _mib_frames(path, pattern)
    assert len(frames) == 8
    np.testing.assert_array_equal(np.asarray(ds.data).reshape(8, *pattern), frames)
    assert frames.max() <= 63  # 6-bit counter depth
    default = load(path)
    assert int(np.prod(default.scan_shape)) == 8  # without a scan shape the frames still all arrive, in order
    np.testing.assert_array_equal(np.asarray(default.data).reshape(8, *pattern), frames)


def test_prismatic_emd_gives_the_full_thickness_scan():
    path = REAL / "Si100_4D.emd"
    ds = load(path)
    with h5py.File(path, "r") as h5:
        deepest = h5["4DSTEM_simulation/data/datacubes/CBED_array_depth0001/datacube"][()]
        q_axis = h5["4DSTEM_simulation/data/datacubes/CBED_array_depth0001/dim3"][()]  # 1/nm
        r_axis = h5["4DSTEM_simulation/data/datacubes/CBED_array_depth0001/dim1"][()]  # nm
    assert ds.shape == (11, 11, 8, 8) and np.dtype(ds.data.dtype) == np.float32
    np.testing.assert_array_equal(np.asarray(ds.data), deepest)
    assert ds.calibration.scan_step == pytest.approx(float(r_axis[1] - r_axis[0]))  # 0.5 nm
    assert ds.calibration.q_pixel == pytest.approx(float(q_axis[1] - q_axis[0]) / 10.0, rel=1e-5)  # 1/nm -> 1/Å


def test_py4dstem_emd1():
    path = REAL / "py4DSTEM_size2x3x4x5.h5"
    ds = load(path)
    with h5py.File(path, "r") as h5:
        cal = h5["datacube_root/metadatabundle/calibration"]
        q_pixel, r_pixel = float(cal["Q_pixel_size"][()]), float(cal["R_pixel_size"][()])
        assert cal["Q_pixel_units"][()] == b"A^-1" and cal["R_pixel_units"][()] == b"nm"
        data = h5["datacube_root/datacube/data"][()]
    assert ds.shape == (2, 3, 4, 5) and np.dtype(ds.data.dtype) == data.dtype
    np.testing.assert_array_equal(np.asarray(ds.data), data)
    assert ds.calibration.q_pixel == pytest.approx(q_pixel) and ds.calibration.scan_step == pytest.approx(r_pixel)


@pytest.mark.slow
def test_run_on_the_blockfile_writes_results_and_report(tmp_path, capsys):
    out = tmp_path / "blo"
    assert main(["run", str(REAL / "test1.blo"), "-o", str(out), "--k", "2"]) == 0
    assert (out / "results.h5").is_file() and (out / "report.html").stat().st_size > 10_000
    with h5py.File(out / "results.h5", "r") as h5:
        assert h5["labels"].shape == (3, 2)
        assert h5["components/maps"].shape == (2, 3, 2)
        assert "calibration/quality/reliable" in h5
    assert "Calibration" in (out / "report.html").read_text()


@pytest.mark.slow
def test_run_on_the_mib_raw_features_or_one_clear_line(merlin, tmp_path, capsys):
    path = merlin / "001_4x2_6bit.mib"
    out = tmp_path / "mib"
    argv = ["run", str(path), "--scan-shape", "2x4", "-o", str(out), "--k", "2", "--feature", "raw"]
    assert main(argv) == 0
    assert (out / "results.h5").is_file() and (out / "report.html").is_file()
    capsys.readouterr()
    # a beam image has no rings for angular features: one line that says so, exit 2, nothing written
    bad = tmp_path / "mib-aa"
    assert main(["run", str(path), "--scan-shape", "2x4", "-o", str(bad), "--k", "2", "--feature", "aa"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stemnmf: error:")]
    assert len(errors) == 1 and "r_min" in errors[0]
    assert not (bad / "results.h5").exists()
