"""Iterative merging NMF (Allen et al. 2021, as used by Bruefach, Ophus & Scott 2022).

1. k0 = ``scree_factor`` x the elbow of the PCA scree of X (or ``initial_components``).
2. Factorise X with k components (random start, one seed per restart).
3. Correlate the component maps (columns of W, Pearson). Every group of
   components linked by a correlation at or above the threshold is merged
   (transitively, union-find): the maps are summed and the patterns averaged
   with the maps' total weights, which keeps W H exactly when the maps of a
   group are proportional.
4. Refit X from the merged factors with the reduced k; repeat 3-4 until no pair
   reaches the threshold or k = 1.
5. Over ``n_restarts`` restarts keep the model with the lowest ||X - WH||_F.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from stemnmf.decompose._random import check_random_state, qb, random_init
from stemnmf.decompose.blocks import RowBlocks, Summary, as_blocks, blas_limit, default_threads
from stemnmf.decompose.nmf import (
    COMPRESS_OVERSAMPLE,
    COMPRESS_POWER_ITER,
    _Setup,
    exact_errors,
    solve,
    solve_compressed,
    solve_w,
)
from stemnmf.decompose.scree import pca_scree
from stemnmf.errors import ConfigError, DataValueError

__all__ = ["IterativeNMF", "MERGE_THRESHOLDS", "merge_groups", "merge_components"]

log = logging.getLogger(__name__)

#: Default correlation thresholds per feature, inside the ranges Bruefach et al.
#: (2022) report: BD 0.18-0.25, AA 0.4-0.5, RV 0.3-0.5 (the middle of each).
MERGE_THRESHOLDS = {"bd": 0.2, "aa": 0.45, "rv": 0.4}
#: Points on the PCA scree curve.
SCREE_COMPONENTS = 50


def merge_groups(Wt: np.ndarray, threshold: float) -> list[list[int]]:
    """Partition components into groups linked by map correlations >= ``threshold``.

    Parameters
    ----------
    Wt : (k, n_positions)
        Component maps as rows (W transposed).
    threshold : float
        Pearson correlation at or above which two maps are linked.

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
        linked = np.triu(np.nan_to_num(corr, nan=-np.inf) >= threshold, 1)
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


