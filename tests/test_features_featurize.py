"""featurize(): streaming through the engine, invariance, masks, origins, scaling, description."""

from __future__ import annotations

import math

import numpy as np
import pytest

import stemnmf
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError
from stemnmf.features import FeatureDescription, angular_average, featurize, radial_variance
from stemnmf.io import Calibration, Dataset4D, Results, load_results, save_results

SHAPE = (48, 48)
CENTRE = (23.5, 23.5)
ALL = "aa+rv+bd+raw"


def disks(shape, centres, radius, amplitudes):
    y, x = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for (cy, cx), a in zip(centres, amplitudes):
        img += a * np.clip(radius + 0.5 - np.hypot(y - cy, x - cx), 0, 1)
    return img


def spot_positions(origin, radius, angles):
    t = np.radians(angles)
    return [(origin[0] + radius * math.sin(a), origin[1] + radius * math.cos(a)) for a in t]


def spot_scan(sy=5, sx=4, origins=None, vacuum_rows=0, seed=0, noise=True):
    """Beam (radius 3) plus six spots on rings of radius 11 and 18, turned by 7 degrees per position."""
    rng = np.random.default_rng(seed)
    data = np.zeros((sy, sx, *SHAPE), np.float32)
    for i in range(sy):
        for j in range(sx):
            o = CENTRE if origins is None else tuple(origins[i, j])
            turn = 7.0 * (i * sx + j)
            centres = [o]
            amps = [400.0]
            if i >= vacuum_rows:
                centres += spot_positions(o, 11.0, turn + np.arange(6) * 60)
                centres += spot_positions(o, 18.0, turn + 30 + np.arange(6) * 60)
                amps += [40.0] * 6 + [20.0] * 6
            img = disks(SHAPE, centres, 3.0, amps) + 1.0
            data[i, j] = rng.poisson(img) if noise else img
    return data


