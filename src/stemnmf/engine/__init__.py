"""Where per-pattern work runs: the ground floor every layer that touches patterns stands on.

Every stage that touches diffraction patterns hands a function to an
:class:`Engine`, which applies it to the dataset in chunks of whole scan rows
and gathers what it returns. In-process (the default) the chunks run on a
thread pool with a bounded number in flight, so memory stays within a budget;
with a scheduler address the same chunks run on a dask.distributed cluster,
each worker reading its own rows. Per-position results never depend on the
chunking or the executor, and reductions are combined in chunk order, so
results are bit-identical across chunkings, threads and a cluster.

The kernel contract::

    def func(block, chunk, **kwargs):
        # block: float32 array (rows, sx, qy, qx), holding scan rows
        #        chunk.read_start:chunk.read_stop (the chunk plus its halo)
        # chunk: RowChunk telling which rows are the chunk's own
        # return: an array, or a tuple of arrays
        ...

and each output is declared per position (``'map'``: first axis one entry per
own position, ``chunk.n_positions``, in C order of the scan) or reduced over
the chunks (``'sum'``, ``'max'``, ``'min'`` or a callable), in one pass:
``Engine.apply(func, dataset, outputs=("map", "sum"))``. ``Engine.map`` and
``Engine.reduce`` are the all-per-position and all-reduced cases;
``Engine.transform`` builds a new Dataset4D from per-pattern outputs, lazily
when the input is lazy. ``Engine.attach`` fuses passes: a function attached to
a dataset runs on the blocks of the engine's next pass over it, and a later
call of the same function and options returns the stored result without
reading again.

Modules: :mod:`~stemnmf.engine.chunks` (row chunks, reading, sizes),
:mod:`~stemnmf.engine.jobs` (the contract, one chunk's work, accumulation),
:mod:`~stemnmf.engine.local` (threads), :mod:`~stemnmf.engine.cluster`
(dask.distributed, loaded only for a cluster run), :mod:`~stemnmf.engine.core`
(the Engine), :mod:`~stemnmf.engine.transformed` (lazy transformed rows).

Lazy datasets are read through their row reader (``Dataset4D.reader``: rows
mapped from the file or read with ``preadv`` into a buffer each thread reuses,
see docs/scale.md), or through dask when they have none. The engine reads a
dataset only through its attributes (``shape``, ``dtype``, ``data``,
``reader``, ``scan_shape``, ``n_positions``, ``is_lazy``, ``replace``) and
imports nothing from the layers above it.
"""

from stemnmf.engine.chunks import DEFAULT_MEMORY_BUDGET, RowChunk, format_bytes, parse_bytes, row_chunks
from stemnmf.engine.core import Attached, Engine
from stemnmf.engine.jobs import OUTPUT_MODES, Job
from stemnmf.engine.keys import token
from stemnmf.engine.transformed import TransformedRows

__all__ = [
    "Attached",
    "DEFAULT_MEMORY_BUDGET",
    "Engine",
    "Job",
    "OUTPUT_MODES",
    "RowChunk",
    "TransformedRows",
    "format_bytes",
    "parse_bytes",
    "row_chunks",
    "token",
]
