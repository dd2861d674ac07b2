"""Reproductions of the two published studies stemnmf implements, on simulated data with truth.

``stemnmf reproduce bruefach2022`` and ``stemnmf reproduce cao2025`` run them
from the command line; each writes a Markdown and a JSON table to its output
folder with the published values beside ours.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from stemnmf.io.files import atomic_output

__all__ = ["bruefach2022", "cao2025", "write_tables", "LMNO_FIXTURE", "STUDIES"]

#: Published outputs of Cao et al. 2025 on their LMNO scan (see data/README.md).
LMNO_FIXTURE = Path(__file__).parent / "data" / "cao2025_lmno_k8.npz"

#: study name -> "module:function"
STUDIES = {
    "bruefach2022": "stemnmf.reproduce.bruefach:bruefach2022",
    "cao2025": "stemnmf.reproduce.cao:cao2025",
}


def write_tables(outdir: Path, study: str, table: dict, text: str) -> None:
    """Write OUTDIR/STUDY.json (``table``) and OUTDIR/STUDY.md (``text``), each under a temporary name first."""
    for suffix, content in ((".json", json.dumps(table, indent=2, allow_nan=False)), (".md", text)):
        with atomic_output(Path(outdir) / f"{study}{suffix}", overwrite=True) as tmp:
            Path(tmp).write_text(content)


def __getattr__(name: str):
    if name not in STUDIES:
        raise AttributeError(f"module 'stemnmf.reproduce' has no attribute {name!r}")
    module, _, function = STUDIES[name].partition(":")
    return getattr(importlib.import_module(module), function)
