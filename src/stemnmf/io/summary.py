"""One-pass summaries of a dataset's values."""

from __future__ import annotations

import numpy as np

from stemnmf.io.dataset import Dataset4D

__all__ = ["intensity_summary", "sample_rows"]


def _stats(block, chunk):
    own = block[chunk.own]
    finite = np.isfinite(own) if own.dtype.kind == "f" else np.ones(own.shape, bool)
    values = own[finite].astype(np.float64, copy=False)
    n_nonfinite = own.size - values.size
    if values.size == 0:
        return (np.array([np.inf, -np.inf, 0.0, 0.0, 0.0, 0.0, float(n_nonfinite)]),)
    return (
        np.array(
            [
                values.min(),
                values.max(),
                values.sum(),
                float(values.size),
                float(np.count_nonzero(values < 0)),
                float(np.count_nonzero(values == 0)),
                float(n_nonfinite),
            ]
        ),
    )


def _combine(a, b):
    return np.array([min(a[0], b[0]), max(a[1], b[1]), *(a[2:] + b[2:])])


def sample_rows(dataset: Dataset4D, max_rows: int) -> Dataset4D:
    """A dataset of at most ``max_rows`` scan rows evenly spread over the scan."""
    sy = dataset.scan_shape[0]
    if sy <= max_rows:
        return dataset
    rows = np.unique(np.linspace(0, sy - 1, max_rows).round().astype(int))
    data = dataset.data[rows] if not dataset.is_lazy else dataset.data[rows.tolist()]
    return dataset.replace(data=data, origins=None)


def intensity_summary(dataset: Dataset4D, engine=None, *, max_rows: int | None = None) -> dict:
    """Minimum, maximum, mean and counts of negative, zero and non-finite values.

    Parameters
    ----------
    max_rows : int, optional
        Read at most this many scan rows, evenly spread (the summary says so).

    Returns
    -------
    dict
        ``min, max, mean, n_values, n_negative, n_zero, n_nonfinite, sampled_rows``.
    """
    from stemnmf.engine import Engine

    engine = engine or Engine(progress=False)
    part = sample_rows(dataset, max_rows) if max_rows else dataset
    total = engine.reduce(_stats, part, combine=_combine, dtype=None, desc="summary")
    n = total[3]
    return {
        "min": float(total[0]) if n else float("nan"),
        "max": float(total[1]) if n else float("nan"),
        "mean": float(total[2] / n) if n else float("nan"),
        "n_values": int(n + total[6]),
        "n_negative": int(total[4]),
        "n_zero": int(total[5]),
        "n_nonfinite": int(total[6]),
        "sampled_rows": part.scan_shape[0] if part is not dataset else None,
    }
