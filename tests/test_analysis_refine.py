"""Spatial refinement and region statistics on hand-made maps."""

import math

import numpy as np
import pytest

from stemnmf.analysis import (
    max_feret_diameter,
    refine_regions,
    region_labels,
    region_table,
    shape_descriptors,
)
from stemnmf.errors import ConfigError


def _two_blobs_and_a_speck(seed=0):
    rng = np.random.default_rng(seed)
    image = (0.05 * rng.random((40, 40))).astype(np.float32)  # low background
    blob_a = np.zeros((40, 40), bool)
    blob_a[3:11, 4:12] = True  # 64 positions
    blob_b = np.zeros((40, 40), bool)
    blob_b[22:34, 20:30] = True  # 120 positions
    speck = np.zeros((40, 40), bool)
    speck[35:37, 2:4] = True  # 4 positions
    for mask in (blob_a, blob_b, speck):
        image[mask] = 0.9 + 0.1 * rng.random(mask.sum())
    return image, blob_a, blob_b, speck


@pytest.mark.parametrize("method", ["yen", "otsu"])
def test_refinement_splits_two_blobs_of_one_component_and_drops_a_speck(method):
    image, blob_a, blob_b, speck = _two_blobs_and_a_speck()
    other = np.zeros_like(image)
    other[20:, :] = 0.5  # a second, flat-topped component
    regions = refine_regions(np.stack([image, other]), method=method, min_size=25)
    first = regions.component == 0
    assert first.sum() == 2, "two blobs of component 0 must become two regions"
    masks = regions.masks[first]
    np.testing.assert_array_equal(masks[0], blob_a)
    np.testing.assert_array_equal(masks[1], blob_b)
    assert not (masks.any(axis=0) & speck).any(), "the 4-position speck is below min_size"
    # each region keeps the component's weights inside and 0 outside
    np.testing.assert_array_equal(regions.maps[first][0], np.where(blob_a, image, 0))
    np.testing.assert_array_equal(regions.sizes[first], [64, 120])
    # the second component is one region of 20 x 40 positions
    assert (regions.component == 1).sum() == 1 and regions.sizes[regions.component == 1][0] == 800
    assert np.isfinite(regions.thresholds).all()


def test_min_size_keeps_the_speck_when_small_and_no_threshold_keeps_all_weight():
    image, blob_a, blob_b, speck = _two_blobs_and_a_speck()
    regions = refine_regions(image[None], method="yen", min_size=4)
    assert regions.n_regions == 3
    none = refine_regions(image[None], method=None, min_size=1)  # any weight > 0: one region
    assert none.n_regions == 1 and none.sizes[0] == 1600
    floor = refine_regions(image[None], method=None, min_size=1, floor=0.5)
    assert floor.n_regions == 3


def test_constant_map_gives_no_region_and_bad_options_fail():
    regions = refine_regions(np.ones((1, 10, 10), np.float32))
    assert regions.n_regions == 0 and regions.maps.shape == (0, 10, 10) and np.isnan(regions.thresholds[0])
    with pytest.raises(ConfigError, match="unknown refinement method"):
        refine_regions(np.ones((1, 4, 4)), method="li")
    with pytest.raises(ConfigError, match="min_size"):
        refine_regions(np.ones((1, 4, 4)), min_size=0)


def test_diagonal_neighbours_are_connected():
    image = np.zeros((10, 10), np.float32)
    idx = np.arange(10)
    image[idx, idx] = 1.0
    regions = refine_regions(image[None], method=None, min_size=10)
    assert regions.n_regions == 1 and regions.sizes[0] == 10


def test_closing_joins_blobs_split_by_a_one_position_gap():
    image = np.zeros((12, 21), np.float32)
    image[2:10, 2:10] = 1.0
    image[2:10, 11:19] = 1.0  # column 10 is a 1-position gap
    image[2:10, 10] = 0.01  # weak but present
    assert refine_regions(image[None], method=None, floor=0.5, min_size=5).n_regions == 2
    closed = refine_regions(image[None], method=None, floor=0.5, min_size=5, closing=3)
    assert closed.n_regions == 1 and closed.sizes[0] == 8 * 17


def test_clean_gives_each_position_to_the_region_of_largest_weight():
    maps = np.zeros((2, 10, 20), np.float32)
    maps[0, :, 0:12] = 1.0  # component 0 covers columns 0-11
    maps[1, :, 8:20] = 2.0  # component 1 covers 8-19 with larger weight
    maps[1, 0:3, 0:2] = 3.0  # and a 3 x 2 patch inside component 0
    regions = refine_regions(maps, method=None, min_size=5, clean=False)
    assert regions.component.tolist() == [0, 1, 1]  # the 6-position patch is a region of component 1
    assert (regions.masks[0] & regions.masks[1]).any()
    cleaned = refine_regions(maps, method=None, min_size=5, clean=True)
    owners = cleaned.masks.sum(axis=0)
    assert owners.max() == 1, "cleaned regions do not overlap"
    # component 0 keeps columns 0-7 minus the 6 patch positions; component 1 keeps the
    # patch (its first region in scan order) and columns 8-19
    pairs = list(zip(cleaned.component.tolist(), cleaned.sizes.tolist()))
    assert pairs == [(0, 80 - 6), (1, 6), (1, 120)]
    # a region left below min_size after cleaning is dropped
    dropped = refine_regions(maps, method=None, min_size=81, clean=True)  # component 0: 120 -> 80
    assert dropped.component.tolist() == [1]


