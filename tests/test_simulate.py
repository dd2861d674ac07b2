"""stemnmf.simulate: API, determinism, files, CLI, orientation sets, CIF input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import stemnmf
import stemnmf.simulate as sm
from stemnmf.cli import main
from stemnmf.errors import ConfigError, ResultsError
from stemnmf.io import Dataset4D, Truth, load, load_truth
from stemnmf.simulate.render import render_rows

AG_CIF = """data_Ag
_symmetry_space_group_name_H-M   'F m -3 m'
_cell_length_a   4.086
_cell_length_b   4.086
_cell_length_c   4.086
_cell_angle_alpha 90
_cell_angle_beta  90
_cell_angle_gamma 90
loop_
_symmetry_equiv_pos_as_xyz
 'x, y, z'
 'x, y+1/2, z+1/2'
 'x+1/2, y, z+1/2'
 'x+1/2, y+1/2, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Ag1 Ag 0 0 0 1
"""

MG_CIF = """data_Mg
_symmetry_space_group_name_H-M   'P 63/m m c'
_cell_length_a   3.209
_cell_length_b   3.209
_cell_length_c   5.211
_cell_angle_alpha 90
_cell_angle_beta  90
_cell_angle_gamma 120
loop_
_symmetry_equiv_pos_as_xyz
 'x, y, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Mg1 Mg 0.333333 0.666667 0.25 1
