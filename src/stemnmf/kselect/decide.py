"""Decision level 2: the k whose components are distinct, by image-quality metrics.

For each k in the range of interest, the components' patterns (in raw pattern
space, divided by their joint maximum) are compared pairwise with SSIM, PSNR,
GMSD and MDSI. A k has a *redundant* component for a metric when

- two of its components are as similar as two views of the same pattern:
  their SSIM or PSNR is above, or their GMSD or MDSI below, the metric's
  threshold; or
- one component is as similar to an empty pattern (all zeros), for the
  metrics in ``empty_metrics`` (PSNR and GMSD by default): it never carries
  much of the signal at any position, so it models noise or a correction,
  not a grain.

Each metric chooses the largest k before the first k (in increasing order)
with a redundant component. The final k is the lower median of the metrics'
choices: the majority choice whenever three of four metrics agree, and never
pulled up by one metric alone.

The default thresholds (:data:`DEFAULT_THRESHOLDS`) and the reasons for them
are in docs/kselect.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect.iqa import HIGHER_IS_SIMILAR, METRICS, iqa_matrix

__all__ = ["DEFAULT_EMPTY_METRICS", "DEFAULT_THRESHOLDS", "SOURCES", "IQADecision", "decide_k", "most_similar_pair"]

log = logging.getLogger(__name__)

#: Per kind of pattern: a pair of components (or a component and the empty
#: pattern) is redundant when the metric is beyond this value (above it for
#: SSIM and PSNR, below it for GMSD and MDSI). Weighted mean patterns share the
#: direct beam and the diffuse background of the raw data, so they are more
#: alike than representative patterns and need stricter values. See
#: docs/kselect.md for how they were set.
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "representative": {"ssim": 0.85, "psnr": 39.0, "gmsd": 0.05, "mdsi": 0.30},
    "weighted_mean": {"ssim": 0.965, "psnr": 35.0, "gmsd": 0.085, "mdsi": 0.255},
}
#: Per kind of pattern, the metrics that also compare each component with an
#: empty pattern. SSIM and MDSI normalise by local contrast (MDSI pools
#: deviations), so they call any sparse pattern "similar to empty"; a weighted
#: mean of raw patterns is never empty.
DEFAULT_EMPTY_METRICS: dict[str, tuple[str, ...]] = {"representative": ("psnr", "gmsd"), "weighted_mean": ()}
SOURCES = ("representative", "weighted_mean")

_NAMES = {"ssim": "SSIM", "psnr": "PSNR", "gmsd": "GMSD", "mdsi": "MDSI"}


@dataclasses.dataclass
class IQADecision:
    """Decision level 2 for a range of k.

    Attributes
    ----------
    k : numpy.ndarray of int64
        The k values compared, increasing.
    matrices : dict of str to dict of int to numpy.ndarray
        ``matrices[metric][k]`` is the (k, k) metric between every pair of
        components (``M[i, j] = metric(reference=i, image=j)``).
    most_similar : dict of str to numpy.ndarray
        Per metric, per k, the value of its most similar pair (NaN for k = 1).
    pairs : dict of str to numpy.ndarray
        Per metric, (n_k, 2) indices of that pair (-1 for k = 1).
    empty : dict of str to dict of int to numpy.ndarray
        For the metrics in ``empty_metrics``: per k, (k,) metric between each
        component (reference) and the empty pattern.
    emptiest : dict of str to numpy.ndarray
        Per metric in ``empty_metrics``, per k: the value of the component
        most similar to the empty pattern (NaN for other metrics).
    redundant : dict of str to numpy.ndarray of bool
        Per metric, per k: a pair, or a component against the empty pattern,
        is beyond the threshold.
    choices : dict of str to int
        The k each metric chooses.
    chosen_k : int
        The final k: the lower median of ``choices``.
    thresholds : dict of str to float
    empty_metrics : tuple of str
    reason : str
        One sentence on why ``chosen_k`` was chosen.
    """

    k: np.ndarray
    matrices: dict
    most_similar: dict
    pairs: dict
    empty: dict
    emptiest: dict
    redundant: dict
    choices: dict
    chosen_k: int
    thresholds: dict
    empty_metrics: tuple
    reason: str


def most_similar_pair(matrix, metric: str) -> tuple[float, tuple[int, int]]:
    """The most similar pair of distinct components in an IQA matrix.

    The matrix is symmetrised (mean of ``M`` and ``M.T``: MDSI is not
    symmetric) before the off-diagonal maximum (SSIM, PSNR) or minimum
    (GMSD, MDSI) is taken.

    Returns
    -------
    value : float
        NaN when there is only one component.
    pair : (int, int)
        Indices ``i < j``; (-1, -1) when there is only one component.
    """
    if metric not in HIGHER_IS_SIMILAR:
        raise ConfigError(f"unknown IQA metric {metric!r}", f"use one of {', '.join(METRICS)}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataValueError(f"an IQA matrix must be square, got shape {m.shape}")
    k = m.shape[0]
    if k < 2:
        return float("nan"), (-1, -1)
    sym = (m + m.T) / 2.0
    iu, ju = np.triu_indices(k, 1)
    values = sym[iu, ju]
    best = int(np.argmax(values) if HIGHER_IS_SIMILAR[metric] else np.argmin(values))
    return float(values[best]), (int(iu[best]), int(ju[best]))


def _is_redundant(value: float, metric: str, threshold: float) -> bool:
    if not np.isfinite(value):
        return False
    return value > threshold if HIGHER_IS_SIMILAR[metric] else value < threshold


def _normalise(patterns: np.ndarray) -> np.ndarray:
    """Patterns clipped at 0 and divided by their joint maximum (data range 1)."""
    p = np.clip(np.asarray(patterns, dtype=np.float64), 0, None)
    top = p.max()
    return p / top if top > 0 else p


def decide_k(
    patterns_by_k: Mapping[int, np.ndarray],
    *,
    source: str = "representative",
    metrics: Sequence[str] = ("ssim", "psnr", "gmsd", "mdsi"),
    thresholds: Mapping[str, float] | None = None,
    empty_metrics: Sequence[str] | None = None,
    normalise: bool = True,
) -> IQADecision:
    """Choose k from the component patterns of several fits.

    Parameters
    ----------
    patterns_by_k : mapping of int to array, shape (k, qy, qx)
        For each k, the components' patterns in raw pattern space
        (:func:`~stemnmf.kselect.representative_patterns` or
        :func:`~stemnmf.kselect.weighted_mean_patterns`).
    source : {'representative', 'weighted_mean'}, default 'representative'
        Which kind of patterns these are; selects the default thresholds and
        empty-pattern metrics.
    metrics : sequence of str, default all four
        Metrics that vote.
    thresholds : mapping, optional
        Redundancy threshold per metric; missing ones from
        ``DEFAULT_THRESHOLDS[source]``.
    empty_metrics : sequence of str, optional
        Metrics that also compare each component with an empty pattern;
        default ``DEFAULT_EMPTY_METRICS[source]`` (PSNR and GMSD for
        representative patterns, none for weighted means). ``()`` turns the
        check off.
    normalise : bool, default True
        Clip each k's patterns at 0 and divide them by their joint maximum
        before comparing (data range 1), so the thresholds do not depend on
        the intensity scale. False compares them as given with data range 1.

    Returns
    -------
    IQADecision
    """
    metrics, limits, empty_metrics = _check_options(patterns_by_k, metrics, source, thresholds, empty_metrics)
    ks, prepared = _prepare(patterns_by_k, normalise)
    metrics = _metrics_for_shape(metrics, prepared[int(ks[0])].shape[1:])
    matrices, empty, choices = {}, {}, {}
    evidence = _Evidence({}, {}, {}, {}, {}, limits)
    for metric in metrics:
        matrices[metric], by_k_empty = _score_metric(metric, ks, prepared, limits[metric], metric in empty_metrics, evidence)
        if metric in empty_metrics:
            empty[metric] = by_k_empty
        first = np.flatnonzero(evidence.redundant[metric])
        choices[metric] = int(ks[-1]) if first.size == 0 else int(ks[max(0, first[0] - 1)])
    ordered = sorted(choices.values())
    chosen = ordered[(len(ordered) - 1) // 2]
    reason = _reason(chosen, ks, metrics, choices, evidence)
    log.info("decision level 2: %s", reason)
    return IQADecision(
        ks, matrices, evidence.most, evidence.pairs, empty, evidence.emptiest, evidence.redundant, choices,
        int(chosen), limits, empty_metrics, reason,
    )  # fmt: skip


def _check_options(patterns_by_k, metrics, source, thresholds, empty_metrics):
    """(metrics, threshold per metric, empty-pattern metrics) after checking the options of :func:`decide_k`."""
    if not patterns_by_k:
        raise DataValueError("no component patterns to compare", "give the patterns of at least one k")
    metrics = list(metrics)
    if not metrics:
        raise ConfigError("no IQA metrics to vote", "use some of ssim, psnr, gmsd, mdsi")
    for metric in metrics:
        if metric not in METRICS:
            raise ConfigError(f"unknown IQA metric {metric!r}", f"use some of {', '.join(METRICS)}")
    if source not in SOURCES:
        raise ConfigError(f"unknown pattern source {source!r}", f"use one of {', '.join(SOURCES)}")
    limits = dict(DEFAULT_THRESHOLDS[source])
    for name, value in (thresholds or {}).items():
        if name not in METRICS:
            raise ConfigError(f"threshold for unknown IQA metric {name!r}", f"use some of {', '.join(METRICS)}")
        limits[name] = float(value)
    empty_metrics = tuple(DEFAULT_EMPTY_METRICS[source] if empty_metrics is None else empty_metrics)
    for name in empty_metrics:
        if name not in METRICS:
            raise ConfigError(f"unknown IQA metric {name!r} in empty_metrics", f"use some of {', '.join(METRICS)}")
    return metrics, limits, empty_metrics


def _prepare(patterns_by_k, normalise: bool):
    """(sorted k, {k: patterns as compared}) after checking each k's shape."""
    ks = np.array(sorted(int(k) for k in patterns_by_k), dtype=np.int64)
    prepared = {}
    for k in ks:
        p = np.asarray(patterns_by_k[int(k)])
        if p.ndim != 3 or p.shape[0] != k:
            raise DataValueError(f"the patterns for k = {k} must have shape ({k}, qy, qx), got {p.shape}")
        prepared[int(k)] = _normalise(p) if normalise else p.astype(np.float64)
    return ks, prepared