def test_region_labels():
    maps = np.zeros((2, 2, 3), np.float32)
    maps[0, 0, :] = 1.0
    maps[1, :, 2] = 2.0
    np.testing.assert_array_equal(region_labels(maps), [[0, 0, 1], [-1, -1, 1]])
    assert (region_labels(np.zeros((0, 2, 3))) == -1).all()


@pytest.mark.parametrize("h,w", [(1, 1), (3, 4), (5, 12), (1, 20), (17, 2)])
def test_max_feret_diameter_of_a_rectangle(h, w):
    mask = np.zeros((30, 30), bool)
    mask[4 : 4 + h, 6 : 6 + w] = True
    assert max_feret_diameter(mask) == pytest.approx(math.hypot(h, w), rel=1e-12)


def test_max_feret_diameter_of_a_disk_and_an_l_shape():
    r = 10
    y, x = np.mgrid[-15:16, -15:16]
    disk = x**2 + y**2 <= r**2
    feret = max_feret_diameter(disk)
    # at least the extent along an axis (2r + 1 squares); at most the farthest corners
    assert 2 * r + 1 <= feret <= 2 * r + math.sqrt(2)
    ell = np.zeros((10, 10), bool)
    ell[0:8, 0] = True
    ell[7, 0:6] = True  # corners (0, 0) and (8, 6) are farthest apart
    assert max_feret_diameter(ell) == pytest.approx(10.0)
    assert max_feret_diameter(np.zeros((4, 4), bool)) == 0.0


def test_shape_descriptors_of_lines_and_rectangles():
    horizontal = np.zeros((20, 20), bool)
    horizontal[5:9, 2:12] = True  # 4 x 10
    d = shape_descriptors(horizontal)
    assert d["centroid_y"] == pytest.approx(6.5) and d["centroid_x"] == pytest.approx(6.5)
    assert d["orientation_deg"] == pytest.approx(0.0, abs=1e-9)
    # variances (n^2 - 1) / 12 along x (n = 10) and y (n = 4)
    assert d["eccentricity"] == pytest.approx(math.sqrt(1 - 15 / 99))
    assert shape_descriptors(horizontal.T)["orientation_deg"] == pytest.approx(90.0)
    diagonal = np.eye(8, dtype=bool)  # down the scan to the right: +45 degrees
    d = shape_descriptors(diagonal)
    assert d["orientation_deg"] == pytest.approx(45.0) and d["eccentricity"] == pytest.approx(1.0)
    assert shape_descriptors(np.fliplr(diagonal))["orientation_deg"] == pytest.approx(-45.0)
    square = np.zeros((9, 9), bool)
    square[2:7, 2:7] = True
    assert shape_descriptors(square)["eccentricity"] == pytest.approx(0.0, abs=1e-12)


def test_region_table_in_nm():
    maps = np.zeros((2, 20, 30), np.float32)
    maps[0, 2:6, 3:13] = 2.0  # 4 x 10 rectangle
    maps[0, 2, 3] = 4.0
    maps[1, 10:15, 20:25] = 1.0  # 5 x 5 square
    table = region_table(maps, component=[3, 1], scan_step=0.5, dissimilarity=[0.1, 0.2])
    assert table.dtype.names[:5] == ("region", "component", "area_px", "area_nm2", "equivalent_diameter_nm")
    first, second = table
    assert first["component"] == 3 and first["area_px"] == 40
    assert first["area_nm2"] == pytest.approx(40 * 0.25)
    assert first["equivalent_diameter_nm"] == pytest.approx(math.sqrt(4 * 40 / math.pi) * 0.5, rel=1e-6)
    assert first["max_feret_px"] == pytest.approx(math.hypot(4, 10), rel=1e-6)
    assert first["max_feret_nm"] == pytest.approx(math.hypot(4, 10) * 0.5, rel=1e-6)
    assert first["orientation_deg"] == pytest.approx(0.0, abs=1e-5)
    assert (first["centroid_y"], first["centroid_x"]) == pytest.approx((3.5, 7.5))
    assert first["mean_weight"] == pytest.approx((39 * 2 + 4) / 40) and first["max_weight"] == 4.0
    assert first["dissimilarity"] == pytest.approx(0.1)
    assert second["area_px"] == 25 and second["max_feret_nm"] == pytest.approx(math.hypot(5, 5) * 0.5, rel=1e-6)
    unknown = region_table(maps)
    assert np.isnan(unknown["area_nm2"]).all() and unknown["area_px"].tolist() == [40, 25]
    assert (unknown["component"] == -1).all() and np.isnan(unknown["dissimilarity"]).all()


def test_feret_diameter_lies_between_the_bounding_box_side_and_diagonal():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=60, deadline=None)
    @given(arrays(bool, (9, 11), elements=st.booleans()))
    def check(mask):
        if not mask.any():
            assert max_feret_diameter(mask) == 0.0
            return
        ys, xs = np.nonzero(mask)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        feret = max_feret_diameter(mask)
        assert max(h, w) - 1e-9 <= feret <= math.hypot(h, w) + 1e-9
        # brute force over all corners of all squares
        corners = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (0, 1) for dx in (0, 1)])
        d = np.sqrt(((corners[:, None] - corners[None]) ** 2).sum(-1)).max()
        assert feret == pytest.approx(d, rel=1e-12)

    check()
