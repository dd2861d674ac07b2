"""Orientation accuracy of `stemnmf index`, and its speed against per-pattern matching of the same scan.

For each seed: simulate the ``crystals`` preset (a few large crystals near low-index zone axes)
of a phase, run stemnmf (raw features, k chosen by the run), index the components and regions
and score each region against its best-matching grain (symmetry-reduced misorientation). The
"oracle" line indexes the mean pattern of the positions that see exactly one grain (truth), which
separates the matching from the NMF.

Speed (``--speed-seed S ...``, ``--speed-scan N``): in one process, on one N x N scan, the same
Indexer (templates and the kinematic reflection table cached before timing) matches (a) the component and region patterns, (b) every
position's pattern (no refinement: the per-pattern baseline); also timed end to end:
`orientation_datasets` with every default setting (twice: before and after the baseline, as the
load drifts), without the tilt search (``tilt_search=False``, round 9's defaults, twice), without the partner check
(``partner_check=False, tilt_search=False``, twice) and with the vote against every template (``vote_templates=0``). Region-level
accuracy: each region's error, and for the baseline the median over a region's positions of their
error. Each
quality line compares the vote with the mean pattern alone (``vote_positions=0``) on the same run.

    nice -n 10 python bench/index_quality.py --phase LNMO --seeds 10 11 12 13 14 --speed-seed 10

Seeds 3, 4 and 5 were used to choose the defaults; seeds 10-16 and 20-22 have been looked at since
(bench/RESULTS-index.md); report others.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np

import stemnmf
from stemnmf.crystal import Indexer, IndexOptions, load_phase, matrices_to_quaternions, orientation_datasets
from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.scores import best_matching_grains, orientation_scores
from stemnmf.crystal.templates import symmetry_matrices
from stemnmf.simulate.rotations import quaternion_to_matrix

log = logging.getLogger("bench.index")

#: Indexing options of every call (set from the command line). The sums of two crystals of overlapped
#: regions leave each region's own orientation as it is: off here, to save time.
OPTIONS: dict = {"overlap_sums": False}
#: ``--escalate N``: the region errors with ``vote_escalate=N`` too, per seed.
ESCALATED: list = []


def simulate(phase_name: str, seed: int, scan: int, workdir: str):
    cif = os.path.join(workdir, f"{phase_name}.cif")
    if not os.path.exists(cif):
        load_phase(phase_name).structure.write(cif, "cif")
    return stemnmf.simulate("crystals", scan=scan, det=128, seed=seed, crystal=cif)


def oracle_patterns(dataset, truth) -> np.ndarray:
    data = np.asarray(dataset.data)
    only = truth.labels.sum(axis=0) == 1
    return np.array([data[(grain > 0) & only].mean(axis=0) for grain in truth.labels])


def errors_to_truth(rotations, truth, symmetry) -> np.ndarray:
    truth_rotations = quaternion_to_matrix(truth.orientations)
    return np.array([misorientation_angles(r, t[None], symmetry)[0] for r, t in zip(rotations, truth_rotations)])


def summary(errors) -> str:
    errors = np.asarray(errors, dtype=float)
    return f"median {np.median(errors):6.2f} deg, within 2 deg {np.mean(errors <= 2):5.0%}, within 5 deg {np.mean(errors <= 5):5.0%}"


def region_errors_of(results, truth, phase_name, cache, dataset, vote_positions) -> list:
    found = orientation_datasets(results, [phase_name], dataset=dataset, cache_dir=cache, vote_positions=vote_positions, **OPTIONS)
    orientations = {k.split("/")[-1]: v for k, v in found.items()}
    scores = orientation_scores(orientations, results["/regions/maps"], truth)
    return [e for e in scores["orientation_errors"] if e is not None]


def quality(phase_name: str, seed: int, scan: int, workdir: str, cache: str, vote_positions: int,
            with_oracle: bool = True) -> tuple[list, list, list]:
    dataset, truth = simulate(phase_name, seed, scan, workdir)
    results = stemnmf.run(dataset, {"features": {"representation": "raw"}, "run": {"report": False}}, truth=truth)
    region_errors = region_errors_of(results, truth, phase_name, cache, dataset, vote_positions)
    mean_only = region_errors_of(results, truth, phase_name, cache, None, 0)
    if OPTIONS.get("vote_escalate"):
        escalated = region_errors  # the first call had OPTIONS' vote_escalate
        plain_options = {k: v for k, v in OPTIONS.items() if k != "vote_escalate"}
        plain = orientation_datasets(results, [phase_name], dataset=dataset, cache_dir=cache,
                                     vote_positions=vote_positions, **plain_options)
        plain = orientation_scores({k.split("/")[-1]: v for k, v in plain.items()}, results["/regions/maps"], truth)
        region_errors = [e for e in plain["orientation_errors"] if e is not None]
        ESCALATED.extend(escalated)
        print(f"seed {seed}: k={results.n_components} regions={len(region_errors)}  vote of {vote_positions}: "
              f"{summary(region_errors)}  | escalated to {OPTIONS['vote_escalate']}: {summary(escalated)}", flush=True)
    if not with_oracle:
        print(f"seed {seed}: k={results.n_components} regions={len(region_errors)}  regions (vote of {vote_positions}): "
              f"{summary(region_errors)}  | mean pattern alone: {summary(mean_only)}", flush=True)
        return region_errors, mean_only, []
    cal = dataset.calibration
    oracle = stemnmf.crystal.index_patterns(
        oracle_patterns(dataset, truth), [phase_name], q_pixel=cal.q_pixel, beam_energy=cal.beam_energy,
        origin=cal.origin, convergence_angle=cal.convergence_angle, cache_dir=cache, **OPTIONS,
    )
    oracle_errors = errors_to_truth(oracle.rotations, truth, symmetry_matrices(load_phase(phase_name)))
    print(f"seed {seed}: k={results.n_components} regions={len(region_errors)}  regions (vote of {vote_positions}): "
          f"{summary(region_errors)}  | mean pattern alone: {summary(mean_only)}"
          f"  | oracle ({len(oracle_errors)} grains): {summary(oracle_errors)}", flush=True)
    return region_errors, mean_only, list(oracle_errors)


def speed(phase_name: str, seed: int, scan: int, workdir: str, cache: str, vote_positions: int) -> dict:
    """Times and region-level accuracy of the default indexing and of per-position matching, one scan, one process."""
    dataset, truth = simulate(phase_name, seed, scan, workdir)
    t0 = time.perf_counter()
    results = stemnmf.run(dataset, {"features": {"representation": "raw"}, "run": {"report": False}}, truth=truth)
    t_run = time.perf_counter() - t0
    cal = dataset.calibration
    indexer = Indexer([phase_name], dataset.pattern_shape, q_pixel=cal.q_pixel, beam_energy=cal.beam_energy,
                      origin=cal.origin, convergence_angle=cal.convergence_angle, options=IndexOptions(cache_dir=cache, **OPTIONS))
    patterns = np.concatenate([results["/components/mean_patterns"], results["/components/representative_patterns"],
                               results["/regions/mean_patterns"]])
    t0 = time.perf_counter()
    indexer.match(patterns, refine=False)
    t_components = time.perf_counter() - t0
    t0 = time.perf_counter()
    indexer.match(patterns, refine=True)
    t_components_refined = time.perf_counter() - t0
    timed = {}

    def default_indexing(label, **extra):
        t0 = time.perf_counter()
        found = orientation_datasets(results, [phase_name], dataset=dataset, cache_dir=cache, **extra)
        timed.setdefault(label, []).append(time.perf_counter() - t0)
        return found

    indexer.model  # the kinematic reflection table, cached on disk as the templates are (the partner check uses it)
    defaults = default_indexing("defaults")  # every default setting
    default_indexing("no partner polish", partner_polish=False)  # the defaults of rounds 10 and 11
    default_indexing("no tilt search", tilt_search=False)  # the defaults of round 9
    default_indexing("no partner check", partner_check=False, tilt_search=False)  # the defaults before round 9
    every_template = default_indexing("vote against every template", vote_templates=0)
    if vote_positions != IndexOptions.vote_positions:
        default_indexing(f"vote of {vote_positions}", vote_positions=vote_positions)
    sy, sx = dataset.scan_shape
    data = np.asarray(dataset.data).reshape(sy * sx, *dataset.pattern_shape)
    t0 = time.perf_counter()
    per_position = indexer.match(data, refine=False)
    t_positions = time.perf_counter() - t0
    default_indexing("defaults")  # again after the long baseline: the load drifts
    default_indexing("no partner polish", partner_polish=False)
    default_indexing("no tilt search", tilt_search=False)
    default_indexing("no partner check", partner_check=False, tilt_search=False)
    print(f"speed (seed {seed}, {sy}x{sx} scan, k={results.n_components}, {len(results['/regions/maps'])} regions, "
          f"{len(patterns)} component/region patterns; stemnmf run {t_run:.1f} s): per-position matching {t_positions:.1f} s; "
          f"components + regions unrefined {t_components:.2f} s ({t_positions / t_components:.0f}x), "
          f"refined {t_components_refined:.2f} s ({t_positions / t_components_refined:.0f}x)", flush=True)
    for label, times in timed.items():
        print(f"  {label}, end to end: " + ", ".join(f"{t:.2f} s ({t_positions / t:.0f}x)" for t in times), flush=True)
    # region-level accuracy of the per-position baseline: the median error over each region's positions
    symmetry = indexer.templates[0].symmetry
    truth_rotations = quaternion_to_matrix(truth.orientations)
    maps = results["/regions/maps"]
    grains = best_matching_grains(maps, truth.labels)
    baseline = []
    for region, grain in zip(maps, grains):
        inside = np.flatnonzero(region.ravel() > 0)
        if grain < 0 or inside.size == 0:
            continue
        baseline.append(np.median(misorientation_angles(truth_rotations[grain], per_position.rotations[inside], symmetry)))

    def errors(found):
        orientations = {k.split("/")[-1]: v for k, v in found.items()}
        return [e for e in orientation_scores(orientations, maps, truth)["orientation_errors"] if e is not None]

    ours, every = errors(defaults), errors(every_template)
    print(f"  region-level: default settings {summary(ours)}; vote against every template {summary(every)}; "
          f"per-position baseline {summary(baseline)}")
    print(f"  region errors (deg): default {np.round(ours, 2).tolist()}; every template {np.round(every, 2).tolist()}; "
          f"per-position {np.round(baseline, 2).tolist()}", flush=True)
    print(f"  per-position: {len(per_position.score)} patterns, median confidence {np.median(per_position.confidence):.3f}")
    return {"positions": t_positions, "defaults": timed["defaults"], "ours": ours, "baseline": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", default="LNMO")
    parser.add_argument("--seeds", type=int, nargs="*", default=[10, 11, 12, 13, 14])
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--speed-seed", type=int, nargs="*", default=[])
    parser.add_argument("--speed-scan", type=int, default=64)
    parser.add_argument("--vote-positions", type=int, default=IndexOptions.vote_positions)
    parser.add_argument("--refine-model", default=IndexOptions.refine_model, choices=("kinematic", "templates"))
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle patterns (faster)")
    parser.add_argument("--escalate", type=int, default=0, help="also score vote_escalate=N (no-majority regions vote again)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    OPTIONS["refine_model"] = args.refine_model
    if args.escalate:
        OPTIONS["vote_escalate"] = args.escalate
    with tempfile.TemporaryDirectory(prefix="stemnmf-index-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        print(f"phase {args.phase}, crystals preset, {args.scan}x{args.scan} scan, 128x128 detector; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        regions, means, oracle = [], [], []
        for seed in args.seeds:
            r, m, o = quality(args.phase, seed, args.scan, workdir, cache, args.vote_positions, not args.no_oracle)
            regions += r
            means += m
            oracle += o
        if ESCALATED:
            print(f"all seeds, escalated vote ({args.escalate}): {summary(ESCALATED)} (n={len(ESCALATED)})")
        if regions:
            print(f"all seeds: regions (vote) {summary(regions)} (n={len(regions)}) | mean pattern alone {summary(means)}"
                  + (f" | oracle {summary(oracle)} (n={len(oracle)})" if oracle else ""))
        found = [speed(args.phase, seed, args.speed_scan, workdir, cache, args.vote_positions) for seed in args.speed_seed]
        if len(found) > 1:
            ratio = [f["positions"] / max(f["defaults"]) for f in found]
            ours = [e for f in found for e in f["ours"]]
            baseline = [e for f in found for e in f["baseline"]]
            print(f"all speed seeds: per-position / defaults (slower of the two) {min(ratio):.0f}x to {max(ratio):.0f}x; "
                  f"region-level: default settings {summary(ours)} (n={len(ours)}); per-position {summary(baseline)} "
                  f"(n={len(baseline)})")


if __name__ == "__main__":
    main()
