"""Cluster patterns and the dissimilarity score, streamed over a Dataset4D.

Every function here reads the patterns through :class:`stemnmf.engine.Engine`
in chunks of scan rows, so a dataset larger than memory is read once per call
and never whole:

* :func:`mean_patterns` — for any number of weight matrices (one-hot labels,
  NMF weights, region maps) the weighted mean pattern of every cluster, all in
  one pass: ``m_c = sum_i w_ic x_i / sum_i w_ic`` (sums in float64).
* :func:`dissimilarity` — Bruefach et al.'s weighted dissimilarity score of
  each cluster, in a second pass: ``D_c = sum_i w_ic d(x_i, m_c) / sum_i w_ic``
  with ``d`` the mean absolute difference of the min-max scaled patterns.

Masked detector pixels (``dataset.mask`` True) are left out of every sum, of the
min-max scaling and of ``d``; they are 0 in the returned patterns.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse

from stemnmf import kselect
from stemnmf.engine import Engine
from stemnmf.errors import DataValueError

__all__ = [
    "one_hot",
    "minmax_scale",
    "mean_patterns",
    "cluster_mean_patterns",
    "dissimilarity",
    "raw_vs_nmf",
    "attach_vacuum_test",
    "scattered_fraction",
    "vacuum_mask",
    "RAW_VS_NMF_DTYPE",
]

log = logging.getLogger(__name__)

#: Entries of (position, cluster) pairs compared at once in the dissimilarity
#: pass, times the pattern size, stays under this many float32 values.
_BATCH_VALUES = 1 << 22
#: Patterns converted to float64 at once in the mean-pattern pass, times the pattern size.
_SUM_BATCH_VALUES = 1 << 20


def one_hot(labels, n_clusters: int | None = None) -> sparse.csr_matrix:
    """Sparse (n_positions, n_clusters) indicator of integer labels; -1 is no cluster.

    Examples
    --------
    >>> one_hot(np.array([0, -1, 1, 1])).toarray()
    array([[1., 0.],
           [0., 0.],
           [0., 1.],
           [0., 1.]])
    """
    labels = np.asarray(labels).ravel().astype(np.int64)
    if n_clusters is None:
        n_clusters = int(labels.max()) + 1 if labels.size else 0
    keep = labels >= 0
    if (labels >= n_clusters).any():
        raise DataValueError(f"labels reach {labels.max()} but there are {n_clusters} clusters")
    rows = np.flatnonzero(keep)
    data = np.ones(rows.size, np.float64)
    return sparse.csr_matrix((data, (rows, labels[keep])), shape=(labels.size, n_clusters))


def minmax_scale(patterns, valid=None) -> np.ndarray:
    """Each pattern scaled to [0, 1] by its own minimum and maximum.

    Parameters
    ----------
    patterns : array (n, q) or (n, qy, qx)
    valid : array of bool (q,) or (qy, qx), optional
        Pixels used for the minimum and maximum; others are set to 0.

    Returns
    -------
    numpy.ndarray
        float32, same shape; a constant pattern becomes all 0.
    """
    patterns = np.asarray(patterns, dtype=np.float32)
    shape = patterns.shape
    flat = patterns.reshape(shape[0], int(np.prod(shape[1:], dtype=np.int64)))
    if valid is not None:
        valid = np.asarray(valid, bool).ravel()
        use = flat[:, valid]
    else:
        use = flat
    lo = use.min(axis=1, keepdims=True)
    span = use.max(axis=1, keepdims=True) - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
    if valid is not None:
        out[:, ~valid] = 0
    return out.reshape(shape)


def _as_sparse(weights, n_positions: int) -> sparse.csr_matrix:
    if sparse.issparse(weights):
        matrix = sparse.csr_matrix(weights, dtype=np.float64)
    else:
        array = np.asarray(weights, dtype=np.float64)
        if array.ndim == 3:  # maps (c, sy, sx)
            array = array.reshape(array.shape[0], -1).T
        if array.ndim != 2:
            raise DataValueError(f"weights must be (n_positions, c) or maps (c, sy, sx), got {array.shape}")
        matrix = sparse.csr_matrix(array)
    if matrix.shape[0] != n_positions:
        raise DataValueError(
            f"weights have {matrix.shape[0]} rows but the dataset has {n_positions} positions",
            "pass weights of the same scan",
        )
    if matrix.nnz and (matrix.data < 0).any():
        raise DataValueError("cluster weights must not be negative")
    matrix.eliminate_zeros()
    return matrix


def _row_groups(engine, dataset, *, bytes_per_chunk: int = 0, bytes_per_position: int = 0):
    """Scan-row ranges small enough that the engine's kept outputs fit a quarter of its budget.

    ``Engine.reduce`` and ``Engine.map`` hold every chunk's output until the
    end; a pass over a large scan with many clusters is therefore run in
    groups of rows, each one engine call, and combined in row order.
    """
    sy, sx = dataset.scan_shape
    limit = max(1, engine.memory_budget // 4)
    per_chunk = engine.rows_per_chunk(dataset)
    rows = sy
    if bytes_per_chunk:
        rows = per_chunk * max(1, limit // int(bytes_per_chunk))
    if bytes_per_position:
        rows = min(rows, max(per_chunk, limit // (int(bytes_per_position) * sx)))
    rows = max(1, min(sy, rows))
    return [(r0, min(sy, r0 + rows)) for r0 in range(0, sy, rows)]


def _rows(dataset, r0: int, r1: int):
    """Scan rows r0:r1 as a dataset (the dataset itself when that is all of it)."""
    if r0 == 0 and r1 == dataset.scan_shape[0]:
        return dataset
    return dataset.row_slice(r0, r1)  # keeps the direct row reader of a lazy dataset


def _valid_pixels(dataset) -> np.ndarray | None:
    return None if dataset.mask is None else ~np.asarray(dataset.mask, bool).ravel()


def _weighted_sums(block, chunk, *, weights):
    """Engine kernel: (c, q) float64 sums of the chunk's patterns times their weights.

    The block arrives in its stored dtype and is converted once, to float64
    (NaN and Inf read as 0, as the engine does for float32).
    """
    own = block[chunk.own]
    rows = chunk.positions
    q = own.shape[2] * own.shape[3]
    flat = own.reshape(chunk.n_positions, q)
    w = weights[rows.start : rows.stop]
    sums = np.zeros((weights.shape[1], q), np.float64)
    if w.nnz == 0:
        return sums
    # convert a few dozen patterns at a time: small float64 temporaries stay in cache
    batch = max(1, _SUM_BATCH_VALUES // q)
    for start in range(0, chunk.n_positions, batch):
        part = w[start : start + batch]
        if part.nnz == 0:
            continue
        x = flat[start : start + batch].astype(np.float64)
        if own.dtype.kind == "f" and not np.isfinite(x).all():
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        used = np.unique(part.indices)  # the few clusters these positions belong to
        sums[used] += part[:, used].T.tocsr() @ x
    return sums


def mean_patterns(dataset, *weights, engine=None, desc: str = "cluster patterns"):
    """Weighted mean pattern of every cluster, for several weight matrices in one pass.

    Parameters
    ----------
    dataset : Dataset4D
    *weights : array (n_positions, c), maps (c, sy, sx) or scipy sparse matrix
        Non-negative weight of each position in each cluster; use
        :func:`one_hot` for hard labels.
    engine : Engine, optional
        Where the pass runs (default: in-process).

    Returns
    -------
    list of (means, totals)
        For each weight matrix, ``means`` (c, qy, qx) float32 with
        ``means[c] = sum_i w_ic x_i / sum_i w_ic`` (0 for a cluster of zero
        weight and at masked pixels) and ``totals`` (c,) float64, the weight sums.
    """
    if not weights:
        return []
    engine = engine or Engine()
    n = dataset.n_positions
    qy, qx = dataset.pattern_shape
    matrices = [_as_sparse(w, n) for w in weights]
    sizes = [m.shape[1] for m in matrices]
    stacked = sparse.hstack(matrices, format="csr", dtype=np.float64)
    if stacked.shape[1] == 0:
        return [(np.zeros((0, qy, qx), np.float32), np.zeros(0)) for _ in matrices]
    sx = dataset.scan_shape[1]
    sums = np.zeros((stacked.shape[1], qy * qx), np.float64)
    for r0, r1 in _row_groups(engine, dataset, bytes_per_chunk=stacked.shape[1] * qy * qx * 8):
        part = _rows(dataset, r0, r1)
        kwargs = dict(weights=stacked[r0 * sx : r1 * sx])
        sums += engine.reduce(_weighted_sums, part, kwargs=kwargs, desc=desc, dtype=None)
    totals = np.asarray(stacked.sum(axis=0)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(totals[:, None] > 0, sums / np.where(totals > 0, totals, 1)[:, None], 0)
    valid = _valid_pixels(dataset)
    if valid is not None:
        means[:, ~valid] = 0
    means = means.astype(np.float32).reshape(-1, qy, qx)
    out, start = [], 0
    for size in sizes:
        out.append((means[start : start + size], totals[start : start + size]))
        start += size
    return out


def cluster_mean_patterns(dataset, labels, n_clusters: int | None = None, *, engine=None):
    """Mean pattern of the positions of each label, (c, qy, qx) float32, and their counts.

    Positions labelled -1 are left out.
    """
    labels = np.asarray(labels).ravel()
    (means, counts), = mean_patterns(dataset, one_hot(labels, n_clusters), engine=engine)
    return means, counts.astype(np.int64)


def _deviation(x_scaled: np.ndarray, ref_scaled: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Mean |x[rows] - ref[cols]| per pair, grouped by reference, in batches that bound memory."""
    out = np.empty(rows.size, np.float32)
    q = max(1, x_scaled.shape[1])
    batch = max(1, _BATCH_VALUES // q)
    order = np.argsort(cols, kind="stable")
    sorted_cols = cols[order]
    bounds = np.flatnonzero(np.diff(sorted_cols)) + 1
    for group in np.split(order, bounds):
        if group.size == 0:
            continue
        ref = ref_scaled[cols[group[0]]]
        for start in range(0, group.size, batch):
            part = group[start : start + batch]
            diff = x_scaled[rows[part]]
            diff -= ref
            np.abs(diff, out=diff)
            out[part] = diff.mean(axis=1)
    return out


def _dissimilarity_kernel(block, chunk, *, weights, references, valid, labels, label_references):
    """Engine kernel: per position, the deviation from each cluster it belongs to."""
    n = chunk.n_positions
    x = block[chunk.own].reshape(n, -1)
    if valid is not None:
        x = x[:, valid]
    xs = minmax_scale(x)
    rows = chunk.positions
    w = weights[rows.start : rows.stop].tocoo()
    dev = np.zeros((n, weights.shape[1]), np.float32)
    if w.nnz:
        dev[w.row, w.col] = _deviation(xs, references, w.row, w.col)
    own_dev = np.full(n, np.nan, np.float32)
    if labels is not None:
        lab = labels[rows.start : rows.stop]
        has = np.flatnonzero(lab >= 0)
        if has.size:
            own_dev[has] = _deviation(xs, label_references, has, lab[has])
    return dev, own_dev


def dissimilarity(dataset, weights, references, *, labels=None, label_references=None, engine=None):
    """Weighted dissimilarity score of each cluster (Bruefach et al. 2022, eq. 6).

    ``D_c = sum_i w_ic d_ic / sum_i w_ic`` over the positions with ``w_ic > 0``,
    where ``d_ic = mean_q |s(x_i)_q - s(m_c)_q|``, ``s`` scales a pattern to
    [0, 1] by its own minimum and maximum, and ``m_c`` is the cluster's
    reference (its weighted mean pattern). Identical patterns give 0; the
    score lies in [0, 1].

    Parameters
    ----------
    dataset : Dataset4D
    weights : array (n_positions, c), maps (c, sy, sx) or sparse
        Cluster weights (0 where a pattern does not contribute).
    references : array (c, qy, qx)
        The pattern each cluster is compared with.
    labels : array (sy, sx) of int, optional
        With ``label_references`` (k, qy, qx): also the deviation of every
        position from the reference of its label.

    Returns
    -------
    scores : numpy.ndarray
        (c,) float32, NaN for a cluster of zero weight.
    position_deviation : numpy.ndarray or None
        (sy, sx) float32 deviation of each pattern from its label's reference
        (NaN where unlabelled), when ``labels`` is given.
    """
    engine = engine or Engine()
    n = dataset.n_positions
    matrix = _as_sparse(weights, n)
    valid = _valid_pixels(dataset)
    qy, qx = dataset.pattern_shape
    references = np.asarray(references, np.float32).reshape(matrix.shape[1], qy * qx)
    refs = minmax_scale(references if valid is None else references[:, valid])
    label_refs = None
    if labels is not None:
        if label_references is None:
            raise DataValueError("labels given without label_references")
        labels = np.asarray(labels).ravel().astype(np.int64)
        lr = np.asarray(label_references, np.float32)
        lr = lr.reshape(lr.shape[0], qy * qx)
        label_refs = minmax_scale(lr if valid is None else lr[:, valid])
    if matrix.shape[1] == 0 and labels is None:
        return np.zeros(0, np.float32), None
    c = matrix.shape[1]
    sx = dataset.scan_shape[1]
    wsum = np.zeros(c, np.float64)
    own_dev = np.full(n, np.nan, np.float32)
    for r0, r1 in _row_groups(engine, dataset, bytes_per_position=(c + 1) * 4):
        lo, hi = r0 * sx, r1 * sx
        group = matrix[lo:hi]
        kwargs = dict(
            weights=group,
            references=refs,
            valid=valid,
            labels=None if labels is None else labels[lo:hi],
            label_references=label_refs,
        )
        dev, own = engine.map(_dissimilarity_kernel, _rows(dataset, r0, r1), kwargs=kwargs, desc="dissimilarity")
        coo = group.tocoo()
        wsum += np.bincount(coo.col, weights=coo.data * dev[coo.row, coo.col], minlength=c)
        own_dev[lo:hi] = own
    coo = matrix.tocoo()
    total = np.bincount(coo.col, weights=coo.data, minlength=c)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(total > 0, wsum / np.where(total > 0, total, 1), np.nan).astype(np.float32)
    position = own_dev.reshape(dataset.scan_shape) if labels is not None else None
    return scores, position


def _scattered_fraction(block, chunk, *, valid, level):
    """Engine kernel: fraction of each pattern's intensity below ``level`` x its maximum."""
    x = block[chunk.own].reshape(chunk.n_positions, -1)
    if valid is not None:
        x = x[:, valid]
    top = x.max(axis=1, keepdims=True)
    total = x.sum(axis=1, dtype=np.float64)
    bright = np.where(x >= level * top, x, 0).sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(total > 0, (total - bright) / np.where(total > 0, total, 1), 0)
    return frac.astype(np.float32)


def scattered_fraction(dataset, *, level: float = 0.5, engine=None) -> np.ndarray:
    """Fraction of each pattern's intensity outside its brightest features, (sy, sx) float32.

    ``f_i = sum_q x_iq [x_iq < level * max_q x_iq] / sum_q x_iq``: in vacuum the
    pattern is the direct beam alone and f is near 0; a specimen scatters into
    Bragg disks and diffuse intensity below half the direct beam's peak. One
    streamed pass; masked pixels are left out.
    """
    engine = engine or Engine()
    kwargs = dict(valid=_valid_pixels(dataset), level=float(level))
    frac = engine.map(_scattered_fraction, dataset, kwargs=kwargs, desc="vacuum")
    return frac.reshape(dataset.scan_shape)


def attach_vacuum_test(dataset, engine, *, level: float = 0.5) -> None:
    """Let ``engine``'s next pass over ``dataset`` also compute the scattered fractions of :func:`vacuum_mask`.

    A later :func:`vacuum_mask` (or :func:`scattered_fraction`) with the same
    ``level``, dataset and engine then takes them from that pass instead of
    reading the data again; with other options it reads the data itself, so
    the result never depends on this.
    """
    kwargs = dict(valid=_valid_pixels(dataset), level=float(level))
    engine.attach(_scattered_fraction, dataset, mode="map", kwargs=kwargs, desc="vacuum")


def vacuum_mask(dataset, *, fraction: float = 0.1, level: float = 0.5, engine=None) -> np.ndarray:
    """Positions that look like vacuum, (sy, sx) bool.

    A position is vacuum when its scattered fraction (:func:`scattered_fraction`)
    is below ``fraction`` times the 99th percentile of the scan's scattered
    fractions: a scan fully covered by specimen flags nothing, and a position
    flags only when it scatters at least ten times less (default) than the
    specimen does.
    """
    frac = scattered_fraction(dataset, level=level, engine=engine)
    reference = float(np.percentile(frac, 99))
    if reference <= 0:
        return np.zeros(frac.shape, bool)
    return frac < fraction * reference


#: Fields of the raw-versus-NMF comparison (``/components/raw_vs_nmf``).
RAW_VS_NMF_DTYPE = np.dtype(
    [("component", np.int32), ("ssim", np.float32), ("psnr", np.float32), ("gmsd", np.float32), ("mdsi", np.float32)]
)


def raw_vs_nmf(raw, nmf, valid=None) -> np.ndarray:
    """Image-quality metrics between each cluster's raw mean pattern and its NMF pattern.

    Both are min-max scaled to [0, 1] first (masked pixels 0), then compared
    with :func:`stemnmf.kselect.ssim`, ``psnr``, ``gmsd`` and ``mdsi`` at
    ``data_range=1`` (reference: the raw mean pattern), as in Cao et al. A
    metric that cannot be computed (patterns smaller than its window) is NaN,
    with a warning.

    Returns
    -------
    numpy.ndarray
        Structured (k,) of :data:`RAW_VS_NMF_DTYPE`.
    """
    raw = np.asarray(raw, np.float32)
    nmf = np.asarray(nmf, np.float32)
    if raw.shape != nmf.shape or raw.ndim != 3:
        raise DataValueError(f"raw patterns {raw.shape} and NMF patterns {nmf.shape} must both be (k, qy, qx)")
    a = minmax_scale(raw, valid)
    b = minmax_scale(nmf, valid)
    table = np.zeros(raw.shape[0], RAW_VS_NMF_DTYPE)
    table["component"] = np.arange(raw.shape[0])
    if raw.shape[0]:
        for name in ("ssim", "psnr", "gmsd", "mdsi"):
            try:
                value = getattr(kselect, name)(a, b, data_range=1.0)
            except DataValueError as err:
                log.warning("raw-vs-NMF %s left out (NaN): %s", name.upper(), err.line)
                value = np.nan
            table[name] = np.asarray(value, np.float32).reshape(-1)
    return table

