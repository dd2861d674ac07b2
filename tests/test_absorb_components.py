"""Components that are thickness-fringe pieces of a touching component's grain join it (issue 21)."""

from __future__ import annotations

import numpy as np

from stemnmf.decompose.absorb import piece_evidence, piece_groups
from stemnmf.decompose.iterative import _residual_pass, absorb_pieces
from stemnmf.decompose.blocks import as_blocks

SCAN, M = (30, 30), 90


def peaks_at(places, heights):
    """(M,) pattern: a smooth background and one-entry peaks of the given heights."""
    h = 1.0 + 0.2 * np.sin(np.arange(M) / 9.0)
    h[list(places)] += heights
    return h


def fit(kind: str, seed: int = 0):
    """(X, Wt, H) by construction: X = W H + Gaussian noise (sd 0.05), W the indicator maps.

    ``fringe``: grain A in columns 0-14 as two components cut at column 7 (the same peaks, half of them 4 x
    weaker, half 2 x stronger in the second piece); grain B (peaks elsewhere) in columns 15-29.
    ``stack``: grain A everywhere (one component) and grain C stacked on it in a disc of radius 6 (a second
    component holding C's own peaks only, as NMF's additive parts do).
    """
    rng = np.random.default_rng(seed)
    ay, ax = np.mgrid[: SCAN[0], : SCAN[1]]
    a_places, b_places = range(5, 45, 5), range(47, 87, 5)
    if kind == "fringe":
        maps = [ax < 7, (ax >= 7) & (ax < 15), ax >= 15]
        H = np.stack([peaks_at(a_places, 2.0), peaks_at(a_places, np.array([0.5, 4.0] * 4)), peaks_at(b_places, 2.0)])
    else:
        disc = (ay - 15) ** 2 + (ax - 15) ** 2 < 36
        maps = [np.ones(SCAN, bool), disc]
        H = np.stack([peaks_at(a_places, 2.0), peaks_at(b_places, 2.0) - peaks_at([], 0.0)])
    Wt = np.stack([m.ravel() for m in maps]).astype(np.float32)
    X = (Wt.T @ H + rng.normal(0, 0.05, (Wt.shape[1], M))).astype(np.float32)
    return X, Wt, H.astype(np.float32)


def evidence(X, Wt, H):
    _, _, col_sq, _ = _residual_pass(as_blocks(X), Wt, H, 1)
    return piece_evidence(X, Wt, H, SCAN, col_sq)


def test_a_fringe_piece_shows_no_new_peak_and_joins_its_grain_the_other_grain_stays():
    X, Wt, H = fit("fringe")
    peaks, new, contact = evidence(X, Wt, H)
    assert peaks.tolist() == [8, 8, 8]
    assert new[1, 0] == 0 and new[0, 1] == 0  # A's pieces: every peak shown by the other's data
    assert new[2, 1] == 8 and new[1, 2] == 8  # B against A's piece: none of its peaks
    assert new[0, 2] == -1 and contact[0, 2] == 0  # not touching
    groups = piece_groups(peaks, new, contact, Wt.sum(axis=1))
    assert groups == [[0, 1], [2]]
    Wt2, H2, joined = absorb_pieces(X, Wt, H, SCAN)
    assert Wt2.shape[0] == 2 and joined == [[0, 1], [2]]
    grain_a = (Wt[0] + Wt[1]) > 0
    first = int(np.argmax(Wt2[:, 0]))
    assert (Wt2[first] > 0.5 * Wt2[first].max())[grain_a].mean() > 0.95


def test_a_stacked_grain_keeps_its_component():
    X, Wt, H = fit("stack")
    peaks, new, contact = evidence(X, Wt, H)
    assert new[1, 0] == 8  # C's peaks: the host's data around it lack them
    assert new[0, 1] == -1  # the disc has no position clear of the host: not judged
    assert piece_groups(peaks, new, contact, Wt.sum(axis=1)) == [[0], [1]]
    Wt2, _, joined = absorb_pieces(X, Wt, H, SCAN)
    assert Wt2.shape[0] == 2 and joined == [[0], [1]]


def test_too_few_peaks_to_judge_stay_apart():
    peaks = np.array([2, 8])
    new = np.array([[-1, 0], [5, -1]])
    contact = np.array([[0, 10], [10, 0]])
    assert piece_groups(peaks, new, contact, [50, 200]) == [[0], [1]]  # two peaks: below ABSORB_MIN_PEAKS
    assert piece_groups(peaks, new, contact, [50, 200], min_peaks=2) == [[0, 1]]


def test_shown_entries_finds_the_mean_excess_six_standard_errors_above_zero():
    from stemnmf.decompose.evidence import shown_entries

    rng = np.random.default_rng(1)
    d = rng.normal(0.0, 1.0, (400, 3))  # standard error 0.05
    d[:, 0] += 1.0  # 20 standard errors: shown
    d[:, 1] += 0.1  # 2 standard errors: not shown
    assert shown_entries(d).tolist() == [True, False, False]
    assert shown_entries(d[:1]).tolist() == [False, False, False]  # one row: no standard error, nothing shown
