"""``stemnmf report OUTDIR``: (re)draw OUTDIR/report.html from OUTDIR/results.h5."""

from __future__ import annotations


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "report",
        help="(re)draw the HTML report of a finished run",
        description="Draw OUTDIR/report.html from OUTDIR/results.h5 alone.",
    )
    parser.add_argument("outdir", metavar="OUTDIR", help="the output folder of a run (or its results.h5)")
    parser.add_argument("-o", "--output", metavar="HTML", help="where to write (default OUTDIR/report.html)")
    return parser


def main(args) -> int:
    from stemnmf.report import write_report

    path = write_report(args.outdir, args.output)
    print(f"report: {path}")
    return 0
