"""Regions from the data's own peaks (issue 16, session 30): split a region whose raw patterns show two peak sets.

    .venv/bin/python bench/grain_peaksplit.py FILM.h5 [FILM.h5 ...] [--features aa,bd] [--restarts 10]
        [--seed N] [--cache DIR] [--rules default,split] [--diagnose]

Each film (a ``stemnmf simulate`` scan with its truth) is calibrated and
featurised with the run's defaults and factorised once by ``IterativeNMF``'s
defaults as ``stemnmf run`` calls it (the scan shape given, so the grain
recovery runs; random state = the film's seed unless ``--seed``). Kept in
``--cache``: the factors, the model's ``peak_agreement_``, the vacuum mask, and
the calibrated patterns of every position binned to at most 64 x 64 entries
(what :func:`stemnmf.analysis.split_regions` reads) with their Poisson gain. The
same factors are then analysed with each rule in one process and scored
against the truth (every score of issue 16); the analysis stage is timed per
rule in the same process.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402

from stemnmf.analysis import analyze  # noqa: E402
from stemnmf.analysis.absorb import absorb_fragments  # noqa: E402
from stemnmf.analysis.split import PeakBlocks  # noqa: E402
from stemnmf.decompose import IterativeNMF  # noqa: E402
from stemnmf.decompose.evidence import pattern_noise, pattern_peaks, peak_agreement  # noqa: E402
from stemnmf.decompose.iterative import _residual_pass, absorb_pieces, prune_components  # noqa: E402  (a private name: bench only)
from stemnmf.decompose.blocks import as_blocks  # noqa: E402
from stemnmf.features.scaling import scale_features  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402
from stemnmf.kselect.noise import poisson_gain  # noqa: E402
from stemnmf.kselect.peakgroups import MAX_SIDE, bin_patterns  # noqa: E402

log = logging.getLogger("grain_peaksplit")

SCORES = ("grain_recall_visible", "grain_recall", "grain_recall_iou", "grain_recall_own_visible", "ARI_regions",
          "TPR_G", "IoU_G", "precision_A", "area_median_error", "feret_median_error")


def binned_positions(dataset) -> tuple[np.ndarray, tuple[int, int]]:
    """(n, m) float32 calibrated patterns of every position binned to at most MAX_SIDE a side, and their shape."""
    sy, sx = dataset.scan_shape
    out, shape = [], None
    for y in range(sy):
        rows = np.asarray(dataset.read_rows(y, y + 1), np.float64).reshape(sx, -1)
        b, shape = bin_patterns(rows, dataset.pattern_shape, MAX_SIDE)
        out.append(b.astype(np.float32))
    return np.concatenate(out), shape


def cached(path: Path, features, cache: Path, restarts: int, seed: int) -> dict:
    """Every cached input of the analysis for one film, computed once."""
    files = {f: cache / f"{path.stem}_{f}_r{restarts}_s{seed}.npz" for f in features}
    data_file = cache / f"{path.stem}_patterns.npz"
    if all(f.exists() for f in files.values()) and data_file.exists():
        z = np.load(data_file)
        out = {"patterns": z["patterns"], "pattern_shape": tuple(z["shape"]), "gain": float(z["gain"]),
               "scan": tuple(z["scan"]), "vacuum": z["vacuum"]}
        for f, file in files.items():
            out[f] = dict(np.load(file))
        return out
    dataset, raw, vacuum = prepare(path, list(features))
    scan = tuple(dataset.scan_shape)
    patterns, shape = binned_positions(dataset)
    gain = poisson_gain(patterns, scan).gain
    vac = np.zeros(scan, bool) if vacuum is None else np.asarray(vacuum, bool)
    np.savez(data_file, patterns=patterns, shape=np.asarray(shape), gain=gain, scan=np.asarray(scan), vacuum=vac)
    del dataset
    for f in features:
        if files[f].exists():
            continue
        X, _, _ = scale_features(raw[f], "robust")
        t0 = time.perf_counter()
        model = IterativeNMF(feature=f, n_restarts=restarts, max_iter=400, random_state=seed, scan_shape=scan)
        W = model.fit_transform(np.asarray(X, np.float32))
        seconds = time.perf_counter() - t0
        log.info("%s %s: k %d, %.1f s", path.name, f, model.n_components_, seconds)
        np.savez(files[f], W=W, H=model.components_, agreement=model.peak_agreement_, seconds=seconds,
                 X=np.asarray(X, np.float32))
    del raw
    return cached(path, features, cache, restarts, seed)


#: name -> analyze options ("P": the cached summed patterns), in the order of the choice's ties (fewest
#: changes to the regions first)
RULES = {
    "off": dict(peak_split=None),
    "split80": dict(peak_split=0.8, region_peaks="P"),
    "split75": dict(peak_split=0.75, region_peaks="P"),
    "split70": dict(peak_split=0.7, region_peaks="P"),
    "frag30": dict(peak_split=None, fragment_size=30),
    "frag50": dict(peak_split=None, fragment_size=50),
    "frag75": dict(peak_split=None, fragment_size=75),
    "split80+frag50": dict(peak_split=0.8, region_peaks="P", fragment_size=50),
    "split75+frag50": dict(peak_split=0.75, region_peaks="P", fragment_size=50),
    "split70+frag50": dict(peak_split=0.7, region_peaks="P", fragment_size=50),
    # session 31: fragments absorbed by their neighbour when they show fewer than N new peak entries
    "absorb1": dict(absorb=1, region_peaks="P"),
    "absorb2": dict(absorb=2, region_peaks="P"),
    "absorb4": dict(absorb=4, region_peaks="P"),
    "absorb8": dict(absorb=8, region_peaks="P"),
    # added after the new-reflection evidence of every touching pair on ag1 s10 and ag2 s10 (tuning): the
    # neighbour's blocks that do not touch the region (far 1), at least 3 (small regions get judged)
    "absorb4f1": dict(absorb=4, region_peaks="P", far=1, rows=3),
    "absorb8f1": dict(absorb=8, region_peaks="P", far=1, rows=3),
    "kabsorb1+absorb8f1": dict(components=1, absorb=8, region_peaks="P", far=1, rows=3),
    # added after ag3 s10 (tuning): regions of other grains joined where the neighbour's data show their
    # reflections (stacked or overlapping grains); both regions must show nothing new to each other
    "absorb4m": dict(absorb=4, region_peaks="P", far=1, rows=3, mutual=True),
    "absorb8m": dict(absorb=8, region_peaks="P", far=1, rows=3, mutual=True),
    # components that are pieces of a touching component's grain joined in IterativeNMF's last step
    # (``IterativeNMF(absorb=True)``, applied here to the cached factors: the same computation)
    "kabsorb1": dict(components=1),
    "kabsorb2": dict(components=2),
    "kabsorb1+absorb1": dict(components=1, absorb=1, region_peaks="P"),
    "kabsorb2+absorb2": dict(components=2, absorb=2, region_peaks="P"),
    # session 32 (issue 21): components whose map is more noise than structure dropped after the recovery
    # (``IterativeNMF(min_coherence=0.5)``, applied here to the cached factors: the same computation);
    # ``coh50``: the kept patterns refitted, maps fixed (``prune_refit="patterns"``); ``coh50full``: every
    # factor refitted by HALS (``prune_refit="full"``, the default chosen on the tuning films)
    "coh50": dict(prune=0.5),
    "coh50full": dict(prune=(0.5, "full")),
}

#: The issue's targets per preset: visible recall, ARI of regions (AA only) and mean TPR_G per feature.
TARGETS = {
    "visible": {"aa": (0.90, 0.85, 0.80), "bd": (0.90, 0.80, 0.70)},
    "ari": {"aa": (0.85, 0.80, 0.70)},
    "tpr": {"aa": (0.90, 0.90, 0.80), "bd": (0.90, 0.90, 0.80)},
}


def targets_met(preset: int, feature: str, sc: dict) -> int:
    """How many of the issue's targets one film and feature meets: visible recall, ARI (AA), TPR_G,
    precision_A >= 0.90 and regions / grains in 0.9-1.2."""
    met = int(sc["grain_recall_visible"] >= TARGETS["visible"][feature][preset])
    met += int(sc["TPR_G"] >= TARGETS["tpr"][feature][preset]) + int(sc["precision_A"] >= 0.90)
    if feature in TARGETS["ari"]:
        met += int(sc["ARI_regions"] >= TARGETS["ari"][feature][preset])
    return met + int(0.9 <= sc["n_clusters"] / sc["n_grains"] <= 1.2)


def choose(totals: dict) -> str:
    """The committed criterion (session 30, before any tuning score was seen): the rule meeting the most
    targets over the tuning pairs, among the rules whose mean visible recall and mean own-region recall
    (visible) fall by at most 0.01 against ``off``; ties go to the earlier rule of :data:`RULES`."""
    base = totals["off"]
    eligible = [r for r in RULES if r in totals and totals[r]["visible"] >= base["visible"] - 0.01
                and totals[r]["own"] >= base["own"] - 0.01]
    return max(eligible, key=lambda r: (totals[r]["met"], -list(RULES).index(r)))


def absorbed_factors(z: dict, scan, min_new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(W, H, peak agreement, seconds) of ``IterativeNMF``'s absorption step on the cached factors (as
    ``fit_transform`` runs it after the recovery, and the agreement as it then computes it)."""
    t0 = time.perf_counter()
    X = z["X"]
    Wt, H, _ = absorb_pieces(X, z["W"].T, z["H"], scan, max_iter=400, tol=1e-4, min_new=min_new)
    _, _, col_sq, _ = _residual_pass(as_blocks(X), Wt, H, 1)
    agreement = peak_agreement(pattern_peaks(H, pattern_noise(Wt, col_sq)))
    return np.ascontiguousarray(Wt.T), H, agreement, time.perf_counter() - t0


