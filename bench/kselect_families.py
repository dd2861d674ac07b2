"""Simulated families with a known number of distinct orientations, for the choice of k.

Each family is a dict of simulation settings; :func:`make_case` draws one scan of a family
with ``n`` orientations and returns it with its truth (the number of distinct orientations
in view). :func:`pipeline_features` turns a scan into the raw feature matrix exactly as
``stemnmf run --feature raw`` does (calibration, raw features on the binned grid, no
scaling), and :func:`pipeline_select` calls ``select_k`` with the run's defaults.

Families (``FAMILIES``):

* ``spinel-zone``: LNMO spinel (a = 8.17 Å) crystals filling the film, each orientation
  1-4 deg off a different low-index zone axis (the kind of scan of issue 21);
* ``ag-zone``: the 'crystals' preset (Ag, within 1 deg of a zone axis);
* ``spinel-random`` / ``ag-random``: crystals of uniformly random orientations (every crystal
  its own orientation);
* ``ag-small``: small Wulff grains (diameter 4-10 positions) in a film, orientations near
  zone axes shared between grains (domains of a few positions);
* ``spinel-thick`` / ``ag-thin``: film thickness 400 Å / 60 Å;
* ``ag-lowdose`` / ``spinel-lowdose``: 1e3 electrons per pattern; ``ag-highdose``: 1e6;
  ``spinel-clean``: no noise (expected counts);
* ``two-phase``: left half of the scan spinel, right half Ag (two simulations joined along
  a column), orientations near zone axes in each;
* ``ag-instrument`` / ``spinel-instrument``: ``ag-zone`` / ``spinel-zone`` seen through the
  'realistic' instrument of :mod:`stemnmf.simulate.instrument` (5 px descan with jitter,
  elliptic distortion, a beam-stop arm over the direct beam, smooth gain, hot pixels);
* ``spinel-small``: small spinel grains (diameter 4-10 positions), domains of a few positions;
* ``ag-small-instrument``: ``ag-small`` through the 'realistic' instrument.

Fresh families (``FRESH_FAMILIES``; added after the fourth rule, seen by no rule when their
curves were recorded; ``--split fresh``: seed 5, 2, 4, 7 and 16 orientations):

* ``au-zone``: FCC Au (a = 4.078 Å), crystals near zone axes as ``ag-zone``;
* ``si-tilted``: diamond Si (a = 5.431 Å), each orientation 1-4 deg off a zone axis;
* ``cu-cells``: FCC Cu (a = 3.615 Å), three crystals (cells) per orientation (at least 16):
  domains of medium size, each orientation in several places;
* ``pd-thick-lowdose``: FCC Pd (a = 3.891 Å), film 300 Å thick, 3e3 electrons per pattern;
* ``si-instrument``: ``si-tilted`` through the 'realistic' instrument at 1e5 electrons.
"""

from __future__ import annotations

import numpy as np

FAMILIES = {
    "spinel-zone": dict(crystal="spinel", orientation_tilt=(1.0, 4.0)),
    "ag-zone": dict(),
    "spinel-random": dict(crystal="spinel", random=True),
    "ag-random": dict(random=True),
    "ag-small": dict(small=True),
    "spinel-thick": dict(crystal="spinel", orientation_tilt=(1.0, 4.0), film_thickness=400.0),
    "ag-thin": dict(film_thickness=60.0),
    "ag-lowdose": dict(dose=1e3),
    "spinel-lowdose": dict(crystal="spinel", orientation_tilt=(1.0, 4.0), dose=1e3),
    "ag-highdose": dict(dose=1e6),
    "spinel-clean": dict(crystal="spinel", orientation_tilt=(1.0, 4.0), noise=False),
    "two-phase": dict(two_phase=True),
    "ag-instrument": dict(instrument="realistic"),
    "spinel-instrument": dict(crystal="spinel", orientation_tilt=(1.0, 4.0), instrument="realistic"),
    "spinel-small": dict(crystal="spinel", orientation_tilt=(1.0, 4.0), small=True),
    "ag-small-instrument": dict(small=True, instrument="realistic"),
}

#: Families added after the fourth rule, recorded once on fresh seeds (see the module docstring).
FRESH_FAMILIES = {
    "au-zone": dict(crystal="Au"),
    "si-tilted": dict(crystal="Si", orientation_tilt=(1.0, 4.0)),
    "cu-cells": dict(crystal="Cu", cells_per_orientation=3),
    "pd-thick-lowdose": dict(crystal="Pd", film_thickness=300.0, dose=3e3),
    "si-instrument": dict(crystal="Si", orientation_tilt=(1.0, 4.0), instrument="realistic", dose=1e5),
}
FAMILIES.update(FRESH_FAMILIES)

