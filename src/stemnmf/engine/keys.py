"""Content keys: one short hash of values and arrays, for caches and the names of lazy arrays."""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["token"]


def token(*parts) -> str:
    """A hex digest of ``parts``: arrays by shape and content, everything else by ``repr``.

    Equal parts give equal tokens in every process and session (no object
    identity, no Python hash randomisation).
    """
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()
