"""Evidence for k that does not look at the patterns: held-out error and split-half stability.

Both come from the same two fits per k on a random subsample of X (at most
``max_positions`` x ``max_features``), so they cost a fixed few seconds
whatever the size of X.

**Bi-cross-validation** (Owen & Perry 2009; for NMF Kanagal & Sindhwani 2010).
The subsample's positions are split into two random halves I1, I2 and its
features into J1, J2. For each half of the positions, NMF is fitted to the
block ``D = X[I_a, J1]`` alone for every k (warm-started from k - 1,
:func:`~stemnmf.kselect.k_component_loss`). The held-out block
``A = X[I_a', J2]`` (the other positions, the other features) is then
predicted without ever being fitted: the weights of the held-out positions
come from their known features, ``B = X[I_a', J1] ~= W_A H_D``, the patterns
of the held-out features from the fitted positions, ``C = X[I_a, J2] ~= W_D
H_A`` (non-negative least squares each), and ``A ~= W_A H_A``. Too few
components miss structure that A shares with D; too many fit the noise of D.
The relative error ``||A - W_A H_A||^2 / ||A||^2`` is kept for both halves.

**Split-half stability.** The two fitted blocks ``X[I1, J1]`` and
``X[I2, J1]`` share their features but no position. Their component
patterns (rows of H) are matched one to one (Hungarian assignment on the
cosine similarity); the stability of k is the smallest matched cosine. A
component that stands for a real domain appears in both halves of the
positions; one that splits a domain arbitrarily, or fits noise, need not.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from stemnmf.decompose.blocks import blas_limit
from stemnmf.decompose.kernels import hals_rows
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect.loss import k_component_loss

__all__ = ["HeldOutEvidence", "held_out_evidence", "match_components", "nnls_rows"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class HeldOutEvidence:
    """Held-out error and split-half stability for a range of k.

    Attributes
    ----------
    k : numpy.ndarray of int64
    error : numpy.ndarray, shape (n_folds, n_k)
        Relative held-out error ``||A - W_A H_A||^2 / ||A||^2`` of each block.
    stability : numpy.ndarray, shape (n_folds // 2, n_k)
        Smallest matched cosine between the patterns fitted to the two halves
        of the positions, per half of the features.
    n_positions, n_features : int
        Size of the subsample.
    seconds : float
    noise_floor : numpy.ndarray, shape (n_folds,), or None
        Expected relative error of a perfect prediction of each held-out
        block, ``gain * sum(A) / ||A||^2`` (Poisson noise with the gain of
        :func:`~stemnmf.kselect.noise.poisson_gain`); None without a gain.
    """

    k: np.ndarray
    error: np.ndarray
    stability: np.ndarray
    n_positions: int
    n_features: int
    seconds: float
    noise_floor: np.ndarray | None = None

    @property
    def mean_error(self) -> np.ndarray:
        """Held-out error averaged over the held-out blocks."""
        return self.error.mean(axis=0)

    @property
    def error_se(self) -> np.ndarray:
        """Standard error of that mean."""
        n = self.error.shape[0]
        return self.error.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(self.k.size)

    @property
    def mean_stability(self) -> np.ndarray:
        return self.stability.mean(axis=0)

    def to_results(self, prefix: str = "/kselect/heldout") -> dict:
        out = {
            f"{prefix}/k": self.k.astype(np.int64),
            f"{prefix}/error": self.error.astype(np.float64),
            f"{prefix}/mean_error": self.mean_error.astype(np.float64),
            f"{prefix}/error_se": self.error_se.astype(np.float64),
            f"{prefix}/stability": self.stability.astype(np.float64),
            f"{prefix}/n_positions": np.int64(self.n_positions),
            f"{prefix}/n_features": np.int64(self.n_features),
        }
        if self.noise_floor is not None:
            out[f"{prefix}/noise_floor"] = np.asarray(self.noise_floor, dtype=np.float64)
        return out


def nnls_rows(G: np.ndarray, C: np.ndarray, *, sweeps: int = 50, tol: float = 1e-4) -> np.ndarray:
    """``A >= 0`` (k, p) minimising ``0.5 tr(A^T G A) - <C, A>`` by HALS from the clipped least-squares solution.

    With ``G = H H^T`` and ``C = H X^T`` this is the non-negative least-squares
    weights of the rows of X on the patterns H.
    """
    G = np.asarray(G, dtype=np.float64)
    k = G.shape[0]
    ridge = G + np.eye(k) * 1e-9 * max(float(np.trace(G)), 1e-300)
    A = np.maximum(np.linalg.solve(ridge, np.asarray(C, dtype=np.float64)), 0).astype(np.float32)
    G32, C32 = G.astype(np.float32), np.asarray(C, dtype=np.float32)
    for _ in range(sweeps):
        before = A.copy()
        hals_rows(A, G32, C32, 0.0, 0.0, 1)
        scale = float(np.abs(A).max())
        if scale == 0 or float(np.abs(A - before).max()) <= tol * scale:
            break
    return A


def match_components(H1: np.ndarray, H2: np.ndarray) -> np.ndarray:
    """Cosine similarity of the one-to-one matching of two sets of patterns that maximises the total (k,)."""
    a = np.asarray(H1, dtype=np.float64)
    b = np.asarray(H2, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    cosine = a @ b.T
    rows, cols = linear_sum_assignment(-cosine)
    return cosine[rows, cols]


def _subsample(X, max_positions: int, max_features: int, rng) -> np.ndarray:
    """Rows and columns of X drawn at random (sorted), as a float32 array; all-zero columns dropped."""
    n, m = X.shape
    rows = np.sort(rng.choice(n, max_positions, replace=False)) if n > max_positions else np.arange(n)
    Xs = np.asarray(X[rows], dtype=np.float32)  # sorted rows: memmaps and HDF5 datasets read them too
    live = np.flatnonzero(Xs.max(axis=0) > 0)
    if live.size > max_features:
        live = np.sort(rng.choice(live, max_features, replace=False))
    return np.ascontiguousarray(Xs[:, live])


def held_out_evidence(
    X,
    k_values=range(3, 21),
    *,
    max_positions: int = 1200,
    max_features: int = 1024,
    random_state=None,
    max_iter: int = 200,
    tol: float = 1e-4,
    n_folds: int = 2,
    gain: float | None = None,
) -> HeldOutEvidence:
    """Bi-cross-validation error and split-half stability of NMF for each k.

    Parameters
    ----------
    X : array_like, shape (n_positions, n_features)
        Non-negative features (ndarray, memmap or anything that takes a
        sorted list of row indices).
    k_values : iterable of int, default range(3, 21)
    max_positions, max_features : int
        Size of the random subsample the fits use (all of X when smaller).
        Each of the four blocks fitted is a quarter of it.
    random_state : int, Generator or None
        Draws the subsample and the halves; seeds the fits.
    max_iter, tol
        Of each NMF fit (HALS, warm-started from k - 1).
    n_folds : {2, 4}, default 2
        Blocks fitted: ``X[I_a, J1]`` for both halves of the positions (2);
        also ``X[I_a, J2]``, predicting ``X[I_a', J1]`` (4: twice the time,
        and a stability per half of the features).
    gain : float, optional
        Poisson gain of X (:func:`~stemnmf.kselect.noise.poisson_gain`): with
        it, the noise floor of each held-out block is kept too.

    Returns
    -------
    HeldOutEvidence

    Raises
    ------
    ConfigError
        When a half of the subsample has fewer rows or columns than the largest k.
    """
    started = time.perf_counter()
    if n_folds not in (2, 4):
        raise ConfigError(f"n_folds={n_folds!r} is not 2 or 4", "use n_folds=2 or n_folds=4")
    if not hasattr(X, "shape") or len(X.shape) != 2:
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataValueError(f"X must be a 2D matrix (positions x features), got shape {X.shape}")
    rng = np.random.default_rng(random_state)
    ks = np.unique(np.asarray(list(k_values), dtype=np.int64))
    Xs = _subsample(X, int(max_positions), int(max_features), rng)
    n, m = Xs.shape
    if min(n, m) // 2 < ks[-1]:
        raise ConfigError(
            f"held-out evidence needs at least {2 * ks[-1]} positions and features, the data has {n} x {m}",
            "scan fewer k or turn the held-out evidence off (evidence='cao')",
        )
    row_half = rng.permutation(n) < n // 2
    col_half = rng.permutation(m) < m // 2
    rows = [np.flatnonzero(row_half), np.flatnonzero(~row_half)]
    cols = [np.flatnonzero(col_half), np.flatnonzero(~col_half)]
    seed = int(rng.integers(2**31))
    with blas_limit(1):  # small products: one BLAS thread is fastest, and the sums do not depend on threads
        error, stability, floor = _fit_and_predict(Xs, rows, cols, ks, max_iter=max_iter, tol=tol, seed=seed)
        if n_folds == 4:  # the same with the halves of the features swapped
            more = _fit_and_predict(Xs, rows, cols[::-1], ks, max_iter=max_iter, tol=tol, seed=seed)
            error, stability = np.vstack([error, more[0]]), np.vstack([stability, more[1]])
            floor = np.concatenate([floor, more[2]])
    seconds = time.perf_counter() - started
    log.info("held-out evidence on %d x %d (subsample) in %.1f s", n, m, seconds)
    noise_floor = None if gain is None else float(gain) * floor
    return HeldOutEvidence(ks, error, stability, n, m, seconds, noise_floor)


def _fit_and_predict(Xs, rows, cols, ks, *, max_iter, tol, seed):
    """(held-out error (2, n_k), split-half stability (1, n_k), sum(A) / ||A||^2 (2,)) of the fits ``X[I_a, J1]``."""
    error = np.zeros((2, ks.size))
    floor = np.zeros(2)
    stability = np.zeros((1, ks.size))
    patterns = {}
    for a in (0, 1):  # fit X[I_a, J1], predict X[I_a', J2]
        D = np.ascontiguousarray(Xs[np.ix_(rows[a], cols[0])])
        A = Xs[np.ix_(rows[1 - a], cols[1])]
        B = Xs[np.ix_(rows[1 - a], cols[0])]
        C = Xs[np.ix_(rows[a], cols[1])]
        a_sq = float(np.einsum("ij,ij->", A, A, dtype=np.float64)) or 1.0
        floor[a] = float(A.sum(dtype=np.float64)) / a_sq
        fits = k_component_loss(D, ks, max_iter=max_iter, tol=tol, random_state=seed).factors
        for i, k in enumerate(ks):
            W_D, H_D = fits[int(k)]
            W_A = nnls_rows(H_D @ H_D.T, H_D @ B.T).T  # held-out positions on the fitted patterns
            H_A = nnls_rows(W_D.T @ W_D, W_D.T @ C)  # held-out features on the fitted weights
            R = A - W_A @ H_A
            error[a, i] = float(np.einsum("ij,ij->", R, R, dtype=np.float64)) / a_sq
            patterns[(a, int(k))] = H_D
    for i, k in enumerate(ks):
        stability[0, i] = float(match_components(patterns[(0, int(k))], patterns[(1, int(k))]).min())
    return error, stability, floor
