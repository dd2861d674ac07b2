"""Reproductions of the two published studies stemnmf implements, on simulated data with truth.

``stemnmf reproduce bruefach2022`` and ``stemnmf reproduce cao2025`` run them
from the command line; each writes a Markdown and a JSON table to its output
folder with the published values beside ours.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["bruefach2022", "cao2025", "LMNO_FIXTURE", "STUDIES"]

#: Published outputs of Cao et al. 2025 on their LMNO scan (see data/README.md).
LMNO_FIXTURE = Path(__file__).parent / "data" / "cao2025_lmno_k8.npz"

#: study name -> "module:function"
STUDIES = {
    "bruefach2022": "stemnmf.reproduce.bruefach:bruefach2022",
    "cao2025": "stemnmf.reproduce.cao:cao2025",
}


def __getattr__(name: str):
    if name not in STUDIES:
        raise AttributeError(f"module 'stemnmf.reproduce' has no attribute {name!r}")
    module, _, function = STUDIES[name].partition(":")
    return getattr(importlib.import_module(module), function)