@pytest.fixture(scope="module")
def scan():
    rng = np.random.default_rng(5)
    sy, sx = 5, 4
    origins = (np.array(CENTRE) + rng.uniform(-1.5, 1.5, size=(sy, sx, 2))).astype(np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[20:27, 36:] = True  # a beam-stop arm
    mask[0, :] = True  # a dead row
    data = spot_scan(sy, sx, origins)
    return Dataset4D(data, Calibration(origin=CENTRE), mask=mask, origins=origins)


def quiet(**kw):
    return Engine(progress=False, **kw)


def assert_same_columns(a, b):
    assert a.dtype == b.dtype
    for name in a.dtype.names:  # field by field, so that NaN equals NaN
        np.testing.assert_array_equal(a[name], b[name])


# ---- streaming invariance -------------------------------------------------------------------


def test_identical_in_one_batch_in_chunks_and_lazily(scan):
    X1, d1 = featurize(scan, ALL, engine=quiet(chunk_rows=scan.scan_shape[0], n_threads=1))
    X2, d2 = featurize(scan, ALL, engine=quiet(chunk_rows=1, n_threads=2))
    import dask.array as da

    lazy = scan.replace(data=da.from_array(scan.data, chunks=(2, -1, -1, -1)))
    assert lazy.is_lazy
    X3, d3 = featurize(lazy, ALL, engine=quiet(chunk_rows=2))
    assert X1.dtype == np.float32 and X1.shape[0] == scan.n_positions
    for X, d in ((X2, d2), (X3, d3)):
        np.testing.assert_array_equal(X, X1)
        assert_same_columns(d.columns, d1.columns)
        np.testing.assert_array_equal(d.max_pattern, d1.max_pattern)
        assert d.settings == d1.settings
    blocks = d1.blocks()
    assert list(blocks) == ["aa", "rv", "bd", "raw"]
    assert sum(s.stop - s.start for s in blocks.values()) == X1.shape[1]


@pytest.mark.slow
def test_identical_on_a_local_cluster(scan):
    distributed = pytest.importorskip("distributed")
    X1, d1 = featurize(scan, ALL, engine=quiet(chunk_rows=2))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            X2, d2 = featurize(scan, ALL, engine=Engine(scheduler=client, chunk_rows=1, progress=False))
    np.testing.assert_array_equal(X2, X1)
    assert_same_columns(d2.columns, d1.columns)


def test_masked_pixels_never_contribute(scan):
    wild = np.array(scan.data, copy=True)
    rng = np.random.default_rng(9)
    wild[:, :, scan.mask] = rng.uniform(0, 1e6, size=wild[:, :, scan.mask].shape)
    X1, d1 = featurize(scan, ALL, engine=quiet(), scaling="none")
    X2, d2 = featurize(scan.replace(data=wild), ALL, engine=quiet(), scaling="none")
    np.testing.assert_array_equal(X1, X2)
    # the raw block (bin 1 here) leaves out the masked pixels
    raw = d1.columns[d1.block("raw")]
    assert raw.size == (~scan.mask).sum() and not np.any(raw["qy"] == 0)


def test_nan_and_inf_pixels_read_as_zero(scan):
    """AA and RV (which skip the engine's pass for it) and BD read NaN and Inf pixels as 0, like the engine."""
    zeroed = np.array(scan.data, copy=True)
    spoiled = zeroed.copy()
    spoiled[1, 2, 24, 28] = np.nan  # on the inner ring
    spoiled[3, 0, 10, 30] = np.inf
    spoiled[4, 3, 2, 2] = -np.inf  # in a corner no bin uses
    spoiled[0, 0] = np.nan  # a whole pattern
    spoiled[:, :, 0, 5] = np.nan  # a masked pixel (the dead row), in every pattern
    zeroed[~np.isfinite(spoiled)] = 0.0
    opts = dict(engine=quiet(chunk_rows=2), scaling="none", origin=CENTRE, rings=[(6, 14.5), (14.5, 20)], r_min=6,
                statistics=True)
    for representation in ("aa+rv", "aa+rv+bd"):
        X_zero, d_zero = featurize(scan.replace(data=zeroed), representation, **opts)
        X_spoiled, d_spoiled = featurize(scan.replace(data=spoiled), representation, **opts)
        np.testing.assert_array_equal(X_spoiled, X_zero)
        assert np.isfinite(X_spoiled).all()
        # the statistics pass (which also reads them itself) gives the same maximum and mean patterns
        np.testing.assert_array_equal(d_spoiled.max_pattern, d_zero.max_pattern)
        np.testing.assert_array_equal(d_spoiled.mean_pattern, d_zero.mean_pattern)


# ---- geometry: origins and ellipse ----------------------------------------------------------


def test_per_position_origins_are_honoured():
    """Patterns moved by whole pixels, with their origins, give the features of the unmoved scan."""
    rng = np.random.default_rng(2)
    base = spot_scan(4, 4, noise=False)
    shifts = rng.integers(-3, 4, size=(4, 4, 2))
    moved = np.stack([[np.roll(base[i, j], tuple(shifts[i, j]), (0, 1)) for j in range(4)] for i in range(4)])
    origins = (np.array(CENTRE) + shifts).astype(np.float32)
    opts = dict(rings=[(6, 14.5), (14.5, 20)], r_min=6, r_max=20, scaling="none", engine=quiet())
    X_moved, _ = featurize(Dataset4D(moved, origins=origins), "aa+rv", **opts)
    X_base, _ = featurize(Dataset4D(base), "aa+rv", origin=CENTRE, **opts)
    np.testing.assert_array_equal(X_moved, X_base)
    # ignoring the origins (one origin for all) changes them
    X_wrong, _ = featurize(Dataset4D(moved), "aa+rv", origin=CENTRE, **opts)
    assert np.abs(X_wrong - X_base).max() > 1.0


def test_sectors_off_the_detector_at_some_origins_are_imputed(caplog):
    data = spot_scan(2, 2, noise=False)
    origins = np.full((2, 2, 2), CENTRE, np.float32)
    origins[1, 1] = (CENTRE[0], CENTRE[1] + 20)  # there sectors near 0 degrees lie off the detector
    ds = Dataset4D(data, origins=origins)
    rings = [(6, 14.5), (14.5, 21)]
    with caplog.at_level("WARNING", logger="stemnmf.features"):
        X, d = featurize(ds, "aa", engine=quiet(), scaling="none", rings=rings, subpixel=2)
    assert np.isfinite(X).all() and "column mean" in caplog.text
    direct = angular_average(data[1, 1], rings, tuple(origins[1, 1]), subpixel=2)
    empty = np.isnan(direct[d.columns["index"]])
    assert empty.any()
    np.testing.assert_allclose(X[3, empty], X[:3, empty].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(X[3, ~empty], direct[d.columns["index"]][~empty], rtol=1e-6)


def test_a_ring_mostly_off_the_detector_is_warned_about(caplog):
    ds = Dataset4D(spot_scan(2, 2, noise=False), Calibration(origin=CENTRE))
    with caplog.at_level("WARNING", logger="stemnmf.features"):
        X, d = featurize(ds, "aa", engine=quiet(), rings=[(6, 14.5), (14.5, 21)])
    assert "keeps only" not in caplog.text  # both rings lie on the 48 x 48 detector
    with caplog.at_level("WARNING", logger="stemnmf.features"):
        X, d = featurize(ds, "aa", engine=quiet(), rings=[(6, 14.5), (30, 40)])
    assert "ring 1 (30.0-40.0 px) keeps only" in caplog.text and "ring 0" not in caplog.text
    assert (d.columns["ring"] == 1).sum() < 36


def test_featurize_matches_the_pure_functions():
    data = spot_scan(3, 3)
    ds = Dataset4D(data, Calibration(origin=CENTRE))
    X, d = featurize(ds, "aa+rv", engine=quiet(), scaling="none", rings=[(6, 14.5), (14.5, 21)], r_min=6, r_max=21)
    flat = data.reshape(-1, *SHAPE)
    aa = angular_average(flat, [(6, 14.5), (14.5, 21)], CENTRE)
    rv, radii = radial_variance(flat, CENTRE, r_min=6, r_max=21)
    np.testing.assert_array_equal(X[:, d.block("aa")], aa)
    np.testing.assert_array_equal(X[:, d.block("rv")], rv)
    np.testing.assert_array_equal(d.columns["radius"][d.block("rv")], radii.astype(np.float32))
    assert d.columns["angle"][d.block("aa")][:3].tolist() == [2.5, 7.5, 12.5]


def test_elliptical_calibration_finds_undistorted_rings_and_sectors():
    a, b, phi = 11.5, 8.7, math.radians(20)  # axis ratio 1.32, a axis at 20 degrees from +qx

    def distort(r, t):  # corrected (radius, angle) -> detector offsets (dy, dx), by hand
        cy, cx = r * math.sin(math.radians(t)), r * math.cos(math.radians(t))
        u = (cx * math.cos(phi) + cy * math.sin(phi)) * math.sqrt(a / b)
        v = (-cx * math.sin(phi) + cy * math.cos(phi)) * math.sqrt(b / a)
        return u * math.sin(phi) + v * math.cos(phi), u * math.cos(phi) - v * math.sin(phi)

    angles = [15.0, 95.0, 225.0, 305.0]  # centres of 10 degree sectors 1, 9, 22, 30
    origin = (31.5, 31.5)
    data = np.zeros((2, 2, 64, 64), np.float32)
    for k, t in enumerate(angles):  # one spot per ring per pattern
        centres = [origin] + [tuple(np.add(origin, distort(r, t))) for r in (13.0, 22.0)]
        data[k // 2, k % 2] = disks((64, 64), centres, 1.5, [300, 30, 30]) + 1
    ds = Dataset4D(data, Calibration(origin=origin, ellipse=(a, b, phi)))
    X, d = featurize(ds, "aa", engine=quiet(), scaling="none", sector_width=10)
    assert d.rings.shape == (2, 2)
    assert d.rings[0, 0] < 13 < d.rings[0, 1] <= d.rings[1, 0] < 22 < d.rings[1, 1]
    wrong = 0
    X_plain, d_plain = featurize(ds, "aa", engine=quiet(), scaling="none", sector_width=10, ellipse=False,
                                 rings=d.rings)
    for ring in range(2):
        cols = d.columns["ring"] == ring
        found = d.columns["angle"][cols][np.argmax(X[:, cols], axis=1)]
        np.testing.assert_array_equal(found, angles)
        plain = d_plain.columns["angle"][cols][np.argmax(X_plain[:, cols], axis=1)]
        wrong += int(np.sum(plain != np.array(angles)))
    assert wrong >= 2  # the distortion moves spots into other sectors when it is ignored


# ---- BD through featurize ------------------------------------------------------------------


def test_bd_finds_the_spots_and_none_in_vacuum():
    data = spot_scan(4, 3, vacuum_rows=2, noise=True, seed=3)
    ds = Dataset4D(data, Calibration(origin=CENTRE))
    X, d = featurize(ds, "bd", engine=quiet(), scaling="none", template="synthetic", disk_radius=3.0)
    np.testing.assert_array_equal(d.n_disks[:2], 0)  # vacuum rows: only the direct beam, left out
    np.testing.assert_array_equal(d.n_disks[2:], 12)  # twelve spots everywhere else
    assert np.all(X[:6] == 0) and np.all(X[6:].sum(axis=1) > 0)
    # every kept grid bin is within a bin of a spot radius
    radius = d.columns["radius"]
    assert np.all((np.abs(radius - 11) < 3 * 1.5) | (np.abs(radius - 18) < 3 * 1.5))
    # the Bragg vector map holds the spots on circles of radius 11 and 18 about its centre
    bvm = d.bragg_vector_map
    h = (bvm.shape[0] - 1) // 2
    y, x = np.mgrid[: bvm.shape[0], : bvm.shape[1]]
    r = np.hypot(y - h, x - h)
    on_rings = (np.abs(r - 11) < 1.5) | (np.abs(r - 18) < 1.5)
    assert bvm[on_rings].sum() > 0.99 * bvm.sum()


def test_bd_templates_agree():
    data = spot_scan(3, 2, vacuum_rows=1, noise=False)
    ds = Dataset4D(data, Calibration(origin=CENTRE))
    counts = []
    for template in ("beam", "vacuum", "synthetic", disks((11, 11), [(5, 5)], 3.0, [1.0])):
        _, d = featurize(ds, "bd", engine=quiet(), template=template, vacuum_region=(0, 1, 0, 2), disk_radius=3.0)
        counts.append(d.n_disks)
    for c in counts[1:]:
        np.testing.assert_array_equal(c, counts[0])
    np.testing.assert_array_equal(counts[0][1:], 12)


# ---- raw, scaling, description -------------------------------------------------------------


def test_raw_binning_and_transforms():
    data = spot_scan(2, 2, noise=False)
    ds = Dataset4D(data)
    X, d = featurize(ds, "raw", engine=quiet(), scaling="none", raw_bin=4)
    assert X.shape == (4, 12 * 12)
    np.testing.assert_allclose(X[0, 0], data[0, 0, :4, :4].mean(), rtol=1e-6)
    assert (d.columns["qy"][0], d.columns["qx"][1]) == (1.5, 5.5)
    X_log, _ = featurize(ds, "raw", engine=quiet(), scaling="none", raw_bin=4, raw_transform="log")
    np.testing.assert_allclose(X_log, np.log1p(X), rtol=1e-6)
    X_sqrt, _ = featurize(ds, "raw", engine=quiet(), scaling="none", raw_bin=4, raw_transform="sqrt")
    np.testing.assert_allclose(X_sqrt, np.sqrt(X), rtol=1e-6)
    X_auto, d_auto = featurize(ds, "raw", engine=quiet())
    assert X_auto.shape[1] == 48 * 48 and d_auto.settings["raw"]["bin"] == 1  # 2304 <= 4096 features


def test_scalings(scan):
    X_none, d = featurize(scan, "aa+bd", engine=quiet(), scaling="none")
    X_mm, d_mm = featurize(scan, "aa+bd", engine=quiet(), scaling="minmax")
    lo, hi = X_none.min(axis=0), X_none.max(axis=0)
    np.testing.assert_array_equal(d_mm.scale_min, lo)
    np.testing.assert_array_equal(d_mm.scale_max, hi)
    varying = hi > lo
    np.testing.assert_allclose(X_mm[:, varying].min(axis=0), 0)
    np.testing.assert_allclose(X_mm[:, varying].max(axis=0), 1, rtol=1e-6)
    np.testing.assert_allclose(X_mm, np.where(varying, (X_none - lo) / np.where(varying, hi - lo, 1), 0), atol=1e-6)
    X_p, d_p = featurize(scan, "aa+bd", engine=quiet(), scaling="pattern")
    for block in d_p.blocks().values():
        np.testing.assert_allclose(X_p[:, block].max(axis=1), 1, rtol=1e-6)
        np.testing.assert_allclose(X_p[:, block], X_none[:, block] / X_none[:, block].max(axis=1, keepdims=True),
                                   rtol=1e-6)


def test_description_goes_to_the_results_file_and_back(scan, tmp_path):
    X, d = featurize(scan, "aa+rv+bd", engine=quiet())
    paths = d.to_results()
    for key in ("/features/columns", "/features/settings", "/features/max_pattern", "/features/rings",
                "/features/radial_profile", "/features/bd/bragg_vector_map", "/features/bd/n_disks"):
        assert key in paths
    assert paths["/features/columns"].shape == (X.shape[1],)
    assert paths["/features/bd/n_disks"].shape == scan.scan_shape
    save_results(Results(paths), tmp_path / "r.h5")
    back = FeatureDescription.from_results(load_results(tmp_path / "r.h5"))
    assert_same_columns(back.columns, d.columns)
    np.testing.assert_array_equal(back.rings, d.rings)
    assert back.settings["rings"] == d.settings["rings"] and back.representation == "aa+rv+bd"
    assert back.blocks() == d.blocks()
    # the report can draw ring bounds and sectors on the maximum pattern
    from stemnmf.features import detector_coordinates

    qy, qx = detector_coordinates(d.rings[0, 1], np.arange(0, 360, 5), back.origin, back.ellipse)
    assert np.all((qy > 0) & (qy < SHAPE[0]) & (qx > 0) & (qx < SHAPE[1]))


def test_statistics_pass_only_when_needed():
    ds = Dataset4D(spot_scan(2, 2, noise=False))
    given = dict(engine=quiet(), rings=[(6, 14.5), (14.5, 21)], origin=CENTRE)
    X1, d1 = featurize(ds, "aa", **given)
    assert d1.max_pattern is None and d1.settings["origin_source"] == "option"
    X2, d2 = featurize(ds, "aa", statistics=True, **given)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(d2.max_pattern, ds.data.max(axis=(0, 1)))  # no shifts: the plain maximum
    _, d3 = featurize(ds, "aa", engine=quiet())  # origin and rings found on the data
    assert d3.settings["origin_source"] == "found"
    assert d3.origin == pytest.approx(CENTRE, abs=0.05)


def test_simulated_tiny_scan():
    dataset, _ = stemnmf.simulate("tiny", seed=1)
    X, d = stemnmf.featurize(dataset, "aa+rv+bd", engine=quiet())
    assert X.shape[0] == dataset.n_positions and X.dtype == np.float32
    assert np.isfinite(X).all() and X.min() >= 0 and X.max() <= 1
    assert d.rings.shape[0] >= 1 and d.n_disks.sum() > 0
    assert d.block("aa").stop - d.block("aa").start == 72 * d.rings.shape[0]


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "representation, options",
    [
        ("ab", {}),
        ("aa+aa", {}),
        ("aa", {"sector_widht": 5}),
        ("aa", {"sector_width": 7}),
        ("aa", {"rings": [(5, 3)]}),
        ("aa", {"origin": "middle"}),
        ("bd", {"template": "vacuum"}),
        ("bd", {"bd_weight": "mass"}),
        ("raw", {"raw_transform": "cube"}),
        ("aa", {"statistics": False}),  # the rings must be found on the data
        ("rv", {"statistics": False, "origin": CENTRE}),  # and so must r_min
    ],
)
def test_bad_options_raise_config_errors(representation, options):
    ds = Dataset4D(spot_scan(2, 2, noise=False))
    with pytest.raises(ConfigError):
        featurize(ds, representation, engine=quiet(), **options)


def test_bad_scaling_and_no_rings():
    ds = Dataset4D(spot_scan(2, 2, noise=False))
    with pytest.raises(ConfigError):
        featurize(ds, "aa", engine=quiet(), scaling="zscore")
    beam_only = Dataset4D(np.broadcast_to(disks(SHAPE, [CENTRE], 3.0, [100.0]), (2, 2, *SHAPE)).astype(np.float32))
    with pytest.raises(CalibrationError, match="no diffraction ring"):
        featurize(beam_only, "aa", engine=quiet())