#: Lattice parameters (Å) of the FCC metals of the fresh families.
FCC_LATTICE = {"Ag": 4.086, "Au": 4.078, "Cu": 3.615, "Pd": 3.891}


def _crystal(name):
    from stemnmf.simulate import fcc, spinel

    if name == "spinel":
        return spinel()
    if name == "Si":
        return "Si"
    return "Ag" if name == "Ag" else fcc(FCC_LATTICE[name], name)


def _distinct_in_view(truth, columns=None) -> int:
    labels = np.asarray(truth.labels)
    ids = np.asarray(truth.extra["orientation_id"])
    if columns is not None:
        labels = labels[:, :, columns]
    seen = labels.reshape(labels.shape[0], -1).max(axis=1) > 0
    return int(len(np.unique(ids[seen])))


def _one(settings, n, seed, scan, det):
    from stemnmf.simulate import simulate

    options = {k: v for k, v in settings.items()
               if k not in ("crystal", "random", "small", "two_phase", "cells_per_orientation")}
    options["crystal"] = _crystal(settings.get("crystal", "Ag"))
    if settings.get("small"):
        # small Wulff grains, diameters of 4-10 positions at the crystals preset's step
        step = 320.0 / max(scan)
        options.update(grain_shape="wulff", n_grains=3 * n, grain_diameter=(4 * step, 10 * step),
                       n_orientations=n, carbon_thickness=50.0, film_thickness=max(10 * step, 150.0))
    elif settings.get("random"):
        options.update(n_orientations=None, n_grains=n)
    elif settings.get("cells_per_orientation"):
        options.update(n_orientations=n, n_grains=max(16, settings["cells_per_orientation"] * n))
    else:
        options.update(n_orientations=n, n_grains=max(8, n + 2))
    dataset, truth = simulate("crystals", scan=scan, det=det, seed=seed, **options)
    if settings.get("random"):
        return dataset, truth, int(truth.n_grains)
    return dataset, truth, _distinct_in_view(truth)


def make_case(family: str, n: int, seed: int, scan=(64, 64), det=(128, 128)):
    """(dataset, number of distinct orientations in view) for one scan of ``family``."""
    settings = FAMILIES[family]
    if not settings.get("two_phase"):
        dataset, _, n_true = _one(settings, n, seed, scan, det)
        return dataset, n_true
    from stemnmf.io.dataset import Dataset4D

    left_n, right_n = (n + 1) // 2, n // 2
    half = scan[1] // 2
    left, left_truth, _ = _one(dict(crystal="spinel", orientation_tilt=(1.0, 4.0)), max(left_n, 1), seed, scan, det)
    right, right_truth, _ = _one(dict(), max(right_n, 1), seed + 7919, scan, det)
    data = np.concatenate([np.asarray(left.data)[:, :half], np.asarray(right.data)[:, half:]], axis=1)
    n_true = _distinct_in_view(left_truth, slice(0, half)) + _distinct_in_view(right_truth, slice(half, None))
    return Dataset4D(data, left.calibration, dict(left.metadata)), n_true


def pipeline_features(dataset):
    """(X, raw_shape) as ``stemnmf run --feature raw`` computes them (defaults)."""
    from stemnmf.calibrate import calibrate
    from stemnmf.config import Config
    from stemnmf.engine import Engine
    from stemnmf.errors import CalibrationError
    from stemnmf.features import featurize
    from stemnmf.pipeline import raw_features_on_grid

    config = Config()
    config.features.representation = "raw"
    engine = Engine(progress=False)
    options = config.calibrate.calibrate_options()
    try:
        calibrated, _ = calibrate(dataset, engine=engine, **options)
    except CalibrationError:  # as --calibration-unreliable warn: the choice of k is what is measured here
        calibrated, _ = calibrate(dataset, engine=engine, **{**options, "on_unreliable": "warn"})
    X, description = featurize(calibrated, "raw", engine=engine, **config.features.featurize_options())
    X, shape = raw_features_on_grid(X, description)
    return X, shape, calibrated


def pipeline_select(X, shape, dataset, **options):
    """``select_k`` with the options ``stemnmf run --k auto`` passes (run defaults), plus ``options``."""
    from stemnmf.config import Config, parse_k_range
    from stemnmf.kselect import select_k

    n = Config().nmf
    low, high = parse_k_range(n.k_range)
    options = {"k_values": range(low, high + 1), **options}
    return select_k(X, dataset=dataset, feature="raw", pattern_shape=shape,
                    random_state=0, solver="compressed" if n.k_scan == "compressed" else n.solver,
                    max_iter=n.max_iter, tol=n.tol, **options)
