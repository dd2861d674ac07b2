"""The whole choice of k: K-component loss, knee, IQA decision, PCA scree for comparison."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

import numpy as np

from stemnmf.decompose import RowBlocks, pca_scree
from stemnmf.errors import ConfigError, DataValueError, StemNMFError
from stemnmf.io.dataset import Dataset4D
from stemnmf.kselect.combine import CombinedChoice, gather_evidence
from stemnmf.kselect.decide import IQADecision, decide_k
from stemnmf.kselect.knee import Knee, find_knee, range_of_interest
from stemnmf.kselect.loss import KLoss, k_component_loss
from stemnmf.kselect.patterns import representative_patterns, weighted_mean_patterns

__all__ = ["KSelection", "select_k"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class KSelection:
    """Everything behind a choice of k.

    Attributes
    ----------
    chosen_k : int
        The number of components chosen.
    knee : int
        Decision level 1: the knee of the K-component loss.
    range : numpy.ndarray of int64
        The k values compared at decision level 2 (knee +- half width).
    reason : str
        One sentence: why ``chosen_k``.
    kloss : KLoss
        The K-component loss curve and the fits behind it.
    knee_detail : Knee
        The knee finder's output (difference curve, whether confirmed).
    decision : IQADecision
        Decision level 2: IQA matrices, most similar pairs, each metric's choice.
    patterns : dict of int to numpy.ndarray
        Component patterns (k, qy, qx) in raw pattern space for each k in ``range``.
    pattern_source : str
        'representative' (basis pattern x largest weight) or 'weighted_mean'.
    pca : object or None
        :func:`stemnmf.decompose.pca_scree` result (``explained_variance_ratio``,
        ``elbow``), None when not computed.
    seconds : dict of str to float
        Time of each step.
    cao_k : int or None
        The k of Cao et al.'s two levels alone (decision level 2's median).
    combined : CombinedChoice or None
        Every kind of evidence's vote, the combined k and the plausible range
        (None with ``evidence='cao'``).
    """

    chosen_k: int
    knee: int
    range: np.ndarray
    reason: str
    kloss: KLoss
    knee_detail: Knee
    decision: IQADecision
    patterns: dict
    pattern_source: str
    pca: object | None = None
    seconds: dict = dataclasses.field(default_factory=dict)
    cao_k: int | None = None
    combined: CombinedChoice | None = None

    @property
    def votes(self) -> dict[str, int]:
        """The k each kind of evidence chose ({'knee', 'iqa'} only with ``evidence='cao'``)."""
        if self.combined is not None:
            return dict(self.combined.votes)
        return {"knee": int(self.knee), "iqa": int(self.decision.chosen_k)}

    @property
    def plausible_range(self) -> tuple[int, int]:
        """The k the evidence finds plausible (second smallest to second largest vote, with the chosen k)."""
        if self.combined is not None:
            return tuple(int(v) for v in self.combined.plausible_range)
        low, high = sorted((int(self.knee), int(self.decision.chosen_k)))
        return low, high

    @property
    def metric_choices(self) -> dict[str, int]:
        """The k each IQA metric chose."""
        return dict(self.decision.choices)

    @property
    def pca_elbow(self) -> int | None:
        """The PCA scree elbow, None when not computed."""
        elbow = getattr(self.pca, "elbow", None)
        return None if elbow is None else int(elbow)

    def components(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(W, H) of the fit with ``k`` components (default the chosen k)."""
        return self.kloss.components(self.chosen_k if k is None else k)

    def to_results(self) -> dict:
        """Results datasets under ``/kselect/`` (see docs/kselect.md for the list)."""
        out = self.kloss.to_results("/kselect")
        out["/kselect/knee"] = np.int64(self.knee)
        out["/kselect/knee_difference"] = np.asarray(self.knee_detail.difference, dtype=np.float64)
        out["/kselect/range"] = np.array([self.range[0], self.range[-1]], dtype=np.int64)
        out["/kselect/range_k"] = np.asarray(self.range, dtype=np.int64)
        out["/kselect/chosen_k"] = np.int64(self.chosen_k)
        out["/kselect/cao_k"] = np.int64(self.decision.chosen_k if self.cao_k is None else self.cao_k)
        out["/kselect/evidence"] = "cao" if self.combined is None else "combined"
        out["/kselect/votes"] = json.dumps({name: int(k) for name, k in self.votes.items()})
        out["/kselect/plausible_range"] = np.asarray(self.plausible_range, dtype=np.int64)
        if self.combined is not None:
            out.update(self.combined.to_results("/kselect"))
        out["/kselect/reason"] = str(self.reason)
        out["/kselect/metric_choices"] = json.dumps({m: int(k) for m, k in self.decision.choices.items()})
        out["/kselect/thresholds"] = json.dumps({m: float(v) for m, v in self.decision.thresholds.items()})
        out["/kselect/pattern_source"] = self.pattern_source
        out["/kselect/empty_metrics"] = json.dumps(list(self.decision.empty_metrics))
        for metric, by_k in self.decision.matrices.items():
            for k, matrix in by_k.items():
                out[f"/kselect/iqa/{metric}/{int(k)}"] = np.asarray(matrix, dtype=np.float64)
            out[f"/kselect/most_similar/{metric}"] = np.asarray(self.decision.most_similar[metric], dtype=np.float64)
            out[f"/kselect/most_similar_pair/{metric}"] = np.asarray(self.decision.pairs[metric], dtype=np.int64)
            out[f"/kselect/redundant/{metric}"] = np.asarray(self.decision.redundant[metric], dtype=np.int8)
            if metric in self.decision.empty:
                out[f"/kselect/emptiest/{metric}"] = np.asarray(self.decision.emptiest[metric], dtype=np.float64)
        for k, patterns in self.patterns.items():
            out[f"/kselect/patterns/{int(k)}"] = np.asarray(patterns, dtype=np.float32)
        if self.pca is not None:
            ratio = getattr(self.pca, "explained_variance_ratio", None)
            if ratio is not None:
                out["/kselect/pca/explained_variance_ratio"] = np.asarray(ratio, dtype=np.float64)
            if self.pca_elbow is not None:
                out["/kselect/pca/elbow"] = np.int64(self.pca_elbow)
        return out


