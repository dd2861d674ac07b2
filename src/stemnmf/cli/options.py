"""Options shared by several subcommands, and how they turn into objects."""

from __future__ import annotations

import argparse

from stemnmf.errors import ConfigError
from stemnmf.io import parse_scan_shape

__all__ = [
    "add_calibration_options",
    "add_engine_options",
    "load_input",
    "engine_from_args",
]


def _scan_shape_arg(text: str) -> tuple[int, int]:
    try:
        return parse_scan_shape(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.line) from None


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """Options that override the calibration read from the input and its scan shape."""
    group = parser.add_argument_group("calibration (overrides what the file says)")
    group.add_argument("--scan-step", type=float, metavar="NM", help="distance between probe positions in nm")
    group.add_argument("--q-pixel", type=float, metavar="INV_ANGSTROM", help="detector pixel size in 1/Å")
    group.add_argument("--beam-energy", type=float, metavar="KEV", help="beam energy in keV")
    group.add_argument("--camera-length", type=float, metavar="MM", help="camera length in mm")
    group.add_argument("--convergence-angle", type=float, metavar="MRAD", help="probe semi-convergence angle in mrad")
    group.add_argument(
        "--scan-shape",
        type=_scan_shape_arg,
        metavar="ROWSxCOLS",
        help="scan shape for 3D stacks and folders of images, e.g. 95x165",
    )
    group.add_argument(
        "--lazy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the data on demand (default: when the file is larger than 2 GiB or half the free memory)",
    )


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Where and within how much memory per-pattern work runs."""
    group = parser.add_argument_group("execution")
    group.add_argument("--memory-budget", metavar="SIZE", help="memory for chunks in flight (default 2GiB)")
    group.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler, e.g. tcp://host:8786")


def load_input(args):
    """Load ``args.input`` with the calibration options applied."""
    from stemnmf.io import load

    options = dict(
        scan_step=getattr(args, "scan_step", None),
        q_pixel=getattr(args, "q_pixel", None),
        beam_energy=getattr(args, "beam_energy", None),
        camera_length=getattr(args, "camera_length", None),
        convergence_angle=getattr(args, "convergence_angle", None),
    )
    if getattr(args, "scan_shape", None) is not None:
        options["scan_shape"] = args.scan_shape
    return load(args.input, lazy=getattr(args, "lazy", None), **options)


def engine_from_args(args):
    """An Engine from ``--memory-budget`` and ``--scheduler``."""
    from stemnmf.engine import Engine

    return Engine(memory_budget=getattr(args, "memory_budget", None), scheduler=getattr(args, "scheduler", None))
