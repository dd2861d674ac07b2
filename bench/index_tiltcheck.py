"""Throw-away experiment (uses the package's PRIVATE helpers; not an API): the quick partner check after a
kinematic tilt search of the vote's solution, on runs that ``bench/index_partners.py --runs`` kept.

Variants per region (the core's mean pattern): ``check`` (the defaults), ``search`` (a coarse grid of tilts
about the sample x and y axes, then a compass search over three axes with halving steps, on the kinematic
score at its best of 8 thicknesses; then the check from there), ``search+p`` (each partner polished by the
same compass search from its inherited tilt).

    STEMNMF_CACHE=/tmp/cache nice -n 10 python bench/index_tiltcheck.py --seeds 70 71 --tilt 1 4 --runs /tmp/runs
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import numpy as np

from stemnmf.crystal import indexing as ix
from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.partners import check_partners, projection_partners
from stemnmf.crystal.rotations import axis_angle_matrix, quaternions_to_matrices
from stemnmf.crystal.scores import best_matching_grains

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_partners import run_once, simulate_tilted  # noqa: E402
from index_wrong import indexer_for  # noqa: E402

AXES = np.eye(3)


def compass(model, prepared, rotation, ts, steps, *, coarse=None, rounds=3):
    def score(r):
        return float(model.thickness_scores(prepared, r, ts, 0).max())

    best, value, n = rotation, score(rotation), 1
    if coarse:
        span, step = coarse
        offsets = np.arange(-span, span + 1e-9, step)
        grid = [axis_angle_matrix((1, 0, 0), a) @ axis_angle_matrix((0, 1, 0), b) @ rotation for a in offsets for b in offsets]
        values = [score(r) for r in grid]
        n += len(grid)
        if max(values) > value:
            best, value = grid[int(np.argmax(values))], max(values)
    for step in steps:
        for _ in range(rounds):
            moves = [axis_angle_matrix(a, s * step) @ best for a in AXES for s in (-1, 1)]
            values = [score(r) for r in moves]
            n += len(moves)
            if max(values) <= value:
                break
            best, value = moves[int(np.argmax(values))], max(values)
    return best, value, n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--tilt", type=float, nargs=2, default=None)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--coarse", type=float, nargs=2, default=[2.0, 1.0])
    parser.add_argument("--steps", type=float, nargs="+", default=[0.5, 0.25, 0.125, 0.0625])
    args = parser.parse_args()
    args.phase = "LNMO"
    ts8, ts30 = np.geomspace(40, 640, 8), np.geomspace(40, 640, 30)
    names = ["check", "search", "cheap"]
    errs = {n: [] for n in names}
    cost = {n: 0.0 for n in names}
    evals = []
    with tempfile.TemporaryDirectory() as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        for seed in args.seeds:
            dataset, truth = simulate_tilted("LNMO", seed, args.scan, workdir, args.tilt)
            results = run_once(dataset, truth, args, seed)
            indexer = indexer_for(results, dataset, cache)
            sym = indexer.templates[0].symmetry
            table = indexer.model.tables[0]
            means = np.asarray(results["/regions/mean_patterns"], dtype=np.float32)
            maps = np.asarray(results["/regions/maps"])
            voted = indexer.match(means)
            ix._vote(indexer, voted, maps, dataset)
            truth_rot = quaternions_to_matrices(np.asarray(truth.orientations).reshape(-1, 4))
            grains = best_matching_grains(maps, truth.labels)
            cores = ix._read_positions(dataset, [ix._core_positions(w, 2) for w in maps])
            line = {n: [] for n in names}
            for r in range(len(maps)):
                g = int(grains[r])
                if g < 0:
                    continue
                T, F = truth_rot[g], voted.rotations[r]
                model = indexer.model
                t0 = time.perf_counter()
                prepared = model.prepare(cores[r].mean(axis=0))
                cands, scores = check_partners(model, cores[r].mean(axis=0), F, sym, q_max=indexer.grid.r_max)
                chosen = {"check": cands[int(np.argmax(scores))] if len(scores) > 1 else F}
                t1 = time.perf_counter()
                cost["check"] += t1 - t0
                best = chosen["check"]
                near = model.near(best, 0, within_deg=args.coarse[0] + 2.0)
                chosen["search"], _, n = compass(near, prepared, best, ts8, args.steps, coarse=args.coarse)
                t2 = time.perf_counter()
                cost["search"] += t2 - t0
                chosen["cheap"], _, n = compass(near, prepared, best, np.geomspace(40, 640, 5), args.steps[:3], coarse=args.coarse, rounds=2)
                cost["cheap"] += time.perf_counter() - t2 + (t1 - t0)
                evals.append(n)
                for name in names:
                    e = float(misorientation_angles(chosen[name], T[None], sym)[0])
                    errs[name].append(e)
                    line[name].append(round(e, 2))
            print(f"seed {seed}: " + "; ".join(f"{n} {line[n]}" for n in names), flush=True)
    for name in names:
        e = np.array(errs[name])
        print(f"{name:9s} n={len(e)} median {np.median(e):.2f}°, within 2° {np.mean(e <= 2):.0%}, within 5° {np.mean(e <= 5):.0%}; {cost[name]:.1f} s in all")
    print(f"evaluations per search: median {np.median(evals):.0f}, max {max(evals)}")


if __name__ == "__main__":
    main()
