"""Overlapped patterns indexed as a non-negative sum of two crystals.

Where two grains overlap along the beam (or a region's mean pattern mixes its grain with a
neighbour's), no single crystal fits. The pattern is compared with the kinematic model of
:mod:`.refine`: the square root of a rendered crystal, mean removed inside the mask, is a vector m;
the prepared pattern D (:func:`.refine.prepare_pattern`) has unit norm. One crystal scores
D . m / ||m||; the best non-negative sum a m_A + b m_B of two is the projection of D on the cone
they span, whose normalised correlation with D is the sum's score (never below either crystal's
alone; the square root of a sum of two crystals is the sum of their square roots while their disks do
not overlap). A pattern is called a sum of two when that score beats the single crystal's by
``gain`` (relative) and the weaker crystal carries at least ``min_share`` of the fitted amplitude.

The first crystal is the pattern's own solution, fitted continuously (for its thickness).
Candidates for the second are the single match's distinct alternatives and the solutions of the
residual (the polar image with the first crystal's spots blanked), every phase competing; the
``top`` (2) best by the cone score of their polar templates are fitted continuously too, and the
best sum is kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage, optimize

from stemnmf.crystal.matching import match_patterns, template_matrix
from stemnmf.crystal.refine import prepare_pattern

__all__ = ["SumFit", "fit_two_templates", "template_vectors", "index_sums"]


@dataclasses.dataclass
class SumFit:
    """The two-template fit of one pattern.

    Attributes
    ----------
    accepted : bool
        The sum fits better than the single template by the required gain.
    single_score, sum_score : float
        Normalised correlation of the first template alone and of the best sum.
    second_rotation : (3, 3) crystal -> sample rotation of the second orientation.
    second_phase : int
    second_share : float
        Fraction of the fitted intensity (weights x template norms) carried by the second template.
    """

    accepted: bool
    single_score: float
    sum_score: float
    second_rotation: np.ndarray
    second_phase: int
    second_share: float


def template_vectors(indexer, rotations, phases) -> np.ndarray:
    """Unit-norm polar template vectors (m, n_radii * n_angles) of fixed orientations (no in-plane search)."""
    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    phases = np.asarray(phases, dtype=np.int64).reshape(-1)
    out = np.zeros((len(rotations), indexer.grid.n_radii * indexer.grid.n_angles), np.float64)
    for p in np.unique(phases):
        pick = np.flatnonzero(phases == p)
        radius, angle, intensity = indexer.refinement_spots(rotations[pick], int(p))
        matrix = template_matrix(radius, angle, intensity, indexer.grid, power=indexer.options.template_power)
        out[pick] = matrix[: len(pick)].toarray()
    return out


def _cone(polar_flat, u, v) -> tuple[float, float, float]:
    """Weights (a, b) >= 0 of the projection of P on cone{u, v} and its normalised correlation with P."""
    (a, b), _ = optimize.nnls(np.stack([u, v], axis=1), polar_flat)
    fit = a * u + b * v
    norm = float(np.linalg.norm(fit)) * float(np.linalg.norm(polar_flat))
    return float(a), float(b), float(fit @ polar_flat / norm) if norm > 0 else 0.0


def _residual(polar, u, grid) -> np.ndarray:
    """The polar image with the bins near the first template's spots set to 0 (unit norm again)."""
    spots = u.reshape(grid.n_radii, grid.n_angles) > 0
    blank = ndimage.binary_dilation(np.pad(spots, ((0, 0), (3, 3)), mode="wrap"), structure=np.ones((5, 7), bool))[:, 3:-3]
    residual = np.where(blank, 0.0, polar).astype(np.float32)
    norm = float(np.linalg.norm(residual))
    return residual / norm if norm > 0 else residual


def _rendered(model, rotation, thickness: float, phase: int) -> np.ndarray:
    """sqrt of the rendered model inside the mask, mean removed (the vectors the score correlates)."""
    values = np.sqrt(np.clip(model.render(rotation, thickness, phase), 0.0, None))[model.mask]
    return values - values.mean()


