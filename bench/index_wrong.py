"""Throw-away diagnosis (uses the package's PRIVATE helpers; not an API): why each region of the
default indexing is wrong by more than 2°, on runs that ``bench/index_partners.py --runs`` kept.

For each region wrong by more than 2° against its best-matching grain: is the found orientation a
projection partner of the truth, another grain of the scan, the truth's zone at another tilt, or
something else; how much of the region's core the grain holds; whether the truth (or a partner of it)
was among the mean pattern's distinct solutions or the voting positions' solutions; the template and
kinematic scores of the truth and of the found orientation on the core's mean pattern.

    STEMNMF_CACHE=/tmp/cache nice -n 10 python bench/index_wrong.py --seeds 70 71 --tilt 1 4 --runs /tmp/runs
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile

import numpy as np

from stemnmf.crystal import indexing as ix
from stemnmf.crystal.consensus import _position_solutions, sample_positions
from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.partners import check_partners, fit_alone, projection_partners, zone_axis
from stemnmf.crystal.rotations import quaternions_to_matrices
from stemnmf.crystal.scores import best_matching_grains

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_partners import run_once, simulate_tilted  # noqa: E402


def indexer_for(results, dataset, cache):
    calibration = dict(results.attrs.get("calibration") or {})
    calibration.update({k: v for k, v in dataset.calibration.to_dict().items() if v is not None})
    return ix.Indexer(["LNMO"], tuple(dataset.pattern_shape), q_pixel=calibration.get("q_pixel"),
                      beam_energy=calibration.get("beam_energy"), origin=calibration.get("origin"),
                      convergence_angle=calibration.get("convergence_angle"), options=ix.IndexOptions(cache_dir=cache))


def zone_name(indexer, rotation):
    table = indexer.model.tables[0]
    found = zone_axis(rotation, table.g)
    if found is None:
        return None, "none"
    u = found[0]
    v = u / np.abs(u[np.abs(u) > 1e-6]).min()
    return u, "[" + "".join(str(int(round(abs(x)))) for x in sorted(np.abs(v))) + "]"


def analyse_seed(seed, args, workdir, cache, rows, margins):
    dataset, truth = simulate_tilted("LNMO", seed, args.scan, workdir, args.tilt)
    results = run_once(dataset, truth, args, seed)
    indexer = indexer_for(results, dataset, cache)
    sym = indexer.templates[0].symmetry
    table = indexer.model.tables[0]
    means = np.asarray(results["/regions/mean_patterns"], dtype=np.float32)
    maps = np.asarray(results["/regions/maps"])
    raw = indexer.match(means)
    before_vote = copy.deepcopy(raw)
    voted = copy.deepcopy(raw)
    ix._vote(indexer, voted, maps, dataset)
    o = indexer.options
    chosen = sample_positions(maps, int(o.vote_positions), random_state=o.random_state)
    pos_rot, _ = _position_solutions(indexer, ix._read_positions(dataset, chosen), int(o.vote_templates))
    final = copy.deepcopy(voted)
    ix._choose_partners(indexer, final, means, maps, dataset, fit=False)
    truth_rot = quaternions_to_matrices(np.asarray(truth.orientations).reshape(-1, 4))
    grains = best_matching_grains(maps, truth.labels)
    cores = [ix._core_positions(w, o.partner_erosion) for w in maps]
    core_patterns = ix._read_positions(dataset, cores)
    thick = np.asarray(truth.thickness if truth.thickness is not None else truth.labels, float).reshape(len(truth_rot), -1)
    for r in range(len(maps)):
        g = int(grains[r])
        if g < 0:
            continue
        T, F = truth_rot[g], final.rotations[r]
        err = float(misorientation_angles(F, T[None], sym)[0])
        core = cores[r]
        share = thick[:, core].sum(axis=1) / max(thick[:, core].sum(), 1e-9)
        pattern = core_patterns[r].mean(axis=0)
        cands, scores = check_partners(indexer.model, pattern, voted.rotations[r], sym, q_max=indexer.grid.r_max)
        if len(scores) > 1:
            order = np.argsort(scores)[::-1]
            margin = (scores[order[0]] - scores[order[1]]) / abs(scores[order[0]])
            angle = float(misorientation_angles(cands[order[0]], cands[order[1]][None], sym)[0])
            margins.append((seed, r, err, margin, angle))
        else:
            margins.append((seed, r, err, np.nan, np.nan))
        if err <= 2.0:
            continue
        partners_T = projection_partners(T, table.g, table.intensity, sym, q_max=indexer.grid.r_max)
        to_partner = float(misorientation_angles(F, partners_T, sym).min()) if len(partners_T) else np.inf
        others = [h for h in range(len(truth_rot)) if h != g]
        to_other = misorientation_angles(F, truth_rot[others], sym) if others else np.array([np.inf])
        h = others[int(np.argmin(to_other))] if others else -1
        uT, zT = zone_name(indexer, T)
        uF, zF = zone_name(indexer, F)
        same_zone = uT is not None and uF is not None and np.max(np.abs(np.einsum("sij,j->si", sym, uF) @ uT)) > np.cos(np.radians(0.5))
        targets = np.concatenate([T[None], partners_T]) if len(partners_T) else T[None]
        alt = before_vote.alternatives[r][np.isfinite(before_vote.alternative_scores[r])]
        in_alts = [float(misorientation_angles(a, targets, sym).min()) for a in alt]
        in_votes = [float(misorientation_angles(p, targets, sym).min()) for p in pos_rot[r]]
        # scores of truth and found on the core
        model = indexer.model
        prepared = model.prepare(pattern)
        ts = np.geomspace(40.0, 640.0, 30)
        kin_T = model.near(T, 0, within_deg=1.0).thickness_scores(prepared, T, ts, 0).max()
        kin_F = model.near(F, 0, within_deg=1.0).thickness_scores(prepared, F, ts, 0).max()
        polar = indexer.polar(pattern[None])[0]
        refT, sT = indexer.refine(polar, T, 0)
        _, sF = indexer.refine(polar, F, 0)
        refT_err = float(misorientation_angles(refT, T[None], sym)[0])
        fitF, fsF = fit_alone(model, pattern, F, search_deg=1.0)
        fit_err = float(misorientation_angles(fitF, T[None], sym)[0])
        _, fsT = fit_alone(model, pattern, T, search_deg=1.0)
        if to_partner < 2.0:
            cause = f"partner {zT}"
        elif to_other.min() < 2.0:
            cause = f"other grain {h} ({to_other.min():.1f}°)"
        elif same_zone:
            cause = f"same zone {zT} off"
        elif min(in_alts + [99]) < 3 or min(in_votes + [99]) < 3:
            cause = f"proposed, lost ({zT} -> {zF})"
        else:
            cause = f"never proposed ({zT} -> {zF})"
        rows.append(dict(seed=seed, r=r, err=err, cause=cause, zT=zT, zF=zF, share_g=share[g],
                         share_h=share[h] if h >= 0 else 0, top_share=int(np.argmax(share)) == g,
                         alt=min(in_alts + [99]), votes=sum(v < 2 for v in in_votes), n_votes=len(in_votes),
                         vote_c=int(round(voted.confidence[r] * 100)),
                         kin=100 * (kin_T - kin_F) / abs(kin_F), fitgain=100 * (fsT - fsF) / abs(fsF), to_partner=to_partner, tpl=100 * (sT - sF) / abs(sF), refT=refT_err, fit=fit_err,
                         ncore=len(core)))
        x = rows[-1]
        print(f"{seed} r{r}: {err:5.1f}° {cause:32s} truth {zT} found {zF}; core {len(core)} pos, grain share {x['share_g']:.2f}"
              f" (top {x['top_share']}), other {x['share_h']:.2f}; truth/partner in alts {x['alt']:.1f}°, votes {x['votes']}/{x['n_votes']};"
              f" kin T-F {x['kin']:+.2f} % (fitted {x['fitgain']:+.2f} %; F {to_partner:.2f}° from T's partner), tpl T-F {x['tpl']:+.2f} % (T refined ends {refT_err:.2f}° off); fit from F -> {fit_err:.2f}°",
              flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--tilt", type=float, nargs=2, default=None)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    args.phase = "LNMO"
    logging.basicConfig(level=logging.WARNING)
    rows, margins = [], []
    with tempfile.TemporaryDirectory(prefix="stemnmf-wrong-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        for seed in args.seeds:
            analyse_seed(seed, args, workdir, cache, rows, margins)
    m = np.array([x[2:] for x in margins], float)
    print(f"regions {len(m)}, within 2°: {np.mean(m[:, 0] <= 2):.2f}, wrong: {len(rows)}")
    print("margins of the chosen over the runner-up candidate (regions with partners): err, margin %, angle")
    for s, r, e, mg, a in margins:
        if np.isfinite(mg):
            print(f"  {s} r{r} {e:6.2f}° margin {100 * mg:6.3f} % runner-up at {a:5.1f}°")


if __name__ == "__main__":
    main()
