"""Fragments of a grain absorbed by their neighbour's region when the raw data show no new reflection (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from stemnmf.analysis import Regions, absorb_fragments, analyze, fragment_evidence
from stemnmf.analysis.split import PeakBlocks
from stemnmf.errors import ConfigError

SCAN, Q = (40, 40), 32


def spots(rng, n=8):
    """(n, Q, Q): ``n`` single-entry reflections of one count each, away from the direct beam and each other."""
    out, taken = np.zeros((n, Q, Q)), []
    while len(taken) < n:
        y, x = (int(v) for v in rng.integers(3, Q - 3, 2))
        if (y - Q // 2) ** 2 + (x - Q // 2) ** 2 > 49 and all(abs(y - a) + abs(x - b) > 4 for a, b in taken):
            out[len(taken), y, x] = 1.0
            taken.append((y, x))
    return out


def scene(kind: str, seed: int = 0):
    """Poisson patterns (n, Q * Q) of a 40 x 40 scan, the regions cut and the grains, by construction.

    ``fringe``: grain A in columns 0-19, cut into two regions at column 10 where a thickness fringe changes
    the strength of each of its reflections (half 3 x weaker, half 2 x stronger; none vanishes); grain B
    (other reflections) in columns 20-39, its own region.
    ``stack``: grain A everywhere; grain C (its own reflections) on top of it in a disc of radius 8, where
    both scatter; the regions: A around the disc, and the disc.
    ``blank``: grain A in columns 0-19; columns 20-39 show only the direct beam and background (no
    reflection to judge by).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:Q, :Q]
    beam = 400.0 * np.exp(-((yy - Q // 2) ** 2 + (xx - Q // 2) ** 2) / 4.0)
    A, other = spots(rng), spots(rng)
    ay, ax = np.mgrid[: SCAN[0], : SCAN[1]]
    strong = np.tensordot(np.full(8, 40.0), A, 1)
    if kind == "fringe":
        fringe = np.tensordot(np.array([12.0, 80.0] * 4), A, 1)
        left, piece = ax < 10, (ax >= 10) & (ax < 20)
        pattern = np.where(left[..., None, None], strong, np.where(piece[..., None, None], fringe,
                                                                   np.tensordot(np.full(8, 40.0), other, 1)))
        regions = [left, piece, ax >= 20]
        grains = [ax < 20, ax >= 20]
    elif kind == "stack":
        disc = (ay - 20) ** 2 + (ax - 20) ** 2 < 64
        pattern = strong + np.where(disc[..., None, None], np.tensordot(np.full(8, 40.0), other, 1), 0.0)
        regions = [~disc, disc]
        grains = [np.ones(SCAN, bool), disc]
    else:
        pattern = np.where((ax < 20)[..., None, None], strong, 0.0)
        regions = [ax < 20, ax >= 20]
        grains = [ax < 20]
    X = rng.poisson(5.0 + beam + pattern).reshape(SCAN[0] * SCAN[1], Q * Q).astype(np.float32)
    cut = Regions(np.asarray(regions, np.float32), np.arange(len(regions), dtype=np.int32),
                  np.zeros(len(regions), np.float32))
    return X, cut, grains


def blocks_of(X):
    return PeakBlocks.from_positions(X, SCAN, (Q, Q))


def test_a_fringe_piece_of_a_grain_joins_its_grain_and_the_touching_other_grain_stays():
    X, cut, (grain_a, grain_b) = scene("fringe")
    out = absorb_fragments(cut, blocks_of(X))
    assert out.n_regions == 2
    masks = sorted(out.masks, key=lambda m: -m[:, 0].sum())
    assert (masks[0] == grain_a).all() and (masks[1] == grain_b).all()
    assert out.component[0] in (0, 1) and out.component[1] == 2


def test_the_evidence_counts_the_other_grains_reflections_and_none_of_the_fringe_pieces():
    X, cut, _ = scene("fringe")
    blocks = blocks_of(X)
    masks = cut.masks
    peaks, new = fragment_evidence(masks[1], masks[0], blocks)
    assert peaks == 8 and new == 0  # all eight reflections of A, each shown (weaker or stronger) next door
    peaks, new = fragment_evidence(masks[2], masks[1], blocks)
    assert peaks == 8 and new == 8  # B's eight reflections: none is A's


def test_a_stacked_grains_region_keeps_its_reflections_apart_and_the_host_is_not_its_piece():
    X, cut, (host, disc) = scene("stack")
    blocks = blocks_of(X)
    peaks, new = fragment_evidence(cut.masks[1], cut.masks[0], blocks)
    assert peaks == 16 and new == 8  # the host's eight and its own eight, which the host lacks
    assert fragment_evidence(cut.masks[0], cut.masks[1], blocks)[1] == 0  # the host's all show on the disc
    out = absorb_fragments(cut, blocks)
    assert out.n_regions == 2  # the larger host does not join the smaller stacked grain
    assert (out.masks[0] == ~disc).all() and (out.masks[1] == disc).all()


def test_a_region_without_reflections_cannot_be_judged_and_stays():
    X, cut, _ = scene("blank")
    blocks = blocks_of(X)
    assert fragment_evidence(cut.masks[1], cut.masks[0], blocks)[0] == 0
    out = absorb_fragments(cut, blocks)
    assert out.n_regions == 2


def test_analyze_absorbs_with_the_option_and_not_without():
    X, cut, (grain_a, _) = scene("fringe")
    W = cut.maps.reshape(3, -1).T * 1.0
    blocks = blocks_of(X)
    off = analyze(W, None, SCAN, vacuum=None, edge_fraction=0, min_coherence=None, region_peaks=blocks)  # default
    on = analyze(W, None, SCAN, vacuum=None, edge_fraction=0, min_coherence=None, region_peaks=blocks, absorb=4)
    without_data = analyze(W, None, SCAN, vacuum=None, edge_fraction=0, min_coherence=None, absorb=4)
    assert off.regions.n_regions == 3 and on.regions.n_regions == 2 and without_data.regions.n_regions == 3
    assert on.region_table.shape[0] == 2 and on.region_table["component"][1] == 2
    assert (on.region_labels[grain_a] == on.region_labels[0, 0]).all()
    with pytest.raises(ConfigError):
        analyze(W, None, SCAN, vacuum=None, region_peaks=blocks, absorb=-1)


def test_config_option_of_the_absorption():
    from stemnmf.config import Config

    assert Config().analysis.absorb == 0
    assert Config.from_dict({"analysis": {"absorb": 2}}).analysis.absorb == 2
    with pytest.raises(ConfigError, match="absorb"):
        Config.from_dict({"analysis": {"absorb": -1}})


def test_mutual_absorption_needs_both_regions_to_show_nothing_new():
    X, cut, (grain_a, _) = scene("fringe")
    blocks = blocks_of(X)
    out = absorb_fragments(cut, blocks, mutual=True, far=1, min_rows=3)
    assert out.n_regions == 2 and (out.masks[0] == grain_a).all()  # the fringe pieces show each other's
    X, cut, _ = scene("stack")
    assert absorb_fragments(cut, blocks_of(X), mutual=True, far=1, min_rows=3).n_regions == 2
