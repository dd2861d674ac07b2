"""``stemnmf info FILE``: what a scan holds, before any processing."""

from __future__ import annotations

from stemnmf.config import add_config_arguments, config_from_args
from stemnmf.engine import format_bytes
from stemnmf.io import load
from stemnmf.io.summary import intensity_summary

#: Lazy datasets are summarised from at most this many scan rows.
SUMMARY_ROWS = 16


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "info",
        help="shape, dtype, size, calibration and intensities of a scan",
        description="Print the shape, dtype, size, calibration and a summary of intensities of a 4D-STEM scan.",
    )
    parser.add_argument("input", metavar="INPUT", help="a scan file, FILE.h5:/dataset, or a folder of images")
    add_config_arguments(parser, sections=("input",))
    return parser


def describe(dataset) -> list[str]:
    """The lines `stemnmf info` prints for a dataset."""
    sy, sx, qy, qx = dataset.shape
    meta = dataset.metadata
    shape_source = meta.get("scan_shape_source")
    lines = [
        f"file:              {dataset.source}",
        f"format:            {meta.get('format', 'unknown')}"
        + (f", dataset {meta['dataset']}" if meta.get("dataset") else ""),
        f"scan:              {sy} x {sx} positions ({dataset.n_positions} patterns)"
        + (f", shape from {shape_source}" if shape_source and shape_source != "the file" else ""),
        f"patterns:          {qy} x {qx} pixels, {dataset.dtype}",
        f"size:              {format_bytes(dataset.nbytes)} ({'lazy, read on demand' if dataset.is_lazy else 'in memory'})",
    ]
    cal = dataset.calibration
    units = {
        "scan_step": "nm",
        "q_pixel": "1/Å",
        "beam_energy": "keV",
        "camera_length": "mm",
        "convergence_angle": "mrad",
    }
    sources = meta.get("calibration_source", {})
    for name, unit in units.items():
        value = getattr(cal, name)
        where = " (given)" if sources.get(name) == "option" else ""
        lines.append(f"{name + ':':<19}{'unknown' if value is None else f'{value:g} {unit}{where}'}")
    if cal.origin is not None:
        lines.append(f"origin:            qy {cal.origin[0]:g}, qx {cal.origin[1]:g} pixels")
    if dataset.mask is not None:
        lines.append(f"mask:              {int(dataset.mask.sum())} of {qy * qx} pixels masked")
    stats = intensity_summary(dataset, max_rows=SUMMARY_ROWS if dataset.is_lazy else None)
    sampled = f" (from {stats['sampled_rows']} of {sy} scan rows)" if stats["sampled_rows"] else ""
    lines.append(
        f"intensities:       min {stats['min']:.4g}, max {stats['max']:.4g}, mean {stats['mean']:.4g}, "
        f"{stats['n_zero'] / max(stats['n_values'], 1):.1%} zero, {stats['n_negative']} negative, "
        f"{stats['n_nonfinite']} NaN/Inf{sampled}"
    )
    return lines


def main(args) -> int:
    config = config_from_args(args)
    dataset = load(args.input, lazy=config.input.lazy, **config.input.load_options())
    print("\n".join(describe(dataset)))
    return 0
