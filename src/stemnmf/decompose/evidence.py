"""Evidence-based merging of NMF components (stemnmf's default; docs/nmf.md).

Two components merge only when

* the data cannot tell them apart: replacing the pair's two maps by one (and
  refitting every pattern) raises ``||X - WH||^2`` by no more than one
  component's worth of noise (:func:`noise_gate`: the expected largest squared
  singular value of the noise, i.e. what one spare component fits of pure
  noise), or
* they are linked as in the paper's rule (maps correlated at or above the
  threshold, or patterns at cosine >= ``pattern_threshold`` with maps not
  anti-correlated), and, given ``link_tolerance``, the merge costs at most
  that many noise gates or the patterns pass the same-grain test (their peaks,
  :func:`pattern_peaks`, lie in the same places: :func:`peak_agreement`), or
* their maps are not anti-correlated and have the same footprint: the parts of one grain that thickness fringes
  split apart (each reflection brightens and fades with the projected
  thickness at its own rate, so NMF gives the grain's reflections to several
  components) cover the same positions, while two grains of one phase with
  different orientations, touching or overlapping along the beam, cover
  different ones.

Accepted pairs are grouped by complete linkage (a component joins a group only
if its merge with every member is accepted), so two grains are never chained
together through an intermediate component: transitive chaining (union-find)
is what joined four separate blobs into one or two components (docs/nmf.md). A group becomes the best rank-one
non-negative approximation of its components' contribution ``sum_g w_g h_g``
(the Perron vector of a small matrix), which leaves ``W H`` unchanged when the
maps or the patterns of the group are proportional.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

__all__ = [
    "MERGE_TOLERANCE",
    "GATE_FRACTION",
    "FOOTPRINT_FRACTION",
    "FOOTPRINT_THRESHOLD",
    "MergeEvidence",
    "merge_costs",
    "merge_evidence",
    "noise_gate",
    "noise_footprints",
    "local_noise_gates",
    "merge_geometry",
    "links",
    "support_overlap",
    "PEAK_SIGMAS",
    "PEAK_WINDOW",
    "pattern_noise",
    "pattern_peaks",
    "PRESENCE_SIGMAS",
    "shown_entries",
    "peak_agreement",
    "complete_linkage_groups",
    "merge_rank_one",
]

#: Multiple of one spare component's noise fit that a merge may cost.
MERGE_TOLERANCE = 0.5
#: The noise gate of a pair looks at the positions where either map exceeds this fraction of its maximum.
GATE_FRACTION = 0.05
#: A position is in a map's footprint when its weight is at least this fraction of the map's maximum.
FOOTPRINT_FRACTION = 0.2
#: Linked components merge when their footprints overlap at least this much (shared / larger footprint).
FOOTPRINT_THRESHOLD = 0.5
#: A pattern entry is a peak when it stands this many noise standard deviations above its local median.
PEAK_SIGMAS = 9.0
#: Entries along the feature axis over which the local median (the background under a peak) is taken.
PEAK_WINDOW = 9
#: Standard errors above zero at which the data's mean excess shows a reflection (:func:`shown_entries`).
PRESENCE_SIGMAS = 6.0


def _grams(Wt: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    W64 = np.asarray(Wt, np.float64)
    H64 = np.asarray(H, np.float64)
    return W64 @ W64.T, H64 @ H64.T


def _pair_coefficients(GW: np.ndarray, GH: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights (a_i, a_j) of the two maps in the rank-one merge of every pair (see :func:`merge_rank_one`)."""
    k = GW.shape[0]
    iu, ju = np.triu_indices(k, 1)
    S = np.stack([np.stack([GW[iu, iu], GW[iu, ju]], -1), np.stack([GW[iu, ju], GW[ju, ju]], -1)], -2)
    T = np.stack([np.stack([GH[iu, iu], GH[iu, ju]], -1), np.stack([GH[iu, ju], GH[ju, ju]], -1)], -2)
    values, vectors = np.linalg.eig(S @ T)
    top = np.argmax(np.real(values), axis=-1)
    c = np.abs(np.real(np.take_along_axis(vectors, top[:, None, None], axis=-1)[..., 0]))
    a = np.einsum("pij,pj->pi", T, c)
    ai = np.zeros((k, k))
    aj = np.zeros((k, k))
    ai[iu, ju], aj[iu, ju] = a[:, 0], a[:, 1]
    return ai + aj.T, aj + ai.T


