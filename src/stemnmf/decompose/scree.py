"""PCA scree: explained-variance ratio of the leading principal components and its elbow."""

from __future__ import annotations

import dataclasses

import numpy as np

from stemnmf.decompose._random import check_random_state, qb
from stemnmf.decompose.blocks import as_blocks
from stemnmf.errors import ConfigError, DataValueError

__all__ = ["Scree", "pca_scree", "elbow"]

ELBOW_METHOD = "max distance of the normalised cumulative explained-variance curve above its chord (Kneedle)"

#: Up to this many float64 flops the covariance (Gram) matrix is formed and
#: diagonalised exactly; above it a randomised SVD is used.
EXACT_FLOPS = 4e9


@dataclasses.dataclass(frozen=True)
class Scree:
    """A PCA scree curve and its elbow.

    Attributes
    ----------
    explained_variance_ratio : (K,) float64
        Variance of principal component i over the total variance of X
        (columns centred), i = 1..K, decreasing.
    elbow : int
        Number of components at the elbow (1-based: keep this many).
    method : str
        How the elbow was found, and whether the SVD was exact or randomised.
    """

    explained_variance_ratio: np.ndarray
    elbow: int
    method: str

    @property
    def cumulative(self) -> np.ndarray:
        """Cumulative explained-variance ratio (K,)."""
        return np.cumsum(self.explained_variance_ratio)

    @property
    def n_components(self) -> np.ndarray:
        """1..K, the x axis of the scree plot."""
        return np.arange(1, len(self.explained_variance_ratio) + 1)


def elbow(explained_variance_ratio) -> int:
    """Elbow (1-based) of a decreasing scree curve.

    The cumulative curve is scaled to [0, 1] on both axes; the elbow is the
    point farthest above the straight line from its first to its last point
    (Satopää et al. 2011, "Kneedle"). For a matrix of exact rank r (plus
    little noise) this is r.
    """
    evr = np.asarray(explained_variance_ratio, dtype=np.float64)
    K = len(evr)
    if K <= 2:
        return 1
    cum = np.cumsum(evr)
    span = cum[-1] - cum[0]
    if span <= 0:
        return 1
    x = np.arange(K) / (K - 1)
    y = (cum - cum[0]) / span
    return int(np.argmax(y - x)) + 1


def pca_scree(X, max_components: int = 50, random_state=None) -> Scree:
    """Explained-variance ratio of the leading principal components of X, and its elbow.

    Parameters
    ----------
    X : array-like (n_positions, n_features) or RowBlocks
        Non-negative data (validated like NMF input); columns are centred
        implicitly (X is never copied).
    max_components : int, default 50
        Components on the curve (at most min(n_positions - 1, n_features)).
    random_state : int, Generator or None
        Seed of the randomised SVD used for large X.

    Returns
    -------
    Scree
    """
    if isinstance(max_components, bool) or not isinstance(max_components, (int, np.integer)) or max_components < 1:
        raise ConfigError(f"max_components={max_components!r} must be a positive integer")
    blocks = as_blocks(X)
    summary = blocks.summary()
    n, m = summary.shape
    K = int(min(max_components, n - 1, m))
    mu = summary.col_sum / n
    total = summary.sq_norm - n * float(mu @ mu)
    if n < 2 or total <= 1e-12 * summary.sq_norm:
        raise DataValueError(
            f"X (shape {(n, m)}) has no variance between positions, so it has no scree",
            "give X with at least two different rows",
        )
    small = min(n, m)
    if float(small) ** 2 * max(n, m) <= EXACT_FLOPS:
        variances = _exact_variances(blocks, mu, n, m)
        how = "exact eigendecomposition"
    else:
        rng = check_random_state(random_state)
        _, B = qb(blocks, K, oversample=10, power_iter=4, center=mu, rng=rng)
        variances = np.linalg.svd(B.astype(np.float64), compute_uv=False) ** 2
        how = "randomised SVD (4 power iterations)"
    variances = np.sort(np.maximum(variances, 0))[::-1][:K]
    ratio = variances / total
    return Scree(ratio, elbow(ratio), f"{ELBOW_METHOD}; {how}")


def _exact_variances(blocks, mu: np.ndarray, n: int, m: int) -> np.ndarray:
    """Squared singular values of the centred X (float64), from the smaller Gram matrix."""
    if m <= n:
        G = np.zeros((m, m))
        for _, X_b in blocks:
            X64 = X_b.astype(np.float64)
            G += X64.T @ X64
        G -= n * np.outer(mu, mu)
    else:
        X64 = np.concatenate([X_b.astype(np.float64) for _, X_b in blocks]) - mu
        G = X64 @ X64.T
    return np.linalg.eigvalsh(G)
