"""NaN/Inf, negative and very large values: counted, reported, handled as documented."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from stemnmf.cli import main
from stemnmf.engine import Engine
from stemnmf.errors import DataValueError
from stemnmf.io import check_values, intensity_summary, load
from stemnmf.io.summary import apply_value_report

SHAPE = (3, 5, 8, 10)  # 1200 values


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_nan_and_inf_are_counted_read_as_zero_and_masked(tmp_path, caplog):
    data = np.ones(SHAPE, np.float32)
    data[:, :, 2, 3] = np.nan  # one pixel NaN in all 15 patterns
    data[0, 0, 0, 0] = np.nan
    data[1, 2, 5, 5] = np.nan
    data[2, 4, 7, 9] = np.nan
    data[0, 1, 1, 1] = np.inf
    data[2, 2, 4, 4] = -np.inf
    np.save(tmp_path / "nan.npy", data)
    with caplog.at_level(logging.WARNING):
        ds = load(tmp_path / "nan.npy")
    (line,) = [m for m in warnings_of(caplog) if "NaN" in m]
    assert "20 of 1200 values are NaN or Inf" in line and "read as 0" in line
    assert "the 1 detector pixel(s) that are NaN/Inf in every pattern are masked" in line
    expected_mask = np.zeros((8, 10), bool)
    expected_mask[2, 3] = True
    np.testing.assert_array_equal(ds.mask, expected_mask)
    assert ds.metadata["value_check"]["n_nonfinite"] == 20
    # the engine hands NaN/Inf to per-pattern functions as 0
    totals = Engine(progress=False).map(_pattern_sum, ds)
    expected = np.full(15, 80.0)
    expected -= 1  # pixel (2, 3)
    for flat in (0 * 5 + 0, 1 * 5 + 2, 2 * 5 + 4, 0 * 5 + 1, 2 * 5 + 2):
        expected[flat] -= 1
    np.testing.assert_array_equal(totals, expected)


def _pattern_sum(block, chunk):
    own = block[chunk.own]
    return own.reshape(-1, own.shape[-2] * own.shape[-1]).sum(axis=1, dtype=np.float64)


def test_lazy_data_is_checked_on_sampled_rows_and_fully_on_request(tmp_path, caplog):
    data = np.ones((40, 4, 6, 6), np.float32)
    data[:, :, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with caplog.at_level(logging.WARNING):
        ds = load(tmp_path / "nan.npy", lazy=True)
    (line,) = [m for m in warnings_of(caplog) if "NaN" in m]
    assert "(in 16 sampled scan rows)" in line and "64 of 2304 values" in line
    assert ds.mask is None  # a sample is not enough to mask a pixel
    report = check_values(ds)
    assert report.n_nonfinite == 160 and report.sampled_rows is None
    masked = apply_value_report(ds, report, log_warnings=False)
    assert masked.mask.sum() == 1 and masked.mask[0, 0]


def test_negative_values_are_reported(tmp_path, caplog):
    data = np.full(SHAPE, 5, np.int16)
    data[0, 0, :2, :3] = -4
    data[2, 1, 7, 9] = -11
    np.save(tmp_path / "neg.npy", data)
    with caplog.at_level(logging.WARNING):
        ds = load(tmp_path / "neg.npy")
    (line,) = [m for m in warnings_of(caplog) if "negative" in m]
    assert "7 of 1200 values are negative (minimum -11)" in line
    assert "clipped to 0 before NMF" in line
    assert ds.mask is None and ds.dtype == np.int16


def test_ordinary_data_gives_no_warning(tmp_path, caplog):
    np.save(tmp_path / "ok.npy", np.arange(1200, dtype=np.uint16).reshape(SHAPE))
    with caplog.at_level(logging.WARNING):
        load(tmp_path / "ok.npy")
    assert warnings_of(caplog) == []


def test_all_nan_is_refused(tmp_path, capsys):
    np.save(tmp_path / "allnan.npy", np.full(SHAPE, np.nan, np.float32))
    with pytest.raises(DataValueError, match="every value in .* is NaN or Inf"):
        load(tmp_path / "allnan.npy")
    assert main(["info", str(tmp_path / "allnan.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stemnmf: error:") and "\n" not in err


def test_uint32_sums_do_not_overflow(tmp_path, caplog):
    """Sums of uint32 data are accumulated in float64: exact where uint32 wraps and float32 rounds."""
    data = np.full(SHAPE, 4_000_000_001, np.uint32)
    data[1, 1] = 7
    np.save(tmp_path / "big.npy", data)
    with caplog.at_level(logging.WARNING):
        ds = load(tmp_path / "big.npy")
    (line,) = [m for m in warnings_of(caplog) if "2**24" in m]
    assert "1120 values exceed 2**24 = 16777216" in line and "sums are accumulated in float64" in line
    exact = int(data.astype(object).sum())
    assert int(data.sum(dtype=np.uint32)) != exact  # what a uint32 accumulator would give
    assert float(data.sum(dtype=np.float32)) != exact  # and a float32 one
    summary = intensity_summary(ds)
    assert summary["mean"] * summary["n_values"] == exact
    assert summary["max"] == 4_000_000_001 and summary["min"] == 7


def test_int64_and_uint64_are_reported(tmp_path, caplog):
    data = np.zeros(SHAPE, np.int64)
    data[0, 0, 0, 0] = -(2**40)
    data[0, 0, 0, 1] = 2**40
    np.save(tmp_path / "i64.npy", data)
    with caplog.at_level(logging.WARNING):
        report = check_values(load(tmp_path / "i64.npy"))
    assert report.n_inexact == 2 and report.n_negative == 1
    udata = np.full(SHAPE, 2**60, np.uint64)
    np.save(tmp_path / "u64.npy", udata)
    ds = load(tmp_path / "u64.npy")
    assert check_values(ds).n_inexact == 1200
    assert intensity_summary(ds)["mean"] == pytest.approx(2.0**60, rel=1e-15)


def test_values_beyond_float32_are_refused(tmp_path, capsys):
    data = np.ones(SHAPE, np.float64)
    data[1, 1, 1, 1] = 1e39
    np.save(tmp_path / "huge.npy", data)
    with pytest.raises(DataValueError, match="1 values in .* exceed float32's range"):
        load(tmp_path / "huge.npy")
    assert main(["info", str(tmp_path / "huge.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "rescale the data" in err and "\n" not in err


def test_info_reports_counts(tmp_path, capsys):
    data = np.ones(SHAPE, np.float32)
    data[0, 0, 0, 0] = np.nan
    data[0, 0, 0, 1] = -2
    np.save(tmp_path / "mixed.npy", data)
    assert main(["info", str(tmp_path / "mixed.npy")]) == 0
    captured = capsys.readouterr()
    assert "1 negative, 1 NaN/Inf" in captured.out
    assert "1 of 1200 values are NaN or Inf" in captured.err
    assert "1 of 1200 values are negative" in captured.err
