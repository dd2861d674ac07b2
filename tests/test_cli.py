import numpy as np

from stemnmf.cli import main
from stemnmf.io import Calibration, Dataset4D, save_scan


def test_info_prints_shape_calibration_and_intensities(tmp_path, capsys):
    data = np.zeros((3, 4, 8, 6), np.uint16)
    data[..., 2, 3] = 5
    path = save_scan(tmp_path / "scan.h5", Dataset4D(data, Calibration(scan_step=0.25, q_pixel=0.01)))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 x 4 positions (12 patterns)" in out
    assert "8 x 6 pixels, uint16" in out
    assert "0.25 nm" in out and "0.01 1/Å" in out
    assert "min 0, max 5" in out and "0 NaN/Inf" in out


def test_info_override_calibration(tmp_path, capsys):
    path = save_scan(tmp_path / "scan.h5", Dataset4D(np.ones((2, 2, 4, 4), np.float32)))
    assert main(["info", str(path), "--scan-step", "1.5"]) == 0
    assert "1.5 nm" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("stemnmf: error:") and "does not exist" in err


def test_bad_option_is_exit_2(capsys):
    try:
        code = main(["info", "x.h5", "--scan-shape", "banana"])
    except SystemExit as exit:
        code = exit.code
    assert code == 2, "a bad scan shape was accepted"
    err = capsys.readouterr().err.strip()
    assert "cannot read the scan shape" in err and err.count("\n") == 0
