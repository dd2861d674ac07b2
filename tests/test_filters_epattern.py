"""Peak-reconstruction ("ePattern") denoiser: spots found at the noise level and redrawn as clean disks."""

import dask.array as da
import numpy as np
import pytest

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError
from stemnmf.filters import disk_kernel, epattern, find_spots, nsd_background, preprocess, render_disks
from stemnmf.io import Dataset4D

SHAPE = (48, 48)
SPOTS = [(24.0, 24.0), (24.3, 36.6), (11.7, 24.2), (36.5, 12.4), (12.2, 11.8)]
HEIGHTS = [200.0, 30.0, 25.0, 20.0, 15.0]
RADIUS = 3


def disk(shape, center, radius, amplitude):
    yy, xx = np.indices(shape)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


def clean_pattern(background=4.0):
    yy, xx = np.indices(SHAPE)
    image = background + 2.0 * np.exp(-np.hypot(yy - 24, xx - 24) / 20)  # smooth diffuse background
    for c, h in zip(SPOTS, HEIGHTS):
        image = image + disk(SHAPE, c, RADIUS, h)
    return image


def test_spots_found_at_their_positions_and_nothing_else():
    rng = np.random.default_rng(0)
    stack = rng.poisson(np.broadcast_to(clean_pattern(), (6, *SHAPE))).astype(np.float32)
    index, positions, intensity, noise = find_spots(stack, disk_radius=RADIUS)
    assert (noise > 0).all()
    for i in range(6):
        found = positions[index == i]
        assert len(found) == len(SPOTS)
        for c in SPOTS:
            assert np.hypot(*(found - c).T).min() < 0.35
    # intensities: mean over the disk above the background, within 15 %
    order = [np.argmin(np.hypot(*(positions[index == 0] - c).T)) for c in SPOTS]
    np.testing.assert_allclose(intensity[index == 0][order], HEIGHTS, rtol=0.15)
    # a pattern of pure noise has no spots
    noise_only = rng.poisson(4.0, (3, *SHAPE)).astype(np.float32)
    index, _, _, _ = find_spots(noise_only, disk_radius=RADIUS)
    assert index.size == 0


def test_render_disks_by_hand():
    kernel = disk_kernel(3)
    out = render_disks((30, 30), [0, 1], [(10.0, 12.0), (15.5, 14.25)], [2.0, 5.0], disk_radius=3, n_patterns=2)
    assert out.shape == (2, 30, 30) and (out >= 0).all()
    np.testing.assert_allclose(out[0].sum(), 2.0 * kernel.sum(), rtol=1e-5)
    assert out[0, 10, 12] == pytest.approx(2.0, rel=1e-5)
    yy, xx = np.indices((30, 30))
    w = out[1]
    np.testing.assert_allclose([(w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()], [15.5, 14.25], atol=1e-4)


def test_epattern_output_is_clean_and_non_negative():
    rng = np.random.default_rng(1)
    clean = clean_pattern()
    stack = rng.poisson(np.broadcast_to(clean, (4, *SHAPE))).astype(np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[40:, 40:] = True
    out = epattern(stack, disk_radius=RADIUS, mask=mask)
    assert out.shape == stack.shape and out.dtype == np.float32
    assert (out >= 0).all() and (out[:, mask] == 0).all()
    far = np.ones(SHAPE, bool)
    for c in SPOTS:
        far &= np.hypot(*(np.indices(SHAPE) - np.reshape(c, (2, 1, 1)))) > RADIUS + 2
    assert (out[:, far] == 0).all()  # background and noise are gone
    for c, h in zip(SPOTS, HEIGHTS):
        centre = out[:, int(round(c[0])), int(round(c[1]))]
        np.testing.assert_allclose(centre, h, rtol=0.2)
    assert nsd_background(out).max() == 0.0 < nsd_background(stack).min()
    # the radius is estimated from the direct beam when not given
    auto = epattern(stack)
    assert (auto > 0).sum() == pytest.approx((out > 0).sum(), rel=0.25)
    with pytest.raises(ConfigError):
        epattern(stack, disk_radius=-1)


def test_epattern_dataset_independent_of_chunking():
    rng = np.random.default_rng(2)
    data = rng.poisson(np.broadcast_to(clean_pattern(), (5, 3, *SHAPE))).astype(np.float32)
    expected = epattern(data, disk_radius=RADIUS)
    for ds, rows in [(Dataset4D(data), 1), (Dataset4D(da.from_array(data, chunks=(2, -1, -1, -1))), 3)]:
        out = preprocess(ds, "epattern", engine=Engine(chunk_rows=rows, progress=False), disk_radius=RADIUS)
        assert out.is_lazy == ds.is_lazy
        np.testing.assert_allclose(np.asarray(out.data), expected, rtol=1e-5, atol=1e-4)
        assert out.metadata["preprocessing"]["method"] == "epattern"
    auto = preprocess(Dataset4D(data), "epattern", engine=Engine(chunk_rows=2, progress=False))
    assert (np.asarray(auto.data) >= 0).all()