def _restart(
    blocks: RowBlocks,
    summary: Summary,
    k0: int,
    threshold: float,
    setup: _Setup,
    seed: int,
    compressed: tuple | None,
) -> dict:
    """One restart: random start from ``seed``, then fit -> merge -> refit until stable."""
    rng = np.random.default_rng(seed)
    Wt, H = random_init(summary, k0, rng)
    Wt[:, summary.zero_rows] = 0
    H[:, summary.zero_cols] = 0
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
        groups = [[int(live[i]) for i in g] for g in merge_groups(Wt[live], threshold)] if len(live) else []
        merged = [tuple(g) for g in groups if len(g) > 1]
        history.append((k, merged + [(j,) for j in dead]))
        if (not merged and not dead) or k == 1 or not groups:
            break
        Wt, H = merge_components(Wt, H, groups)
        log.debug("restart seed %d: k %d -> %d", seed, k, len(groups))
    errors = exact_errors(blocks, Wt, H, n_threads=setup.threads, manage_blas=setup.manage_blas)
    return {"Wt": Wt, "H": H, "error": errors["frobenius"], "mean_abs": errors["mean_abs"], "history": history, "n_iter": n_iter}


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
        the default for ``feature``: BD 0.2, AA 0.45, RV 0.4 (inside the
        paper's ranges 0.18-0.25, 0.4-0.5, 0.3-0.5).
    feature : {'bd', 'aa', 'rv'}, optional
        Feature representation of X, for the default threshold.
    n_restarts : int, default 25
        Restarts, each from a random start with its own seed.
    solver : {'hals', 'mu', 'compressed'}, default 'hals'
        NMF solver for every fit (Frobenius loss). 'compressed' compresses X
        once and reuses it for every fit of every restart.
    max_iter, tol : int, float
        Per fit, as in :class:`NMF`.
    random_state : int, Generator or None
        Seeds the scree and the restarts' seeds (``restart_seeds_``).
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
    scree_ : Scree or None
        The PCA scree (None when ``initial_components`` was given).
    initial_components_ : int
    merge_threshold_ : float
    best_restart_ : int
    restart_errors_ : (n_restarts,) float64
        ``||X - WH||_F`` of every restart.
    restart_seeds_ : list of int
        Seed of each restart (``NMF(init='random', random_state=seed)`` gives the same start).
    n_iter_ : int
        Solver iterations of the best restart, over all its fits.
    """

    def __init__(
        self,
        *,
        initial_components=None,
        scree_factor=5,
        merge_threshold=None,
        feature=None,
        n_restarts=25,
        solver="hals",
        max_iter=200,
        tol=1e-4,
        random_state=None,
        n_jobs=None,
    ):
        self.initial_components = initial_components
        self.scree_factor = scree_factor
        self.merge_threshold = merge_threshold
        self.feature = feature
        self.n_restarts = n_restarts
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.n_jobs = n_jobs

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
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")

        if self.initial_components is not None:
            positive_int("initial_components")
        positive_int("scree_factor")
        positive_int("n_restarts")
        if self.solver not in ("hals", "mu", "compressed"):
            raise ConfigError(f"solver={self.solver!r} is not available here", "use 'hals', 'mu' or 'compressed'")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ConfigError(f"max_iter={self.max_iter!r} must be a positive integer")
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ConfigError(f"tol={self.tol!r} must be a non-negative number")
        if self.n_jobs is not None and (
            isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, numbers.Integral) or self.n_jobs == 0
        ):
            raise ConfigError(f"n_jobs={self.n_jobs!r} must be a non-zero integer or None")

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
        setup = _Setup(
            loss="frobenius",
            solver=self.solver,
            max_iter=int(self.max_iter),
            tol=float(self.tol),
        )
        compressed = None
        if self.solver == "compressed":
            compressed = qb(blocks, k0, oversample=COMPRESS_OVERSAMPLE, power_iter=COMPRESS_POWER_ITER, rng=rng)
        workers = min(self.n_restarts, _n_workers(self.n_jobs))
        if workers > 1:  # restarts share the cores; BLAS single-threaded (set once, outside the threads)
            setup.n_threads = max(1, default_threads() // workers)
            setup.manage_blas = False
        results = _run_restarts(blocks, summary, k0, threshold, setup, seeds, compressed, workers)
        errors = np.array([r["error"] for r in results])
        best = int(np.argmin(errors))
        chosen = results[best]
        self.components_ = chosen["H"]
        self.n_components_ = int(chosen["H"].shape[0])
        self.reconstruction_err_ = float(errors[best])
        self.mean_abs_err_ = float(chosen["mean_abs"])
        self.merge_history_ = [r["history"] for r in results]
        self.scree_ = scree
        self.initial_components_ = int(k0)
        self.merge_threshold_ = threshold
        self.best_restart_ = best
        self.restart_errors_ = errors
        self.restart_seeds_ = seeds
        self.n_iter_ = int(chosen["n_iter"])
        self.n_features_in_ = int(m)
        log.info(
            "iterative NMF: best of %d restarts has k=%d (error %.4g)", self.n_restarts, self.n_components_, errors[best]
        )
        return np.ascontiguousarray(chosen["Wt"].T)

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
        from stemnmf.decompose.results import to_results

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


def _run_restarts(blocks, summary, k0, threshold, setup, seeds, compressed, workers) -> list[dict]:
    """Run the restarts on ``workers`` threads (results in seed order)."""
    if workers <= 1:
        return [_restart(blocks, summary, k0, threshold, setup, seed, compressed) for seed in seeds]
    tasks = (delayed(_restart)(blocks, summary, k0, threshold, setup, seed, compressed) for seed in seeds)
    with blas_limit(1):
        return Parallel(n_jobs=workers, prefer="threads")(tasks)