def _screen(indexer, polar, u, alternatives, top: int):
    """The ``top`` (rotation, phase) candidates for the second orientation, by the polar cone score."""
    flat = polar.ravel().astype(np.float64)
    residual = _residual(polar, u, indexer.grid)
    found = match_patterns(residual[None], indexer.templates, indexer.matrices, indexer.grid,
                           distinct_angle=indexer.options.distinct_angle)
    candidates = [(np.asarray(r), int(p)) for r, p in alternatives]
    keep = np.isfinite(found.alternative_scores[0])
    candidates += [(r, int(p)) for r, p in zip(found.alternatives[0][keep], found.alternative_phases[0][keep])]
    vectors = template_vectors(indexer, [r for r, _ in candidates], [p for _, p in candidates])
    scores = [_cone(flat, u, v)[2] for v in vectors]
    return [candidates[i] for i in np.argsort(scores)[::-1][:top]]


def fit_two_templates(indexer, pattern, rotation, phase: int, alternatives=(), *, gain: float = 0.1,
                      min_share: float = 0.15, top: int = 2) -> SumFit:
    """Fit a pattern (qy, qx) as a non-negative sum of the crystal ``rotation`` and one other (module docstring).

    ``alternatives``: (rotation, phase) pairs to try as the second orientation besides the residual's
    solutions; the ``top`` best by the polar cone score are fitted with the kinematic model.
    """
    pattern = np.asarray(pattern, dtype=np.float32)
    polar = indexer.polar(pattern[None])[0]
    u = template_vectors(indexer, np.asarray(rotation)[None], [phase])[0]
    candidates = _screen(indexer, polar, u, alternatives, top)
    model = indexer.model
    correlated = model.prepare(pattern)
    target = prepare_pattern(pattern, model.geometry, model.mask)
    search = indexer.options.resolution
    first, thickness, _ = model.refine(correlated, rotation, phase, search_deg=search)
    m_a = _rendered(model, first, thickness, phase)
    single = max(0.0, float(m_a @ target) / float(np.linalg.norm(m_a))) if np.any(m_a) else 0.0
    best = None
    for second, second_phase in candidates:
        turned, t, _ = model.refine(correlated, second, second_phase, search_deg=search)
        m_b = _rendered(model, turned, t, second_phase)
        a, b, score = _cone(target, m_a, m_b)
        if best is None or score > best[0]:
            share = b * np.linalg.norm(m_b) / (a * np.linalg.norm(m_a) + b * np.linalg.norm(m_b)) if a + b > 0 else 0.0
            best = (score, turned, second_phase, float(share))
    if best is None:  # no candidate at all (an empty residual)
        return SumFit(False, single, single, np.full((3, 3), np.nan), -1, 0.0)
    score, turned, second_phase, share = best
    accepted = bool(score >= (1.0 + gain) * single and min(share, 1.0 - share) >= min_share)
    return SumFit(accepted, single, float(score), np.asarray(turned, dtype=np.float64), int(second_phase), share)


def index_sums(indexer, patterns, rotations, phases, result=None, *, gain: float = 0.1,
               min_share: float = 0.15) -> list[SumFit]:
    """:func:`fit_two_templates` of each pattern (n, qy, qx) with its first orientation and phase.

    ``result``: the patterns' single-template MatchResult, whose distinct alternatives are tried too.
    """
    out = []
    for i, pattern in enumerate(np.asarray(patterns, dtype=np.float32)):
        pairs = []
        if result is not None:
            finite = np.isfinite(result.alternative_scores[i])
            pairs = list(zip(result.alternatives[i][finite][1:], result.alternative_phases[i][finite][1:]))
        out.append(fit_two_templates(indexer, pattern, np.asarray(rotations[i]), int(phases[i]), pairs,
                                     gain=gain, min_share=min_share))
    return out