def _pattern_shape(feature: str, pattern_shape, n_features: int, dataset) -> tuple[int, int] | None:
    if pattern_shape is not None:
        shape = tuple(int(v) for v in pattern_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ConfigError(f"pattern_shape={pattern_shape!r} must be (qy, qx)")
        return shape
    if dataset is not None and math.prod(dataset.pattern_shape) == n_features:
        return dataset.pattern_shape
    side = math.isqrt(n_features)
    if side * side == n_features:
        return side, side
    return None


def _columns_scaled_separately(X) -> bool:
    """True when every non-zero column of X spans exactly [0, 1] (per-feature min-max scaling)."""
    blocks = X if isinstance(X, RowBlocks) else RowBlocks(X)
    high = low = None
    for _, xb in blocks:
        bh, bl = xb.max(axis=0), xb.min(axis=0)
        high = bh if high is None else np.maximum(high, bh)
        low = bl if low is None else np.minimum(low, bl)
    live = high > 0
    if live.sum() < 2:
        return False
    return bool(np.allclose(high[live], 1.0, atol=1e-4) and np.allclose(low[live], 0.0, atol=1e-4))


def _pca(X, random_state):
    """The PCA scree for comparison; None (with a warning) when it cannot be computed."""
    try:
        return pca_scree(X, random_state=random_state)
    except StemNMFError as err:
        log.warning("no PCA scree for comparison: %s", err)
        return None


def _check_inputs(X, feature, pattern_shape, patterns, dataset):
    """(raw, pattern shape or None) after checking the options of :func:`select_k`."""
    raw = str(feature).lower() == "raw"
    if not raw and dataset is None:
        raise ConfigError(
            f"choosing k for feature {feature!r} needs the dataset to average raw patterns",
            "pass dataset=... (the scan the features came from) or use feature='raw'",
        )
    n_features = X.shape[1] if hasattr(X, "shape") else np.asarray(X).shape[1]
    shape = _pattern_shape(feature, pattern_shape, n_features, dataset) if raw else None
    if patterns not in ("auto", "representative", "weighted_mean"):
        raise ConfigError(f"patterns={patterns!r} is unknown", "use 'auto', 'representative' or 'weighted_mean'")
    if patterns == "weighted_mean" and dataset is None:
        raise ConfigError("weighted mean patterns need the dataset", "pass dataset=... or patterns='auto'")
    if patterns == "representative" and not raw:
        raise ConfigError(
            f"representative patterns need raw features, not {feature!r}", "use patterns='auto' or 'weighted_mean'"
        )
    if raw and (shape is None or shape[0] * shape[1] != n_features):
        problem = (
            f"cannot tell the pattern shape of {n_features} raw features"
            if shape is None
            else f"pattern_shape {shape} does not match {n_features} raw features"
        )
        if dataset is None:
            error = ConfigError if shape is None else DataValueError
            raise error(problem, "pass pattern_shape=(qy, qx) of the binned patterns")
        log.warning("%s; comparing weighted mean patterns of the dataset instead", problem)
        shape = None
    if dataset is not None and dataset.n_positions != (X.shape[0] if hasattr(X, "shape") else len(X)):
        raise DataValueError(
            f"X has {X.shape[0]} rows but the dataset has {dataset.n_positions} positions",
            "pass the dataset the features were computed from",
        )
    return raw, shape


def _component_patterns(X, kloss, ks, *, raw, shape, patterns, dataset, engine):
    """(source, {k: patterns in raw pattern space}) for decision level 2."""
    use_representative = raw and shape is not None and patterns != "weighted_mean"
    if use_representative and patterns == "auto" and dataset is not None and _columns_scaled_separately(X):
        log.warning(
            "every pixel column of the raw features was min-max scaled on its own, so the basis patterns are "
            "not patterns; comparing weighted mean patterns of the dataset instead (scale raw features globally, "
            "as Cao et al., to compare representative patterns)"
        )
        use_representative = False
    if use_representative:
        source = "representative"
        by_k = {int(k): representative_patterns(*kloss.components(k), shape) for k in ks}
    else:
        source = "weighted_mean"
        stacked = np.hstack([kloss.components(k)[0] for k in ks])
        means = weighted_mean_patterns(dataset, stacked, engine=engine)
        by_k, start = {}, 0
        for k in ks:
            by_k[int(k)] = means[start : start + int(k)]
            start += int(k)
    return source, by_k


def _knee(kloss: KLoss, sensitivity: float) -> Knee:
    """Decision level 1 (the largest k, unconfirmed, when fewer than three k were scanned)."""
    if kloss.k.size >= 3:
        return find_knee(kloss.k, kloss.loss, sensitivity=sensitivity)
    index = int(kloss.k.size - 1)
    log.warning("only %d k values scanned; no knee can be found, using the largest k", kloss.k.size)
    return Knee(float(kloss.k[index]), index, np.zeros(kloss.k.size), False)


def _reason(chosen: int, knee: Knee, decision: IQADecision, combined: CombinedChoice | None, pca_result) -> str:
    """One sentence on why ``chosen``."""
    knee_k = int(round(knee.x))
    knee_text = f"the knee of the K-component loss is at k = {knee_k}" + ("" if knee.confirmed else " (unconfirmed)")
    reason = f"k = {chosen}: {knee_text}, and {decision.reason}"
    if combined is not None:
        reason = (
            f"k = {chosen}: {combined.reason}; Cao et al.'s levels alone: k = {decision.chosen_k}, {knee_text}, "
            f"and {decision.reason}"
        )
    elbow = getattr(pca_result, "elbow", None)
    if elbow is not None:
        reason += f" (PCA scree elbow for comparison: k = {int(elbow)})"
    return reason


def _timed(seconds: dict, name: str, func, *args, **kwargs):
    """``func(*args, **kwargs)``, its time recorded as ``seconds[name]``."""
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    seconds[name] = time.perf_counter() - t0
    return out


def _cao_levels(X, kloss, seconds, *, sensitivity, half_width, raw, shape, patterns, dataset, engine, iqa_options):
    """Cao et al.'s two levels on a loss scan: (knee, range of interest, pattern source, patterns by k, decision)."""
    knee = _knee(kloss, sensitivity)
    ks = range_of_interest(int(round(knee.x)), kloss.k, half_width)
    source, by_k = _timed(
        seconds, "patterns", _component_patterns, X, kloss, ks, raw=raw, shape=shape, patterns=patterns,
        dataset=dataset, engine=engine,
    )  # fmt: skip
    decision = _timed(seconds, "iqa", decide_k, by_k, source=source, **iqa_options)
    return knee, ks, source, by_k, decision


def select_k(
    X,
    *,
    k_values=range(3, 21),
    dataset: Dataset4D | None = None,
    feature: str = "raw",
    pattern_shape=None,
    engine=None,
    random_state=None,
    solver: str = "hals",
    max_iter: int = 400,
    tol: float = 1e-4,
    warm_start: bool = True,
    half_width: int = 4,
    sensitivity: float = 1.0,
    metrics=("ssim", "psnr", "gmsd", "mdsi"),
    thresholds: dict | None = None,
    empty_metrics=None,
    patterns: str = "auto",
    pca: bool = True,
    nmf_options: dict | None = None,
    evidence: str = "combined",
    scan_shape=None,
    heldout_options: dict | None = None,
) -> KSelection:
    """Choose the number of components (Cao et al. 2025's two levels, and more evidence).

    1. The K-component loss (mean ``|X - WH|``) over ``k_values``
       (:func:`k_component_loss`) and its knee (:func:`find_knee`).
    2. For each k within ``half_width`` of the knee, the IQA matrices between
       the components' patterns (:func:`decide_k`); the median of the
       metrics' choices is Cao et al.'s k.
    3. With ``evidence='combined'``: split-half stability, held-out error and
       map coherence and (raw patterns) a noise model vote too
       and the groups of scan blocks with the same Bragg peaks
       (:func:`~stemnmf.kselect.gather_evidence`); the peak groups decide
       (without them, the noise vote, not below the smaller of the loss knee
       and the coherence; without that, the median of the loss knee, the
       held-out knee and the coherence).

    Parameters
    ----------
    X : array_like, shape (n_positions, n_features)
        Non-negative features, rows in C order of the scan.
    k_values : iterable of int, default range(3, 21)
        Cao et al.'s range; ``stemnmf run`` passes its ``--k-range`` (2:20).
    dataset : Dataset4D, optional
        The calibrated scan X came from; needed for features other than 'raw'.
    feature : str, default 'raw'
        For 'raw' the patterns compared are basis patterns x largest weight
        (shape ``pattern_shape``, default the dataset's or square); otherwise
        weighted mean patterns of ``dataset`` (one pass on ``engine``).
    pattern_shape, engine, random_state
    solver, max_iter, tol, warm_start, nmf_options
        Passed to :func:`k_component_loss`.
    half_width, sensitivity
        Range of interest (knee +- this) and the Kneedle sensitivity S.
    metrics, thresholds, empty_metrics
        Passed to :func:`decide_k` (defaults per kind of pattern).
    patterns : {'auto', 'representative', 'weighted_mean'}, default 'auto'
        'auto': representative patterns for raw features, unless every pixel
        column of X was min-max scaled on its own and the dataset is given.
    pca : bool, default True
        Also compute the PCA scree elbow for comparison.
    evidence : {'combined', 'cao'}, default 'combined'
        'cao': Cao et al.'s two levels decide, exactly as published.
    scan_shape : (int, int), optional
        (sy, sx) for the map coherence; default the dataset's.
    heldout_options : dict, optional
        Keyword arguments of :func:`~stemnmf.kselect.held_out_evidence`.

    Returns
    -------
    KSelection

    Raises
    ------
    ConfigError
        For a bad option, or features other than 'raw' without a dataset.
    DataValueError
        For bad X (negative, NaN, wrong shape).
    """
    if evidence not in ("combined", "cao"):
        raise ConfigError(f"evidence={evidence!r} is unknown", "use 'combined' or 'cao'")
    raw, shape = _check_inputs(X, feature, pattern_shape, patterns, dataset)
    seconds = {}
    fit_options = dict(solver=solver, warm_start=warm_start, max_iter=max_iter, tol=tol, nmf_options=nmf_options)
    kloss = _timed(seconds, "k_component_loss", k_component_loss, X, k_values, random_state=random_state, **fit_options)
    knee, ks, source, by_k, decision = _cao_levels(
        X, kloss, seconds, sensitivity=sensitivity, half_width=half_width, raw=raw, shape=shape,
        patterns=patterns, dataset=dataset, engine=engine,
        iqa_options=dict(metrics=metrics, thresholds=thresholds, empty_metrics=empty_metrics),
    )  # fmt: skip
    pca_result = _timed(seconds, "pca", _pca, X, random_state) if pca else None
    combined = None
    if evidence == "combined":
        if scan_shape is None and dataset is not None:
            scan_shape = dataset.scan_shape
        combined = _timed(
            seconds, "evidence", gather_evidence, X, kloss, knee_k=int(round(knee.x)), iqa_k=decision.chosen_k,
            scan_shape=scan_shape, pattern_shape=shape if source == "representative" else None, random_state=random_state,
            heldout_options=heldout_options,
        )  # fmt: skip
    cao_k = int(decision.chosen_k)
    chosen = cao_k if combined is None else int(combined.chosen_k)
    reason = _reason(chosen, knee, decision, combined, pca_result)
    log.info("chose %s", reason)
    return KSelection(
        chosen, int(round(knee.x)), ks, reason, kloss, knee, decision, by_k, source, pca_result, seconds, cao_k,
        combined,
    )  # fmt: skip
