"""Probe template from Bragg disks when the direct beam is behind a beam stop."""

import math

import numpy as np
import pytest

from stemnmf.calibrate import beam_hidden, disk_template
from stemnmf.errors import CalibrationError

SHAPE = (96, 96)
ORIGIN = (47.6, 48.3)


def disk(centre, radius, amplitude):
    yy, xx = np.indices(SHAPE)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - centre[0], xx - centre[1]), 0, 1)


def pattern(rng, radius=3.0, n=14):
    image = np.full(SHAPE, 2.0) + disk(ORIGIN, radius, 500.0)
    for k in range(n):
        phi = rng.uniform(0, np.pi)
        r = rng.choice([18.0, 26.0, 34.0])
        for sign in (1, -1):
            image += disk((ORIGIN[0] + sign * r * np.sin(phi), ORIGIN[1] + sign * r * np.cos(phi)), radius,
                          rng.uniform(20, 60))
    return image


def stop_mask():
    yy, xx = np.indices(SHAPE)
    return (np.hypot(yy - ORIGIN[0], xx - ORIGIN[1]) < 7) | ((np.abs(yy - ORIGIN[0]) < 3) & (xx > ORIGIN[1]))


def test_beam_hidden():
    mask = stop_mask()
    assert beam_hidden(mask, ORIGIN)
    assert not beam_hidden(mask, (10.0, 10.0))
    assert not beam_hidden(None, ORIGIN)


@pytest.mark.parametrize("radius", [2.0, 3.5])
def test_template_of_the_disks_is_a_centred_disk_of_their_radius(radius):
    rng = np.random.default_rng(4)
    image = rng.poisson(pattern(rng, radius=radius)).astype(float)
    mask = stop_mask()
    image[mask] = 0.5  # the stop leaks a little
    template, found = disk_template(image, ORIGIN, radius=radius + 1.0, mask=mask)  # a wrong first guess
    assert abs(found - radius) < 0.6
    h = template.shape[0] // 2
    yy, xx = np.indices(template.shape)
    weight = template / template.sum()
    assert abs((weight * yy).sum() - h) < 0.15 and abs((weight * xx).sum() - h) < 0.15  # centred
    # a flat disk: the inner pixels are at the plateau, nothing beyond the rim
    r = np.hypot(yy - h, xx - h)
    plateau = template[r <= radius - 1]
    assert plateau.min() > 0.6 * plateau.mean()
    assert template[r <= radius + 1.5].sum() > 0.85 * template.sum()  # the edge: anti-aliased, then bilinear


def test_no_disks_raises():
    mask = stop_mask()
    image = np.random.default_rng(0).poisson(np.full(SHAPE, 5.0)).astype(float) * 0 + 5.0
    with pytest.raises(CalibrationError, match="Bragg disks"):
        disk_template(image, ORIGIN, radius=3.0, mask=mask)


def test_bd_features_behind_a_beam_stop_take_the_template_from_the_disks():
    from stemnmf.engine import Engine
    from stemnmf.features import featurize
    from stemnmf.io import Calibration, Dataset4D

    rng = np.random.default_rng(2)
    base = pattern(rng, radius=3.0, n=10)
    mask = stop_mask()
    data = rng.poisson(np.broadcast_to(np.where(mask, 0.5, base), (2, 3, *SHAPE))).astype(np.float32)
    ds = Dataset4D(data, Calibration(origin=ORIGIN), mask=mask)
    _, d = featurize(ds, "bd", engine=Engine(progress=False), scaling="none")
    assert d.settings["beam_hidden"] and d.settings["bd"]["template"] == "disks"
    assert abs(d.settings["bd"]["disk_radius"] - 3.0) < 0.6
    radius = d.columns["radius"]
    assert np.all(np.min(np.abs(radius[:, None] - np.array([18.0, 26.0, 34.0])), axis=1) < 4.5)


def test_aa_features_behind_a_beam_stop_start_past_it():
    from stemnmf.engine import Engine
    from stemnmf.features import featurize
    from stemnmf.io import Calibration, Dataset4D

    rng = np.random.default_rng(2)
    mask = stop_mask()
    data = rng.poisson(np.broadcast_to(np.where(mask, 0.5, pattern(rng, n=12)), (2, 3, *SHAPE))).astype(np.float32)
    ds = Dataset4D(data, Calibration(origin=ORIGIN), mask=mask)
    _, d = featurize(ds, "aa", engine=Engine(progress=False), scaling="none")
    # the stop's disk is 7 px in radius: the nearest free pixel is 7 px from the origin, the rings start 2 px on
    assert 8.5 < d.settings["r_min"] < 9.5
    for ring in (18.0, 26.0, 34.0):  # each ring of disks inside a ring found
        assert np.any((d.rings[:, 0] < ring) & (ring < d.rings[:, 1]))