def _metrics_for_shape(metrics, shape):
    """The metrics that can vote on patterns of ``shape`` (SSIM needs its 11 x 11 window)."""
    if "ssim" in metrics and min(shape) // max(1, round(min(shape) / 256)) < 11:
        if len(metrics) == 1:
            raise DataValueError(
                f"patterns of {shape[0]} x {shape[1]} pixels are smaller than the 11 x 11 SSIM window",
                "bin the patterns less or use other metrics",
            )
        log.warning("patterns of %d x %d pixels are smaller than the SSIM window; SSIM does not vote", *shape)
        metrics = [m for m in metrics if m != "ssim"]
    return metrics


def _score_metric(metric, ks, prepared, limit, check_empty, evidence):
    """({k: IQA matrix}, {k: values against an empty pattern}) of one metric; fills ``evidence``."""
    higher = HIGHER_IS_SIMILAR[metric]
    matrices, empty = {}, {}
    evidence.most[metric] = np.full(ks.size, np.nan)
    evidence.pairs[metric] = np.full((ks.size, 2), -1, dtype=np.int64)
    evidence.emptiest[metric] = np.full(ks.size, np.nan)
    evidence.emptiest_index[metric] = np.full(ks.size, -1, dtype=np.int64)
    evidence.redundant[metric] = np.zeros(ks.size, dtype=bool)
    for i, k in enumerate(ks):
        patterns = prepared[int(k)]
        matrix = iqa_matrix(patterns, metric, data_range=1.0)
        matrices[int(k)] = matrix
        value, pair = most_similar_pair(matrix, metric)
        evidence.most[metric][i] = value
        evidence.pairs[metric][i] = pair
        flagged = _is_redundant(value, metric, limit)
        if check_empty:
            values = np.atleast_1d(METRICS[metric](patterns, np.zeros_like(patterns), data_range=1.0))
            empty[int(k)] = values
            j = int(np.argmax(values) if higher else np.argmin(values))
            evidence.emptiest[metric][i] = values[j]
            evidence.emptiest_index[metric][i] = j
            flagged = flagged or _is_redundant(values[j], metric, limit)
        evidence.redundant[metric][i] = flagged
    return matrices, empty


