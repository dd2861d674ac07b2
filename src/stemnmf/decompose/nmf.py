"""Non-negative matrix factorisation X ~= W H as a scikit-learn estimator.

Solvers (all float32, all reading X in row blocks, once per iteration):

``'hals'`` (default)
    Hierarchical alternating least squares (exact coordinate descent on the
    columns of W and rows of H; Cichocki & Phan 2009; Gillis & Glineur 2012
    for the repeated inner sweeps). Monotone, converges in far fewer passes
    over X than multiplicative updates, and moves entries that are zero, so
    warm starts with appended components work.
``'mu'``
    Lee & Seung (2001) multiplicative updates for ``beta_loss='frobenius'``
    (or ``'kullback-leibler'``). Monotone; slow; kept for comparison with the
    literature.
``'kl'``
    Multiplicative updates for the generalised Kullback-Leibler divergence
    (Lee & Seung 2001), what Cao et al. (2025) used; ``beta_loss`` is ignored.
``'compressed'``
    Randomised NMF (Erichson et al. 2018): X is compressed once to
    Q B with a randomised range finder (Q orthonormal, n x l; B = Q^T X,
    l x m; l = k + 20, two power iterations), then HALS minimises
    ``||Q Q^T X - W H||`` exactly, which needs only the small B and Q per
    iteration. About 2 x 2 + 2 passes over X in all, so the fastest choice
    for large raw-pattern matrices; the fit is within the noise of X's
    discarded tail of the exact fit.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import time
from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from stemnmf.decompose import kernels
from stemnmf.decompose._random import check_random_state, nndsvd_init, qb, random_init, svd_from_qb
from stemnmf.decompose.blocks import RowBlocks, Summary, as_blocks, blas_limit, default_threads
from stemnmf.decompose.compressed import COMPRESS_OVERSAMPLE, COMPRESS_POWER_ITER, Compressed
from stemnmf.decompose.params import check_params
from stemnmf.decompose.results import to_results
from stemnmf.errors import ConfigError, DataValueError

__all__ = ["NMF", "SOLVERS", "INITS"]

log = logging.getLogger(__name__)

SOLVERS = ("hals", "mu", "kl", "compressed")
INITS = ("random", "nndsvd", "nndsvda", "custom")
_LOSSES = {"frobenius": "frobenius", 2: "frobenius", "kullback-leibler": "kl", 1: "kl"}

#: Most HALS sweeps over W (per read of a block) and over H (per iteration). The
#: products with X are reused, so a sweep costs about k / n_features (for W) or
#: k / n_positions (for H) of a pass over X; ``1 + 0.5 x`` that cost ratio sweeps
#: are made, at most this many (after Gillis & Glineur 2012).
MAX_SWEEPS = 5
#: Power iterations of the range finder behind NNDSVD(a) when used only to initialise.
INIT_POWER_ITER = 1


@dataclasses.dataclass
class _Setup:
    """Validated options of one fit."""

    loss: str  # 'frobenius' or 'kl'
    solver: str  # 'hals', 'mu' or 'compressed' ('kl' maps to 'mu' with loss 'kl')
    max_iter: int
    tol: float
    l1_W: float = 0.0
    l2_W: float = 0.0
    l1_H: float = 0.0
    l2_H: float = 0.0
    w_sweeps: int | None = None  # None: from the shapes (see MAX_SWEEPS)
    h_sweeps: int | None = None
    verbose: int = 0
    n_threads: int | None = None  # None: every core (blocks on a thread pool, BLAS single-threaded)
    manage_blas: bool = True  # False: the caller has already limited BLAS threads

    @property
    def threads(self) -> int:
        return self.n_threads or default_threads()

    @property
    def blas_threads(self) -> int | None:
        """BLAS limit while solving: 1 (our own threads share the blocks; the rounding of
        BLAS products depends on its thread count, so results would otherwise too)."""
        return 1 if self.manage_blas else None


@dataclasses.dataclass
class FitResult:
    """Factors and diagnostics of one solver run.

    Attributes
    ----------
    Wt : (k, n) float32
        W transposed.
    H : (k, m) float32
    n_iter : int
    losses : list of float
        The solver's objective after each iteration (penalised; for KL after
        the W half of the iteration; for ``'compressed'`` on Q Q^T X).
    """

    Wt: np.ndarray
    H: np.ndarray
    n_iter: int
    losses: list


# -- the solvers ------------------------------------------------------------------------------
def sweeps(length: int, k: int) -> int:
    """HALS sweeps per product with X: ``1 + 0.5 length / k``, between 1 and MAX_SWEEPS."""
    return int(min(MAX_SWEEPS, max(1, 1 + 0.5 * length / max(k, 1))))


class Iterations:
    """The objective after each iteration of a fit, and when to stop: one tail for every solver.

    ``stop(it, Wt, H, value)`` records and logs ``value``, calls the fit's
    ``callback(it, Wt, H, value)`` (after ``prepare()``, e.g. gathering W from
    a cluster), and says whether to stop: when the callback returns True, or
    when the objective fell by at most ``tol`` times its previous value.
    """

    def __init__(self, setup: _Setup, callback=None):
        self.setup = setup
        self.callback = callback
        self.losses: list[float] = []

    def stop(self, it: int, Wt: np.ndarray, H: np.ndarray, value: float, prepare=None) -> bool:
        self.losses.append(value)
        setup = self.setup
        if setup.verbose and (it % 10 == 0 or it == 1):
            log.info("NMF %s iteration %d: objective %.6g", setup.solver, it, value)
        else:
            log.debug("NMF %s iteration %d: objective %.6g", setup.solver, it, value)
        if self.callback is not None:
            if prepare is not None:
                prepare()
            if self.callback(it, Wt, H, value):
                return True
        if setup.tol <= 0 or len(self.losses) < 2:
            return False
        prev, cur = self.losses[-2], self.losses[-1]
        return (prev - cur) <= setup.tol * abs(prev)


def solve(
    blocks: RowBlocks,
    Wt: np.ndarray,
    H: np.ndarray,
    setup: _Setup,
    *,
    summary: Summary | None = None,
    callback: Callable[[int, np.ndarray, np.ndarray, float], object] | None = None,
) -> FitResult:
    """Run the HALS or MU iterations (Frobenius or KL) from (Wt, H), updating them in place.

    One iteration reads every row block of X once: the block's rows of W are
    updated and the partial sums for H accumulated, then H is updated.
    ``callback(iteration, Wt, H, objective)`` is called after each iteration;
    if it returns True the iterations stop.
    """
    summary = summary or blocks.summary()
    distributed = getattr(blocks, "solve_distributed", None)  # decompose.distributed: iterations on a cluster
    if distributed is not None:
        return distributed(Wt, H, setup, summary=summary, callback=callback)
    with blas_limit(setup.blas_threads):
        if setup.loss == "kl":
            return _solve_kl(blocks, Wt, H, setup, summary, callback)
        return _solve_frobenius(blocks, Wt, H, setup, summary, callback)


def kl_eps(summary: Summary) -> float:
    """Floor of W H in the KL updates: float32 epsilon times the mean of X."""
    return max(float(np.finfo(np.float32).eps) * summary.mean, float(kernels.TINY))


def _solve_kl(blocks, Wt, H, setup, summary, callback) -> FitResult:
    k, m = H.shape
    iterations = Iterations(setup, callback)
    it = 0
    partial = kernels.KLPartial.zeros(k, m)
    eps = kl_eps(summary)
    for it in range(1, setup.max_iter + 1):
        partial.fill(0.0)
        H_sum = H.sum(axis=1, dtype=np.float64)

        def work(start, X_b, H=H, H_sum=H_sum):
            Wt_b = Wt[:, start : start + len(X_b)]
            return kernels.kl_w_step(X_b, Wt_b, H, H_sum, eps=eps, l1=setup.l1_W, l2=setup.l2_W)

        for part in blocks.map(work, setup.threads):
            partial += part
        value = kernels.kl_objective(
            summary.total, H, partial, l1_W=setup.l1_W, l2_W=setup.l2_W, l1_H=setup.l1_H, l2_H=setup.l2_H
        )
        kernels.kl_h_step(H, partial, l1=setup.l1_H, l2=setup.l2_H)
        if iterations.stop(it, Wt, H, value):
            break
    return FitResult(Wt, H, it, iterations.losses)


def frobenius_start(Wt, H, setup):
    """(partial sums, H H^T in float64, W-step solver, W sweeps, H sweeps) of a Frobenius fit's first iteration."""
    k, m = H.shape
    H64 = H.astype(np.float64)
    solver = "mu" if setup.solver == "mu" else "hals"
    w_sweeps = setup.w_sweeps or sweeps(m, k)
    h_sweeps = setup.h_sweeps or sweeps(Wt.shape[1], k)
    return kernels.FrobeniusPartial.zeros(k, m), H64 @ H64.T, solver, w_sweeps, h_sweeps


