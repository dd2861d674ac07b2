"""``stemnmf simulate``: a simulated 4D-STEM scan with its ground truth."""

from __future__ import annotations

import argparse
import json
import time

from stemnmf.errors import ConfigError
from stemnmf.io import load, load_truth, save_scan

PRESET_NAMES = ("ag1", "ag2", "ag3", "precipitates", "crystals", "tiny")


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read the size {text!r}; write N or ROWSxCOLS, e.g. 100 or 64x128") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} must be N or ROWSxCOLS with positive numbers")
    return values


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"cannot read --set {text!r}; write KEY=VALUE, e.g. film_thickness=200")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a 4D-STEM scan of a polycrystal with ground truth",
        description=(
            "Simulate a 4D-STEM scan of a polycrystalline film (kinematic diffraction, blur, Poisson noise) "
            "and write it with its ground truth (/truth/labels, /truth/thickness, /truth/orientations)."
        ),
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, default="tiny", help="sample and instrument (default tiny)")
    parser.add_argument("--scan", type=_size, metavar="N", help="probe positions, N or ROWSxCOLS (default: the preset's)")
    parser.add_argument("--det", type=_size, metavar="N", help="detector pixels, N or ROWSxCOLS (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same file (default 0)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="scan file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--preview", metavar="FIG.png", help="also save a preview figure (mean/max pattern, truth maps)")
    parser.add_argument("--orientations", type=int, metavar="N", help="number of distinct orientations (crystals preset)")
    parser.add_argument("--grains", type=int, metavar="N", help="grains in the field of view")
    parser.add_argument("--dose", type=float, metavar="E", help="electrons per pattern (default: the preset's, 1e5)")
    parser.add_argument("--no-noise", action="store_true", help="store expected counts without Poisson noise")
    parser.add_argument(
        "--set",
        dest="settings",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other simulation parameter, e.g. --set film_thickness=200 (see docs/simulate.md)",
    )
    parser.add_argument(
        "--instrument",
        choices=("none", "realistic"),
        help="instrument model: 'realistic' adds descan, ellipse, a beam-stop arm, gain and hot pixels "
        "(change any part with --set, e.g. --set descan=8; see docs/simulate.md); default none",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="threads drawing patterns (default: CPU count)")
    return parser


def main(args) -> int:
    from stemnmf.simulate import grains_per_position_fractions, simulate
    from stemnmf.simulate.core import check_output_path

    overrides = dict(args.settings)
    if args.orientations is not None:
        overrides["n_orientations"] = args.orientations
    if args.grains is not None:
        overrides["n_grains"] = args.grains
    if args.dose is not None:
        overrides["dose"] = args.dose
    if args.no_noise:
        overrides["noise"] = False
    if args.instrument is not None:
        overrides["instrument"] = args.instrument
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be at least 1")
    check_output_path(args.output, args.overwrite)
    if args.preview:
        from pathlib import Path

        fig = Path(args.preview)
        if not fig.parent.is_dir():
            raise ConfigError(f"folder {fig.parent} for the preview does not exist", "create it first")
    started = time.perf_counter()
    dataset, truth = simulate(
        args.preset, scan=args.scan, det=args.det, seed=args.seed, lazy=True, n_threads=args.threads, **overrides
    )
    path = save_scan(args.output, dataset, truth=truth, overwrite=args.overwrite)
    elapsed = time.perf_counter() - started
    sy, sx, qy, qx = dataset.shape
    fractions = grains_per_position_fractions(truth.grains_per_position)
    print(f"wrote {path}: {sy} x {sx} scan of {qy} x {qx} patterns in {elapsed:.1f} s ({sy * sx / elapsed:.0f} patterns/s)")
    print(
        f"{truth.n_grains} grains in view; positions with 0/1/2/3+ grains: "
        + " / ".join(f"{100 * fractions[k]:.1f} %" for k in ("0", "1", "2", "3+"))
    )
    if args.preview:
        from stemnmf.simulate.preview import preview

        figure = preview(load(path, lazy=True), load_truth(path), args.preview)
        print(f"preview: {figure}")
    return 0
