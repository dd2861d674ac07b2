"""The choice of k across many simulated families: chosen against true number of orientations.

For every family of ``bench/kselect_families.py``, every number of orientations and every
seed: the scan is simulated (``--scan`` positions a side, ``--det`` pixels), turned into raw
features as ``stemnmf run --feature raw`` does, and ``select_k`` runs with the run's defaults
(k = 3..20). One run gives every vote (loss knee, IQA = Cao et al.'s choice, split-half
stability, held-out error, map coherence) and the combined choice. A case passes when the
chosen k is within +-1 of the number of distinct orientations in view.

Which scans were used to set the rule (``--split``): the thresholds and the combination
(docs/kselect.md) were chosen on seed 1 of the families ``spinel-zone``, ``ag-zone``,
``ag-small``, ``ag-random`` with 2, 5, 8, 12 orientations at 48 x 48 positions (``--split
tune --scan 48 --orientations 2 5 8 12``); ``held-out`` runs seed 2 (or ``--seeds``) of every
family and skips seed 1 of the tune families, so its table measures data the rule was not
tuned on. Simulation seed: ``1000 * seed + n``.

``--fifth-rule`` (with ``--from-curves``) leaves the peak-group vote out (the fifth rule on six
votes). ``--fourth-rule`` (with ``--from-curves``) decides by the fourth rule (median of loss knee,
coherence, noise) instead of the library's fifth (the noise vote, not below the smaller of the
other two). ``--from-curves FILE.jsonl`` recomputes every vote and the combined choice with the library's
own rules (``stemnmf.kselect.combine``) from the curves ``bench/kselect_curves.py`` recorded
(the loss, Cao et al.'s two votes, the held-out folds, the map coherence of every component):
the same numbers ``select_k`` gives on those scans, without refitting (the first two of the
four recorded held-out folds are the two the default uses).

Run: ``nice -n 10 .venv/bin/python bench/kselect_testbed.py --split held-out --scan 40``
(the recorded run: 2, 7 and 16 orientations; about a minute per scan on 2 shared cores). ``--families``, ``--orientations`` and ``--seeds``
restrict it; ``--json`` keeps the rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from kselect_families import FAMILIES, FRESH_FAMILIES, make_case, pipeline_features, pipeline_select  # noqa: E402

TUNE_FAMILIES = ("spinel-zone", "ag-zone", "ag-small", "ag-random")
ORIENTATIONS = (2, 7, 16)


def _cases(args):
    families = args.families or [f for f in FAMILIES if f not in FRESH_FAMILIES]
    seeds = args.seeds or ([1] if args.split == "tune" else [2])
    for seed in seeds:  # every family at one n before the next n: a cut-short run still covers them all
        for n in args.orientations:
            for family in families:
                if args.split == "tune" and family not in TUNE_FAMILIES:
                    continue
                if args.split == "held-out" and family in TUNE_FAMILIES and seed == 1:
                    continue  # tuned on
                yield family, seed, n


def run_case(family, seed, n, scan, det):
    dataset, n_true = make_case(family, n, 1000 * seed + n, scan=(scan, scan), det=(det, det))
    X, shape, calibrated = pipeline_features(dataset)
    t0 = time.perf_counter()
    selection = pipeline_select(X, shape, calibrated, pca=False)
    seconds = time.perf_counter() - t0
    return {
        "family": family, "seed": seed, "n": n, "truth": n_true,
        "votes": selection.votes, "cao": int(selection.cao_k), "chosen": int(selection.chosen_k),
        "range": list(selection.plausible_range), "seconds": round(seconds, 1),
        "evidence_seconds": round(selection.seconds.get("evidence", 0.0), 1),
    }  # fmt: skip


def orientation_groups(row, k, peak_threshold=None, min_peaks=None, beamless=True, shift_threshold=None, ratio=None,
                       threshold_any=None):  # fmt: skip
    """Distinct orientations of the recorded fit with ``k`` components (``stemnmf.kselect.orientation``).

    ``peak_threshold=None`` / ``min_peaks=None``: the library's; ``peak_threshold=False``: peaks join
    nothing; ``min_peaks=0``: nothing is peakless; ``beamless=False``: the direct beam's peaks kept;
    ``ratio`` / ``threshold_any``: None the library's, False: any strength joins / no agreement alone joins.
    """
    from stemnmf.kselect.orientation import (
        AGREEMENT_ANY, AGREEMENT_THRESHOLD, MIN_PEAKS, STRENGTH_RATIO, orientation_count,
    )  # fmt: skip
    from stemnmf.kselect.shift import SHIFT_THRESHOLD

    fit, shift = row["peaks"][str(int(k))], row["shift"][str(int(k))]
    suffix = "_beamless" if beamless else ""
    t = AGREEMENT_THRESHOLD if peak_threshold is None else (None if peak_threshold is False else peak_threshold)
    linked = np.asarray(shift["fraction"]) >= (SHIFT_THRESHOLD if shift_threshold is None else shift_threshold)
    return orientation_count(np.asarray(fit["agreement" + suffix]), np.asarray(fit["n_peaks" + suffix]),
                             np.asarray(shift["weight"]), threshold=t,
                             min_peaks=MIN_PEAKS if min_peaks is None else min_peaks, linked=linked,
                             ratio=STRENGTH_RATIO if ratio is None else (None if ratio is False else ratio),
                             threshold_any=AGREEMENT_ANY if threshold_any is None else (
                                 None if threshold_any is False else threshold_any))  # fmt: skip


def votes_from_curves(row, n_folds=2, shift_threshold=None, deciders=None, noise_factor=None, peaks=None,
                      peak_votes=True):
    """The row of one recorded scan, its votes recomputed with the library's rules.

    Rows recorded before the shift and noise evidence existed give the five older votes only; rows
    before the peak evidence count shifted copies only. ``shift_threshold`` (one of the recorded
    thresholds; default the library's), ``deciders`` and ``noise_factor`` change the rule for
    ablations; ``peaks`` (dict of :func:`orientation_groups` options, or False: shifted copies only)
    the same-orientation rule. Rows with a recorded peak-group vote (``row["peakgroups"]``) vote with it
    too unless ``peak_votes`` is False.
    """
    from stemnmf.kselect.combine import (
        COHERENCE_FRACTION, STABILITY_THRESHOLD, combine_votes, combined_choice, first_run_end, heldout_knee,
        noise_vote,
    )  # fmt: skip
    from stemnmf.kselect.heldout import HeldOutEvidence
    from stemnmf.kselect.knee import find_knee
    from stemnmf.kselect.shift import SHIFT_THRESHOLD

    k = np.asarray(row["k"])
    held = HeldOutEvidence(np.asarray(row["heldout_k"]), np.asarray(row["heldout_error"])[:n_folds],
                           np.asarray(row["stability"])[: max(1, n_folds // 2)], 0, 0, 0.0)
    coherence = [np.asarray(row["coherence"][str(int(v))]) for v in k]
    least = np.array([c.min() for c in coherence])
    median = np.array([float(np.median(c)) for c in coherence])
    ratio = np.where(median > 0, least / np.where(median > 0, median, 1.0), 0.0)
    votes = {
        "knee": int(round(find_knee(k, np.asarray(row["loss"])).x)), "iqa": int(row["iqa"]),
        "stability": first_run_end(held.k, held.mean_stability, STABILITY_THRESHOLD),
        "heldout": heldout_knee(held),
        "coherence": first_run_end(k, ratio, COHERENCE_FRACTION),
    }  # fmt: skip
    if row.get("noise") and row["noise"].get("step") and row.get("frobenius"):
        votes["noise"] = noise_vote(k, np.asarray(row["frobenius"]) ** 2, row["noise"]["step"], noise_factor)
    counted = dict(votes)
    if row.get("peaks") and peaks is not False:
        options = dict(peaks or {}, shift_threshold=shift_threshold)
        counted = {name: orientation_groups(row, v, **options) for name, v in votes.items()}
    elif row.get("shift"):
        t = SHIFT_THRESHOLD if shift_threshold is None else shift_threshold
        index = [round(v, 3) for v in row["shift_thresholds"]].index(round(t, 3))
        counted = {name: int(row["shift"][str(int(v))]["groups"][index]) for name, v in votes.items()}
    if row.get("peakgroups") is not None and peak_votes:  # the peak-group vote (bench/kselect_peakgroups_add.py)
        votes["peaks"] = counted["peaks"] = int(np.clip(row["peakgroups"]["vote"], k[0], k[-1]))
    chosen, plausible = combined_choice(counted) if deciders is None else combine_votes(counted, deciders=deciders)
    median_k, _ = combine_votes(counted)
    return {
        "family": row["family"], "seed": row["seed"], "n": row["n"], "truth": row["truth"], "votes": counted,
        "raw_votes": votes, "cao": int(row["iqa"]), "chosen": chosen, "median": median_k,
        "range": list(plausible), "seconds": row["seconds"], "scan": row.get("scan"),
    }  # fmt: skip


def _ok(k, truth):
    return abs(int(k) - int(truth)) <= 1


def _warned(row):
    """Whether the run would carry the 'k UNCERTAIN' warning (the report's own test)."""
    from stemnmf.kselect.combine import PRIMARY, fits_choice
    from stemnmf.report.warnings import k_uncertainty

    results = {"/kselect/plausible_range": np.asarray(row["range"]), "/kselect/chosen_k": row["chosen"]}
    if any(name in row["votes"] for name in PRIMARY):  # as CombinedChoice.to_results: the fits' own choice
        results["/kselect/fits_k"] = fits_choice(row["votes"])
    return bool(k_uncertainty(results))


def _k_text(rows):
    from stemnmf.config import Config, parse_k_range

    low, high = parse_k_range(Config().nmf.k_range)
    return f"{low}..{high} (the run's default)"


def table(rows, args, load_start, load_end):
    signals = ("knee", "iqa", "stability", "heldout", "coherence", "noise", "peaks")
    title = args.title or f"Choice of k across simulated families ({args.split})"
    lines = [f"## {title} (`bench/kselect_testbed.py`)", ""]
    lines.append(
        f"{datetime.date.today()}, {platform.node()} ({os.cpu_count()} cores shared; load average "
        f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end), `bench/kselect_testbed.py {' '.join(sys.argv[1:])}`"
    )
    lines.append("")
    lines.append(
        f"{args.scan} x {args.scan} positions, {args.det} x {args.det} patterns; raw features as `stemnmf run "
        f"--feature raw`; k = {_k_text(rows)}. Truth: distinct orientations in view. Pass: within +-1. A vote in brackets is the k before shifted copies of a pattern (and, where recorded, components with the same peaks) count once and peakless components are dropped."
    )
    lines.append("")
    lines.append("| family | seed | n | truth | knee | IQA | stability | held-out | coherence | noise | peak groups | **combined** | range | Cao | pass | Cao pass | s |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | :---: | :---: | ---: |")
    for r in rows:
        v, raw = r["votes"], r.get("raw_votes", r["votes"])
        cells = [str(v.get(s, "-")) + (f" ({raw[s]})" if s in raw and raw[s] != v.get(s) else "") for s in signals]
        lines.append(
            f"| {r['family']} | {r['seed']} | {r['n']} | {r['truth']} | " + " | ".join(cells)
            + f" | **{r['chosen']}** | {r['range'][0]}..{r['range'][1]} | {r['cao']} | "
            f"{'yes' if _ok(r['chosen'], r['truth']) else 'no'} | {'yes' if _ok(r['cao'], r['truth']) else 'no'} | {r['seconds']} |"
        )
    lines.append("")
    total = len(rows)
    combined = sum(_ok(r["chosen"], r["truth"]) for r in rows)
    cao = sum(_ok(r["cao"], r["truth"]) for r in rows)
    lines.append(f"Combined: {combined} of {total} within +-1 ({100 * combined / max(total, 1):.0f} %); "
                 f"Cao et al.'s two levels alone: {cao} of {total} ({100 * cao / max(total, 1):.0f} %).")
    other = [r for r in rows if r["family"] not in TUNE_FAMILIES]
    if other and len(other) < total:
        hits = sum(_ok(r["chosen"], r["truth"]) for r in other)
        lines.append(f"Families not tuned on (all but {', '.join(TUNE_FAMILIES)}): {hits} of {len(other)} "
                     f"({100 * hits / len(other):.0f} %).")
    for s in signals:
        have = [r for r in rows if s in r["votes"]]
        hits = sum(_ok(r["votes"][s], r["truth"]) for r in have)
        lines.append(f"- {s} alone: {hits} of {len(have)}")
    if all("median" in r for r in rows):
        hits = sum(_ok(r["median"], r["truth"]) for r in rows)
        lines.append(f"- median of all the votes: {hits} of {total}")
    warned = [r for r in rows if _warned(r)]
    quiet = [r for r in rows if not _warned(r)]
    lines.append(f"- 'k UNCERTAIN' warning (stemnmf.report.warnings.k_uncertainty): {len(warned)} of {total} warned, "
                 f"{sum(not _ok(r['chosen'], r['truth']) for r in warned)} of them missed by more than 1; "
                 f"{len(quiet)} not warned, {sum(not _ok(r['chosen'], r['truth']) for r in quiet)} of them missed")
    inside = sum(r["range"][0] - 1 <= r["truth"] <= r["range"][1] + 1 for r in rows)
    lines.append(f"- truth within the plausible range +-1: {inside} of {total}")
    per_family = {}
    for r in rows:
        per_family.setdefault(r["family"], []).append(_ok(r["chosen"], r["truth"]))
    lines.append("- per family (combined): " + ", ".join(f"{f} {sum(v)}/{len(v)}" for f, v in per_family.items()))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("tune", "held-out"), default="held-out")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES))
    parser.add_argument("--orientations", type=int, nargs="+", default=list(ORIENTATIONS))
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--scan", type=int, default=48)
    parser.add_argument("--det", type=int, default=128)
    parser.add_argument("--json", help="append each row to this JSON-lines file")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS-kselect.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--from-curves", nargs="+", help="JSON-lines files of bench/kselect_curves.py: no fitting")
    parser.add_argument("--title", help="heading of the section written (default from --split)")
    parser.add_argument("--fifth-rule", action="store_true",
                        help="with --from-curves: leave the peak-group vote out (the fifth rule, six votes)")
    parser.add_argument("--fourth-rule", action="store_true",
                        help="with --from-curves: decide by the fourth rule (median of knee, coherence, noise)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    load_start = os.getloadavg()
    rows = []
    if args.from_curves:
        deciders = ("knee", "coherence", "noise") if args.fourth_rule else None
        for path in args.from_curves:
            with open(path) as fh:
                rows.extend(votes_from_curves(json.loads(line), deciders=deciders, peak_votes=not args.fifth_rule)
                            for line in fh if line.strip())  # fmt: skip
        args.scan = rows[0].get("scan", args.scan) if rows else args.scan
    for family, seed, n in ([] if args.from_curves else _cases(args)):
        row = run_case(family, seed, n, args.scan, args.det)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    text = table(rows, args, load_start, os.getloadavg())
    print(text)
    if not args.no_write:
        from kselect_speed import _write_section

        title = args.title or f"Choice of k across simulated families ({args.split})"
        _write_section(args.out, f"## {title}", text)
    return rows


if __name__ == "__main__":
    main()
