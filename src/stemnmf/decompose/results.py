"""The decomposition's entries of the results file."""

from __future__ import annotations

import json

import numpy as np
from sklearn.utils.validation import check_is_fitted

from stemnmf.errors import DataValueError

__all__ = ["to_results"]


def to_results(model, W=None, scan_shape: tuple[int, int] | None = None) -> dict:
    """``{path: value}`` for a fitted :class:`NMF` or :class:`IterativeNMF` (and its W).

    Parameters
    ----------
    model : NMF or IterativeNMF
        Fitted.
    W : (n_positions, k) array, optional
        The weights returned by ``fit_transform`` or ``transform``; with
        ``scan_shape`` they are stored as ``/components/maps``.
    scan_shape : (sy, sx), optional
        With ``sy * sx == n_positions`` (rows of X in C order of the scan).

    Returns
    -------
    dict
        ``/components/patterns`` (k, n_features) float32; with W and
        ``scan_shape`` also ``/components/maps`` (k, sy, sx) float32; under
        ``/decompose/``: ``method``, ``params`` (JSON), ``reconstruction_err``,
        ``mean_abs_err``, ``n_iter``. For IterativeNMF also
        ``/decompose/restart_errors`` (n_restarts,), ``restart_seeds``,
        ``best_restart``, ``initial_components``, ``merge_threshold``,
        ``merge_history`` (JSON: per restart, a list of [k, groups]),
        ``final_history`` (JSON: the same for the winner's refit on every
        position), ``restart_positions`` (positions the restarts saw),
        ``recovered`` (int64: the host component of each recovered grain),
        ``pruned`` (int64: the components dropped as more noise than structure) and
        ``/components/peak_agreement`` (k, k) float32, with a
        scree ``/decompose/scree/explained_variance_ratio`` (K,) and
        ``/decompose/scree/elbow``, and the choice of k: ``/kselect/chosen_k``
        (int64) and ``/kselect/reason``.
    """
    check_is_fitted(model, "components_")
    k = model.components_.shape[0]
    params = {key: value for key, value in model.get_params().items() if _jsonable(value)}
    out = {
        "/components/patterns": np.asarray(model.components_, dtype=np.float32),
        "/decompose/method": type(model).__name__,
        "/decompose/params": json.dumps(params, sort_keys=True),
        "/decompose/reconstruction_err": float(model.reconstruction_err_),
        "/decompose/mean_abs_err": float(model.mean_abs_err_),
        "/decompose/n_iter": int(model.n_iter_),
    }
    if W is not None or scan_shape is not None:
        if W is None or scan_shape is None:
            raise DataValueError("to_results needs both W and scan_shape for /components/maps", "pass both or neither")
        W = np.asarray(W, dtype=np.float32)
        sy, sx = (int(s) for s in scan_shape)
        if W.shape != (sy * sx, k):
            raise DataValueError(
                f"W has shape {W.shape}; expected ({sy * sx}, {k}) for scan {sy} x {sx} and {k} components",
                "pass the W returned by this model's fit_transform for this scan",
            )
        out["/components/maps"] = np.ascontiguousarray(W.T.reshape(k, sy, sx))
    if hasattr(model, "merge_history_"):
        out["/decompose/restart_errors"] = np.asarray(model.restart_errors_, dtype=np.float64)
        out["/decompose/restart_seeds"] = np.asarray(model.restart_seeds_, dtype=np.int64)
        out["/decompose/best_restart"] = int(model.best_restart_)
        out["/decompose/initial_components"] = int(model.initial_components_)
        out["/decompose/merge_threshold"] = float(model.merge_threshold_)
        history = [[[int(k_), [list(map(int, g)) for g in groups]] for k_, groups in run] for run in model.merge_history_]
        out["/decompose/merge_history"] = json.dumps(history)
        if hasattr(model, "final_history_"):
            final = [[int(k_), [list(map(int, g)) for g in groups]] for k_, groups in model.final_history_]
            out["/decompose/final_history"] = json.dumps(final)
            out["/decompose/restart_positions"] = int(model.restart_positions_)
        if hasattr(model, "recovered_"):
            out["/decompose/recovered"] = np.asarray(model.recovered_, dtype=np.int64)
        if hasattr(model, "pruned_"):
            out["/decompose/pruned"] = np.asarray(model.pruned_, dtype=np.int64)
        if hasattr(model, "peak_agreement_"):
            out["/components/peak_agreement"] = np.asarray(model.peak_agreement_, dtype=np.float32)
        if model.scree_ is not None:
            out["/decompose/scree/explained_variance_ratio"] = np.asarray(
                model.scree_.explained_variance_ratio, dtype=np.float64
            )
            out["/decompose/scree/elbow"] = int(model.scree_.elbow)
        start = (
            f"{model.initial_components_} = {model.scree_factor} x PCA scree elbow {model.scree_.elbow}"
            if model.scree_ is not None
            else f"{model.initial_components_} given"
        )
        out["/kselect/chosen_k"] = np.int64(k)
        pattern = getattr(model, "pattern_threshold", None)
        link = f"maps correlated at >= {model.merge_threshold_:g}"
        if pattern is not None:
            link += f" (or patterns at cosine >= {pattern:g})"
        if getattr(model, "merge_rule", "transitive") == "evidence":
            limit = getattr(model, "link_tolerance", None)
            if limit is not None:
                link += f" within {limit:g} noise gates"
                agreement = getattr(model, "peak_agreement", None)
                if agreement is not None:
                    link += f" or with patterns whose peaks agree >= {agreement:g}"
            link = (
                f"pairs {link}, or costing no more than {model.merge_tolerance:g} x the noise, or of one footprint "
                "(complete linkage)"
            )
        else:
            link += " (transitively)"
        out["/kselect/reason"] = (
            f"iterative merging NMF: from k = {start}, {link} merged until none; best of "
            f"{len(model.restart_errors_)} restarts (restart {model.best_restart_}) refitted on every position has k = {k}"
        )
        pruned = len(getattr(model, "pruned_", ()))
        if pruned:
            out["/kselect/reason"] += (
                f", after {pruned} component{'s' if pruned > 1 else ''} whose map is noise "
                f"(Moran's I < {model.min_coherence:g}) dropped"
            )
    return out


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True
