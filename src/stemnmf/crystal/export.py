"""Orientations as an orix ``CrystalMap`` and an ``.ang`` file (for orix and MTEX).

orix rotations of a crystal map go from the sample to the crystal frame, the
inverse of stemnmf's (crystal -> sample), so the quaternions are conjugated.
Positions without an orientation (outside every region) get phase id -1
("not indexed").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stemnmf.crystal.phases import BUILTIN_PHASES, load_phases, require_crystal_extra
from stemnmf.errors import ResultsError

__all__ = ["orientation_map", "crystal_map", "save_ang"]


def orientation_map(orientations: dict, region_maps=None):
    """Per-position quaternions (sy, sx, 4), phase ids (sy, sx) and scores (sy, sx).

    Uses ``positions*`` when indexed per position, else paints each position
    with the orientation of its region (the region of largest weight).
    """
    if "positions" in orientations:
        return (
            np.asarray(orientations["positions"], dtype=np.float64),
            np.asarray(orientations["positions_phase"], dtype=np.int32),
            np.asarray(orientations["positions_score"], dtype=np.float64),
        )
    if "regions" not in orientations or region_maps is None:
        raise ResultsError("no region or position orientations to map", "run `stemnmf index OUTDIR --phase NAME` first")
    maps = np.asarray(region_maps)
    labels = np.where(maps.max(axis=0) > 0, maps.argmax(axis=0), -1)
    quaternions = np.asarray(orientations["regions"], dtype=np.float64)
    q = np.zeros((*labels.shape, 4))
    q[..., 0] = 1.0
    inside = labels >= 0
    q[inside] = quaternions[labels[inside]]
    phase = np.full(labels.shape, -1, np.int32)
    phase[inside] = np.asarray(orientations["regions_phase"])[labels[inside]]
    score = np.zeros(labels.shape)
    score[inside] = np.asarray(orientations["regions_score"])[labels[inside]]
    return q, phase, score


def crystal_map(orientations: dict, region_maps=None, *, step: float = 1.0):
    """An orix ``CrystalMap`` of the orientations (``step`` between positions, nm)."""
    require_crystal_extra("a crystal map")
    from orix.crystal_map import CrystalMap, PhaseList
    from orix.quaternion import Rotation

    q, phase, score = orientation_map(orientations, region_maps)
    sy, sx = phase.shape
    names = [str(n) for n in np.atleast_1d(orientations["phases"])]
    phases = load_phases(names) if all(_is_builtin(n) for n in names) else None
    phase_list = PhaseList(phases, ids=list(range(len(names)))) if phases else PhaseList(names=names, ids=list(range(len(names))))
    y, x = np.mgrid[0:sy, 0:sx].astype(np.float64) * float(step)
    inverse = q.reshape(-1, 4) * np.array([1.0, -1.0, -1.0, -1.0])
    return CrystalMap(
        Rotation(inverse),
        phase_id=phase.ravel(),
        x=x.ravel(),
        y=y.ravel(),
        phase_list=phase_list,
        prop={"score": score.ravel()},
        scan_unit="nm",
    )


def _is_builtin(name: str) -> bool:
    return name in BUILTIN_PHASES


def save_ang(path: str | os.PathLike, orientations: dict, region_maps=None, *, step: float = 1.0) -> Path:
    """Write the orientation map as an ``.ang`` file (temporary name, then rename)."""
    from orix import io as orix_io

    path = Path(path)
    xmap = crystal_map(orientations, region_maps, step=step)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    orix_io.save(str(tmp), xmap, overwrite=True)
    os.replace(tmp, path)
    return path
