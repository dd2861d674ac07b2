"""Region errors with and without the choice among projection partners (``partners=True``), same runs.

For each seed: simulate the spinel ``crystals`` preset, `stemnmf.run` (raw features, k chosen by the
run), `orientation_datasets` with every default setting and again with ``partners=True``
(``partner_gain=0``); the regions' errors against their best-matching grains, each region's
partner gain, and what every threshold on the gain would have given had the regions below it kept
the defaults' orientation (since round 8 ``partners=True`` keeps the fitted rotation of every
region instead: the "as run" line).

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


def region_errors(found, results, truth) -> np.ndarray:
    orientations = {k.split("/")[-1]: v for k, v in found.items()}
    errors = orientation_scores(orientations, results["/regions/maps"], truth)["orientation_errors"]
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    plain, chosen, gains = [], [], []
    with tempfile.TemporaryDirectory(prefix="stemnmf-partners-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        print(f"load {os.getloadavg()[0]:.1f}; {args.phase}, crystals preset, {args.scan}x{args.scan}, tilt {args.tilt or 'preset'}", flush=True)
        for seed in args.seeds:
            dataset, truth = simulate_tilted(args.phase, seed, args.scan, workdir, args.tilt)
            results = run_once(dataset, truth, args, seed)
            t0 = time.perf_counter()
            before = region_errors(orientation_datasets(results, [args.phase], dataset=dataset, cache_dir=cache), results, truth)
            t1 = time.perf_counter()
            found = orientation_datasets(results, [args.phase], dataset=dataset, cache_dir=cache, partners=True)
            t2 = time.perf_counter()
            after = region_errors(found, results, truth)
            gain = np.asarray(found["/orientations/regions_partner_gain"])
            keep = np.isfinite(before)
            plain += before[keep].tolist()
            chosen += after[keep].tolist()
            gains += gain[keep].tolist()
            print(f"seed {seed} k={results.n_components} defaults {t1 - t0:.1f} s, partners {t2 - t1:.1f} s\n"
                  f"  defaults {np.round(before[keep], 2).tolist()}\n  partners {np.round(after[keep], 2).tolist()}\n"
                  f"  gain (%) {np.round(100 * gain[keep], 2).tolist()}", flush=True)
    plain, chosen, gains = map(np.asarray, (plain, chosen, gains))
    print(f"all (n={len(plain)}): defaults {summary(plain)}")
    print(f"  partners, as run (partner_gain 0): {summary(chosen)}")
    # what a threshold would give if the regions below it kept the defaults' (unfitted) orientation
    for threshold in args.thresholds:
        taken = gains > threshold
        errors = np.where(taken, chosen, plain)
        print(f"  partners, gain > {100 * threshold:.1f} %: {summary(errors)} ({int(taken.sum())} regions changed)")


if __name__ == "__main__":
    main()
