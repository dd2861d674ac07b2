"""Row blocks of a non-negative matrix, and the one validating pass over them.

Every solver in :mod:`stemnmf.decompose` reads X (positions x features) as a
sequence of row blocks: W is row-local, so one pass over the blocks updates W
block by block and accumulates the small reductions (W^T X, W^T W) that update
H. A block stays in cache between the two products that read it, so X is read
from memory once per iteration. The same code runs on an in-memory array (the
blocks are views) and on a matrix that does not fit in memory (an HDF5 dataset,
a memory map, a dask array, or a function yielding blocks), which is read again
on every pass.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stemnmf.errors import ConfigError, DataValueError

#: Largest |x| the float32 products of the solvers take without overflow (about sqrt of float32 max / 100).
_LARGEST = 1e17

__all__ = ["RowBlocks", "Summary", "as_blocks", "default_threads", "blas_limit"]

log = logging.getLogger(__name__)

#: Largest row block in bytes: small enough to stay in the last-level cache
#: between the two products that read it, large enough that the Python overhead
#: per block is negligible. X is split into ceil(bytes / BLOCK_BYTES) blocks of
#: equal rows, so the partition (and every rounding) does not depend on the
#: number of threads, and X up to BLOCK_BYTES is one block (no thread hand-offs).
BLOCK_BYTES = 8 * 1024**2

_controller = None


def default_threads() -> int:
    """Threads the solvers use: ``$STEMNMF_NUM_THREADS`` if set, else the CPU cores available."""
    value = os.environ.get("STEMNMF_NUM_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ConfigError(
                f"STEMNMF_NUM_THREADS={value!r} is not a number", "set it to a positive integer or unset it"
            ) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def blas_limit(threads: int | None):
    """Limit BLAS to ``threads`` threads inside the block (no-op for None).

    The solvers run row blocks on their own threads with single-threaded BLAS:
    many small products each synchronising a BLAS thread team are slow, worst
    on a loaded machine. The limit is process-wide while it lasts.
    """
    global _controller
    if threads is None:
        yield
        return
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=int(threads), user_api="blas"):
        yield


@dataclasses.dataclass(frozen=True)
class Summary:
    """What the validating pass learned about X.

    Attributes
    ----------
    shape : (int, int)
        (n_positions, n_features).
    total : float
        Sum of X (float64).
    sq_norm : float
        Squared Frobenius norm of X (float64).
    col_sum : numpy.ndarray
        (n_features,) float64 column sums.
    zero_rows : numpy.ndarray
        (n_positions,) bool, True where a row of X is all zero.
    """

    shape: tuple[int, int]
    total: float
    sq_norm: float
    col_sum: np.ndarray
    zero_rows: np.ndarray

    @property
    def mean(self) -> float:
        """Mean of X."""
        return self.total / (self.shape[0] * self.shape[1])

    @property
    def zero_cols(self) -> np.ndarray:
        """(n_features,) bool, True where a column of X is all zero."""
        return self.col_sum == 0


class RowBlocks:
    """X (positions x features) read as a re-iterable sequence of row blocks.

    Parameters
    ----------
    source : array-like, sequence of arrays, or callable
        * a 2-D array or anything with ``shape`` and row slicing
          (:class:`numpy.ndarray`, :class:`numpy.memmap`, :class:`h5py.Dataset`,
          a dask or zarr array): read in blocks of ``block_rows`` rows;
        * a list or tuple of 2-D arrays with the same number of columns: the
          blocks, in order (a list of rows is read as one array);
        * a callable returning a fresh iterable of 2-D blocks (one pass per call),
          for data produced on the fly.
    block_rows : int, optional
        Rows per block for array sources; default about 8 MiB of float32 per block.

    Notes
    -----
    A float32 C-contiguous NumPy array is used in place (blocks are views); any
    other NumPy array is converted to float32 once. Other sources are converted
    block by block on every pass, so they are never held whole. The values must
    not change between passes: the validating pass (:meth:`summary`) is cached.

    Examples
    --------
    >>> import h5py                                                # doctest: +SKIP
    >>> X = RowBlocks(h5py.File("features.h5")["X"], block_rows=4096)  # doctest: +SKIP
    >>> NMF(10).fit(X)                                             # doctest: +SKIP
    """

    def __init__(self, source, block_rows: int | None = None):
        if block_rows is not None and int(block_rows) < 1:
            raise ConfigError(f"block_rows={block_rows} must be at least 1")
        self._block_rows = None if block_rows is None else int(block_rows)
        self._summary: Summary | None = None
        self._callable: Callable[[], Iterable] | None = None
        self._sequence: Sequence | None = None
        self._array = None
        if isinstance(source, RowBlocks):
            self.__dict__.update(source.__dict__)
            if block_rows is not None:
                self._block_rows = int(block_rows)
            return
        if callable(source) and not hasattr(source, "shape"):
            self._callable = source
        elif isinstance(source, (list, tuple)) and len(source) and all(np.ndim(b) == 2 for b in source):
            self._sequence = source  # a list of 2-D blocks (a list of rows is an array, below)
        elif hasattr(source, "shape") and hasattr(source, "__getitem__"):
            if isinstance(source, np.ndarray) and not isinstance(source, np.memmap):
                source = _as_float32(source)
            self._array = source
        else:
            self._array = _as_float32(np.asarray(source))
        if self._array is not None and len(self._array.shape) != 2:
            raise DataValueError(
                f"X must be 2-D (positions x features), got shape {tuple(self._array.shape)}",
                "Reshape your data: a 4D scan (sy, sx, qy, qx) to (sy * sx, qy * qx), or pass a feature matrix",
            )

    # -- properties --------------------------------------------------------------------
    @property
    def in_memory(self) -> bool:
        """True when X is a float32 NumPy array held in memory (blocks are views)."""
        return isinstance(self._array, np.ndarray) and not isinstance(self._array, np.memmap)

    @property
    def array(self) -> np.ndarray | None:
        """The in-memory float32 array, or None for other sources."""
        return self._array if self.in_memory else None

    @property
    def shape(self) -> tuple[int, int]:
        """(n_positions, n_features); runs the validating pass if not known yet."""
        if self._array is not None:
            return tuple(int(s) for s in self._array.shape)
        return self.summary().shape

    def block_rows(self, n_features: int, n_rows: int | None = None) -> int:
        """Rows per block for an array source: ceil(bytes / BLOCK_BYTES) blocks of equal rows."""
        if self._block_rows is not None:
            return self._block_rows
        row_bytes = 4 * max(1, n_features)
        if n_rows is None:
            return max(1, BLOCK_BYTES // row_bytes)
        n_blocks = max(1, -(-(n_rows * row_bytes) // BLOCK_BYTES))
        return max(1, -(-n_rows // n_blocks))

    # -- iteration ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_row, block)`` with block float32 and C-contiguous."""
        if self._array is not None:
            n, m = self._array.shape
            step = self.block_rows(m, n)
            for start in range(0, n, step):
                block = self._array[start : start + step]
                yield start, _as_float32(_materialise(block))
            return
        blocks = self._callable() if self._callable is not None else self._sequence
        start = 0
        width = None
        for block in blocks:
            block = _as_float32(_materialise(block))
            if block.ndim != 2:
                raise DataValueError(
                    f"row blocks must be 2-D, got a block of shape {block.shape}",
                    "yield arrays shaped (rows, n_features)",
                )
            if width is None:
                width = block.shape[1]
            elif block.shape[1] != width:
                raise DataValueError(
                    f"row blocks disagree on the number of features: {width} and {block.shape[1]}",
                    "yield blocks with the same number of columns",
                )
            if block.shape[0] == 0:
                continue
            yield start, block
            start += block.shape[0]

    def map(self, func: Callable, n_threads: int | None = None) -> Iterator:
        """Yield ``func(start, block)`` for every block, in block order.

        With ``n_threads > 1`` the calls run on a thread pool (NumPy releases the
        GIL in the heavy work), at most ``2 * n_threads`` blocks in flight;
        results still come back in block order, so sums over them do not depend
        on the number of threads.
        """
        n_threads = default_threads() if n_threads is None else int(n_threads)
        if self._array is not None and self.block_rows(self._array.shape[1], self._array.shape[0]) >= len(self._array):
            n_threads = 1  # one block: no thread hand-off
        if n_threads <= 1:
            for start, block in self:
                yield func(start, block)
            return
        with ThreadPoolExecutor(n_threads, thread_name_prefix="stemnmf-nmf") as pool:
            pending: collections.deque = collections.deque()
            try:
                for start, block in self:
                    pending.append(pool.submit(func, start, block))
                    if len(pending) >= 2 * n_threads:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    # -- the validating pass -----------------------------------------------------------
    def summary(self) -> Summary:
        """Validate X in one pass and return what the solvers need (cached).

        Raises
        ------
        DataValueError
            If X is empty, has NaN, Inf or negative values, or is all zero.
        """
        if self._summary is None:
            self._summary = _scan(self)
        return self._summary


