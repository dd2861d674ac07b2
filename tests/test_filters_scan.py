"""Scan-space mean filter: a hand computation on a 3 x 3 scan, and chunking independence."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.filters import preprocess, scan_mean, scan_mean_filter
from stemnmf.io import Calibration, Dataset4D


def test_mean_filter_equals_hand_computation_on_a_3x3_scan():
    values = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0], [64.0, 128.0, 256.0]])
    data = np.zeros((3, 3, 2, 2), np.float32)
    data[...] = values[:, :, None, None]
    data[:, :, 1, 1] *= 3  # a second, independent pixel
    out = scan_mean_filter(data)
    centre = (1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 256) / 9
    corner = (1 + 2 + 8 + 16) / 4
    edge = (1 + 2 + 4 + 8 + 16 + 32) / 6  # (0, 1): rows 0-1, columns 0-2
    far_corner = (16 + 32 + 128 + 256) / 4
    assert out[1, 1, 0, 0] == pytest.approx(centre)
    assert out[0, 0, 0, 0] == pytest.approx(corner)
    assert out[0, 1, 0, 0] == pytest.approx(edge)
    assert out[2, 2, 0, 0] == pytest.approx(far_corner)
    assert out[1, 0, 0, 0] == pytest.approx((1 + 2 + 8 + 16 + 64 + 128) / 6)
    np.testing.assert_allclose(out[:, :, 1, 1], 3 * out[:, :, 0, 0], rtol=1e-6)
    assert out.dtype == np.float32


def test_size_one_is_identity_and_bad_sizes_fail():
    data = np.random.default_rng(0).random((3, 4, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(scan_mean_filter(data, size=1), data)
    for size in (2, 0, -3, 1.5):
        with pytest.raises(ConfigError):
            scan_mean_filter(data, size=size)
    with pytest.raises(DataValueError):
        scan_mean_filter(data[0])


@pytest.mark.parametrize("size", [3, 5])
def test_dataset_filter_independent_of_chunking_and_laziness(size):
    data = np.random.default_rng(1).random((9, 5, 6, 4)).astype(np.float32)
    expected = scan_mean_filter(data, size=size)
    for ds, rows in [
        (Dataset4D(data), 100),
        (Dataset4D(data), 1),
        (Dataset4D(data), 2),
        (Dataset4D(da.from_array(data, chunks=(3, -1, -1, -1))), 2),
    ]:
        out = scan_mean(ds, size=size, engine=Engine(chunk_rows=rows, progress=False))
        assert out.is_lazy == ds.is_lazy
        np.testing.assert_allclose(np.asarray(out.data), expected, rtol=1e-6)
    # by hand at (4, 2) for size 3: the 3 x 3 block of rows 3-5, columns 1-3
    if size == 3:
        np.testing.assert_allclose(expected[4, 2], data[3:6, 1:4].mean(axis=(0, 1)), rtol=1e-6)


def test_preprocess_mean3_keeps_calibration_and_records_the_method():
    data = np.random.default_rng(2).random((4, 4, 6, 6)).astype(np.float32)
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = True
    ds = Dataset4D(data, Calibration(q_pixel=0.05, origin=(3.0, 3.0)), mask=mask)
    out = preprocess(ds, "mean3", engine=Engine(progress=False))
    assert out.calibration == ds.calibration and out.mask is not None and out.mask[0, 0]
    assert out.metadata["preprocessing"] == {"method": "mean3"}
    np.testing.assert_allclose(out.data, scan_mean_filter(data), rtol=1e-6)
    assert preprocess(ds, "none") is ds
    with pytest.raises(ConfigError, match="unknown"):
        preprocess(ds, "median9")
    with pytest.raises(ConfigError, match="no option"):
        preprocess(ds, "mean3", radius=2)


@settings(max_examples=25, deadline=None)
@given(sy=st.integers(1, 6), sx=st.integers(1, 6), size=st.sampled_from([1, 3, 5]), seed=st.integers(0, 2**16))
def test_mean_filter_is_a_mean(sy, sx, size, seed):
    data = np.random.default_rng(seed).random((sy, sx, 3, 2)).astype(np.float32)
    out = scan_mean_filter(data, size=size)
    # bounded by the data, and a constant scan is left alone
    assert (out >= data.min(axis=(0, 1)) - 1e-6).all() and (out <= data.max(axis=(0, 1)) + 1e-6).all()
    constant = np.broadcast_to(data[0, 0], data.shape)
    np.testing.assert_allclose(scan_mean_filter(constant, size=size), constant, rtol=1e-6)
