"""NMF solvers, iterative merging NMF and the PCA scree (scikit-learn estimators).

X (n_positions x n_features) ~= W (n_positions x k) @ H (k x n_features).

* :class:`NMF` - HALS (default), multiplicative (Frobenius, KL) and randomised
  compressed solvers, seeded inits, warm starts, row-block (out-of-core) input.
* :class:`IterativeNMF` - iterative merging NMF (Allen et al. 2021) with
  parallel seeded restarts; merges by evidence (:mod:`stemnmf.decompose.evidence`)
  or by the paper's transitive rule.
* :func:`pca_scree` - explained-variance ratio curve and its elbow.
* :class:`RowBlocks` - X read in row blocks (HDF5, memory maps, dask, generators).
* :class:`Compressed` - X compressed once (Q B) for fits that share it.
* :mod:`stemnmf.decompose.kernels` - the per-block update kernels.
"""

from stemnmf.decompose.blocks import RowBlocks
from stemnmf.decompose.compressed import Compressed
from stemnmf.decompose.iterative import MERGE_THRESHOLDS, IterativeNMF, merge_components, merge_groups
from stemnmf.decompose.nmf import NMF
from stemnmf.decompose.results import to_results
from stemnmf.decompose.scree import Scree, elbow, pca_scree

__all__ = [
    "NMF",
    "IterativeNMF",
    "RowBlocks",
    "Compressed",
    "Scree",
    "pca_scree",
    "elbow",
    "merge_groups",
    "merge_components",
    "MERGE_THRESHOLDS",
    "to_results",
]
