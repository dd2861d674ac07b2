"""What in a run's results should not be trusted, in one line each (summary and report)."""

from __future__ import annotations

import numpy as np

from stemnmf.crystal.workflow import ambiguous_regions

__all__ = ["k_uncertainty", "run_warnings"]


def k_uncertainty(results) -> str:
    """A warning when the evidence for k disagrees by more than +-1 (``''`` otherwise).

    Where the peak groups of the data chose k (``/kselect/fits_k`` is there: the k the votes read off
    the fits would choose without them, the fifth rule), the warning says when those two kinds of
    evidence differ by more than 1: on the 96 seen scans of the test bed this warned on 21, 2 of
    them missed; of the 75 not warned, 1 missed (docs/kselect.md). Otherwise the plausible range
    (second smallest to second largest vote) is the evidence's own spread: where it reaches beyond
    chosen k +- 1 the votes disagree by more than the tolerance a user can live with.
    """
    if "/kselect/chosen_k" not in results:
        return ""
    chosen = int(results["/kselect/chosen_k"])
    if "/kselect/fits_k" in results:
        fits = int(results["/kselect/fits_k"])
        if abs(fits - chosen) <= 1:
            return ""
        return (
            f"k UNCERTAIN: the peak groups of the data give k = {chosen}, the votes read off the fits k = {fits}; "
            "compare the votes and curves in the report's k section, or give --k"
        )
    if "/kselect/plausible_range" not in results:
        return ""
    low, high = (int(v) for v in np.asarray(results["/kselect/plausible_range"]))
    if low >= chosen - 1 and high <= chosen + 1:
        return ""
    return (
        f"k UNCERTAIN: the votes for k span {low}..{high} around the chosen k = {chosen}; "
        "compare the votes and curves in the report's k section, or give --k"
    )


def run_warnings(results) -> list[str]:
    """Every warning of a run: an unreliable calibration, an uncertain k, ambiguous region orientations."""
    warnings = []
    if "/calibration/quality/reliable" in results and not int(results["/calibration/quality/reliable"]):
        problems = [str(p) for p in np.atleast_1d(results["/calibration/quality/problems"])]
        warnings.append("CALIBRATION UNRELIABLE, the maps may be meaningless: " + "; ".join(problems))
    uncertain = k_uncertainty(results)
    if uncertain:
        warnings.append(uncertain)
    ambiguous = ambiguous_regions(results)
    if ambiguous:
        warnings.append(
            f"ORIENTATIONS AMBIGUOUS for {len(ambiguous)} region(s), the data cannot decide between these: region "
            + "; region ".join(ambiguous)
        )
    return warnings
