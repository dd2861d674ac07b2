"""NSD by hand, the background region, and the NSD matrix comparing preprocessing choices."""

import numpy as np
import pytest

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.filters import (
    background_region,
    compare_preprocessing,
    nsd,
    nsd_background,
    nsd_matrix,
    preprocess,
)
from stemnmf.io import Calibration, Dataset4D, Results, load_results, save_results


def test_nsd_by_hand():
    pattern = np.array([[0.0, 2.0], [0.0, 2.0]])
    assert nsd(pattern) == pytest.approx(1.0)
    stack = np.stack([pattern, 3 * pattern, np.full((2, 2), 7.0)])
    np.testing.assert_allclose(nsd(stack), [1.0, 3.0, 0.0])
    mask = np.array([[False, True], [False, True]])
    np.testing.assert_allclose(nsd(stack, mask=mask), [0.0, 0.0, 0.0])
    assert nsd(np.arange(10.0).reshape(1, 2, 5)).shape == (1,)


def test_background_region_is_the_corners():
    region = background_region((9, 9), min_pixels=4)
    yy, xx = np.indices((9, 9))
    np.testing.assert_array_equal(region, np.hypot(yy - 4, xx - 4) > 4.5)
    assert region[0, 0] and not region[4, 0] and not region[4, 4]
    region2 = background_region((9, 9), center=(4, 4), radius=2.0, min_pixels=4)
    assert region2[4, 0] and not region2[4, 3]
    with pytest.raises(DataValueError):
        background_region((9, 9), radius=20.0)


def test_nsd_background_ignores_the_spots():
    rng = np.random.default_rng(0)
    patterns = rng.normal(10.0, 2.0, (50, 40, 40))
    patterns[:, 15:25, 15:25] += 500.0  # strong central signal
    background = nsd_background(patterns)
    assert abs(background.mean() - 2.0) < 0.1
    assert nsd(patterns).mean() > 50  # the whole-pattern NSD is dominated by the signal


def scan(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((32, 32))
    clean = 2.0 + 100 * (np.hypot(yy - 16, xx - 16) <= 3) + 20 * (np.hypot(yy - 16, xx - 26) <= 2)
    return rng.poisson(np.broadcast_to(clean, (6, 5, 32, 32))).astype(np.float32)


def test_nsd_matrix_tabulates_variants_at_the_same_positions(tmp_path):
    data = scan()
    raw = Dataset4D(data)
    mean3 = preprocess(raw, "mean3", engine=Engine(progress=False))
    matrix = nsd_matrix({"raw": raw, "mean3": mean3, "array": data}, positions=[0, 7, 29], region="background")
    assert matrix.names == ["raw", "mean3", "array"]
    assert matrix.values.shape == (3, 3)
    flat = data.reshape(-1, 32, 32)
    np.testing.assert_allclose(matrix.values[0], nsd_background(flat[[0, 7, 29]]))
    np.testing.assert_allclose(matrix.values[2], matrix.values[0])
    np.testing.assert_allclose(matrix.values[1], nsd_background(np.asarray(mean3.data).reshape(-1, 32, 32)[[0, 7, 29]]))
    assert matrix.ratio[1, 0] < 0.5  # the 3 x 3 mean lowers the noise about 3 times (fewer at edges)
    np.testing.assert_allclose(np.diag(matrix.ratio), 1.0)
    assert "mean3" in matrix.table()
    save_results(Results(matrix.to_results()), tmp_path / "r.h5")
    back = load_results(tmp_path / "r.h5")
    assert list(back["/filters/nsd/names"]) == ["raw", "mean3", "array"]
    np.testing.assert_allclose(back["/filters/nsd/values"], matrix.values)
    with pytest.raises(ConfigError):
        nsd_matrix({"raw": raw}, positions=[30])
    with pytest.raises(ConfigError):
        nsd_matrix({"raw": raw}, region="corners")
    with pytest.raises(ConfigError):
        nsd_matrix({})


def test_compare_preprocessing_ranks_the_denoisers():
    data = scan(seed=1)
    ds = Dataset4D(data, Calibration(origin=(16.0, 16.0)))
    matrix = compare_preprocessing(
        ds,
        engine=Engine(progress=False),
        region="background",
        options={"lowrank": {"random_state": 0}, "epattern": {"disk_radius": 3}},
    )
    assert matrix.names == ["none", "mean3", "epattern", "lowrank"]
    assert matrix.values.shape == (4, 8)
    mean = dict(zip(matrix.names, matrix.mean))
    assert mean["epattern"] == 0.0  # only clean disks remain
    assert mean["lowrank"] < mean["mean3"] < mean["none"]
    with pytest.raises(ConfigError):
        compare_preprocessing(ds, methods=("none",), options={"lowrank": {}})