def as_blocks(X, block_rows: int | None = None) -> RowBlocks:
    """X as :class:`RowBlocks` (returned unchanged if it already is)."""
    if isinstance(X, RowBlocks) and block_rows is None:
        return X
    if hasattr(X, "format") and hasattr(X, "tocsr"):  # scipy.sparse
        raise DataValueError(
            "sparse X is not supported by stemnmf's NMF",
            "convert it with X.toarray() (feature matrices are dense)",
        )
    return RowBlocks(X, block_rows=block_rows)


def _materialise(block) -> np.ndarray:
    if isinstance(block, np.ndarray):
        return block
    compute = getattr(block, "compute", None)
    if compute is not None:  # dask
        return np.asarray(compute())
    return np.asarray(block)


def _as_float32(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "c":
        raise DataValueError(f"Complex data not supported (dtype {a.dtype})", "pass real, non-negative values")
    if a.dtype.kind not in "fiub":
        try:
            return np.ascontiguousarray(a, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataValueError(f"X must hold numbers, got dtype {a.dtype}", "convert it to float32") from None
    return np.ascontiguousarray(a, dtype=np.float32)


def _block_stats(start: int, block: np.ndarray):
    """Validate one block; return its row count, sum, squared norm, column sums and zero rows."""
    rows = f"rows {start}-{start + len(block) - 1}"
    if block.size == 0:
        return block.shape, 0.0, 0.0, np.zeros(block.shape[1]), np.zeros(len(block), bool)
    low = float(block.min())
    if np.isnan(low):
        raise DataValueError(f"X contains NaN (in {rows})", "replace them (numpy.nan_to_num) or drop those positions")
    if low == -np.inf:
        raise DataValueError(f"X contains -inf (in {rows})", "replace it (numpy.nan_to_num) or drop those positions")
    if low < 0:
        raise DataValueError(
            f"Negative values in data X (minimum {low:.4g} in {rows}); NMF needs non-negative data",
            "clip at zero (numpy.clip(X, 0, None)) or min-max scale the features",
        )
    row_sum = block.sum(axis=1)
    if not np.isfinite(row_sum).all() or (block.size and float(np.abs(block).max()) > _LARGEST):
        raise DataValueError(
            f"X contains inf or values above 1e17, too large for float32 products (in {rows})",
            "replace them (numpy.nan_to_num) or rescale X",
        )
    sq = float(np.einsum("ij,ij->", block, block, dtype=np.float64))
    return block.shape, float(row_sum.sum(dtype=np.float64)), sq, block.sum(axis=0, dtype=np.float64), row_sum == 0


def _scan(blocks: RowBlocks) -> Summary:
    n = 0
    m = None
    total = 0.0
    sq = 0.0
    col_sum = None
    zero_rows = []
    with blas_limit(1):
        for shape, b_total, b_sq, b_cols, b_zero in blocks.map(_block_stats):
            if m is None:
                m = shape[1]
                col_sum = np.zeros(m, dtype=np.float64)
            n += shape[0]
            total += b_total
            sq += b_sq
            col_sum += b_cols
            zero_rows.append(b_zero)
    if m is None or n == 0 or m == 0:
        shape = tuple(blocks._array.shape) if blocks._array is not None else (n, m or 0)
        what = "0 sample(s)" if shape[0] == 0 else "0 feature(s)"
        raise DataValueError(
            f"X is empty: {what} (shape={shape}) while a minimum of 1 is required",
            "give at least one position and one feature",
        )
    if total == 0:
        raise DataValueError("X is all zero; there is nothing to factorise", "check the input and its preprocessing")
    zero = np.concatenate(zero_rows)
    summary = Summary((n, m), total, sq, col_sum, zero)
    if zero.any():
        log.info("X has %d all-zero rows; they are kept and get zero weights", int(zero.sum()))
    if summary.zero_cols.any():
        log.info("X has %d all-zero columns; their component values are zero", int(summary.zero_cols.sum()))
    return summary
