"""What the same-orientation evidence (``stemnmf.kselect.orientation``) adds to the choice of k.

The matrix of ``bench/kselect_speed.py`` (raw patterns of a 95 x 165 'crystals' scan, 128 x 128,
8 orientations: 15,675 x 16,384 float32), the compressed k scan k = 3..20 (the run's default),
then in the same process: ``gather_evidence`` as the run calls it (held-out, coherence, noise,
shifted copies and the orientation evidence of the voted fits), and the orientation evidence
alone on the same fits (one pass over X on at most 4,096 positions, the peaks of the voted fits).

Run: ``nice -n 10 .venv/bin/python bench/kselect_orientation_cost.py`` (``--scan 40 64 --det 64``
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

from stemnmf.kselect import gather_evidence, k_component_loss, orientation_evidence  # noqa: E402
from stemnmf.kselect.knee import find_knee  # noqa: E402
from stemnmf.kselect.shift import shift_evidence  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=int, nargs=2, default=(95, 165))
    parser.add_argument("--det", type=int, default=128)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    X = build_matrix(args.scan, args.det, 8, 0)
    shape = (args.det, args.det)
    print(f"X {X.shape[0]} x {X.shape[1]}, load average {os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    kloss = k_component_loss(X, range(3, 21), solver="compressed", random_state=0)
    scan_s = time.perf_counter() - t0
    knee = int(round(find_knee(kloss.k, kloss.loss).x))
    t0 = time.perf_counter()
    combined = gather_evidence(X, kloss, knee_k=knee, iqa_k=knee, scan_shape=tuple(args.scan), pattern_shape=shape,
                               random_state=0)  # fmt: skip
    evidence_s = time.perf_counter() - t0
    ks = sorted(set(combined.raw_votes.values()))
    shifts = shift_evidence(kloss.factors, shape)
    t0 = time.perf_counter()
    orientation_evidence(X, kloss.factors, shape, ks=ks, shift_fractions=shifts.fractions)
    orientation_s = time.perf_counter() - t0
    print(f"| k scan 3..20 (compressed) | {scan_s:.1f} s |")
    print(f"| gather_evidence (all extra evidence, orientation included) | {evidence_s:.1f} s |")
    print(f"| of which the orientation evidence of the voted fits {ks} | {orientation_s:.1f} s |")
    print(f"votes {combined.raw_votes} -> {combined.votes}; chosen {combined.chosen_k}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
