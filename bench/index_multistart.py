"""Throw-away experiment (uses the package's PRIVATE helpers; not an API): more candidates into the kinematic score.

For each region of the default indexing (the vote, the partner check, the tilt search) on runs that
``bench/index_partners.py --runs`` kept, on the core's mean pattern (as the check reads it):

* ``default``: the defaults' orientation F0.
* ``runner-up``: F0 and up to ``--extra`` other candidates, each at least 5° from the ones before: the
  mean pattern's own solution and its distinct alternatives (before the vote), then the centres of the
  vote's other clusters (largest first); each candidate goes through the same check and tilt search as
  F0 (``_check_one``) and the one with the highest kinematic score (best of 30 thicknesses) is kept.
* ``multi-start``: F0's tilt searched again from starts ``--offset`` degrees off about the sample x and y
  axes (4 starts); the highest kinematic score among F0 and these is kept.
* ``both``: the highest score among the candidates of the two.

It prints each region's errors (against its best-matching grain), and the kinematic score of the truth
against F0's (``T-F0``, %: positive where the truth scores higher, i.e. where a wider search could win).

    STEMNMF_CACHE=/tmp/cache nice -n 10 python bench/index_multistart.py --seeds 70 71 --tilt 1 4 --runs /tmp/runs
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import time

import numpy as np

from stemnmf.crystal import indexing as ix
from stemnmf.crystal.consensus import _position_solutions, consensus, sample_positions
from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.refine import rotation_vector_matrix
from stemnmf.crystal.rotations import quaternions_to_matrices
from stemnmf.crystal.scores import best_matching_grains

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_partners import run_once, simulate_tilted  # noqa: E402
from index_quality import summary  # noqa: E402
from index_wrong import indexer_for  # noqa: E402

THICK = np.geomspace(40.0, 640.0, 30)


def kin(model, prepared, r):
    return float(model.near(r, 0, within_deg=1.0).thickness_scores(prepared, r, THICK, 0).max())


def vote_centres(indexer, rotations, sym, radius):
    """Centres of the vote's clusters, largest first, with their sizes."""
    left = np.arange(len(rotations))
    out = []
    while len(left):
        centre, members = consensus(rotations[left], np.zeros(len(left), int), np.ones(len(left)), [sym], radius=radius)
        out.append((rotations[left[centre]], int(members.sum())))
        left = left[~members]
    return out


def distinct_from(r, kept, sym, angle=5.0):
    return all(misorientation_angles(r, k[None], sym)[0] > angle for k in kept)


def analyse_seed(seed, args, workdir, cache, table):
    dataset, truth = simulate_tilted("LNMO", seed, args.scan, workdir, args.tilt)
    results = run_once(dataset, truth, args, seed)
    indexer = indexer_for(results, dataset, cache)
    o, sym, model = indexer.options, indexer.templates[0].symmetry, indexer.model
    means = np.asarray(results["/regions/mean_patterns"], dtype=np.float32)
    maps = np.asarray(results["/regions/maps"])
    raw = indexer.match(means)
    voted = copy.deepcopy(raw)
    ix._vote(indexer, voted, maps, dataset)
    final = copy.deepcopy(voted)
    t0 = time.perf_counter()
    ix._choose_partners(indexer, final, means, maps, dataset, fit=False)
    t_default = time.perf_counter() - t0
    chosen = sample_positions(maps, int(o.vote_positions), random_state=o.random_state)
    pos_rot, _ = _position_solutions(indexer, ix._read_positions(dataset, chosen), int(o.vote_templates))
    truth_rot = quaternions_to_matrices(np.asarray(truth.orientations).reshape(-1, 4))
    grains = best_matching_grains(maps, truth.labels)
    cores = ix._read_positions(dataset, [ix._core_positions(w, o.partner_erosion) for w in maps])
    t_extra = 0.0
    for r in range(len(maps)):
        g = int(grains[r])
        if g < 0:
            continue
        T, F0 = truth_rot[g], final.rotations[r]
        pattern = cores[r].mean(axis=0) if len(cores[r]) else means[r]
        prepared = model.prepare(pattern)
        t0 = time.perf_counter()
        s0 = kin(model, prepared, F0)
        # runner-up candidates
        sources = [raw.rotations[r]] + [a for a, s in zip(raw.alternatives[r], raw.alternative_scores[r]) if np.isfinite(s)]
        centres = vote_centres(indexer, np.concatenate([raw.rotations[r][None], pos_rot[r]]), sym, o.radius)
        sources += [c for c, n in centres[1:] if n >= args.min_votes]
        kept, extra = [F0], []
        for cand in sources:
            if len(extra) >= args.extra:
                break
            if distinct_from(cand, kept, sym):
                kept.append(cand)
                rot = ix._check_one(indexer, pattern, cand, 0)[0]
                extra.append((rot, kin(model, prepared, rot)))
        # multi-start tilt search
        starts = []
        for axis in (0, 1):
            for sign in (-1, 1):
                v = np.zeros(3)
                v[axis] = sign * np.radians(args.offset)
                rot, _ = model.tilt_search(prepared, rotation_vector_matrix(v) @ F0, 0)
                starts.append((rot, kin(model, prepared, rot)))
        t_extra += time.perf_counter() - t0
        err = lambda rot: float(misorientation_angles(rot, T[None], sym)[0])  # noqa: E731
        best = lambda cands: max(cands, key=lambda c: c[1])[0]  # noqa: E731
        d = [(F0, s0)]
        row = dict(seed=seed, r=r, default=err(F0), runner=err(best(d + extra)), multi=err(best(d + starts)),
                   both=err(best(d + extra + starts)), n_extra=len(extra),
                   truth_gain=100 * (kin(model, prepared, T) - s0) / abs(s0),
                   extra_gain=100 * (max([s for _, s in extra], default=-np.inf) - s0) / abs(s0),
                   multi_gain=100 * (max(s for _, s in starts) - s0) / abs(s0))
        table.append(row)
        print(f"{seed} r{r}: default {row['default']:6.2f} runner-up {row['runner']:6.2f} multi-start {row['multi']:6.2f} both {row['both']:6.2f};"
              f" T-F0 {row['truth_gain']:+.2f} %, best extra {row['extra_gain']:+.2f} % ({len(extra)} cand.), best start {row['multi_gain']:+.2f} %", flush=True)
    print(f"  seed {seed}: default's check + search {t_default:.1f} s, the extra candidates and starts {t_extra:.1f} s", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--tilt", type=float, nargs=2, default=None)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--extra", type=int, default=3, help="most runner-up candidates per region")
    parser.add_argument("--min-votes", type=int, default=2, help="smallest vote cluster taken as a candidate")
    parser.add_argument("--offset", type=float, default=3.0, help="the multi-start's offsets, degrees")
    args = parser.parse_args()
    args.phase = "LNMO"
    logging.basicConfig(level=logging.WARNING)
    table = []
    with tempfile.TemporaryDirectory(prefix="stemnmf-multistart-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
        for seed in args.seeds:
            analyse_seed(seed, args, workdir, cache, table)
    print(f"all (n={len(table)}):")
    for name in ("default", "runner", "multi", "both"):
        e = np.array([row[name] for row in table])
        changed = [(row["seed"], row["r"], round(row["default"], 2), round(row[name], 2)) for row in table if abs(row[name] - row["default"]) > 0.5]
        print(f"  {name:8s} {summary(e)}; changed by > 0.5°: {changed}")


if __name__ == "__main__":
    main()
