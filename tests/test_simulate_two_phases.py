"""Two-phase films in the simulator (``second_crystal``): truth by construction."""

from __future__ import annotations

import numpy as np
import pytest

import stemnmf
from stemnmf.crystal.phases import canonical_phase_name
from stemnmf.crystal.scores import orientation_scores
from stemnmf.errors import ConfigError
from stemnmf.io import load_truth, save_scan
from stemnmf.simulate import diamond, simulate_truth

pytest.importorskip("diffsims")  # the scattering factors of Si


def test_diamond_extinctions():
    si = diamond()
    f = np.abs(si.structure_factor([[1, 1, 1], [2, 0, 0], [2, 2, 0], [2, 2, 2], [1, 0, 0], [3, 1, 1], [4, 0, 0]]))
    # diamond cubic: all-odd or h + k + l = 4n; 200 and 222 (2n, not 4n) and mixed 100 vanish
    assert f[1] < 1e-9 * f[0] and f[3] < 1e-9 * f[0] and f[4] < 1e-9 * f[0]
    assert min(f[0], f[2], f[5], f[6]) > 0.1 * f[0]
    np.testing.assert_allclose(np.linalg.norm(si.g_vectors([[1, 1, 1]])), np.sqrt(3) / 5.431)


def test_second_crystal_fractions_zero_and_one_are_the_single_phase_films():
    kwargs = dict(scan=10, seed=3, noise=False, lazy=False, n_threads=1)
    ag, truth_ag = stemnmf.simulate("tiny", **kwargs)
    si, truth_si = stemnmf.simulate("tiny", crystal="Si", **kwargs)
    none, truth_none = stemnmf.simulate("tiny", second_crystal="Si", second_fraction=0.0, **kwargs)
    every, truth_every = stemnmf.simulate("tiny", second_crystal="Si", second_fraction=1.0, **kwargs)
    np.testing.assert_array_equal(np.asarray(none.data), np.asarray(ag.data))
    np.testing.assert_array_equal(np.asarray(every.data), np.asarray(si.data))
    assert not np.array_equal(np.asarray(ag.data), np.asarray(si.data))
    np.testing.assert_array_equal(truth_every.labels, truth_ag.labels)  # the same grains, of another phase
    assert np.all(truth_none.extra["phase_id"] == 0) and np.all(truth_every.extra["phase_id"] == 1)
    assert "phase_id" not in truth_ag.extra


def test_mixed_film_draws_each_grain_phase_reproducibly():
    truths = [simulate_truth("ag1", scan=40, seed=5, second_crystal="Si") for _ in range(2)]
    np.testing.assert_array_equal(truths[0].extra["phase_id"], truths[1].extra["phase_id"])
    phase_id = truths[0].extra["phase_id"]
    assert set(np.unique(phase_id)) == {0, 1} and len(phase_id) == truths[0].n_grains
    with pytest.raises(ConfigError, match="second_fraction"):
        simulate_truth("tiny", second_crystal="Si", second_fraction=1.5)
    with pytest.raises(ConfigError, match="second_crystal"):
        simulate_truth("tiny", second_crystal="unobtainium")


def test_truth_names_each_grain_phase_and_the_score_reads_it(tmp_path):
    dataset, truth = stemnmf.simulate("tiny", scan=12, seed=4, second_crystal="Si", second_fraction=0.5,
                                      noise=False, lazy=False, n_threads=1)
    phase_id = truth.extra["phase_id"]
    assert set(np.unique(phase_id)) == {0, 1}
    np.testing.assert_array_equal(truth.extra["phases"], np.where(phase_id == 0, b"Ag", b"Si"))
    save_scan(tmp_path / "scan.h5", dataset, truth=truth)
    loaded = load_truth(tmp_path / "scan.h5").extra["phases"]
    assert list(loaded) == ["Ag" if p == 0 else "Si" for p in phase_id]
    assert canonical_phase_name(b"Spinel") == canonical_phase_name("LiNi0.5Mn1.5O4 (spinel Fd-3m)") == "lnmo"
    # regions = the truth grains, the orientations exact; the phase of every second region swapped
    grains = truth.labels.shape[0]
    swapped = np.arange(grains) % 2 == 1
    orientations = {
        "phases": np.array(["Ag", "Si"]),
        "regions": truth.orientations.astype(np.float64),
        "regions_phase": np.where(swapped, 1 - phase_id, phase_id),
    }
    scores = orientation_scores(orientations, truth.labels, truth)
    assert scores["phase_accuracy"] == pytest.approx(1.0 - swapped.mean())
    assert scores["orientation_median_error"] == pytest.approx(0.0, abs=1e-3)
    assert "phases" in simulate_truth("tiny", seed=4).extra  # one phase: named, no phase_id
