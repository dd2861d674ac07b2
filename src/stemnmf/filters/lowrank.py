"""Streaming low-rank (truncated PCA) denoiser.

The patterns X (n_positions x n_pixels) are projected on their leading
principal components, found without ever holding X:

1. one pass for the per-pixel mean and mean square;
2. a randomized range finder (Halko, Martinsson & Tropp 2011) on the
   covariance C = (X - mean)^T (X - mean): each pass accumulates C Q over
   chunks of rows, ``n_power_iter`` power iterations sharpen Q;
3. Rayleigh-Ritz on Q gives the leading eigenvectors and eigenvalues.

With ``weighting='poisson'`` (the default) each pixel is divided by the
square root of its mean before the PCA, which makes counting (Poisson) noise
of equal variance in every pixel; the reconstruction is scaled back.

The rank is either given or estimated as the number of covariance eigenvalues
above the Marchenko-Pastur edge ``sigma^2 (1 + sqrt(p / n))^2`` of pure
noise plus ``tw_margin`` Tracy-Widom scales ``sigma^2 (sqrt(n) + sqrt(p))^(4/3)
(1/sqrt(n) + 1/sqrt(p))^(1/3) / n`` (Johnstone 2001), where sigma^2 is the
variance left per pixel after the components above it (p pixels, n positions). The output ``mean + (x - mean) V V^T`` is
clipped at 0 so the data stay non-negative; masked pixels are 0.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from threadpoolctl import threadpool_limits

from stemnmf.calibrate.common import as_stack, check_mask
from stemnmf.engine import Engine, RowChunk
from stemnmf.errors import ConfigError, DataValueError

__all__ = ["LowRankBasis", "fit_lowrank", "lowrank_denoise", "lowrank_dataset", "apply_lowrank"]

log = logging.getLogger(__name__)

#: Patterns processed together inside the kernels (bounds their temporaries).
_BATCH = 256


@dataclasses.dataclass
class LowRankBasis:
    """Leading principal components of a set of patterns.

    Attributes
    ----------
    mean : numpy.ndarray
        (qy, qx) mean pattern.
    scale : numpy.ndarray
        (qy, qx) per-pixel divisor applied before the PCA (ones when unweighted).
    components : numpy.ndarray
        (rank, qy * qx) orthonormal components (in the scaled space).
    eigenvalues : numpy.ndarray
        (l,) covariance eigenvalues of the sketch (scaled space), descending.
    rank : int
        Components kept.
    noise_variance : float
        Per-pixel noise variance estimate (scaled space) at the chosen rank.
    edge : float
        Rank threshold at the chosen rank: noise variance x (Marchenko-Pastur
        edge ratio + ``tw_margin`` Tracy-Widom scales).
    mask : numpy.ndarray
        (qy, qx) masked pixels (zero in the output).
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    rank: int
    noise_variance: float
    edge: float
    mask: np.ndarray

    def to_results(self, prefix: str = "/filters/lowrank") -> dict:
        """``{path: value}`` of the rank and spectrum for the results file."""
        return {
            f"{prefix}/rank": np.int64(self.rank),
            f"{prefix}/eigenvalues": np.asarray(self.eigenvalues, dtype=np.float64),
            f"{prefix}/noise_variance": np.float64(self.noise_variance),
            f"{prefix}/mp_edge": np.float64(self.edge),
        }


def _rng(random_state) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)


def _moments_kernel(block, chunk, *, mask):
    own = block[chunk.own]
    flat = own.reshape(-1, own.shape[2] * own.shape[3]).astype(np.float64)
    flat[:, mask.ravel()] = 0.0
    return flat.sum(axis=0), (flat * flat).sum(axis=0)


def _sketch_kernel(block, chunk, *, mean, scale, basis, mask):
    own = block[chunk.own]
    flat = own.reshape(-1, own.shape[2] * own.shape[3])
    total = np.zeros(basis.shape, dtype=np.float64)
    for start in range(0, flat.shape[0], _BATCH):  # bounded temporaries
        centred = (flat[start : start + _BATCH].astype(np.float32) - mean) / scale
        centred[:, mask.ravel()] = 0.0
        projected = centred @ basis  # (m, l)
        total += centred.T.astype(np.float64) @ projected.astype(np.float64)
    return total


def _apply_kernel(block, chunk, *, mean, scale, components, mask):
    own = block[chunk.own]
    shape = own.shape[2:]
    flat = own.reshape(-1, shape[0] * shape[1])
    out = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, flat.shape[0], _BATCH):  # bounded temporaries
        out[start : start + _BATCH] = apply_lowrank(flat[start : start + _BATCH], mean, scale, components, mask)
    return out.reshape(-1, *shape)


def apply_lowrank(flat, mean, scale, components, mask) -> np.ndarray:
    """``clip(mean + scale * ((x - mean) / scale) V^T V, 0)`` for rows of flat patterns."""
    flat = np.asarray(flat, dtype=np.float32)
    m = mask.ravel()
    centred = (flat - mean) / scale
    centred[:, m] = 0.0
    coeffs = centred @ components.T
    out = mean + scale * (coeffs @ components)
    out[:, m] = 0.0
    return np.clip(out, 0, None).astype(np.float32)


