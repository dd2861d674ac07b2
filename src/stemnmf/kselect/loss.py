"""The K-component loss: how well k components reconstruct X, for a range of k.

For each k, X (n_positions x n_features) is factorised with
:class:`stemnmf.decompose.NMF` and the mean absolute difference between X and
WH is recorded (Cao et al. 2025), with the Frobenius error, the explained
fraction of the signal and the time taken.

Warm start: the fit for k starts from the fit for the previous k with one new
component appended, built from the residual at the position worst
reconstructed and refined by rank-1 alternating least squares on the residual
(:func:`append_component`). The first k starts from ``init`` (NNDSVDa by
default). ``bench/kselect_speed.py`` and ``bench/kselect_quality.py`` compare
it with refitting every k from scratch: the same knee and choice of k in
fewer iterations; where k is below the number of distinct patterns the two
starts can end in different local minima of NMF (either may be lower).

X is validated once and read in row blocks (:class:`stemnmf.decompose.RowBlocks`,
whose cached summary every fit reuses); the scan's own products with X use
whole-array BLAS when X is in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable

import numpy as np

from stemnmf.decompose import NMF, Compressed, RowBlocks
from stemnmf.errors import ConfigError, DataValueError

__all__ = ["KLoss", "k_component_loss", "residual_stats", "positive_residual", "row_residuals", "append_component"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class KLoss:
    """The K-component loss curve and the fit behind each point.

    Attributes
    ----------
    k : numpy.ndarray of int64, shape (n_k,)
        Numbers of components, increasing.
    loss : numpy.ndarray of float64
        K-component loss: mean of ``|X - WH|`` over all entries.
    frobenius : numpy.ndarray of float64
        ``||X - WH||_F``.
    explained : numpy.ndarray of float64
        ``1 - ||X - WH||_F^2 / ||X||_F^2``: fraction of the signal energy
        reconstructed.
    seconds : numpy.ndarray of float64
        Wall time of each k (fit plus loss pass).
    n_iter : numpy.ndarray of int64
        Solver iterations of each fit.
    warm : numpy.ndarray of bool
        True where the fit started from the previous k.
    factors : dict of int to (W, H)
        W (n_positions, k) and H (k, n_features), float32, for each k (empty
        when the scan ran with ``keep_factors=False``).
    """

    k: np.ndarray
    loss: np.ndarray
    frobenius: np.ndarray
    explained: np.ndarray
    seconds: np.ndarray
    n_iter: np.ndarray
    warm: np.ndarray
    factors: dict = dataclasses.field(default_factory=dict, repr=False)

    def components(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(W, H) of the fit with ``k`` components."""
        k = int(k)
        if k not in self.factors:
            kept = sorted(self.factors)
            raise ConfigError(
                f"no factors kept for k = {k}",
                f"choose one of {kept}" if kept else "run k_component_loss with keep_factors=True",
            )
        return self.factors[k]

    def to_results(self, prefix: str = "/kselect") -> dict:
        """The curve as results datasets under ``prefix``."""
        return {
            f"{prefix}/k": self.k.astype(np.int64),
            f"{prefix}/loss": self.loss.astype(np.float64),
            f"{prefix}/frobenius": self.frobenius.astype(np.float64),
            f"{prefix}/explained": self.explained.astype(np.float64),
            f"{prefix}/seconds": self.seconds.astype(np.float64),
            f"{prefix}/n_iter": self.n_iter.astype(np.int64),
            f"{prefix}/warm_start": self.warm.astype(np.int8),
        }


