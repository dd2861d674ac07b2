"""Ablation of the same-orientation rule (``stemnmf.kselect.orientation``) on recorded test-bed curves.

For every setting of the rule (peak agreement threshold, least number of peaks of a pattern that
holds reflections, direct beam left out or not) the votes of every recorded scan are recomputed
(``kselect_testbed.votes_from_curves``, no fitting) and the combined choice is scored: scans
within +-1 of the number of distinct orientations. ``shift only`` is the third rule (shifted
copies counted once, nothing else). Set the rule on the tune curves
(``bench/kselect_curves.py --split tune``) and only report it on the held-out ones.

Run: ``python bench/kselect_peaks_ablation.py bench/kselect_curves/rule4_tune_seed1.jsonl
bench/kselect_curves/rule4_tune_seed3.jsonl``
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from kselect_testbed import TUNE_FAMILIES, votes_from_curves  # noqa: E402

SIGNALS = ("knee", "iqa", "stability", "heldout", "coherence", "noise")
THRESHOLDS = (False, 0.2, 0.3, 0.4, 0.5, 0.6)
MIN_PEAKS = (0, 8, 32)
RATIOS = (False, 0.1, 0.25, 0.5)
ANY = (False, 0.6, 0.7, 0.8)


def _ok(k, truth):
    return abs(int(k) - int(truth)) <= 1


def score(rows, peaks):
    """(combined within +-1, per-signal within +-1, per-n within +-1, signed errors) for one setting."""
    out = [votes_from_curves(r, peaks=peaks) for r in rows]
    combined = sum(_ok(o["chosen"], o["truth"]) for o in out)
    signals = {s: sum(_ok(o["votes"][s], o["truth"]) for o in out if s in o["votes"]) for s in SIGNALS}
    by_n = {}
    for o in out:
        by_n.setdefault(o["n"], []).append(_ok(o["chosen"], o["truth"]))
    other = [o for o in out if o["family"] not in TUNE_FAMILIES]
    return combined, signals, {n: (sum(v), len(v)) for n, v in sorted(by_n.items())}, other, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("curves", nargs="+")
    parser.add_argument("--settings", help="JSON list of peaks options to score instead of the grid")
    args = parser.parse_args(argv)
    rows = []
    for path in args.curves:
        with open(path) as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    if args.settings:
        settings = json.loads(args.settings)
    else:
        settings = [False] + [
            {"peak_threshold": t, "min_peaks": p, "beamless": b, "ratio": q, "threshold_any": a}
            for b in (True, False) for t in THRESHOLDS for q in (RATIOS if t is not False else (False,))
            for a in (ANY if t is not False and q is not False else (False,)) for p in MIN_PEAKS
        ]  # fmt: skip
    print(f"{len(rows)} scans from {', '.join(os.path.basename(p) for p in args.curves)}\n")
    print("| rule | beam left out | agreement | strength ratio | any strength at | min peaks | **combined** | not tuned on | " + " | ".join(SIGNALS)
          + " | by n |")  # fmt: skip
    print("| --- | :---: | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in SIGNALS) + " | --- |")
    for peaks in settings:
        combined, signals, by_n, other, _ = score(rows, peaks)
        other_text = f"{sum(_ok(o['chosen'], o['truth']) for o in other)}/{len(other)}" if other else "-"
        if peaks is False:
            label, beam, t, p, q, a = "shift only", "-", "-", "-", "-", "-"
        else:
            label = "peaks"
            beam = "yes" if peaks.get("beamless", True) else "no"
            t = "-" if peaks.get("peak_threshold") is False else peaks.get("peak_threshold", "default")
            p = peaks.get("min_peaks", "default")
            q = "any" if peaks.get("ratio") is False else peaks.get("ratio", "default")
            a = "-" if peaks.get("threshold_any") is False else peaks.get("threshold_any", "default")
        cells = " | ".join(str(signals[s]) for s in SIGNALS)
        n_text = ", ".join(f"{n}: {a}/{b}" for n, (a, b) in by_n.items())
        print(f"| {label} | {beam} | {t} | {q} | {a} | {p} | **{combined}/{len(rows)}** | {other_text} | {cells} | {n_text} |")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