class _ArraySource:
    """Runs the kernels over an in-memory (n, qy, qx) stack in row blocks (engine-like)."""

    def __init__(self, stack: np.ndarray, block_rows: int = 256):
        self.stack = stack
        self.block_rows = block_rows

    def reduce(self, func, kwargs):
        total = None
        n = self.stack.shape[0]
        for start in range(0, n, self.block_rows):
            stop = min(n, start + self.block_rows)
            block = self.stack[start:stop][:, None]
            chunk = RowChunk(0, 0, stop - start, 0, stop - start, 1)
            out = func(block, chunk, **kwargs)
            out = out if isinstance(out, tuple) else (out,)
            total = list(out) if total is None else [t + o for t, o in zip(total, out)]
        return tuple(total) if len(total) > 1 else total[0]


def _fit(source_reduce, n: int, shape, mask, **options):
    # the matrices are small: BLAS threads only fight the engine's threads (and
    # slow the QR and eigh a hundredfold on a busy machine)
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_unlimited(source_reduce, n, shape, mask, **options)


def _fit_unlimited(
    source_reduce, n: int, shape, mask, *, rank, max_rank, oversample, n_power_iter, weighting, tw_margin, random_state
):
    p_all = shape[0] * shape[1]
    sums, squares = source_reduce(_moments_kernel, dict(mask=mask))
    mean = (sums / n).astype(np.float32)
    variance = np.clip(squares / n - (sums / n) ** 2, 0, None)
    if weighting == "poisson":
        floor = max(float(np.mean(mean[~mask.ravel()])) * 1e-3, 1e-12) if (~mask).any() else 1e-12
        scale = np.sqrt(np.maximum(mean.astype(np.float64), floor)).astype(np.float32)
    elif weighting is None:
        scale = np.ones(p_all, dtype=np.float32)
    else:
        raise ConfigError(f"weighting={weighting!r} is unknown", "use 'poisson' or None")
    scale[mask.ravel()] = 1.0
    total_variance = float((variance / scale.astype(np.float64) ** 2)[~mask.ravel()].sum())
    p = int((~mask).sum())
    width = int(min(max_rank + oversample, p, max(n - 1, 1)))
    if width < 1:
        raise DataValueError("too few patterns or pixels for a low-rank fit", "use more patterns")
    rng = _rng(random_state)
    image = rng.standard_normal((p_all, width))
    image[mask.ravel()] = 0.0
    kwargs = dict(mean=mean, scale=scale, mask=mask)
    for _ in range(int(n_power_iter) + 1):
        q, _ = np.linalg.qr(image)
        basis = q.astype(np.float32)
        image = source_reduce(_sketch_kernel, dict(kwargs, basis=basis))  # C Q  (p, l)
    small = basis.astype(np.float64).T @ image
    small = 0.5 * (small + small.T)
    values, vectors = np.linalg.eigh(small)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0, None) / n
    vectors = basis.astype(np.float64) @ vectors[:, order]
    # Marchenko-Pastur edge plus ``tw_margin`` Tracy-Widom scales (Johnstone 2001)
    tw_scale = (np.sqrt(n) + np.sqrt(p)) ** (4 / 3) * (1 / np.sqrt(n) + 1 / np.sqrt(p)) ** (1 / 3) / n
    ratio = (1.0 + np.sqrt(p / n)) ** 2 + tw_margin * tw_scale
    if rank is None:
        chosen = 0
        for k in range(min(max_rank, values.size)):
            sigma2 = (total_variance - values[:k].sum()) / max(p - k, 1)
            if values[k] <= sigma2 * ratio:
                break
            chosen = k + 1
        rank_used = max(1, chosen)
    else:
        rank_used = int(rank)
        if rank_used < 1:
            raise ConfigError(f"rank={rank} must be at least 1")
        if rank_used > values.size:
            raise ConfigError(
                f"rank={rank} is more than the {values.size} components the sketch holds",
                f"use rank <= {values.size} or raise max_rank",
            )
    sigma2 = (total_variance - values[:rank_used].sum()) / max(p - rank_used, 1)
    components = vectors[:, :rank_used].T.astype(np.float32)
    return LowRankBasis(
        mean=mean.reshape(shape),
        scale=scale.reshape(shape),
        components=components,
        eigenvalues=values,
        rank=rank_used,
        noise_variance=float(sigma2),
        edge=float(sigma2 * ratio),
        mask=mask,
    )


def _check_options(rank, max_rank, oversample, n_power_iter):
    if rank is not None and (int(rank) != rank or rank < 1):
        raise ConfigError(f"rank={rank!r} must be a positive integer or None (estimated)")
    if int(max_rank) < 1 or int(oversample) < 0 or int(n_power_iter) < 0:
        raise ConfigError("max_rank must be >= 1, oversample and n_power_iter >= 0")
    if rank is not None and rank > max_rank:
        max_rank = int(rank)
    return max_rank


