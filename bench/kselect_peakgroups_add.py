"""Add the peak-group vote (``stemnmf.kselect.peakgroups``, library defaults) to recorded curves.

``bench/kselect_curves.py`` recorded the curves of every other vote; the peak-group vote needs
only X, so each recorded scan is simulated again (the same seed gives the same scan) or read from
``--cache`` (``<family>_<seed>_<n>.npz`` with X, scan, shape, truth), and the vote is computed as
``select_k`` computes it (Poisson gain, then :func:`~stemnmf.kselect.peakgroups.peak_groups`).
Each line is written again with ``"peakgroups": {"vote", "sizes", "settings", "seconds"}``;
``bench/kselect_testbed.py --from-curves`` then votes with it.

Run: ``nice -n 10 .venv/bin/python bench/kselect_peakgroups_add.py IN.jsonl OUT.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from kselect_rule6_ablation import _scan_data  # noqa: E402


def add(row, cache=None):
    from stemnmf.kselect.noise import poisson_gain
    from stemnmf.kselect.peakgroups import peak_groups

    X, scan, shape, truth = _scan_data(row, cache)
    if truth != row["truth"]:
        raise RuntimeError(f"truth {truth} != recorded {row['truth']} for {row['family']} {row['seed']} {row['n']}")
    t0 = time.perf_counter()
    groups = peak_groups(X, scan, shape, poisson_gain(X, scan).gain)
    row["peakgroups"] = {"vote": int(groups.vote), "sizes": groups.sizes[:40].tolist(), "settings": groups.settings,
                         "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inp")
    parser.add_argument("out")
    parser.add_argument("--cache", help="folder of <family>_<seed>_<n>.npz (optional)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with open(args.inp) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    with open(args.out, "w") as fh:
        for row in rows:
            fh.write(json.dumps(add(row, args.cache)) + "\n")
            print(row["family"], row["seed"], row["n"], row["peakgroups"]["seconds"], flush=True)


if __name__ == "__main__":
    main()
