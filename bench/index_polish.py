"""Throw-away experiment (uses the package's PRIVATE helpers; not an API): the choice among projection
partners after each candidate's tilt is searched and then polished (Nelder-Mead on three angles and the
thickness, every reflection on the detector), on runs that ``bench/index_partners.py --runs`` kept.

For each region with partners, on the core's mean pattern: F0 (the defaults: check, tilt search) and each
partner of F0 (at F0's tilt): the kinematic score (best of 30 thicknesses) as inherited, after
``PatternModel.tilt_search``, after the polish; and the truth's score at its own rotation. Rules compared:
``default`` (F0), ``search`` (the best searched candidate: round 11's switch without its gain), ``polish``
(the best polished), ``polish+margin`` (the best polished only where it beats F0's polished by more
than ``--gains``).

    STEMNMF_CACHE=/tmp/cache nice -n 10 python bench/index_polish.py --seeds 70 71 --tilt 1 4 --runs /tmp/runs
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import sys
import tempfile
import time

import numpy as np

from stemnmf.crystal import indexing as ix
from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.partners import polish_partners, projection_partners
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


def polish(model, prepared, r, step=0.05):
    near = model.near(r, 0, within_deg=1.0)
    t0 = THICK[int(np.argmax(near.thickness_scores(prepared, r, THICK, 0)))]
    v, _, _ = near._polish(prepared, r, 0, t0, np.zeros(3), math.radians(step), fit_thickness=True)
    out = rotation_vector_matrix(v) @ r
    return out, kin(model, prepared, out)


def analyse_seed(seed, args, workdir, cache, rows):
    dataset, truth = simulate_tilted("LNMO", seed, args.scan, workdir, args.tilt)
    results = run_once(dataset, truth, args, seed)
    indexer = indexer_for(results, dataset, cache)
    o, sym, model = indexer.options, indexer.templates[0].symmetry, indexer.model
    table = model.tables[0]
    means = np.asarray(results["/regions/mean_patterns"], dtype=np.float32)
    maps = np.asarray(results["/regions/maps"])
    final = indexer.match(means)
    ix._vote(indexer, final, maps, dataset)
    ix._choose_partners(indexer, final, means, maps, dataset, fit=False)
    truth_rot = quaternions_to_matrices(np.asarray(truth.orientations).reshape(-1, 4))
    grains = best_matching_grains(maps, truth.labels)
    cores = ix._read_positions(dataset, [ix._core_positions(w, o.partner_erosion) for w in maps])
    for r in range(len(maps)):
        g = int(grains[r])
        if g < 0:
            continue
        T, F0 = truth_rot[g], final.rotations[r]
        err = lambda rot: float(misorientation_angles(rot, T[None], sym)[0])  # noqa: E731
        pattern = cores[r].mean(axis=0) if len(cores[r]) else means[r]
        prepared = model.prepare(pattern)
        partners = projection_partners(F0, table.g, table.intensity, sym, q_max=indexer.grid.r_max)
        row = dict(seed=seed, r=r, default=err(F0), n=len(partners))
        if not len(partners):
            row.update(search=row["default"], polish=row["default"], margins=[])
            rows.append(row)
            continue
        t0 = time.perf_counter()
        cands = [F0] + list(partners)
        inherited = [kin(model, prepared, c) for c in cands]
        searched = [F0] + [model.tilt_search(prepared, c, 0)[0] for c in partners]
        s_searched = [kin(model, prepared, c) for c in searched]
        if args.package:  # the package's polish_partners (the tilt searches again inside it)
            t0 = time.perf_counter()
            rots, scs = polish_partners(model, pattern, F0, sym, q_max=indexer.grid.r_max, prepared=prepared, excited=args.package == "excited")
            polished = list(zip(rots, scs))
        else:
            polished = [polish(model, prepared, c) for c in searched]
        dt = time.perf_counter() - t0
        s_pol = [s for _, s in polished]
        s_T = kin(model, prepared, T)
        row.update(search=err(searched[int(np.argmax(s_searched))]), polish=err(polished[int(np.argmax(s_pol))][0]),
                   pol_margin=(max(s_pol[1:]) - s_pol[0]) / abs(s_pol[0]), pol_best=polished[1 + int(np.argmax(s_pol[1:]))][0],
                   pol0=polished[0][0], T_vs_pol0=(s_T - s_pol[0]) / abs(s_pol[0]),
                   inh_margin=(inherited[0] - max(inherited[1:])) / abs(inherited[0]), seconds=dt)
        row["pol_best_err"], row["pol0_err"] = err(row["pol_best"]), err(row["pol0"])
        rows.append(row)
        print(f"{seed} r{r}: F0 {row['default']:6.2f}°; partners' errors {[round(err(c), 1) for c in partners]};"
              f" inherited {np.round(100 * (np.array(inherited) / inherited[0] - 1), 2).tolist()} %,"
              f" searched {np.round(100 * (np.array(s_searched) / inherited[0] - 1), 2).tolist()} %,"
              f" polished {np.round(100 * (np.array(s_pol) / inherited[0] - 1), 2).tolist()} % (errors {[round(err(p), 2) for p, _ in polished]}),"
              f" truth {100 * (s_T / inherited[0] - 1):+.2f} %; {dt:.1f} s", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--tilt", type=float, nargs=2, default=None)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--package", choices=["excited", "near"], default=None,
                        help="polish with the package's polish_partners (its NM on the excited reflections, or on all that reach the detector)")
    parser.add_argument("--gates", type=float, nargs="*", default=[0.002, 0.005, 0.01, 0.02, 1.0])
    parser.add_argument("--gains", type=float, nargs="*", default=[0.0, 0.001, 0.0025, 0.005])
    args = parser.parse_args()
    args.phase = "LNMO"
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stemnmf-polish-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
        for seed in args.seeds:
            analyse_seed(seed, args, workdir, cache, rows)
    print(f"all (n={len(rows)}):")
    for name in ("default", "search", "polish"):
        print(f"  {name:8s} {summary([x[name] for x in rows])}")
    for gain in args.gains:
        e = [x["pol_best_err"] if x["n"] and x["pol_margin"] > gain else (x.get("pol0_err", x["default"])) for x in rows]
        e0 = [x["pol_best_err"] if x["n"] and x["pol_margin"] > gain else x["default"] for x in rows]
        print(f"  polish, partner taken where it beats F0's polish by > {100 * gain:.2f} %: {summary(e)} (F0 unpolished otherwise: {summary(e0)})")
    for gate in args.gates:
        on = [bool(x["n"]) and x["inh_margin"] < gate for x in rows]
        e = [x["polish"] if g else x["default"] for x, g in zip(rows, on)]
        changed = [(x["seed"], x["r"], round(x["default"], 2), round(y, 2)) for x, y in zip(rows, e) if abs(y - x["default"]) > 2]
        cost = sum(x["seconds"] for x, g in zip(rows, on) if g)
        print(f"  polish only where F0's margin at its searched tilt < {100 * gate:.1f} % ({sum(on)} regions, {cost:.0f} s): {summary(e)}; changed {changed}")


if __name__ == "__main__":
    main()
