"""What the peak-group vote (``stemnmf.kselect.peakgroups``) adds to the time of the choice of k.

The matrix of ``bench/kselect_speed.py`` (raw patterns of a 95 x 165 'crystals' scan, 128 x 128,
8 orientations: 15,675 x 16,384 float32), the compressed k scan k = 3..20 (the run's default),
then in the same process: ``gather_evidence`` as the run calls it (every extra vote, the peak
groups included), and the peak groups alone (blocks of 4 x 4 positions, patterns binned to 64 x 64).
The scan plus ``gather_evidence`` is what issue 21's target (< 60 s) is about; the same sum without
the peak groups is the baseline of the same run; the peak groups without the split test (the sixth
rule) are timed too.

Run: ``nice -n 10 .venv/bin/python bench/kselect_peakgroups_cost.py`` (``--scan 40 64 --det 64``
for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(__file__))

from kselect_speed import build_matrix  # noqa: E402

from stemnmf.kselect import gather_evidence, k_component_loss, poisson_gain  # noqa: E402
from stemnmf.kselect.knee import find_knee  # noqa: E402
from stemnmf.kselect.peakgroups import peak_groups  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=int, nargs=2, default=(95, 165))
    parser.add_argument("--det", type=int, default=128)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    X = build_matrix(args.scan, args.det, 8, 0)
    shape = (args.det, args.det)
    load = os.getloadavg()[0]
    print(f"X {X.shape[0]} x {X.shape[1]}, load average {load:.1f}", flush=True)
    t0 = time.perf_counter()
    kloss = k_component_loss(X, range(3, 21), solver="compressed", random_state=0)
    scan_s = time.perf_counter() - t0
    knee = int(round(find_knee(kloss.k, kloss.loss).x))
    t0 = time.perf_counter()
    combined = gather_evidence(X, kloss, knee_k=knee, iqa_k=knee, scan_shape=tuple(args.scan), pattern_shape=shape,
                               random_state=0)  # fmt: skip
    evidence_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    groups = peak_groups(X, tuple(args.scan), shape, poisson_gain(X, tuple(args.scan)).gain)
    groups_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sixth = peak_groups(X, tuple(args.scan), shape, poisson_gain(X, tuple(args.scan)).gain, split_ratio=None)
    sixth_s = time.perf_counter() - t0
    print("| step | seconds |")
    print("| --- | ---: |")
    print(f"| k scan 3..20 (compressed) | {scan_s:.1f} |")
    print(f"| gather_evidence (every extra vote, peak groups included) | {evidence_s:.1f} |")
    print(f"| peak groups alone (gain and groups; block {groups.settings['block']}) | {groups_s:.1f} |")
    print(f"| peak groups alone without the split test (the sixth rule) | {sixth_s:.1f} |")
    print(f"| scan + evidence without the peak groups (the baseline) | {scan_s + evidence_s - groups_s:.1f} |")
    print(f"| **scan + evidence** | **{scan_s + evidence_s:.1f}** |")
    print(f"votes {combined.raw_votes} -> {combined.votes}; chosen {combined.chosen_k}; peak groups {groups.vote} "
          f"(sizes {groups.sizes[:12].tolist()}; without the split test {sixth.vote}); load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
