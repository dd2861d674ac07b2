"""Template matching of calibrated patterns by polar correlation (NumPy/SciPy).

Each pattern is resampled on a polar grid in the sample frame (radius in 1/Å,
azimuth in degrees from +x towards +y), its ring background (the median over
the azimuth at each radius) is removed, and it is raised to a power and
normalised to unit norm. A template's score at in-plane rotation phi is

    S(phi) = sum_i w_i P(r_i, theta_i + phi) / ||w||,

with w_i its spot intensities raised to the same power: one sparse product
per batch of patterns gives every template at every phi. The mirror image of
a template (theta_i -> -theta_i) is the pattern of the orientation turned by
a half turn about the sample y axis (kinematic patterns obey Friedel's law),
so mirrors cover the beam directions of the other half of the sphere without
new templates. The orientation of a match is ``Rz(phi) @ [Ry(pi)] @ R0``.

Detector to sample: pixel (row, col) lies at ``d = ((col - ox) q, (row - oy) q)``
on the detector; with ``detector_flip`` its y is negated, then it is turned by
``detector_rotation`` (degrees, counter-clockwise from x to y) into the sample
frame. The defaults (0, no flip) are the simulator's mapping: detector columns
along scan columns, detector rows along scan rows.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import fft, ndimage, sparse

from stemnmf.errors import DataValueError

__all__ = [
    "PolarGrid",
    "polar_grid",
    "polar_images",
    "template_matrix",
    "MatchResult",
    "match_patterns",
    "misorientation_angles",
    "rotation_z",
    "shifted_copies",
    "peak_offset",
    "azimuth_spectra",
    "rotation_scores",
    "best_scores",
    "solution_rotation",
]

_HALF_TURN_Y = np.diag([-1.0, 1.0, -1.0])

#: Log compression unit: at least this fraction of the strongest spot (and three noise deviations).
LOG_FLOOR = 0.01


@dataclasses.dataclass(frozen=True)
class PolarGrid:
    """Radii ``r_min + k dr`` (k < n_radii), 1/Å, and ``n_angles`` azimuths over 360°."""

    r_min: float
    dr: float
    n_radii: int
    n_angles: int

    @property
    def radii(self) -> np.ndarray:
        return self.r_min + self.dr * np.arange(self.n_radii)

    @property
    def r_max(self) -> float:
        return self.r_min + self.dr * (self.n_radii - 1)


def polar_grid(pattern_shape, *, q_pixel: float, origin=None, r_min: float = 0.15, n_angles: int = 360) -> PolarGrid:
    """The polar grid inside the detector: from ``r_min`` (1/Å) to the nearest edge, one pixel per radius step."""
    qy, qx = pattern_shape
    oy, ox = origin if origin is not None else ((qy - 1) / 2, (qx - 1) / 2)
    edge = min(oy, ox, qy - 1 - oy, qx - 1 - ox) - 1.0
    n = int(math.floor((edge * q_pixel - r_min) / q_pixel)) + 1
    if n < 4:
        raise DataValueError(
            f"the detector reaches only {edge * q_pixel:.3g} 1/Å from the direct beam, too little to index",
            "check q_pixel and the origin",
        )
    return PolarGrid(float(r_min), float(q_pixel), n, int(n_angles))


def _sample_points(grid: PolarGrid, q_pixel, origin, pattern_shape, rotation_deg, flip):
    qy, qx = pattern_shape
    oy, ox = origin if origin is not None else ((qy - 1) / 2, (qx - 1) / 2)
    theta = np.deg2rad(np.arange(grid.n_angles) * 360.0 / grid.n_angles)
    r = grid.radii[:, None]
    x, y = r * np.cos(theta), r * np.sin(theta)
    a = math.radians(rotation_deg)
    dx = math.cos(a) * x + math.sin(a) * y
    dy = -math.sin(a) * x + math.cos(a) * y
    if flip:
        dy = -dy
    return np.stack([oy + dy / q_pixel, ox + dx / q_pixel])


def polar_images(
    patterns,
    grid: PolarGrid,
    *,
    q_pixel: float,
    origin=None,
    detector_rotation: float = 0.0,
    detector_flip: bool = False,
    blur: float = 1.0,
    power: float = 0.5,
) -> np.ndarray:
    """Polar images (n, n_radii, n_angles) float32 of patterns (n, qy, qx), background removed, unit norm.

    Parameters
    ----------
    patterns : array (n, qy, qx) or (qy, qx)
    grid : PolarGrid
    q_pixel : float
        1/Å per pixel.
    origin : (float, float), optional
        Direct beam (row, col); the detector centre by default.
    detector_rotation, detector_flip
        The detector-to-sample mapping (module docstring).
    blur : float, default 1
        Gaussian smoothing (pixels) before resampling.
    power : float, default 0.5
        Intensities are raised to this power after the background is removed.
    """
    patterns = np.asarray(patterns, dtype=np.float32)
    if patterns.ndim == 2:
        patterns = patterns[None]
    coords = _sample_points(grid, q_pixel, origin, patterns.shape[1:], detector_rotation, detector_flip)
    out = np.empty((len(patterns), grid.n_radii, grid.n_angles), np.float32)
    for i, pattern in enumerate(patterns):
        image = np.nan_to_num(pattern, nan=0.0, posinf=0.0, neginf=0.0)
        if blur > 0:
            image = ndimage.gaussian_filter(image, blur)
        polar = ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0)
        polar = _compress(polar, power)
        norm = float(np.linalg.norm(polar))
        out[i] = polar / norm if norm > 0 else polar
    return out


def _compress(polar: np.ndarray, power: float) -> np.ndarray:
    """Ring background removed and compressed: ``log1p(x / u)`` (u = max(3 sigma, LOG_FLOOR max)) or ``x ** power``."""
    polar = polar - np.median(polar, axis=1, keepdims=True)
    sigma = 1.4826 * float(np.median(np.abs(polar)))
    np.clip(polar, 0.0, None, out=polar)
    if power == 0:
        scale = max(3.0 * sigma, LOG_FLOOR * float(polar.max()))
        return np.log1p(polar / scale) if scale > 0 else polar
    if power < 0:  # saturate: 1 wherever the pattern exceeds max(3 sigma, -power * its maximum)
        scale = max(3.0 * sigma, -power * float(polar.max()))
        return np.minimum(polar / scale, 1.0) if scale > 0 else polar
    return polar**power


def template_matrix(radius, angle, intensity, grid: PolarGrid, *, power: float = 0.5) -> sparse.csr_matrix:
    """Sparse (2 n, n_radii * n_angles) matrix of the templates (rows < n) and their mirrors (rows >= n).

    Each row holds the template's spot weights ``intensity ** power`` at the
    nearest polar bins, divided by the norm of the weights inside the grid.
    """
    radius, angle, intensity = (np.asarray(v, dtype=np.float64) for v in (radius, angle, intensity))
    n = len(radius)
    k = np.rint((radius - grid.r_min) / grid.dr).astype(np.int64)
    inside = (intensity > 0) & (k >= 0) & (k < grid.n_radii)
    weight = np.where(inside, np.clip(intensity, 0, None) ** power, 0.0)
    norm = np.linalg.norm(weight, axis=1, keepdims=True)
    weight = np.divide(weight, norm, out=np.zeros_like(weight), where=norm > 0)
    step = 2 * np.pi / grid.n_angles
    j = np.rint(angle / step).astype(np.int64) % grid.n_angles
    j_mirror = (-np.rint(angle / step).astype(np.int64)) % grid.n_angles
    rows = np.broadcast_to(np.arange(n)[:, None], radius.shape)
    keep = inside & (weight > 0)
    r_idx, j_idx, j_mir, w, row = k[keep], j[keep], j_mirror[keep], weight[keep], rows[keep]
    data = np.concatenate([w, w])
    cols = np.concatenate([r_idx * grid.n_angles + j_idx, r_idx * grid.n_angles + j_mir])
    all_rows = np.concatenate([row, row + n])
    return sparse.csr_matrix((data, (all_rows, cols)), shape=(2 * n, grid.n_radii * grid.n_angles), dtype=np.float32)


def rotation_z(angle_rad) -> np.ndarray:
    """Rotations (..., 3, 3) about +z by ``angle_rad``."""
    angle_rad = np.asarray(angle_rad, dtype=np.float64)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)], -2)


def misorientation_angles(rotation, others, symmetry) -> np.ndarray:
    """Smallest angle (degrees) between ``rotation`` (3, 3) and each of ``others`` (m, 3, 3) over the symmetry.

    Rotations map crystal to sample coordinates; ``symmetry`` (s, 3, 3) are the
    proper rotations of the crystal's point group (acting in the crystal frame).
    """
    delta = np.einsum("ji,mjk->mik", np.asarray(rotation), np.asarray(others))  # R1^T R2
    traces = np.einsum("mij,sji->ms", delta, np.asarray(symmetry))
    cos = np.clip((traces.max(axis=1) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


@dataclasses.dataclass(eq=False)
class MatchResult:
    """The best match of each of n patterns.

    Attributes
    ----------
    rotations : (n, 3, 3) crystal -> sample rotations.
    phase : (n,) int, index into the phases.
    score : (n,) float, the normalised correlation of the best match (0..1).
    confidence : (n,) float, 1 - (best distinct other solution) / best: 0 when ambiguous.
    reliability : (n,) float, (best - mean) / std of the best score of every template.
    second_phase_score : (n,) float, best score of any other phase (0 for one phase).
    alternatives : (n, m, 3, 3) the best m (8) mutually distinct solutions, best first.
    alternative_scores : (n, m) float, their scores (-inf where fewer were found).
    alternative_phases : (n, m) int, their phases.
    """

    rotations: np.ndarray
    phase: np.ndarray
    score: np.ndarray
    confidence: np.ndarray
    reliability: np.ndarray
    second_phase_score: np.ndarray
    alternatives: np.ndarray
    alternative_scores: np.ndarray
    alternative_phases: np.ndarray


def shifted_copies(polar: np.ndarray) -> np.ndarray:
    """(n_radii * n_angles, b * n_angles) with column (p, phi) holding pattern p rotated by phi bins."""
    b, nr, na = polar.shape
    doubled = np.concatenate([polar, polar], axis=2)
    windows = np.lib.stride_tricks.sliding_window_view(doubled, na, axis=2)[:, :, :na, :]  # (b, nr, theta, phi)
    return np.ascontiguousarray(windows.transpose(1, 2, 0, 3)).reshape(nr * na, b * na)


def peak_offset(scores: np.ndarray, best: int) -> float:
    """Sub-bin offset of a circular peak by a parabola through its three bins."""
    n = len(scores)
    left, centre, right = scores[(best - 1) % n], scores[best], scores[(best + 1) % n]
    denominator = left - 2 * centre + right
    return 0.0 if denominator >= 0 else float(np.clip(0.5 * (left - right) / denominator, -0.5, 0.5))


def azimuth_spectra(matrix, grid: PolarGrid, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a :func:`template_matrix` as :func:`rotation_scores` wants them.

    Returns the radius bins that any of the rows uses, and the rows' Fourier
    transforms over the azimuth at those radii, (m, n_used, n_angles // 2 + 1).
    """
    rows = np.arange(matrix.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    sub = matrix[rows]
    radii = np.unique(np.asarray(sub.indices) // grid.n_angles)
    dense = np.asarray(sub.toarray(), dtype=np.float32).reshape(len(rows), grid.n_radii, grid.n_angles)[:, radii]
    return radii, fft.rfft(dense, axis=2)


def rotation_scores(polar, spectra, grid: PolarGrid) -> np.ndarray:
    """Scores (n, m, n_angles) of n polar images against m templates at every in-plane rotation.

    The same numbers as ``matrix @ shifted_copies(polar)`` (up to float32
    rounding), by the correlation theorem over the azimuth: far cheaper for a
    few templates. ``spectra`` is :func:`azimuth_spectra` of the m templates.
    """
    radii, transforms = spectra
    images = fft.rfft(np.asarray(polar, dtype=np.float32)[:, radii], axis=2)  # (n, n_used, K)
    products = np.einsum("nrk,mrk->nmk", images, np.conj(transforms), optimize=True)
    return fft.irfft(products, n=grid.n_angles, axis=2)


def best_scores(polar, matrices, grid: PolarGrid, *, batch_bytes: int = 1 << 26) -> list[np.ndarray]:
    """Best score over the in-plane rotation of every template and mirror: one (n, rows) array per phase."""
    polar = np.asarray(polar, dtype=np.float32)
    batch = max(1, int(batch_bytes // (grid.n_radii * grid.n_angles * grid.n_angles * 4)))
    out = [[] for _ in matrices]
    for start in range(0, len(polar), batch):
        shifted = shifted_copies(polar[start : start + batch])
        for p, matrix in enumerate(matrices):
            block = np.asarray(matrix @ shifted).reshape(matrix.shape[0], -1, grid.n_angles)
            out[p].append(block.max(axis=2).T)
    return [np.concatenate(parts) for parts in out]


def solution_rotation(templates, row: int, phi: float) -> np.ndarray:
    """Orientation (3, 3) of template matrix row ``row`` (a mirror when ``row >= n_templates``) turned by ``phi`` radians."""
    n = templates.n_templates
    base = templates.rotations[row % n]
    return rotation_z(phi) @ (_HALF_TURN_Y @ base if row >= n else base)


def _candidates(block, template_sets, grid: PolarGrid, index: int, top: int = 64):
    """The ``top`` best (phase, template, mirror) solutions of pattern ``index`` at their best phi.

    Returns the rotations (m, 3, 3), phases (m,), scores (m,) and, per phase,
    the best score of every template and mirror.
    """
    rotations, phases, scores, every = [], [], [], []
    step = 2 * np.pi / grid.n_angles
    columns = slice(index * grid.n_angles, (index + 1) * grid.n_angles)
    for p, (scores_p, templates) in enumerate(zip(block, template_sets)):
        s = scores_p[:, columns]
        best_phi = s.argmax(axis=1)
        best = s[np.arange(len(s)), best_phi]
        every.append(best)
        for row in np.argsort(best)[::-1][:top]:
            phi = (best_phi[row] + peak_offset(s[row], best_phi[row])) * step
            rotations.append(solution_rotation(templates, row, phi))
            phases.append(p)
            scores.append(best[row])
    return np.array(rotations), np.array(phases), np.array(scores), every


def _distinct(rotations, phases, template_sets, distinct_angle, n_alternatives):
    """Indices of up to ``n_alternatives`` solutions (sorted by score) each distinct from all kept before it."""
    kept = [0]
    for i in range(1, len(rotations)):
        if len(kept) == n_alternatives:
            break
        near = [
            k for k in kept
            if phases[k] == phases[i]
            and misorientation_angles(rotations[k], rotations[i][None], template_sets[phases[i]].symmetry)[0] <= distinct_angle
        ]
        if not near:
            kept.append(i)
    return kept


def _decide(rotations, phases, scores, all_best, template_sets, distinct_angle, n_alternatives=8):
    order = np.argsort(scores)[::-1]
    rotations, phases, scores = rotations[order], phases[order], scores[order]
    kept = _distinct(rotations, phases, template_sets, distinct_angle, n_alternatives)
    alternatives = np.repeat(rotations[:1], n_alternatives, axis=0)
    alternative_scores = np.full(n_alternatives, -np.inf)
    alternative_phases = np.full(n_alternatives, phases[0])
    alternatives[: len(kept)], alternative_scores[: len(kept)], alternative_phases[: len(kept)] = (
        rotations[kept], scores[kept], phases[kept]
    )
    best_phase = int(phases[0])
    best = float(scores[0])
    second = float(scores[kept[1]]) if len(kept) > 1 else 0.0
    every = np.concatenate(all_best)
    spread = float(every.std())
    reliability = (best - float(every.mean())) / spread if spread > 0 else 0.0
    other_phase = [float(b.max()) for p, b in enumerate(all_best) if p != best_phase]
    return (
        rotations[0],
        best_phase,
        best,
        1.0 - second / best if best > 0 else 0.0,
        reliability,
        max(other_phase) if other_phase else 0.0,
        alternatives,
        alternative_scores,
        alternative_phases,
    )


def match_patterns(
    polar,
    template_sets,
    matrices,
    grid: PolarGrid,
    *,
    distinct_angle: float = 5.0,
    batch_bytes: int = 1 << 26,
) -> MatchResult:
    """Best orientation and phase of each polar image against templates of one or more phases.

    Parameters
    ----------
    polar : array (n, n_radii, n_angles)
        From :func:`polar_images`.
    template_sets : list of TemplateSet
        One per phase.
    matrices : list of scipy.sparse matrix
        :func:`template_matrix` of each template set on ``grid``.
    grid : PolarGrid
    distinct_angle : float, default 5
        Solutions closer than this (degrees, symmetry-reduced) to the best are
        not counted as the second-best distinct solution.
    batch_bytes : int
        Memory for the rotated copies of a batch of patterns.

    Returns
    -------
    MatchResult
    """
    polar = np.asarray(polar, dtype=np.float32)
    n = len(polar)
    per_pattern = grid.n_radii * grid.n_angles * grid.n_angles * 4
    batch = max(1, int(batch_bytes // per_pattern))
    out = {f.name: [] for f in dataclasses.fields(MatchResult)}
    for start in range(0, n, batch):
        shifted = shifted_copies(polar[start : start + batch])
        block = [np.asarray(matrix @ shifted) for matrix in matrices]
        for i in range(min(batch, n - start)):
            rotations, phases, scores, all_best = _candidates(block, template_sets, grid, i)
            decided = _decide(rotations, phases, scores, all_best, template_sets, distinct_angle)
            for name, value in zip(out, decided):
                out[name].append(value)
    return MatchResult(
        rotations=np.array(out["rotations"]).reshape(n, 3, 3),
        phase=np.array(out["phase"], dtype=np.int32),
        score=np.array(out["score"], dtype=np.float64),
        confidence=np.array(out["confidence"], dtype=np.float64),
        reliability=np.array(out["reliability"], dtype=np.float64),
        second_phase_score=np.array(out["second_phase_score"], dtype=np.float64),
        alternatives=np.array(out["alternatives"]).reshape(n, -1, 3, 3),
        alternative_scores=np.array(out["alternative_scores"], dtype=np.float64).reshape(n, -1),
        alternative_phases=np.array(out["alternative_phases"], dtype=np.int32).reshape(n, -1),
    )
