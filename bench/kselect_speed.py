"""Speed of the K-component loss scan (k = 3..20) at Cao et al.'s size, against scikit-learn.

The matrix: raw patterns of a simulated 95 x 165 scan of 128 x 128 patterns (the
'crystals' preset, 8 orientations), flattened and scaled to [0, 1] as Cao et al. did:
X is 15,675 x 16,384 float32 (1.0 GB).

Contenders, all measured in this run:

1. ``stemnmf.kselect.k_component_loss`` over k = 3..20 (HALS, each k warm-started from
   the previous with one component appended from the residual), loss pass included.
2. The same NMF refitted from scratch (NNDSVDa) at a few k: does the warm start give the
   same loss, and how much faster is it per k?
3. scikit-learn ``NMF(solver='mu', beta_loss='kullback-leibler', init='nndsvda')``, Cao et
   al.'s loss and solver family, refitted from scratch at each k. It is timed for a few
   iterations at 2-3 values of k (time per iteration and initialisation, from runs of
   ``--sk-iter-short`` and ``--sk-iter-long`` iterations), and extrapolated to the whole
   scan at scikit-learn's default ``max_iter=200`` (it rarely converges before that
   on this loss), with the cost per iteration interpolated linearly in k.

Run: ``.venv/bin/python bench/kselect_speed.py`` (about 6-10 minutes on 2 shared cores).
``--scan 40 64 --det 64`` gives a quick smoke run. The machine is shared with other
engineers, so timings are noisy; the load average is printed with the results.
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


def build_matrix(scan, det, n_orientations, seed):
    from stemnmf.simulate import simulate

    dataset, truth = simulate(
        "crystals", scan=tuple(scan), det=(det, det), n_orientations=n_orientations, seed=seed
    )
    data = np.asarray(dataset.data, dtype=np.float32)
    X = data.reshape(data.shape[0] * data.shape[1], -1)
    X /= X.max()
    return X


def sklearn_timing(X, k, n_iter_short, n_iter_long, seed):
    """(seconds per iteration, seconds of initialisation) of scikit-learn KL-MU at k."""
    from sklearn.decomposition import NMF as SkNMF
    from sklearn.exceptions import ConvergenceWarning

    times = {}
    for n_iter in (n_iter_short, n_iter_long):
        model = SkNMF(k, solver="mu", beta_loss="kullback-leibler", init="nndsvda", max_iter=n_iter, tol=0.0, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            model.fit_transform(X)
            times[n_iter] = time.perf_counter() - t0
    per_iter = (times[n_iter_long] - times[n_iter_short]) / (n_iter_long - n_iter_short)
    init = max(0.0, times[n_iter_short] - n_iter_short * per_iter)
    return per_iter, init


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=int, nargs=2, default=(95, 165))
    parser.add_argument("--det", type=int, default=128)
    parser.add_argument("--orientations", type=int, default=8)
    parser.add_argument("--k-min", type=int, default=3)
    parser.add_argument("--k-max", type=int, default=20)
    parser.add_argument("--solver", default="compressed", help="solver of the scan (the default: --k-scan compressed)")
    parser.add_argument("--baseline-solver", default="hals",
                        help="the same scan with this solver in the same run ('none' to skip; hals = --k-scan exact)")
    parser.add_argument("--cold-k", type=int, nargs="*", default=[5, 8, 14, 20])
    parser.add_argument("--sk-k", type=int, nargs="*", default=[3, 10, 20])
    parser.add_argument("--sk-iter-short", type=int, default=1)
    parser.add_argument("--sk-iter-long", type=int, default=6)
    parser.add_argument("--sk-max-iter", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn extrapolation")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS-kselect.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from stemnmf.decompose import NMF
    from stemnmf.kselect import find_knee, gather_evidence, k_component_loss

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    X = build_matrix(args.scan, args.det, args.orientations, args.seed)
    t_build = time.perf_counter() - t0
    n, m = X.shape
    print(f"X: {n} x {m} float32 ({X.nbytes / 1e9:.2f} GB), simulated in {t_build:.0f} s; load {load_start[0]:.1f}")

    ks = list(range(args.k_min, args.k_max + 1))
    t0 = time.perf_counter()
    kl = k_component_loss(X, ks, solver=args.solver, warm_start=True, random_state=args.seed)
    t_ours = time.perf_counter() - t0
    knee = find_knee(kl.k, kl.loss)
    print(f"stemnmf k = {ks[0]}..{ks[-1]} ({args.solver}, warm start): {t_ours:.1f} s, knee k = {knee.x:g}")
    # the extra evidence of the combined choice (held-out error, split-half stability, map coherence,
    # noise model, shifted copies among the patterns)
    t0 = time.perf_counter()
    combined = gather_evidence(X, kl, knee_k=int(round(knee.x)), iqa_k=int(round(knee.x)), scan_shape=tuple(args.scan),
                               pattern_shape=(args.det, args.det), random_state=args.seed)
    t_evidence = time.perf_counter() - t0
    print(f"extra evidence: {t_evidence:.1f} s (held-out fits {combined.heldout.seconds:.1f} s), votes {combined.votes}")
    t_refine = 0.0
    if args.solver == "compressed":  # what the pipeline adds: the chosen k refined on X by HALS
        k_chosen = int(combined.chosen_k)
        W, H = kl.components(k_chosen)
        t0 = time.perf_counter()
        refined = NMF(k_chosen, solver="hals", init="custom", max_iter=400, tol=1e-4, random_state=args.seed)
        refined.fit_transform(X, W=W, H=H)
        t_refine = time.perf_counter() - t0
        print(f"refining k = {k_chosen} on X: {t_refine:.1f} s, {refined.n_iter_} iterations")
    baseline = None
    if args.baseline_solver != "none":
        t0 = time.perf_counter()
        kl_base = k_component_loss(X, ks, solver=args.baseline_solver, warm_start=True, random_state=args.seed)
        t_base = time.perf_counter() - t0
        baseline = (kl_base, t_base, find_knee(kl_base.k, kl_base.loss).x)
        print(f"baseline {args.baseline_solver}: {t_base:.1f} s, knee k = {baseline[2]:g}")

    cold = []
    for k in args.cold_k:
        if k not in ks:
            continue
        i = ks.index(k)
        t0 = time.perf_counter()
        model = NMF(k, solver=args.solver, init="nndsvda", max_iter=400, tol=1e-4, random_state=args.seed)
        model.fit_transform(X)
        seconds = time.perf_counter() - t0
        cold.append((k, seconds, model.n_iter_, model.mean_abs_err_, kl.seconds[i], kl.n_iter[i], kl.loss[i]))
        print(f"  cold k = {k}: {seconds:.1f} s, {model.n_iter_} it, loss {model.mean_abs_err_:.6g} "
              f"(warm {kl.seconds[i]:.1f} s, {kl.n_iter[i]} it, loss {kl.loss[i]:.6g})")

    sk = []
    for k in [] if args.no_sklearn else args.sk_k:
        per_iter, init = sklearn_timing(X, k, args.sk_iter_short, args.sk_iter_long, args.seed)
        sk.append((k, per_iter, init))
        print(f"  scikit-learn KL-MU k = {k}: {per_iter:.2f} s per iteration, {init:.1f} s initialisation")
    sk_k = np.array([s[0] for s in sk], float)
    sk_iter = np.array([s[1] for s in sk])
    sk_init = np.array([s[2] for s in sk])
    # cost per iteration interpolated linearly between the measured k (constant beyond them)
    sk_total = float("nan")
    if sk:
        per_iter_all = np.interp(ks, sk_k, sk_iter)
        init_all = np.interp(ks, sk_k, sk_init)
        sk_total = float(np.sum(per_iter_all * args.sk_max_iter + init_all))
    load_end = os.getloadavg()

    lines = []
    lines.append("## K-component loss scan speed (`bench/kselect_speed.py`)")
    lines.append("")
    lines.append(
        f"{datetime.date.today()}, {platform.node()} ({os.cpu_count()} cores shared with other engineers; "
        f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end), "
        f"`.venv/bin/python bench/kselect_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip()
    )
    lines.append("")
    lines.append(
        f"X = raw patterns of a simulated {args.scan[0]} x {args.scan[1]} scan at {args.det} x {args.det} "
        f"('crystals', {args.orientations} orientations), {n} x {m} float32, scaled to [0, 1]. "
        f"k = {ks[0]}..{ks[-1]}."
    )
    lines.append("")
    lines.append("| contender | seconds | vs stemnmf |")
    lines.append("| --- | ---: | ---: |")
    lines.append(f"| stemnmf `k_component_loss` ({args.solver}, warm start), whole scan | {t_ours:.1f} | 1.0 |")
    lines.append(
        f"| the same scan plus the combined choice's extra evidence (held-out fits on "
        f"{combined.heldout.n_positions} x {combined.heldout.n_features}, stability, map coherence, noise model, shifted copies) | "
        f"{t_ours + t_evidence:.1f} | {(t_ours + t_evidence) / t_ours:.2f} |"
    )
    lines.append(f"| the extra evidence alone | {t_evidence:.1f} | {t_evidence / t_ours:.2f} |")
    if t_refine:
        total = t_ours + t_evidence + t_refine
        lines.append(f"| the chosen k refined on X by HALS (what `stemnmf run --k auto` adds) | {t_refine:.1f} | "
                     f"{t_refine / t_ours:.2f} |")
        lines.append(f"| **scan + evidence + refinement** | **{total:.1f}** | {total / t_ours:.2f} |")
    if baseline is not None:
        lines.append(f"| the same scan by `{args.baseline_solver}` on X at every k (`--k-scan exact`), same run | "
                     f"{baseline[1]:.1f} | {baseline[1] / t_ours:.1f} |")
    if sk:
        lines.append(
            f"| scikit-learn KL-MU from scratch at every k, {args.sk_max_iter} iterations "
            f"(extrapolated from k = {', '.join(str(int(k)) for k in sk_k)}) | {sk_total:.0f} | {sk_total / t_ours:.0f} |"
        )
    if sk:
        lines.append("")
        lines.append("scikit-learn KL-MU measured here (per iteration; initialisation once per fit):")
        lines.append("")
        lines.append("| k | s / iteration | init s | fit of 200 iterations, s |")
        lines.append("| ---: | ---: | ---: | ---: |")
        for k, per_iter, init in sk:
            lines.append(f"| {k} | {per_iter:.2f} | {init:.1f} | {init + args.sk_max_iter * per_iter:.0f} |")
    if cold:
        lines.append("")
        lines.append("Warm start against refitting the same NMF from scratch (NNDSVDa) at the same k:")
        lines.append("")
        lines.append("| k | cold s | cold iterations | cold loss | warm s | warm iterations | warm loss | loss difference | speed-up |")
        lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for k, cs, ci, cl, ws, wi, wl in cold:
            lines.append(
                f"| {k} | {cs:.1f} | {ci} | {cl:.6g} | {ws:.1f} | {wi} | {wl:.6g} | {100 * (wl - cl) / cl:+.2f} % | {cs / ws:.1f} |"
            )
    lines.append("")
    lines.append("Per k (warm-start scan):")
    lines.append("")
    lines.append("| k | " + " | ".join(str(k) for k in ks) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in ks) + " |")
    lines.append("| seconds | " + " | ".join(f"{s:.1f}" for s in kl.seconds) + " |")
    lines.append("| iterations | " + " | ".join(str(i) for i in kl.n_iter) + " |")
    lines.append("| loss x 1e3 | " + " | ".join(f"{v * 1e3:.4f}" for v in kl.loss) + " |")
    if baseline is not None:
        lines.append(f"| {args.baseline_solver} iterations | " + " | ".join(str(i) for i in baseline[0].n_iter) + " |")
        lines.append(f"| {args.baseline_solver} loss x 1e3 | " + " | ".join(f"{v * 1e3:.4f}" for v in baseline[0].loss) + " |")
    lines.append("")
    if baseline is not None:
        lines.append(f"Knee of the `{args.baseline_solver}` curve: k = {baseline[2]:g}.")
    lines.append(f"Knee of the warm-start curve: k = {knee.x:g}. Votes of the extra evidence: {combined.votes}. "
                 "Target (issue 21): scan plus extra evidence under 60 s.")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if not args.no_write:
        _write_section(args.out, "## K-component loss scan speed", text)
    return text


def _write_section(path, heading, text):
    """Replace (or append) the section starting with ``heading`` in ``path``."""
    old = open(path).read() if os.path.exists(path) else "# k selection benchmarks\n\n"
    start = old.find(heading)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(heading))
        new = old[:start] + text + ("" if end < 0 else old[end + 1 :])
    with open(path, "w") as fh:
        fh.write(new)


if __name__ == "__main__":
    main()
