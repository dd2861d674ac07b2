"""Hot and dead pixels: the published rule, by hand and on synthetic patterns with Bragg disks."""

import numpy as np
import pytest

from stemnmf.calibrate import (
    calibrate,
    find_dead_pixels,
    find_hot_pixels,
    local_sorted_intensity,
    remove_hot_pixels,
    replace_pixels,
)
from stemnmf.engine import Engine
from stemnmf.errors import ConfigError
from stemnmf.io import Dataset4D


def disk(shape, center, radius, amplitude):
    yy, xx = np.indices(shape)
    return amplitude * np.clip(radius + 0.5 - np.hypot(yy - center[0], xx - center[1]), 0, 1)


def spot_pattern(shape=(48, 48)):
    """A direct beam, four Bragg disks and a flat background of 5."""
    image = np.full(shape, 5.0)
    image += disk(shape, (24, 24), 4, 300)
    for c in [(10, 24), (38, 24), (24, 10), (24, 38)]:
        image += disk(shape, c, 3, 60)
    return image


def test_local_sorted_intensity_by_hand():
    image = np.arange(49, dtype=float).reshape(7, 7)
    image[3, 3] = 100.0
    # window of (3, 3): rows 1..5, cols 1..5 without the corners (1,1),(1,5),(5,1),(5,5)
    window = [image[y, x] for y in range(1, 6) for x in range(1, 6) if (y, x) not in {(1, 1), (1, 5), (5, 1), (5, 5)}]
    assert len(window) == 21
    expected_second = sorted(window)[-2]
    assert local_sorted_intensity(image, 1)[3, 3] == expected_second == 39.0
    assert local_sorted_intensity(image, 0)[3, 3] == 100.0
    assert local_sorted_intensity(image, 1, lowest=True)[3, 3] == sorted(window)[1]
    # corner pixel (0, 0): window is rows 0..2, cols 0..2 minus (2, 2) -> 8 pixels
    corner = sorted([image[y, x] for y in range(3) for x in range(3) if (y, x) != (2, 2)])
    assert local_sorted_intensity(image, 1)[0, 0] == corner[-2]


def test_relative_and_absolute_threshold_by_hand():
    image = np.full((9, 9), 10.0)
    image[4, 4] = 15.4  # 54 % above its neighbours
    image[1, 7] = 15.6  # 56 % above
    hot = find_hot_pixels(image, threshold=0.55)
    assert np.argwhere(hot).tolist() == [[1, 7]]
    hot_abs = find_hot_pixels(image, threshold=5.0, mode="absolute")
    assert np.argwhere(hot_abs).tolist() == [[1, 7], [4, 4]]
    with pytest.raises(ConfigError):
        find_hot_pixels(image, mode="sideways")


def test_hot_pixels_found_without_touching_bragg_disks():
    base = spot_pattern()
    injected = [(3, 5), (24, 25), (10, 27), (44, 44), (0, 47)]  # background, inside the beam, next to a disk, corner
    image = base.copy()
    for y, x in injected:
        image[y, x] = 3.0 * (base[y, x] + 50)
    hot = find_hot_pixels(image)
    assert {tuple(p) for p in np.argwhere(hot)} == set(injected)
    stack = np.stack([image * s for s in (0.5, 1.0, 2.0)])
    cleaned, found = remove_hot_pixels(stack)
    assert found.sum() == len(injected)
    untouched = ~found
    np.testing.assert_array_equal(cleaned[:, untouched], stack[:, untouched].astype(np.float32))
    # replaced values are the median of the 8 neighbours of the clean pattern
    for y, x in injected:
        ys, xs = np.meshgrid(range(max(0, y - 1), min(48, y + 2)), range(max(0, x - 1), min(48, x + 2)), indexing="ij")
        keep = ~((ys == y) & (xs == x))
        expected = np.median(base[ys[keep], xs[keep]])
        np.testing.assert_allclose(cleaned[1, y, x], expected, rtol=1e-6)


def test_replace_pixels_skips_bad_and_masked_neighbours():
    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    bad = np.zeros((5, 5), bool)
    bad[2, 2] = bad[2, 3] = True
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = True
    out, unfixed = replace_pixels(image, bad, mask=mask)
    # neighbours of (2, 2) without (2, 3) (bad) and (1, 1) (masked): 7, 8, 11, 16, 17, 18 -> median 14
    assert out[2, 2] == np.median([7, 8, 11, 16, 17, 18])
    assert not unfixed.any()
    lonely = np.zeros((5, 5), bool)
    lonely[0, 0] = True
    everything = np.ones((5, 5), bool)
    everything[0, 0] = False
    _, unfixed = replace_pixels(image, lonely, mask=everything)
    assert unfixed[0, 0]


def test_dead_pixels_found_but_not_beam_stop_shadow():
    image = spot_pattern()
    image[5, 40] = 0.0  # dead
    image[40:48, 22:27] = 0.0  # a shadow region (not isolated)
    dead = find_dead_pixels(image)
    assert np.argwhere(dead).tolist() == [[5, 40]]


def test_calibrate_replaces_hot_pixels_in_every_pattern_whatever_the_chunking():
    rng = np.random.default_rng(3)
    sy, sx = 6, 5
    base = spot_pattern((32, 32))
    data = rng.poisson(np.broadcast_to(base, (sy, sx, 32, 32))).astype(np.float32)
    data[:, :, 7, 3] += 400.0
    data[:, :, 30, 30] = 0.0  # dead
    ds = Dataset4D(data)
    results = []
    for rows in (1, 4, 100):
        out, report = calibrate(ds, engine=Engine(chunk_rows=rows, progress=False), origin=None, beam_stop=None)
        results.append(out.data)
        assert report.hot_pixels.tolist() == [[7, 3]]
        assert report.dead_pixels.tolist() == [[30, 30]]
        assert out.mask[30, 30] and out.mask.sum() == 1
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    assert results[0][:, :, 7, 3].max() < 100  # now like its neighbours
    np.testing.assert_array_equal(results[0][:, :, 16, 16], data[:, :, 16, 16])


def test_intermittent_hot_pixel_is_found_on_the_max_pattern():
    """A pixel that flares in one pattern of 30 hides in the mean pattern but not in the maximum."""
    rng = np.random.default_rng(4)
    base = spot_pattern((32, 32))
    data = rng.poisson(np.broadcast_to(base, (6, 5, 32, 32))).astype(np.float32)
    data[2, 3, 7, 3] += 100.0  # +3.3 counts in the mean, over a background of 5
    ds = Dataset4D(data)
    engine = Engine(progress=False)
    _, on_mean = calibrate(ds, engine=engine, origin=None, beam_stop=None, hot_pixel_reference="mean")
    out, on_max = calibrate(ds, engine=engine, origin=None, beam_stop=None, hot_pixel_reference="max")
    assert on_max.hot_pixels.tolist() == [[7, 3]] and [7, 3] not in on_mean.hot_pixels.tolist()
    assert out.data[2, 3, 7, 3] < 20  # replaced in the pattern where it flared