def _solve_frobenius(blocks, Wt, H, setup, summary, callback) -> FitResult:
    iterations = Iterations(setup, callback)
    it = 0
    partial, HHt64, solver, w_sweeps, h_sweeps = frobenius_start(Wt, H, setup)
    for it in range(1, setup.max_iter + 1):
        partial.fill(0.0)
        HHt = HHt64.astype(np.float32)

        def work(start, X_b, H=H, HHt=HHt):
            Wt_b = Wt[:, start : start + len(X_b)]
            return kernels.frobenius_w_step(
                X_b, Wt_b, H, HHt, solver=solver, l1=setup.l1_W, l2=setup.l2_W, sweeps=w_sweeps
            )

        for part in blocks.map(work, setup.threads):
            partial += part
        kernels.frobenius_h_step(H, partial, solver=solver, l1=setup.l1_H, l2=setup.l2_H, sweeps=h_sweeps)
        H64 = H.astype(np.float64)
        HHt64 = H64 @ H64.T
        value = kernels.frobenius_objective(
            summary.sq_norm, H, HHt64, partial, l1_W=setup.l1_W, l2_W=setup.l2_W, l1_H=setup.l1_H, l2_H=setup.l2_H
        )
        if iterations.stop(it, Wt, H, value):
            break
    return FitResult(Wt, H, it, iterations.losses)


