"""X compressed once, for several fits that share it (a k scan).

A randomised QB decomposition X ~= Q B (Halko, Martinsson & Tropp 2011) costs
``2 * power_iter + 2`` passes over X. :class:`NMF` with ``solver='compressed'``
computes one per fit; a scan over k computes one with as many columns as the
largest k needs and passes it to every fit as a :class:`Compressed` input.
"""

from __future__ import annotations

import numpy as np

from stemnmf.decompose._random import check_random_state, qb
from stemnmf.decompose.blocks import RowBlocks, as_blocks
from stemnmf.errors import ConfigError

__all__ = ["COMPRESS_OVERSAMPLE", "COMPRESS_POWER_ITER", "Compressed"]

#: Columns sampled beyond k, and power iterations, for the compressed solver.
COMPRESS_OVERSAMPLE = 20
COMPRESS_POWER_ITER = 2


class Compressed:
    """X with its randomised range: ``Q`` (n, l) orthonormal and ``B = Q^T X`` (l, m).

    Give it to :class:`stemnmf.decompose.NMF` in place of X: with
    ``solver='compressed'`` the fit runs on Q B instead of compressing X again
    (when ``l >= n_components``), and every solver takes its NNDSVD start from
    Q B. Exact passes (the final errors, the ``'hals'`` iterations) read X.

    Parameters
    ----------
    X : array_like or RowBlocks, shape (n_positions, n_features)
        Non-negative data.
    rank : int
        Largest number of components the fits will have; ``rank +
        oversample`` columns are kept (at most min(n, m)).
    oversample : int, default COMPRESS_OVERSAMPLE
    power_iter : int, default COMPRESS_POWER_ITER
    random_state : int, Generator or None
        Seed of the random test matrix.

    Attributes
    ----------
    blocks : RowBlocks
        X, for exact passes.
    Q : (n, l) float32
    B : (l, m) float32
    """

    def __init__(
        self,
        X,
        rank: int,
        *,
        oversample: int = COMPRESS_OVERSAMPLE,
        power_iter: int = COMPRESS_POWER_ITER,
        random_state=None,
    ):
        if int(rank) < 1 or int(oversample) < 0 or int(power_iter) < 0:
            raise ConfigError(
                f"rank={rank}, oversample={oversample}, power_iter={power_iter}: need rank >= 1 and the others >= 0",
                "give the largest number of components the fits will use",
            )
        self.blocks: RowBlocks = as_blocks(X)
        self.blocks.summary()  # validates X before the passes
        rng = check_random_state(random_state)
        self.Q, self.B = qb(self.blocks, int(rank), oversample=int(oversample), power_iter=int(power_iter), rng=rng)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_positions, n_features) of X."""
        return self.blocks.shape

    @property
    def columns(self) -> int:
        """l, the number of columns of Q."""
        return int(self.Q.shape[1])

    def times(self, v: np.ndarray) -> np.ndarray:
        """``Q B v`` ~= ``X v`` for v (m,) or (m, c), float32."""
        return self.Q @ (self.B @ v)

    def left_times(self, u: np.ndarray) -> np.ndarray:
        """``u Q B`` ~= ``u X`` for u (n,), float32."""
        return (u @ self.Q) @ self.B
