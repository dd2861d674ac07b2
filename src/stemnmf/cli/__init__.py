"""The ``stemnmf`` command line.

Each subcommand lives in its own module of this package, which defines
``add_parser(subparsers)`` and ``main(args) -> int``. Errors that a user can
cause (every :class:`~stemnmf.errors.StemNMFError`) print one line and exit
with status 2; an interrupted command exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from stemnmf import __version__
from stemnmf.errors import StemNMFError

__all__ = ["main", "build_parser", "setup_logging", "COMMANDS"]

#: Subcommand modules, in the order ``stemnmf --help`` lists them.
COMMANDS = ["info", "simulate", "run", "kscan", "score", "report", "reproduce", "index"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"stemnmf: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stemnmf",
        description="Find grains, phases and orientation domains in 4D-STEM data with NMF.",
    )
    parser.add_argument("--version", action="version", version=f"stemnmf {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log details of every stage")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"stemnmf.cli.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_main=module.main)
        # -v / -q also after the subcommand (`stemnmf run X -o Y -q`)
        sub_verbosity = sub.add_mutually_exclusive_group()
        sub_verbosity.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub_verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def setup_logging(args) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG else "%(name)s: %(message)s"))
    root = logging.getLogger("stemnmf")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    try:
        return int(args._main(args) or 0)
    except StemNMFError as err:
        print(f"stemnmf: error: {err.line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stemnmf: interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (e.g. `stemnmf score OUT | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