def solve_compressed(
    Q: np.ndarray,
    B: np.ndarray,
    Wt: np.ndarray,
    H: np.ndarray,
    setup: _Setup,
    *,
    callback: Callable[[int, np.ndarray, np.ndarray, float], object] | None = None,
) -> FitResult:
    """HALS on the compressed problem min ||Q B - W H|| (Q orthonormal), updating (Wt, H) in place.

    With P = Q Q^T: X H^T is replaced by Q (B H^T) and W^T X by (Q^T W)^T B;
    W^T W and H H^T are exact. Each iteration costs O((n + m) l k), not O(n m k).
    """
    with blas_limit(1 if setup.manage_blas else None):  # small products: one thread is fastest
        return _solve_compressed(Q, B, Wt, H, setup, callback)


def _solve_compressed(Q, B, Wt, H, setup, callback) -> FitResult:
    k, m = H.shape
    B_sq = float(np.einsum("ij,ij->", B, B, dtype=np.float64))
    iterations = Iterations(setup, callback)
    it = 0
    Qt = Q.T
    w_sweeps = setup.w_sweeps or sweeps(m, k)
    h_sweeps = setup.h_sweeps or sweeps(Wt.shape[1], k)
    for it in range(1, setup.max_iter + 1):
        H64 = H.astype(np.float64)
        HHt = (H64 @ H64.T).astype(np.float32)
        C = (B @ H.T).T @ Qt  # (k, n) = (Q B H^T)^T
        kernels.hals_rows(Wt, HHt, C, setup.l1_W, setup.l2_W, w_sweeps)
        Wt64 = Wt.astype(np.float64)
        partial = kernels.FrobeniusPartial(
            ((Wt @ Q) @ B).astype(np.float64), Wt64 @ Wt64.T, Wt64.sum(axis=1)
        )
        kernels.frobenius_h_step(H, partial, solver="hals", l1=setup.l1_H, l2=setup.l2_H, sweeps=h_sweeps)
        H64 = H.astype(np.float64)
        value = kernels.frobenius_objective(
            B_sq, H, H64 @ H64.T, partial, l1_W=setup.l1_W, l2_W=setup.l2_W, l1_H=setup.l1_H, l2_H=setup.l2_H
        )
        if iterations.stop(it, Wt, H, value):
            break
    return FitResult(Wt, H, it, iterations.losses)


