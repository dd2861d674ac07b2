"""The navigator stack that the pipeline writes for the report's explorer (stemnmf.io.navigator)."""

import json
import math

import numpy as np

from stemnmf.engine import Engine
from stemnmf.io import Dataset4D
from stemnmf.io.navigator import (
    attach_navigator,
    bin_pattern_stack,
    dequantise_log,
    navigator_geometry,
    quantise_log,
)


def test_size_rule_bins_then_subsamples_and_holds_the_budget():
    assert navigator_geometry((10, 10), (64, 64)) == (1, 1)  # 64 px a side kept
    assert navigator_geometry((10, 10), (256, 256)) == (4, 1)  # binned to 64
    assert navigator_geometry((100, 100), (256, 256)) == (8, 1)  # 64^2 x 10^4 > 12 MiB: binned to 32
    for scan, det, budget in (((300, 300), (256, 256), 12 * 2**20), ((1000, 700), (512, 512), 12 * 2**20),
                              ((50, 50), (128, 128), 10_000)):
        factor, stride = navigator_geometry(scan, det, budget)
        size = math.ceil(scan[0] / stride) * math.ceil(scan[1] / stride) * (det[0] // factor) * (det[1] // factor)
        assert size <= budget
        if stride > 1:  # the smallest stride that fits
            smaller = math.ceil(scan[0] / (stride - 1)) * math.ceil(scan[1] / (stride - 1)) * (det[0] // factor) ** 2
            assert smaller > budget


def test_binning_is_the_block_mean_with_masked_and_negative_pixels_as_zero():
    pattern = np.arange(36, dtype=np.float32).reshape(6, 6)
    pattern[0, 0] = -5
    mask = np.zeros((6, 6), bool)
    mask[5, 5] = True
    binned = bin_pattern_stack(pattern[None], 2, mask)[0]
    # top-left block 0(-5 -> 0), 1, 6, 7 -> 3.5; bottom-right block 28, 29, 34, 35(masked) -> 91 / 4
    assert binned.shape == (3, 3)
    assert binned[0, 0] == 3.5 and binned[2, 2] == 91 / 4
    assert bin_pattern_stack(np.ones((1, 7, 5)), 2).shape == (1, 3, 2)  # cropped to a multiple


def test_log_codes_decode_within_their_step_each_pattern_on_its_own_scale():
    values = np.array([[[0.0, 0.01, 1.0, 50.0, 1000.0]], [[0.0, 0.2, 0.5, 2.0, 4.0]], [[0.0] * 5]])
    codes, scale = quantise_log(values)
    assert codes[:2, 0, 0].tolist() == [0, 0] and codes[:2, 0, -1].tolist() == [255, 255]
    np.testing.assert_allclose(scale, [[0.1, 1000.0], [4e-4, 4.0], [1.0, 1.0]], rtol=1e-6)  # f = vmax / 1e4
    decoded = dequantise_log(codes, scale)
    step = math.log1p(1e4) / 255  # one code in log1p(v / f)
    floor = scale[:2, 0, None, None]
    assert np.all(np.abs(np.log1p(decoded[:2] / floor) - np.log1p(values[:2] / floor)) <= step / 2 + 1e-5)
    assert codes[2].tolist() == [[0] * 5]


def test_attached_navigator_matches_the_patterns(small_array):
    # positions 7 x 5, patterns 12 x 10; a budget that forces stride 2 at bin 1
    data = small_array
    dataset = Dataset4D(data)
    engine = Engine(progress=False, chunk_rows=2)
    finish = attach_navigator(dataset, engine, origin=(6, 5), probe_radius=2.0, budget=4 * 3 * 120)
    engine.reduce(lambda block, chunk: (block[chunk.own].sum(dtype=np.float64),), dataset)  # the pass it rides
    nav = finish()
    assert int(nav["/navigator/stride"]) == 2 and int(nav["/navigator/bin"]) == 1
    codes = nav["/navigator/patterns"]
    assert codes.shape == (4, 3, 12, 10)
    kept = data[::2, ::2].astype(np.float64)
    vmax = kept.max(axis=(2, 3), keepdims=True)  # by hand: each pattern on its own log scale
    expected = np.rint(255 * np.log1p(kept / (vmax / 1e4)) / np.log1p(1e4))
    assert np.abs(codes.astype(int) - expected).max() <= 1  # float32 rounding may move a half-way code
    np.testing.assert_allclose(nav["/navigator/scale"][..., 1], vmax[..., 0, 0], rtol=1e-6)
    yy, xx = np.mgrid[:12, :10]
    bf = np.hypot(yy - 6, xx - 5) <= 2.2
    np.testing.assert_allclose(nav["/navigator/virtual_bf"], data[..., bf].sum(axis=-1), rtol=1e-6)
    geometry = json.loads(nav["/navigator/detector"])
    assert geometry["origin"] == [6.0, 5.0] and geometry["df_inner"] == 4.0
