"""The crystal layer: phases, templates, matching against known orientations, boundaries, results, CLI."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("orix")
pytest.importorskip("diffsims")

from orix.quaternion import Misorientation, Orientation, Rotation  # noqa: E402
from orix.quaternion.symmetry import Oh  # noqa: E402

from stemnmf.crystal import (  # noqa: E402
    BUILTIN_PHASES,
    boundary_table,
    index_patterns,
    load_phase,
    make_templates,
    matrices_to_quaternions,
    quaternions_to_matrices,
    reduced_misorientation,
    require_crystal_extra,
)
from stemnmf.crystal.rotations import axis_angle_matrix  # noqa: E402
from stemnmf.crystal.templates import spots_for_rotations  # noqa: E402
from stemnmf.errors import ConfigError, PhaseError  # noqa: E402
from stemnmf.simulate import Optics, diffraction_pattern, fcc, zone_axis_rotation  # noqa: E402
from stemnmf.simulate.physics import Reflections  # noqa: E402
from stemnmf.simulate.rotations import matrix_to_quaternion  # noqa: E402

OPTICS = Optics(beam_energy=300.0, convergence_angle=1.05, q_pixel=0.02, det_shape=(128, 128), detector_blur=0.5)


def _orix_angle(q_a, q_b) -> float:
    """Symmetry-reduced misorientation (degrees) by orix, from crystal -> sample quaternions."""
    conj = np.array([1.0, -1.0, -1.0, -1.0])
    a = Orientation(np.asarray(q_a) * conj, symmetry=Oh)
    b = Orientation(np.asarray(q_b) * conj, symmetry=Oh)
    return float(a.angle_with(b, degrees=True)[0])


def _nearest_distances(phase, first: str, second: str) -> float:
    structure = phase.structure
    a = structure.lattice.a
    xyz_1 = np.array([atom.xyz for atom in structure if atom.element == first])
    xyz_2 = np.array([atom.xyz for atom in structure if atom.element == second])
    d = xyz_1[:, None] - xyz_2[None]
    d -= np.round(d)
    r = np.linalg.norm(d * a, axis=-1)
    return float(r[r > 1e-6].min())


def test_builtin_phases_have_the_published_cells():
    ag = load_phase("Ag")
    assert len(ag.structure) == 4 and ag.point_group.name == "m-3m"
    assert _nearest_distances(ag, "Ag", "Ag") == pytest.approx(4.0862 / np.sqrt(2), abs=1e-3)
    si = load_phase("Si")
    assert len(si.structure) == 8
    assert _nearest_distances(si, "Si", "Si") == pytest.approx(5.431 * np.sqrt(3) / 4, abs=1e-3)  # 2.352 Å
    spinel = load_phase("spinel")
    elements = [atom.element for atom in spinel.structure]
    assert (elements.count("Li"), elements.count("Ni"), elements.count("Mn"), elements.count("O")) == (8, 16, 16, 32)
    # LiNi0.5Mn1.5O4: Mn/Ni-O ~1.91-1.95 Å, Li-O ~1.95-2.0 Å in the refined structures
    assert 1.88 < _nearest_distances(spinel, "Mn", "O") < 1.98
    assert 1.90 < _nearest_distances(spinel, "Li", "O") < 2.02
    assert set(BUILTIN_PHASES) == {"Ag", "Au", "Pd", "Cu", "Al", "Si", "LNMO"}


def test_cif_phase_and_bad_phases(tmp_path):
    path = tmp_path / "silver.cif"
    load_phase("Ag").structure.write(str(path), "cif")
    phase = load_phase(path)
    assert len(phase.structure) == 4
    assert phase.structure.lattice.a == pytest.approx(4.0862)
    garbage = tmp_path / "bad.cif"
    garbage.write_text("data_x\n_cell_length_a 4.0\nloop_\n_atom_site_label\n this is not a cif\n")
    with pytest.raises(PhaseError) as info:
        load_phase(garbage)
    assert "\n" not in info.value.line and "bad.cif" in info.value.line
    with pytest.raises(PhaseError, match="does not exist"):
        load_phase(tmp_path / "missing.cif")
    with pytest.raises(PhaseError, match="unknown phase 'Unobtainium'"):
        load_phase("Unobtainium")


def test_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffsims", None)  # import diffsims now raises ImportError
    with pytest.raises(ConfigError) as info:
        require_crystal_extra("stemnmf index")
    assert "crystal extra" in info.value.line and "\n" not in info.value.line


def test_index_cli_without_extra_exits_2(monkeypatch, tmp_path, capsys):
    from stemnmf.cli import main

    monkeypatch.setitem(sys.modules, "orix", None)
    assert main(["index", str(tmp_path), "--phase", "Ag"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stemnmf[crystal]" in err


def test_template_spots_agree_with_the_simulator_geometry():
    """diffsims spots through our frame conversion land where the simulator's own kinematics puts them."""
    phase = load_phase("Ag")
    settings = {"beam_energy": 300.0, "q_max": 1.2, "excitation_error": 0.01, "minimum_intensity": 1e-4}
    crystal = fcc(4.0862)
    reflections = Reflections.of(crystal, OPTICS)
    rng = np.random.default_rng(5)
    for uvw in ([0, 0, 1], [1, 1, 2], [0, 1, 3]):
        tilt = axis_angle_matrix(rng.normal(size=3), 1.5)
        rotation = tilt @ zone_axis_rotation(crystal, uvw, in_plane=rng.uniform(0, 360))
        radius, angle, intensity = (v[0] for v in spots_for_rotations(phase, rotation[None], settings))
        keep = intensity > 1e-3 * intensity.max()
        xy = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)[keep]
        centres, s = reflections.in_lab(rotation, OPTICS)
        excited = (np.abs(s) < 0.02) & (np.linalg.norm((centres - 64) * 0.02, axis=1) < 1.2)
        sim_xy = (centres[excited][:, ::-1] - 64) * 0.02  # (row, col) -> (x, y) in 1/Å
        distance = np.linalg.norm(xy[:, None] - sim_xy[None], axis=-1).min(axis=1)
        assert len(xy) >= 2 and distance.max() < 1e-6