@dataclasses.dataclass
class _Evidence:
    most: dict
    pairs: dict
    emptiest: dict
    emptiest_index: dict
    redundant: dict
    limits: dict

    def sentence(self, metric: str, i: int, k: int) -> str:
        """Why k (at index i) is redundant for ``metric``."""
        relation = ">" if HIGHER_IS_SIMILAR[metric] else "<"
        limit = _fmt(metric, self.limits[metric])
        value = self.most[metric][i]
        if _is_redundant(value, metric, self.limits[metric]):
            a, b = self.pairs[metric][i]
            return f"at k = {k}, components {a} and {b} have {_NAMES[metric]} {_fmt(metric, value)} {relation} {limit}"
        j = self.emptiest_index[metric][i]
        empty_value = _fmt(metric, self.emptiest[metric][i])
        return f"at k = {k}, component {j} is nearly empty ({_NAMES[metric]} {empty_value} {relation} {limit} against an empty pattern)"


def _fmt(metric: str, value: float) -> str:
    return f"{value:.1f} dB" if metric == "psnr" else f"{value:.3f}"


def _reason(chosen, ks, metrics, choices, evidence: _Evidence) -> str:
    agree = [m for m in metrics if choices[m] == chosen]
    names = ", ".join(_NAMES[m] for m in agree) or "none"
    listing = ", ".join(f"{_NAMES[m]} {choices[m]}" for m in metrics)
    head = f"the IQA metrics choose {listing} (median k = {chosen}; agreeing: {names})"
    span = f"k = {ks[0]}..{ks[-1]}" if ks.size > 1 else f"k = {ks[0]}"
    for metric in agree:
        if chosen == ks[0] and evidence.redundant[metric][0]:
            return f"{head}: already at the smallest k of {span} a component is redundant ({evidence.sentence(metric, 0, int(ks[0]))})"
    for metric in agree:
        after = np.flatnonzero((ks > chosen) & evidence.redundant[metric])
        if after.size:
            i = int(after[0])
            return f"{head}, the largest k before a component becomes redundant ({evidence.sentence(metric, i, int(ks[i]))})"
    if chosen == ks[-1]:
        return f"{head}: no component is redundant in {span}"
    return f"{head} in {span}"
