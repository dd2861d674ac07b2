"""Scores of cluster maps against ground-truth grains (Bruefach et al. 2022, and more).

Notation: cluster maps ``C`` (c, sy, sx) of non-negative weights, a position
belonging to cluster j where ``C[j] > 0``; ground truth ``G`` (g, sy, sx), 1
where grain h is in the beam. Counts are numbers of scan positions. See
docs/analysis.md for the formulas and the choices made where the paper is terse.

Area-based (any grain against any cluster), with ``grain = any_h G[h]`` and
``cluster = any_j C[j] > 0``::

    TP = |grain & cluster|   FP = |~grain & cluster|
    FN = |grain & ~cluster|  TN = |~grain & ~cluster|
    precision_A = TP / (TP + FP)   TPR_A = TP / (TP + FN)   TNR_A = TN / (TN + FP)
    FPR_A = FP / (FP + TN)         FNR_A = FN / (FN + TP)

Grain-based: cluster j is matched to the grain ``h*(j) = argmax_h sum_i C[j, i]
G[h, i]`` (largest sum of its weights over the grain's area; among tied grains,
as when one grain lies inside another, the one of largest IoU); with the same
counts restricted to that pair (cluster j against grain h*)::

    TPR_G = TP / (TP + FN)   TNR_G = TN / (TN + FP)
    type I error = FP / (FP + TN)   type II error = FN / (FN + TP)
    precision_G = TP / (TP + FP)    IoU_G = TP / (TP + FP + FN)

Undefined ratios (0 / 0) are NaN; averages skip NaN.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from stemnmf.analysis.regions import max_feret_diameter
from stemnmf.errors import DataValueError, InputError

__all__ = [
    "Scores",
    "area_scores",
    "grain_scores",
    "dominant_grain",
    "score_clusters",
    "detection_scores",
    "RECALL_TPR",
    "RECALL_IOU",
    "MIN_VISIBLE",
]

#: A grain is recalled when some cluster matched to it covers at least this fraction of it.
RECALL_TPR = 0.5
#: A grain is found at IoU when some cluster covers it with at least this intersection over union.
RECALL_IOU = 0.5
#: A grain is visible when it is the dominant grain (the thickest in the beam) at this many positions
#: or more: the default smallest refined region.
MIN_VISIBLE = 25
#: Weight sums within this relative tolerance of the largest count as tied.
_TIE_RTOL = 1e-6


def _ratio(num, den):
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _check(cluster_maps, truth_labels):
    C = np.asarray(cluster_maps, dtype=np.float32)
    G = np.asarray(truth_labels)
    if C.ndim == 2:
        C = C[None]
    if G.ndim == 2:
        G = G[None]
    if C.ndim != 3 or G.ndim != 3:
        raise DataValueError(
            f"cluster maps {C.shape} and truth labels {G.shape} must be shaped (n, sy, sx)"
        )
    if C.shape[1:] != G.shape[1:]:
        raise InputError(
            f"the ground truth scan shape {G.shape[1:]} does not match the results {C.shape[1:]}",
            "give the truth of the scan that was analysed",
        )
    if not np.isfinite(C).all() or (C < 0).any():
        raise DataValueError("cluster maps must hold finite non-negative weights")
    return C, G > 0


def area_scores(cluster_maps, truth_labels) -> dict[str, float]:
    """Area-based scores: any grain against any cluster.

    Returns
    -------
    dict
        ``precision_A``, ``TPR_A``, ``TNR_A``, ``FPR_A``, ``FNR_A`` and the counts
        ``TP_A``, ``FP_A``, ``TN_A``, ``FN_A``.
    """
    C, G = _check(cluster_maps, truth_labels)
    grain = G.any(axis=0)
    cluster = (C > 0).any(axis=0)
    tp = int(np.count_nonzero(grain & cluster))
    fp = int(np.count_nonzero(~grain & cluster))
    fn = int(np.count_nonzero(grain & ~cluster))
    tn = int(np.count_nonzero(~grain & ~cluster))
    return dict(
        precision_A=float(_ratio(tp, tp + fp)),
        TPR_A=float(_ratio(tp, tp + fn)),
        TNR_A=float(_ratio(tn, tn + fp)),
        FPR_A=float(_ratio(fp, fp + tn)),
        FNR_A=float(_ratio(fn, fn + tp)),
        TP_A=tp,
        FP_A=fp,
        TN_A=tn,
        FN_A=fn,
    )


def grain_scores(cluster_maps, truth_labels, *, recall_tpr: float = RECALL_TPR) -> dict[str, Any]:
    """Grain-based scores: each cluster against the grain of its largest weight sum.

    Returns
    -------
    dict
        ``per_cluster``: arrays (c,) ``matched_grain`` (-1 when the cluster has no
        weight on any grain), ``TPR_G``, ``TNR_G``, ``type_I_error``,
        ``type_II_error``, ``precision_G``, ``IoU_G``; ``per_grain``: arrays (g,)
        ``best_cluster`` (the matched cluster of largest IoU, -1 if none),
        ``TPR_G``, ``precision_G``, ``IoU_G`` of that cluster (NaN if none),
        ``n_clusters`` matched and ``recalled``; the means over matched
        clusters ``TPR_G``, ``TNR_G``, ``type_I_error``, ``type_II_error``,
        ``precision_G``, ``IoU_G``; ``grain_recall`` (fraction of grains that
        are some cluster's match with TPR_G >= ``recall_tpr``);
        ``n_matched_clusters`` and ``n_unmatched_clusters``.
    """
    C, G = _check(cluster_maps, truth_labels)
    n_c, n_g = C.shape[0], G.shape[0]
    n_pos = C.shape[1] * C.shape[2]
    Cf = C.reshape(n_c, n_pos).astype(np.float64)
    Gf = G.reshape(n_g, n_pos).astype(np.float64)
    member = (Cf > 0).astype(np.float64)
    weight_on = Cf @ Gf.T  # (c, g): sum of the cluster's weights over each grain
    overlap = member @ Gf.T  # (c, g): positions in both
    size_c = member.sum(axis=1)
    size_g = Gf.sum(axis=1)
    matched = np.full(n_c, -1, np.int64)
    if n_g:
        best = weight_on.max(axis=1)
        has = best > 0
        # ties (a grain inside another gives both the same sum): the larger IoU wins
        tied = weight_on >= best[:, None] * (1 - _TIE_RTOL)
        iou = _ratio(overlap, size_c[:, None] + size_g[None, :] - overlap)
        key = np.where(tied, np.nan_to_num(iou, nan=0.0), -1.0)
        matched[has] = np.argmax(key[has], axis=1)
    ok = matched >= 0
    rows = np.arange(n_c)
    safe = np.where(ok, matched, 0)
    tp = np.full(n_c, np.nan)
    fn = np.full(n_c, np.nan)
    if n_g:
        tp = np.where(ok, overlap[rows, safe], np.nan)
        fn = np.where(ok, size_g[safe], np.nan) - tp
    fp = size_c - tp
    tn = n_pos - tp - fp - fn
    per_cluster = dict(
        matched_grain=matched.astype(np.int32),
        TPR_G=_ratio(tp, tp + fn),
        TNR_G=_ratio(tn, tn + fp),
        type_I_error=_ratio(fp, fp + tn),
        type_II_error=_ratio(fn, fn + tp),
        precision_G=_ratio(tp, tp + fp),
        IoU_G=_ratio(tp, tp + fp + fn),
    )
    best = np.full(n_g, -1, np.int32)
    g_tpr = np.full(n_g, np.nan)
    g_prec = np.full(n_g, np.nan)
    g_iou = np.full(n_g, np.nan)
    g_count = np.zeros(n_g, np.int32)
    recalled = np.zeros(n_g, bool)
    for h in range(n_g):
        mine = np.flatnonzero(matched == h)
        g_count[h] = mine.size
        if mine.size == 0:
            continue
        iou = np.nan_to_num(per_cluster["IoU_G"][mine], nan=-1.0)
        j = mine[int(np.argmax(iou))]
        best[h] = j
        g_tpr[h] = per_cluster["TPR_G"][j]
        g_prec[h] = per_cluster["precision_G"][j]
        g_iou[h] = per_cluster["IoU_G"][j]
        recalled[h] = bool(np.nanmax(per_cluster["TPR_G"][mine], initial=-1.0) >= recall_tpr)
    per_grain = dict(
        best_cluster=best, TPR_G=g_tpr, precision_G=g_prec, IoU_G=g_iou, n_clusters=g_count, recalled=recalled
    )
    names = ("TPR_G", "TNR_G", "type_I_error", "type_II_error", "precision_G", "IoU_G")
    out: dict[str, Any] = {name: _nanmean(per_cluster[name][ok]) for name in names}
    out.update(
        grain_recall=float(recalled.mean()) if n_g else float("nan"),
        n_matched_clusters=int(ok.sum()),
        n_unmatched_clusters=int((~ok).sum()),
        per_cluster=per_cluster,
        per_grain=per_grain,
    )
    return out


def _median_sizes(masks: np.ndarray) -> tuple[float, float]:
    """Median area (positions) and median maximum Feret diameter (positions) of non-empty masks."""
    masks = [m for m in masks if m.any()]
    if not masks:
        return float("nan"), float("nan")
    return float(np.median([m.sum() for m in masks])), float(np.median([max_feret_diameter(m) for m in masks]))


def detection_scores(
    cluster_maps,
    truth_labels,
    dominant: np.ndarray,
    recalled: np.ndarray,
    *,
    min_visible: int = MIN_VISIBLE,
    recall_iou: float = RECALL_IOU,
) -> dict[str, Any]:
    """Were the grains found, one cluster each, at the right size?

    Parameters
    ----------
    cluster_maps : array (c, sy, sx)
    truth_labels : array (g, sy, sx)
    dominant : array (sy, sx)
        :func:`dominant_grain`.
    recalled : array (g,) of bool
        Grains recalled at TPR_G (:func:`grain_scores`).
    min_visible : int
        A grain is visible when it dominates at least this many positions.
    recall_iou : float
        IoU at which a grain counts as found by a cluster (any cluster, matched or not).

    Returns
    -------
    dict
        ``n_visible_grains``; ``grain_recall_visible`` (recall at TPR_G over the
        visible grains); ``grain_recall_iou`` and ``grain_recall_iou_visible``
        (fractions of the grains, and of the visible ones, that some cluster
        covers at IoU >= ``recall_iou``); ``grain_recall_own`` and
        ``grain_recall_own_visible`` (the same, counting only a cluster whose
        grain of largest IoU the grain is: a region of its own, not the region
        of a grain over or around it); ``clusters_per_grain`` and
        ``clusters_per_visible_grain``; the median area and maximum Feret
        diameter (in positions) of the clusters and of the grains'
        footprints, and the relative errors ``area_median_error`` and
        ``feret_median_error`` (cluster median / grain median - 1); per grain
        ``visible`` and ``best_IoU`` (largest IoU with any cluster).
    """
    C, G = _check(cluster_maps, truth_labels)
    n_c, n_g = C.shape[0], G.shape[0]
    n_pos = C.shape[1] * C.shape[2]
    member = (C > 0).reshape(n_c, n_pos).astype(np.float64)
    Gf = G.reshape(n_g, n_pos).astype(np.float64)
    overlap = member @ Gf.T
    union = member.sum(axis=1)[:, None] + Gf.sum(axis=1)[None, :] - overlap
    iou = _ratio(overlap, union)
    best_iou = np.nanmax(np.where(np.isfinite(iou), iou, -np.inf), axis=0, initial=-np.inf) if n_g else np.zeros(0)
    best_iou = np.where(np.isfinite(best_iou), best_iou, 0.0)
    dominated = np.bincount(np.asarray(dominant).ravel()[np.asarray(dominant).ravel() >= 0], minlength=n_g)[:n_g]
    visible = dominated >= int(min_visible)
    found = best_iou >= recall_iou
    # a cluster of its own: a cluster at IoU >= recall_iou whose grain of largest IoU this grain is
    own = np.zeros(n_g, bool)
    if n_c and n_g:
        safe = np.nan_to_num(iou, nan=-1.0)
        owner = safe.argmax(axis=1)
        hit = safe[np.arange(n_c), owner] >= recall_iou
        own[owner[hit]] = True
    recalled = np.asarray(recalled, bool)

    def share(flags, among):
        return float(flags[among].mean()) if among.any() else float("nan")

    everyone = np.ones(n_g, bool)
    c_area, c_feret = _median_sizes(C > 0)
    g_area, g_feret = _median_sizes(G)
    n_visible = int(visible.sum())
    return dict(
        n_visible_grains=n_visible,
        grain_recall_visible=share(recalled, visible),
        grain_recall_iou=share(found, everyone),
        grain_recall_iou_visible=share(found, visible),
        grain_recall_own=share(own, everyone),
        grain_recall_own_visible=share(own, visible),
        clusters_per_grain=float(_ratio(n_c, n_g)),
        clusters_per_visible_grain=float(_ratio(n_c, n_visible)),
        cluster_area_median=c_area,
        grain_area_median=g_area,
        area_median_error=float(_ratio(c_area, g_area)) - 1.0,
        cluster_feret_median=c_feret,
        grain_feret_median=g_feret,
        feret_median_error=float(_ratio(c_feret, g_feret)) - 1.0,
        per_grain=dict(visible=visible, best_IoU=best_iou, own=own),
    )


def dominant_grain(truth_labels, thickness=None) -> np.ndarray:
    """The grain that dominates each position, (sy, sx) int32, -1 where none.

    With ``thickness`` (g, sy, sx), the grain of largest path length among
    those present; otherwise the lowest-numbered grain present.
    """
    G = np.asarray(truth_labels) > 0
    if G.ndim != 3:
        raise DataValueError(f"truth labels must be shaped (n_grains, sy, sx), got {G.shape}")
    if G.shape[0] == 0:
        return np.full(G.shape[1:], -1, np.int32)
    if thickness is not None:
        t = np.asarray(thickness, np.float64)
        if t.shape != G.shape:
            raise DataValueError(f"thickness {t.shape} does not match the labels {G.shape}")
        key = np.where(G, t, -np.inf)
    else:
        key = np.where(G, -np.arange(G.shape[0], dtype=np.float64)[:, None, None], -np.inf)
    best = np.argmax(key, axis=0).astype(np.int32)
    return np.where(G.any(axis=0), best, -1).astype(np.int32)


@dataclasses.dataclass
class Scores:
    """All scores of one set of cluster maps against ground truth.

    Attributes
    ----------
    clusters : str
        Which cluster maps were scored (``'regions'`` or ``'components'``).
    area : dict
        :func:`area_scores`.
    grain : dict
        :func:`grain_scores` (means, recall, per-cluster and per-grain arrays).
    ari : float
        Adjusted Rand index between the labels and the dominant grain.
    ari_regions : float
        The same for the region labels (NaN without regions).
    n_clusters, n_grains : int
    detection : dict
        :func:`detection_scores` (visible grains, recall at IoU, counts, sizes).
    """

    clusters: str
    area: dict
    grain: dict
    ari: float
    ari_regions: float
    n_clusters: int
    n_grains: int
    detection: dict = dataclasses.field(default_factory=dict)

    def _detection_scalars(self) -> dict[str, Any]:
        return {k: v for k, v in self.detection.items() if k != "per_grain"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (arrays as lists, NaN as None)."""
        g = self.grain
        summary = {k: g[k] for k in ("TPR_G", "TNR_G", "type_I_error", "type_II_error", "precision_G", "IoU_G",
                                     "n_matched_clusters", "n_unmatched_clusters")}
        data = dict(
            clusters=self.clusters,
            n_clusters=self.n_clusters,
            n_grains=self.n_grains,
            area_based=self.area,
            grain_based=summary,
            grain_recall=g["grain_recall"],
            ARI=self.ari,
            ARI_regions=self.ari_regions,
            detection=self._detection_scalars(),
            per_cluster=g["per_cluster"],
            per_grain={**g["per_grain"], **self.detection.get("per_grain", {})},
        )
        return _jsonable(data)

    def to_results(self, prefix: str = "/scores") -> dict[str, Any]:
        """``{path: array}`` under ``prefix``: scalars, per-cluster and per-grain arrays.

        ``summary`` holds the scalar scores as one JSON object; ``tpr_g``,
        ``precision_g`` and ``iou_g`` repeat the per-cluster arrays for the report.
        """
        out: dict[str, Any] = {f"{prefix}/clusters": self.clusters, f"{prefix}/summary": json.dumps(self.summary())}
        for name, value in self.area.items():
            out[f"{prefix}/area/{name}"] = np.int64(value) if isinstance(value, int) else np.float32(value)
        for name in ("TPR_G", "TNR_G", "type_I_error", "type_II_error", "precision_G", "IoU_G"):
            out[f"{prefix}/grain/{name}"] = np.float32(self.grain[name])
        out[f"{prefix}/grain/n_matched_clusters"] = np.int64(self.grain["n_matched_clusters"])
        out[f"{prefix}/grain/n_unmatched_clusters"] = np.int64(self.grain["n_unmatched_clusters"])
        out[f"{prefix}/grain_recall"] = np.float32(self.grain["grain_recall"])
        out[f"{prefix}/ari"] = np.float32(self.ari)
        out[f"{prefix}/ari_regions"] = np.float32(self.ari_regions)
        for name, value in self.grain["per_cluster"].items():
            out[f"{prefix}/per_cluster/{name}"] = _store(value)
        for name, value in {**self.grain["per_grain"], **self.detection.get("per_grain", {})}.items():
            out[f"{prefix}/per_grain/{name}"] = _store(value)
        for name, value in self._detection_scalars().items():
            out[f"{prefix}/detection/{name}"] = np.int64(value) if isinstance(value, int) else np.float32(value)
        for name in ("TPR_G", "precision_G", "IoU_G"):
            out[f"{prefix}/{name.lower()}"] = _store(self.grain["per_cluster"][name])
        return out

    def summary(self) -> dict[str, Any]:
        """The scalar scores in one flat JSON-ready dict."""
        g = self.grain
        flat = {k: v for k, v in self.area.items() if isinstance(v, float)}
        for name in ("TPR_G", "TNR_G", "type_I_error", "type_II_error", "precision_G", "IoU_G"):
            flat[name] = g[name]
        flat.update(
            grain_recall=g["grain_recall"],
            ARI=self.ari,
            ARI_regions=self.ari_regions,
            n_clusters=self.n_clusters,
            n_grains=self.n_grains,
            n_matched_clusters=g["n_matched_clusters"],
        )
        flat.update(self._detection_scalars())
        return _jsonable(flat)


def _store(value):
    value = np.asarray(value)
    if value.dtype.kind == "f":
        return value.astype(np.float32)
    return value


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ari(labels, dominant) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(dominant).ravel(), np.asarray(labels).ravel()))


