"""Update kernels of the NMF solvers, written for row blocks of X.

One iteration of every solver is a map over row blocks followed by a small
reduction::

    for each row block X_b (with its rows W_b of W):
        W_b, partial = w_step(X_b, W_b, H, stats)      # row-local, reads X_b once
        total += partial                                # sums, float64
    H = h_step(H, total)                                # k x n_features, small

so the same functions serve the in-memory solver (blocks are views), the
out-of-core path (:class:`~stemnmf.decompose.blocks.RowBlocks` over a file)
and a distributed map-reduce (each worker holds its own W_b; only H and the
partials of shape (k, n_features) and (k, k) travel).

Layout: W is held transposed, ``Wt`` of shape (k, n_positions), so a
component's weights are a contiguous row (``W = Wt.T``). ``Wt_b`` below is
``Wt[:, start:stop]`` for a block.

Objectives (scikit-learn's conventions)::

    Frobenius:  0.5 ||X - WH||^2 + l1_W |W|_1 + 0.5 l2_W ||W||^2 + l1_H |H|_1 + 0.5 l2_H ||H||^2
    KL:         sum(X log(X / WH) - X + WH) + the same penalties

All arrays are float32 except the partial sums, which are float64.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "FrobeniusPartial",
    "KLPartial",
    "frobenius_w_step",
    "kl_w_step",
    "hals_rows",
    "mu_rows",
    "frobenius_h_step",
    "kl_h_step",
    "frobenius_objective",
    "kl_objective",
]

#: Smallest positive float32: floors denominators, so 0 / 0 gives 0 (never NaN).
TINY = np.float32(np.finfo(np.float32).tiny)


@dataclasses.dataclass
class FrobeniusPartial:
    """Sums over row blocks that update H for the Frobenius loss (float64).

    Attributes
    ----------
    WtX : (k, n_features)
        W^T X.
    WtW : (k, k)
        W^T W.
    W_sum : (k,)
        Column sums of W (for the L1 penalty).
    """

    WtX: np.ndarray
    WtW: np.ndarray
    W_sum: np.ndarray

    @classmethod
    def zeros(cls, k: int, m: int) -> FrobeniusPartial:
        return cls(np.zeros((k, m)), np.zeros((k, k)), np.zeros(k))

    def fill(self, value: float = 0.0) -> None:
        self.WtX.fill(value)
        self.WtW.fill(value)
        self.W_sum.fill(value)

    def __iadd__(self, other: FrobeniusPartial) -> FrobeniusPartial:
        self.WtX += other.WtX
        self.WtW += other.WtW
        self.W_sum += other.W_sum
        return self


@dataclasses.dataclass
class KLPartial:
    """Sums over row blocks that update H for the KL loss (float64).

    Attributes
    ----------
    WtV : (k, n_features)
        W^T (X / WH), with W the updated and H the current factors.
    W_sum : (k,)
        Column sums of W.
    W_sq : float
        ||W||_F^2 (for the L2 penalty).
    x_log : float
        sum(X log(X / WH)) over the entries where X > 0.
    """

    WtV: np.ndarray
    W_sum: np.ndarray
    W_sq: float
    x_log: float

    @classmethod
    def zeros(cls, k: int, m: int) -> KLPartial:
        return cls(np.zeros((k, m)), np.zeros(k), 0.0, 0.0)

    def fill(self, value: float = 0.0) -> None:
        self.WtV.fill(value)
        self.W_sum.fill(value)
        self.W_sq = value
        self.x_log = value

    def __iadd__(self, other: KLPartial) -> KLPartial:
        self.WtV += other.WtV
        self.W_sum += other.W_sum
        self.W_sq += other.W_sq
        self.x_log += other.x_log
        return self


# -- generic row updates -------------------------------------------------------------------
def hals_rows(A: np.ndarray, G: np.ndarray, C: np.ndarray, l1: float = 0.0, l2: float = 0.0, sweeps: int = 1) -> None:
    """HALS (exact coordinate descent on rows) for min_{A>=0} 0.5 tr(A^T G A) - <C, A> + penalties.

    Updates ``A`` (k, p) in place, one row at a time::

        A[j] = max(0, A[j] - (G[j] @ A - C[j] + l1 + l2 A[j]) / (G[j, j] + l2))

    which is the exact minimiser over row j with the others fixed, so the
    objective never increases. Rows with ``G[j, j] + l2 == 0`` (a dead
    component) are left unchanged. ``G`` (k, k) and ``C`` (k, p) are float32.
    """
    k = A.shape[0]
    diag = np.diagonal(G).astype(np.float64) + l2
    live = diag > 0
    inv = np.where(live, 1.0 / np.where(live, diag, 1.0), 0.0)
    # fold the penalties in: (G + l2 I)[j] @ A - (C[j] - l1), everything scaled by 1 / diag[j]
    Gs = G.astype(np.float64)
    if l2:
        Gs = Gs + l2 * np.eye(k)
    Gs = (Gs * inv[:, None]).astype(A.dtype)
    Cs = C - np.float32(l1) if l1 else C
    Cs = (Cs * inv[:, None].astype(np.float32)).astype(A.dtype, copy=False)
    step = np.empty(A.shape[1], dtype=A.dtype)
    rows = [j for j in range(k) if live[j]]
    for _ in range(sweeps):
        for j in rows:
            row = A[j]
            np.matmul(Gs[j], A, out=step)
            step -= Cs[j]
            row -= step
            np.maximum(row, 0, out=row)


def mu_rows(A: np.ndarray, G: np.ndarray, C: np.ndarray, l1: float = 0.0, l2: float = 0.0) -> None:
    """Lee-Seung multiplicative update of ``A`` (k, p) in place: A *= C / (G A + l1 + l2 A).

    Denominators are floored at the smallest positive float32, so an entry
    whose numerator and denominator are both zero becomes zero (never NaN).
    """
    den = G @ A
    if l1:
        den += np.float32(l1)
    if l2:
        den += np.float32(l2) * A
    np.maximum(den, TINY, out=den)
    np.divide(C, den, out=den)
    A *= den


# -- Frobenius ------------------------------------------------------------------------------
def frobenius_w_step(
    X_b: np.ndarray,
    Wt_b: np.ndarray,
    H: np.ndarray,
    HHt: np.ndarray,
    *,
    solver: str = "hals",
    l1: float = 0.0,
    l2: float = 0.0,
    sweeps: int = 1,
    out: FrobeniusPartial | None = None,
) -> FrobeniusPartial:
    """Update the rows of W for one block (Frobenius loss) and return the block's partial sums.

    Parameters
    ----------
    X_b : (n_b, n_features) float32
        A row block of X.
    Wt_b : (k, n_b) float32
        The block's weights, transposed; updated in place.
    H : (k, n_features) float32
        Current components.
    HHt : (k, k) float32
        ``H @ H.T``.
    solver : {'hals', 'mu'}
    l1, l2 : float
        Penalties on W (already scaled as in scikit-learn).
    sweeps : int
        HALS sweeps over the block's rows (the product X_b H^T is reused).
    out : FrobeniusPartial, optional
        Accumulator to add the partial sums to (returned).

    Returns
    -------
    FrobeniusPartial
        W_b^T X_b, W_b^T W_b and the column sums of W_b, with the updated W_b.
    """
    k = Wt_b.shape[0]
    if out is None:
        out = FrobeniusPartial.zeros(k, X_b.shape[1])
    C = H @ X_b.T  # (k, n_b): reads X_b
    if solver == "mu":
        mu_rows(Wt_b, HHt, C, l1, l2)
    else:
        hals_rows(Wt_b, HHt, C, l1, l2, sweeps)
    out.WtX += Wt_b @ X_b  # reads X_b again, from cache
    out.WtW += Wt_b @ Wt_b.T  # float32 product of the block (as W^T X), summed over blocks in float64
    out.W_sum += Wt_b.sum(axis=1, dtype=np.float64)
    return out


def frobenius_h_step(
    H: np.ndarray,
    partial: FrobeniusPartial,
    *,
    solver: str = "hals",
    l1: float = 0.0,
    l2: float = 0.0,
    sweeps: int = 1,
) -> None:
    """Update H (k, n_features) in place from the summed partials of all blocks."""
    G = partial.WtW.astype(np.float32)
    C = partial.WtX.astype(np.float32)
    if solver == "mu":
        mu_rows(H, G, C, l1, l2)
    else:
        hals_rows(H, G, C, l1, l2, sweeps)


def frobenius_objective(
    sq_norm_X: float,
    H: np.ndarray,
    HHt64: np.ndarray,
    partial: FrobeniusPartial,
    *,
    l1_W: float = 0.0,
    l2_W: float = 0.0,
    l1_H: float = 0.0,
    l2_H: float = 0.0,
) -> float:
    """The penalised objective at (W, H) from quantities one iteration already has.

    ``0.5 ||X - WH||^2 = 0.5 (||X||^2 - 2 <H, W^T X> + <W^T W, H H^T>)``, so no
    further pass over X is needed. ``HHt64`` is ``H @ H.T`` in float64.
    """
    H64 = H.astype(np.float64)
    cross = float(np.vdot(H64, partial.WtX))
    quad = float(np.vdot(partial.WtW, HHt64))
    value = 0.5 * max(sq_norm_X - 2.0 * cross + quad, 0.0)
    if l1_W:
        value += l1_W * float(partial.W_sum.sum())
    if l2_W:
        value += 0.5 * l2_W * float(np.trace(partial.WtW))
    if l1_H:
        value += l1_H * float(H64.sum())
    if l2_H:
        value += 0.5 * l2_H * float(np.trace(HHt64))
    return value


# -- Kullback-Leibler -----------------------------------------------------------------------
def kl_w_step(
    X_b: np.ndarray,
    Wt_b: np.ndarray,
    H: np.ndarray,
    H_sum: np.ndarray,
    *,
    eps: float,
    l1: float = 0.0,
    l2: float = 0.0,
    inner: int = 1,
    out: KLPartial | None = None,
) -> KLPartial:
    """Multiplicative KL update of the rows of W for one block, and the block's partial sums.

    ``W_b *= ((X_b / W_b H) H^T) / (1 H^T + l1 + l2 W_b)``, repeated ``inner``
    times (X_b stays in cache); then ``W_b^T (X_b / W_b H)`` for the H update
    and the block's share of the divergence at (new W_b, H). ``W_b H`` is
    floored at ``eps``.
    """
    k = Wt_b.shape[0]
    if out is None:
        out = KLPartial.zeros(k, X_b.shape[1])
    den_base = H_sum.astype(np.float32)[:, None] + np.float32(l1)
    eps = np.float32(eps)
    V = np.empty(X_b.shape, dtype=np.float32)
    for _ in range(inner):
        np.matmul(Wt_b.T, H, out=V)
        np.maximum(V, eps, out=V)
        np.divide(X_b, V, out=V)
        num = H @ V.T  # (k, n_b)
        den = den_base + np.float32(l2) * Wt_b if l2 else den_base
        num /= np.maximum(den, TINY)
        Wt_b *= num
    np.matmul(Wt_b.T, H, out=V)
    np.maximum(V, eps, out=V)
    np.divide(X_b, V, out=V)
    out.WtV += Wt_b @ V
    Wt64 = Wt_b.astype(np.float64)
    out.W_sum += Wt64.sum(axis=1)
    out.W_sq += float(np.vdot(Wt64, Wt64))
    # sum X log(X / WH) = sum X log V; where X == 0, V == 0 and the term is 0
    np.maximum(V, TINY, out=V)
    np.log(V, out=V)
    out.x_log += float(np.vdot(X_b, V))
    return out


def kl_h_step(H: np.ndarray, partial: KLPartial, *, l1: float = 0.0, l2: float = 0.0) -> None:
    """Multiplicative KL update of H in place: H *= (W^T V) / (W^T 1 + l1 + l2 H)."""
    den = partial.W_sum.astype(np.float32)[:, None] + np.float32(l1)
    if l2:
        den = den + np.float32(l2) * H
    den = np.maximum(den, TINY)
    H *= partial.WtV.astype(np.float32) / den


def kl_objective(
    total_X: float,
    H: np.ndarray,
    partial: KLPartial,
    *,
    l1_W: float = 0.0,
    l2_W: float = 0.0,
    l1_H: float = 0.0,
    l2_H: float = 0.0,
) -> float:
    """Generalised KL divergence (plus penalties) at (updated W, H before its update).

    ``sum(WH) = W_sum . H_sum``, so only the ``X log(X / WH)`` term needs the
    pass over X. Both halves of an iteration decrease the divergence, so these
    values never increase from one iteration to the next.
    """
    H64 = H.astype(np.float64)
    value = partial.x_log - total_X + float(partial.W_sum @ H64.sum(axis=1))
    if l1_W:
        value += l1_W * float(partial.W_sum.sum())
    if l2_W:
        value += 0.5 * l2_W * partial.W_sq
    if l1_H:
        value += l1_H * float(H64.sum())
    if l2_H:
        value += 0.5 * l2_H * float(np.vdot(H64, H64))
    return value
