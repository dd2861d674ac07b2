"""Streaming low-rank denoiser: lower NSD and error on Poisson-noised data with known rank."""

import dask.array as da
import numpy as np
import pytest

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError
from stemnmf.filters import fit_lowrank, lowrank_dataset, lowrank_denoise, nsd, nsd_background, preprocess
from stemnmf.io import Dataset4D

SHAPE = (32, 32)


def disk(shape, center, radius, amplitude):
    yy, xx = np.indices(shape)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


GRAIN_SPOTS = [
    [(16, 25), (16, 7), (7, 16), (25, 16)],
    [(10, 22), (22, 10), (10, 10), (22, 22)],
    [(12, 24), (20, 8), (4, 18), (28, 14)],
]


def grain_pattern(g):
    image = 1.0 + disk(SHAPE, (16, 16), 3, 40)
    for c in GRAIN_SPOTS[g]:
        image = image + disk(SHAPE, c, 2, 12)
    return image


def three_grain_scan(sy=8, sx=10, seed=0):
    """Three grains in vertical bands; clean and Poisson-noised data (signal rank 3, centred rank 2)."""
    labels = np.minimum(np.arange(sx) * 3 // sx, 2)
    clean = np.stack([np.stack([grain_pattern(labels[x]) for x in range(sx)]) for _ in range(sy)]).astype(np.float32)
    noisy = np.random.default_rng(seed).poisson(clean).astype(np.float32)
    return clean, noisy


def test_lowrank_reduces_nsd_and_error_and_finds_the_rank():
    clean, noisy = three_grain_scan()
    den, basis = lowrank_denoise(noisy, random_state=0)
    assert basis.rank == 2
    assert den.shape == noisy.shape and den.dtype == np.float32 and (den >= 0).all()
    flat = lambda a: a.reshape(-1, *SHAPE)  # noqa: E731
    bg_noisy, bg_den = nsd_background(flat(noisy)), nsd_background(flat(den))
    assert bg_den.mean() < 0.3 * bg_noisy.mean()
    # NSD of the whole pattern moves towards the clean value
    gap_noisy = np.abs(nsd(flat(noisy)) - nsd(flat(clean))).mean()
    gap_den = np.abs(nsd(flat(den)) - nsd(flat(clean))).mean()
    assert gap_den < 0.5 * gap_noisy
    assert np.abs(den - clean).mean() < 0.3 * np.abs(noisy - clean).mean()
    # the eigenvalues beyond the rank lie below the Marchenko-Pastur edge
    assert basis.eigenvalues[1] > basis.edge > basis.eigenvalues[2]


def test_given_rank_and_no_weighting():
    _, noisy = three_grain_scan(seed=1)
    den1, basis1 = lowrank_denoise(noisy, rank=1, weighting=None, random_state=0)
    den3, basis3 = lowrank_denoise(noisy, rank=3, weighting=None, random_state=0)
    assert basis1.rank == 1 and basis3.rank == 3
    assert basis1.components.shape == (1, SHAPE[0] * SHAPE[1])
    np.testing.assert_allclose(basis3.components @ basis3.components.T, np.eye(3), atol=1e-4)
    assert (den1 >= 0).all() and (den3 >= 0).all()
    with pytest.raises(ConfigError):
        lowrank_denoise(noisy, rank=500, max_rank=500)
    with pytest.raises(ConfigError):
        lowrank_denoise(noisy, rank=0)
    with pytest.raises(ConfigError):
        lowrank_denoise(noisy, weighting="gaussian")


def test_dataset_version_matches_arrays_and_chunking():
    _, noisy = three_grain_scan(seed=2)
    expected, basis = lowrank_denoise(noisy, random_state=7)
    for ds, rows in [(Dataset4D(noisy), 3), (Dataset4D(da.from_array(noisy, chunks=(2, -1, -1, -1))), 1)]:
        out, fitted = lowrank_dataset(ds, engine=Engine(chunk_rows=rows, progress=False), random_state=7)
        assert out.is_lazy == ds.is_lazy
        assert fitted.rank == basis.rank
        np.testing.assert_allclose(np.asarray(out.data), expected, rtol=1e-3, atol=1e-3)
        assert out.metadata["lowrank"]["rank"] == basis.rank
    via = preprocess(Dataset4D(noisy), "lowrank", engine=Engine(progress=False), random_state=7)
    np.testing.assert_allclose(via.data, expected, rtol=1e-3, atol=1e-3)
    assert via.metadata["preprocessing"] == {"method": "lowrank", "random_state": 7}


def test_masked_pixels_are_zero_and_ignored():
    clean, noisy = three_grain_scan(seed=3)
    mask = np.zeros(SHAPE, bool)
    mask[:4, :4] = True
    noisy[:, :, :4, :4] = 1e6  # garbage under the mask must not leak
    ds = Dataset4D(noisy, mask=mask)
    basis = fit_lowrank(ds, engine=Engine(progress=False), random_state=0)
    assert basis.rank == 2
    out, _ = lowrank_dataset(ds, engine=Engine(progress=False), random_state=0)
    assert (out.data[:, :, mask] == 0).all()
    assert np.abs(out.data[:, :, ~mask] - clean[:, :, ~mask]).max() < 0.5 * np.abs(noisy - clean)[:, :, ~mask].max()


def test_lowrank_on_a_simulated_scan_moves_nsd_to_the_noise_free_value():
    import stemnmf

    noisy, _ = stemnmf.simulate("tiny", seed=1)
    clean, _ = stemnmf.simulate("tiny", seed=1, noise=False)
    out, basis = lowrank_dataset(noisy, engine=Engine(progress=False), random_state=0)
    qshape = noisy.pattern_shape
    raw, den, ref = (np.asarray(d.data).reshape(-1, *qshape) for d in (noisy, out, clean))
    assert 1 <= basis.rank < 20
    assert nsd_background(den).mean() < nsd_background(raw).mean()
    gap_raw = abs(nsd_background(raw).mean() - nsd_background(ref).mean())
    gap_den = abs(nsd_background(den).mean() - nsd_background(ref).mean())
    assert gap_den < 0.3 * gap_raw
    assert np.abs(den - ref).mean() < 0.5 * np.abs(raw - ref).mean()