def score_clusters(
    cluster_maps,
    truth,
    *,
    labels=None,
    region_labels=None,
    clusters: str = "clusters",
    recall_tpr: float = RECALL_TPR,
    min_visible: int = MIN_VISIBLE,
    recall_iou: float = RECALL_IOU,
) -> Scores:
    """Every score of cluster maps against ground truth.

    Parameters
    ----------
    cluster_maps : array (c, sy, sx)
        Non-negative weights; a position belongs to cluster j where ``> 0``.
    truth : Truth or array (g, sy, sx)
        Ground truth (:class:`stemnmf.io.Truth`, or its labels).
    labels : array (sy, sx) of int, optional
        Hard labels for the adjusted Rand index (default: the argmax of the
        cluster maps, -1 where all are 0).
    region_labels : array (sy, sx) of int, optional
        Region labels for a second adjusted Rand index.
    clusters : str
        Name of the scored maps, stored with the scores.
    recall_tpr, min_visible, recall_iou
        See :func:`grain_scores` and :func:`detection_scores`.

    Returns
    -------
    Scores
    """
    if hasattr(truth, "labels"):
        G, thickness = truth.labels, getattr(truth, "thickness", None)
    else:
        G, thickness = np.asarray(truth), None
    C, Gb = _check(cluster_maps, G)
    dominant = dominant_grain(Gb, thickness)
    if labels is None:
        labels = np.where(C.max(axis=0) > 0, C.argmax(axis=0), -1) if C.shape[0] else np.full(C.shape[1:], -1)
    labels = np.asarray(labels)
    if labels.shape != dominant.shape:
        raise InputError(
            f"the ground truth scan shape {dominant.shape} does not match the labels {labels.shape}",
            "give the truth of the scan that was analysed",
        )
    ari_regions = float("nan")
    if region_labels is not None:
        ari_regions = _ari(region_labels, dominant)
    grain = grain_scores(C, Gb, recall_tpr=recall_tpr)
    detection = detection_scores(
        C, Gb, dominant, grain["per_grain"]["recalled"], min_visible=min_visible, recall_iou=recall_iou
    )
    return Scores(
        clusters=clusters,
        area=area_scores(C, Gb),
        grain=grain,
        ari=_ari(labels, dominant),
        ari_regions=ari_regions,
        n_clusters=int(C.shape[0]),
        n_grains=int(Gb.shape[0]),
        detection=detection,
    )
