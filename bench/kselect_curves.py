"""Record every curve behind the choice of k on the test bed, to study the decision offline.

For each case (family, seed, n) of ``bench/kselect_families.py``: the scan is simulated,
turned into raw features as ``stemnmf run --feature raw`` does, and ``select_k`` runs with the
run's defaults over ``--k-range`` (default 2..20) with four held-out folds. One JSON line per
case keeps the truth, the K-component loss, Cao et al.'s votes, the held-out error of every
fold, the split-half stability of both halves of the features, and the coherence of every
component map at every k. ``bench/kselect_testbed.py --from-curves`` evaluates decision rules
on these lines without refitting anything.

Run: ``nice -n 10 .venv/bin/python bench/kselect_curves.py --split tune --out /tmp/curves.jsonl``
(``--split held-out`` for the scans the rule was not set on; see ``kselect_testbed.py``;
``--split fresh`` for the families added after the fourth rule, seed 5).
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

from kselect_families import FAMILIES, FRESH_FAMILIES, make_case, pipeline_features, pipeline_select  # noqa: E402
from kselect_spinel import scan as spinel_scan  # noqa: E402
from kselect_testbed import TUNE_FAMILIES  # noqa: E402

from stemnmf.kselect.coherence import map_coherence  # noqa: E402
from stemnmf.decompose.evidence import peak_agreement  # noqa: E402
from stemnmf.kselect.orientation import direct_beam, fit_peaks, residual_columns  # noqa: E402
from stemnmf.kselect.shift import component_weight, distinct_count, shift_fraction  # noqa: E402

#: Thresholds at which the groups of shifted copies are recorded.
SHIFT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _pattern_cosine(H):
    """Per component, the largest cosine between its pattern (row of H) and any other."""
    H = np.asarray(H, dtype=np.float64)
    H = H / np.maximum(np.linalg.norm(H, axis=1, keepdims=True), 1e-300)
    c = H @ H.T
    np.fill_diagonal(c, -1.0)
    return c.max(axis=1) if H.shape[0] > 1 else np.zeros(1)


def _peaks(X, shape, factors):
    """Per k, the peak evidence of every component (kselect.orientation), with and without the direct beam."""
    col_sq, mean = residual_columns(X, factors, sorted(factors))
    beam = direct_beam(mean.reshape(shape))
    out = {}
    for k, (W, H) in factors.items():
        everything = fit_peaks(W, H, col_sq[int(k)])
        outside = fit_peaks(W, H, col_sq[int(k)], shape, beam)
        out[int(k)] = {
            "n_peaks": everything.sum(axis=1).tolist(), "n_peaks_beamless": outside.sum(axis=1).tolist(),
            "agreement": np.round(peak_agreement(everything), 3).tolist(),
            "agreement_beamless": np.round(peak_agreement(outside), 3).tolist(),
        }  # fmt: skip
    return out, int(beam.sum())


def record(family, seed, n, scan, det, k_low, k_high, n_folds=4):
    if family == "issue-spinel":  # bench/kselect_spinel.py's scans (simulation seed n + seed)
        dataset, n_true = spinel_scan(n, n + seed, scan, det)
    else:
        dataset, n_true = make_case(family, n, 1000 * seed + n, scan=(scan, scan), det=(det, det))
    X, shape, calibrated = pipeline_features(dataset)
    t0 = time.perf_counter()
    selection = pipeline_select(
        X, shape, calibrated, pca=False, k_values=range(k_low, k_high + 1), heldout_options={"n_folds": n_folds}
    )
    seconds = time.perf_counter() - t0
    kloss = selection.kloss
    combined = selection.combined
    held = combined.heldout
    coherence = {
        int(k): map_coherence(kloss.factors[int(k)][0], calibrated.scan_shape).tolist() for k in kloss.k
    }
    cosine = {int(k): _pattern_cosine(kloss.factors[int(k)][1]).tolist() for k in kloss.k}
    shift = {}
    for k in kloss.k:
        W, H = kloss.factors[int(k)]
        fraction = shift_fraction(np.asarray(H).reshape(-1, *shape))
        weight = component_weight(W, H)
        shift[int(k)] = {
            "largest": round(float(fraction.max()), 4),
            "groups": [distinct_count(fraction, weight, t) for t in SHIFT_THRESHOLDS],
            "fraction": np.round(fraction, 3).tolist(),
            "weight": np.round(weight / weight.max(), 4).tolist(),
        }
    peaks, beam_size = _peaks(X, shape, {int(k): kloss.factors[int(k)] for k in kloss.k})
    noise = combined.noise
    return {
        "family": family, "seed": seed, "n": n, "truth": n_true, "scan": scan,
        "k": kloss.k.tolist(), "loss": np.asarray(kloss.loss).tolist(),
        "knee": int(selection.knee), "iqa": int(selection.cao_k), "votes": selection.votes,
        "chosen": int(selection.chosen_k),
        "heldout_k": held.k.tolist(), "heldout_error": held.error.tolist(), "stability": held.stability.tolist(),
        "coherence": coherence, "cosine": cosine, "seconds": round(seconds, 1),
        "frobenius": np.asarray(kloss.frobenius).tolist(), "shift": shift, "shift_thresholds": list(SHIFT_THRESHOLDS),
        "noise": None if noise is None else {"gain": noise.gain, "total": noise.total, "n": noise.n_positions,
                                             "m": noise.n_features, "row_max": noise.row_max,
                                             "column_max": noise.column_max, "step": noise.step},
        "heldout_floor": None if held.noise_floor is None else np.asarray(held.noise_floor).tolist(),
        "votes_unmerged": combined.raw_votes, "peaks": peaks, "beam_size": beam_size,
        "evidence_seconds": round(selection.seconds.get("evidence", 0.0), 1),
        "peakgroups": None if combined.peakgroups is None else {
            "vote": int(combined.peakgroups.vote), "sizes": combined.peakgroups.sizes[:40].tolist(),
            "settings": combined.peakgroups.settings},
    }  # fmt: skip


def cases(split, families, seeds, orientations):
    for seed in seeds:
        for n in orientations:
            for family in families:
                if split == "tune" and family not in TUNE_FAMILIES:
                    continue
                if split == "held-out" and family in TUNE_FAMILIES and seed == 1:
                    continue
                yield family, seed, n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("tune", "held-out", "fresh"), default="tune",
                        help="fresh: the families of FRESH_FAMILIES, seed 5, 2 4 7 16 orientations")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES))
    parser.add_argument("--orientations", type=int, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--scan", type=int, default=40)
    parser.add_argument("--det", type=int, default=128)
    parser.add_argument("--k-range", default="2:20")
    parser.add_argument("--spinel", action="store_true", help="the issue's four spinel scans (80 x 80, --seeds 0)")
    parser.add_argument("--folds", type=int, default=4, choices=(2, 4), help="held-out folds recorded")
    parser.add_argument("--out", required=True, help="JSON-lines file the rows are appended to")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    low, high = (int(v) for v in args.k_range.split(":"))
    families = args.families or [f for f in FAMILIES if f not in FRESH_FAMILIES]
    if args.split == "fresh":
        families = args.families or list(FRESH_FAMILIES)
    if args.spinel:
        families, args.split = ["issue-spinel"], "spinel"
    seeds = args.seeds or {"tune": [1], "fresh": [5]}.get(args.split, [2])
    orientations = args.orientations or {"tune": [2, 5, 8, 12], "fresh": [2, 4, 7, 16]}.get(args.split, [2, 7, 16])
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as fh:
            done = {(r["family"], r["seed"], r["n"]) for r in map(json.loads, fh)}
    for family, seed, n in cases(args.split, families, seeds, orientations):
        if (family, seed, n) in done:
            continue
        row = record(family, seed, n, args.scan, args.det, low, high, args.folds)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(family, seed, n, row["truth"], row["votes"], row["seconds"], flush=True)


if __name__ == "__main__":
    main()
