"""Recovering grains merged into the component of a grain around them (issue 16, sixth and seventh rounds).

    .venv/bin/python bench/grain_recover.py FILM.h5 [FILM.h5 ...] [--features aa,bd] [--restarts 25]
        [--seed N] [--cache DIR]

Each film (a ``stemnmf simulate`` scan with its truth) is featurised with the
run's defaults and factorised once by ``IterativeNMF`` without the recovery
(``recover=False``: the default before this round; random state = the film's
seed unless ``--seed``); the factors are kept in ``--cache``. Then, in the same
process, :func:`stemnmf.decompose.iterative.recover_grains` splits off the
grains left inside other components and refits, exactly what ``IterativeNMF``
now does after its final refit when it knows the scan's shape. Rows:

* ``before``: the factors without the recovery;
* ``recover6``: the sixth round's recovery (one round; a part's new reflections
  at least half its peaks: ``rounds=1, many_peaks=None``);
* ``recover``: the recovery at its defaults (the default of ``stemnmf run``;
  seventh round: up to three rounds, and 15 new reflections suffice whatever
  their share);
* ``recover+frag``: with it, and regions under 50 positions at least half inside
  another dropped (``fragment_size=50``; an option, not the default).

Each is analysed with the model's own peak agreement (noise from its residual,
as ``IterativeNMF.peak_agreement_``) and scored against the truth (every score
of the issue). Prints one Markdown row per film, feature and row, and a table of
the seconds of the fit and of the recovery.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bruefach_quality import prepare  # noqa: E402

from stemnmf.analysis import analyze  # noqa: E402
from stemnmf.decompose import IterativeNMF  # noqa: E402
from stemnmf.decompose.evidence import pattern_noise, pattern_peaks, peak_agreement  # noqa: E402
from stemnmf.decompose.iterative import recover_grains  # noqa: E402
from stemnmf.features.scaling import scale_features  # noqa: E402
from stemnmf.io import load_truth  # noqa: E402

log = logging.getLogger("grain_recover")

SCORES = ("grain_recall_visible", "grain_recall", "grain_recall_iou", "grain_recall_own_visible", "ARI_regions",
          "TPR_G", "IoU_G", "precision_A", "area_median_error", "feret_median_error")


def agreement(X: np.ndarray, Wt: np.ndarray, H: np.ndarray) -> np.ndarray:
    """The components' peak agreement with noise from the fit's own residual (as ``IterativeNMF.peak_agreement_``)."""
    R = np.asarray(X, np.float64) - Wt.T.astype(np.float64) @ H.astype(np.float64)
    return peak_agreement(pattern_peaks(H, pattern_noise(Wt, (R * R).sum(axis=0))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("films", nargs="+")
    parser.add_argument("--features", default="aa,bd")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="random state (default: the film's seed)")
    parser.add_argument("--cache", default="/tmp/i16/recover")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    features = args.features.split(",")
    print(f"# grain recovery, {datetime.date.today()}, load {os.getloadavg()[0]:.1f}, {args.restarts} restarts")
    print("| film | feature | row | " + " | ".join(SCORES) + " | regions / grains (visible) | k | recovered |")
    print("| --- " * (len(SCORES) + 6) + "|", flush=True)
    seconds = []
    for film in args.films:
        path = Path(film)
        seed = args.seed if args.seed is not None else int(path.stem.split("_s")[1].split("_")[0])
        dataset, raw, vacuum = prepare(path, features)
        truth = load_truth(path)
        scan = tuple(dataset.scan_shape)
        for feature in features:
            X, _, _ = scale_features(raw[feature], "robust")
            X = np.asarray(X, np.float32)
            file = cache / f"{path.stem}_{feature}_r{args.restarts}_s{seed}.npz"
            if file.exists():
                z = np.load(file)
                W, H, fit = z["W"], z["H"], float(z["seconds"])
            else:
                t0 = time.perf_counter()
                model = IterativeNMF(feature=feature, n_restarts=args.restarts, max_iter=400, random_state=seed,
                                     scan_shape=scan, recover=False)
                W = model.fit_transform(X)
                H = model.components_
                fit = time.perf_counter() - t0
                np.savez(file, W=W, H=H, seconds=fit)
            t0 = time.perf_counter()
            Wt6, H6, kept6 = recover_grains(X, W.T, H, scan, max_iter=400, tol=1e-4, rounds=1, many_peaks=None)
            recover6 = time.perf_counter() - t0
            t0 = time.perf_counter()
            Wt2, H2, kept = recover_grains(X, W.T, H, scan, max_iter=400, tol=1e-4)
            recover = time.perf_counter() - t0
            seconds.append((path.stem, feature, H.shape[0], len(Wt6), len(Wt2), fit, recover6, recover))
            rows = {
                "before": (W, H, {}),
                "recover6": (np.ascontiguousarray(Wt6.T), H6, {}),
                "recover": (np.ascontiguousarray(Wt2.T), H2, {}),
                "recover+frag": (np.ascontiguousarray(Wt2.T), H2, dict(fragment_size=50)),
            }
            n_kept = {"before": "", "recover6": len(kept6), "recover": len(kept), "recover+frag": len(kept)}
            for name, (Wr, Hr, options) in rows.items():
                result = analyze(Wr, Hr, scan, vacuum=vacuum, truth=truth, feature=feature,
                                 peak_agreement=agreement(X, np.ascontiguousarray(Wr.T), Hr), **options)
                sc = result.scores.summary()
                cells = " | ".join(f"{sc[key]:.3f}" for key in SCORES)
                print(f"| {path.stem} | {feature.upper()} | {name} | {cells} | {sc['n_clusters']} / {sc['n_grains']} "
                      f"({sc['n_visible_grains']}) | {Hr.shape[0]} | {n_kept[name]} |",
                      flush=True)
        del dataset, raw
    print("\n| film | feature | k before | k recover6 | k recover | IterativeNMF s (recover=False) | recover6 s "
          "| recover s | ratio recover6 | ratio recover |")
    print("| --- " * 10 + "|")
    for stem, feature, k0, k6, k1, fit, rec6, rec in seconds:
        print(f"| {stem} | {feature.upper()} | {k0} | {k6} | {k1} | {fit:.1f} | {rec6:.1f} | {rec:.1f} "
              f"| {(fit + rec6) / fit:.3f} | {(fit + rec) / fit:.3f} |")


if __name__ == "__main__":
    main()
