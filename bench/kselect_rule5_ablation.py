"""A fifth rule for the combined k? Candidate rules on every recorded (seen) test-bed curve.

Pre-declared before any candidate was scored (2026-12-07, issue 21, fifth round): every scan of
the test bed whose curves were recorded is now *seen* (tune seeds 1 and 3, held-out seed 2:
72 scans at 40 x 40; the issue's four spinel scans at 80 x 80). Each candidate rule below turns
the votes of a scan (counted as distinct orientations, ``kselect_testbed.votes_from_curves``)
into one k. Criterion: the number of the 72 scans within +-1 of the truth; a candidate must
keep the spinel scans at 4 of 4; it replaces the fourth rule only when it wins by 3 scans or
more (ties between candidates: the simpler). The families of ``FRESH_FAMILIES`` were recorded
afterwards and are scored once, by ``kselect_testbed.py --from-curves``, not here.

Run: ``python bench/kselect_rule5_ablation.py`` (no fitting; a few seconds).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from kselect_testbed import TUNE_FAMILIES, votes_from_curves  # noqa: E402

HERE = os.path.join(os.path.dirname(__file__), "kselect_curves")
SEEN = {
    "tune": ("rule4_tune_seed1.jsonl", "rule4_tune_seed3.jsonl"),
    "held-out": ("rule4_heldout_seed2.jsonl",),
    "spinel": ("rule4_spinel_80.jsonl",),
}


def _median(*values):
    values = sorted(int(v) for v in values)
    return values[(len(values) - 1) // 2]


def _upper_median(*values):
    values = sorted(int(v) for v in values)
    return values[len(values) // 2]


#: The candidates, declared before scoring (name: function of the counted votes).
CANDIDATES = {
    "fourth rule: median(knee, coherence, noise)": lambda v: _median(v["knee"], v["coherence"], v["noise"]),
    "noise alone": lambda v: int(v["noise"]),
    "median(coherence, noise, held-out)": lambda v: _median(v["coherence"], v["noise"], v["heldout"]),
    "median(coherence, noise, stability)": lambda v: _median(v["coherence"], v["noise"], v["stability"]),
    "noise when knee and coherence differ by > 1, else the fourth rule": lambda v: (
        int(v["noise"]) if abs(v["knee"] - v["coherence"]) > 1 else _median(v["knee"], v["coherence"], v["noise"])
    ),
    "fourth rule, but max(coherence, noise) when the three spread > 2": lambda v: (
        max(v["coherence"], v["noise"]) if max(v["knee"], v["coherence"], v["noise"])
        - min(v["knee"], v["coherence"], v["noise"]) > 2 else _median(v["knee"], v["coherence"], v["noise"])
    ),
    "upper median of all six votes": lambda v: _upper_median(*v.values()),
    "upper median of knee, coherence, noise, noise (noise twice)": lambda v: _upper_median(
        v["knee"], v["coherence"], v["noise"], v["noise"]
    ),
}


def _rows(names):
    rows = []
    for name in names:
        with open(os.path.join(HERE, name)) as fh:
            rows.extend(votes_from_curves(json.loads(line)) for line in fh if line.strip())
    return rows


def _ok(k, truth):
    return abs(int(k) - int(truth)) <= 1


def main():
    rows = {split: _rows(names) for split, names in SEEN.items()}
    lines = ["| candidate | seen, of 72 | tune, of 24 | held-out, of 48 | held-out not tuned on, of 36 | "
             "2 / 7 / 16 held-out | spinel, of 4 |", "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    results = {}
    for name, rule in CANDIDATES.items():
        hit = {s: [_ok(rule(r["votes"]), r["truth"]) for r in rs] for s, rs in rows.items()}
        other = [_ok(rule(r["votes"]), r["truth"]) for r in rows["held-out"] if r["family"] not in TUNE_FAMILIES]
        per_n = [sum(_ok(rule(r["votes"]), r["truth"]) for r in rows["held-out"] if r["n"] == n) for n in (2, 7, 16)]
        seen = sum(hit["tune"]) + sum(hit["held-out"])
        results[name] = (seen, sum(hit["spinel"]))
        lines.append(f"| {name} | {seen} | {sum(hit['tune'])} | {sum(hit['held-out'])} | {sum(other)} | "
                     f"{' / '.join(map(str, per_n))} | {sum(hit['spinel'])} |")
    print("\n".join(lines))
    base = results["fourth rule: median(knee, coherence, noise)"][0]
    eligible = {n: s for n, (s, sp) in results.items() if sp == 4}
    best = max(eligible, key=lambda n: eligible[n])  # first declared wins a tie (declared simplest first)
    verdict = best if eligible[best] >= base + 3 else "fourth rule: median(knee, coherence, noise)"
    print(f"\nbest eligible: {best} ({eligible[best]} of 72; fourth rule {base}); adopted: {verdict}")
    return np.array([results[n][0] for n in CANDIDATES])


if __name__ == "__main__":
    main()