def pruned_factors(z: dict, scan, prune) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(W, H, peak agreement, seconds) of ``IterativeNMF``'s pruning step on the cached factors
    (``prune`` = min_coherence, or (min_coherence, 'full'): every factor refitted by HALS instead of the
    patterns alone), the agreement as ``fit_transform`` then computes it."""
    t0 = time.perf_counter()
    X = z["X"]
    coherence, refit = prune if isinstance(prune, tuple) else (prune, "patterns")
    Wt, H, _ = prune_components(X, z["W"].T, z["H"], scan, min_coherence=coherence, refit=refit, max_iter=400,
                                tol=1e-4)
    _, _, col_sq, _ = _residual_pass(as_blocks(X), Wt, H, 1)
    agreement = peak_agreement(pattern_peaks(H, pattern_noise(Wt, col_sq)))
    return np.ascontiguousarray(Wt.T), H, agreement, time.perf_counter() - t0


def absorbed(off, after) -> str:
    """One line per region of ``after`` that holds several regions of ``off``: each member's matched grain,
    positions and TPR_G (``*``: the grain of the group's largest member, i.e. a fragment absorbed; ``!``:
    another grain, absorbed wrongly). Returns the counts (fragments, grains) and the lines."""
    if off.regions is None or after.regions is None or off.scores is None:
        return ""
    a, b = off.regions.masks, after.regions.masks
    same = [np.flatnonzero((b == m[None]).reshape(len(b), -1).all(axis=1)) for m in a]
    home = [int(s[0]) if s.size else int(np.argmax((b & m[None]).reshape(len(b), -1).sum(axis=1)))
            for s, m in zip(same, a)]
    per = off.scores.grain["per_cluster"]
    lines, good, bad = [], 0, 0
    for j in range(len(b)):
        members = [i for i, h in enumerate(home) if h == j]
        if len(members) < 2:
            continue
        members.sort(key=lambda i: -int(a[i].sum()))
        grain = per["matched_grain"][members[0]]
        cells = []
        for i in members:
            same = per["matched_grain"][i] == grain
            if i != members[0]:
                good, bad = good + int(same), bad + int(not same)
            cells.append(f"{'*' if same else '!'}g{per['matched_grain'][i]} n{int(a[i].sum())} tpr{per['TPR_G'][i]:.2f}")
        lines.append("  " + " + ".join(cells))
    return f"absorbed: {good} fragments, {bad} grains\n" + "\n".join(lines)


def k_met(k: int, sc: dict) -> int:
    """Issue 21's target: the final k within 15 % of the number of visible grains."""
    return int(abs(k - sc["n_visible_grains"]) <= 0.15 * sc["n_visible_grains"])


