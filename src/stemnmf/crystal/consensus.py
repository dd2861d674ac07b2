"""Orientation of a region (or component) by a vote of a few of its positions.

A region's mean pattern can be ambiguous: when its strong spots lie on one or
two systematic rows, many orientations (rotations about the row, Σ3 twins)
score almost equally and the wrong one often wins. The positions of the
region each see the same crystal with independent noise; their best
orientations scatter around the truth while the wrong solutions scatter over
several distinct ones. :func:`vote_orientations` matches a bounded, seeded
sample of each region's positions and the region's own (mean-pattern)
solution, clusters the candidates by symmetry-reduced misorientation and
keeps the largest cluster. When the region's own solution is in it, it stays;
otherwise the cluster's centre is polished on the mean of the patterns that
voted for it.
"""

from __future__ import annotations

import numpy as np

from stemnmf.crystal.matching import MatchResult, misorientation_angles

__all__ = ["sample_positions", "consensus", "vote_orientations"]


def sample_positions(weight_maps, n_samples: int, *, random_state=0) -> list[np.ndarray]:
    """Flat indices of up to ``n_samples`` positions of each map, drawn from its stronger half.

    Parameters
    ----------
    weight_maps : array (r, sy, sx)
        Weight of each region (or component) at each position, 0 outside.
    n_samples : int
        Most positions per map.
    random_state : int or numpy Generator

    Returns
    -------
    list of int arrays
        Sorted flat position indices of each map (empty for an empty map).
    """
    rng = np.random.default_rng(random_state)
    maps = np.asarray(weight_maps, dtype=np.float64).reshape(len(weight_maps), -1)
    chosen = []
    for weights in maps:
        inside = np.flatnonzero(weights > 0)
        if inside.size > n_samples:
            # the stronger half (at least n_samples positions): cores of grains, not their overlaps
            keep = max(n_samples, inside.size // 2)
            inside = inside[np.argsort(weights[inside], kind="stable")[::-1][:keep]]
            inside = rng.choice(inside, size=n_samples, replace=False)
        chosen.append(np.sort(inside))
    return chosen


def consensus(rotations, phases, scores, symmetries, *, radius: float) -> tuple[int, np.ndarray]:
    """Centre and members of the largest cluster of candidate orientations.

    Two candidates are neighbours when they have the same phase and their
    symmetry-reduced misorientation is at most ``radius`` degrees. The centre
    is the candidate with the most neighbours (ties: the larger sum of the
    neighbours' scores, then the first).

    Returns
    -------
    centre : int
    members : bool array (m,)
        The centre's neighbours (itself included).
    """
    rotations = np.asarray(rotations)
    phases = np.asarray(phases)
    scores = np.asarray(scores, dtype=np.float64)
    m = len(rotations)
    near = np.zeros((m, m), dtype=bool)
    for i in range(m):
        same = np.flatnonzero(phases == phases[i])
        near[i, same] = misorientation_angles(rotations[i], rotations[same], symmetries[int(phases[i])]) <= radius
    counts = near.sum(axis=1)
    weight = (near * scores[None, :]).sum(axis=1)
    order = np.lexsort((np.arange(m), -weight, -counts))
    centre = int(order[0])
    return centre, near[centre]


def _position_solutions(indexer, position_patterns, shortlist: int):
    """Rotations and phases of each region's sampled positions: a full match, or among a shortlist of templates."""
    counts = [len(p) for p in position_patterns]
    if not shortlist:
        stacked = [p for p in position_patterns if len(p)]
        if not stacked:
            return [], []
        found = indexer.match(np.concatenate(stacked), refine=False)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        return (
            [found.rotations[a:b] for a, b in zip(starts[:-1], starts[1:])],
            [found.phase[a:b] for a, b in zip(starts[:-1], starts[1:])],
        )
    rotations, phases = [], []
    for patterns in position_patterns:
        if not len(patterns):
            rotations.append(np.zeros((0, 3, 3)))
            phases.append(np.zeros(0, np.int32))
            continue
        patterns = np.asarray(patterns, dtype=np.float32)
        rows = indexer.shortlist(patterns.mean(axis=0), shortlist)
        found, phase, _ = indexer.match_among(patterns, rows)
        rotations.append(found)
        phases.append(phase)
    return rotations, phases


def vote_orientations(indexer, region_result: MatchResult, position_patterns, *, radius: float, shortlist: int = 0) -> dict:
    """Consensus orientation of each region from its own solution and its sampled positions' solutions.

    Parameters
    ----------
    indexer : Indexer
    region_result : MatchResult
        The regions' mean-pattern solutions (refined or not); updated in place.
    position_patterns : list of arrays (n_i, qy, qx)
        The sampled positions' patterns of each region.
    radius : float
        Cluster radius, degrees.
    shortlist : int, default 0
        When positive, each region's positions are matched only against this many
        templates (and mirrors) per phase: those that fit the mean of its sampled
        positions best (:meth:`Indexer.shortlist`); 0: against every template.

    Returns
    -------
    dict
        ``votes`` (r,) int: candidates in the winning cluster; ``candidates`` (r,) int;
        ``spread`` (r,) float: median misorientation of the cluster to the result, degrees.
        ``region_result.confidence`` becomes votes / candidates.
    """
    symmetries = [t.symmetry for t in indexer.templates]
    sampled_rotations, sampled_phases = _position_solutions(indexer, position_patterns, shortlist)
    r = len(position_patterns)
    votes, candidates, spread = np.zeros(r, np.int64), np.zeros(r, np.int64), np.zeros(r)
    for i in range(r):
        rotations = region_result.rotations[i : i + 1]
        phases = region_result.phase[i : i + 1]
        if len(position_patterns[i]):
            rotations = np.concatenate([rotations, sampled_rotations[i]])
            phases = np.concatenate([phases, sampled_phases[i]])
        centre, members = consensus(rotations, phases, np.ones(len(rotations)), symmetries, radius=radius)
        if not members[0]:
            # the region's own solution lost the vote: polish the winner on the mean of the positions that voted for it
            phase = int(phases[centre])
            agreeing = np.asarray(position_patterns[i], dtype=np.float32)[members[1:]].mean(axis=0)
            best, score = indexer.refine_pattern(agreeing, rotations[centre], phase)
            region_result.rotations[i], region_result.score[i], region_result.phase[i] = best, score, phase
        votes[i], candidates[i] = int(members.sum()), len(rotations)
        spread[i] = float(np.median(misorientation_angles(region_result.rotations[i], rotations[members], symmetries[int(phases[centre])])))
        region_result.confidence[i] = votes[i] / candidates[i]
    return {"votes": votes, "candidates": candidates, "spread": spread}
