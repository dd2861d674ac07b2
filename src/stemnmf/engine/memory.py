"""Keeping a process's resident memory close to what its arrays in use need."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

__all__ = ["MMAP_THRESHOLD", "bound_heap"]

log = logging.getLogger(__name__)

#: Arrays above this many bytes are mapped from the system and given back when freed.
MMAP_THRESHOLD = 8 * 1024**2

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_done = False
_lock = threading.Lock()


def bound_heap(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes, once per process; True when it was set.

    glibc raises the threshold (up to 32 MiB) each time a mapped block is
    freed; from then on arrays of that size come from the heap, and freed ones
    stay resident there, so a streamed run's peak resident memory grows tens
    of MiB above its budget (tests/test_scale_memory.py, 64 MiB budget: 58-75
    MiB above the fixed overhead; 52-53 MiB with the threshold fixed at 8 MiB,
    36-46 MiB at 1 MiB, where mapping every array of a few MiB afresh made the
    features pass up to a third slower). A fixed threshold keeps large arrays
    mapped and returned when freed. A no-op where the C library is not glibc.
    """
    global _done
    with _lock:
        if _done:
            return True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            mallopt = getattr(libc, "mallopt", None)
        except OSError:  # pragma: no cover - no C library to load
            mallopt = None
        if mallopt is None:  # pragma: no cover - not glibc
            return False
        _done = bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
        log.debug("mmap threshold fixed at %d bytes: %s", threshold, _done)
        return _done
