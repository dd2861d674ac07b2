"""``stemnmf score OUTDIR --truth TRUTH``: the papers' scores of a finished run, as JSON."""

from __future__ import annotations

import json

from stemnmf.io import load_results, load_truth


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "score",
        help="score a run's clusters against ground truth (JSON)",
        description=(
            "Score the clusters of a finished run against ground-truth grains: area-based precision_A, "
            "TPR_A, TNR_A, FPR_A, FNR_A; grain-based TPR_G, TNR_G, type I/II errors, precision_G, IoU_G; "
            "grain recall (all and visible grains, at TPR_G and at IoU), regions per grain, the error of the "
            "median region area and Feret diameter, and the adjusted Rand index. Prints one JSON object."
        ),
    )
    parser.add_argument("outdir", metavar="OUTDIR", help="output folder of `stemnmf run` (or its results.h5)")
    parser.add_argument(
        "--truth",
        required=True,
        metavar="TRUTH",
        help="a scan file written by `stemnmf simulate`, or a .npy of labels (n_grains, sy, sx)",
    )
    parser.add_argument(
        "--clusters",
        choices=("auto", "regions", "components"),
        default="auto",
        help="which maps to score (default: the refined regions when the run has them)",
    )
    parser.add_argument("--indent", type=int, default=2, metavar="N", help="JSON indentation (default 2; 0 = one line)")
    return parser


def main(args) -> int:
    from stemnmf.analysis import score_results
    from stemnmf.crystal.scores import score_orientations

    results = load_results(args.outdir)
    truth = load_truth(args.truth)
    scores = score_results(results, truth, clusters=args.clusters).to_dict()
    scores.update(score_orientations(results, truth))  # misorientation errors when the run was indexed
    print(json.dumps(scores, indent=args.indent or None, allow_nan=False))
    return 0
