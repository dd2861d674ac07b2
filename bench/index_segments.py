"""Throw-away diagnosis (uses the package's PRIVATE helpers ``_core_positions``; not an API): what each region holds
against the truth, on runs that ``bench/index_partners.py --runs`` kept.

Per seed: the truth's crystals (grains) and how many distinct orientations they have (crystals within 1° of each
other counted as one orientation), k; per component the crystals its map covers (share of the map's weight on
each crystal's positions, thickness-weighted); per region its component, core size, the crystals' thickness shares
in its core (the positions the indexing reads), the best-matching crystal (the scorer's) and the found
orientation's (defaults) misorientation to every crystal.

    STEMNMF_CACHE=/tmp/cache nice -n 10 python bench/index_segments.py --seeds 112 --tilt 1 4 --runs /tmp/runs
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

import numpy as np

import copy

from stemnmf.crystal import indexing as ix
from stemnmf.crystal.consensus import sample_positions
from stemnmf.crystal import orientation_datasets
from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.rotations import quaternions_to_matrices
from stemnmf.crystal.scores import best_matching_grains

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_partners import region_errors, run_once, simulate_tilted  # noqa: E402
from index_wrong import indexer_for, zone_name  # noqa: E402


def shares(weights, thick):
    """Thickness-weighted share of each crystal under ``weights`` (positions)."""
    w = thick * weights[None]
    return w.sum(axis=1) / max(w.sum(), 1e-12)


def analyse(seed, args, workdir, cache):
    dataset, truth = simulate_tilted("LNMO", seed, args.scan, workdir, args.tilt)
    results = run_once(dataset, truth, args, seed)
    indexer = indexer_for(results, dataset, cache)
    sym = indexer.templates[0].symmetry
    T = quaternions_to_matrices(np.asarray(truth.orientations).reshape(-1, 4))
    n = len(T)
    thick = np.asarray(truth.thickness, float).reshape(n, -1)
    mis = np.array([misorientation_angles(T[i], T, sym) for i in range(n)])
    orient = -np.ones(n, int)
    for i in range(n):
        if orient[i] < 0:
            orient[(mis[i] < 1.0) & (orient < 0)] = orient.max() + 1
    area = (thick > 0).mean(axis=1)
    zones = [zone_name(indexer, t)[1] for t in T]
    print(f"seed {seed}: k = {results.n_components}, {n} crystals, {orient.max() + 1} orientations; "
          f"reason {results['/kselect/reason'] if '/kselect/reason' in results else ''}")
    for i in range(n):
        print(f"  crystal {i}: orientation {orient[i]} {zones[i]}, {100 * area[i]:.0f} % of the scan")
    comps = np.asarray(results["/components/maps"]).reshape(results.n_components, -1)
    for c, m in enumerate(comps):
        s = shares(np.clip(m, 0, None), thick)
        print(f"  component {c}: " + ", ".join(f"c{i} {100 * s[i]:.0f} %" for i in np.argsort(s)[::-1] if s[i] >= 0.05))
    maps = np.asarray(results["/regions/maps"])
    table = results["/regions/table"]
    found = orientation_datasets(results, ["LNMO"], dataset=dataset, cache_dir=cache)
    errors = region_errors(found, results, truth)
    rot = quaternions_to_matrices(np.asarray(found["/orientations/regions"]).reshape(-1, 4))
    grains = best_matching_grains(maps, truth.labels)
    raw = indexer.match(np.asarray(results["/regions/mean_patterns"], dtype=np.float32))
    voted = copy.deepcopy(raw)
    ix._vote(indexer, voted, maps, dataset)
    o = indexer.options
    chosen = sample_positions(maps, int(o.vote_positions), random_state=o.random_state)
    by_orient = np.stack([thick[orient == j].sum(axis=0) for j in range(orient.max() + 1)])

    def oshare(pos):
        v = by_orient[:, pos].sum(axis=1)
        return " ".join(f"o{j} {100 * x:.0f}" for j, x in enumerate(v / max(v.sum(), 1e-12)) if x >= 0.05)

    for r, w in enumerate(maps):
        core = ix._core_positions(w, indexer.options.partner_erosion)
        cs = thick[:, core].sum(axis=1) / max(thick[:, core].sum(), 1e-9)
        to = misorientation_angles(rot[r], T, sym)
        near = int(np.argmin(to))
        print(f"  r{r} (comp {int(table['component'][r])}, {int((w > 0).sum())} pos, core {len(core)}): error {errors[r]:.2f}° vs "
              f"c{grains[r]}; core " + ", ".join(f"c{i} {100 * cs[i]:.0f} %" for i in np.argsort(cs)[::-1] if cs[i] >= 0.05)
              + f"; found nearest c{near} ({to[near]:.1f}°, orientation {orient[near]})", flush=True)
        g = grains[r]
        e_raw = float(misorientation_angles(raw.rotations[r], T[g][None], sym)[0])
        e_vote = float(misorientation_angles(voted.rotations[r], T[g][None], sym)[0])
        print(f"      by orientation (%): region {oshare(np.flatnonzero(w.ravel() > 0))}; core {oshare(core)}; "
              f"vote positions {oshare(chosen[r])}; error of the mean pattern's match {e_raw:.2f}°, the vote's {e_vote:.2f}°, final {errors[r]:.2f}°", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--tilt", type=float, nargs=2, default=None)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    args.phase = "LNMO"
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="stemnmf-segments-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        for seed in args.seeds:
            analyse(seed, args, workdir, cache)


if __name__ == "__main__":
    main()