#: Session 31's rules, in the order of the choice's ties.
RULES31 = ("off", "absorb1", "absorb2", "absorb4", "absorb8", "kabsorb1", "kabsorb2", "kabsorb1+absorb1",
           "kabsorb2+absorb2", "absorb4f1", "absorb8f1", "kabsorb1+absorb8f1", "absorb4m", "absorb8m")


def choose31(totals: dict) -> str:
    """Session 31's criterion (committed before any tuning score was seen): the most targets met over the
    tuning pairs (issue 16's, as :func:`targets_met`, plus issue 21's final k), among the rules whose mean
    visible recall and mean own-region recall (visible) fall by at most 0.01 against ``off``; ties go to
    the larger mean TPR_G, then to the earlier rule of :data:`RULES31`."""
    base = totals["off"]
    eligible = [r for r in RULES31 if r in totals and totals[r]["visible"] >= base["visible"] - 0.01
                and totals[r]["own"] >= base["own"] - 0.01]
    return max(eligible, key=lambda r: (totals[r]["met"] + totals[r]["kmet"], totals[r]["tpr"], -RULES31.index(r)))


#: Session 32's rules (issue 21), in the order of the ties.
RULES32 = ("off", "coh50", "coh50full")


def choose32(totals: dict) -> str:
    """Session 32's criterion (session 31's, :func:`choose31`, over :data:`RULES32`): the most targets met
    (issue 16's plus issue 21's final k) among the rules whose mean visible recall and mean own-region recall
    (visible) fall by at most 0.01 against ``off``; ties to the larger mean TPR_G, then the earlier rule."""
    base = totals["off"]
    eligible = [r for r in RULES32 if r in totals and totals[r]["visible"] >= base["visible"] - 0.01
                and totals[r]["own"] >= base["own"] - 0.01]
    return max(eligible, key=lambda r: (totals[r]["met"] + totals[r]["kmet"], totals[r]["tpr"], -RULES32.index(r)))


