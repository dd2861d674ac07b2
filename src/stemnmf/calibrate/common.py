"""Small helpers shared by the calibration modules and the filters: pattern stacks, masks, pattern statistics."""

from __future__ import annotations

import numpy as np

from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, DataValueError

__all__ = ["as_stack", "check_mask", "pattern_statistics", "stats_kernel"]


def as_stack(patterns) -> tuple[np.ndarray, tuple[int, ...]]:
    """View patterns shaped (..., qy, qx) as a float32 stack (n, qy, qx).

    Returns
    -------
    stack : numpy.ndarray
        (n, qy, qx) float32 (a copy only when the input is not float32).
    lead : tuple of int
        The leading shape, to restore with ``out.reshape(*lead, qy, qx)``.
    """
    array = np.asarray(patterns)
    if array.ndim < 2:
        raise DataValueError(
            f"patterns must have at least 2 dimensions (qy, qx), got shape {array.shape}",
            "pass one pattern (qy, qx) or a stack (..., qy, qx)",
        )
    if 0 in array.shape:
        raise DataValueError(f"patterns are empty (shape {array.shape})")
    lead = array.shape[:-2]
    stack = array.reshape(-1, *array.shape[-2:]).astype(np.float32, copy=False)
    return stack, lead


def check_mask(mask, shape: tuple[int, int], *, allow_full: bool = False) -> np.ndarray:
    """A (qy, qx) bool mask (True = masked out); all False when ``mask`` is None."""
    if mask is None:
        return np.zeros(shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise DataValueError(
            f"mask shape {mask.shape} does not match the pattern shape {tuple(shape)}",
            "give a mask with one value per detector pixel",
        )
    if mask.all() and not allow_full:
        raise CalibrationError("the mask covers every detector pixel", "mask fewer pixels")
    return mask


def stats_kernel(block, chunk):
    """Engine kernel: float64 sum and float32 maximum over the chunk's own patterns."""
    own = block[chunk.own]
    flat = own.reshape(-1, *own.shape[2:])
    return flat.sum(axis=0, dtype=np.float64), flat.max(axis=0)


def pattern_statistics(dataset, engine=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and maximum pattern of a Dataset4D in one streamed pass.

    Parameters
    ----------
    dataset : Dataset4D
    engine : Engine, optional
        Where the pass runs; default ``Engine()``.

    Returns
    -------
    mean, maximum : numpy.ndarray
        (qy, qx) float32 each.
    """
    engine = engine or Engine()
    total, peak = engine.reduce(stats_kernel, dataset, combine=["sum", "max"], desc="mean pattern")
    mean = (total / dataset.n_positions).astype(np.float32)
    return mean, np.asarray(peak, dtype=np.float32)