def solve_w(
    blocks: RowBlocks,
    H: np.ndarray,
    setup: _Setup,
    *,
    summary: Summary | None = None,
) -> np.ndarray:
    """W (as Wt, k x n) minimising the loss for fixed H: non-negative least squares per position.

    Frobenius: one pass over X gives H X^T, then HALS sweeps (no more reads of
    X) from the clipped least-squares solution, until the largest change of W
    is below ``tol`` times its largest entry, or ``max_iter`` sweeps. KL:
    multiplicative updates on each block while it is in cache.
    """
    summary = summary or blocks.summary()
    n, m = summary.shape
    k = H.shape[0]
    Wt = np.zeros((k, n), dtype=np.float32)
    with blas_limit(setup.blas_threads):
        if setup.loss == "kl":
            eps = kl_eps(summary)
            H_sum = H.sum(axis=1, dtype=np.float64)
            scale = np.float32(np.sqrt(summary.mean / k))

            def work(start, X_b):
                Wt_b = Wt[:, start : start + len(X_b)]
                Wt_b[...] = scale
                for _ in range(max(1, setup.max_iter)):
                    before = Wt_b.copy()
                    kernels.kl_w_step(X_b, Wt_b, H, H_sum, eps=eps, l1=setup.l1_W, l2=setup.l2_W)
                    if _small_change(before, Wt_b, setup.tol):
                        break

            for _ in blocks.map(work, setup.threads):
                pass
        else:
            H64 = H.astype(np.float64)
            G64 = H64 @ H64.T
            C = np.empty((k, n), dtype=np.float32)

            def product(start, X_b):
                np.matmul(H, X_b.T, out=C[:, start : start + len(X_b)])

            for _ in blocks.map(product, setup.threads):
                pass
            ridge = G64 + np.eye(k) * (setup.l2_W + 1e-12 * max(np.trace(G64), 1e-300))
            Wt[...] = np.maximum(np.linalg.solve(ridge, C.astype(np.float64) - setup.l1_W), 0)
            G = G64.astype(np.float32)
            for _ in range(max(1, setup.max_iter)):
                before = Wt.copy()
                kernels.hals_rows(Wt, G, C, setup.l1_W, setup.l2_W, 1)
                if _small_change(before, Wt, setup.tol):
                    break
    Wt[:, summary.zero_rows] = 0
    return Wt


def _small_change(before: np.ndarray, after: np.ndarray, tol: float) -> bool:
    scale = float(np.abs(after).max())
    if scale == 0:
        return True
    return float(np.abs(after - before).max()) <= max(tol, 1e-7) * scale


