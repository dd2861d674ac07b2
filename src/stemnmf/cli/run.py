"""``stemnmf run`` and ``stemnmf kscan``: the whole analysis of one scan."""

from __future__ import annotations

import argparse
import sys

from stemnmf.config import add_config_arguments, config_from_args, default_toml, parse_k_range
from stemnmf.errors import ConfigError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", nargs="?", help="a scan file, FILE.h5:/dataset, or a folder of images")
    parser.add_argument("-o", "--outdir", metavar="OUTDIR", help="folder for results.h5 and report.html")
    parser.add_argument("--config", metavar="TOML", help="configuration file; command-line options win over it")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in OUTDIR")
    parser.add_argument("--print-config", action="store_true", help="print the default configuration as TOML and exit")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "run",
        help="calibrate, featurize, factorise, analyse and report one scan",
        description=(
            "Run the whole analysis: load -> calibrate -> (preprocess) -> features -> choice of k -> NMF -> "
            "cluster, overlap and grain maps -> OUTDIR/results.h5 and OUTDIR/report.html. Every option can also "
            "be set in a TOML file given with --config (see --print-config)."
        ),
    )
    _common(parser)
    add_config_arguments(parser)
    return parser


def add_kscan_parser(subparsers):
    parser = subparsers.add_parser(
        "kscan",
        help="the K-component loss and image-similarity decision over a range of k",
        description=(
            "Factorise for every k in a range (default 2:20), find the knee of the K-component loss and compare "
            "the components of the k around it with four image-quality metrics (Cao et al. 2025). Writes the same "
            "results.h5 and report.html as `run`, with k chosen by the scan."
        ),
    )
    _common(parser)
    parser.add_argument("--k", dest="kscan_range", metavar="LOW:HIGH", default="2:20", help="k values to scan (default 2:20)")
    add_config_arguments(parser, exclude=("nmf.k", "nmf.k_range"))
    return parser


def _execute(args, config) -> int:
    from stemnmf.pipeline import run

    if args.input is None or args.outdir is None:
        raise ConfigError("INPUT and -o OUTDIR are required", f"e.g. stemnmf {args.command} scan.h5 -o out")
    results = run(args.input, config, outdir=args.outdir, overwrite=args.overwrite)
    print("\n".join(results.attrs["summary"]))
    return 0


def main(args) -> int:
    if args.print_config:
        sys.stdout.write(default_toml())
        return 0
    return _execute(args, config_from_args(args))


def kscan_main(args) -> int:
    if args.print_config:
        sys.stdout.write(default_toml())
        return 0
    config = config_from_args(args)
    overrides = {"nmf": {"k": "auto", "k_range": "%d:%d" % parse_k_range(args.kscan_range)}}
    if "cfg__features__representation" not in vars(args):
        overrides["features"] = {"representation": "raw"}
    return _execute(args, config.replace(overrides))
