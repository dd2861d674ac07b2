"""Iterative merging NMF (Allen et al. 2021, as used by Bruefach, Ophus & Scott 2022).

1. k0 = ``scree_factor`` x the elbow of the PCA scree of X (or ``initial_components``).
2. Factorise X with k components (random start, one seed per restart).
3. Correlate the component maps (columns of W, Pearson). Two components are
   linked when their maps correlate at or above the threshold (the paper's
   rule) or, with ``pattern_threshold``, when their patterns (rows of H) have
   a cosine similarity at or above it and their maps are not anti-correlated
   (the parts of one grain that thickness fringes split apart). Every group
   of linked components is merged (transitively, union-find): the maps are
   summed and the patterns averaged with the maps' total weights, which keeps
   W H exactly when the maps of a group are proportional.
4. Refit X from the merged factors with the reduced k; repeat 3-4 until no pair
   is linked or k = 1.
5. Over ``n_restarts`` restarts keep the model with the lowest ||X - WH||_F.
   Restarts fit to ``restart_tol`` and, on a large scan, on a seeded random
   subset of ``restart_positions`` positions; the winner is then refitted on
   every position to ``tol`` (with 3-4 again until no pair is linked).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from stemnmf.decompose._random import check_random_state, qb, random_init
from stemnmf.decompose.blocks import RowBlocks, Summary, as_blocks, blas_limit, default_threads
from stemnmf.decompose.params import check_params
from stemnmf.decompose.compressed import COMPRESS_OVERSAMPLE, COMPRESS_POWER_ITER
from stemnmf.decompose.nmf import (
    _Setup,
    exact_errors,
    solve,
    solve_compressed,
    solve_w,
)
from stemnmf.decompose.evidence import (
    FOOTPRINT_THRESHOLD,
    GATE_FRACTION,
    MERGE_TOLERANCE,
    complete_linkage_groups,
    merge_evidence,
    merge_rank_one,
    noise_footprints,
    pattern_noise,
    pattern_peaks,
    peak_agreement,
)
from stemnmf.decompose.absorb import ABSORB_MIN_NEW, piece_evidence, piece_groups
from stemnmf.decompose.prune import MIN_COHERENCE, incoherent, refit_patterns
from stemnmf.decompose.recover import RECOVER_ROUNDS, recover_candidates
from stemnmf.decompose.results import to_results
from stemnmf.decompose.scree import pca_scree
from stemnmf.errors import ConfigError, DataValueError

__all__ = [
    "IterativeNMF", "MERGE_THRESHOLDS", "MERGE_RULES", "MergeRule", "merge_groups", "merge_components", "recover_grains",
    "absorb_pieces", "prune_components",
]

log = logging.getLogger(__name__)

#: Default correlation thresholds per feature: AA and RV the middle of the ranges
#: Bruefach et al. (2022) report (0.4-0.5, 0.3-0.5); BD above their 0.18-0.25, where
#: our BD maps chain different grains together (docs/nmf.md).
MERGE_THRESHOLDS = {"bd": 0.3, "aa": 0.45, "rv": 0.4}
#: Cosine similarity of two component patterns at or above which they are
#: linked (when their maps are not anti-correlated); see docs/nmf.md.
PATTERN_THRESHOLD = 0.5
#: Evidence rule: links merge within this many noise gates, or when the patterns' peaks agree (docs/nmf.md).
LINK_TOLERANCE = 3.0
#: Evidence rule: Dice agreement of the patterns' peaks at which a link merges whatever it costs.
PEAK_AGREEMENT = 0.5
#: Relative tolerance of the fits inside the restarts (the winner is refitted to ``tol``).
RESTART_TOL = 1e-3
#: Restarts see at most this many positions (a seeded random subset of a larger scan).
RESTART_POSITIONS = 5_000
#: How linked components merge: by evidence (default) or transitively (the paper).
MERGE_RULES = ("evidence", "transitive")
#: Points on the PCA scree curve.
SCREE_COMPONENTS = 50


@dataclasses.dataclass(frozen=True)
class MergeRule:
    """Settings of the evidence-based merge (:func:`stemnmf.decompose.evidence.merge_evidence`)."""

    tolerance: float = MERGE_TOLERANCE
    footprint_threshold: float | None = FOOTPRINT_THRESHOLD
    link_tolerance: float | None = None
    peak_agreement: float | None = None
    limit_footprints: bool = True


def merge_groups(
    Wt: np.ndarray, threshold: float, H: np.ndarray | None = None, pattern_threshold: float | None = None
) -> list[list[int]]:
    """Partition components into groups of linked components.

    Two components are linked when their maps correlate at or above
    ``threshold``, or, given ``H`` and ``pattern_threshold``, when their
    patterns have a cosine similarity at or above ``pattern_threshold`` and
    their maps a correlation of at least 0.

    Parameters
    ----------
    Wt : (k, n_positions)
        Component maps as rows (W transposed).
    threshold : float
        Pearson correlation at or above which two maps are linked.
    H : (k, n_features), optional
        Component patterns.
    pattern_threshold : float, optional
        Cosine similarity of patterns at or above which two components whose
        maps are not anti-correlated are linked. None: maps only (the paper).

    Returns
    -------
    list of list of int
        Every component in exactly one group (sorted; groups ordered by their
        first member). Groups are the connected components of the links, so
        merging is transitive. A map with no variance is linked to nothing.
    """
    k = Wt.shape[0]
    parent = list(range(k))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if k > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.corrcoef(Wt.astype(np.float64))
        corr = np.nan_to_num(corr, nan=-np.inf)
        linked = corr >= threshold
        if H is not None and pattern_threshold is not None:
            H64 = np.asarray(H, dtype=np.float64)
            norms = np.linalg.norm(H64, axis=1)
            unit = H64 / np.where(norms > 0, norms, 1.0)[:, None]
            linked |= (unit @ unit.T >= pattern_threshold) & (corr >= 0)
        linked = np.triu(linked, 1)
        for i, j in zip(*np.nonzero(linked)):
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(k):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def merge_components(Wt: np.ndarray, H: np.ndarray, groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Merge each group into one component: maps summed, patterns averaged with the maps' weights.

    If the maps of a group are proportional (w_g = a_g u), sum_g w_g h_g equals
    (sum_g w_g)(sum_g a_g h_g / sum_g a_g), so the product W H is unchanged.

    Returns
    -------
    Wt : (len(groups), n) float32
    H : (len(groups), m) float32
    """
    Wt_new = np.empty((len(groups), Wt.shape[1]), dtype=np.float32)
    H_new = np.empty((len(groups), H.shape[1]), dtype=np.float32)
    for i, group in enumerate(groups):
        maps = Wt[group].astype(np.float64)
        weight = maps.sum(axis=1)
        Wt_new[i] = maps.sum(axis=0)
        if weight.sum() > 0:
            H_new[i] = weight @ H[group].astype(np.float64) / weight.sum()
        else:
            H_new[i] = H[group].mean(axis=0)
    return Wt_new, H_new


