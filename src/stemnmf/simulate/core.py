"""``simulate()``: a 4D-STEM scan of a polycrystalline film with its ground truth."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from stemnmf.engine import token
from stemnmf.errors import ConfigError, ResultsError
from stemnmf.io.dataset import Calibration, Dataset4D
from stemnmf.io.scanfile import Truth, save_scan
from stemnmf.simulate.crystal import Crystal, diamond, fcc, from_cif
from stemnmf.simulate.instrument import build_instrument
from stemnmf.simulate.physics import Optics
from stemnmf.simulate.presets import SimulationParameters, resolve_parameters
from stemnmf.simulate.render import (
    ORIENTATION_STREAM,
    PHASE_STREAM,
    SAMPLE_STREAM,
    _dask_rows,
    build_model,
    distinct_orientations,
    render_rows,
)
from stemnmf.simulate.rotations import matrix_to_quaternion, twin_orientations
from stemnmf.simulate.sample import make_sample

__all__ = ["simulate", "simulate_to_file", "simulate_truth", "make_crystal", "grains_per_position_fractions", "check_output_path",
           "LAZY_LIMIT"]

log = logging.getLogger(__name__)

#: simulate() keeps scans up to this size in memory when ``lazy`` is None; larger ones are drawn on demand.
LAZY_LIMIT = 1024**3

#: Rows per block of a lazy scan are chosen so that a block is about this large (as save_scan reads).
_BLOCK_BYTES = 64 * 1024**2


def _root_seed(seed) -> int:
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    if seed is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer, None or a numpy Generator")
    return int(seed)


def make_crystal(params: SimulationParameters, which: str = "crystal") -> Crystal:
    """The crystal of a parameter set (``which``: ``'crystal'`` or ``'second_crystal'``).

    Built-in FCC Ag, built-in diamond-cubic Si, a CIF file, or a given Crystal.
    """
    crystal = getattr(params, which)
    if isinstance(crystal, Crystal):
        return crystal
    if isinstance(crystal, str | os.PathLike):
        text = os.fspath(crystal)
        if text.lower() in ("ag", "ag-fcc", "fcc"):
            return fcc(params.lattice_parameter, "Ag", params.debye_waller)
        if text.lower() in ("si", "si-diamond"):
            return diamond()
        if text.lower().endswith(".cif"):
            return from_cif(text, b_factor=params.debye_waller)
    raise ConfigError(f"{which}={crystal!r} is not understood", "give 'Ag', 'Si', a .cif file or a stemnmf.simulate.Crystal")


def _assign_phases(sample, params: SimulationParameters, seed: int) -> None:
    """Make each grain of ``second_crystal`` (``grain.phase = 1``) with probability ``second_fraction``."""
    if params.second_crystal is None:
        return
    make_crystal(params, "second_crystal")  # a bad second crystal fails here, before any pattern is drawn
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PHASE_STREAM,)))
    second = rng.random(len(sample.grains)) < params.second_fraction
    for grain, flag in zip(sample.grains, second):
        grain.phase = int(flag)


def grains_per_position_fractions(grains_per_position) -> dict[str, float]:
    """Fractions of positions with 0, 1, 2 and 3 or more grains along the beam."""
    counts = np.asarray(grains_per_position)
    n = counts.size
    return {
        "0": float((counts == 0).sum() / n),
        "1": float((counts == 1).sum() / n),
        "2": float((counts == 2).sum() / n),
        "3+": float((counts >= 3).sum() / n),
    }


def _prepare(params: SimulationParameters, seed: int):
    """The crystal, optics, orientation set and sample of a parameter set."""
    crystal = make_crystal(params)
    optics = Optics(
        beam_energy=params.beam_energy,
        convergence_angle=params.convergence_angle,
        q_pixel=params.q_pixel,
        det_shape=params.det,
        detector_blur=params.detector_blur,
    )
    rotations = zone_axes = None
    if params.n_orientations is not None:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ORIENTATION_STREAM,)))
        thickness = params.film_thickness if params.grain_shape == "cell" else float(np.mean(params.grain_diameter))
        low, high = params.orientation_tilt
        rotations, zone_axes = distinct_orientations(
            crystal, params.n_orientations, thickness, optics, rng, tilt_deg=high, min_tilt_deg=low
        )
        if params.twins:
            if not crystal.cubic:
                raise ConfigError("twins need a cubic crystal (Σ3 is a cubic twin)", "give twins=0 or a cubic crystal")
            rotations, zone_axes = twin_orientations(rotations, zone_axes, params.twins, rng)
    pad = int(4.0 * params.scan_blur + 0.5) if params.scan_blur > 0 else 0
    sample = make_sample(
        scan_shape=params.scan,
        scan_step=params.scan_step,
        pad=pad,
        film_thickness=params.film_thickness,
        n_grains=params.n_grains,
        grain_diameter=params.grain_diameter,
        shape=params.grain_shape,
        cubic=crystal.cubic,
        wulff_ratio=params.wulff_ratio,
        rotations=rotations,
        z_spread=params.z_spread,
        centres_in_view=params.centres_in_view,
        rng=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SAMPLE_STREAM,))),
    )
    _assign_phases(sample, params, seed)
    return crystal, optics, sample, zone_axes


def _build(params: SimulationParameters, seed: int):
    crystal, optics, sample, zone_axes = _prepare(params, seed)
    model, info = build_model(
        sample,
        crystal,
        optics,
        dose=params.dose,
        noise=params.noise,
        seed=seed,
        scan_blur=params.scan_blur,
        carbon_thickness=params.carbon_thickness,
        amorphous_matrix=params.amorphous_matrix,
        min_intensity=params.min_intensity,
        max_scattered=params.max_scattered,
        second_crystal=None if params.second_crystal is None else make_crystal(params, "second_crystal"),
        token=token(json.dumps(params.to_dict(), sort_keys=True, default=str), seed),
    )
    if params.instrument.active:
        # the instrument sees the expected counts and draws the noise itself
        model.noise = False
        model = build_instrument(model, params.instrument, noise=params.noise, seed=seed, centre=optics.origin)
    return crystal, optics, sample, model, info, zone_axes


def _amorphous_thickness(sample, params: SimulationParameters) -> np.ndarray:
    amorphous = np.full(sample.scan_shape, float(params.carbon_thickness))
    if params.amorphous_matrix:
        amorphous += np.clip(sample.film_thickness - sample.thickness().sum(axis=0), 0.0, None)
    return amorphous.astype(np.float32)


def simulate_truth(preset: str = "tiny", *, scan=None, det=None, seed=0, **overrides) -> Truth:
    """The ground truth :func:`simulate` would return, without drawing any pattern.

    Same arguments and the same truth (for the same seed) as :func:`simulate`;
    fast enough to measure the overlap statistics of a preset.
    """
    params = resolve_parameters(preset, scan, det, overrides)
    root = _root_seed(seed)
    _, _, sample, zone_axes = _prepare(params, root)
    info = {"amorphous_thickness": _amorphous_thickness(sample, params), "phase_names": _phase_names(params)}
    return _truth(sample, info, zone_axes)


def _phase_names(params) -> list[str]:
    """The short name of each phase (``'Ag'``, ``'Si'``): the first word of its crystal's name."""
    names = [make_crystal(params).name.split(" ")[0]]
    if params.second_crystal is not None:
        names.append(make_crystal(params, "second_crystal").name.split(" ")[0])
    return names