def fit_lowrank(
    data,
    *,
    rank: int | None = None,
    max_rank: int = 30,
    oversample: int = 10,
    n_power_iter: int = 2,
    weighting: str | None = "poisson",
    tw_margin: float = 3.0,
    mask=None,
    engine=None,
    random_state=None,
) -> LowRankBasis:
    """Leading principal components of patterns, streamed.

    Parameters
    ----------
    data : Dataset4D or array_like
        A dataset (streamed through the engine; its mask is used) or patterns
        (..., qy, qx).
    rank : int, optional
        Components kept; None estimates it (Marchenko-Pastur edge).
    max_rank : int, default 30
        Most components considered when estimating the rank.
    oversample : int, default 10
        Extra sketch columns.
    n_power_iter : int, default 2
        Power iterations (one streamed pass each).
    weighting : {'poisson', None}, default 'poisson'
        Divide each pixel by the square root of its mean before the PCA.
    tw_margin : float, default 3
        Tracy-Widom scales added to the Marchenko-Pastur edge when the rank
        is estimated (the largest pure-noise eigenvalue exceeds the edge by
        more than 3 scales with probability below 0.1 %).
    mask : array_like of bool, optional
        For arrays; a dataset's own mask is used otherwise.
    engine : Engine, optional
    random_state : int, Generator or None

    Returns
    -------
    LowRankBasis
    """
    max_rank = _check_options(rank, max_rank, oversample, n_power_iter)
    options = dict(
        rank=rank, max_rank=int(max_rank), oversample=int(oversample), n_power_iter=int(n_power_iter),
        weighting=weighting, tw_margin=float(tw_margin), random_state=random_state,
    )
    if hasattr(data, "pattern_shape") and hasattr(data, "scan_shape"):
        engine = engine or Engine()
        shape = data.pattern_shape
        mask = check_mask(data.mask, shape)

        def source_reduce(func, kwargs):
            return engine.reduce(func, data, kwargs=kwargs, desc="low-rank sketch")

        return _fit(source_reduce, data.n_positions, shape, mask, **options)
    stack, _ = as_stack(data)
    shape = stack.shape[1:]
    mask = check_mask(mask, shape)
    source = _ArraySource(stack)
    return _fit(source.reduce, stack.shape[0], shape, mask, **options)


# fit_lowrank's options spelled out again (not **options) so that help() and the docs list them
def lowrank_denoise(
    patterns,
    *,
    rank: int | None = None,
    max_rank: int = 30,
    oversample: int = 10,
    n_power_iter: int = 2,
    weighting: str | None = "poisson",
    tw_margin: float = 3.0,
    mask=None,
    random_state=None,
) -> tuple[np.ndarray, LowRankBasis]:
    """Project patterns on their leading principal components (non-negative output).

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx), at least two patterns.
    rank, max_rank, oversample, n_power_iter, weighting, tw_margin, mask, random_state
        As in :func:`fit_lowrank`.

    Returns
    -------
    denoised : numpy.ndarray
        float32, same shape as ``patterns``.
    basis : LowRankBasis
    """
    stack, lead = as_stack(patterns)
    if stack.shape[0] < 2:
        raise DataValueError("the low-rank denoiser needs at least two patterns")
    basis = fit_lowrank(
        stack, rank=rank, max_rank=max_rank, oversample=oversample, n_power_iter=n_power_iter,
        weighting=weighting, tw_margin=tw_margin, mask=mask, random_state=random_state,
    )
    flat = stack.reshape(stack.shape[0], -1)
    with threadpool_limits(limits=1, user_api="blas"):
        out = apply_lowrank(flat, basis.mean.ravel(), basis.scale.ravel(), basis.components, basis.mask)
    return out.reshape(*lead, *stack.shape[1:]), basis


def lowrank_dataset(
    dataset,
    *,
    rank: int | None = None,
    max_rank: int = 30,
    oversample: int = 10,
    n_power_iter: int = 2,
    weighting: str | None = "poisson",
    tw_margin: float = 3.0,
    engine=None,
    random_state=None,
):
    """Low-rank denoising of a Dataset4D: streamed fit, then a (lazy for lazy input) projection.

    Returns
    -------
    dataset : Dataset4D
        Denoised, with ``metadata['lowrank']`` holding the rank and noise estimate.
    basis : LowRankBasis
    """
    engine = engine or Engine()
    basis = fit_lowrank(
        dataset, rank=rank, max_rank=max_rank, oversample=oversample, n_power_iter=n_power_iter,
        weighting=weighting, tw_margin=tw_margin, engine=engine, random_state=random_state,
    )
    log.info(
        "low-rank denoiser: rank %d (noise variance %.3g, threshold %.3g)", basis.rank, basis.noise_variance, basis.edge
    )
    metadata = dict(dataset.metadata)
    metadata["lowrank"] = {"rank": basis.rank, "noise_variance": basis.noise_variance, "mp_edge": basis.edge}
    out = engine.transform(
        _apply_kernel,
        dataset,
        kwargs=dict(
            mean=basis.mean.ravel(), scale=basis.scale.ravel(), components=basis.components, mask=basis.mask
        ),
        desc="low-rank denoise",
        metadata=metadata,
    )
    return out, basis