def exact_errors(
    blocks: RowBlocks,
    Wt: np.ndarray,
    H: np.ndarray,
    *,
    kl_eps: float | None = None,
    n_threads: int | None = None,
    manage_blas: bool = True,
) -> dict:
    """Exact ||X - WH||_F, mean |X - WH| and (if ``kl_eps``) the KL divergence, in one pass (float64 sums)."""

    def work(start, X_b):
        R = Wt[:, start : start + len(X_b)].T @ H  # WH for the block
        kl = 0.0
        if kl_eps is not None:
            ratio = X_b / np.maximum(R, np.float32(kl_eps))
            np.maximum(ratio, kernels.TINY, out=ratio)
            np.log(ratio, out=ratio)
            kl = float(np.vdot(X_b, ratio)) - float(X_b.sum(dtype=np.float64)) + float(R.sum(dtype=np.float64))
        np.subtract(X_b, R, out=R)
        sq = float(np.einsum("ij,ij->i", R, R).sum(dtype=np.float64))
        np.abs(R, out=R)
        return sq, float(R.sum(axis=1).sum(dtype=np.float64)), kl, R.size

    threads = n_threads or default_threads()
    totals = np.zeros(4)
    with blas_limit(1 if manage_blas else None):
        for part in blocks.map(work, threads):
            totals += part
    sq, absolute, kl, size = totals
    out = {"frobenius": float(np.sqrt(sq)), "mean_abs": float(absolute / max(size, 1))}
    if kl_eps is not None:
        out["kl"] = float(kl)
    return out


