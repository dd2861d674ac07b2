"""One-pass summaries and checks of a dataset's values.

How stemnmf handles awkward values (also in docs/formats.md):

* **NaN and Inf** are read as 0 wherever patterns are processed (the engine
  converts each chunk to float32 and replaces them). Detector pixels that are
  NaN or Inf in *every* pattern are added to ``Dataset4D.mask``.
* **Negative values** (e.g. after dark-reference subtraction) are kept as
  they are by the readers and clipped to 0 before NMF, which needs
  non-negative data.
* **Large integers.** Patterns are processed in float32, which holds integers
  exactly up to 2**24 = 16,777,216; larger values are rounded to 24
  significant bits (relative error below 6e-8). Sums (totals, means, the
  summaries here) are accumulated in float64, exact up to 2**53, so uint32,
  int64 or uint64 data never overflow a sum. Values beyond float32's range
  (|x| > 3.4e38, only possible in float64 data) would become infinite and
  are refused with a :class:`~stemnmf.errors.DataValueError`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from stemnmf.engine import Engine
from stemnmf.errors import DataValueError
from stemnmf.io.dataset import Dataset4D

__all__ = ["ValueReport", "attach_summary", "summary_images", "check_values", "intensity_summary", "sample_rows", "FLOAT32_EXACT", "FLOAT32_MAX"]

log = logging.getLogger(__name__)

#: Largest integer up to which every integer is exact in float32 (2**24).
FLOAT32_EXACT = 2**24
#: Largest finite float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _stats(block, chunk):
    own = block[chunk.own]
    if own.size == 0:
        return (np.array([np.inf, -np.inf, 0.0, 0.0, 0.0, 0.0, 0.0]),)
    low, high = own.min(), own.max()
    if own.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
        finite = np.isfinite(own)
        values = own[finite]
        n_nonfinite = own.size - values.size
        if values.size == 0:
            return (np.array([np.inf, -np.inf, 0.0, 0.0, 0.0, 0.0, float(n_nonfinite)]),)
        low, high = values.min(), values.max()
    else:
        values, n_nonfinite = own, 0
    return (
        np.array(
            [
                float(low),
                float(high),
                float(np.sum(values, dtype=np.float64)),
                float(values.size),
                float(np.count_nonzero(values < 0)) if low < 0 else 0.0,
                float(np.count_nonzero(values == 0)) if low <= 0 <= high else 0.0,
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
    if dataset.is_lazy:
        import dask.array as da

        # one slice per row: each reads just its row (a list index would read whole chunks)
        data = da.concatenate([dataset.data[r : r + 1] for r in rows.tolist()], axis=0)
    else:
        data = dataset.data[rows]
    return dataset.replace(data=data, origins=None)


def intensity_summary(dataset: Dataset4D, engine=None, *, max_rows: int | None = None) -> dict:
    """Minimum, maximum, mean and counts of negative, zero and non-finite values.

    Sums are accumulated in float64 whatever the stored dtype.

    Parameters
    ----------
    max_rows : int, optional
        Read at most this many scan rows, evenly spread (the summary says so).

    Returns
    -------
    dict
        ``min, max, mean, n_values, n_negative, n_zero, n_nonfinite, sampled_rows``.
    """
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


# -- value checks -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ValueReport:
    """Counts of values that need care, from :func:`check_values`.

    Attributes
    ----------
    n_values : int
        Values checked.
    n_nonfinite : int
        NaN or Inf values (read as 0).
    n_negative : int
        Negative values (clipped to 0 before NMF).
    n_inexact : int
        Integers with magnitude above 2**24, rounded when converted to float32.
    n_beyond_float32 : int
        Finite values beyond float32's range.
    minimum, maximum : float
        Over the finite values (NaN when there are none).
    nonfinite_pixels : numpy.ndarray
        (qy, qx) bool, True where a detector pixel is NaN/Inf in every pattern checked.
    sampled_rows : int or None
        Scan rows checked when only a sample was read; None for the whole scan.
    """

    n_values: int
    n_nonfinite: int
    n_negative: int
    n_inexact: int
    n_beyond_float32: int
    minimum: float
    maximum: float
    nonfinite_pixels: np.ndarray
    sampled_rows: int | None = None

    def messages(self, name: str) -> list[str]:
        """Warnings to log, one line each (empty when every value is fine)."""
        where = f" (in {self.sampled_rows} sampled scan rows)" if self.sampled_rows else ""
        lines = []
        if self.n_nonfinite:
            masked = int(self.nonfinite_pixels.sum())
            text = (
                f"{name}: {self.n_nonfinite} of {self.n_values} values are NaN or Inf{where}; "
                "they are read as 0"
            )
            if masked and not self.sampled_rows:
                text += f", and the {masked} detector pixel(s) that are NaN/Inf in every pattern are masked"
            lines.append(text)
        if self.n_negative:
            lines.append(
                f"{name}: {self.n_negative} of {self.n_values} values are negative{where} "
                f"(minimum {self.minimum:.4g}); they are clipped to 0 before NMF, which needs non-negative data"
            )
        if self.n_inexact:
            lines.append(
                f"{name}: {self.n_inexact} values exceed 2**24 = {FLOAT32_EXACT}{where} (maximum {self.maximum:.6g}); "
                "patterns are processed in float32, which rounds them to 24 significant bits "
                "(relative error < 6e-8); sums are accumulated in float64"
            )
        return lines


def _value_stats(block, chunk):
    own = block[chunk.own]
    qy, qx = own.shape[-2:]
    kind = own.dtype.kind
    counts = np.zeros(5)
    counts[0] = own.size
    all_bad = np.zeros((qy, qx), bool)
    if own.size == 0:
        return counts, np.array([np.inf]), np.array([-np.inf]), ~all_bad
    low, high = float(own.min()), float(own.max())
    if kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
        # slow path, only for data holding NaN or Inf
        finite = np.isfinite(own)
        n_finite = int(np.count_nonzero(finite))
        counts[1] = own.size - n_finite
        all_bad = ~finite.any(axis=(0, 1))
        if n_finite:
            low = float(np.min(own, where=finite, initial=np.inf))
            high = float(np.max(own, where=finite, initial=-np.inf))
        else:
            low, high = np.inf, -np.inf
    if low < 0:
        counts[2] = np.count_nonzero(own < 0)
    if kind == "f" and own.dtype.itemsize > 4 and max(abs(low), abs(high)) > FLOAT32_MAX:
        counts[4] = np.count_nonzero(np.abs(np.where(np.isfinite(own), own, 0)) > FLOAT32_MAX)
    if kind in "iu" and own.dtype.itemsize >= 4 and max(abs(low), abs(high)) > FLOAT32_EXACT:
        big = own.astype(np.float64) if kind == "u" else np.abs(own.astype(np.float64))
        counts[3] = np.count_nonzero(big > FLOAT32_EXACT)
    return counts, np.array([low]), np.array([high]), all_bad


def check_values(dataset: Dataset4D, engine=None, *, max_rows: int | None = None) -> ValueReport:
    """Count NaN/Inf, negative and very large values in one pass through the engine.

    Parameters
    ----------
    dataset : Dataset4D
    engine : stemnmf.engine.Engine, optional
        Default: in-process, no progress bar.
    max_rows : int, optional
        Check at most this many scan rows, evenly spread (for a quick look
        at a lazy dataset).

    Returns
    -------
    ValueReport

    Raises
    ------
    DataValueError
        If every value is NaN/Inf, or values exceed float32's range.
    """
    engine = engine or Engine(progress=False)
    part = sample_rows(dataset, max_rows) if max_rows else dataset
    counts, low, high, all_bad = engine.reduce(
        _value_stats, part, combine=["sum", "min", "max", np.logical_and], dtype=None, desc="checking values"
    )
    report = ValueReport(
        n_values=int(counts[0]),
        n_nonfinite=int(counts[1]),
        n_negative=int(counts[2]),
        n_inexact=int(counts[3]),
        n_beyond_float32=int(counts[4]),
        minimum=float(low[0]) if np.isfinite(low[0]) else float("nan"),
        maximum=float(high[0]) if np.isfinite(high[0]) else float("nan"),
        nonfinite_pixels=np.asarray(all_bad, bool),
        sampled_rows=part.scan_shape[0] if part is not dataset else None,
    )
    name = dataset.source or "the dataset"
    if report.n_values and report.n_nonfinite == report.n_values:
        raise DataValueError(
            f"every value in {name} is NaN or Inf" + (" in the sampled rows" if report.sampled_rows else ""),
            "check that the file holds measured patterns",
        )
    if report.n_beyond_float32:
        raise DataValueError(
            f"{report.n_beyond_float32} values in {name} exceed float32's range (|x| > {FLOAT32_MAX:.3g}) "
            "and would become infinite when processed",
            "rescale the data (divide it by a constant) before loading it",
        )
    return report


def apply_value_report(dataset: Dataset4D, report: ValueReport, *, log_warnings: bool = True) -> Dataset4D:
    """Log the report's warnings and mask pixels that are NaN/Inf in every pattern.

    The mask is only extended from a check of the whole scan (not a sample).
    """
    if log_warnings:
        for line in report.messages(dataset.source or "the dataset"):
            log.warning(line)
    if report.sampled_rows or not report.nonfinite_pixels.any():
        return dataset
    mask = report.nonfinite_pixels if dataset.mask is None else (dataset.mask | report.nonfinite_pixels)
    return dataset.replace(mask=mask)


def summary_images(dataset: Dataset4D, engine: Engine | None = None) -> dict[str, np.ndarray]:
    """Mean intensity per position (sy, sx), and the mean and maximum pattern (qy, qx), in one pass.

    When :func:`attach_summary` was called on the same engine and dataset
    before a pass (e.g. the features'), the images come from that pass and
    nothing is read here.
    """
    engine = engine or Engine(progress=False)
    n = dataset.n_positions
    means = attach_summary(dataset, engine)
    totals, peak = engine.reduce(_summary_totals, dataset, combine=["sum", "max"], desc="summary")
    return {
        "/summary/mean_image": means.result().reshape(dataset.scan_shape).astype(np.float32),
        "/summary/mean_pattern": (totals / n).astype(np.float32),
        "/summary/max_pattern": peak.astype(np.float32),
    }


def attach_summary(dataset: Dataset4D, engine: Engine):
    """Let the engine's next pass over ``dataset`` also compute :func:`summary_images` (no pass of its own)."""
    engine.attach(_summary_totals, dataset, combine=["sum", "max"], desc="summary")
    return engine.attach(_summary_means, dataset, mode="map", desc="summary")


def _summary_totals(block, chunk):
    own = block[chunk.own]
    return own.sum(axis=(0, 1), dtype=np.float64), own.max(axis=(0, 1)).astype(np.float64)


def _summary_means(block, chunk):
    own = block[chunk.own]
    return own.mean(axis=(2, 3), dtype=np.float64).reshape(-1)