def _merge_loop(
    blocks: RowBlocks,
    summary: Summary,
    Wt: np.ndarray,
    H: np.ndarray,
    threshold: float,
    pattern_threshold: float | None,
    setup: _Setup,
    compressed: tuple | None = None,
    label: str = "",
    rule: MergeRule | None = None,
) -> tuple[np.ndarray, np.ndarray, list, int]:
    """Fit -> merge -> refit from the merged factors, until nothing more merges.

    ``rule`` None merges linked components transitively (:func:`merge_groups`);
    otherwise by evidence (:mod:`stemnmf.decompose.evidence`). Returns the
    final (Wt, H), the history (one ``(k, groups)`` per fit) and the solver
    iterations.
    """
    history = []
    n_iter = 0
    while True:
        k = H.shape[0]
        if compressed is not None:
            result = solve_compressed(*compressed, Wt, H, setup)
            Wt[:, summary.zero_rows] = 0
        else:
            result = solve(blocks, Wt, H, setup, summary=summary)
        n_iter += result.n_iter
        alive = Wt.any(axis=1) & H.any(axis=1)
        dead = [int(j) for j in np.flatnonzero(~alive)]
        live = np.flatnonzero(alive)
        if not len(live):
            groups = []
        elif rule is None:
            groups = [[int(live[i]) for i in g] for g in merge_groups(Wt[live], threshold, H[live], pattern_threshold)]
        else:
            WtX, row_sq, col_sq, local = _residual_pass(blocks, Wt[live], H[live], setup.threads)
            evidence = merge_evidence(
                Wt[live], H[live], WtX, row_sq, col_sq, footprint_col_sq=local, threshold=threshold,
                pattern_threshold=pattern_threshold,
                tolerance=rule.tolerance, footprint_threshold=rule.footprint_threshold,
                link_tolerance=rule.link_tolerance, peak_agreement_threshold=rule.peak_agreement,
                limit_footprints=rule.limit_footprints,
            )
            groups = [[int(live[i]) for i in g] for g in complete_linkage_groups(evidence.accepted, evidence.cost)]
        merged = [tuple(g) for g in groups if len(g) > 1]
        history.append((k, merged + [(j,) for j in dead]))
        if (not merged and not dead) or k == 1 or not groups:
            break
        Wt, H = merge_components(Wt, H, groups) if rule is None else merge_rank_one(Wt, H, groups)
        log.debug("%s: k %d -> %d", label, k, len(groups))
    return Wt, H, history, n_iter


