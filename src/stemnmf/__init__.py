"""stemnmf: grains, phases and orientation domains in 4D-STEM data with NMF.

The public entry points are imported on first use, so ``import stemnmf`` is
fast and a command that needs one layer does not import the others.
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# name -> "module:attribute" (attribute None for a sub-package)
_LAZY = {
    "load": "stemnmf.io:load",
    "load_results": "stemnmf.io:load_results",
    "Dataset4D": "stemnmf.io:Dataset4D",
    "Calibration": "stemnmf.io:Calibration",
    "Engine": "stemnmf.engine:Engine",
    "simulate": "stemnmf.simulate:",  # the module is callable as simulate()
    "featurize": "stemnmf.features:featurize",
    "run": "stemnmf.pipeline:run",
    "index": "stemnmf.crystal:index",
    "io": "stemnmf.io:",
    "engine": "stemnmf.engine:",
    "calibrate": "stemnmf.calibrate:",
    "filters": "stemnmf.filters:",
    "features": "stemnmf.features:",
    "decompose": "stemnmf.decompose:",
    "kselect": "stemnmf.kselect:",
    "analysis": "stemnmf.analysis:",
    "crystal": "stemnmf.crystal:",
    "report": "stemnmf.report:",
    "pipeline": "stemnmf.pipeline:",
    "errors": "stemnmf.errors:",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'stemnmf' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