# -- the estimator ------------------------------------------------------------------------------
class NMF(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Non-negative matrix factorisation X ~= W H (positions x features), float32.

    Parameters
    ----------
    n_components : int, optional
        k. None uses min(n_positions, n_features).
    solver : {'hals', 'mu', 'kl', 'compressed'}, default 'hals'
        See the module docstring. HALS is the default: monotone, several
        times fewer passes over X than multiplicative updates for the same
        objective, and it revives zero entries, which warm starts need.
        ``'kl'`` is multiplicative updates on the KL divergence;
        ``'compressed'`` is randomised HALS for large matrices.
    beta_loss : {'frobenius', 'kullback-leibler'}, default 'frobenius'
        Loss for ``solver='mu'``; ``'hals'`` and ``'compressed'`` need Frobenius,
        ``'kl'`` always uses KL.
    init : {'random', 'nndsvd', 'nndsvda', 'custom'}, optional
        None uses 'nndsvda' (or 'custom' when W and H are given). 'random' is
        ``sqrt(mean(X) / k) |N(0, 1)|`` from ``random_state``; 'nndsvd(a)'
        is NNDSVD on a randomised SVD (seeded by ``random_state``).
    max_iter : int, default 200
        Maximum iterations (passes over X; compressed iterations for
        'compressed'). 0 returns the initialisation.
    tol : float, default 1e-4
        Stop when the objective decreased by less than ``tol`` (relative) in
        one iteration. 0 runs ``max_iter`` iterations.
    alpha_W, alpha_H, l1_ratio : float
        Regularisation as in scikit-learn: adds
        ``alpha_W l1_ratio m |W|_1 + 0.5 alpha_W (1 - l1_ratio) m ||W||^2``
        and the same for H with n (n positions, m features); ``alpha_H='same'``
        uses ``alpha_W``.
    random_state : int, Generator or None
        Seed of every random choice (random init, randomised SVD).
    verbose : int
        Log progress at INFO level every 10 iterations.

    Attributes
    ----------
    components_ : (k, n_features) float32
        H.
    n_components_ : int
    n_iter_ : int
    reconstruction_err_ : float
        ``||X - WH||_F`` of the fit, computed exactly (float64 sums) for every
        solver and loss (scikit-learn reports sqrt(2 KL) for the KL loss).
    mean_abs_err_ : float
        ``mean |X - WH|`` of the fit (Cao et al.'s K-component loss).
    objective_ : float
        Final value of the minimised objective (0.5 ||X - WH||^2 or the KL
        divergence, plus penalties).
    loss_curve_ : list of float
        The solver's objective after each iteration.
    n_features_in_ : int

    Notes
    -----
    All-zero rows of X are kept and get zero weights; all-zero columns get zero
    component values. Passing ``W`` and ``H`` to ``fit`` warm-starts from them
    (a copy; the caller's arrays are not changed). The multiplicative solvers
    cannot move entries that are exactly zero, so for them exact zeros of a
    warm start are raised to 1e-4 of the random-init scale; a component that is
    zero in both W and H is re-seeded with small random values for every solver.

    Examples
    --------
    >>> W = NMF(10, random_state=0).fit_transform(X)         # doctest: +SKIP
    >>> W2 = NMF(11).fit_transform(X, W=np.hstack([W, w]), H=np.vstack([nmf.components_, h]))  # doctest: +SKIP
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "solver": [StrOptions(set(SOLVERS))],
        "beta_loss": [StrOptions({"frobenius", "kullback-leibler"}), Options(numbers.Real, {1, 2})],
        "init": [StrOptions(set(INITS)), None],
        "max_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "alpha_W": [Interval(numbers.Real, 0, None, closed="left")],
        "alpha_H": [Interval(numbers.Real, 0, None, closed="left"), StrOptions({"same"})],
        "l1_ratio": [Interval(numbers.Real, 0, 1, closed="both")],
        "random_state": [Interval(numbers.Integral, 0, None, closed="left"), np.random.RandomState, np.random.Generator,
                         None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        solver="hals",
        beta_loss="frobenius",
        init=None,
        max_iter=200,
        tol=1e-4,
        alpha_W=0.0,
        alpha_H="same",
        l1_ratio=0.0,
        random_state=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.solver = solver
        self.beta_loss = beta_loss
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_W = alpha_W
        self.alpha_H = alpha_H
        self.l1_ratio = l1_ratio
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- options -------------------------------------------------------------------------
    def _check_options(self) -> tuple[str, str]:
        """(loss, solver) after validating every option."""
        check_params(self)
        loss = "kl" if self.solver == "kl" else _LOSSES[self.beta_loss]
        solver = "mu" if self.solver == "kl" else self.solver
        if loss == "kl" and solver in ("hals", "compressed"):
            raise ConfigError(
                f"solver={self.solver!r} minimises the Frobenius loss, not beta_loss={self.beta_loss!r}",
                "use solver='kl' (or 'mu') for the Kullback-Leibler loss",
            )
        return loss, solver

    def _setup(self, loss: str, solver: str, shape: tuple[int, int]) -> _Setup:
        n, m = shape
        alpha_H = self.alpha_W if self.alpha_H == "same" else self.alpha_H
        return _Setup(
            loss=loss,
            solver=solver,
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            l1_W=float(m * self.alpha_W * self.l1_ratio),
            l2_W=float(m * self.alpha_W * (1 - self.l1_ratio)),
            l1_H=float(n * alpha_H * self.l1_ratio),
            l2_H=float(n * alpha_H * (1 - self.l1_ratio)),
            verbose=int(self.verbose),
        )

    def _k(self, shape: tuple[int, int]) -> int:
        limit = min(shape)
        k = limit if self.n_components is None else int(self.n_components)
        if k > limit:
            raise ConfigError(
                f"n_components={k} is larger than min(n_positions, n_features) = {limit} for X of shape {shape}",
                f"use at most {limit} components",
            )
        return k

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None, W=None, H=None):
        """Fit the model to X (array-like or :class:`RowBlocks`); returns self."""
        self.fit_transform(X, W=W, H=H)
        return self

    def fit_transform(self, X, y=None, W=None, H=None):
        """Fit the model to X and return W.

        Parameters
        ----------
        X : array-like (n_positions, n_features), RowBlocks or Compressed
            Non-negative data; float32 is used as is, other types converted.
            A :class:`~stemnmf.decompose.compressed.Compressed` X lends its
            Q B to the NNDSVD start and to ``solver='compressed'``.
        W : (n_positions, k) array, optional
        H : (k, n_features) array, optional
            Warm start (both needed): the fit starts from copies of them.

        Returns
        -------
        W : (n_positions, k) float32
        """
        loss, solver = self._check_options()
        compressed = X if isinstance(X, Compressed) else None
        blocks = as_blocks(X) if compressed is None else compressed.blocks
        summary = blocks.summary()
        shape = summary.shape
        setup = self._setup(loss, solver, shape)
        rng = check_random_state(self.random_state)
        custom = W is not None or H is not None or self.init == "custom"
        k = None if custom and self.n_components is None else self._k(shape)
        qb_cache = None
        if custom:
            Wt, H_ = self._custom_init(W, H, shape, k, setup, summary, rng)
            k = H_.shape[0]
        else:
            init = self.init or "nndsvda"
            if init == "random":
                Wt, H_ = random_init(summary, k, rng)
            elif compressed is not None and compressed.columns >= k:
                qb_cache = compressed.Q, compressed.B
            else:
                power = COMPRESS_POWER_ITER if solver == "compressed" else INIT_POWER_ITER
                oversample = COMPRESS_OVERSAMPLE if solver == "compressed" else 10
                qb_cache = qb(blocks, k, oversample=oversample, power_iter=power, rng=rng)
            if init != "random":
                U, s, Vt = svd_from_qb(*qb_cache, k)
                fill = np.float32(summary.mean) if init == "nndsvda" else None
                Wt, H_ = nndsvd_init(U, s, Vt, fill=fill)
        Wt[:, summary.zero_rows] = 0
        H_[:, summary.zero_cols] = 0
        started = time.perf_counter()
        if setup.max_iter == 0:
            result = FitResult(Wt, H_, 0, [])
        elif solver == "compressed":
            if qb_cache is None and compressed is not None and compressed.columns >= k:
                qb_cache = compressed.Q, compressed.B
            elif qb_cache is None:
                qb_cache = qb(
                    blocks, k, oversample=COMPRESS_OVERSAMPLE, power_iter=COMPRESS_POWER_ITER, rng=rng
                )
            result = solve_compressed(*qb_cache, Wt, H_, setup)
            result.Wt[:, summary.zero_rows] = 0
        else:
            result = solve(blocks, Wt, H_, setup, summary=summary)
        errors = exact_errors(blocks, result.Wt, result.H, kl_eps=kl_eps(summary) if loss == "kl" else None)
        log.debug("NMF %s k=%d: %d iterations in %.3f s", solver, k, result.n_iter, time.perf_counter() - started)
        if setup.max_iter and result.n_iter == setup.max_iter and setup.tol > 0:
            log.info("NMF %s stopped at max_iter=%d before reaching tol=%g", solver, setup.max_iter, setup.tol)
        self.components_ = result.H
        self.n_components_ = int(k)
        self.n_iter_ = int(result.n_iter)
        self.loss_curve_ = [float(v) for v in result.losses]
        self.reconstruction_err_ = errors["frobenius"]
        self.mean_abs_err_ = errors["mean_abs"]
        self.objective_ = _penalised(errors, result.Wt, result.H, setup)
        self.n_features_in_ = int(shape[1])
        self._loss = loss
        return np.ascontiguousarray(result.Wt.T)

    def _custom_init(self, W, H, shape, k, setup, summary, rng):
        if W is None or H is None:
            raise ConfigError(
                "a custom initialisation needs both W and H",
                "pass W=... and H=... to fit, or choose init='random' or 'nndsvda'",
            )
        n, m = shape
        W = np.array(W, dtype=np.float32, copy=True)
        H = np.array(H, dtype=np.float32, copy=True)
        if W.ndim != 2 or H.ndim != 2 or W.shape[0] != n or H.shape[1] != m or W.shape[1] != H.shape[0]:
            raise DataValueError(
                f"warm start W {W.shape} and H {H.shape} do not fit X {shape}",
                f"give W of shape ({n}, k) and H of shape (k, {m})",
            )
        if k is not None and W.shape[1] != k:
            raise ConfigError(
                f"n_components={k} but the warm start has {W.shape[1]} components",
                "set n_components to the number of columns of W (or None)",
            )
        k = W.shape[1]
        if k > min(shape):
            raise ConfigError(
                f"the warm start has {k} components, more than min(n_positions, n_features) = {min(shape)}",
                f"use at most {min(shape)} components",
            )
        for name, A in (("W", W), ("H", H)):
            if not np.isfinite(A).all():
                raise DataValueError(f"warm start {name} has NaN or Inf values", "give finite factors")
            if (A < 0).any():
                raise DataValueError(f"warm start {name} has negative values", "clip it at zero")
        Wt = np.ascontiguousarray(W.T)
        scale = np.float32(np.sqrt(summary.mean / k))
        dead = ~(Wt.any(axis=1) | H.any(axis=1))
        if dead.any():
            log.info("warm start: %d components are zero in W and H; re-seeding them", int(dead.sum()))
            Wt_r, H_r = random_init(summary, int(dead.sum()), rng)
            Wt[dead] = Wt_r * np.float32(0.01)
            H[dead] = H_r * np.float32(0.01)
        if setup.solver == "mu":
            floor = np.float32(1e-4) * scale
            Wt[Wt == 0] = floor
            H[H == 0] = floor
        return Wt, H

    # -- using a fitted model ---------------------------------------------------------------
    def transform(self, X):
        """W for new X with the fitted components fixed (non-negative least squares per position).

        For the Frobenius loss this reads X once (HALS on H X^T); for KL it
        runs multiplicative updates block by block.

        Returns
        -------
        W : (n_positions, k) float32
        """
        check_is_fitted(self, "components_")
        blocks = as_blocks(X)
        summary = blocks.summary()
        if summary.shape[1] != self.components_.shape[1]:
            raise DataValueError(
                f"X has {summary.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.components_.shape[1]} features as input",
                "transform data featurised like the training data",
            )
        loss, solver = self._check_options()
        setup = self._setup(loss, solver, summary.shape)
        setup.max_iter = max(setup.max_iter, 1)
        setup.tol = setup.tol or 1e-6
        Wt = solve_w(blocks, self.components_, setup, summary=summary)
        return np.ascontiguousarray(Wt.T)

    def inverse_transform(self, W):
        """X reconstructed from W: ``W @ components_`` (float32)."""
        check_is_fitted(self, "components_")
        W = np.asarray(W, dtype=np.float32)
        if W.ndim != 2 or W.shape[1] != self.components_.shape[0]:
            raise DataValueError(
                f"W has shape {W.shape}; expected (n_positions, {self.components_.shape[0]})",
                "pass the output of transform or fit_transform",
            )
        return W @ self.components_

    def to_results(self, W=None, scan_shape=None) -> dict:
        """``{path: value}`` for the results file; see :func:`stemnmf.decompose.to_results`."""
        return to_results(self, W, scan_shape)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]


def _penalised(errors: dict, Wt: np.ndarray, H: np.ndarray, setup: _Setup) -> float:
    value = errors["kl"] if setup.loss == "kl" else 0.5 * errors["frobenius"] ** 2
    if not (setup.l1_W or setup.l2_W or setup.l1_H or setup.l2_H):
        return float(value)
    W64, H64 = Wt.astype(np.float64), H.astype(np.float64)
    value += setup.l1_W * W64.sum() + 0.5 * setup.l2_W * np.vdot(W64, W64)
    value += setup.l1_H * H64.sum() + 0.5 * setup.l2_H * np.vdot(H64, H64)
    return float(value)
