"""Time of the iterative NMF with the evidence rule against the transitive rule, same data, same run.

    .venv/bin/python bench/merge_speed.py FEATURES.npz [--features aa,bd] [--restarts 25] [--repeats 2]

FEATURES.npz holds scaled feature matrices under the names of ``--features``
(as written by the scratch preparation of bench/grain_finding.py's films).
The two rules run alternately ``--repeats`` times each on every matrix; the
median seconds of each and their ratio (evidence / transitive) are printed
with the final k. The machine is shared, so single timings are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np

from stemnmf.decompose import IterativeNMF


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--restarts", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = np.load(args.path)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# merge speed, {datetime.date.today()}, load {load:.1f}, {args.restarts} restarts, {args.path}")
    print("| feature | transitive s | evidence s | evidence / transitive | k transitive | k evidence |")
    print("| --- | --- | --- | --- | --- | --- |")
    for feature in args.features.split(","):
        X = data[feature]
        times = {"transitive": [], "evidence": []}
        ks = {}
        for _ in range(args.repeats):
            for rule in times:
                t0 = time.perf_counter()
                model = IterativeNMF(feature=feature, merge_rule=rule, n_restarts=args.restarts, max_iter=400,
                                     random_state=0).fit(X)
                times[rule].append(time.perf_counter() - t0)
                ks[rule] = model.n_components_
        old, new = np.median(times["transitive"]), np.median(times["evidence"])
        print(f"| {feature.upper()} | {old:.1f} | {new:.1f} | {new / old:.2f} | {ks['transitive']} | {ks['evidence']} |",
              flush=True)


if __name__ == "__main__":
    main()
