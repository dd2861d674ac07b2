"""Which instrument distortion makes the choice of k too high? Each distortion alone, measured.

The scans of ``ag-instrument`` / ``spinel-instrument`` (``bench/kselect_families.py``) pass the
'realistic' instrument of :mod:`stemnmf.simulate.instrument`. Here the same sample (family
``ag-zone`` or ``spinel-zone``, ``n`` orientations, simulation seed ``1000 * seed + n``) is seen
through each of its distortions alone (``--variants``), through all of them, and through all of
them with the calibration's shift correction (``correct_shift=True``). For each variant: every
vote of ``select_k`` (run defaults, k = 2..20), and for the fits beyond the truth the new
components: how much of each map a plane over the scan explains (R^2: a smooth field of the
scan, such as an uncorrected descan, gives a plane-like map), its lag-1 coherence, and the
largest cosine of its pattern with another component's.

Run: ``nice -n 10 .venv/bin/python bench/kselect_instrument.py --family ag-zone --n 7 --seed 1``
(diagnosed on seed 1, which the held-out table of the instrument families does not use).
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

from kselect_families import FAMILIES, _distinct_in_view, pipeline_select  # noqa: E402

from stemnmf.kselect.coherence import map_coherence  # noqa: E402

VARIANTS = {
    "none": {},
    "realistic": {"instrument": "realistic"},
    "descan": {"instrument": {"descan": 2.5, "descan_jitter": 0.1}},
    "beam-stop": {"instrument": {"beam_stop": "arm", "beam_stop_radius": 5.0, "beam_stop_width": 5.0,
                                 "beam_stop_penumbra": 0.75, "beam_stop_leak": 0.001}},
    "gain": {"instrument": {"gain_rms": 0.1, "gain_length": 12.0}},
    "ellipse": {"instrument": {"ellipse_ratio": 1.04, "ellipse_angle": 25.0}},
    "hot": {"instrument": {"hot_pixels": 25}},
    "realistic-no-descan": {"instrument": "realistic", "descan": 0.0, "descan_jitter": 0.0},
    "realistic-shift-corrected": {"instrument": "realistic", "_correct_shift": True},
    "descan-shift-corrected": {"instrument": {"descan": 2.5, "descan_jitter": 0.1}, "_correct_shift": True},
}  # lengths for a 128-pixel detector (the preset's lengths are for 256 px, scaled by 0.5)


def simulate_variant(family, n, seed, variant, scan, det):
    from stemnmf.simulate import simulate

    settings = dict(FAMILIES[family])
    options = {k: v for k, v in settings.items() if k not in ("crystal", "random", "small", "two_phase")}
    if settings.get("crystal") == "spinel":
        from stemnmf.simulate import spinel

        options["crystal"] = spinel()
    else:
        options["crystal"] = "Ag"
    options.update(n_orientations=n, n_grains=max(8, n + 2))
    options.update({k: v for k, v in VARIANTS[variant].items() if not k.startswith("_")})
    dataset, truth = simulate("crystals", scan=(scan, scan), det=(det, det), seed=1000 * seed + n, **options)
    return dataset, _distinct_in_view(truth)


def features(dataset, correct_shift):
    from stemnmf.calibrate import calibrate
    from stemnmf.config import Config
    from stemnmf.engine import Engine
    from stemnmf.features import featurize
    from stemnmf.pipeline import raw_features_on_grid

    config = Config()
    config.features.representation = "raw"  # no scaling, as `stemnmf run --feature raw`
    engine = Engine(progress=False)
    options = {**config.calibrate.calibrate_options(), "on_unreliable": "warn", "correct_shift": bool(correct_shift)}
    calibrated, _ = calibrate(dataset, engine=engine, **options)
    X, description = featurize(calibrated, "raw", engine=engine, **config.features.featurize_options())
    X, shape = raw_features_on_grid(X, description)
    return X, shape, calibrated


def plane_r2(W, scan_shape):
    """Per map, the fraction of its variance a plane a + b y + c x explains."""
    sy, sx = scan_shape
    yy, xx = np.meshgrid(np.arange(sy), np.arange(sx), indexing="ij")
    A = np.column_stack([np.ones(sy * sx), yy.ravel(), xx.ravel()])
    out = []
    for m in np.asarray(W, dtype=np.float64).T:
        coef, *_ = np.linalg.lstsq(A, m, rcond=None)
        var = float(((m - m.mean()) ** 2).sum())
        out.append(1 - float(((m - A @ coef) ** 2).sum()) / var if var > 0 else 0.0)
    return np.array(out)


def max_cosine(H):
    H = np.asarray(H, dtype=np.float64)
    H = H / np.maximum(np.linalg.norm(H, axis=1, keepdims=True), 1e-300)
    c = H @ H.T
    np.fill_diagonal(c, -1)
    return c.max(axis=1)


def run_variant(family, n, seed, variant, scan, det):
    dataset, n_true = simulate_variant(family, n, seed, variant, scan, det)
    X, shape, calibrated = features(dataset, VARIANTS[variant].get("_correct_shift", False))
    t0 = time.perf_counter()
    sel = pipeline_select(X, shape, calibrated, pca=False)
    row = {"family": family, "n": n, "seed": seed, "variant": variant, "truth": n_true, "votes": sel.votes, "raw_votes": sel.combined.raw_votes,
           "shift_distinct": sel.combined.shift.distinct.tolist() if sel.combined.shift is not None else None,
           "shift_largest": np.round(sel.combined.shift.largest, 2).tolist() if sel.combined.shift is not None else None,
           "chosen": int(sel.chosen_k), "seconds": round(time.perf_counter() - t0, 1), "extra": {}}
    for k in range(n_true, min(n_true + 4, 21)):
        W, H = sel.kloss.components(k)
        r2, coh, cos = plane_r2(W, calibrated.scan_shape), map_coherence(W, calibrated.scan_shape), max_cosine(H)
        row["extra"][k] = {"plane_r2": np.round(r2, 2).tolist(), "coherence": np.round(coh, 2).tolist(),
                           "cosine": np.round(cos, 2).tolist()}
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="ag-zone", choices=("ag-zone", "spinel-zone"))
    parser.add_argument("--n", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scan", type=int, default=40)
    parser.add_argument("--det", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", help="JSON-lines file the rows are appended to")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    for variant in args.variants:
        row = run_variant(args.family, args.n, args.seed, variant, args.scan, args.det)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
