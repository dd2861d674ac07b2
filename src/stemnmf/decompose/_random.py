"""Random states, the randomised range finder (QB) over row blocks, and NMF initialisations."""

from __future__ import annotations

import logging

import numpy as np

from stemnmf.decompose.blocks import RowBlocks, Summary, blas_limit, default_threads
from stemnmf.errors import ConfigError

log = logging.getLogger(__name__)


def check_random_state(random_state) -> np.random.Generator:
    """A :class:`numpy.random.Generator` from None, an int, a SeedSequence, a Generator or a RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer, np.random.SeedSequence)):
        if isinstance(random_state, (int, np.integer)) and random_state < 0:
            raise ConfigError(f"random_state={random_state} must be non-negative")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise ConfigError(
        f"random_state={random_state!r} is not a seed",
        "give an int, None or a numpy.random.Generator",
    )


def qb(
    blocks: RowBlocks,
    rank: int,
    *,
    oversample: int = 10,
    power_iter: int = 2,
    center: np.ndarray | None = None,
    rng: np.random.Generator,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomised QB decomposition X ~= Q B (Halko, Martinsson & Tropp 2011).

    Parameters
    ----------
    blocks : RowBlocks
        X (n, m), read in ``2 * power_iter + 2`` passes.
    rank : int
        Target rank; ``rank + oversample`` columns are sampled (at most min(n, m)).
    power_iter : int
        Subspace (power) iterations, orthonormalised each time.
    center : (m,) array, optional
        Column means to subtract (the centred matrix is never formed).
    rng : numpy.random.Generator
    n_threads : int, optional
        Threads sharing the row blocks (default: every core).

    Returns
    -------
    Q : (n, l) float32
        Orthonormal columns spanning the approximate range of X.
    B : (l, m) float32
        ``Q.T @ X``.
    """
    n, m = blocks.shape
    ell = int(min(rank + oversample, n, m))
    omega = rng.standard_normal((m, ell), dtype=np.float32)
    mu = None if center is None else np.asarray(center, dtype=np.float32)

    threads = n_threads or default_threads()

    def times(Z):  # X @ Z (n, l), centred if asked
        Y = np.empty((n, Z.shape[1]), dtype=np.float32)

        def work(start, X_b):
            np.matmul(X_b, Z, out=Y[start : start + len(X_b)])

        for _ in blocks.map(work, threads):
            pass
        if mu is not None:
            Y -= mu @ Z
        return Y

    def times_t(Q):  # X.T @ Q (m, l), centred if asked, summed in float64
        Z = np.zeros((m, Q.shape[1]))
        for part in blocks.map(lambda start, X_b: X_b.T @ Q[start : start + len(X_b)], threads):
            Z += part
        if mu is not None:
            Z -= np.outer(mu, Q.sum(axis=0, dtype=np.float64))
        return Z

    with blas_limit(1):
        Y = times(omega)
        for _ in range(power_iter):
            Q, _ = np.linalg.qr(Y)
            Z, _ = np.linalg.qr(times_t(Q))
            Y = times(Z.astype(np.float32))
        Q, _ = np.linalg.qr(Y)
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        B = times_t(Q).T
    return Q, np.ascontiguousarray(B, dtype=np.float32)


def svd_from_qb(Q: np.ndarray, B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k singular triplets of Q B: U (n, k) float32, s (k,) float64, Vt (k, m) float32."""
    Ub, s, Vt = np.linalg.svd(B.astype(np.float64), full_matrices=False)
    U = Q @ Ub[:, :k].astype(np.float32)
    return U, s[:k], Vt[:k].astype(np.float32)


def random_init(summary: Summary, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Wt (k, n) and H (k, m): |N(0, 1)| scaled by sqrt(mean(X) / k), so WH has X's mean scale."""
    n, m = summary.shape
    scale = np.float32(np.sqrt(summary.mean / k))
    H = np.abs(rng.standard_normal((k, m), dtype=np.float32)) * scale
    Wt = np.abs(rng.standard_normal((k, n), dtype=np.float32)) * scale
    return Wt, H


def nndsvd_init(
    U: np.ndarray, s: np.ndarray, Vt: np.ndarray, *, fill: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVD (Boutsidis & Gallopoulos 2008) from the top-k singular triplets.

    Each singular pair (u, v) is split into its positive and negative parts;
    the pair of parts with the larger product of norms, normalised, scaled by
    sqrt(s * that product), gives one column of W and one row of H. With
    ``fill`` (NNDSVDa) the zeros are replaced by ``fill`` (the mean of X).

    Returns
    -------
    Wt : (k, n) float32
    H : (k, m) float32
    """
    U = U.astype(np.float64)
    V = Vt.astype(np.float64)
    Up, Un = np.maximum(U, 0), np.maximum(-U, 0)
    Vp, Vn = np.maximum(V, 0), np.maximum(-V, 0)
    nup, nun = np.linalg.norm(Up, axis=0), np.linalg.norm(Un, axis=0)
    nvp, nvn = np.linalg.norm(Vp, axis=1), np.linalg.norm(Vn, axis=1)
    mp, mn = nup * nvp, nun * nvn
    positive = mp >= mn
    u = np.where(positive, Up, Un)  # (n, k)
    v = np.where(positive[:, None], Vp, Vn)  # (k, m)
    nu = np.where(positive, nup, nun)
    nv = np.where(positive, nvp, nvn)
    sigma = np.where(positive, mp, mn)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(nu > 0, u / nu, 0.0)
        v = np.where(nv[:, None] > 0, v / nv[:, None], 0.0)
    lam = np.sqrt(np.maximum(s, 0) * sigma)
    Wt = (u * lam).T.astype(np.float32)
    H = (v * lam[:, None]).astype(np.float32)
    if fill is not None:
        Wt[Wt == 0] = fill
        H[H == 0] = fill
    return np.ascontiguousarray(Wt), np.ascontiguousarray(H)