def pick(totals: dict, new: bool = True) -> str:
    """The committed choice for the rules in ``totals``: session 32's, 31's or 30's criterion."""
    if all(r in RULES32 for r in totals):
        return choose32(totals)
    return choose31(totals) if new and all(r in RULES31 for r in totals) else choose(totals)


def timing(path: Path, feature: str, cache: Path, restarts: int, seed: int, split: float, repeats: int = 2,
           option: str = "peak_split") -> None:
    """Seconds of the analysis stage as ``stemnmf run`` calls it (the calibrated dataset given: vacuum,
    patterns and dissimilarity passes), without and with ``option`` = ``split`` (the split's or the
    absorption's blocks made from the dataset), alternated in one process on the cached factors: one
    Markdown row per call."""
    from stemnmf.calibrate import calibrate
    from stemnmf.config import Config
    from stemnmf.engine import Engine
    from stemnmf.io import load

    c = cached(path, [feature], cache, restarts, seed)
    engine = Engine(progress=False)
    dataset, _ = calibrate(load(path), engine=engine, **Config().calibrate.calibrate_options())
    z = c[feature]
    print(f"# analysis stage, {path.stem} {feature.upper()}, load {os.getloadavg()[0]:.1f}")
    print(f"| call | {option} | regions | seconds |\n| --- | --- | --- | --- |")
    off = {"peak_split": None, "absorb": 0}[option]
    for i in range(repeats):
        for value in (off, split if option == "peak_split" else int(split)):
            t0 = time.perf_counter()
            result = analyze(z["W"], z["H"], dataset=dataset, feature=feature, engine=engine,
                             peak_agreement=z["agreement"], **{option: value})
            print(f"| {i} | {value} | {result.regions.n_regions} | {time.perf_counter() - t0:.1f} |", flush=True)