def test_templates_drop_forbidden_reflections_and_are_cached(tmp_path):
    phase = load_phase("Ag")
    settings = {"beam_energy": 300.0, "q_max": 1.2, "excitation_error": 0.01, "minimum_intensity": 1e-4}
    radius, angle, intensity = (v[0] for v in spots_for_rotations(phase, np.eye(3)[None], settings))
    n2 = np.round((radius[intensity > 0] * 4.0862) ** 2, 3)
    # beam along [001]: only (hk0) with h, k even: h^2 + k^2 = 4, 8, 16, 20; never {100} (1) or {110} (2)
    assert set(n2) <= {4.0, 8.0, 16.0, 20.0}
    assert 4.0 in n2 and 8.0 in n2
    first = make_templates(phase, beam_energy=300, q_max=0.8, resolution=5.0, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = make_templates(phase, beam_energy=300, q_max=0.8, resolution=5.0, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.radius, again.radius)
    make_templates(phase, beam_energy=200, q_max=0.8, resolution=5.0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # another beam energy is another file


def _patterns(rotations, thickness=150.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for rotation in rotations:
        expected = diffraction_pattern(fcc(4.0862), rotation, thickness, OPTICS) * 2e5
        out.append(rng.poisson(expected).astype(np.float32))
    return np.array(out)


@pytest.fixture(scope="module")
def known_orientations():
    crystal = fcc(4.0862)
    rng = np.random.default_rng(11)
    rotations = []
    for uvw in ([0, 0, 1], [1, 0, 1], [-1, 1, 2], [1, 1, -1], [0, -1, 1], [1, 1, 2]):  # [11-1] last but two
        tilt = axis_angle_matrix(rng.normal(size=3), 0.4)
        rotations.append(tilt @ zone_axis_rotation(crystal, uvw, in_plane=rng.uniform(0, 360)))
    return np.array(rotations)


@pytest.fixture(scope="module")
def template_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("templates")


@pytest.mark.slow
def test_matching_recovers_known_orientations(known_orientations, template_cache):
    """The key test: zone-axis patterns drawn by the simulator are indexed within 2° (orix misorientation)."""
    patterns = _patterns(known_orientations)
    cache = template_cache
    result = index_patterns(
        patterns, ["Ag"], q_pixel=0.02, beam_energy=300.0, origin=(64, 64), convergence_angle=1.05, resolution=2.0,
        cache_dir=cache, refine_model="kinematic",
    )
    found = matrices_to_quaternions(result.rotations)
    errors = []
    for i, (q_found, rotation) in enumerate(zip(found, known_orientations)):
        error = _orix_angle(q_found, matrix_to_quaternion(rotation))
        if i in (2, 3, 5):
            # along <111> and <112> the zero-order pattern of a crystal and its Σ3 twin are the same but for the
            # Ewald sphere's curvature: their fits differ by about 0.01 % here, below the noise
            for axis in ([1, 1, 1], [-1, 1, 1], [1, -1, 1], [1, 1, -1]):
                twin = matrix_to_quaternion(rotation @ axis_angle_matrix(axis, 60.0))
                error = min(error, _orix_angle(q_found, twin))
        errors.append(error)
    assert max(errors) < 2.0  # within a couple of degrees of the truth (0.4° tilt, 2° template grid)
    assert np.median(errors) < 0.1  # the continuous refinement, far below the 2° grid
    assert np.all(result.score > 0) and np.all((result.confidence >= 0) & (result.confidence <= 1))


@pytest.mark.slow
def test_detector_mapping_is_applied(known_orientations, template_cache):
    """A detector turned by 90° and flipped gives the same orientations once the mapping is stated."""
    patterns = _patterns(known_orientations[:2], seed=1)
    # the detector's x runs along the scan's y and its y along the scan's x: a transpose
    turned = np.swapaxes(patterns, 1, 2)
    cache = template_cache
    result = index_patterns(
        turned, ["Ag"], q_pixel=0.02, beam_energy=300.0, origin=(64, 64), resolution=2.0, cache_dir=cache,
        detector_rotation=90.0, detector_flip=True,
    )
    for rotation, truth in zip(result.rotations, known_orientations[:2]):
        assert _orix_angle(matrices_to_quaternions(rotation), matrix_to_quaternion(truth)) < 2.0


def test_quaternion_conversions_agree_with_the_simulator():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(20, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    matrices = quaternions_to_matrices(q)
    np.testing.assert_allclose(matrices_to_quaternions(matrices), q, atol=1e-12)
    np.testing.assert_allclose([matrix_to_quaternion(m) for m in matrices], q, atol=1e-12)


def test_boundaries_and_twins():
    symmetry = Oh.proper_subgroup.to_matrix().reshape(-1, 3, 3)
    assert len(symmetry) == 24
    base = zone_axis_rotation(fcc(), [1, 2, 3], in_plane=20)
    twin = base @ axis_angle_matrix([1, 1, 1], 60.0).T  # crystal-frame rotation: a Σ3 twin
    sigma9 = base @ axis_angle_matrix([1, -1, 0], 38.94)
    tilted = axis_angle_matrix([0, 0, 1], 10.0) @ base
    angle, axis = reduced_misorientation(base, twin, symmetry)
    assert angle == pytest.approx(60.0, abs=1e-6)
    np.testing.assert_allclose(axis, np.ones(3) / np.sqrt(3), atol=1e-6)
    # against orix, with orix's own conventions (orientation = sample -> crystal)
    conj = np.array([1.0, -1.0, -1.0, -1.0])
    o1 = Orientation(matrix_to_quaternion(base) * conj, symmetry=Oh)
    o2 = Orientation(matrix_to_quaternion(sigma9) * conj, symmetry=Oh)
    m = Misorientation((o2 * ~o1).data, symmetry=(Oh, Oh)).reduce()
    assert reduced_misorientation(base, sigma9, symmetry)[0] == pytest.approx(float(m.angle[0]) * 180 / np.pi, abs=1e-6)
    # four regions in a row: base | twin | base tilted 10° | Σ9
    maps = np.zeros((4, 4, 8), np.float32)
    for r in range(4):
        maps[r, :, 2 * r : 2 * r + 2] = 1.0
    quaternions = np.array([matrix_to_quaternion(m) for m in (base, twin, tilted, sigma9)])

    class Symmetry:
        pass

    holder = Symmetry()
    holder.symmetry = symmetry
    twin_to_tilted = reduced_misorientation(twin, tilted, symmetry)[0]
    table = boundary_table(maps, quaternions, np.zeros(4, int), [holder])
    assert [(int(r["region_a"]), int(r["region_b"])) for r in table] == [(0, 1), (1, 2), (2, 3)]
    assert table["length"].tolist() == [4, 4, 4]
    assert table["type"][0] == "Σ3"
    assert table["angle"][1] == pytest.approx(twin_to_tilted)
    tilted_to_sigma9 = reduced_misorientation(tilted, sigma9, symmetry)[0]
    assert table["type"][2] == ("low-angle" if tilted_to_sigma9 < 15 else "high-angle") or table["type"][2] == "Σ9"
    table = boundary_table(maps[[0, 3]], quaternions[[0, 3]], np.zeros(2, int), [holder])
    assert len(table) == 0  # regions 0 and 3 do not touch
    maps2 = maps[[0, 1]].copy()
    table = boundary_table(maps2, quaternions[[0, 3]], np.zeros(2, int), [holder])
    assert table["type"][0] == "Σ9"


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory):
    """A tiny simulated Ag scan run with raw features and --phase Ag (templates in a temporary cache)."""
    from stemnmf.pipeline import run
    from stemnmf.simulate import simulate_to_file

    root = tmp_path_factory.mktemp("indexed")
    cache = root / "cache"
    scan = simulate_to_file(root / "tiny.h5", "tiny", seed=2)
    config = {
        "features": {"representation": "raw"},
        "nmf": {"k": 4},
        "orientations": {"phases": ["Ag"], "resolution": 5.0, "overlap_sums": True},
        "run": {"report": False},
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEMNMF_CACHE", str(cache))
        results = run(scan, config, outdir=root / "out")
    return root, scan, results


@pytest.mark.slow
def test_run_with_phase_writes_the_orientations_contract(indexed_run):
    from stemnmf.io import load_results

    root, _, _ = indexed_run
    results = load_results(root / "out")
    assert list(np.atleast_1d(results["/orientations/phases"])) == ["Ag"]
    r = results["/regions/maps"].shape[0]
    k = results["/components/maps"].shape[0]
    assert results["/orientations/regions"].shape == (r, 4) and results["/orientations/regions"].dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(results["/orientations/regions"], axis=1), 1.0, atol=1e-9)
    assert results["/orientations/components"].shape == (k, 4)
    for name in ("regions_phase", "regions_score", "regions_confidence", "components_phase", "components_score"):
        assert len(results[f"/orientations/{name}"]) == (r if name.startswith("regions") else k)
    assert np.all(results["/orientations/regions_phase"] == 0)
    # overlapped regions were also fitted as a sum of two crystals: the sum (a cone that holds the single crystal)
    # never scores below the single crystal; regions not overlapped were not tried
    overlapped = np.asarray(results["/regions/table"]["overlapped"], dtype=bool)
    sums = results["/orientations/regions_sum_scores"]
    assert sums.shape == (r, 2) and np.all(np.isnan(sums[~overlapped]))
    assert np.all(sums[overlapped, 1] >= sums[overlapped, 0] - 1e-9)
    second = results["/orientations/regions_second_phase"]
    assert results["/orientations/regions_second"].shape == (r, 4) and set(np.unique(second)) <= {-1, 0}
    assert np.all(np.isnan(results["/orientations/regions_second"][second < 0]))
    assert (root / "cache" / "templates").is_dir()  # STEMNMF_CACHE was honoured


@pytest.mark.slow
def test_index_cli_ang_score_and_report(indexed_run, tmp_path, capsys):
    from orix import io as orix_io

    from stemnmf.cli import main
    from stemnmf.io import load_results
    from stemnmf.report import render_html

    root, scan, _ = indexed_run
    out = root / "out"
    argv = ["index", str(out), "--phase", "Ag", "--resolution", "5", "--template-cache", str(tmp_path), "--ang"]
    assert main(argv) == 0
    assert "orientations: Ag:" in capsys.readouterr().out
    results = load_results(out)
    sy, sx = results["/labels"].shape
    xmap = orix_io.load(str(out / "orientations.ang"))
    assert xmap.size == sy * sx
    capsys.readouterr()  # orix's .ang reader prints its own notes
    assert main(["score", str(out), "--truth", str(scan), "--indent", "0"]) == 0
    import json

    printed = capsys.readouterr().out
    assert printed.startswith("{"), repr(printed[:200])
    scores = json.loads(printed)
    errors = [e for e in scores["orientation_errors"] if e is not None]
    assert len(errors) >= 1 and all(0 <= e <= 62.8 for e in errors)  # 62.8°: the largest cubic misorientation
    assert scores["orientation_median_error"] == pytest.approx(float(np.median(errors)))
    assert scores["phase_accuracy"] == 1.0  # one phase, Ag, in the simulator's truth and in the index
    html = render_html(results)
    assert "<h2>Orientations</h2>" in html and "Region orientations" in html
    bad = tmp_path / "bad.cif"
    bad.write_text("not a cif at all\n")
    assert main(["index", str(out), "--phase", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.cif" in err


def test_run_with_a_bad_phase_fails_before_the_work(tmp_path):
    from stemnmf.pipeline import run

    data = np.zeros((4, 4, 16, 16), np.float32)
    with pytest.raises(PhaseError, match="unknown phase 'Unobtainium'"):
        run(data, {"orientations": {"phases": ["Unobtainium"]}}, outdir=tmp_path / "out")
    assert not (tmp_path / "out" / "results.h5").exists()
