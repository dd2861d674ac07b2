"""``stemnmf reproduce bruefach2022|cao2025 -o OUTDIR``: the papers' comparisons on simulated data."""

from __future__ import annotations

from pathlib import Path

from stemnmf.errors import ConfigError

STUDIES = ("bruefach2022", "cao2025")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "reproduce",
        help="reproduce a published comparison on simulated scans",
        description=(
            "Reproduce a published study on simulated scans with ground truth and write OUTDIR/<study>.md and "
            "OUTDIR/<study>.json with the published values beside ours. bruefach2022: RV, AA and BD with iterative "
            "merging NMF on the three simulated Ag films (Bruefach, Ophus & Scott 2022). cao2025: the k scan with "
            "both decision levels on raw, mean-filtered and denoised patterns of a few large crystals (Cao et al. "
            "2025). Simulated scans already in OUTDIR are reused."
        ),
    )
    parser.add_argument("study", choices=STUDIES, metavar="STUDY", help="bruefach2022 or cao2025")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    parser.add_argument(
        "--quick", action="store_true", help="a small, fast version (smaller scans, fewer restarts) for tests"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the simulations and runs (default 0)")
    return parser


def main(args) -> int:
    import stemnmf.reproduce as reproduce

    try:
        study = getattr(reproduce, args.study)
    except (AttributeError, ImportError):
        raise ConfigError(f"the {args.study} reproduction is not available yet", "update stemnmf") from None
    study(args.output, quick=args.quick, seed=args.seed)
    markdown = Path(args.output) / f"{args.study}.md"
    print(markdown.read_text(), end="")
    print(f"\nwrote {markdown} and {markdown.with_suffix('.json')}")
    return 0
