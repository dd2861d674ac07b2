import dask.array as da
import numpy as np
import pytest

from stemnmf.errors import DataValueError, InputError
from stemnmf.io import Calibration, Dataset4D, electron_wavelength


def test_shapes_and_rows(small_dataset, small_array):
    assert small_dataset.scan_shape == (7, 5) and small_dataset.pattern_shape == (12, 10)
    assert small_dataset.n_positions == 35 and not small_dataset.is_lazy
    assert small_dataset.nbytes == small_array.nbytes
    np.testing.assert_array_equal(small_dataset.read_rows(2, 4), small_array[2:4])
    lazy = Dataset4D(da.from_array(small_array, chunks=(1, -1, -1, -1)))
    assert lazy.is_lazy
    np.testing.assert_array_equal(lazy.read_rows(2, 4), small_array[2:4])
    np.testing.assert_array_equal(lazy.compute().data, small_array)


def test_rejects_wrong_dimensions_and_types():
    with pytest.raises(InputError, match="needs 4 dimensions"):
        Dataset4D(np.zeros((3, 4, 5)))
    with pytest.raises(InputError, match="empty"):
        Dataset4D(np.zeros((0, 4, 5, 5)))
    with pytest.raises(DataValueError, match="real numbers"):
        Dataset4D(np.zeros((2, 2, 2, 2), complex))
    with pytest.raises(DataValueError, match="covers every detector pixel"):
        Dataset4D(np.zeros((2, 2, 3, 3)), mask=np.ones((3, 3), bool))
    with pytest.raises(DataValueError, match="does not match the pattern shape"):
        Dataset4D(np.zeros((2, 2, 3, 3)), mask=np.ones((2, 3), bool))


def test_replace_drops_geometry_that_no_longer_fits(small_dataset):
    with_mask = small_dataset.replace(mask=np.zeros((12, 10), bool))
    binned = with_mask.replace(data=np.zeros((7, 5, 6, 5), np.float32))
    assert binned.mask is None and binned.calibration == small_dataset.calibration


def test_calibration_validation_and_wavelength():
    cal = Calibration(scan_step="0.5", beam_energy=200)
    assert cal.scan_step == 0.5
    assert cal.replace(q_pixel=0.02, scan_step=None).scan_step == 0.5
    with pytest.raises(DataValueError, match="not a positive number"):
        Calibration(q_pixel=-1)
    assert Calibration.from_dict(cal.to_dict() | {"unknown": 1}) == cal
    # tabulated: 200 keV -> 0.02508 Å, 300 keV -> 0.01969 Å
    assert electron_wavelength(200) == pytest.approx(0.025079, abs=1e-5)
    assert cal.wavelength == pytest.approx(0.025079, abs=1e-5)
    assert Calibration().wavelength is None
