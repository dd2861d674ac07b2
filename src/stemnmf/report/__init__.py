"""The HTML report of a run, drawn from its results file alone.

``write_report(outdir)`` reads ``outdir/results.h5`` and writes one
self-contained ``report.html`` (figures embedded as PNG, and the explorer of
:mod:`stemnmf.report.explorer` with its data embedded), so any finished run
can be re-reported with ``stemnmf report OUTDIR``. The page requests nothing:
its Content-Security-Policy forbids every fetch.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from stemnmf.io import Results, atomic_output, load_results
from stemnmf.kselect import votes_line
from stemnmf.kselect.plots import fig_kselect_evidence
from stemnmf.report import calibration, figures, orientations
from stemnmf.report.explorer import CSP, explorer_html
from stemnmf.report.warnings import run_warnings

__all__ = ["write_report", "render_html"]

log = logging.getLogger(__name__)

#: (section title, explanation, figure functions) in the order the report shows them.
SECTIONS = [
    (
        "The data",
        "What the detector saw: the mean intensity at each probe position, the brightest value of every "
        "detector pixel over the scan with the rings and angular sectors used for features, and, for Bragg-disk "
        "features, where disks were found.",
        [figures.fig_mean_image, figures.fig_max_pattern, figures.fig_bragg_vector_map],
    ),
    (
        "Calibration",
        "How the origin was found (the direct beam, or the symmetry of the diffraction when the beam is blocked) and "
        "how accurate it is; the origin over the scan, measured and fitted; the masked pixels, the origin and the "
        "ellipse on the mean pattern; the azimuthal mean before and after calibration (sharp rings mean a good one).",
        [calibration.fig_calibration_quality, calibration.fig_origin_maps, calibration.fig_calibration_mask,
         calibration.fig_radial_profiles],
    ),
    (
        "Choosing the number of components",
        "With --k auto: the k each kind of evidence votes for (the loss knee and IQA of Cao et al., split-half "
        "stability and held-out error of NMF on a subsample, coherence of the component maps, a noise model, groups of "
        "scan blocks with the same Bragg peaks), the k chosen (the peak-group vote) and the plausible range, beside the "
        "curves behind the new votes; "
        "Cao et al.'s level 1, the K-component loss against k, its knee and the range of interest; "
        "level 2, the similarity of the chosen k's components by four image-quality metrics (high SSIM/PSNR, low "
        "GMSD/MDSI mean similar), each metric's most similar pair against its redundancy threshold, and the "
        "component patterns of every k in the range. With --k iterative (Bruefach et al.): the PCA scree that sets the initial k, "
        "how the merging of correlated components brought k down in every restart, and the error of each restart.",
        [figures.fig_kloss, fig_kselect_evidence, figures.fig_iqa, figures.fig_kselect_patterns, figures.fig_merging],
    ),
    (
        "Components and clusters",
        "Where each component is strong, the dominant component per position (neighbouring clusters get "
        "distinct colours), and where two components overlap (ratio of the second-largest to the largest weight).",
        [figures.fig_component_maps, figures.fig_label_map, figures.fig_overlap],
    ),
    (
        "Cluster patterns",
        "For each component: the mean calibrated pattern of the positions assigned to it beside its "
        "representative pattern, and the noise standard deviation of each cluster.",
        [figures.fig_cluster_patterns, figures.fig_nsd],
    ),
    (
        "Grains",
        "Spatially refined regions (threshold, connected regions, size filter) with their area, maximum Feret "
        "diameter and dissimilarity.",
        [figures.fig_region_boxplots],
    ),
    (
        "Orientations",
        "Phase and orientation of every region from template matching of its mean pattern (stemnmf index / "
        "--phase): the crystal direction along the beam (IPF-Z) with its colour key, the phase map, and the "
        "boundaries between touching regions with their symmetry-reduced misorientation (Σ3 and Σ9 marked for "
        "cubic phases).",
        [orientations.fig_orientation_map, orientations.fig_phase_map, orientations.fig_boundary_map],
    ),
    (
        "Ground truth",
        "The simulated grains and how well the clusters match them.",
        [figures.fig_truth, figures.fig_scores],
    ),
]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
p.note { color: #555; max-width: 60em; }
p.warning { color: #900; background: #fee; border-left: 4px solid #c00; padding: 0.5em 1em; max-width: 60em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.key, th.key { text-align: left; }
.summary td { text-align: left; } details { margin: 1em 0; } pre { background: #f7f7f7; padding: 1em; overflow: auto; }
"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    if fig.get_layout_engine() is None:  # figures that chose their own layout keep it
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(rows: list[list], header: list[str] | None = None, css: str = "") -> str:
    out = [f'<table class="{css}">']
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            if isinstance(value, (float, np.floating)):
                value = f"{value:.4g}"
            cells.append(f'<td class="{"key" if i == 0 else ""}">{html.escape(str(value))}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _summary(results: Results) -> str:
    attrs = results.attrs
    rows = [
        ["input", attrs.get("input", "(array)")],
        ["input checksum", attrs.get("input_checksum", "")],
        ["stemnmf version", attrs.get("stemnmf_version", "")],
        ["written", attrs.get("written", "")],
        ["random seed", attrs.get("seed", "")],
    ]
    if "scan_shape" in attrs:
        rows.append(["scan", " x ".join(str(v) for v in attrs["scan_shape"])])
    if "pattern_shape" in attrs:
        rows.append(["patterns", " x ".join(str(v) for v in attrs["pattern_shape"])])
    config = results.config
    if config:
        rows.append(["features", config.get("features", {}).get("representation", "")])
    if "/kselect/chosen_k" in results:
        rows.append(["components k", int(results["/kselect/chosen_k"])])
    if "/kselect/reason" in results:
        rows.append(["why this k", str(results["/kselect/reason"])])
    if "/regions/table" in results:
        table = results["/regions/table"]
        rows.append(["refined regions", len(table)])
        if len(table) and "max_feret_nm" in table.dtype.names:
            rows.append(["median max Feret diameter (nm)", float(np.median(table["max_feret_nm"]))])
    return _table(rows, css="summary")


def _timings(results: Results) -> str:
    timings = results.timings
    if not timings:
        return ""
    rows = [[stage, float(seconds)] for stage, seconds in timings.items()]
    rows.append(["total", float(sum(timings.values()))])
    return "<h3>Time per stage (s)</h3>" + _table(rows, ["stage", "seconds"])


def _region_table(results: Results, max_rows: int = 200) -> str:
    if "/regions/table" not in results:
        return ""
    table = results["/regions/table"]
    if len(table) == 0:
        return "<p>No region survived spatial refinement.</p>"
    names = list(table.dtype.names)
    rows = [[row[n] for n in names] for row in table[:max_rows]]
    more = f"<p>... and {len(table) - max_rows} more regions (all are in results.h5).</p>" if len(table) > max_rows else ""
    return "<h3>Regions</h3>" + _table(rows, names) + more


def _scores_table(results: Results) -> str:
    if "/scores/summary" not in results:
        return ""
    scores = json.loads(str(results["/scores/summary"]))
    rows = [[name, value] for name, value in scores.items() if isinstance(value, (int, float))]
    return "<h3>Scores</h3>" + _table(rows, ["score", "value"])


def _kselect_table(results: Results) -> str:
    if "/kselect/metric_choices" not in results:
        return ""
    choices = json.loads(str(results["/kselect/metric_choices"]))
    rows = [[metric, value] for metric, value in choices.items()]
    text = "<h3>k chosen by each metric</h3>" + _table(rows, ["metric", "k"])
    if "/kselect/votes" in results:
        votes = json.loads(str(results["/kselect/votes"]))
        text += "<h3>votes for k</h3>" + _table([[name, k] for name, k in votes.items()], ["evidence", "k"])
        text += f"<p>{html.escape(votes_line(results))}</p>"
    return text


_EXTRA = {"Choosing the number of components": _kselect_table, "Grains": _region_table, "Ground truth": _scores_table,
          "Orientations": orientations.boundary_table_html}


def render_html(results: Results, title: str = "stemnmf report", *, explorer: bool = True) -> str:
    """The report of ``results`` as one self-contained HTML document.

    ``explorer=False`` leaves out the interactive explorer (static figures and tables only).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="warning"><strong>WARNING</strong>: {html.escape(w)}</p>' for w in run_warnings(results)),
        _summary(results),
        _timings(results),
        explorer_html(results) if explorer else "",
    ]
    for heading, note, funcs in SECTIONS:
        images = []
        for func in funcs:
            fig = func(results)
            if fig is not None:
                caption = func.__doc__.strip().splitlines()[0] if func.__doc__ else ""
                images.append(
                    f'<figure><img alt="{html.escape(func.__name__[4:].replace("_", " "))}" '
                    f'src="data:image/png;base64,{_png(fig)}">'
                    + (f"<figcaption>{html.escape(caption)}</figcaption>" if caption else "")
                    + "</figure>"
                )
        extra = _EXTRA.get(heading, lambda r: "")(results)
        if images or extra:
            parts.append(f"<h2>{html.escape(heading)}</h2><p class='note'>{html.escape(note)}</p>")
            parts.extend(images)
            parts.append(extra)
    config = results.config
    if config:
        parts.append(
            "<details><summary>Full configuration</summary><pre>"
            + html.escape(json.dumps(config, indent=2))
            + "</pre></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(source: str | os.PathLike | Results, path: str | os.PathLike | None = None, *, overwrite: bool = True,
                 explorer: bool = True) -> Path:
    """Draw the report of a run and write it atomically.

    Parameters
    ----------
    source : path-like or Results
        An output folder, a results file, or a Results object.
    path : path-like, optional
        Where to write; default ``report.html`` beside the results file.
    explorer : bool, default True
        Include the interactive explorer (:mod:`stemnmf.report.explorer`).

    Returns
    -------
    pathlib.Path
        The report written.
    """
    if isinstance(source, Results):
        results = source
        if path is None:
            raise ValueError("give the report path when drawing from a Results object")
    else:
        source = Path(source)
        results = load_results(source)
        if path is None:
            folder = source if source.is_dir() else source.parent
            path = folder / "report.html"
    path = Path(path)
    title = f"stemnmf report: {Path(str(results.attrs.get('input', 'array'))).name}"
    document = render_html(results, title, explorer=explorer)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(document, encoding="utf-8")
    log.info("report written to %s", path)
    return path
