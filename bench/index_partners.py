"""Region errors with and without the choice among projection partners (``partners=True``), same runs.

For each seed: simulate the spinel ``crystals`` preset, `stemnmf.run` (raw features, k chosen by the
run), `orientation_datasets` with ``partner_check=False, tilt_search=False`` (the defaults before round 9),
``tilt_search=False`` (the defaults of round 9: the quick check among partners), ``partner_switch=False``
(the defaults of rounds 10 and 11: the check, then the tilt search), ``partner_switch=True`` (round 11's
option: the switch to a partner that scores higher at the searched tilt; since round 12 not printed),
``partner_polish=False`` and ``partner_polish=True`` (round 12: the polish of the choice and its partners where
the margin is below ``ambiguous_margin``) and, unless
``--no-fit``, with ``partners=True`` (``partner_gain=0``); the regions' errors against their
best-matching grains (and, on a second line, with touching crystals of one orientation counted as one
grain: ``merge_equal=True``), each region's partner gain, and what every threshold on the fit's gain
would have given had the regions below it kept the defaults' orientation (since round 8
``partners=True`` keeps the fitted rotation of every region instead: the "as run" line).

    STEMNMF_CACHE=/tmp/cache nice -n 10 python bench/index_partners.py --seeds 3 4 5 10 11 12 13 14
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

import stemnmf
from stemnmf.crystal import orientation_datasets
from stemnmf.crystal.scores import orientation_scores
from stemnmf.io.results import load_results, save_results

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_quality import simulate, summary  # noqa: E402


def simulate_tilted(phase_name: str, seed: int, scan: int, workdir: str, tilt):
    """The ``crystals`` preset, its orientations tilted off their zone axes by ``tilt`` (low, high) degrees (None: the preset's)."""
    if tilt is None:
        return simulate(phase_name, seed, scan, workdir)
    cif = os.path.join(workdir, f"{phase_name}.cif")
    if not os.path.exists(cif):
        simulate(phase_name, seed, 4, workdir)  # writes the CIF
    return stemnmf.simulate("crystals", scan=scan, det=128, seed=seed, crystal=cif, orientation_tilt=tuple(tilt))


def region_errors(found, results, truth, merge_equal: bool = False) -> np.ndarray:
    orientations = {k.split("/")[-1]: v for k, v in found.items()}
    errors = orientation_scores(orientations, results["/regions/maps"], truth, merge_equal=merge_equal)["orientation_errors"]
    return np.array([np.nan if e is None else float(e) for e in errors])


def run_once(dataset, truth, args, seed: int):
    """``stemnmf.run`` with raw features, or the run kept in ``args.runs`` from an earlier call."""
    tag = f"{args.phase}-{seed}-{args.scan}-" + ("preset" if args.tilt is None else "-".join(f"{t:g}" for t in args.tilt))
    path = os.path.join(args.runs, f"{tag}.h5") if args.runs else None
    if path and os.path.exists(path):
        return load_results(path)
    results = stemnmf.run(dataset, {"features": {"representation": "raw"}, "run": {"report": False}}, truth=truth)
    if path:
        os.makedirs(args.runs, exist_ok=True)
        save_results(results, path, overwrite=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", default="LNMO")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--tilt", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="orientation_tilt of the simulation, degrees (default: the preset's, 0-1)")
    parser.add_argument("--runs", default=None, help="folder that keeps each seed's run (results.h5) for reuse")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.0, 0.001, 0.002, 0.005, 0.01])
    parser.add_argument("--no-fit", action="store_true", help="leave out partners=True (the kinematic fits)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = ["no check", "no search", "no polish", "polish"] + ([] if args.no_fit else ["partners"])
    options = [{"partner_check": False, "tilt_search": False}, {"tilt_search": False}, {"partner_polish": False}, {"partner_polish": True},
               {"partners": True}][: len(names)]
    errors = {n: [] for n in names}
    merged = {n: [] for n in names}
    times = {n: [] for n in names}
    gains, flags = [], []
    with tempfile.TemporaryDirectory(prefix="stemnmf-partners-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        print(f"load {os.getloadavg()[0]:.1f}; {args.phase}, crystals preset, {args.scan}x{args.scan}, tilt {args.tilt or 'preset'}", flush=True)
        for seed in args.seeds:
            dataset, truth = simulate_tilted(args.phase, seed, args.scan, workdir, args.tilt)
            results = run_once(dataset, truth, args, seed)
            lines = [f"seed {seed} k={results.n_components}"]
            for name, extra in zip(names, options):
                t0 = time.perf_counter()
                found = orientation_datasets(results, [args.phase], dataset=dataset, cache_dir=cache, **extra)
                times[name].append(time.perf_counter() - t0)
                single, joined = region_errors(found, results, truth), region_errors(found, results, truth, merge_equal=True)
                keep = np.isfinite(single)
                errors[name] += single[keep].tolist()
                merged[name] += joined[keep].tolist()
                lines.append(f"  {name:9s} {times[name][-1]:6.1f} s {np.round(single[keep], 2).tolist()}")
                if name == "polish" and "/orientations/regions_partner_margin" in found:
                    margin = np.asarray(found["/orientations/regions_partner_margin"])[keep]
                    flagged = np.asarray(found["/orientations/regions_ambiguous"])[keep]
                    lines.append(f"  margin (%) {np.round(100 * margin, 3).tolist()}, ambiguous {np.flatnonzero(flagged).tolist()}")
                    flags.append(np.stack([single[keep], margin, flagged]))
                if name == "partners":
                    gain = np.asarray(found["/orientations/regions_partner_gain"])
                    gains += gain[keep].tolist()
                    lines.append(f"  fit gain (%) {np.round(100 * gain[keep], 2).tolist()}")
            print("\n".join(lines), flush=True)
    print(f"all (n={len(errors[names[0]])}), each region against its best-matching grain; then touching crystals of one orientation as one grain:")
    for name in names:
        print(f"  {name:9s} {summary(errors[name])}; merged {summary(merged[name])}; {min(times[name]):.1f}-{max(times[name]):.1f} s per scan")
    if flags:
        err, margin, flagged = np.concatenate(flags, axis=1)
        wrong = err > 2
        print(f"  ambiguous (polish): {int(flagged.sum())} flagged, {int((flagged > 0)[wrong].sum())} of the {int(wrong.sum())} wrong regions, "
              f"{int((flagged > 0)[~wrong].sum())} of the {int((~wrong).sum())} right ones")
        for threshold in (0.001, 0.002, 0.005, 0.01, 0.02):
            low = np.nan_to_num(margin, nan=np.inf) < threshold
            print(f"    margin < {100 * threshold:.1f} %: {int(low[wrong].sum())} wrong, {int(low[~wrong].sum())} right flagged")
    if args.no_fit:
        return
    plain, chosen, gains = map(np.asarray, (errors["no check"], errors["partners"], gains))
    # what a threshold would give if the regions below it kept the unchecked orientation
    for threshold in args.thresholds:
        taken = gains > threshold
        print(f"  partners, gain > {100 * threshold:.1f} %: {summary(np.where(taken, chosen, plain))} ({int(taken.sum())} regions changed)")


if __name__ == "__main__":
    main()
