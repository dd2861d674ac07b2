"""Does the compressed k scan choose what the exact scan chooses? Two curve files, scan by scan.

Both files come from ``bench/kselect_curves.py`` on the same cases: one recorded with the exact
scan (``--k-scan exact``: HALS on X at every k; the files in ``bench/kselect_curves/``), one with
the compressed scan (the default). The combined choice is recomputed from each file's votes with
the library's rule (:func:`stemnmf.kselect.combine_votes`), so only the scan differs.

Run: ``python bench/kselect_scan_agreement.py bench/kselect_curves/heldout_seed2.jsonl /tmp/compressed.jsonl``
"""

from __future__ import annotations

import argparse
import json

from stemnmf.kselect.combine import DECIDERS, combine_votes

VOTES = ("knee", "heldout", "coherence", "iqa", "stability")


def _rows(path):
    with open(path) as fh:
        return {(r["family"], r["seed"], r["n"]): r for r in map(json.loads, fh)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exact", help="curves recorded with --k-scan exact")
    parser.add_argument("compressed", help="curves recorded with --k-scan compressed")
    args = parser.parse_args(argv)
    exact, compressed = _rows(args.exact), _rows(args.compressed)
    print("| family | n | exact: knee, held-out, coherence, IQA, stability | combined | compressed: the same | combined | s exact | s compressed |")
    print("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: |")
    same_votes = same_choice = within = within_exact = 0
    keys = [key for key in compressed if key in exact]
    for key in keys:
        e, c = exact[key], compressed[key]
        k_e = combine_votes(e["votes"], deciders=DECIDERS)[0]
        k_c = combine_votes(c["votes"], deciders=DECIDERS)[0]
        same_votes += all(e["votes"][v] == c["votes"][v] for v in VOTES)
        same_choice += k_e == k_c
        within += abs(k_c - c["truth"]) <= 1
        within_exact += abs(k_e - e["truth"]) <= 1
        print(f"| {key[0]} | {key[2]} | {', '.join(str(e['votes'][v]) for v in VOTES)} | {k_e} | "
              f"{', '.join(str(c['votes'][v]) for v in VOTES)} | {k_c} | {e['seconds']:.0f} | {c['seconds']:.0f} |")
    print()
    print(f"{len(keys)} scans: every vote equal in {same_votes}, the combined choice equal in {same_choice}; "
          f"within +-1 of the truth: exact {within_exact}, compressed {within}.")


if __name__ == "__main__":
    main()