def _residual_pass(blocks: RowBlocks, Wt: np.ndarray, H: np.ndarray, n_threads: int):
    """One pass over X: ``W^T X`` (k, m), the squared residual norms of the rows (n,) and columns (m,),
    and the squared column residuals summed over each map's noise footprint (k, m)."""
    k, n = Wt.shape
    m = H.shape[1]
    top = Wt.max(axis=1) if n else np.zeros(k, Wt.dtype)

    def work(start, X_b):
        Wt_b = Wt[:, start : start + len(X_b)]
        R = X_b - Wt_b.T @ H
        R *= R
        inside = noise_footprints(Wt_b, GATE_FRACTION, top=top).astype(np.float32)
        return (
            start,
            (Wt_b @ X_b).astype(np.float64),
            R.sum(axis=1, dtype=np.float64),
            R.sum(axis=0, dtype=np.float64),
            (inside @ R).astype(np.float64),
        )

    WtX = np.zeros((k, m))
    row_sq = np.zeros(n)
    col_sq = np.zeros(m)
    local = np.zeros((k, m))
    for start, part, rows, cols, local_part in blocks.map(work, n_threads):
        WtX += part
        row_sq[start : start + len(rows)] = rows
        col_sq += cols
        local += local_part
    return WtX, row_sq, col_sq, local


def _refit_setup(X, Wt, H, max_iter, tol, n_threads):
    """(blocks, their summary, a HALS set-up, Wt, H as float32) for refitting a model on ``X``."""
    blocks = as_blocks(X)
    setup = _Setup(loss="frobenius", solver="hals", max_iter=int(max_iter), tol=float(tol))
    if n_threads is not None:
        setup.n_threads = int(n_threads)
    return blocks, blocks.summary(), setup, np.asarray(Wt, np.float32), np.asarray(H, np.float32)


def recover_grains(X, Wt: np.ndarray, H: np.ndarray, scan_shape, *, max_iter: int = 200, tol: float = 1e-4,
                   n_threads: int | None = None, rounds: int = RECOVER_ROUNDS, **tests) -> tuple[np.ndarray, np.ndarray, list]:
    """Split off the grains that the merges left inside other components, then refit (docs/nmf.md).

    Every component is split in two on its footprint and a part is kept as a
    new component when the data support it
    (:func:`stemnmf.decompose.recover.recover_candidates`, whose tests
    ``tests`` sets); the model with the kept parts appended is refitted once
    by HALS and components that come out all zero are dropped. This is
    repeated on the refitted model (every component, new ones included) until
    a round keeps nothing or ``rounds`` rounds have run.

    Parameters
    ----------
    X : (n, m) array or RowBlocks
        The data, rows in C order of ``scan_shape``.
    Wt : (k, n), H : (k, m)
        The fit.
    scan_shape : (rows, cols)
    max_iter, tol : int, float
        Of the refit.
    rounds : int, default RECOVER_ROUNDS
        Rounds of splitting, at the most.

    Returns
    -------
    Wt, H : float32
        The new fit (unchanged when nothing was kept).
    kept : list of Recovery
        The parts kept, in order; ``host`` is the component split, numbered
        in the model of its round.
    """
    blocks, summary, setup, Wt, H = _refit_setup(X, Wt, H, max_iter, tol, n_threads)
    kept_all = []
    for _ in range(int(rounds)):
        _, row_sq, col_sq, _ = _residual_pass(blocks, Wt, H, setup.threads)
        kept = [c for c in recover_candidates(blocks, Wt, H, tuple(scan_shape), col_sq, row_sq, **tests) if c.kept]
        if not kept:
            break
        Wt = np.ascontiguousarray(np.vstack([Wt, np.stack([c.w for c in kept])]), dtype=np.float32)
        H = np.ascontiguousarray(np.vstack([H, np.stack([c.h for c in kept])]), dtype=np.float32)
        Wt[:, summary.zero_rows] = 0
        H[:, summary.zero_cols] = 0
        solve(blocks, Wt, H, setup, summary=summary)
        alive = Wt.any(axis=1) & H.any(axis=1)
        log.info("recovery round: %d of %d components split off a grain; k %d -> %d", len(kept),
                 len(alive) - len(kept), len(alive) - len(kept), int(alive.sum()))
        Wt, H = np.ascontiguousarray(Wt[alive]), np.ascontiguousarray(H[alive])
        kept_all += kept
    return Wt, H, kept_all


def absorb_pieces(X, Wt: np.ndarray, H: np.ndarray, scan_shape, *, max_iter: int = 200, tol: float = 1e-4,
                  n_threads: int | None = None, min_new: int = ABSORB_MIN_NEW) -> tuple[np.ndarray, np.ndarray, list]:
    """Join every component that is a piece of a touching component's grain to it, then refit (docs/nmf.md).

    A component whose pattern's peaks the data of a touching component all show
    (fewer than ``min_new`` missing) is a thickness-fringe piece of that grain
    (:mod:`stemnmf.decompose.absorb`); each group of a grain and its pieces
    becomes one component (:func:`~stemnmf.decompose.evidence.merge_rank_one`)
    and the model is refitted once by HALS.

    Returns
    -------
    Wt, H : float32
        The new fit (unchanged when no component is a piece).
    groups : list of list of int
        The components of the fit given that became each new one.
    """
    blocks, summary, setup, Wt, H = _refit_setup(X, Wt, H, max_iter, tol, n_threads)
    _, _, col_sq, _ = _residual_pass(blocks, Wt, H, setup.threads)
    with blas_limit(1):
        peaks, new, contact = piece_evidence(blocks, Wt, H, tuple(scan_shape), col_sq)
    top = Wt.max(axis=1, initial=0.0)
    sizes = ((Wt >= 0.2 * top[:, None]) & (top[:, None] > 0)).sum(axis=1)
    groups = piece_groups(peaks, new, contact, sizes, min_new=int(min_new))
    if len(groups) == Wt.shape[0]:
        return Wt, H, groups
    Wt, H = merge_rank_one(Wt, H, groups)
    Wt[:, summary.zero_rows] = 0
    H[:, summary.zero_cols] = 0
    solve(blocks, Wt, H, setup, summary=summary)
    alive = Wt.any(axis=1) & H.any(axis=1)
    log.info("absorption: %d components were pieces of another's grain; k %d -> %d", len(peaks) - len(groups),
             len(peaks), int(alive.sum()))
    groups = [g for g, keep in zip(groups, alive) if keep]
    return np.ascontiguousarray(Wt[alive]), np.ascontiguousarray(H[alive]), groups


