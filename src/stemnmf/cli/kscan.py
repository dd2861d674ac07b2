"""``stemnmf kscan``: see stemnmf.cli.run."""

from stemnmf.cli.run import add_kscan_parser as add_parser
from stemnmf.cli.run import kscan_main as main

__all__ = ["add_parser", "main"]
