"""What in a run's results should not be trusted, in one line each (summary and report)."""

from __future__ import annotations

import numpy as np

__all__ = ["k_uncertainty", "run_warnings"]


def k_uncertainty(results) -> str:
    """A warning when the votes for k spread wider than +-1 around the chosen k (``''`` otherwise).

    The plausible range (second smallest to second largest vote) is the
    evidence's own spread: where it reaches beyond chosen k +- 1 the votes
    disagree by more than the tolerance a user can live with, and on the
    held-out test bed such choices missed the truth by more than 1 four times
    as often as the others (docs/kselect.md).
    """
    if "/kselect/plausible_range" not in results or "/kselect/chosen_k" not in results:
        return ""
    low, high = (int(v) for v in np.asarray(results["/kselect/plausible_range"]))
    chosen = int(results["/kselect/chosen_k"])
    if low >= chosen - 1 and high <= chosen + 1:
        return ""
    return (
        f"k UNCERTAIN: the votes for k span {low}..{high} around the chosen k = {chosen}; "
        "compare the votes and curves in the report's k section, or give --k"
    )


def run_warnings(results) -> list[str]:
    """Every warning of a run: an unreliable calibration, an uncertain k."""
    warnings = []
    if "/calibration/quality/reliable" in results and not int(results["/calibration/quality/reliable"]):
        problems = [str(p) for p in np.atleast_1d(results["/calibration/quality/problems"])]
        warnings.append("CALIBRATION UNRELIABLE, the maps may be meaningless: " + "; ".join(problems))
    uncertain = k_uncertainty(results)
    if uncertain:
        warnings.append(uncertain)
    return warnings
