"""``stemnmf index OUTDIR --phase NAME``: orientation and phase of every component and region of a run."""

from __future__ import annotations

import argparse


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "index",
        help="orientation and phase of every component and region of a finished run",
        description=(
            "Match the component and region patterns of a finished run against kinematic templates of one or more "
            "phases (diffsims over orix orientation samples; needs the crystal extra) and add the orientations, "
            "phases, scores, confidences and boundary table under /orientations in OUTDIR/results.h5."
        ),
    )
    parser.add_argument("outdir", metavar="OUTDIR", help="output folder of `stemnmf run` (or its results.h5)")
    add_index_arguments(parser, required=True)
    parser.add_argument("--per-position", action="store_true", help="also index every position (slow; reads the run's input)")
    parser.add_argument("--ang", metavar="PATH", nargs="?", const=True, default=False,
                        help="also write an .ang orientation map (default OUTDIR/orientations.ang)")
    return parser


def add_index_arguments(parser, *, required: bool) -> None:
    """``--phase`` (repeatable) and the matching options shared by `index` and `run`."""
    group = parser.add_argument_group("orientations (crystal extra)")
    group.add_argument("--phase", action="append", metavar="NAME_OR_CIF", required=required, dest="phases",
                       help="a built-in phase (Ag, Au, Pd, Cu, Al, Si, LNMO/spinel) or a CIF file; repeat for several")
    group.add_argument("--resolution", type=float, default=1.0, metavar="DEG",
                       help="spacing of the template orientations in degrees (default 1)")
    group.add_argument("--detector-rotation", type=float, default=0.0, metavar="DEG",
                       help="angle of the detector x axis from the scan x axis, counter-clockwise (default 0)")
    group.add_argument("--detector-flip", action="store_true", help="the detector y axis runs against the scan y axis")
    group.add_argument("--refine-model", choices=("templates", "kinematic"), default="templates",
                       help="orientation refinement: tilt search over the templates (default) or a continuous kinematic fit")
    group.add_argument("--vote-positions", type=int, default=16, metavar="N",
                       help="positions per region whose matches vote with its mean pattern; 0: the mean pattern alone (default 16)")
    group.add_argument("--overlap-sums", action="store_true",
                       help="also fit each overlapped region's mean pattern as a sum of two crystals (regions_second)")
    group.add_argument("--partners", action="store_true",
                       help="choose each region's orientation among it and its projection partners by a kinematic fit of its core (slow: 50-220 s per 32 x 32 spinel scan)")
    group.add_argument("--partner-check", action=argparse.BooleanOptionalAction, default=True,
                       help="without --partners: choose among each region's orientation and its projection partners by their kinematic score "
                            "at their own rotations (no fit; default on)")
    group.add_argument("--tilt-search", action=argparse.BooleanOptionalAction, default=True,
                       help="without --partners: search each region's tilt on the kinematic score of its core after the partner check "
                            "(a grid within 2 degrees, then halving steps; default on)")
    group.add_argument("--partner-switch", action=argparse.BooleanOptionalAction, default=False,
                       help="after the tilt search: where a projection partner scores above the region's orientation at the searched tilt, "
                            "take the partner, its tilt searched too (default off)")
    group.add_argument("--partner-polish", action=argparse.BooleanOptionalAction, default=False,
                       help="after the tilt search: where a projection partner scores within the ambiguous margin of the region's orientation, "
                            "polish both, each from its own searched tilt, and take the better (default off)")
    group.add_argument("--template-cache", metavar="DIR", help="template cache (default ~/.cache/stemnmf/templates)")


def index_options(args) -> dict:
    """Keyword options of :func:`stemnmf.crystal.index` from parsed arguments."""
    return {
        "resolution": args.resolution,
        "detector_rotation": args.detector_rotation,
        "detector_flip": args.detector_flip,
        "refine_model": args.refine_model,
        "vote_positions": args.vote_positions,
        "overlap_sums": args.overlap_sums,
        "partners": args.partners,
        "partner_check": args.partner_check,
        "tilt_search": args.tilt_search,
        "partner_switch": args.partner_switch,
        "partner_polish": args.partner_polish,
        "cache_dir": args.template_cache,
    }


def main(args) -> int:
    from stemnmf.crystal import describe, index

    results = index(args.outdir, args.phases, per_position=args.per_position, ang=args.ang, **index_options(args))
    lines = describe(results) or ["no regions indexed"]
    print("\n".join(f"orientations: {line}" for line in lines))
    return 0