def merge_costs(Wt: np.ndarray, H: np.ndarray, WtX: np.ndarray) -> np.ndarray:
    """Increase of ``||X - WH||^2`` when components i and j become one and every pattern is refitted, (k, k).

    The merged map is ``w = a_i w_i + a_j w_j`` (the rank-one merge of
    :func:`merge_rank_one`); the other maps are kept and all patterns are
    refitted by least squares. The model loses the direction ``v = W G^-1 e``
    of its column space, ``e = (a_j, -a_i)`` on the pair, so with ``G = W^T
    W`` and ``D = G^-1 W^T X`` (the least-squares patterns)::

        cost_ij = ||e^T D||^2 / (e^T G^-1 e)

    Keeping the maps stops spare components from taking over what the merged
    pair explained, which a full refit would allow. The diagonal is 0.

    Parameters
    ----------
    Wt : (k, n)
        Maps as rows.
    H : (k, m)
        Patterns (they set the merge weights a_i, a_j).
    WtX : (k, m)
        ``W^T X``.

    Examples
    --------
    Two components on different positions: the merge keeps the stronger one
    and costs what the weaker one explained.

    >>> Wt = np.eye(2)
    >>> H = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> round(float(merge_costs(Wt, H, Wt @ (Wt.T @ H))[0, 1]), 9)
    1.0
    """
    return merge_geometry(Wt, H, WtX)[0]


