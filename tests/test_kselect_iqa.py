"""IQA metrics: the published values of Cao et al. and values known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemnmf.reproduce import LMNO_FIXTURE
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.kselect import gmsd, iqa_matrix, mdsi, psnr, ssim

FIXTURE = LMNO_FIXTURE  # published outputs of Cao et al. 2025, see src/stemnmf/reproduce/data/README.md


@pytest.fixture(scope="module")
def lmno():
    data = np.load(FIXTURE)
    # as the study read them: gray uint8 images scaled to [0, 1], float64
    raw = data["raw_cluster_mean"].astype(np.float64) / 255.0
    nmf = data["nmf_representative"].astype(np.float64) / 255.0
    return raw, nmf, data["published_raw_vs_nmf"]


@pytest.mark.parametrize(
    "row, func, tolerance",
    [(0, psnr, 0.002), (1, mdsi, 0.001), (2, gmsd, 0.001), (3, ssim, 0.001)],
    ids=["psnr", "mdsi", "gmsd", "ssim"],
)
def test_published_raw_vs_nmf_values(lmno, row, func, tolerance):
    raw, nmf, published = lmno
    values = func(raw, nmf, data_range=1.0)  # the stack: one value per component
    assert values.shape == (8,)
    np.testing.assert_allclose(values, published[row], atol=tolerance, rtol=0)
    # one pair at a time gives the same float
    assert func(raw[3], nmf[3]) == pytest.approx(values[3], abs=1e-12)
    assert isinstance(func(raw[3], nmf[3]), float)


def test_mdsi_reference_is_the_first_argument(lmno):
    raw, nmf, published = lmno
    swapped = mdsi(nmf, raw)
    # MDSI is not symmetric: the published values need the raw mean as the reference
    assert np.abs(swapped - published[1]).max() > 0.005


def test_identical_images():
    rng = np.random.default_rng(0)
    image = rng.random((40, 50))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert psnr(image, image) == pytest.approx(80.0, abs=1e-9)  # -10 log10(1e-8)
    assert gmsd(image, image) == pytest.approx(0.0, abs=1e-12)
    assert mdsi(image, image) == pytest.approx(0.0, abs=1e-6)


def test_psnr_by_hand():
    a = np.full((16, 16), 0.5)
    b = np.full((16, 16), 0.6)
    # MSE = 0.01 -> 20 dB (the 1e-8 guard moves it by 4e-7 dB)
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-5)
    assert psnr(a * 255, b * 255, data_range=255) == pytest.approx(20.0, abs=1e-5)
    # half the pixels off by 0.2: MSE = 0.02
    c = a.copy()
    c[:8] += 0.2
    assert psnr(a, c) == pytest.approx(-10 * np.log10(0.02), abs=1e-5)


def test_ssim_of_constant_images_by_hand():
    # no variance: contrast/structure term is c2 / c2 = 1, luminance (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    a = np.full((30, 30), 0.2)
    b = np.full((30, 30), 0.6)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-12)


def test_ssim_downsamples_large_images():
    # 512 x 512 -> average pooled by 2 first: a checkerboard of 1-pixel squares becomes flat 0.5
    checker = (np.indices((512, 512)).sum(axis=0) % 2).astype(float)
    flat = np.full((512, 512), 0.5)
    assert ssim(checker, flat) == pytest.approx(1.0, abs=1e-12)
    # at 256 x 256 there is no pooling and the checkerboard differs from flat
    assert ssim(checker[:256, :256], flat[:256, :256]) < 0.1


def test_scale_and_data_range_cancel():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 32, 32))
    for func in (ssim, psnr, gmsd, mdsi):
        assert func(a * 255, b * 255, data_range=255) == pytest.approx(func(a, b), rel=1e-9, abs=1e-12)


def test_symmetry():
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 24, 24))
    for func in (ssim, psnr, gmsd):
        assert func(a, b) == pytest.approx(func(b, a), rel=1e-12)
    assert mdsi(a, b) != pytest.approx(mdsi(b, a), rel=1e-6)


def test_similarity_ordering():
    rng = np.random.default_rng(3)
    a = rng.random((48, 48))
    slightly = np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1)
    very = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)
    assert ssim(a, slightly) > ssim(a, very)
    assert psnr(a, slightly) > psnr(a, very)
    assert gmsd(a, slightly) < gmsd(a, very)
    assert mdsi(a, slightly) < mdsi(a, very)


def test_iqa_matrix_matches_pairwise_calls():
    rng = np.random.default_rng(4)
    patterns = rng.random((4, 20, 20))
    for name, func in (("ssim", ssim), ("psnr", psnr), ("gmsd", gmsd), ("mdsi", mdsi)):
        matrix = iqa_matrix(patterns, name, batch=5)
        assert matrix.shape == (4, 4)
        for i in range(4):
            for j in range(4):
                assert matrix[i, j] == pytest.approx(func(patterns[i], patterns[j]), rel=1e-12, abs=1e-12)


def test_bad_input():
    a = np.zeros((20, 20))
    with pytest.raises(DataValueError, match="differ"):
        ssim(a, np.zeros((20, 21)))
    with pytest.raises(DataValueError, match="smaller than the 11 x 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ConfigError, match="data_range"):
        psnr(a, a, data_range=0)
    with pytest.raises(DataValueError, match="NaN"):
        gmsd(a, np.full((20, 20), np.nan))
    with pytest.raises(DataValueError, match="stacks"):
        mdsi(np.zeros(5), np.zeros(5))
    with pytest.raises(ConfigError, match="unknown IQA metric"):
        iqa_matrix(np.zeros((2, 20, 20)), "lpips")
