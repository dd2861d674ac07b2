"""Shared fixtures: small scans with values known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.io import Calibration, Dataset4D


@pytest.fixture
def small_array():
    """(7, 5, 12, 10) float32 patterns; each value encodes its position and pixel."""
    sy, sx, qy, qx = 7, 5, 12, 10
    y, x, v, u = np.meshgrid(*(np.arange(n) for n in (sy, sx, qy, qx)), indexing="ij")
    return (1000 * y + 100 * x + 3 * v + u).astype(np.float32)


@pytest.fixture
def small_dataset(small_array):
    return Dataset4D(small_array, Calibration(scan_step=0.25, q_pixel=0.01, beam_energy=300.0))
