"""Throw-away check (patches ``PatternModel.tilt_search``'s grid for the run; not an API): region errors of the
default indexing with the tilt search's grid as shipped (+-2°, 1° steps) and with a wider, finer grid, same runs.

    STEMNMF_CACHE=/tmp/cache nice -n 10 python bench/index_tiltgrid.py --seeds 106 107 --tilt 1 4 --runs /tmp/runs --grid 3 0.5
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile

import numpy as np

from stemnmf.crystal import orientation_datasets
from stemnmf.crystal.refine import PatternModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_partners import region_errors, run_once, simulate_tilted  # noqa: E402
from index_quality import summary  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--tilt", type=float, nargs=2, default=None)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--grid", type=float, nargs=2, default=(3.0, 0.5), metavar=("SPAN", "STEP"))
    args = parser.parse_args()
    args.phase = "LNMO"
    logging.basicConfig(level=logging.WARNING)
    shipped = PatternModel.tilt_search
    wider = functools.partialmethod(shipped, span=args.grid[0], step=args.grid[1])
    errors = {"shipped": [], "wider": []}
    with tempfile.TemporaryDirectory(prefix="stemnmf-tiltgrid-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        for seed in args.seeds:
            dataset, truth = simulate_tilted("LNMO", seed, args.scan, workdir, args.tilt)
            results = run_once(dataset, truth, args, seed)
            line = [f"seed {seed}"]
            for name, method in (("shipped", shipped), ("wider", wider)):
                PatternModel.tilt_search = method
                found = orientation_datasets(results, ["LNMO"], dataset=dataset, cache_dir=cache)
                e = region_errors(found, results, truth)
                e = e[np.isfinite(e)]
                errors[name] += e.tolist()
                line.append(f"{name} {np.round(e, 2).tolist()}")
            PatternModel.tilt_search = shipped
            print("\n  ".join(line), flush=True)
    for name, e in errors.items():
        print(f"{name}: {summary(e)}")


if __name__ == "__main__":
    main()