def _truth(sample, info, zone_axes) -> Truth:
    index = sample.in_view()
    thickness = sample.thickness().astype(np.float32)
    step2 = sample.scan_step**2
    grains = [sample.grains[i] for i in index]
    volumes = np.array([sample.maps[i].t.sum() * step2 for i in index])
    extra = {
        "grains_per_position": (thickness > 0).sum(axis=0, dtype=np.int32),
        "diameters": (np.cbrt(6.0 / np.pi * volumes)).astype(np.float32),
        "nominal_diameters": np.array([g.diameter for g in grains], np.float32),
        "projected_area": ((thickness > 0).sum(axis=(1, 2)) * step2).astype(np.float32),
        "centres": np.array([g.centre for g in grains], np.float32).reshape(-1, 3),
        "orientation_id": np.array([g.orientation_id for g in grains], np.int32),
        "amorphous_thickness": info["amorphous_thickness"],
    }
    names = info.get("phase_names")
    if names:
        extra["phases"] = np.array([names[g.phase].encode() for g in grains], dtype="S")
    if names and len(names) > 1:
        extra["phase_id"] = np.array([g.phase for g in grains], np.int32)
    if zone_axes is not None:
        extra["zone_axes"] = zone_axes.astype(np.int32)
    orientations = np.array([matrix_to_quaternion(g.rotation) for g in grains], np.float32).reshape(-1, 4)
    return Truth(labels=thickness > 0, thickness=thickness, orientations=orientations, extra=extra)


