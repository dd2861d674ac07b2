"""Σ3 twin boundaries found by `stemnmf index` in simulated films with twins, against the simulator's truth.

For each seed: simulate the ``crystals`` preset with ``twins=2`` (two of its four orientations are
Σ3 twins of the other two, so twin boundaries form where such crystals meet), run stemnmf (raw
features, k chosen by the run), index the regions and classify their boundaries. Truth: the grains
that touch (4-neighbour positions of their thickness maps, largest thickness wins) and the type of
their misorientation (Σ3 within Brandon's criterion). Each found boundary between regions is mapped to
the grains the two regions overlap most; then

* recall: of the truth Σ3 boundaries whose two grains have regions that touch, the fraction typed Σ3;
* precision: of the boundaries typed Σ3, the fraction whose grains are truth Σ3 twins.

    nice -n 10 python bench/index_twins.py --seeds 20 21 22 23 24 25

No setting was tuned on these seeds (the indexing defaults come from bench/index_quality.py's
tuning seeds 3-5).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np

import stemnmf
from stemnmf.crystal import load_phase, orientation_datasets, quaternions_to_matrices
from stemnmf.crystal.boundaries import csl_deviation, shared_boundaries
from stemnmf.crystal.scores import best_matching_grains
from stemnmf.crystal.templates import symmetry_matrices

log = logging.getLogger("bench.twins")

BRANDON_SIGMA3 = 15.0 / np.sqrt(3.0)


def truth_sigma3(truth, symmetry) -> dict[tuple[int, int], bool]:
    """{(grain_a, grain_b): is Σ3} of the grains that touch."""
    rotations = quaternions_to_matrices(truth.orientations)
    pairs = shared_boundaries(np.asarray(truth.thickness))
    return {pair: csl_deviation(rotations[pair[0]], rotations[pair[1]], symmetry, 3) <= BRANDON_SIGMA3 for pair in pairs}


def one_seed(phase_name: str, seed: int, scan: int, workdir: str, cache: str) -> dict:
    cif = os.path.join(workdir, f"{phase_name}.cif")
    if not os.path.exists(cif):
        load_phase(phase_name).structure.write(cif, "cif")
    dataset, truth = stemnmf.simulate("crystals", scan=scan, det=128, seed=seed, crystal=cif, twins=2)
    results = stemnmf.run(dataset, {"features": {"representation": "raw"}, "run": {"report": False}}, truth=truth)
    t0 = time.perf_counter()
    found = orientation_datasets(results, [phase_name], dataset=dataset, cache_dir=cache)
    elapsed = time.perf_counter() - t0
    symmetry = symmetry_matrices(load_phase(phase_name))
    truth_pairs = truth_sigma3(truth, symmetry)
    grains = best_matching_grains(results["/regions/maps"], truth.labels)
    typed = {}
    for row in found["/orientations/boundaries"]:
        ga, gb = int(grains[row["region_a"]]), int(grains[row["region_b"]])
        if ga < 0 or gb < 0 or ga == gb:
            continue
        pair = (min(ga, gb), max(ga, gb))
        typed[pair] = typed.get(pair, False) or str(row["type"]) == "Σ3"
    true_twins = [p for p, is_twin in truth_pairs.items() if is_twin]
    seen = [p for p in true_twins if p in typed]
    hits = sum(typed[p] for p in seen)
    called = [p for p, is_twin in typed.items() if is_twin]
    right = sum(truth_pairs.get(p, False) for p in called)
    print(f"seed {seed}: k={results.n_components} regions={len(grains)}; truth Σ3 boundaries {len(true_twins)}, "
          f"with touching regions {len(seen)}, typed Σ3 {hits}; boundaries typed Σ3 {len(called)}, truth Σ3 {right}; "
          f"indexing {elapsed:.1f} s", flush=True)
    return {"truth": len(true_twins), "seen": len(seen), "hits": hits, "called": len(called), "right": right}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", default="LNMO")
    parser.add_argument("--seeds", type=int, nargs="*", default=[20, 21, 22, 23, 24, 25])
    parser.add_argument("--scan", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="stemnmf-twins-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        print(f"phase {args.phase}, crystals preset with twins=2, {args.scan}x{args.scan} scan; load {os.getloadavg()[0]:.1f}", flush=True)
        totals = {"truth": 0, "seen": 0, "hits": 0, "called": 0, "right": 0}
        for seed in args.seeds:
            for key, value in one_seed(args.phase, seed, args.scan, workdir, cache).items():
                totals[key] += value
        recall = totals["hits"] / totals["seen"] if totals["seen"] else float("nan")
        precision = totals["right"] / totals["called"] if totals["called"] else float("nan")
        print(f"all seeds: truth Σ3 boundaries {totals['truth']}, between touching regions {totals['seen']}, "
              f"found as Σ3 {totals['hits']} (recall {recall:.0%}); typed Σ3 {totals['called']}, right {totals['right']} "
              f"(precision {precision:.0%})")


if __name__ == "__main__":
    main()