def prune_components(X, Wt: np.ndarray, H: np.ndarray, scan_shape, *, min_coherence: float = MIN_COHERENCE,
                     refit: str = "patterns", max_iter: int = 200, tol: float = 1e-4,
                     n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Drop the components whose map is more noise than structure, then refit (docs/nmf.md).

    A component whose map's spatial coherence (Moran's I,
    :func:`~stemnmf.decompose.prune.spatial_coherence`) is below
    ``min_coherence`` is dropped (none when every map is:
    :func:`~stemnmf.decompose.prune.incoherent`).

    Parameters
    ----------
    X : (n, m) array or RowBlocks
        The data, rows in C order of ``scan_shape``.
    Wt : (k, n), H : (k, m)
        The fit.
    scan_shape : (rows, cols)
    min_coherence : float, default MIN_COHERENCE
    refit : {'patterns', 'full'}, default 'patterns'
        'patterns': the kept maps stay as fitted and the kept patterns are
        refitted by non-negative least squares
        (:func:`~stemnmf.decompose.prune.refit_patterns`, one pass over X;
        nothing changes when none is dropped); 'full': the kept factors are
        refitted by HALS (also when none was dropped) and components that
        come out all zero are dropped too.
    max_iter, tol : int, float
        Of the refit.

    Returns
    -------
    Wt, H : float32
        The new fit.
    dropped : list of int
        The components of the fit given that were dropped.
    """
    if refit not in ("full", "patterns"):
        raise ConfigError(f"refit={refit!r} is not known", "give 'full' or 'patterns'")
    blocks, summary, setup, Wt, H = _refit_setup(X, Wt, H, max_iter, tol, n_threads)
    low = incoherent(Wt, tuple(scan_shape), min_coherence)
    if refit == "patterns" and not low.any():
        return Wt, H, []
    keep = np.flatnonzero(~low)
    Wt, H = np.ascontiguousarray(Wt[keep]), np.ascontiguousarray(H[keep])
    if refit == "patterns":
        H = refit_patterns(Wt, H, _residual_pass(blocks, Wt, H, setup.threads)[0], max_iter=max_iter, tol=tol)
    else:
        Wt[:, summary.zero_rows] = 0
        H[:, summary.zero_cols] = 0
        solve(blocks, Wt, H, setup, summary=summary)
        alive = Wt.any(axis=1) & H.any(axis=1)
        Wt, H, keep = np.ascontiguousarray(Wt[alive]), np.ascontiguousarray(H[alive]), keep[alive]
    dropped = sorted(set(range(len(low))) - {int(j) for j in keep})
    log.info("pruning: %d of %d components have maps more noise than structure; k %d -> %d (%s refit)",
             int(low.sum()), len(low), len(low), len(keep), refit)
    return Wt, H, dropped


def _restart(
    blocks: RowBlocks,
    summary: Summary,
    k0: int,
    threshold: float,
    setup: _Setup,
    seed: int,
    compressed: tuple | None,
    pattern_threshold: float | None = None,
    rule: MergeRule | None = None,
) -> dict:
    """One restart: random start from ``seed``, then fit -> merge -> refit until stable."""
    rng = np.random.default_rng(seed)
    Wt, H = random_init(summary, k0, rng)
    Wt[:, summary.zero_rows] = 0
    H[:, summary.zero_cols] = 0
    Wt, H, history, n_iter = _merge_loop(
        blocks, summary, Wt, H, threshold, pattern_threshold, setup, compressed, label=f"restart seed {seed}", rule=rule
    )
    errors = exact_errors(blocks, Wt, H, n_threads=setup.threads, manage_blas=setup.manage_blas)
    return {"Wt": Wt, "H": H, "error": errors["frobenius"], "mean_abs": errors["mean_abs"], "history": history, "n_iter": n_iter}


def _row_subset(blocks: RowBlocks, rows: np.ndarray, n_features: int) -> np.ndarray:
    """The rows ``rows`` (sorted) of X, gathered in one pass over the blocks (float32)."""
    out = np.empty((len(rows), n_features), dtype=np.float32)
    done = 0
    for start, block in blocks:
        lo = np.searchsorted(rows, start)
        hi = np.searchsorted(rows, start + len(block))
        if hi > lo:
            out[done : done + hi - lo] = block[rows[lo:hi] - start]
            done += hi - lo
    return out


class IterativeNMF(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Iterative merging NMF with seeded restarts (Allen et al. 2021; Bruefach et al. 2022).

    Parameters
    ----------
    initial_components : int, optional
        k of the first fit. None: ``scree_factor`` x the elbow of the PCA scree
        (:func:`pca_scree` with 50 components), at most min(n_positions, n_features).
    scree_factor : int, default 5
    merge_threshold : float, optional
        Components whose maps correlate at or above this are merged. None uses
        the default for ``feature``: BD 0.3, AA 0.45, RV 0.4 (AA and RV inside
        the paper's ranges 0.4-0.5 and 0.3-0.5; BD above its 0.18-0.25, see
        docs/nmf.md).
    feature : {'bd', 'aa', 'rv'}, optional
        Feature representation of X, for the default threshold.
    pattern_threshold : float or None, default 0.5
        Components whose patterns (rows of H) have a cosine similarity at or
        above this, and whose maps are not anti-correlated, are merged too.
        None merges on map correlation alone (the paper's rule).
    merge_rule : {'evidence', 'transitive'}, default 'evidence'
        'evidence': a pair merges when it is linked (as in 'transitive'), when
        the merge costs no more than the noise (``merge_tolerance``), or when
        its maps cover the same positions (``footprint_threshold``); groups
        by complete linkage, never chained (:mod:`stemnmf.decompose.evidence`). 'transitive': every
        linked pair merges, chained by union-find (the paper's rule, with
        ``pattern_threshold=None``).
    merge_tolerance : float, default 0.5
        Evidence rule: a merge may raise ``||X - WH||^2`` by this many times
        what one spare component fits of pure noise.
    footprint_threshold : float or None, default 0.5
        Evidence rule: pairs of maps not anti-correlated merge when at least this share of the
        larger map footprint (weights >= 0.2 of the map's peak) is shared;
        None: only merges within the noise.
    link_tolerance : float or None, default 3.0
        Evidence rule: linked or same-footprint pairs merge only when the merge
        raises ``||X - WH||^2`` by at most this many times the pair's noise
        gate (None: whatever it costs).
    peak_agreement : float or None, default 0.5
        Evidence rule with ``link_tolerance``: linked or same-footprint pairs
        whose patterns' peaks (entries standing out of the local background by
        9 noise deviations) agree at least this much (Dice overlap) merge
        whatever the merge costs: one grain's reflections in other proportions.
    limit_footprints : bool, default False
        Evidence rule with ``link_tolerance``: same-footprint pairs too merge
        only within it (or with agreeing peaks); False: they merge whatever it costs.
    scan_shape : (int, int), optional
        The scan's (rows, cols); the rows of X are its positions in C order.
        Needed by ``recover``: without it nothing is recovered.
    recover : bool, default True
        With ``scan_shape``: after the final refit, split every component in
        two on its footprint and keep a part as a new component when it is a
        grain stacked inside the component's grain: a significant, spatially
        coherent part under which the component goes on, whose reflections the
        rest of the component lacks; repeated on the refitted model until a
        round keeps nothing, three rounds at the most (:func:`recover_grains`;
        docs/nmf.md).
    absorb : bool, default False
        With ``scan_shape``: after the recovery, join every component whose
        pattern's peaks the data of a touching component all show (a
        thickness-fringe piece of that grain) to it, then refit
        (:func:`absorb_pieces`; docs/nmf.md).
    min_coherence : float or None, default 0.5
        With ``scan_shape``: after the recovery, drop every component whose
        map's spatial coherence (Moran's I) is below this (more noise than
        structure: it gives no region; ``MIN_COHERENCE``) and refit
        (:func:`prune_components`; docs/nmf.md). None: keep all.
    prune_refit : {'patterns', 'full'}, default 'patterns'
        With ``min_coherence``: refit only the kept patterns with the maps
        fixed (the regions stay those of the fit), or every factor by HALS
        (also when none was dropped).
    n_restarts : int, default 25
        Restarts, each from a random start with its own seed.
    solver : {'hals', 'mu', 'compressed'}, default 'hals'
        NMF solver for every fit (Frobenius loss). 'compressed' compresses the
        positions the restarts see once and reuses it for every fit of every
        restart; the winner is refitted exactly (HALS).
    max_iter, tol : int, float
        Per fit, as in :class:`NMF`; ``tol`` is the tolerance of the final
        refit of the winner on every position.
    restart_tol : float or None, default 1e-3
        Tolerance of the fits inside the restarts; None: ``tol``.
    restart_positions : int or None, default 5000
        Restarts see a seeded random subset of this many positions when X has
        more; None: every position.
    random_state : int, Generator or None
        Seeds the scree, the restarts' seeds (``restart_seeds_``) and the
        subset of positions.
    n_jobs : int, optional
        Threads running restarts in parallel; None or -1 uses every core.

    Attributes
    ----------
    components_ : (k, n_features) float32
        H of the best restart.
    n_components_ : int
    reconstruction_err_ : float
        ``||X - WH||_F`` of the best restart.
    mean_abs_err_ : float
    merge_history_ : list (one per restart) of list of (k, groups)
        Each fit of a restart: its k and the groups of its components merged
        after it (tuples of component indices of that fit; a 1-tuple is a
        component that came out all zero and was dropped). The last step of a
        restart has no groups.
    recovered_ : list of int
        The component each recovered grain was split from, numbered in the
        model of its round (in the order the new components were appended;
        empty without ``scan_shape``).
    pruned_ : list of int
        With ``min_coherence``: the components dropped, numbered after the
        recovery; empty when none was.
    absorbed_ : list of list of int
        With ``absorb``: each group of components (numbered after the
        recovery and the pruning) that became one; empty when none did.
    final_history_ : list of (k, groups)
        The same for the refit of the winner on every position (one step with
        no groups when nothing more merged).
    restart_positions_ : int
        Positions the restarts saw.
    scree_ : Scree or None
        The PCA scree (None when ``initial_components`` was given).
    initial_components_ : int
    merge_threshold_ : float
    best_restart_ : int
    restart_errors_ : (n_restarts,) float64
        ``||X - WH||_F`` of every restart (over the positions it saw).
    restart_seeds_ : list of int
        Seed of each restart (``NMF(init='random', random_state=seed)`` gives the same start).
    n_iter_ : int
        Solver iterations of the best restart and of its final refit.
    peak_agreement_ : (k, k) float64
        Dice agreement of the final patterns' peaks (:func:`~stemnmf.decompose.evidence.peak_agreement`,
        noise from the final residual): the same-grain evidence the analysis
        uses to join touching regions (docs/analysis.md).
    """

    _parameter_constraints: dict = {
        "initial_components": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "scree_factor": [Interval(numbers.Integral, 1, None, closed="left")],
        "merge_threshold": [Interval(numbers.Real, -1, 1, closed="both"), None],
        "feature": [str, None],
        "pattern_threshold": [Interval(numbers.Real, -1, 1, closed="both"), None],
        "merge_rule": [StrOptions(set(MERGE_RULES))],
        "merge_tolerance": [Interval(numbers.Real, 0, None, closed="left")],
        "footprint_threshold": [Interval(numbers.Real, 0, 1, closed="both"), None],
        "link_tolerance": [Interval(numbers.Real, 0, None, closed="left"), None],
        "peak_agreement": [Interval(numbers.Real, 0, 1, closed="both"), None],
        "limit_footprints": ["boolean"],
        "scan_shape": [tuple, list, None],
        "recover": ["boolean"],
        "absorb": ["boolean"],
        "min_coherence": [Interval(numbers.Real, -1, 1, closed="both"), None],
        "prune_refit": [StrOptions({"full", "patterns"})],
        "n_restarts": [Interval(numbers.Integral, 1, None, closed="left")],
        "solver": [StrOptions({"hals", "mu", "compressed"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "restart_tol": [Interval(numbers.Real, 0, None, closed="left"), None],
        "restart_positions": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "random_state": [Interval(numbers.Integral, 0, None, closed="left"), np.random.RandomState, np.random.Generator,
                         None],
        "n_jobs": [numbers.Integral, None],
    }

    def __init__(
        self,
        *,
        initial_components=None,
        scree_factor=5,
        merge_threshold=None,
        feature=None,
        pattern_threshold=PATTERN_THRESHOLD,
        merge_rule="evidence",
        merge_tolerance=MERGE_TOLERANCE,
        footprint_threshold=FOOTPRINT_THRESHOLD,
        link_tolerance=LINK_TOLERANCE,
        peak_agreement=PEAK_AGREEMENT,
        limit_footprints=False,
        scan_shape=None,
        recover=True,
        absorb=False,
        min_coherence=MIN_COHERENCE,
        prune_refit="patterns",
        n_restarts=25,
        solver="hals",
        max_iter=200,
        tol=1e-4,
        restart_tol=RESTART_TOL,
        restart_positions=RESTART_POSITIONS,
        random_state=None,
        n_jobs=None,
    ):
        self.initial_components = initial_components
        self.scree_factor = scree_factor
        self.merge_threshold = merge_threshold
        self.feature = feature
        self.pattern_threshold = pattern_threshold
        self.merge_rule = merge_rule
        self.merge_tolerance = merge_tolerance
        self.footprint_threshold = footprint_threshold
        self.link_tolerance = link_tolerance
        self.peak_agreement = peak_agreement
        self.limit_footprints = limit_footprints
        self.scan_shape = scan_shape
        self.recover = recover
        self.absorb = absorb
        self.min_coherence = min_coherence
        self.prune_refit = prune_refit
        self.n_restarts = n_restarts
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.restart_tol = restart_tol
        self.restart_positions = restart_positions
        self.random_state = random_state
        self.n_jobs = n_jobs

    # as in NMF: scikit-learn's estimators store their parameters as given and state their own tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.non_deterministic = self.random_state is None
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _threshold(self) -> float:
        if self.merge_threshold is not None:
            t = self.merge_threshold
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not -1 <= t <= 1:
                raise ConfigError(f"merge_threshold={t!r} must be a correlation between -1 and 1")
            return float(t)
        feature = None if self.feature is None else str(self.feature).lower()
        if feature not in MERGE_THRESHOLDS:
            raise ConfigError(
                f"no default merge threshold for feature={self.feature!r} "
                "(Bruefach et al. 2022 give ranges for 'bd', 'aa' and 'rv' only)",
                "set merge_threshold (e.g. 0.4) or feature to 'bd', 'aa' or 'rv'",
            )
        return MERGE_THRESHOLDS[feature]

    def _check(self) -> None:
        check_params(self)
        if self.n_jobs == 0:
            raise ConfigError(f"n_jobs={self.n_jobs!r} must be a non-zero integer or None")

    def _scan_shape(self, n: int) -> tuple[int, int] | None:
        if self.scan_shape is None:
            return None
        shape = tuple(self.scan_shape)
        if len(shape) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in shape):
            raise ConfigError(f"scan_shape={self.scan_shape!r} must be two positive integers (rows, cols)")
        if shape[0] * shape[1] != n:
            raise DataValueError(f"scan_shape {shape} has {shape[0] * shape[1]} positions but X has {n} rows",
                                 "give the scan's shape in the order of X's rows")
        return int(shape[0]), int(shape[1])

    def _rule(self) -> MergeRule | None:
        if self.merge_rule == "transitive":
            return None
        footprint = None if self.footprint_threshold is None else float(self.footprint_threshold)
        link = None if self.link_tolerance is None else float(self.link_tolerance)
        agreement = None if self.peak_agreement is None else float(self.peak_agreement)
        return MergeRule(float(self.merge_tolerance), footprint, link, agreement, bool(self.limit_footprints))

    def _restart_seeds(self, rng: np.random.Generator) -> list[int]:
        children = np.random.SeedSequence(int(rng.integers(2**63))).spawn(self.n_restarts)
        return [int(child.generate_state(1, np.uint64)[0] >> 1) for child in children]

    def fit(self, X, y=None):
        """Fit to X (array-like or RowBlocks); returns self."""
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit to X and return W (n_positions, k) of the best restart (float32)."""
        self._check()
        threshold = self._threshold()
        blocks = as_blocks(X)
        summary = blocks.summary()
        n, m = summary.shape
        scan_shape = self._scan_shape(n)
        rng = check_random_state(self.random_state)
        if self.initial_components is None:
            scree = pca_scree(blocks, max_components=SCREE_COMPONENTS, random_state=rng)
            k0 = self.scree_factor * scree.elbow
            log.info("PCA scree elbow at %d components; starting from %d", scree.elbow, k0)
        else:
            scree = None
            k0 = int(self.initial_components)
        if k0 > min(n, m):
            log.warning("initial k=%d is more than min(n_positions, n_features)=%d; using %d", k0, min(n, m), min(n, m))
            k0 = min(n, m)
        seeds = self._restart_seeds(rng)
        # the positions the restarts see: every one, or a seeded random subset of a large scan
        r_blocks, r_summary, rows = blocks, summary, None
        if self.restart_positions is not None and n > self.restart_positions:
            subset_rng = np.random.default_rng(int(rng.integers(2**63)))
            rows = np.sort(subset_rng.choice(n, size=int(self.restart_positions), replace=False))
            r_blocks = as_blocks(_row_subset(blocks, rows, m))
            r_summary = r_blocks.summary()
            if k0 > min(r_summary.shape):
                k0 = min(r_summary.shape)
            log.info("restarts on a random subset of %d of %d positions", len(rows), n)
        pattern_threshold = None if self.pattern_threshold is None else float(self.pattern_threshold)
        restart_tol = float(self.tol if self.restart_tol is None else self.restart_tol)
        setup = _Setup(loss="frobenius", solver=self.solver, max_iter=int(self.max_iter), tol=restart_tol)
        compressed = None
        if self.solver == "compressed":
            compressed = qb(r_blocks, k0, oversample=COMPRESS_OVERSAMPLE, power_iter=COMPRESS_POWER_ITER, rng=rng)
        workers = min(self.n_restarts, _n_workers(self.n_jobs))
        if workers > 1:  # restarts share the cores; BLAS single-threaded (set once, outside the threads)
            setup.n_threads = max(1, default_threads() // workers)
            setup.manage_blas = False
        rule = self._rule()
        results = _run_restarts(
            r_blocks, r_summary, k0, threshold, setup, seeds, compressed, workers, pattern_threshold, rule
        )
        errors = np.array([r["error"] for r in results])
        best = int(np.argmin(errors))
        chosen = results[best]

        # the winner, refitted on every position to ``tol`` (merging again if anything became linked)
        final = _Setup(loss="frobenius", solver="mu" if self.solver == "mu" else "hals", max_iter=int(self.max_iter),
                       tol=float(self.tol))
        H = np.array(chosen["H"], dtype=np.float32)
        if rows is None:
            Wt = np.array(chosen["Wt"], dtype=np.float32)
        else:
            Wt = solve_w(blocks, H, _Setup(loss="frobenius", solver="hals", max_iter=int(self.max_iter),
                                           tol=float(self.tol) or 1e-6), summary=summary)
        Wt, H, final_history, final_iter = _merge_loop(
            blocks, summary, Wt, H, threshold, pattern_threshold, final, label="final refit", rule=rule
        )
        recovered = []
        if self.recover and scan_shape is not None and H.shape[0]:
            Wt, H, kept = recover_grains(blocks, Wt, H, scan_shape, max_iter=int(self.max_iter), tol=float(self.tol),
                                         n_threads=final.n_threads)
            recovered = [int(c.host) for c in kept]
        self.pruned_ = []
        if self.min_coherence is not None and scan_shape is not None and H.shape[0] > 1:
            Wt, H, self.pruned_ = prune_components(blocks, Wt, H, scan_shape, min_coherence=float(self.min_coherence),
                                                   refit=self.prune_refit, max_iter=int(self.max_iter),
                                                   tol=float(self.tol), n_threads=final.n_threads)
        self.absorbed_ = []
        if self.absorb and scan_shape is not None and H.shape[0] > 1:
            Wt, H, groups = absorb_pieces(blocks, Wt, H, scan_shape, max_iter=int(self.max_iter), tol=float(self.tol),
                                          n_threads=final.n_threads)
            self.absorbed_ = [g for g in groups if len(g) > 1]
        final_errors = exact_errors(blocks, Wt, H, n_threads=final.threads, manage_blas=final.manage_blas)
        _, _, col_sq, _ = _residual_pass(blocks, Wt, H, final.threads)
        self.peak_agreement_ = peak_agreement(pattern_peaks(H, pattern_noise(Wt, col_sq)))

        self.components_ = H
        self.n_components_ = int(H.shape[0])
        self.reconstruction_err_ = float(final_errors["frobenius"])
        self.mean_abs_err_ = float(final_errors["mean_abs"])
        self.merge_history_ = [r["history"] for r in results]
        self.final_history_ = final_history
        self.recovered_ = recovered
        self.restart_positions_ = int(n if rows is None else len(rows))
        self.scree_ = scree
        self.initial_components_ = int(k0)
        self.merge_threshold_ = threshold
        self.best_restart_ = best
        self.restart_errors_ = errors
        self.restart_seeds_ = seeds
        self.n_iter_ = int(chosen["n_iter"] + final_iter)
        self.n_features_in_ = int(m)
        log.info(
            "iterative NMF: best of %d restarts has k=%d (error %.4g); k=%d after the final refit",
            self.n_restarts, int(chosen["H"].shape[0]), errors[best], self.n_components_,
        )
        return np.ascontiguousarray(Wt.T)

    def transform(self, X):
        """W for X with the fitted components fixed (non-negative least squares per position)."""
        check_is_fitted(self, "components_")
        blocks = as_blocks(X)
        summary = blocks.summary()
        if summary.shape[1] != self.components_.shape[1]:
            raise DataValueError(
                f"X has {summary.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.components_.shape[1]} features as input",
                "transform data featurised like the training data",
            )
        setup = _Setup(loss="frobenius", solver="hals", max_iter=max(int(self.max_iter), 1), tol=float(self.tol) or 1e-6)
        return np.ascontiguousarray(solve_w(blocks, self.components_, setup, summary=summary).T)

    def inverse_transform(self, W):
        """X reconstructed from W: ``W @ components_``."""
        check_is_fitted(self, "components_")
        return np.asarray(W, dtype=np.float32) @ self.components_

    def to_results(self, W=None, scan_shape=None) -> dict:
        """``{path: value}`` for the results file; see :func:`stemnmf.decompose.to_results`."""
        return to_results(self, W, scan_shape)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]


def _n_workers(n_jobs) -> int:
    cores = default_threads()
    if n_jobs is None or n_jobs == -1:
        return cores
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return int(n_jobs)


def _run_restarts(
    blocks, summary, k0, threshold, setup, seeds, compressed, workers, pattern_threshold=None, rule=None
) -> list[dict]:
    """Run the restarts on ``workers`` threads (results in seed order)."""
    args = (blocks, summary, k0, threshold, setup)
    if workers <= 1:
        return [_restart(*args, seed, compressed, pattern_threshold, rule) for seed in seeds]
    tasks = (delayed(_restart)(*args, seed, compressed, pattern_threshold, rule) for seed in seeds)
    with blas_limit(1):
        return Parallel(n_jobs=workers, prefer="threads")(tasks)