def simulate(
    preset: str = "tiny",
    *,
    scan=None,
    det=None,
    seed=0,
    lazy: bool | None = None,
    n_threads: int | None = None,
    **overrides,
) -> tuple[Dataset4D, Truth]:
    """Simulate a 4D-STEM scan of a polycrystalline film, with its ground truth.

    Parameters
    ----------
    preset : {'tiny', 'ag1', 'ag2', 'ag3', 'precipitates', 'crystals'}
        Named sample and instrument (see ``docs/simulate.md``).
    scan : int or (int, int), optional
        Probe positions (sy, sx); the scan step is kept and Wulff-grain presets
        keep their grain density.
    det : int or (int, int), optional
        Detector pixels (qy, qx); the reciprocal extent of the detector is kept
        unless ``q_pixel`` is given.
    seed : int, None or numpy.random.Generator, default 0
        The same seed gives identical data and truth.
    lazy : bool, optional
        Return the patterns as a dask array drawn on demand. None: lazily when
        the scan is larger than 1 GiB.
    n_threads : int, optional
        Threads that draw the patterns (default: the CPU count).
    **overrides
        Any field of :class:`~stemnmf.simulate.SimulationParameters`, e.g.
        ``dose=1e4``, ``noise=False``, ``n_orientations=6``, ``crystal='x.cif'``.

    Returns
    -------
    dataset : Dataset4D
        float32 counts (sy, sx, qy, qx); calibration (scan step in nm, q_pixel
        in 1/Å, beam energy, convergence angle, origin) and
        ``metadata['simulation']`` with every parameter.
    truth : stemnmf.io.Truth
        Per grain in view: ``labels`` (n, sy, sx) uint8, ``thickness`` (n, sy,
        sx) path length in Å, ``orientations`` (n, 4) quaternions (w, x, y, z)
        of the crystal -> lab rotation; ``extra``: ``grains_per_position``,
        ``diameters`` (volume-equivalent, after cuts, Å), ``nominal_diameters``,
        ``projected_area`` (Å^2 in view), ``centres`` (Å), ``orientation_id``,
        ``amorphous_thickness`` (sy, sx) Å, ``phases`` (n,) the short name of
        each grain's phase (bytes, e.g. ``b'Ag'``), ``phase_id`` (n,) when there
        are two phases, and ``zone_axes`` when the orientations are a distinct set.

    Raises
    ------
    ConfigError
        For an unknown preset or parameter, or a bad value.
    """
    started = time.perf_counter()
    params = resolve_parameters(preset, scan, det, overrides)
    root = _root_seed(seed)
    crystal, optics, sample, model, info, zone_axes = _build(params, root)
    info["phase_names"] = _phase_names(params)
    truth = _truth(sample, info, zone_axes)
    instrument = params.instrument
    if instrument.active:
        truth.extra.update(model.truth())
    sy, sx = params.scan
    qy, qx = model.det_shape
    nbytes = sy * sx * qy * qx * 4
    threads = int(n_threads or os.cpu_count() or 1)
    if lazy is None:
        lazy = nbytes > LAZY_LIMIT
    if lazy:
        import dask
        import dask.array as da

        rows = max(1, min(sy, _BLOCK_BYTES // max(1, sx * qy * qx * 4)))
        # one graph node holds the model; traverse=False keeps dask from walking its arrays
        held = dask.delayed(model, pure=True, traverse=False)
        blocks = []
        for start in range(0, sy, rows):
            stop = min(sy, start + rows)
            task = dask.delayed(_dask_rows, pure=True)(held, start, stop, threads)
            blocks.append(da.from_delayed(task, shape=(stop - start, sx, qy, qx), dtype=np.float32))
        data = da.concatenate(blocks, axis=0)
    else:
        data = render_rows(model, 0, sy, threads)
    fractions = grains_per_position_fractions(truth.extra["grains_per_position"])
    metadata = {
        "simulation": {
            "preset": preset,
            "seed": root,
            "parameters": params.to_dict(),
            "crystal": crystal.describe(),
            "wavelength_angstrom": optics.wavelength,
            "disk_radius_pixels": optics.disk_radius / instrument.bin,
            "n_grains_in_view": truth.n_grains,
            "n_grains_placed": len(sample.grains),
            "grains_per_position_fractions": fractions,
            "capped_fraction": info["capped_fraction"],
        }
    }
    # behind an instrument the beam position is for the calibration to find (it is in the truth)
    calibration = Calibration(
        scan_step=params.scan_step / 10.0,
        q_pixel=params.q_pixel * instrument.bin,
        beam_energy=params.beam_energy,
        convergence_angle=params.convergence_angle,
        origin=None if instrument.active else tuple(float(v) for v in optics.origin),
    )
    dataset = Dataset4D(data, calibration, metadata)
    log.info(
        "simulated %s: %d x %d scan, %d x %d patterns, %d grains in view (%s), %.1f s%s",
        preset, sy, sx, qy, qx, truth.n_grains,
        ", ".join(f"{k}: {v:.0%}" for k, v in fractions.items()),
        time.perf_counter() - started, " (patterns drawn on demand)" if lazy else "",
    )  # fmt: skip
    return dataset, truth


def check_output_path(path, overwrite: bool) -> Path:
    """Refuse an existing file (unless ``overwrite``) or a missing folder before any work is done."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ResultsError(f"{path} already exists", "choose another name or pass --overwrite")
    if not path.parent.is_dir():
        raise ResultsError(f"folder {path.parent} does not exist", "create it first")
    return path


def simulate_to_file(
    path: str | os.PathLike,
    preset: str = "tiny",
    *,
    scan=None,
    det=None,
    seed=0,
    overwrite: bool = False,
    n_threads: int | None = None,
    **overrides,
) -> Path:
    """Simulate a scan and write it with its ground truth as a stemnmf scan file.

    The patterns are drawn and written a block of scan rows at a time (the file
    appears complete or not at all). ``stemnmf.io.load(path)`` reads it back,
    ``stemnmf.io.load_truth(path)`` its ground truth. Parameters as in
    :func:`simulate`.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ResultsError
        If the file exists and ``overwrite`` is False, or its folder is missing.
    """
    path = check_output_path(path, overwrite)
    dataset, truth = simulate(preset, scan=scan, det=det, seed=seed, lazy=True, n_threads=n_threads, **overrides)
    return save_scan(path, dataset, truth=truth, overwrite=overwrite)