def combine(outputs) -> None:
    """Totals and the committed choice over the rows of several runs of this script (film rows only;
    rows with the ``k met`` column use session 31's criterion)."""
    totals, new = {}, False
    for name in outputs:
        for line in Path(name).read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) not in (len(SCORES) + 7, len(SCORES) + 8) or cells[2] not in RULES:
                continue
            with_k = len(cells) == len(SCORES) + 8
            new |= with_k
            sc = dict(zip(SCORES, map(float, cells[3 : 3 + len(SCORES)])))
            clusters, grains = cells[3 + len(SCORES)].split(" (")[0].split(" / ")
            sc["ratio"] = int(clusters) / int(grains)
            t = totals.setdefault(cells[2], {"met": 0, "kmet": 0, "rows": []})
            t["met"] += int(cells[-3] if with_k else cells[-2])
            t["kmet"] += int(cells[-2]) if with_k else 0
            t["rows"].append(sc)
    print("| rule | pairs | targets met | k met | " + " | ".join(SCORES) + " | regions / grains |\n"
          + "| --- " * (len(SCORES) + 5) + "|")
    for rule, t in totals.items():
        means = {key: float(np.mean([sc[key] for sc in t["rows"]])) for key in SCORES + ("ratio",)}
        t["visible"], t["own"], t["tpr"] = (means["grain_recall_visible"], means["grain_recall_own_visible"],
                                            means["TPR_G"])
        print(f"| {rule} | {len(t['rows'])} | {t['met']} | {t['kmet']} | "
              + " | ".join(f"{means[k]:.3f}" for k in SCORES + ("ratio",)) + " |")
    print(f"\nchosen by the committed criterion: {pick(totals, new)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("films", nargs="+")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="random state (default: the film's seed)")
    parser.add_argument("--cache", default="/tmp/reg16/cache")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--cache-only", action="store_true")
    parser.add_argument("--diagnose", action="store_true", help="log the regions each absorb rule joined (truth)")
    parser.add_argument("--combine", action="store_true", help="FILMS are this script's outputs: total their rows")
    parser.add_argument("--time", type=float, default=None, metavar="T",
                        help="time the analysis stage of the first film and feature with and without peak_split=T")
    parser.add_argument("--time-option", default="peak_split", choices=("peak_split", "absorb"),
                        help="the analyze option --time sets (absorb: T new peak entries)")
    args = parser.parse_args()
    if args.time is not None:
        path = Path(args.films[0])
        seed = args.seed if args.seed is not None else int(path.stem.split("_s")[1].split("_")[0])
        timing(path, args.features.split(",")[0], Path(args.cache), args.restarts, seed, args.time,
               option=args.time_option)
        return
    if args.combine:
        combine(args.films)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    features = args.features.split(",")
    print(f"# regions from peaks, {datetime.date.today()}, load {os.getloadavg()[0]:.1f}, {args.restarts} restarts")
    print("| film | feature | rule | " + " | ".join(SCORES) + " | regions / grains (visible) | k | targets met | k met "
          "| analysis s |")
    print("| --- " * (len(SCORES) + 8) + "|", flush=True)
    totals = {}
    for film in args.films:
        path = Path(film)
        seed = args.seed if args.seed is not None else int(path.stem.split("_s")[1].split("_")[0])
        c = cached(path, features, cache, args.restarts, seed)
        if args.cache_only:
            continue
        truth = load_truth(path)
        for feature in features:
            W, H, agreement = c[feature]["W"], c[feature]["H"], c[feature]["agreement"]
            blocks = PeakBlocks.from_positions(c["patterns"], c["scan"], c["pattern_shape"])
            first, factors = None, {}
            for rule in args.rules.split(","):
                options = {k: (blocks if v == "P" else v) for k, v in RULES[rule].items()}
                Wr, Hr, agr = W, H, agreement
                if "components" in options:
                    n = options.pop("components")
                    if n not in factors:
                        factors[n] = absorbed_factors(c[feature], c["scan"], n)
                        log.info("%s %s: absorption (min_new %d) k %d -> %d, %.1f s", path.stem, feature, n,
                                 H.shape[0], factors[n][1].shape[0], factors[n][3])
                    Wr, Hr, agr, _ = factors[n]
                if "prune" in options:
                    n = ("prune", options.pop("prune"))
                    if n not in factors:
                        factors[n] = pruned_factors(c[feature], c["scan"], n[1])
                        log.info("%s %s: pruning %s k %d -> %d, %.1f s", path.stem, feature, n[1], H.shape[0],
                                 factors[n][1].shape[0], factors[n][3])
                    Wr, Hr, agr, _ = factors[n]
                far, rows = options.pop("far", 2), options.pop("rows", 6)  # the rules as declared (session 31)
                mutual = options.pop("mutual", False)
                t0 = time.perf_counter()
                with mock.patch.object(sys.modules["stemnmf.analysis.analyze"], "absorb_fragments",
                                       functools.partial(absorb_fragments, far=far, min_rows=rows, mutual=mutual)):
                    result = analyze(Wr, Hr, c["scan"], vacuum=c["vacuum"], truth=truth, feature=feature,
                                     peak_agreement=agr, **options)
                seconds = time.perf_counter() - t0
                first = result if first is None else first
                if args.diagnose and "absorb" in RULES[rule]:
                    log.info("%s %s %s %s", path.stem, feature, rule, absorbed(first, result))
                sc = result.scores.summary()
                cells = " | ".join(f"{sc[key]:.3f}" for key in SCORES)
                met = targets_met(int(path.stem[2]) - 1, feature, sc)
                kmet = k_met(Hr.shape[0], sc)
                print(f"| {path.stem} | {feature.upper()} | {rule} | {cells} | {sc['n_clusters']} / {sc['n_grains']} "
                      f"({sc['n_visible_grains']}) | {Hr.shape[0]} | {met} | {kmet} | {seconds:.2f} |", flush=True)
                t = totals.setdefault(rule, {"met": 0, "kmet": 0, "visible": [], "own": [], "rows": []})
                t["met"] += met
                t["kmet"] += kmet
                t["rows"].append(sc)
    if totals:
        print("\n| rule | targets met | k met | " + " | ".join(SCORES) + " | regions / grains |\n"
              + "| --- " * (len(SCORES) + 4) + "|")
        for rule, t in totals.items():
            means = {key: float(np.mean([sc[key] for sc in t["rows"]])) for key in SCORES}
            ratio = float(np.mean([sc["n_clusters"] / sc["n_grains"] for sc in t["rows"]]))
            t["visible"], t["own"] = means["grain_recall_visible"], means["grain_recall_own_visible"]
            t["tpr"] = means["TPR_G"]
            print(f"| {rule} | {t['met']} | {t['kmet']} | " + " | ".join(f"{means[k]:.3f}" for k in SCORES)
                  + f" | {ratio:.3f} |")
        if "off" in totals:
            print(f"\nchosen by the committed criterion: {pick(totals)}")


if __name__ == "__main__":
    main()
