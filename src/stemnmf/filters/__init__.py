"""Preprocessing of 4D-STEM scans: scan-space mean filter, denoisers, noise measures.

Pure functions on arrays, each with a Dataset4D counterpart that runs through
:class:`stemnmf.engine.Engine`; :func:`preprocess` is the pipeline's entry
point and :func:`nsd_matrix` / :func:`compare_preprocessing` compare the
choices by their noise standard deviation (NSD) as Cao et al. (2025) do.
"""

from stemnmf.filters.peaks import disk_kernel, epattern, epattern_dataset, find_spots, render_disks
from stemnmf.filters.lowrank import LowRankBasis, apply_lowrank, fit_lowrank, lowrank_dataset, lowrank_denoise
from stemnmf.filters.noise import (
    NSDMatrix,
    background_region,
    compare_preprocessing,
    nsd,
    nsd_background,
    nsd_matrix,
)
from stemnmf.filters.methods import METHODS, preprocess
from stemnmf.filters.scan import scan_mean, scan_mean_filter

__all__ = [
    "LowRankBasis",
    "METHODS",
    "NSDMatrix",
    "apply_lowrank",
    "background_region",
    "compare_preprocessing",
    "disk_kernel",
    "epattern",
    "epattern_dataset",
    "find_spots",
    "fit_lowrank",
    "lowrank_dataset",
    "lowrank_denoise",
    "nsd",
    "nsd_background",
    "nsd_matrix",
    "preprocess",
    "render_disks",
    "scan_mean",
    "scan_mean_filter",
]
