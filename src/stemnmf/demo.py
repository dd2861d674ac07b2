"""``make demo``: simulate a scan with ground truth, run the whole pipeline, write the report.

Run as ``python -m stemnmf.demo [OUTDIR]``; prints where the report is.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from stemnmf.cli import setup_logging
from stemnmf.pipeline import run
from stemnmf.simulate import simulate_to_file

__all__ = ["main", "DEMO_SCAN", "DEMO_CONFIG"]

#: The simulated scan: a few large crystals of distinct orientations with overlapping borders.
DEMO_SCAN = {"preset": "crystals", "scan": 64, "det": 128, "seed": 0, "n_orientations": 6}

#: The run: angular-average features, k chosen by the K-component loss and image similarity.
DEMO_CONFIG = {"features": {"representation": "aa"}, "nmf": {"k": "auto", "k_range": "3:12"}, "run": {"seed": 0}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    outdir = Path(argv[0] if argv else "demo-out")
    outdir.mkdir(parents=True, exist_ok=True)

    class _Verbosity:
        verbose = False
        quiet = False

    setup_logging(_Verbosity)
    log = logging.getLogger("stemnmf.demo")
    start = time.perf_counter()
    scan = outdir / "scan.h5"
    params = dict(DEMO_SCAN)
    preset = params.pop("preset")
    log.info("simulating a %s scan (%s) ...", preset, ", ".join(f"{k}={v}" for k, v in params.items()))
    simulate_to_file(scan, preset, overwrite=True, **params)
    results = run(scan, DEMO_CONFIG, outdir=outdir / "run", overwrite=True)
    print("\n".join(results.attrs["summary"]))
    if "/scores/summary" in results:
        scores = json.loads(str(results["/scores/summary"]))
        shown = {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)}
        print("scores against the simulated truth: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    print(f"open the report: {(outdir / 'run' / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