Mg2 Mg 0.666667 0.333333 0.75 1
"""


def test_tiny_returns_dataset_and_truth():
    dataset, truth = sm.simulate("tiny", seed=0)
    assert isinstance(dataset, Dataset4D) and isinstance(truth, Truth)
    assert dataset.shape == (12, 12, 48, 48) and dataset.dtype == np.float32 and not dataset.is_lazy
    cal = dataset.calibration
    assert cal.scan_step == pytest.approx(0.5)  # 5 Å in nm
    assert cal.q_pixel == pytest.approx(0.04) and cal.beam_energy == 300 and cal.convergence_angle == 1.05
    assert cal.origin == (24.0, 24.0)
    assert truth.scan_shape == (12, 12) and truth.n_grains == 5
    data = dataset.data
    assert np.all(data >= 0) and np.all(data == np.round(data))  # counts
    # the direct beam is the brightest pixel; patterns hold about the dose (1e5 electrons)
    assert np.all(data.reshape(144, -1).argmax(axis=1) == 24 * 48 + 24)
    assert 0.95e5 < data.sum(axis=(2, 3)).mean() < 1.0e5
    meta = dataset.metadata["simulation"]
    assert meta["preset"] == "tiny" and meta["seed"] == 0 and meta["n_grains_in_view"] == 5


def test_callable_module_in_both_import_orders():
    dataset, truth = stemnmf.simulate("tiny", seed=2)
    assert dataset.shape == (12, 12, 48, 48) and truth.n_grains >= 1
    code = (
        "import stemnmf\n"
        "f = stemnmf.simulate\n"
        "import stemnmf.simulate as sm\n"
        "assert f is sm and callable(sm) and hasattr(sm, 'simulate_to_file')\n"
        "d, t = stemnmf.simulate('tiny', seed=1)\n"
        "assert d.shape == (12, 12, 48, 48)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code2 = "import stemnmf.simulate\nimport stemnmf\nassert stemnmf.simulate('tiny')[0].shape[0] == 12\n"
    subprocess.run([sys.executable, "-c", code2], check=True)


def test_same_seed_gives_identical_data_and_truth():
    a, ta = sm.simulate("tiny", seed=11)
    b, tb = sm.simulate("tiny", seed=11, n_threads=3)
    c, tc = sm.simulate("tiny", seed=12)
    np.testing.assert_array_equal(a.data, b.data)
    for name in ("labels", "thickness", "orientations"):
        np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name))
    assert not np.array_equal(a.data, c.data)
    assert not np.array_equal(ta.orientations, tc.orientations)


def test_patterns_do_not_depend_on_blocks_threads_or_laziness():
    dataset, _ = sm.simulate("tiny", seed=4, lazy=True, n_threads=1)
    assert dataset.is_lazy
    whole, _ = sm.simulate("tiny", seed=4, lazy=False, n_threads=2)
    np.testing.assert_array_equal(dataset.read_rows(0, 12), whole.data)
    np.testing.assert_array_equal(dataset.read_rows(5, 7), whole.data[5:7])


def test_render_rows_threads_split_is_exact():
    from stemnmf.simulate.core import _build

    params = sm.resolve_parameters("tiny")
    model = _build(params, 3)[3]
    one = render_rows(model, 2, 9, n_threads=1)
    three = render_rows(model, 2, 9, n_threads=3)
    np.testing.assert_array_equal(one, three)


def test_noise_free_empty_position_is_the_central_beam_at_the_dose():
    dataset, truth = sm.simulate(
        "tiny", seed=0, noise=False, carbon_thickness=0.0, scan_blur=0.0, dose=1000.0, detector_blur=0.0
    )
    empty = np.argwhere(truth.grains_per_position == 0)
    assert len(empty) > 0
    for iy, ix in empty:
        pattern = dataset.data[iy, ix]
        assert pattern.sum() == pytest.approx(1000.0, rel=1e-5)
        yy, xx = np.indices(pattern.shape)
        radius = 1.05e-3 / 0.0196875 / 0.04  # alpha / lambda in pixels
        assert pattern[np.hypot(yy - 24, xx - 24) > radius + 1].sum() == 0
    full = np.argwhere(truth.thickness.max(axis=0) > 20)
    iy, ix = full[0]
    assert dataset.data[iy, ix].sum() < 1000.0 * (1 + 1e-5)  # scattered intensity stays within the beam


def test_dose_scales_counts():
    low, _ = sm.simulate("tiny", seed=0, dose=1e3)
    high, _ = sm.simulate("tiny", seed=0, dose=1e5)
    assert low.data.sum(axis=(2, 3)).mean() == pytest.approx(high.data.sum(axis=(2, 3)).mean() / 100, rel=0.02)


def test_file_roundtrip(tmp_path):
    path = sm.simulate_to_file(tmp_path / "tiny.h5", "tiny", seed=6)
    dataset, truth = sm.simulate("tiny", seed=6)
    loaded = load(path)
    np.testing.assert_array_equal(loaded.data, dataset.data)
    assert loaded.calibration == dataset.calibration
    assert loaded.metadata["simulation"]["seed"] == 6
    back = load_truth(path)
    np.testing.assert_array_equal(back.labels, truth.labels)
    np.testing.assert_array_equal(back.thickness, truth.thickness)
    np.testing.assert_array_equal(back.orientations, truth.orientations)
    np.testing.assert_array_equal(back.extra["grains_per_position"], truth.grains_per_position)
    assert set(back.extra) >= {"diameters", "projected_area", "centres", "orientation_id", "amorphous_thickness"}
    with pytest.raises(ResultsError, match="already exists"):
        sm.simulate_to_file(path, "tiny", seed=7)
    sm.simulate_to_file(path, "tiny", seed=7, overwrite=True)
    assert load(path).metadata["simulation"]["seed"] == 7


def test_crystals_orientations_are_distinct_and_shared():
    dataset, truth = sm.simulate("crystals", scan=40, det=48, n_orientations=6, noise=False, seed=1, scan_blur=0)
    assert dataset.calibration.scan_step == pytest.approx(0.8)  # the 320 Å view is kept: 8 Å = 0.8 nm steps
    ids = truth.extra["orientation_id"]
    assert truth.n_grains == 8 and sorted(set(ids.tolist())) == list(range(6))
    for k in range(6):  # crystals of one orientation share it exactly
        same = truth.orientations[ids == k]
        assert np.allclose(same, same[0])
    assert truth.extra["zone_axes"].shape == (6, 3)
    # mean pattern of each orientation over positions with that crystal alone
    data = dataset.data.astype(np.float64)
    yy, xx = np.indices((48, 48))
    outside = np.hypot(yy - 24, xx - 24) > 4  # leave out the direct beam
    single = truth.grains_per_position == 1
    means = []
    for k in range(6):
        mask = single & np.isin(np.argmax(truth.labels, axis=0), np.flatnonzero(ids == k))
        pattern = data[mask].mean(axis=0)[outside]
        means.append(pattern / np.linalg.norm(pattern))
    similarity = np.array(means) @ np.array(means).T
    off = similarity[~np.eye(6, dtype=bool)]
    assert off.max() < 0.6, similarity.round(2)


def test_ten_orientations_for_ten_crystals():
    truth = sm.simulate_truth("crystals", n_orientations=10, seed=2)
    assert truth.n_grains == 10
    assert sorted(truth.extra["orientation_id"].tolist()) == list(range(10))


def test_cif_without_the_crystal_extra_is_one_clear_error(tmp_path, monkeypatch):
    cif = tmp_path / "ag.cif"
    cif.write_text(AG_CIF)
    monkeypatch.setitem(sys.modules, "orix", None)  # import orix now raises ImportError
    monkeypatch.setitem(sys.modules, "orix.crystal_map", None)
    with pytest.raises(ConfigError, match="crystal extra"):
        sm.simulate("tiny", crystal=str(cif))


def test_cif_crystal(tmp_path):
    cif = tmp_path / "ag.cif"
    cif.write_text(AG_CIF)
    crystal = sm.from_cif(cif, b_factor=0.64)
    assert crystal.cubic and len(crystal.elements) == 4 and crystal.volume == pytest.approx(4.086**3)
    via_cif, _ = sm.simulate("tiny", seed=3, noise=False, crystal=str(cif))
    builtin, _ = sm.simulate("tiny", seed=3, noise=False)
    np.testing.assert_allclose(via_cif.data, builtin.data, rtol=1e-4, atol=1e-3)
    # a hexagonal structure: hcp Mg forbids 000l with odd l and allows 0002
    mg = tmp_path / "mg.cif"
    mg.write_text(MG_CIF)
    hcp = sm.from_cif(mg)
    assert not hcp.cubic
    F = hcp.structure_factor([[0, 0, 1], [0, 0, 2], [1, 0, 0]])
    assert abs(F[0]) < 1e-9 * abs(F[1]) and abs(F[1]) > 0 and abs(F[2]) > 0
    dataset, truth = sm.simulate("tiny", seed=0, crystal=str(mg))
    assert dataset.data.sum() > 0 and truth.n_grains == 5


def test_cli_simulate_writes_file_and_preview(tmp_path, capsys):
    out = tmp_path / "scan.h5"
    fig = tmp_path / "preview.png"
    assert main(["simulate", "--preset", "tiny", "--seed", "3", "-o", str(out), "--preview", str(fig)]) == 0
    text = capsys.readouterr().out
    assert "12 x 12 scan of 48 x 48 patterns" in text and "grains in view" in text
    dataset, truth = sm.simulate("tiny", seed=3)
    np.testing.assert_array_equal(load(out).data, dataset.data)
    np.testing.assert_array_equal(load_truth(out).labels, truth.labels)
    assert fig.stat().st_size > 10_000 and fig.read_bytes()[:4] == b"\x89PNG"


def test_cli_options_reach_the_simulation(tmp_path):
    out = tmp_path / "c.h5"
    argv = ["simulate", "--preset", "crystals", "--scan", "16", "--det", "32x40", "--orientations", "5"]
    argv += ["--dose", "500", "--no-noise", "--set", "film_thickness=120", "-o", str(out)]
    assert main(argv) == 0
    dataset = load(out)
    assert dataset.shape == (16, 16, 32, 40)
    params = dataset.metadata["simulation"]["parameters"]
    assert params["n_orientations"] == 5 and params["dose"] == 500 and params["noise"] is False
    assert params["film_thickness"] == 120
    assert len(set(load_truth(out).extra["orientation_id"].tolist())) == 5
    assert np.any(dataset.data != np.round(dataset.data))  # expected counts, not Poisson draws


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "t.h5"
    assert main(["simulate", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["simulate", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stemnmf: error:") and "already exists" in err and err.count("\n") == 0
    assert main(["simulate", "-o", str(tmp_path / "u.h5"), "--set", "bananas=3"]) == 2
    assert "unknown simulation parameter" in capsys.readouterr().err
    assert main(["simulate", "-o", str(tmp_path / "missing" / "u.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--preset", "ag9", "-o", str(tmp_path / "v.h5")])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--scan", "12xbanana", "-o", str(tmp_path / "v.h5")])
    assert exit_info.value.code == 2