def merge_geometry(Wt: np.ndarray, H: np.ndarray, WtX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`merge_costs`, lost_i): ``lost_i[i, j]`` is True when the direction a merge of i and j
    loses lies mostly on map i (the merged map keeps the other)."""
    k = Wt.shape[0]
    cost = np.zeros((k, k))
    if k < 2:
        return cost, np.zeros((k, k), bool)
    GW, GH = _grams(Wt, H)
    ai, aj = _pair_coefficients(GW, GH)
    ridge = 1e-12 * max(float(np.trace(GW)), 1e-300) / k
    K = np.linalg.pinv(GW + ridge * np.eye(k), hermitian=True)
    D = K @ np.asarray(WtX, np.float64)
    DD = D @ D.T
    dK = np.diag(K)
    dD = np.diag(DD)
    num = aj**2 * dD[:, None] - 2 * ai * aj * DD + ai**2 * dD[None, :]
    den = aj**2 * dK[:, None] - 2 * ai * aj * K + ai**2 * dK[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(den > 1e-12 * (aj**2 * dK[:, None] + ai**2 * dK[None, :]), np.maximum(num, 0) / den, 0.0)
    np.fill_diagonal(cost, 0.0)
    # the lost direction W G^-1 e: mostly map i when |z_i| ||w_i|| >= |z_j| ||w_j||
    norms = np.sqrt(np.maximum(np.diag(GW), 0.0))
    zi = np.abs(aj * dK[:, None] - ai * K) * norms[:, None]
    zj = np.abs(aj * K - ai * dK[None, :]) * norms[None, :]
    return cost, zi >= zj


def noise_footprints(Wt: np.ndarray, fraction: float = GATE_FRACTION, top: np.ndarray | None = None) -> np.ndarray:
    """(k, n) bool: positions where each map exceeds ``fraction`` of its maximum (all-zero map: none).

    ``top`` (k,) gives the maxima when ``Wt`` holds only some of the positions.
    """
    Wt = np.asarray(Wt)
    if top is None:
        top = Wt.max(axis=1) if Wt.shape[1] else np.zeros(Wt.shape[0])
    top = np.asarray(top)[:, None]
    return (Wt > fraction * top) & (top > 0)


def local_noise_gates(
    row_sq: np.ndarray, footprint_col_sq: np.ndarray, footprints: np.ndarray, k: int | None = None,
    tolerance: float = MERGE_TOLERANCE,
) -> np.ndarray:
    """:func:`noise_gate` of each component on its own footprint, (k,).

    A merge loses one direction, which lies mostly on one of the two maps
    (:func:`merge_geometry`): a spare component there could only have fitted
    the noise of that map's positions. The gate uses the largest row residual
    on the footprint and the column residuals summed over it. A grain on a few
    hundred positions is thus weighed against the noise of those positions,
    not of the whole scan, and a weak but real grain is not taken for noise; a
    component that fits noise spreads over the scan and meets about the
    global gate.

    Parameters
    ----------
    row_sq : (n,)
        Squared residual norm of each row of X.
    footprint_col_sq : (k, m)
        Squared residual of each column summed over each component's footprint.
    footprints : (k, n) bool
        The positions of each component's footprint (:func:`noise_footprints`).
    k : int, optional
        Components of the fit, for the degrees of freedom (default: rows of ``footprints``).
    """
    k = footprints.shape[0] if k is None else int(k)
    n = row_sq.size
    m = footprint_col_sq.shape[1]
    rows = np.where(footprints, np.asarray(row_sq, np.float64)[None, :], 0.0).max(axis=1, initial=0.0)
    cols = np.asarray(footprint_col_sq, np.float64).max(axis=1, initial=0.0)
    f = n * m / max(n * m - k * (n + m), 0.5 * n * m) if n and m else 1.0
    return float(tolerance) * f * (np.sqrt(rows) + np.sqrt(cols)) ** 2


def noise_gate(row_sq: np.ndarray, col_sq: np.ndarray, k: int, tolerance: float = MERGE_TOLERANCE) -> float:
    """What one spare component fits of pure noise: ``tolerance * f * (sqrt(max_i r_i) + sqrt(max_j c_j))^2``.

    ``r_i`` and ``c_j`` are the squared residual norms of the rows and columns
    of X after a k-component fit, and ``f = n m / (n m - k (n + m))`` (at most
    2) puts back the degrees of freedom the fit used. For noise of variance
    sigma^2 in every entry this is ``sigma^2 (sqrt(n) + sqrt(m))^2``, the
    expected largest squared singular value of the noise; the row and column
    maxima extend it to noise whose variance varies (Poisson counts), after
    Bandeira & van Handel (2016). Taken from one draw of the noise, the maxima
    lie a little above their expectations, so the gate errs towards merging
    (by about 20 % for iid noise on 800 x 200).
    """
    row_sq = np.asarray(row_sq, np.float64)
    col_sq = np.asarray(col_sq, np.float64)
    n, m = row_sq.size, col_sq.size
    if n == 0 or m == 0:
        return 0.0
    f = n * m / max(n * m - k * (n + m), 0.5 * n * m)
    return float(tolerance) * f * (np.sqrt(row_sq.max()) + np.sqrt(col_sq.max())) ** 2


def support_overlap(rows: np.ndarray, fraction: float = FOOTPRINT_FRACTION) -> np.ndarray:
    """Shared support of every pair of rows (maps or patterns), (k, k) float64 in [0, 1].

    The support of a row is where it is at least ``fraction`` of its maximum.
    The overlap of two supports is the number of entries in both divided by
    the size of the larger one: 1 for the same entries whatever the values,
    0 for disjoint ones, about the small one's share of the large one when one
    lies inside the other. An all-zero row overlaps nothing.

    Examples
    --------
    >>> support_overlap(np.array([[1.0, 1.0, 0.0, 0.0], [0.5, 2.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]))[0].tolist()
    [1.0, 1.0, 0.3333333333333333]
    """
    H = np.asarray(rows, np.float64)
    top = H.max(axis=1, keepdims=True) if H.shape[1] else np.zeros((H.shape[0], 1))
    support = (H >= fraction * top) & (top > 0)
    S = support.astype(np.float64)
    shared = S @ S.T
    size = S.sum(axis=1)
    larger = np.maximum(size[:, None], size[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(larger > 0, shared / np.where(larger > 0, larger, 1.0), 0.0)


def pattern_noise(Wt: np.ndarray, col_sq: np.ndarray) -> np.ndarray:
    """Noise standard deviation of every pattern entry, (k, m) float64.

    With the maps fixed, the least-squares patterns are ``G^-1 W^T X``
    (``G = W^T W``); noise of variance ``s_f^2`` in column f of X gives entry
    (i, f) the variance ``s_f^2 (G^-1)_ii``. ``s_f^2`` is estimated by the
    column's mean squared residual ``col_sq[f] / n``.
    """
    Wt = np.asarray(Wt, np.float64)
    n = max(Wt.shape[1], 1)
    inverse = np.diag(np.linalg.pinv(Wt @ Wt.T)) if Wt.shape[0] else np.zeros(0)
    return np.sqrt(np.maximum(inverse, 0.0))[:, None] * np.sqrt(np.maximum(np.asarray(col_sq, np.float64), 0.0) / n)


def pattern_peaks(H: np.ndarray, noise: np.ndarray, sigmas: float = PEAK_SIGMAS, window: int = PEAK_WINDOW) -> np.ndarray:
    """(k, m) bool: entries of each pattern standing ``sigmas`` noise deviations above their local median.

    The local median is taken over ``window`` neighbouring entries along the
    feature axis: on AA (sectors of a ring side by side) it is the ring's
    smooth intensity (amorphous background, the phase's rings) under a
    reflection's sectors; on BD (disk bins) it is about zero. What stays is
    where a pattern has its reflections.
    """
    H = np.asarray(H, np.float64)
    if H.size == 0:
        return np.zeros(H.shape, bool)
    base = ndimage.median_filter(H, size=(1, int(window)), mode="nearest")
    return (H - base) > float(sigmas) * np.asarray(noise, np.float64)


def shown_entries(excess: np.ndarray, sigmas: float = PRESENCE_SIGMAS) -> np.ndarray:
    """(m,) bool: entries whose mean excess over the rows stands ``sigmas`` standard errors above zero.

    ``excess`` (r, m): patterns of r positions (or blocks) less their local
    median (the peak tests' background). The test of a *new reflection*: a
    peak of one pattern that the data elsewhere do not show at this level is
    missing there (a thickness fringe weakens a grain's own reflections but
    leaves them in its mean; another orientation has none there).
    """
    d = np.asarray(excess, np.float64)
    if d.shape[0] < 2:
        return np.zeros(d.shape[1:], bool)
    se = d.std(axis=0, ddof=1) / np.sqrt(d.shape[0])
    return d.mean(axis=0) > float(sigmas) * np.where(se > 0, se, np.inf)


def peak_agreement(peaks: np.ndarray) -> np.ndarray:
    """(k, k) float64: Dice overlap of the peak sets, ``2 |P_i & P_j| / (|P_i| + |P_j|)`` (0 when both are empty).

    One grain's pieces split by thickness fringes keep their reflections where
    they are and change only their intensities; two orientations put most of
    their reflections elsewhere.

    Examples
    --------
    >>> peak_agreement(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], bool))[0].tolist()
    [1.0, 0.8, 0.0]
    """
    P = np.asarray(peaks, np.float64)
    shared = P @ P.T
    size = P.sum(axis=1)
    total = size[:, None] + size[None, :]
    return np.where(total > 0, 2.0 * shared / np.where(total > 0, total, 1.0), 0.0)


def _correlation(Wt: np.ndarray) -> np.ndarray:
    """Pearson correlation of the maps, (k, k); -inf where a map has no variance."""
    if Wt.shape[0] < 2:
        return np.ones((Wt.shape[0], Wt.shape[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(np.asarray(Wt, np.float64))
    return np.nan_to_num(corr, nan=-np.inf)


def links(Wt: np.ndarray, H: np.ndarray, threshold: float, pattern_threshold: float | None) -> np.ndarray:
    """(k, k) bool: maps correlated at or above ``threshold``, or patterns at cosine >= ``pattern_threshold``
    with maps not anti-correlated (the transitive rule's links). A map with no variance is linked to nothing."""
    k = Wt.shape[0]
    if k < 2:
        return np.zeros((k, k), bool)
    corr = _correlation(Wt)
    linked = corr >= threshold
    if pattern_threshold is not None:
        H64 = np.asarray(H, np.float64)
        norms = np.linalg.norm(H64, axis=1)
        unit = H64 / np.where(norms > 0, norms, 1.0)[:, None]
        linked |= (unit @ unit.T >= pattern_threshold) & (corr >= 0)
    np.fill_diagonal(linked, False)
    return linked


@dataclasses.dataclass
class MergeEvidence:
    """Why pairs of components may merge (all (k, k) arrays).

    Attributes
    ----------
    cost : float64
        :func:`merge_costs`.
    gate : float64
        The noise gate of each pair: :func:`local_noise_gates` of the map on
        which the merge's lost direction lies (or the global
        :func:`noise_gate` everywhere): a merge costing no more is within the noise.
    linked : bool
        :func:`links`.
    footprint : float64
        :func:`support_overlap` of the maps.
    agreement : float64 or None
        :func:`peak_agreement` of the patterns' peaks (computed with ``peak_agreement``).
    accepted : bool
        ``cost <= gate``, or maps not anti-correlated with ``footprint >= footprint_threshold``,
        or linked (with ``use_links``).
    """

    cost: np.ndarray
    gate: np.ndarray
    linked: np.ndarray
    footprint: np.ndarray
    accepted: np.ndarray
    agreement: np.ndarray | None = None


def merge_evidence(
    Wt: np.ndarray,
    H: np.ndarray,
    WtX: np.ndarray,
    row_sq: np.ndarray,
    col_sq: np.ndarray,
    *,
    footprint_col_sq: np.ndarray | None = None,
    threshold: float,
    pattern_threshold: float | None,
    tolerance: float = MERGE_TOLERANCE,
    footprint_threshold: float | None = FOOTPRINT_THRESHOLD,
    use_links: bool = True,
    link_tolerance: float | None = None,
    peak_agreement_threshold: float | None = None,
    limit_footprints: bool = True,
) -> MergeEvidence:
    """Which pairs of the fit ``(Wt, H)`` may merge (see the module docstring).

    ``WtX`` is ``W^T X``; ``row_sq`` and ``col_sq`` the squared residual norms of
    the rows and columns of X; ``footprint_col_sq`` (k, m) the column residuals
    summed over each map's noise footprint (:func:`noise_footprints`), for
    gates local to each pair (the global gate without it).
    ``footprint_threshold=None`` merges only pairs within the noise (and,
    with ``use_links``, linked pairs); ``use_links=False`` leaves the links out.
    ``link_tolerance`` (None: no limit) accepts linked and same-footprint pairs
    only when their merge costs at most this multiple of the pair's noise gate,
    or, given ``peak_agreement_threshold``, when their patterns' peaks agree at
    least that much (:func:`peak_agreement`: the same grain's reflections).
    ``limit_footprints=False`` leaves same-footprint pairs out of that limit.
    """
    k = Wt.shape[0]
    cost, lost_i = merge_geometry(Wt, H, WtX)
    if footprint_col_sq is None:
        gate = np.full((k, k), noise_gate(row_sq, col_sq, k, tolerance))
    else:
        own = local_noise_gates(row_sq, footprint_col_sq, noise_footprints(Wt), tolerance=tolerance)
        gate = np.where(lost_i, own[:, None], own[None, :])
    linked = links(Wt, H, threshold, pattern_threshold)
    footprint = support_overlap(Wt, FOOTPRINT_FRACTION)
    accepted = cost <= gate
    affordable = np.ones_like(accepted) if link_tolerance is None else cost <= float(link_tolerance) * gate
    agreement = None
    if peak_agreement_threshold is not None:
        agreement = peak_agreement(pattern_peaks(H, pattern_noise(Wt, col_sq)))
        affordable = affordable | (agreement >= float(peak_agreement_threshold))
    if footprint_threshold is not None:
        free = affordable if limit_footprints else np.ones_like(accepted)
        accepted |= (footprint >= footprint_threshold) & (_correlation(Wt) >= 0) & free
    if use_links:
        accepted |= linked & affordable
    np.fill_diagonal(accepted, False)
    return MergeEvidence(cost, gate, linked, footprint, accepted, agreement)


def complete_linkage_groups(accepted: np.ndarray, cost: np.ndarray) -> list[list[int]]:
    """Groups in which every pair is accepted, built from the cheapest accepted pair up.

    Pairs are taken by increasing cost; two groups join only when every pair
    across them is accepted. No component is chained to another through an
    intermediate one. Returns every component in exactly one group (sorted;
    groups ordered by their first member).
    """
    k = accepted.shape[0]
    group_of = list(range(k))
    members: dict[int, list[int]] = {i: [i] for i in range(k)}
    iu, ju = np.nonzero(np.triu(accepted, 1))
    for idx in np.lexsort((ju, iu, cost[iu, ju])):
        gi, gj = group_of[int(iu[idx])], group_of[int(ju[idx])]
        if gi == gj:
            continue
        a, b = members[gi], members[gj]
        if not accepted[np.ix_(a, b)].all():
            continue
        keep, gone = min(gi, gj), max(gi, gj)
        members[keep] = sorted(a + b)
        for c in members.pop(gone):
            group_of[c] = keep
    return sorted(members.values(), key=lambda g: g[0])


# the same contract as iterative.merge_components (groups in, merged factors out), another formula
def merge_rank_one(Wt: np.ndarray, H: np.ndarray, groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each group as the best rank-one approximation of ``sum_g w_g h_g``, non-negative.

    With ``S`` and ``T`` the Gram matrices of the group's maps and patterns,
    the top eigenvector c of ``S T`` (non-negative: Perron-Frobenius) gives the
    pattern ``h = c H_g`` and the map ``w = (T c) W_g / (c T c)``.

    Returns
    -------
    Wt : (len(groups), n) float32
    H : (len(groups), m) float32
    """
    Wt_new = np.empty((len(groups), Wt.shape[1]), dtype=np.float32)
    H_new = np.empty((len(groups), H.shape[1]), dtype=np.float32)
    for i, group in enumerate(groups):
        maps = np.asarray(Wt[group], np.float64)
        pats = np.asarray(H[group], np.float64)
        if len(group) == 1:
            Wt_new[i], H_new[i] = maps[0], pats[0]
            continue
        S, T = maps @ maps.T, pats @ pats.T
        values, vectors = np.linalg.eig(S @ T)
        c = np.abs(np.real(vectors[:, int(np.argmax(np.real(values)))]))
        scale = float(c @ T @ c)
        if not np.isfinite(scale) or scale <= 0:  # all-zero group: the paper's sum and mean
            Wt_new[i], H_new[i] = maps.sum(axis=0), pats.mean(axis=0)
            continue
        H_new[i] = c @ pats
        Wt_new[i] = (T @ c) @ maps / scale
    return Wt_new, H_new
