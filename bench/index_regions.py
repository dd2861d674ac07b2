"""Region errors and time of `orientation_datasets` with every default setting, seed by seed: run it on two checkouts to compare.

    git archive OLD src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src nice -n 10 python bench/index_regions.py --seeds 3 4 5 > old.txt
    PYTHONPATH=src nice -n 10 python bench/index_regions.py --seeds 3 4 5 > new.txt

The runs are seeded, so both see the same regions. Extra keywords: ``--option vote_templates=0``.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
import tempfile
import time

import numpy as np

import stemnmf
from stemnmf.crystal import orientation_datasets
from stemnmf.crystal.scores import orientation_scores

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_quality import simulate, summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", default="LNMO")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--scan", type=int, default=32)
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE for orientation_datasets")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    extra = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    errors = []
    with tempfile.TemporaryDirectory(prefix="stemnmf-regions-") as workdir:
        cache = os.environ.get("STEMNMF_CACHE", os.path.join(workdir, "cache"))
        print(f"load {os.getloadavg()[0]:.1f}; options {extra}", flush=True)
        for seed in args.seeds:
            dataset, truth = simulate(args.phase, seed, args.scan, workdir)
            results = stemnmf.run(dataset, {"features": {"representation": "raw"}, "run": {"report": False}}, truth=truth)
            t0 = time.perf_counter()
            found = orientation_datasets(results, [args.phase], dataset=dataset, cache_dir=cache, **extra)
            elapsed = time.perf_counter() - t0
            orientations = {k.split("/")[-1]: v for k, v in found.items()}
            seed_errors = orientation_scores(orientations, results["/regions/maps"], truth)["orientation_errors"]
            seed_errors = [round(float(e), 2) for e in seed_errors if e is not None]
            errors += seed_errors
            print(f"seed {seed} k={results.n_components} time {elapsed:.2f} s errors {seed_errors} "
                  f"votes {orientations.get('regions_votes')}", flush=True)
    print(f"all: n={len(errors)} {summary(errors)}")


if __name__ == "__main__":
    main()
