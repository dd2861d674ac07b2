"""``stemnmf.index``: add orientations and phases to a finished run."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from stemnmf.crystal.export import save_ang
from stemnmf.crystal.indexing import IndexOptions, orientation_datasets
from stemnmf.crystal.phases import require_crystal_extra
from stemnmf.errors import ResultsError
from stemnmf.io import load
from stemnmf.io.results import Results, load_results, save_results

__all__ = ["ambiguous_regions", "index"]

log = logging.getLogger(__name__)


def index(
    results,
    phases,
    *,
    dataset=None,
    per_position: bool = False,
    save: bool = True,
    ang: bool | str | os.PathLike = False,
    **options,
) -> Results:
    """Orientation and phase of every component and region of a run (and of every position when asked).

    Parameters
    ----------
    results : Results, or path of a run's folder or results.h5
    phases : str, path-like, or a list of them
        Built-in phase names (Ag, Au, Pd, Cu, Al, Si, LNMO/spinel) or CIF files.
    dataset : Dataset4D, optional
        The calibrated scan, for ``per_position`` and the positions' vote
        (``vote_positions``, default 16); read from the run's input file when
        it is there (else the vote is skipped with a warning).
    per_position : bool, default False
        Also index every position's pattern (the slow per-pattern baseline).
    save : bool, default True
        When ``results`` is a path, write the orientations back into it
        (atomically; earlier ``/orientations`` are replaced).
    ang : bool or path-like, default False
        Also write an ``.ang`` file (True: ``orientations.ang`` beside results.h5).
    **options
        :class:`stemnmf.crystal.IndexOptions` (resolution, excitation_error,
        detector_rotation, detector_flip, cache_dir, ...).

    Returns
    -------
    Results
        With the ``/orientations/*`` datasets of DESIGN.md.

    Raises
    ------
    ConfigError
        Without the crystal extra, or for bad options or a missing calibration.
    PhaseError
        For an unknown phase or an unreadable CIF file.
    ResultsError
        For a missing results file or one without patterns to index.
    """
    require_crystal_extra("stemnmf index")
    path = None
    if not isinstance(results, Results):
        path = Path(results)
        path = path / "results.h5" if path.is_dir() else path
        results = load_results(path)
    if per_position and dataset is None:
        dataset = _input_dataset(results)
    elif dataset is None and int(options.get("vote_positions", IndexOptions.vote_positions)) > 0:
        try:
            dataset = _input_dataset(results)
        except ResultsError as error:
            log.warning("no positions' vote, mean patterns alone: %s", error)
    for key in [k for k in results if k.startswith("/orientations/")]:
        del results[key]
    found = orientation_datasets(results, phases, dataset=dataset, per_position=per_position, **options)
    for key, value in found.items():
        results[key] = value
    if path is not None and save:
        save_results(results, path, overwrite=True)
    if ang:
        where = Path(ang) if not isinstance(ang, bool) else (path.parent if path else Path(".")) / "orientations.ang"
        orientations = results.group("/orientations")
        maps = results["/regions/maps"] if "/regions/maps" in results else None
        step = (results.attrs.get("calibration") or {}).get("scan_step") or 1.0
        save_ang(where, orientations, maps, step=float(step))
        log.info("orientation map: %s", where)
    return results


def _input_dataset(results: Results):
    source = results.attrs.get("input")
    if not source or source == "(array)" or not Path(str(source)).exists():
        raise ResultsError(
            f"per-position indexing needs the run's input file, and {source!r} is not there",
            "run `stemnmf run INPUT -o OUTDIR --phase NAME --per-position` instead",
        )
    calibration = results.attrs.get("calibration") or {}
    keys = ("q_pixel", "beam_energy", "scan_step", "convergence_angle")
    return load(str(source), **{k: calibration[k] for k in keys if calibration.get(k) is not None})


def describe(results: Results) -> list[str]:
    """One line per phase: how many regions were indexed as it, and their median score; then one per ambiguous region."""
    if "/orientations/regions_phase" not in results:
        return []
    names = np.atleast_1d(results["/orientations/phases"])
    phase = np.asarray(results["/orientations/regions_phase"])
    score = np.asarray(results["/orientations/regions_score"])
    lines = [
        f"{name}: {int((phase == p).sum())} regions, median score {np.median(score[phase == p]):.3f}"
        for p, name in enumerate(names)
        if (phase == p).any()
    ]
    return lines + [f"AMBIGUOUS region {why}" for why in ambiguous_regions(results)]


def ambiguous_regions(results) -> list[str]:
    """Why each region flagged ``/orientations/regions_ambiguous`` is, one string each ("3: a projection partner at 60.0° scores within 0.12 % of it").

    A partner within the margin, or a positions' vote without a majority; ``[]`` when none is flagged.
    """
    if "/orientations/regions_ambiguous" not in results:
        return []
    flagged = np.flatnonzero(np.asarray(results["/orientations/regions_ambiguous"], dtype=bool))
    margin = _optional(results, "/orientations/regions_partner_margin", len(np.asarray(results["/orientations/regions_ambiguous"])))
    angle = _optional(results, "/orientations/regions_partner_angle", len(margin))
    votes = _optional(results, "/orientations/regions_votes", len(margin))
    candidates = _optional(results, "/orientations/regions_candidates", len(margin))
    out = []
    for r in flagged:
        why = []
        if np.isfinite(margin[r]) and np.isfinite(angle[r]):
            side = f"within {100 * margin[r]:.2f} % of it" if margin[r] >= 0 else f"{-100 * margin[r]:.2f} % above it"
            why.append(f"a projection partner at {angle[r]:.1f}° scores {side}")
        if np.isfinite(votes[r]) and 2 * votes[r] <= candidates[r]:
            why.append(f"no majority in its positions' vote ({int(votes[r])} of {int(candidates[r])})")
        out.append(f"{r}: " + ("; ".join(why) or "flagged"))
    return out


def _optional(results, path: str, n: int) -> np.ndarray:
    return np.asarray(results[path], dtype=np.float64) if path in results else np.full(n, np.nan)
