"""Shared fixtures: small scans with values known by construction."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# orix and diffsims compile numba functions on first use and cache them on disk; two test workers
# writing the same cache at once can leave a half-written file that crashes every later import
# (seen on a fresh clone: every worker segfaulted while collecting). Each worker gets its own cache.
if os.environ.get("PYTEST_XDIST_WORKER") and "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(
        Path(tempfile.gettempdir()) / f"stemnmf-numba-{os.getuid()}-{os.environ['PYTEST_XDIST_WORKER']}"
    )

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stemnmf.io import Calibration, Dataset4D  # noqa: E402


@pytest.fixture
def small_array():
    """(7, 5, 12, 10) float32 patterns; each value encodes its position and pixel."""
    sy, sx, qy, qx = 7, 5, 12, 10
    y, x, v, u = np.meshgrid(*(np.arange(n) for n in (sy, sx, qy, qx)), indexing="ij")
    return (1000 * y + 100 * x + 3 * v + u).astype(np.float32)


@pytest.fixture
def small_dataset(small_array):
    return Dataset4D(small_array, Calibration(scan_step=0.25, q_pixel=0.01, beam_energy=300.0))
