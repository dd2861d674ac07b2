"""calibrate(): every step together on a synthetic scan, chunking independence, the results file."""

import dask.array as da
import numpy as np
import pytest

from stemnmf.calibrate import CalibrationReport, calibrate
from stemnmf.engine import Engine
from stemnmf.io import Calibration, Dataset4D, Results, load_results, save_results

SHAPE = (64, 64)


def disk(shape, center, radius, amplitude):
    yy, xx = np.indices(shape)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


def ring(shape, center, a, b, angle, sigma=1.3):
    yy, xx = np.indices(shape, dtype=float)
    x, y = xx - center[1], yy - center[0]
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    radius = 0.5 * (a + b)
    return np.exp(-((np.hypot(u * radius / a, v * radius / b) - radius) ** 2) / (2 * sigma**2))


ELLIPSE = (22.0, 20.0, np.radians(25.0))


def synthetic_scan(sy=6, sx=8, seed=0):
    """Descan plane, a ring with a known ellipse, a hot pixel, a dead pixel, Poisson noise."""
    yy, xx = np.indices((sy, sx))
    origins = np.stack([31.0 + 0.2 * yy - 0.1 * xx, 32.5 + 0.05 * yy + 0.15 * xx], axis=-1)
    data = np.empty((sy, sx, *SHAPE))
    for y in range(sy):
        for x in range(sx):
            c = origins[y, x]
            data[y, x] = 3 + disk(SHAPE, c, 4, 300) + 40 * ring(SHAPE, c, *ELLIPSE)
    data = np.random.default_rng(seed).poisson(data).astype(np.float32)
    data[:, :, 5, 50] += 500.0
    data[:, :, 60, 8] = 0.0
    return data, origins


def test_full_calibration_on_a_synthetic_scan():
    data, truth = synthetic_scan()
    ds = Dataset4D(data, Calibration(q_pixel=0.01, scan_step=0.5))
    out, report = calibrate(
        ds, engine=Engine(chunk_rows=2, progress=False), correct_shift=True, ellipse=True, edge_pixels=1
    )
    assert report.hot_pixels.tolist() == [[5, 50]]
    assert report.dead_pixels.tolist() == [[60, 8]]
    np.testing.assert_allclose(report.origin_fit.fitted, truth, atol=0.05)
    assert report.origin_fit.residual_rms < 0.1
    a, b, angle = out.calibration.ellipse
    assert abs(a / b - ELLIPSE[0] / ELLIPSE[1]) < 0.01 * ELLIPSE[0] / ELLIPSE[1]
    assert abs(np.degrees(angle) - 25.0) < 1.0
    assert out.calibration.origin == pytest.approx(tuple(truth.reshape(-1, 2).mean(axis=0)), abs=0.05)
    assert out.calibration.q_pixel == 0.01 and out.calibration.scan_step == 0.5
    assert out.mask[60, 8] and out.mask[0].all()
    assert report.warnings == []
    assert (out.data >= 0).all()
    text = report.summary()
    assert "hot pixels 1" in text and "ellipse" in text


@pytest.mark.parametrize("bin_q", [1, 2])
def test_result_identical_in_memory_chunked_and_lazy(bin_q):
    data, _ = synthetic_scan(sy=5, sx=4, seed=3)
    runs = []
    for ds, rows, threads in [
        (Dataset4D(data), 100, 1),
        (Dataset4D(data), 1, 2),
        (Dataset4D(da.from_array(data, chunks=(2, -1, -1, -1))), 2, 2),
    ]:
        out, report = calibrate(
            ds, engine=Engine(chunk_rows=rows, n_threads=threads, progress=False),
            bin_q=bin_q, correct_shift=True, ellipse=True,
        )
        assert out.is_lazy == ds.is_lazy
        runs.append((np.asarray(out.data), out.mask, out.origins, out.calibration, report))
    first = runs[0]
    for other in runs[1:]:
        np.testing.assert_allclose(other[0], first[0], rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(other[1], first[1])
        np.testing.assert_allclose(other[2], first[2], atol=1e-5)
        assert other[3].origin == pytest.approx(first[3].origin, abs=1e-5)
        assert other[3].ellipse == pytest.approx(first[3].ellipse, abs=1e-4)
        assert other[4].hot_pixels.tolist() == first[4].hot_pixels.tolist()


def test_report_goes_into_the_results_file(tmp_path):
    data, _ = synthetic_scan(sy=4, sx=4)
    out, report = calibrate(Dataset4D(data), engine=Engine(progress=False), correct_shift=True, ellipse=True)
    entries = report.to_results()
    assert all(path.startswith("/calibration/") for path in entries)
    path = save_results(Results(entries), tmp_path / "results.h5")
    back = load_results(path)
    np.testing.assert_array_equal(back["/calibration/hot_pixels"], [[5, 50]])
    np.testing.assert_allclose(back["/calibration/ellipse"], out.calibration.ellipse)
    np.testing.assert_allclose(back["/calibration/origin"], out.calibration.origin)
    np.testing.assert_allclose(back["/calibration/origins"], out.origins)
    assert back["/calibration/origin_fit/model"] == "plane"
    assert list(back["/calibration/origin_fit/terms"]) == ["1", "y", "x"]
    assert back["/calibration/origins_measured"].shape == (4, 4, 2)
    _, truth = synthetic_scan(sy=4, sx=4)
    np.testing.assert_allclose(back["/calibration/origin_fit/fitted"], truth, atol=0.05)
    np.testing.assert_array_equal(back["/calibration/mask"].astype(bool), out.mask)
    assert back["/calibration/n_masked"] == out.mask.sum()
    assert back["/calibration/warnings"].shape == (0,)


def test_nothing_asked_changes_nothing():
    data, _ = synthetic_scan(sy=2, sx=3)
    ds = Dataset4D(data)
    out, report = calibrate(
        ds, engine=Engine(progress=False), hot_pixels=False, dead_pixels=False, origin=None, beam_stop=None
    )
    assert out.data is ds.data and out.mask is None and out.origins is None
    assert isinstance(report, CalibrationReport) and report.n_hot == 0 and report.origin is None


def test_calibrate_a_simulated_scan_finds_its_origin():
    import stemnmf

    dataset, _ = stemnmf.simulate("tiny", seed=2)
    known = dataset.calibration.origin
    out, report = calibrate(dataset, engine=Engine(progress=False), correct_shift=True)
    assert out.calibration.origin == pytest.approx(known, abs=0.1)
    assert report.origin_fit.residual_rms < 0.1 and report.max_shift < 0.2
    assert out.calibration.q_pixel == dataset.calibration.q_pixel


def test_origins_given_with_the_dataset_are_used_for_shift_correction():
    data, truth = synthetic_scan(sy=3, sx=4, seed=4)
    ds = Dataset4D(data, origins=truth)
    out, report = calibrate(ds, engine=Engine(progress=False), origin=None, correct_shift=True, beam_stop=None)
    reference = truth.reshape(-1, 2).mean(axis=0)
    assert report.shift_corrected and out.calibration.origin == pytest.approx(tuple(reference))
    np.testing.assert_allclose(out.origins, np.broadcast_to(reference, truth.shape), atol=1e-5)
