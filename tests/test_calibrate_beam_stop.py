"""A beam-stop arm whose stop leaks: the arm is masked from its shadow, BD's template comes from the Bragg disks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import stemnmf.simulate as sm
from stemnmf.calibrate import calibrate
from stemnmf.engine import Engine
from stemnmf.features import featurize

DET = 128
SCALE = DET / 256  # the instrument lengths are for a 256-pixel detector
ENGINE = dict(progress=False)


def _true_disk_radius(calibration) -> float:
    """Disk radius (px) from the simulated optics: semi-convergence angle / wavelength / q_pixel."""
    energy = calibration.beam_energy  # keV
    wavelength = 12.398419843 / math.sqrt(energy * (2 * 510.99895 + energy))  # Å, relativistic
    return calibration.convergence_angle * 1e-3 / wavelength / calibration.q_pixel


@pytest.fixture(scope="module")
def leaking_arm():
    # bench/calibrate_instrument.py's beam-stop case: the arm stop (lengths scaled to the detector, the
    # 1.5 px penumbra not), 0.1 % leak: the leaking beam is bright, and narrowed by the penumbra
    dataset, truth = sm.simulate("ag2", scan=20, det=DET, seed=31, beam_stop="arm", beam_stop_radius=10 * SCALE,
                                 beam_stop_width=10 * SCALE, beam_stop_penumbra=1.5, beam_stop_leak=0.001)
    return dataset, truth


def test_the_arm_of_a_leaking_stop_is_masked_and_bd_takes_the_disks(leaking_arm):
    dataset, truth = leaking_arm
    centre = np.asarray(truth.extra["instrument/origin"]).reshape(-1, 2).mean(axis=0)
    mean = np.asarray(dataset.data).reshape(-1, DET, DET).mean(axis=0)
    assert mean[int(round(centre[0])), int(round(centre[1]))] > 50 * np.median(mean)  # the beam does leak
    out, report = calibrate(dataset, engine=Engine(**ENGINE), on_unreliable="warn")
    stop = truth.extra["instrument/beam_stop"].astype(bool)
    assert out.mask is not None and out.mask[stop].mean() > 0.95  # the whole arm, out to the edge
    assert "shadow" in report.beam_stop_source and report.beam_stop_pixels >= stop.sum()
    assert out.mask.mean() < 3 * stop.mean()  # the arm and its margin, not the open detector
    assert "beam stop" in report.summary()
    results = report.to_results()
    assert results["/calibration/beam_stop_pixels"] == report.beam_stop_pixels
    _, description = featurize(out, "bd", engine=Engine(**ENGINE), scaling="none")
    bd = description.settings["bd"]
    assert bd["template"] == "disks" and bd["template_reason"]
    assert bd["disk_radius"] == pytest.approx(_true_disk_radius(dataset.calibration), abs=0.3)


def test_a_leaking_beam_left_unmasked_is_not_taken_for_the_probe(leaking_arm):
    dataset, _ = leaking_arm
    out, report = calibrate(dataset, engine=Engine(**ENGINE), beam_stop=None, origin="com", on_unreliable="warn")
    assert report.beam_stop_pixels == 0  # the stop is not masked: the leaking beam is visible
    _, description = featurize(out, "bd", engine=Engine(**ENGINE), scaling="none")
    bd = description.settings["bd"]
    assert bd["template"] == "disks" and "stop" in bd["template_reason"]
    assert not description.settings.get("beam_hidden", False)


def test_a_clean_scan_masks_nothing_and_takes_the_beam():
    dataset, _ = sm.simulate("ag2", scan=20, det=DET, seed=31)
    out, report = calibrate(dataset, engine=Engine(**ENGINE), on_unreliable="warn")
    assert report.beam_stop_pixels == 0 and report.beam_stop_source == ""
    assert report.origin_method == "com"
    _, description = featurize(out, "bd", engine=Engine(**ENGINE), scaling="none")
    bd = description.settings["bd"]
    assert bd["template"] == "beam" and bd["template_reason"] == ""
    assert bd["disk_radius"] == pytest.approx(_true_disk_radius(dataset.calibration), abs=0.3)


def test_an_arm_the_dark_region_covers_in_part_is_followed_to_the_edge():
    # the instrument at 128 px (penumbra 0.75 px): the stop and the start of its arm are dark enough
    # for the dark-region rule, the rest of the arm (bright disks shining through) only for the shadow rule
    dataset, truth = sm.simulate("ag2", scan=30, det=DET, seed=41, instrument="realistic")
    out, report = calibrate(dataset, engine=Engine(**ENGINE), on_unreliable="warn")
    stop = truth.extra["instrument/beam_stop"].astype(bool)
    assert report.beam_stop_source == "dark region+shadow"
    assert out.mask[stop].mean() > 0.95
    assert out.mask.mean() < 4 * stop.mean()


def test_the_disks_template_settles_on_large_disks():
    # 256-px patterns: disks 5.3 px in radius, far from the 3 px the template search starts from
    dataset, _ = sm.simulate("ag2", scan=16, det=256, seed=31)
    yy, xx = np.indices((256, 256))
    stop = np.hypot(yy - 127.5, xx - 127.5) < 12  # a round stop over the beam, given as a mask
    out, report = calibrate(dataset, engine=Engine(**ENGINE), beam_stop=stop, on_unreliable="warn")
    assert report.beam_stop_source == "given"
    _, description = featurize(out, "bd", engine=Engine(**ENGINE), scaling="none")
    bd = description.settings["bd"]
    assert bd["template"] == "disks"
    assert bd["disk_radius"] == pytest.approx(_true_disk_radius(dataset.calibration), abs=0.3)
