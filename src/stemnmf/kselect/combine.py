"""The combined choice of k: several kinds of evidence, each with its own vote.

Votes (each a k; docs/kselect.md gives the reasons and the ablations):

``knee``
    Decision level 1 of Cao et al.: the knee of the K-component loss.
``iqa``
    Decision level 2 of Cao et al.: the median choice of the four IQA metrics.
``stability``
    The last k of the first run of consecutive k whose component patterns,
    fitted to two disjoint halves of the positions, all match one to one
    with a cosine of at least :data:`STABILITY_THRESHOLD`
    (:mod:`stemnmf.kselect.heldout`).
``heldout``
    The knee of the bi-cross-validation (held-out) error against k: beyond
    it, more components no longer predict unseen data better.
``coherence``
    The last k of the first run of consecutive k whose least coherent
    component map keeps a lag-1 autocorrelation of at least
    :data:`COHERENCE_FRACTION` of the median component's in the same fit
    (:mod:`stemnmf.kselect.coherence`); only when the scan shape is known.
``noise``
    The last k of the first run of k whose fit removes more than
    :data:`NOISE_STEP_FACTOR` times what a component fitted to Poisson noise
    would (:mod:`stemnmf.kselect.noise`); raw patterns with a scan shape.
``peaks``
    The number of groups of scan blocks whose own Bragg peaks agree
    (:mod:`stemnmf.kselect.peakgroups`): no fit enters it; raw patterns with
    a scan shape; clipped to the scanned k.

Before they are combined, every vote k becomes the number of distinct
orientations among the components of the fit with k components (raw
patterns only): a component whose pattern is a shifted copy of a stronger
one counts with it (:mod:`stemnmf.kselect.shift`), so does one whose peaks lie
where a stronger one's lie, and one without peaks does not count
(:mod:`stemnmf.kselect.orientation`). An uncorrected descan otherwise splits
every crystal into components at two places on the detector, thickness
splits it into components of other intensities, and carbon or background
between the grains takes a component of its own; every other kind of
evidence takes each for a new domain.

**The sixth rule (the default): the peak-group vote decides** (:data:`PRIMARY`).
Every other vote reads the fits, and with many orientations the fits fail
together; the peak groups read the data. On the 96 scans of the test bed seen
before this rule, it alone was within +-1 of the truth on 93, the fifth rule
below on 73 (``bench/kselect_rule6_ablation.py``). The fifth rule on the
other votes is kept as ``fits_k`` in the results, and the 'k UNCERTAIN'
warning compares the two. Without the peak groups (features other than raw
patterns, no scan shape), the fifth rule decides:

The combined k rests on three kinds of evidence (:data:`DECIDERS`): the
loss knee (reconstruction), the map coherence (space) and the noise vote
(statistics of the counts). The noise vote leads (:data:`LEAD`): the
combined k is the noise vote, raised to the smaller of the loss knee and
the coherence when both lie above it (the fifth rule; the upper median of
knee, coherence, noise, noise). Without the noise vote, the median of the
loss knee, the held-out error's knee and the coherence
(:data:`FALLBACK_DECIDERS`, the second rule); without those, the median of
every vote (the lower median for an even number). Why: on the 72 recorded
scans of the test bed this was within +-1 of the truth in 57, the median of
knee, coherence and noise (the fourth rule) in 51; the noise vote is the
best single vote where orientations are many (the knee and the coherence
fall far below the truth together), and the floor keeps it from falling
below both where it errs low. docs/kselect.md gives the ablation. All
votes bound the answer: the plausible range runs from the second smallest
to the second largest vote (all of them with fewer than four), widened to
include the chosen k.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np

from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect.coherence import coherence_ratio, coherence_ratio_by_k
from stemnmf.kselect.heldout import HeldOutEvidence, held_out_evidence
from stemnmf.kselect.knee import find_knee
from stemnmf.kselect.noise import NoiseEstimate, poisson_gain
from stemnmf.kselect.orientation import OrientationEvidence, orientation_evidence
from stemnmf.kselect.peakgroups import PeakGroups, peak_groups
from stemnmf.kselect.shift import ShiftEvidence, shift_evidence

__all__ = [
    "COHERENCE_FRACTION",
    "DECIDERS",
    "FALLBACK_DECIDERS",
    "LEAD",
    "NOISE_STEP_FACTOR",
    "PRIMARY",
    "first_run_end",
    "STABILITY_THRESHOLD",
    "SIGNALS",
    "CombinedChoice",
    "combine_votes",
    "combined_choice",
    "fits_choice",
    "gather_evidence",
    "heldout_knee",
    "noise_vote",
    "rule_text",
    "votes_line",
]

log = logging.getLogger(__name__)

#: Smallest matched cosine between the patterns of the two halves of the positions for a k to count as stable.
STABILITY_THRESHOLD = 0.9
#: A k counts as coherent while its least coherent component map keeps this fraction of the
#: coherence of the median component of the same fit (relative, so noisy scans and small domains
#: are not penalised).
COHERENCE_FRACTION = 0.95
#: A k counts for the noise vote while its fit removes more than this many times the residual
#: energy a component fitted to pure noise removes (:func:`noise_vote`).
NOISE_STEP_FACTOR = 2.0
#: The kinds of evidence, in the order they are reported.
SIGNALS = ("knee", "iqa", "stability", "heldout", "coherence", "noise", "peaks")
#: The votes that decide when all three are present (raw features with a scan shape).
DECIDERS = ("knee", "coherence", "noise")
#: Among :data:`DECIDERS`, the vote that leads: the combined k, unless every other decider lies above it.
LEAD = "noise"
#: Without the noise vote (features other than raw patterns): these three decide (the second rule).
FALLBACK_DECIDERS = ("knee", "heldout", "coherence")
#: The vote that decides alone when present (the sixth rule): the peak groups, evidence from the
#: data that no fit shares (:mod:`stemnmf.kselect.peakgroups`).
PRIMARY = ("peaks",)


def deciders_for(votes) -> tuple[str, ...] | None:
    """:data:`PRIMARY`, else :data:`DECIDERS`, else :data:`FALLBACK_DECIDERS`, the first whose votes are all there; else None."""
    for names in (PRIMARY, DECIDERS, FALLBACK_DECIDERS):
        if all(name in votes for name in names):
            return names
    return None


def fits_choice(votes: dict) -> int | None:
    """The k the votes read off the fits choose without the peak groups (the fifth rule); None without votes."""
    fits = {name: k for name, k in votes.items() if name not in PRIMARY}
    return combined_choice(fits)[0] if fits else None

_NAMES = {
    "knee": "loss knee",
    "iqa": "IQA",
    "stability": "split-half stability",
    "heldout": "held-out error",
    "coherence": "map coherence",
    "noise": "noise",
    "peaks": "peak groups",
}


@dataclasses.dataclass
class CombinedChoice:
    """The combined vote.

    Attributes
    ----------
    chosen_k : int
    votes : dict of str to int
        The k each kind of evidence chose (those computed).
    plausible_range : (int, int)
    reason : str
    heldout : HeldOutEvidence or None
    coherence : (numpy.ndarray, numpy.ndarray, numpy.ndarray) or None
        k, the coherence of the least coherent component map and that of the
        median component, per fit.
    noise : NoiseEstimate or None
        The Poisson gain of the data and the noise energy.
    shift : ShiftEvidence or None
        Shifted copies among the components of every fit (raw patterns only).
    raw_votes : dict of str to int or None
        The votes before shifted copies and same-orientation components
        count once (equal to ``votes`` without pattern evidence).
    orientation : OrientationEvidence or None
        Components of the voted fits that are the same orientation as a
        stronger one or hold no peaks (raw patterns only).
    peakgroups : PeakGroups or None
        Groups of scan blocks whose own Bragg peaks agree (raw patterns with a
        scan shape; :mod:`stemnmf.kselect.peakgroups`).
    """

    chosen_k: int
    votes: dict
    plausible_range: tuple
    reason: str
    heldout: HeldOutEvidence | None = None
    coherence: tuple | None = None
    noise: NoiseEstimate | None = None
    shift: ShiftEvidence | None = None
    raw_votes: dict | None = None
    orientation: OrientationEvidence | None = None
    peakgroups: PeakGroups | None = None

    @property
    def coherence_threshold(self) -> float | None:
        """The least / median coherence a k needed (:data:`COHERENCE_FRACTION`), None without maps."""
        return None if self.coherence is None else float(COHERENCE_FRACTION)

    def to_results(self, prefix: str = "/kselect") -> dict:
        out = {
            f"{prefix}/combined_k": np.int64(self.chosen_k),
            f"{prefix}/votes": json.dumps({name: int(k) for name, k in self.votes.items()}),
            f"{prefix}/plausible_range": np.asarray(self.plausible_range, dtype=np.int64),
            f"{prefix}/combined_reason": str(self.reason),
            f"{prefix}/thresholds_combined": json.dumps(
                {"stability": STABILITY_THRESHOLD, "coherence": self.coherence_threshold,
                 "noise_step_factor": NOISE_STEP_FACTOR,
                 "shift": None if self.shift is None else float(self.shift.threshold),
                 "peak_agreement": None if self.orientation is None else self.orientation.threshold,
                 "min_peaks": None if self.orientation is None else int(self.orientation.min_peaks)}
            ),
        }
        if self.heldout is not None:
            out.update(self.heldout.to_results(f"{prefix}/heldout"))
        if self.coherence is not None:
            out[f"{prefix}/coherence/k"] = np.asarray(self.coherence[0], dtype=np.int64)
            out[f"{prefix}/coherence/least"] = np.asarray(self.coherence[1], dtype=np.float64)
            out[f"{prefix}/coherence/median"] = np.asarray(self.coherence[2], dtype=np.float64)
            out[f"{prefix}/coherence/ratio"] = coherence_ratio(self.coherence[1], self.coherence[2])
        if self.noise is not None:
            out[f"{prefix}/noise/gain"] = np.float64(self.noise.gain)
            out[f"{prefix}/noise/energy"] = np.float64(self.noise.energy)
            out[f"{prefix}/noise/step"] = np.float64(self.noise.step)
        if self.shift is not None:
            out.update(self.shift.to_results(f"{prefix}/shift"))
        if self.orientation is not None:
            out.update(self.orientation.to_results(f"{prefix}/orientation"))
        if self.peakgroups is not None:
            out.update(self.peakgroups.to_results(f"{prefix}/peakgroups"))
        fits = fits_choice(self.votes)
        if fits is not None and any(name in self.votes for name in PRIMARY):
            out[f"{prefix}/fits_k"] = np.int64(fits)
        raw = self.votes if self.raw_votes is None else self.raw_votes
        out[f"{prefix}/votes_unmerged"] = json.dumps({name: int(k) for name, k in raw.items()})
        return out


def combine_votes(votes: dict, *, deciders=None, lead=None) -> tuple[int, tuple[int, int]]:
    """(chosen k, plausible range) of a dict of votes.

    The chosen k is the median of the votes named in ``deciders`` when every
    one of them is present, else the median of all the votes (the lower median
    for an even number). With ``lead`` (one of the ``deciders``), the chosen k
    is that vote instead, raised to the smallest of the other deciders when
    all of them lie above it. The range runs from the second smallest to the
    second largest vote when there are four or more, over all votes otherwise,
    widened to include the chosen k.
    """
    values = sorted(int(v) for v in votes.values())
    if not values:
        raise ValueError("no votes")
    deciding = values
    if deciders and all(name in votes for name in deciders):
        deciding = sorted(int(votes[name]) for name in deciders)
        if lead is not None:
            if lead not in deciders:
                raise ValueError(f"lead {lead!r} is not one of the deciders {tuple(deciders)}")
            others = [int(votes[name]) for name in deciders if name != lead]
            deciding = [max(int(votes[lead]), min(others, default=int(votes[lead])))]
    chosen = deciding[(len(deciding) - 1) // 2]
    low, high = (values[1], values[-2]) if len(values) >= 4 else (values[0], values[-1])
    return chosen, (min(low, chosen), max(high, chosen))


def combined_choice(votes: dict) -> tuple[int, tuple[int, int]]:
    """(chosen k, plausible range) by the library's rule: :data:`PRIMARY` alone, else :data:`DECIDERS` led by
    :data:`LEAD`, else the fallbacks."""
    deciders = deciders_for(votes)
    return combine_votes(votes, deciders=deciders, lead=LEAD if deciders == DECIDERS else None)


def rule_text(deciders) -> str:
    """How the deciders decide, in words (for the reason and the votes line)."""
    if deciders is None:
        return "the median of all votes"
    if tuple(deciders) == PRIMARY:
        return "the peak-group vote"
    if tuple(deciders) == DECIDERS:
        others = " and the ".join(_NAMES[n] for n in DECIDERS if n != LEAD)
        return f"the {_NAMES[LEAD]} vote, not below the smaller of the {others}"
    return "the median of " + ", ".join(_NAMES[n] for n in deciders)


def first_run_end(k, values, threshold: float) -> int:
    """The last k of the first run of consecutive k whose value reaches ``threshold``.

    The run starts at the first k that reaches it; the smallest k when none does.
    """
    k = np.asarray(k)
    ok = np.asarray(values) >= threshold
    if not ok.any():
        return int(k[0])
    i = int(np.argmax(ok))
    while i + 1 < k.size and ok[i + 1]:
        i += 1
    return int(k[i])


def heldout_knee(heldout: HeldOutEvidence) -> int:
    """The knee of the mean held-out error against k (the smallest k with fewer than three points)."""
    if heldout.k.size < 3:
        return int(heldout.k[int(np.argmin(heldout.mean_error))])
    return int(round(find_knee(heldout.k, heldout.mean_error).x))


def noise_vote(k, residual_energy, step: float, factor: float | None = None) -> int:
    """The last k of the first run of k whose fit removes more than noise would.

    Parameters
    ----------
    k : array_like of int
        Scanned k, increasing.
    residual_energy : array_like of float
        ``||X - W H||_F^2`` per k.
    step : float
        Residual energy one component fitted to pure noise removes
        (:attr:`NoiseEstimate.step`).
    factor : float, optional
        A k counts when its drop exceeds ``factor * step``; default
        :data:`NOISE_STEP_FACTOR`.
    """
    k = np.asarray(k)
    energy = np.asarray(residual_energy, dtype=np.float64)
    factor = NOISE_STEP_FACTOR if factor is None else float(factor)
    drops = energy[:-1] - energy[1:]
    i = 0
    while i < drops.size and drops[i] > factor * step:
        i += 1
    return int(k[i])


def _noise(X, scan_shape) -> NoiseEstimate | None:
    """The Poisson gain of X from neighbouring positions; None without a scan shape or with a zero gain."""
    if scan_shape is None:
        return None
    try:
        noise = poisson_gain(X, scan_shape)
    except DataValueError as err:
        log.warning("no noise estimate: %s", err)
        return None
    return noise if noise.gain > 0 else None


def _reason_text(votes: dict, chosen: int, plausible, merged: dict | None) -> str:
    listing = ", ".join(f"{_NAMES[name]} {votes[name]}" for name in SIGNALS if name in votes)
    counted = {**votes, **(merged or {})}
    agree = [_NAMES[name] for name in SIGNALS if counted.get(name) == chosen]
    rule = rule_text(deciders_for(votes))
    text = f"the evidence votes {listing}"
    if merged:
        listed = ", ".join(f"{_NAMES[n]} {k}" for n, k in merged.items())
        text += f" (counting shifted copies and components with the same peaks once, peakless ones not: {listed})"
    return f"{text}: {rule}, k = {chosen} (agreeing: {', '.join(agree) or 'none'}; plausible {plausible[0]}..{plausible[1]})"


def gather_evidence(
    X,
    kloss,
    *,
    knee_k: int,
    iqa_k: int,
    scan_shape=None,
    pattern_shape=None,
    random_state=None,
    heldout_options: dict | None = None,
) -> CombinedChoice:
    """Compute the held-out, map, noise and shift evidence for the scanned k and combine every vote.

    Parameters
    ----------
    X : array_like, shape (n_positions, n_features)
    kloss : KLoss
        The K-component loss scan (its fits give the maps and patterns).
    knee_k, iqa_k : int
        Cao et al.'s two levels.
    scan_shape : (int, int), optional
        Without it the map coherence and the noise do not vote.
    pattern_shape : (int, int), optional
        (qy, qx) of a row of X when X holds raw patterns on a linear scale
        of counts: then the noise votes (with a scan shape), and components
        that are shifted copies of another (:mod:`stemnmf.kselect.shift`) or
        have its peaks count once and peakless ones do not
        (:mod:`stemnmf.kselect.orientation`).
    random_state : int, Generator or None
    heldout_options : dict, optional
        Keyword arguments of :func:`~stemnmf.kselect.held_out_evidence`.
    """
    votes = {"knee": int(knee_k), "iqa": int(iqa_k)}
    noise = _noise(X, scan_shape) if pattern_shape is not None else None
    options = {"gain": None if noise is None else noise.gain, **(heldout_options or {})}
    try:
        heldout = held_out_evidence(X, kloss.k, random_state=random_state, **options)
    except ConfigError as err:  # too little data for two halves of the largest k
        log.warning("no held-out evidence for k: %s", err)
        heldout = None
    if heldout is not None:
        votes["stability"] = first_run_end(heldout.k, heldout.mean_stability, STABILITY_THRESHOLD)
        votes["heldout"] = heldout_knee(heldout)
    coherence = None
    if scan_shape is not None and kloss.factors:
        coherence = coherence_ratio_by_k(kloss.factors, scan_shape)
        votes["coherence"] = first_run_end(coherence[0], coherence_ratio(coherence[1], coherence[2]), COHERENCE_FRACTION)
    if noise is not None and kloss.k.size > 1:
        votes["noise"] = noise_vote(kloss.k, np.asarray(kloss.frobenius, dtype=np.float64) ** 2, noise.step)
    shifts = orientation = None
    if pattern_shape is not None and kloss.factors:
        shifts = shift_evidence(kloss.factors, pattern_shape)
        orientation = _orientation(X, kloss, pattern_shape, votes, shifts.fractions)
    counted = dict(votes)
    for evidence in (orientation, shifts):
        if evidence is not None:
            counted = {name: evidence.distinct_at(k) for name, k in votes.items()}
            break
    groups = _peak_groups(X, scan_shape, pattern_shape, noise)
    if groups is not None:  # counts orientations itself, from the data: no fit to count in
        votes["peaks"] = counted["peaks"] = int(np.clip(groups.vote, int(kloss.k[0]), int(kloss.k[-1])))
    merged = {name: counted[name] for name in votes if counted[name] != votes[name]}
    chosen, plausible = combined_choice(counted)
    reason = _reason_text(votes, chosen, plausible, merged)
    log.info("combined choice: %s", reason)
    return CombinedChoice(
        chosen, counted, plausible, reason, heldout, coherence, noise, shifts, dict(votes), orientation, groups
    )  # fmt: skip


def _peak_groups(X, scan_shape, pattern_shape, noise) -> PeakGroups | None:
    """The peak-group evidence (raw patterns with a scan shape and a noise estimate); None otherwise."""
    if noise is None or scan_shape is None or pattern_shape is None:
        return None
    try:
        return peak_groups(X, scan_shape, pattern_shape, noise.gain)
    except DataValueError as err:
        log.warning("no peak groups for k: %s", err)
        return None


def _orientation(X, kloss, pattern_shape, votes, fractions) -> OrientationEvidence | None:
    """The same-orientation evidence of the voted fits (one pass over X); None when it cannot be computed."""
    try:
        return orientation_evidence(X, kloss.factors, pattern_shape, ks=sorted(set(votes.values())),
                                    shift_fractions=fractions)  # fmt: skip
    except DataValueError as err:
        log.warning("no peak evidence for k: %s", err)
        return None


def votes_line(results) -> str:
    """One line on the votes for k, from results datasets (``''`` when the run did not vote).

    For example ``"loss knee 5, IQA 3, split-half stability 4, held-out error 4, map coherence 5;
    plausible k = 4..5"``.
    """
    if "/kselect/votes" not in results:
        return ""
    votes = json.loads(str(results["/kselect/votes"]))
    if not votes:
        return ""
    text = ", ".join(f"{_NAMES.get(name, name)} {int(k)}" for name, k in votes.items())
    if "/kselect/plausible_range" in results:
        low, high = (int(v) for v in np.asarray(results["/kselect/plausible_range"]))
        text += f"; plausible k = {low}..{high}"
    if "/kselect/evidence" in results:
        combined = str(results["/kselect/evidence"]) == "combined"
        text += f" ({rule_text(deciders_for(votes))} decides)" if combined else " (Cao et al. decide)"
    return text
