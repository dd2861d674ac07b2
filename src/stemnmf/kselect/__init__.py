"""Choosing the number of components k with evidence (after Cao et al. 2025).

Decision level 1: the K-component loss (mean ``|X - WH|`` against k) and its
knee (Kneedle). Decision level 2: image-quality metrics (SSIM, PSNR, GMSD,
MDSI, as piq 0.8.0 computes them) between the components' patterns in raw
pattern space, for k around the knee; each metric picks the largest k before
a component becomes redundant (two alike, or one nearly empty) and the median
choice decides. Beside these two levels (``evidence='combined'``, the default),
the split-half stability and held-out (bi-cross-validation) error of NMF on a
subsample, the coherence of the component maps and a Poisson noise model vote
too; every vote counts distinct orientations: a component whose pattern is a
shifted copy of a stronger one (an uncorrected descan) or has its peaks
(thickness) counts with it, one without peaks (carbon, background) not at
all. A seventh vote reads no fit: the number of groups of scan blocks whose
own Bragg peaks agree (:mod:`stemnmf.kselect.peakgroups`; a group that holds
two places with different peaks counts two, the seventh rule); it decides (the
sixth rule), and all seven give the plausible range (docs/kselect.md).

The pipeline calls :func:`select_k`; its :meth:`KSelection.to_results` holds
everything under ``/kselect/`` in the results file.
"""

from stemnmf.kselect.coherence import coherence_by_k, coherence_ratio, coherence_ratio_by_k, map_coherence
from stemnmf.kselect.combine import (
    COHERENCE_FRACTION,
    SIGNALS,
    STABILITY_THRESHOLD,
    CombinedChoice,
    combine_votes,
    combined_choice,
    first_run_end,
    gather_evidence,
    noise_vote,
    votes_line,
)
from stemnmf.kselect.decide import DEFAULT_EMPTY_METRICS, DEFAULT_THRESHOLDS, IQADecision, decide_k, most_similar_pair
from stemnmf.kselect.iqa import HIGHER_IS_SIMILAR, METRICS, gmsd, iqa_matrix, mdsi, psnr, ssim
from stemnmf.kselect.heldout import HeldOutEvidence, held_out_evidence, match_components, nnls_rows
from stemnmf.kselect.knee import Knee, find_knee, range_of_interest
from stemnmf.kselect.loss import KLoss, append_component, k_component_loss
from stemnmf.kselect.noise import NoiseEstimate, poisson_gain
from stemnmf.kselect.orientation import OrientationEvidence, orientation_count, orientation_evidence
from stemnmf.kselect.patterns import representative_patterns, weighted_mean_patterns
from stemnmf.kselect.select import KSelection, select_k
from stemnmf.kselect.shift import ShiftEvidence, shift_evidence, shift_fraction

__all__ = [
    "COHERENCE_FRACTION",
    "CombinedChoice",
    "HeldOutEvidence",
    "NoiseEstimate",
    "OrientationEvidence",
    "ShiftEvidence",
    "SIGNALS",
    "STABILITY_THRESHOLD",
    "coherence_by_k",
    "coherence_ratio",
    "coherence_ratio_by_k",
    "combine_votes",
    "combined_choice",
    "first_run_end",
    "gather_evidence",
    "held_out_evidence",
    "map_coherence",
    "match_components",
    "nnls_rows",
    "noise_vote",
    "orientation_count",
    "orientation_evidence",
    "poisson_gain",
    "shift_evidence",
    "shift_fraction",
    "votes_line",
    "DEFAULT_EMPTY_METRICS",
    "DEFAULT_THRESHOLDS",
    "HIGHER_IS_SIMILAR",
    "IQADecision",
    "KLoss",
    "KSelection",
    "Knee",
    "METRICS",
    "append_component",
    "decide_k",
    "find_knee",
    "gmsd",
    "iqa_matrix",
    "k_component_loss",
    "mdsi",
    "most_similar_pair",
    "psnr",
    "range_of_interest",
    "representative_patterns",
    "select_k",
    "ssim",
    "weighted_mean_patterns",
]
