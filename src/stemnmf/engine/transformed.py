"""Row reader of a transformed dataset: the input's rows read and transformed on demand."""

from __future__ import annotations

import numpy as np

from stemnmf.engine.chunks import RowChunk
from stemnmf.engine.jobs import transform_block

__all__ = ["TransformedRows"]


class TransformedRows:
    """Row reader of a transformed dataset: reads the input rows (with halo) and applies the function.

    Picklable when the function and its options are (the engine contract), so
    it runs on dask.distributed workers; per-position results do not depend on
    which rows are asked for together.
    """

    fills_buffer = False  # the function makes its own output array

    def __init__(self, reader, shape, func, kwargs, pattern_shape, out_dtype, halo=0):
        self.reader = reader
        self.input_shape = tuple(int(n) for n in shape)
        self.func = func
        self.kwargs = dict(kwargs)
        self.pattern_shape = tuple(int(n) for n in pattern_shape)
        self.dtype = np.dtype(out_dtype)
        self.halo = int(halo)

    def __call__(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        sy, sx = self.input_shape[:2]
        start, stop = max(0, int(start)), min(sy, int(stop))
        chunk = RowChunk(0, start, stop, max(0, start - self.halo), min(sy, stop + self.halo), sx)
        block = np.asarray(self.reader(chunk.read_start, chunk.read_stop))
        result = transform_block(block, chunk, self.func, self.kwargs, self.pattern_shape, self.dtype)
        if out is not None:
            out[...] = result
            return out
        return result

    def __repr__(self) -> str:
        return f"TransformedRows({getattr(self.func, '__name__', self.func)} of {self.reader!r})"
