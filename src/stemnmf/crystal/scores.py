"""Orientation scores against ground truth: misorientation of each region to its best-matching grain."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.phases import canonical_phase_name
from stemnmf.crystal.rotations import quaternions_to_matrices
from stemnmf.errors import ResultsError

__all__ = ["best_matching_grains", "orientation_scores", "phase_symmetries", "score_orientations", "touching_equal_crystals"]


def touching_equal_crystals(truth_rotations, truth_labels, *, truth_phases=None, tolerance: float = 0.01) -> np.ndarray:
    """Group ids (n,) of truth crystals: crystals of one phase whose rotations differ by at most ``tolerance``
    degrees and whose maps touch (overlap or are 8-neighbours), directly or through each other, share an id.

    Such crystals are one grain: no boundary separates them and no pattern tells them apart.
    """
    rotations = np.asarray(truth_rotations, dtype=np.float64).reshape(-1, 3, 3)
    labels = np.asarray(truth_labels) > 0
    n = len(rotations)
    phases = [0] * n if truth_phases is None else [str(p) for p in np.atleast_1d(truth_phases)]
    grown = [ndimage.binary_dilation(m, structure=np.ones((3, 3), bool)) for m in labels]
    group = np.arange(n)
    for a in range(n):
        for b in range(a + 1, n):
            cosine = (np.trace(rotations[a] @ rotations[b].T) - 1.0) / 2.0
            angle = float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
            if phases[a] == phases[b] and angle <= tolerance and bool((grown[a] & labels[b]).any()):
                group[group == group[b]] = group[a]
    return np.unique(group, return_inverse=True)[1]


def best_matching_grains(region_maps, truth_labels, groups=None) -> np.ndarray:
    """For each region (r, sy, sx) the truth grain (n, sy, sx) it overlaps most (-1 for none).

    With ``groups`` (n,) (:func:`touching_equal_crystals`) the overlap is that of each group's
    union of maps, and the group's member that the region overlaps most is returned.
    """
    regions = np.asarray(region_maps) > 0
    grains = np.asarray(truth_labels) > 0
    if regions.shape[1:] != grains.shape[1:]:
        raise ResultsError(f"regions {regions.shape[1:]} and truth {grains.shape[1:]} differ in scan shape")
    flat = regions.reshape(len(regions), -1).astype(np.int64)
    overlap = flat @ grains.reshape(len(grains), -1).T.astype(np.int64)
    if groups is not None and len(grains):
        groups = np.asarray(groups)
        unions = np.stack([grains[groups == g].any(axis=0) for g in groups])  # each crystal's group's union
        merged = flat @ unions.reshape(len(grains), -1).T.astype(np.int64)
        # the group of largest union overlap, then its member of largest own overlap
        overlap = merged * (overlap.max(initial=0) + 1) + overlap
    best = overlap.argmax(axis=1) if overlap.size else np.zeros(len(regions), np.int64)
    return np.where(overlap.max(axis=1, initial=0) > 0, best, -1)


def orientation_scores(orientations: dict, region_maps, truth, *, truth_phases=None, merge_equal: bool = False) -> dict:
    """Per-region misorientation error (degrees) against the best-matching truth grain.

    Parameters
    ----------
    orientations : dict
        The ``/orientations`` group (``phases``, ``regions``, ``regions_phase``).
    region_maps : array (r, sy, sx)
    truth : Truth
        ``labels`` (n, sy, sx) and ``orientations`` (n, 4), crystal -> sample.
    truth_phases : sequence of str, optional
        Phase name of each truth grain, for the phase accuracy (default:
        ``truth.extra['phases']``, which the simulator writes; otherwise not
        scored). Names compare by :func:`~stemnmf.crystal.phases.canonical_phase_name`.
    merge_equal : bool, default False
        Count touching truth crystals of one phase and one orientation as one grain
        (:func:`touching_equal_crystals`) when finding each region's best-matching grain.

    Returns
    -------
    dict
        ``orientation_errors`` (per region, None where unmatched),
        ``orientation_median_error``, ``orientation_within_2deg``,
        ``orientation_within_5deg``, ``phase_accuracy`` (None when unknown).
    """
    if "regions" not in orientations:
        raise ResultsError("the results have no region orientations", "run `stemnmf index OUTDIR --phase NAME` first")
    names = [str(n) for n in np.atleast_1d(orientations["phases"])]
    symmetries = phase_symmetries(orientations)
    rotations = quaternions_to_matrices(np.asarray(orientations["regions"]).reshape(-1, 4))
    phase = np.asarray(orientations["regions_phase"])
    truth_rotations = quaternions_to_matrices(np.asarray(truth.orientations).reshape(-1, 4))
    if truth_phases is None:
        truth_phases = (getattr(truth, "extra", None) or {}).get("phases")
    groups = None
    if merge_equal:
        names_of = None if truth_phases is None else [canonical_phase_name(p) for p in np.atleast_1d(truth_phases)]
        groups = touching_equal_crystals(truth_rotations, truth.labels, truth_phases=names_of)
    grains = best_matching_grains(region_maps, truth.labels, groups)
    errors = []
    for r, g in enumerate(grains):
        if g < 0:
            errors.append(None)
            continue
        symmetry = symmetries[phase[r]]
        errors.append(float(misorientation_angles(rotations[r], truth_rotations[g : g + 1], symmetry)[0]))
    valid = np.array([e for e in errors if e is not None])
    accuracy = None
    if truth_phases is not None and len(valid):
        truth_phases = [canonical_phase_name(p) for p in np.atleast_1d(truth_phases)]
        hits = [canonical_phase_name(names[phase[r]]) == truth_phases[g] for r, g in enumerate(grains) if g >= 0]
        accuracy = float(np.mean(hits))
    return {
        "orientation_errors": errors,
        "orientation_median_error": float(np.median(valid)) if len(valid) else None,
        "orientation_within_2deg": float(np.mean(valid <= 2.0)) if len(valid) else None,
        "orientation_within_5deg": float(np.mean(valid <= 5.0)) if len(valid) else None,
        "phase_accuracy": accuracy,
    }


def phase_symmetries(orientations: dict) -> list[np.ndarray]:
    """The proper point-group rotations (s, 3, 3) of each phase, from ``symmetry`` and ``symmetry_phase``."""
    n = len(np.atleast_1d(orientations["phases"]))
    if "symmetry" not in orientations:
        return [np.eye(3)[None]] * n
    matrices = np.asarray(orientations["symmetry"], dtype=np.float64)
    owner = np.asarray(orientations["symmetry_phase"])
    return [matrices[owner == p] for p in range(n)]


def score_orientations(results, truth) -> dict:
    """:func:`orientation_scores` of a run's regions, or ``{}`` when the run or the truth has no orientations."""
    orientations = results.group("/orientations")
    if "regions" not in orientations or "/regions/maps" not in results or getattr(truth, "orientations", None) is None:
        return {}
    return orientation_scores(orientations, results["/regions/maps"], truth)