class _Data:
    """X for the scan's own passes: whole-array BLAS products when X is in memory, row blocks otherwise.

    In memory, one product with all of X is several times faster than the
    same product over 8 MiB row blocks; a matrix on disk (memmap, HDF5, dask)
    is read block by block.
    """

    def __init__(self, X):
        self.compressed = None
        if isinstance(X, _Data):
            self.__dict__.update(X.__dict__)
            return
        if isinstance(X, Compressed):  # products with X taken on Q B; exact passes read X
            self.array, self.blocks, self.compressed = None, X.blocks, X
            return
        if isinstance(X, RowBlocks):
            self.array, self.blocks = None, X
            return
        if isinstance(X, np.ndarray) and not isinstance(X, np.memmap):
            if X.dtype.kind not in "biuf":
                raise DataValueError(f"X must hold real numbers, got dtype {X.dtype}")
            self.array = np.ascontiguousarray(X, dtype=np.float32)  # no copy for C-ordered float32
            self.blocks = RowBlocks(self.array)  # used in place
        else:
            self.array, self.blocks = None, RowBlocks(X)

    @property
    def shape(self) -> tuple[int, int]:
        return self.blocks.shape

    @property
    def source(self):
        """What the fits read: the compressed X when there is one, else the row blocks."""
        return self.blocks if self.compressed is None else self.compressed

    def times(self, v: np.ndarray) -> np.ndarray:
        """``X @ v`` for a vector (m,) or matrix (m, c), float32 (``Q B v`` when compressed)."""
        if self.compressed is not None:
            return self.compressed.times(v)
        if self.array is not None:
            return self.array @ v
        return np.concatenate([part for part in self.blocks.map(lambda start, xb: xb @ v)])

    def left_times(self, u: np.ndarray) -> np.ndarray:
        """``u @ X`` (m,) for u (n,), float32 (block sums in float64; ``u Q B`` when compressed)."""
        if self.compressed is not None:
            return self.compressed.left_times(u)
        if self.array is not None:
            return u @ self.array
        total = np.zeros(self.shape[1], dtype=np.float64)
        for part in self.blocks.map(lambda start, xb: u[start : start + len(xb)] @ xb):
            total += part
        return total.astype(np.float32)

    def row(self, i: int) -> np.ndarray:
        if self.array is not None:
            return self.array[i].copy()
        for start, xb in self.blocks:
            if start <= i < start + len(xb):
                return np.array(xb[i - start], dtype=np.float32)
        raise IndexError(i)  # pragma: no cover

    def row_norms_sq(self) -> np.ndarray:
        """Per row, ``sum x**2`` (float64)."""
        parts = self.blocks.map(lambda start, xb: np.einsum("ij,ij->i", xb, xb, dtype=np.float64))
        return np.concatenate(list(parts))


def residual_stats(X, W, H) -> tuple[float, float, float, np.ndarray]:
    """Statistics of ``R = X - W H`` in one pass over row blocks of X.

    Parameters
    ----------
    X : array_like or RowBlocks, shape (n, m)
        Data (anything that slices by rows: ndarray, memmap, h5py dataset).
    W : numpy.ndarray, shape (n, k)
    H : numpy.ndarray, shape (k, m)

    Returns
    -------
    abs_sum : float
        ``sum |R|`` (float64).
    sq_sum : float
        ``sum R**2`` (float64).
    x_sq_sum : float
        ``sum X**2`` (float64).
    pos_sq : numpy.ndarray, shape (n,)
        Per row, ``sum max(R, 0)**2``: where the fit misses signal.
    """
    blocks = _Data(X).blocks
    W = np.asarray(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float32)
    abs_sum = sq_sum = x_sq = 0.0
    pos_sq = np.empty(W.shape[0], dtype=np.float64)
    for start, xb in blocks:
        stop = start + len(xb)
        x_sq += float(np.einsum("ij,ij->", xb, xb, dtype=np.float64))
        rb = xb - W[start:stop] @ H  # a new array: X is never written
        abs_sum += float(np.abs(rb).sum(dtype=np.float64))
        sq_sum += float(np.einsum("ij,ij->", rb, rb, dtype=np.float64))
        np.maximum(rb, 0, out=rb)
        pos_sq[start:stop] = np.einsum("ij,ij->i", rb, rb, dtype=np.float64)
    return abs_sum, sq_sum, x_sq, pos_sq


def positive_residual(X, W, H) -> np.ndarray:
    """Per row of X, ``sum max(X - W H, 0)**2`` (float64), by row blocks."""
    return residual_stats(X, W, H)[3]


def row_residuals(X, W, H, row_norms_sq=None) -> np.ndarray:
    """Per row of X, ``||x - w H||**2`` (float64) from ``X H^T``, without forming WH.

    ``||x||^2 - 2 w . (H x) + w (H H^T) w``: one product of X with k columns,
    about a third of a solver iteration.
    """
    data = _Data(X)
    W = np.asarray(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float32)
    norms = data.row_norms_sq() if row_norms_sq is None else row_norms_sq
    XHt = data.times(np.ascontiguousarray(H.T)).astype(np.float64)
    W64 = W.astype(np.float64)
    G = H.astype(np.float64) @ H.astype(np.float64).T
    out = norms - 2.0 * np.einsum("ij,ij->i", XHt, W64) + np.einsum("ij,ij->i", W64 @ G, W64)
    return np.maximum(out, 0.0)


