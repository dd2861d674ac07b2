"""Warnings of a run: an unreliable calibration and an uncertain k reach the summary and the report."""

from __future__ import annotations

import numpy as np

from stemnmf.io import Results
from stemnmf.report import render_html
from stemnmf.report.warnings import k_uncertainty, run_warnings


def _results(chosen, low, high, reliable=True):
    data = {"/kselect/chosen_k": np.int64(chosen), "/kselect/plausible_range": np.array([low, high], np.int64)}
    if not reliable:
        data["/calibration/quality/reliable"] = np.int64(0)
        data["/calibration/quality/problems"] = np.array(["fitted origins scatter by 9 px"])
    return Results(data, {})


def test_k_is_uncertain_only_when_the_votes_spread_beyond_one_either_side():
    assert k_uncertainty(_results(5, 4, 6)) == ""
    assert k_uncertainty(_results(5, 5, 5)) == ""
    low = k_uncertainty(_results(5, 3, 6))
    high = k_uncertainty(_results(5, 4, 7))
    assert low.startswith("k UNCERTAIN") and "3..6" in low and "k = 5" in low and "--k" in low
    assert high.startswith("k UNCERTAIN") and "4..7" in high
    assert k_uncertainty(Results({"/kselect/chosen_k": np.int64(5)}, {})) == ""  # a given or iterative k


def test_warnings_reach_the_summary_and_the_top_of_the_report():
    from stemnmf.pipeline import RunSummary

    results = _results(8, 4, 8, reliable=False)
    warnings = run_warnings(results)
    assert [w.split(" ")[0] for w in warnings] == ["CALIBRATION", "k"]
    assert "scatter by 9 px" in warnings[0]
    lines = RunSummary(8, "why", 2, None, {}, None, None, "", warnings).lines()
    assert lines[0] == "WARNING:    " + warnings[0] and lines[1] == "WARNING:    " + warnings[1]
    html = render_html(results, explorer=False)
    head = html[: html.index("<table")]
    assert head.count('class="warning"') == 2 and "k UNCERTAIN" in head
    assert 'class="warning"' not in render_html(_results(8, 7, 9), explorer=False)


def test_k_is_uncertain_when_the_peak_groups_and_the_fits_disagree():
    def with_fits(chosen, fits, low, high):
        results = _results(chosen, low, high)
        results["/kselect/fits_k"] = np.int64(fits)
        return results

    assert k_uncertainty(with_fits(12, 11, 3, 12)) == ""  # the two kinds agree: a wide range alone does not warn
    text = k_uncertainty(with_fits(12, 9, 9, 12))
    assert text.startswith("k UNCERTAIN") and "k = 12" in text and "k = 9" in text and "--k" in text
    assert k_uncertainty(with_fits(4, 6, 4, 6)).startswith("k UNCERTAIN")


def test_ambiguous_region_orientations_reach_the_summary_the_report_and_describe():
    """Region 0: a projection partner 60° away within 0.1 % (flagged); region 1: a vote of 3 of 17 (flagged);
    region 2: decided (a partner 2 % behind, 12 of 17 votes): not flagged, not named; region 3: a partner
    36.9° away 0.25 % above the choice (flagged)."""
    from stemnmf.crystal import describe

    results = Results(
        {
            "/orientations/phases": np.array(["LNMO"]),
            "/orientations/regions": np.tile([1.0, 0.0, 0.0, 0.0], (4, 1)),
            "/orientations/regions_phase": np.zeros(4, np.int32),
            "/orientations/regions_score": np.array([0.5, 0.4, 0.6, 0.5]),
            "/orientations/regions_confidence": np.array([0.6, 3 / 17, 12 / 17, 1.0]),
            "/orientations/regions_partner_margin": np.array([0.001, np.nan, 0.02, -0.0025]),
            "/orientations/regions_partner_angle": np.array([60.0, np.nan, 38.94, 36.87]),
            "/orientations/regions_votes": np.array([10, 3, 12, 17], np.int32),
            "/orientations/regions_candidates": np.array([17, 17, 17, 17], np.int32),
            "/orientations/regions_ambiguous": np.array([True, True, False, True]),
        },
        {},
    )
    warnings = run_warnings(results)
    assert len(warnings) == 1 and warnings[0].startswith("ORIENTATIONS AMBIGUOUS for 3 region(s)")
    assert "region 0: a projection partner at 60.0° scores within 0.10 % of it" in warnings[0]
    assert "region 1: no majority in its positions' vote (3 of 17)" in warnings[0]
    assert "region 3: a projection partner at 36.9° scores 0.25 % above it" in warnings[0]
    assert "region 2" not in warnings[0] and "38.9" not in warnings[0]
    lines = describe(results)
    assert [line.split(":")[0] for line in lines[1:]] == ["AMBIGUOUS region 0", "AMBIGUOUS region 1", "AMBIGUOUS region 3"]
    html = render_html(results, explorer=False)
    assert html[: html.index("<table")].count('class="warning"') == 1
    assert html.count("AMBIGUOUS: a projection partner at 60.0°") == 1
    results["/orientations/regions_ambiguous"] = np.zeros(4, bool)
    assert run_warnings(results) == [] and len(describe(results)) == 1
