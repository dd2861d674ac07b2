"""`make demo` (`python -m stemnmf.demo OUTDIR`) on a small scan: runs end to end, says where the report is."""

from __future__ import annotations

import logging
import math
import re

import h5py
import pytest

from stemnmf import demo


@pytest.fixture
def stemnmf_logger_restored():
    """demo.main configures the 'stemnmf' logger like the CLI does; put it back for the tests that follow."""
    logger = logging.getLogger("stemnmf")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def test_demo_writes_report_and_results_and_prints_where(tmp_path, monkeypatch, capsys, stemnmf_logger_restored):
    # the same preset and run configuration as `make demo`, on a smaller scan
    monkeypatch.setattr(demo, "DEMO_SCAN", {**demo.DEMO_SCAN, "scan": 24, "det": 64})
    outdir = tmp_path / "demo out"

    assert demo.main([str(outdir)]) == 0

    report = outdir / "run" / "report.html"
    results = outdir / "run" / "results.h5"
    assert (outdir / "scan.h5").is_file()
    assert report.is_file() and report.stat().st_size > 1000
    assert results.is_file()
    with h5py.File(results, "r") as f:
        assert "scores" in f  # scored against the simulated truth
        assert f["navigator/patterns"].shape[:2] == (24, 24)  # every position's pattern, for the explorer
    assert '<section id="explore"' in report.read_text()
    out = capsys.readouterr().out
    assert re.search(rf"^open the report: {re.escape(str(report.resolve()))}$", out, re.M), out
    scores = re.search(r"^scores against the simulated truth: (.+)$", out, re.M)
    assert scores, out
    pairs = [item.rsplit(" ", 1) for item in scores.group(1).split(", ")]
    assert len(pairs) >= 3 and all(len(p) == 2 and re.fullmatch(r"\w+", p[0]) for p in pairs), scores.group(0)
    assert all(math.isfinite(float(value)) for _, value in pairs)
    assert re.search(r"^demo finished in \d+ s$", out, re.M)
