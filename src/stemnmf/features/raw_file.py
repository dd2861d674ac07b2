"""Raw features too large for memory: written to an HDF5 file in one streamed pass, scaled as they are read."""

from __future__ import annotations

import h5py
import numpy as np

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError
from stemnmf.features.featurize import featurize
from stemnmf.features.raw import auto_bin, bin_patterns
from stemnmf.features.scaling import minmax_factors, minmax_scale_rows, pattern_scale_rows
from stemnmf.io.dataset import Dataset4D
from stemnmf.io.readers.sources import H5Array

__all__ = ["ScaledRows", "raw_features_on_grid", "raw_features_to_file", "raw_width"]


def raw_width(pattern_shape: tuple[int, int], raw_bin="auto") -> int:
    """Columns of the raw feature matrix on the binned grid of ``pattern_shape`` (``raw_bin`` 'auto' or an int)."""
    factor = auto_bin(pattern_shape) if raw_bin == "auto" else int(raw_bin)
    qy, qx = pattern_shape
    return (qy // factor) * (qx // factor)


class ScaledRows:
    """Rows of a feature matrix on disk, scaled as they are read (picklable, for NMF row blocks).

    ``method`` 'minmax': ``(x - lo) * scale`` clipped to [0, 1] on the columns
    in ``columns`` (others stay 0); 'pattern': each row divided by its maximum.
    """

    def __init__(self, source, method: str, lo=None, scale=None, columns=None):
        self.source = source
        self.method = method
        self.lo, self.scale, self.columns = lo, scale, columns
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rows = np.asarray(self.source[key], dtype=np.float32)
        if self.method == "minmax":
            rows[:, self.columns] = minmax_scale_rows(rows[:, self.columns], self.lo, self.scale)
        elif self.method == "pattern":
            rows = pattern_scale_rows(rows)
        return rows.astype(np.float32, copy=False)


def _raw_grid_kernel(block, chunk, *, factor, mask, transform):
    own = block[chunk.own]
    return bin_patterns(own.reshape(-1, *own.shape[2:]), factor, mask, transform=transform, drop_masked=False)


def raw_features_to_file(dataset: Dataset4D, path, *, engine: Engine, scaling: str = "none",
                         block_rows: int | None = None, **options):
    """Raw features written to an HDF5 file in one streamed pass, on the binned grid; never held whole.

    The same values as :func:`stemnmf.featurize` with ``'raw'`` followed by
    :func:`raw_features_on_grid` (masked bins are zero columns).

    block_rows : int, optional
        Rows read at once to find the columns' range (default about 8 MiB).

    Returns
    -------
    X : ScaledRows
        The rows in the file, scaled as they are read (an array-like for
        :class:`~stemnmf.decompose.RowBlocks`).
    description : FeatureDescription
        As featurize gives it (``scale_min`` / ``scale_max`` over every position).
    raw_shape : (int, int)
        The binned grid.
    """
    if scaling not in ("none", "minmax", "pattern"):
        raise ConfigError(
            f"scaling {scaling!r} is not available for raw features read from disk (they do not fit the memory budget)",
            "use --scaling none, minmax or pattern, or raise --memory-budget",
        )
    # the description (columns, settings) from one scan row: it does not depend on the values
    _, description = featurize(dataset.row_slice(0, 1), "raw", engine=Engine(progress=False), scaling="none", **options)
    raw = description.settings["raw"]
    shape = tuple(int(v) for v in raw["binned_shape"])
    factor = int(raw["bin"])
    mask = dataset.mask if raw["masked"] else None
    m = shape[0] * shape[1]
    with h5py.File(path, "w") as h5:
        out = h5.create_dataset("X", shape=(dataset.n_positions, m), dtype=np.float32,
                                chunks=(max(1, min(dataset.n_positions, (4 << 20) // (4 * m))), m))
        engine.map(_raw_grid_kernel, dataset, kwargs=dict(factor=factor, mask=mask, transform=raw["transform"]),
                   desc="features: raw", out=out)
    source = H5Array(path, "/X", (dataset.n_positions, m), np.float32, None)
    columns = description.columns
    flat = (columns["qy"] // factor).astype(np.int64) * shape[1] + (columns["qx"] // factor).astype(np.int64)
    lo = np.full(flat.size, np.inf, np.float32)
    hi = np.full(flat.size, -np.inf, np.float32)
    step = block_rows or max(1, (8 << 20) // (4 * m))
    for start in range(0, dataset.n_positions, step):
        block = source[start : start + step]
        np.minimum(lo, block[:, flat].min(axis=0), out=lo)
        np.maximum(hi, block[:, flat].max(axis=0), out=hi)
    description.scale_min, description.scale_max = lo, hi
    description.settings["scaling"] = scaling
    if scaling == "minmax":
        return ScaledRows(source, "minmax", lo, minmax_factors(lo, hi), flat), description, shape
    if scaling == "pattern":
        return ScaledRows(source, "pattern"), description, shape
    return ScaledRows(source, "none"), description, shape


def raw_features_on_grid(X: np.ndarray, description) -> tuple[np.ndarray, tuple[int, int]]:
    """Raw features with one column per bin of the binned detector, and that grid's shape.

    Featurizing drops bins that are wholly masked; they come back as zero
    columns, so that a row of H reshapes to a pattern.
    """
    raw = description.settings["raw"]
    shape = tuple(int(v) for v in raw["binned_shape"])
    if X.shape[1] == shape[0] * shape[1]:
        return X, shape
    columns = description.columns
    factor = float(raw["bin"])
    flat = (columns["qy"] // factor).astype(np.int64) * shape[1] + (columns["qx"] // factor).astype(np.int64)
    full = np.zeros((X.shape[0], shape[0] * shape[1]), dtype=X.dtype)
    full[:, flat] = X
    return full, shape