def append_component(X, W, H, residuals=None, *, refine: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Factors with one more component, taken from the residual ``R = X - W H``.

    The new pattern starts as the positive residual at the row worst
    reconstructed (largest ``||x - w H||^2``). Then ``refine`` rounds of rank-1
    non-negative alternating least squares on R, ``w = max(R h, 0) / (h . h)``
    and ``h = max(R^T w, 0) / (w . w)``, average it over the positions where
    it fits. R is never formed: ``R h = X h - W (H h)`` and
    ``R^T w = X^T w - H^T (W^T w)`` are products of X with one vector.

    Parameters
    ----------
    X : array_like or RowBlocks, shape (n, m)
    W : numpy.ndarray, shape (n, k)
    H : numpy.ndarray, shape (k, m)
    residuals : numpy.ndarray, shape (n,), optional
        Per-row squared residuals (:func:`row_residuals`); computed when not given.
    refine : int, default 2
        Alternating rounds before the final weights.

    Returns
    -------
    W1 : numpy.ndarray, shape (n, k + 1), float32
    H1 : numpy.ndarray, shape (k + 1, m), float32
    """
    data = _Data(X)
    W = np.asarray(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float32)
    n, m = data.shape
    if residuals is None:
        residuals = row_residuals(data, W, H)
    row = int(np.argmax(residuals))
    h = np.maximum(data.row(row) - W[row] @ H, 0).astype(np.float32)
    tiny = np.float32(np.finfo(np.float32).eps)
    if not h.any():
        # nothing left to explain: a tiny component keeps the shapes valid
        h = np.full(m, tiny)

    def weights(h):
        hh = np.float32(np.dot(h.astype(np.float64), h))
        return np.maximum((data.times(h) - W @ (H @ h)) / hh, 0).astype(np.float32)

    w = weights(h)
    for _ in range(refine):
        ww = float(np.dot(w.astype(np.float64), w))
        if ww <= 0:
            break
        h_new = np.maximum((data.left_times(w) - (w @ W) @ H) / np.float32(ww), 0).astype(np.float32)
        if not h_new.any():
            break
        h = h_new
        w = weights(h)
    if not w.any():
        w = np.full(n, tiny)
    # balance the scales of the new pair, as the solvers do for each component
    scale = np.float32(np.sqrt((np.linalg.norm(w) + 1e-30) / (np.linalg.norm(h) + 1e-30)))
    w, h = w / scale, h * scale
    return np.column_stack([W, w]).astype(np.float32), np.vstack([H, h[None]]).astype(np.float32)


def _check_k_values(k_values, shape) -> np.ndarray:
    try:
        ks = np.asarray(list(k_values) if isinstance(k_values, Iterable) else [k_values], dtype=np.int64)
    except (TypeError, ValueError):
        raise ConfigError(f"k_values={k_values!r} are not integers", "give a range such as range(3, 21)") from None
    if ks.size == 0:
        raise ConfigError("no k values to scan", "give at least one k, e.g. range(3, 21)")
    ks = np.unique(ks)
    if ks[0] < 1:
        raise ConfigError(f"k values must be at least 1, got {ks[0]}")
    limit = min(shape)
    if ks[-1] > limit:
        raise ConfigError(
            f"k = {ks[-1]} is larger than the data allows (X is {shape[0]} x {shape[1]})",
            f"scan k up to {limit}",
        )
    return ks


def _check_X(X) -> _Data:
    """X wrapped for the passes; validated once (NaN, Inf, negatives), summary cached."""
    if not isinstance(X, (RowBlocks, _Data, Compressed)):
        if not (hasattr(X, "shape") and hasattr(X, "__getitem__")):
            X = np.asarray(X)
        if len(X.shape) != 2 or 0 in X.shape:
            raise DataValueError(
                f"X must be a non-empty 2D matrix (positions x features), got shape {tuple(X.shape)}"
            )
    data = _Data(X)
    data.blocks.summary()
    return data


def _fit_k(data, k: int, W, H, residuals, *, init: str, nmf: dict):
    """(W, H, model) of the fit with k components: warm-started from (W, H) plus components from the residual,
    or from ``init`` when W is None."""
    if W is None:
        model = NMF(k, init=init, **nmf)
        W = model.fit_transform(data.source)
    else:
        W0, H0 = W, H
        for extra in range(k - W.shape[1]):
            W0, H0 = append_component(data, W0, H0, residuals if extra == 0 else None)
        model = NMF(k, init="custom", **nmf)
        W = model.fit_transform(data.source, W=W0, H=H0)
    return np.asarray(W, dtype=np.float32), np.asarray(model.components_, dtype=np.float32), model


def _fit_errors(data, W, H, model, n_entries: float) -> tuple[float, float]:
    """(mean |X - WH|, ||X - WH||_F) of a fit: from the solver when it kept them, else one pass."""
    mean_abs = getattr(model, "mean_abs_err_", None)
    frobenius = getattr(model, "reconstruction_err_", None)
    if mean_abs is None or frobenius is None:
        abs_sum, sq_sum, _, _ = residual_stats(data.blocks, W, H)
        mean_abs, frobenius = abs_sum / n_entries, np.sqrt(sq_sum)
    return mean_abs, frobenius


def k_component_loss(
    X,
    k_values=range(3, 21),
    *,
    solver: str = "hals",
    warm_start: bool = True,
    init: str = "nndsvda",
    max_iter: int = 400,
    tol: float = 1e-4,
    random_state=None,
    keep_factors: bool = True,
    nmf_options: dict | None = None,
) -> KLoss:
    """Factorise X for each k and record the K-component loss.

    Parameters
    ----------
    X : array_like or RowBlocks, shape (n_positions, n_features)
        Non-negative data (ndarray, memmap, any row-sliceable array, or
        :class:`stemnmf.decompose.RowBlocks`); read in row blocks, validated
        once.
    k_values : iterable of int, default range(3, 21)
        Numbers of components; scanned in increasing order.
    solver : {'hals', 'mu', 'kl', 'compressed'}, default 'hals'
        Solver of :class:`stemnmf.decompose.NMF`. ``'compressed'`` compresses
        X once (:class:`stemnmf.decompose.Compressed`, ``max(k_values) +
        COMPRESS_OVERSAMPLE`` columns) and fits every k, and the appended
        components, on Q B: each k then reads X once, for its exact errors.
    warm_start : bool, default True
        Start each k from the previous fit plus one component taken from
        the residual (see :func:`append_component`); False refits every k
        from ``init``.
    init : str, default 'nndsvda'
        Initialisation of the first k (and of every k when not warm-starting).
    max_iter : int, default 400
        Iterations per fit.
    tol : float, default 1e-4
        Relative change of the objective at which a fit stops.
    random_state : int, Generator or None
        Seed for the solver.
    keep_factors : bool, default True
        Keep W and H of every k (``KLoss.components``).
    nmf_options : dict, optional
        Further keyword arguments for :class:`stemnmf.decompose.NMF`.

    Returns
    -------
    KLoss
    """
    data = _check_X(X)
    summary = data.blocks.summary()
    ks = _check_k_values(k_values, tuple(summary.shape))
    if solver == "compressed" and data.compressed is None:
        data = _Data(Compressed(data.blocks, int(ks.max()), random_state=random_state))
    nmf = dict(nmf_options or {}, solver=solver, max_iter=max_iter, tol=tol, random_state=random_state)
    n_k = ks.size
    out = {name: np.zeros(n_k) for name in ("loss", "frobenius", "explained", "seconds")}
    n_iter = np.zeros(n_k, dtype=np.int64)
    warm = np.zeros(n_k, dtype=bool)
    factors = {}
    W = H = residuals = row_norms = None
    x_sq = float(summary.sq_norm)
    for i, k in enumerate(ks):
        k = int(k)
        t0 = time.perf_counter()
        warm[i] = warm_start and W is not None and W.shape[1] < k
        W, H, model = _fit_k(data, k, W if warm[i] else None, H, residuals, init=init, nmf=nmf)
        mean_abs, frobenius = _fit_errors(data, W, H, model, float(summary.shape[0]) * float(summary.shape[1]))
        if warm_start and i + 1 < n_k:  # the next k starts from the worst-fitted row
            row_norms = data.row_norms_sq() if row_norms is None else row_norms
            residuals = row_residuals(data, W, H, row_norms)
        out["seconds"][i] = time.perf_counter() - t0
        out["loss"][i] = float(mean_abs)
        out["frobenius"][i] = float(frobenius)
        out["explained"][i] = 1.0 - float(frobenius) ** 2 / x_sq if x_sq > 0 else 0.0
        n_iter[i] = int(getattr(model, "n_iter_", 0))
        if keep_factors:
            factors[k] = (W, H)
        log.info(
            "k=%d loss=%.6g explained=%.4f iterations=%d %.2fs%s",
            k, out["loss"][i], out["explained"][i], n_iter[i], out["seconds"][i], " (warm)" if warm[i] else "",
        )
    return KLoss(ks, out["loss"], out["frobenius"], out["explained"], out["seconds"], n_iter, warm, factors)
