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
