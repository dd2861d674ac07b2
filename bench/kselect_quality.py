"""Quality of the choice of k on simulated scans with a known number of orientations.

The simulator's few-large-crystals preset ('crystals': 64 x 64 scan, 128 x 128 patterns,
crystals that fill the film, borders that overlap through the thickness) with 4, 6, 8
and 10 distinct orientations (``n_grains = max(8, n + 2)`` so that every orientation can
appear; the truth is the number of distinct orientations in view). For each scan:

* raw features as Cao et al.: patterns binned 4 x 4 (32 x 32), flattened, scaled to [0, 1]
  by the global maximum; ``select_k`` with its defaults (k = 3..20, warm start);
* the same with every k refitted from scratch (``warm_start=False``): same knee and same
  choice? (the baseline for the warm start);
* AA features (``stemnmf.featurize(dataset, 'aa')``, the pipeline's default representation)
  with weighted mean patterns streamed from the dataset.

A case passes when the chosen k is within +-1 of the truth. Simulation seeds are
``100 * seed + n`` for each ``--seeds`` value (default 0: the four cases of the issue).

Run: ``.venv/bin/python bench/kselect_quality.py [--seeds 0 1 2] [--no-cold] [--no-aa]``.
Timings are wall seconds on a shared machine (noisy).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings

import numpy as np


def simulated(n, seed):
    from stemnmf.simulate import simulate

    dataset, truth = simulate("crystals", n_orientations=n, n_grains=max(8, n + 2), seed=100 * seed + n)
    n_true = len(np.unique(np.asarray(truth.extra["orientation_id"])))
    return dataset, n_true


def raw_features(dataset, factor=4):
    data = np.asarray(dataset.data, dtype=np.float32)
    sy, sx, qy, qx = data.shape
    by, bx = qy // factor, qx // factor
    X = data[:, :, : by * factor, : bx * factor].reshape(sy, sx, by, factor, bx, factor).mean(axis=(3, 5))
    X = X.reshape(sy * sx, by * bx)
    return X / X.max(), (by, bx)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--orientations", type=int, nargs="+", default=[4, 6, 8, 10])
    parser.add_argument("--no-cold", action="store_true", help="skip the refit-from-scratch comparison")
    parser.add_argument("--no-aa", action="store_true", help="skip AA features")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS-kselect.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)

    import stemnmf
    from stemnmf.engine import Engine
    from stemnmf.kselect import select_k

    warnings.filterwarnings("ignore", category=UserWarning)
    load_start = os.getloadavg()
    rows = []
    for seed in args.seeds:
        for n in args.orientations:
            dataset, n_true = simulated(n, seed)
            X, shape = raw_features(dataset)
            row = {"seed": seed, "n": n, "truth": n_true}
            t0 = time.perf_counter()
            warm = select_k(X, pattern_shape=shape, random_state=0)
            row["warm_s"] = time.perf_counter() - t0
            row["warm"] = warm
            if not args.no_cold:
                t0 = time.perf_counter()
                row["cold"] = select_k(X, pattern_shape=shape, random_state=0, warm_start=False, pca=False)
                row["cold_s"] = time.perf_counter() - t0
            if not args.no_aa:
                A, _ = stemnmf.featurize(dataset, "aa", engine=Engine(progress=False))
                t0 = time.perf_counter()
                row["aa"] = select_k(A, dataset=dataset, feature="aa", engine=Engine(progress=False), random_state=0, pca=False)
                row["aa_s"] = time.perf_counter() - t0
            rows.append(row)
            w = row["warm"]
            print(
                f"seed {seed} n {n} truth {n_true}: knee {w.knee}, choices {w.metric_choices}, chosen {w.chosen_k}"
                + (f"; cold knee {row['cold'].knee} chosen {row['cold'].chosen_k}" if "cold" in row else "")
                + (f"; AA knee {row['aa'].knee} chosen {row['aa'].chosen_k}" if "aa" in row else ""),
                flush=True,
            )
    load_end = os.getloadavg()
    text = _table(rows, args, argv_text, load_start, load_end)
    print()
    print(text)
    if not args.no_write:
        from kselect_speed import _write_section

        _write_section(args.out, "## Choice of k on simulated crystals", text)
    return rows


def _ok(k, truth):
    return abs(int(k) - int(truth)) <= 1


def _table(rows, args, argv_text, load_start, load_end):
    lines = ["## Choice of k on simulated crystals (`bench/kselect_quality.py`)", ""]
    lines.append(
        f"{datetime.date.today()}, {platform.node()} ({os.cpu_count()} cores shared; load average "
        f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end), "
        f"`.venv/bin/python bench/kselect_quality.py {argv_text}`".rstrip()
    )
    lines.append("")
    lines.append(
        "'crystals' preset (64 x 64 scan, 128 x 128 patterns), n distinct orientations, simulation seed "
        "100 x seed + n. Raw features: 4 x 4 binned patterns scaled to [0, 1], representative patterns. "
        "A case passes when the chosen k is within +-1 of the truth."
    )
    lines.append("")
    header = "| seed | n | truth | knee | SSIM | PSNR | GMSD | MDSI | **chosen** | pass | PCA elbow | s |"
    rule = "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: |"
    lines += ["Raw features, `select_k` defaults (warm start):", "", header, rule]
    for r in rows:
        w = r["warm"]
        c = w.metric_choices
        elbow = w.pca_elbow if w.pca_elbow is not None else "-"
        lines.append(
            f"| {r['seed']} | {r['n']} | {r['truth']} | {w.knee} | {c['ssim']} | {c['psnr']} | {c['gmsd']} | {c['mdsi']} "
            f"| **{w.chosen_k}** | {'yes' if _ok(w.chosen_k, r['truth']) else 'no'} | {elbow} | {r['warm_s']:.0f} |"
        )
    lines.append("")
    for seed in args.seeds:
        sub = [r for r in rows if r["seed"] == seed]
        lines.append(
            f"Seed {seed}: chosen k within +-1 of the truth in {sum(_ok(r['warm'].chosen_k, r['truth']) for r in sub)} "
            f"of {len(sub)} cases (knee alone: {sum(_ok(r['warm'].knee, r['truth']) for r in sub)} of {len(sub)})."
        )
    total = sum(_ok(r["warm"].chosen_k, r["truth"]) for r in rows)
    lines.append(f"All seeds: {total} of {len(rows)}.")
    lines.append("")
    if rows and "cold" in rows[0]:
        lines += [
            "Warm start against refitting every k from scratch (same raw features):",
            "",
            "| seed | n | truth | warm knee | cold knee | warm chosen | cold chosen "
            "| median loss difference | k with warm lower / higher by > 1 % | warm s | cold s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            w, c = r["warm"], r["cold"]
            rel = (w.kloss.loss - c.kloss.loss) / c.kloss.loss
            lines.append(
                f"| {r['seed']} | {r['n']} | {r['truth']} | {w.knee} | {c.knee} | {w.chosen_k} | {c.chosen_k} "
                f"| {100 * np.median(np.abs(rel)):.1f} % | {int((rel < -0.01).sum())} / {int((rel > 0.01).sum())} "
                f"| {w.kloss.seconds.sum():.1f} | {c.kloss.seconds.sum():.1f} |"
            )
        lines.append("")
        rel = np.concatenate([(r["warm"].kloss.loss - r["cold"].kloss.loss) / r["cold"].kloss.loss for r in rows])
        lines.append(
            f"Over all {rel.size} (scan, k): the warm-start loss is lower than the cold one by more than 1 % at "
            f"{int((rel < -0.01).sum())}, higher by more than 1 % at {int((rel > 0.01).sum())}, within 1 % at "
            f"{int((np.abs(rel) <= 0.01).sum())} (NMF local minima: either start can miss a grain at some k). "
            f"Same knee in {sum(r['warm'].knee == r['cold'].knee for r in rows)} of {len(rows)} scans, "
            f"same chosen k in {sum(r['warm'].chosen_k == r['cold'].chosen_k for r in rows)} of {len(rows)}."
        )
        lines.append("")
        lines.append(
            f"Cold start within +-1 of the truth: {sum(_ok(r['cold'].chosen_k, r['truth']) for r in rows)} of {len(rows)}; "
            f"k-scan time warm / cold: {sum(r['warm'].kloss.seconds.sum() for r in rows):.0f} s / "
            f"{sum(r['cold'].kloss.seconds.sum() for r in rows):.0f} s."
        )
        lines.append("")
    if rows and "aa" in rows[0]:
        lines += [
            "AA features (`featurize(dataset, 'aa')`), weighted mean patterns from the dataset:",
            "",
            "| seed | n | truth | knee | SSIM | PSNR | GMSD | MDSI | **chosen** | pass | s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |",
        ]
        for r in rows:
            a = r["aa"]
            c = a.metric_choices
            lines.append(
                f"| {r['seed']} | {r['n']} | {r['truth']} | {a.knee} | {c['ssim']} | {c['psnr']} | {c['gmsd']} | {c['mdsi']} "
                f"| **{a.chosen_k}** | {'yes' if _ok(a.chosen_k, r['truth']) else 'no'} | {r['aa_s']:.0f} |"
            )
        lines.append("")
        lines.append(f"AA: {sum(_ok(r['aa'].chosen_k, r['truth']) for r in rows)} of {len(rows)} within +-1.")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()
