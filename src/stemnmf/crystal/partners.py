"""Projection partners: orientations whose zero-order (ZOLZ) pattern equals a crystal's.

Near a zone axis ``u`` the kinematic pattern is mostly the zero-order Laue zone:
the reflections g with g . u = 0. Its 2D point group (with Friedel's law) can be
larger than the crystal's: a 2D rotation or mirror that maps the ZOLZ reflections
and their |F|^2 onto themselves but is no symmetry of the crystal turns the
crystal into a *partner* with the same zero-order pattern (spinel [012], [122],
[133]; Σ3 twins about <111>). The 3D realisation of a 2D rotation by ``a`` is a
turn by ``a`` about the beam, of a mirror along the line at angle ``psi`` a half
turn about that in-plane line; the crystal's own tilt off the zone axis is then
applied to the partner as well, so that its Laue circle lies where the crystal's
does and the zero-order excitation errors are the same. Only the higher-order
reflections and the ZOLZ spots off the zone plane (the Ewald sphere's curvature)
can then tell the two apart.
"""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np

from stemnmf.crystal.matching import misorientation_angles
from stemnmf.crystal.refine import rotation_vector_matrix
from stemnmf.crystal.rotations import axis_angle_matrix

log = logging.getLogger(__name__)

__all__ = ["zone_axis", "projection_partners", "check_partners", "switch_partner", "polish_partners", "fit_partners", "fit_alone"]


def _rotation_between(a, b) -> np.ndarray:
    """Smallest rotation (3, 3) taking unit vector ``a`` onto unit vector ``b``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    axis = np.cross(a, b)
    sin, cos = float(np.linalg.norm(axis)), float(a @ b)
    if sin < 1e-12:
        return np.eye(3)
    return axis_angle_matrix(axis / sin, math.degrees(math.atan2(sin, cos)))


#: Lattice vectors of the reflection tables seen, by a digest of the table (they depend on nothing else).
_DIRECT_CACHE: dict = {}


def _direct_vectors(g, n_short: int = 30, max_index: int = 6) -> np.ndarray:
    """Lattice vectors (n, 3), crystal frame, from the reflections: the direct basis of the three shortest
    non-coplanar reflections spanning the smallest cell, combined with indices up to ``max_index``."""
    g = np.ascontiguousarray(g, dtype=np.float64)
    key = (hashlib.blake2b(g.tobytes(), digest_size=16).digest(), n_short, max_index)
    if key not in _DIRECT_CACHE:
        if len(_DIRECT_CACHE) >= 8:
            _DIRECT_CACHE.pop(next(iter(_DIRECT_CACHE)))
        _DIRECT_CACHE[key] = _lattice_vectors(g, n_short, max_index)
    return _DIRECT_CACHE[key]


def _lattice_vectors(g, n_short: int, max_index: int) -> np.ndarray:
    short = g[np.argsort(np.linalg.norm(g, axis=1))[:n_short]]
    best, volume = None, np.inf
    for i in range(len(short)):
        for j in range(i + 1, len(short)):
            cross = np.cross(short[i], short[j])
            dets = np.abs(short[j + 1 :] @ cross)
            ok = np.flatnonzero(dets > 1e-9 * float(np.linalg.norm(short[i])) ** 3)
            if ok.size and dets[ok].min() < volume * (1 - 1e-9):
                k = j + 1 + ok[dets[ok].argmin()]
                best, volume = np.stack([short[i], short[j], short[k]]), float(dets[ok].min())
    basis = np.linalg.inv(best).T  # rows: direct vectors a_i with a_i . b_j = delta_ij
    n = np.arange(-max_index, max_index + 1)
    indices = np.stack(np.meshgrid(n, n, n, indexing="ij"), axis=-1).reshape(-1, 3)
    indices = indices[np.abs(indices).sum(axis=1) > 0]
    return indices @ basis


def zone_axis(rotation, g, *, max_angle: float = 6.0, floor: float = 0.25):
    """The zone axis of a pattern: unit crystal-frame direction ``u`` and the lab rotation ``A`` with ``A R u = z``.

    ``g`` (m, 3) are crystal-frame reciprocal vectors. Of the lattice directions within
    ``max_angle`` degrees of the beam, the one with the smallest product of its period
    |t| (the zone's index) and its tilt off the beam (plus ``floor`` degrees) wins: the
    tilt moves the zero-order spots off the Ewald sphere by theta |g|, and the
    higher-order layers lie 1 / |t| away. Returns None when there is none.
    """
    rotation = np.asarray(rotation, float)
    beam = rotation.T @ np.array([0.0, 0.0, 1.0])
    vectors = _direct_vectors(np.asarray(g, float))
    length = np.linalg.norm(vectors, axis=1)
    cosine = np.clip(vectors @ beam / length, -1.0, 1.0)
    close = np.flatnonzero(cosine >= math.cos(math.radians(max_angle)))
    if not close.size:
        return None
    cost = length[close] * (np.degrees(np.arccos(cosine[close])) + floor)
    best = close[int(np.argmin(cost))]
    u = vectors[best] / length[best]
    return u, _rotation_between(rotation @ u, np.array([0.0, 0.0, 1.0]))


def _maps_onto_itself(op2, points, intensity, tol: float) -> bool:
    moved = points @ op2.T
    distance = np.linalg.norm(moved[:, None, :] - points[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    if np.any(distance[np.arange(len(points)), nearest] > tol):
        return False
    return bool(np.allclose(intensity[nearest], intensity, rtol=1e-3, atol=1e-6 * intensity.max()))


def projection_partners(rotation, g, intensity, symmetry, *, q_max: float, max_angle: float = 6.0, distinct: float = 1.0):
    """Partners (n, 3, 3) of a crystal -> sample rotation: same ZOLZ reflections and |F|^2, not symmetry-equivalent.

    Parameters
    ----------
    rotation : array_like
        (3, 3) crystal -> sample rotation, a few degrees off a zone axis.
    g, intensity : numpy.ndarray
        The phase's reflections (m, 3), crystal frame, 1/Å, and their |F|^2.
    symmetry : numpy.ndarray
        (s, 3, 3) proper rotations of the crystal's point group.
    q_max : float
        ZOLZ reflections out to this |g| (1/Å) must map onto each other.
    max_angle : float
        Largest tilt off the zone axis, degrees; farther off, no partners.
    distinct : float
        Partners nearer than this (degrees) to the rotation or to each other are dropped.

    Returns
    -------
    numpy.ndarray
        (n, 3, 3), each tilted off its zone axis as the rotation is; empty when none.
    """
    rotation = np.asarray(rotation, float)
    g, intensity = np.asarray(g, float), np.asarray(intensity, float)
    found = zone_axis(rotation, g, max_angle=max_angle)
    if found is None:
        return np.zeros((0, 3, 3))
    u, tilt = found
    on_axis = tilt @ rotation
    size = np.linalg.norm(g, axis=1)
    zolz = (np.abs(g @ u) < 1e-6 * size.max()) & (size <= q_max) & (size > 0) & (intensity > 1e-4 * intensity.max())
    points = (g[zolz] @ on_axis.T)[:, :2]
    weights = intensity[zolz]
    if len(points) < 2:
        return np.zeros((0, 3, 3))
    angles = np.arctan2(points[:, 1], points[:, 0])
    lines = np.unique(np.round(np.concatenate([angles, angles + np.pi / 2]) % np.pi, 6))
    ops = [axis_angle_matrix((0, 0, 1), a) for a in (60.0, 90.0, 120.0, 180.0)]
    ops += [axis_angle_matrix((math.cos(p), math.sin(p), 0.0), 180.0) for p in lines]
    tol = 1e-3 * float(np.linalg.norm(points, axis=1).min())
    partners = []
    for op in ops:
        if not _maps_onto_itself(op[:2, :2], points, weights, tol):
            continue
        candidate = op @ on_axis
        kept = [on_axis] + partners
        if misorientation_angles(candidate, np.stack(kept), symmetry).min() > distinct:
            partners.append(candidate)
    if not partners:
        return np.zeros((0, 3, 3))
    return np.einsum("ji,njk->nik", tilt, np.stack(partners))  # tilt^T @ partner: the crystal's own tilt


def check_partners(model, pattern, rotation, symmetry, *, phase: int = 0, q_max: float, thicknesses=None, prepared=None):
    """Score a rotation and each of its projection partners against a pattern as they are, without a fit.

    A partner inherits the rotation's tilt off the zone axis (:func:`projection_partners`), so
    the two share whatever error the rotation's tilt has; each is scored by the kinematic model
    (:meth:`.refine.PatternModel.thickness_scores`) at its best of ``thicknesses`` (default: 30
    from 40 to 640 Å, 10 % apart). ``prepared``: the pattern as ``model.prepare`` gives it, when at hand.

    Returns
    -------
    rotations : numpy.ndarray
        (1 + n, 3, 3): the rotation and its n partners.
    scores : numpy.ndarray
        (1 + n,) their scores; ``[nan]`` without partners (nothing is scored).
    """
    table = model.tables[phase]
    rotation = np.asarray(rotation, float)
    partners = projection_partners(rotation, table.g, table.intensity, symmetry, q_max=q_max)
    if not len(partners):
        return rotation[None], np.array([np.nan])
    thicknesses = np.geomspace(40.0, 640.0, 30) if thicknesses is None else np.asarray(thicknesses, dtype=np.float64)
    prepared = model.prepare(pattern) if prepared is None else prepared
    candidates = np.concatenate([rotation[None], partners])
    # each candidate with the reflections it can put on the detector (a turn about the beam moves spots into the corners)
    scores = np.array([model.near(r, phase, within_deg=1.0).thickness_scores(prepared, r, thicknesses, phase).max() for r in candidates])
    return candidates, scores


def switch_partner(model, pattern, rotation, symmetry, *, phase: int = 0, q_max: float, gain: float = 0.0, prepared=None, checked=None):
    """Take the best projection partner of a rotation where it scores above it by more than ``gain`` at the rotation's tilt.

    The scores are :func:`check_partners`' (``checked``: its answer for ``rotation``, when at
    hand); a partner taken has its own tilt searched (:meth:`.refine.PatternModel.tilt_search`).

    Returns
    -------
    rotation : numpy.ndarray
        (3, 3): the partner, searched, or the rotation itself.
    switched : bool
        Whether the partner was taken.
    rotations, scores : numpy.ndarray
        :func:`check_partners` at the returned rotation.
    """
    prepared = model.prepare(pattern) if prepared is None else prepared
    rotation = np.asarray(rotation, dtype=np.float64)
    rotations, scores = checked if checked is not None else check_partners(
        model, pattern, rotation, symmetry, phase=phase, q_max=q_max, prepared=prepared)
    if len(scores) < 2:
        return rotation, False, rotations, scores
    best = 1 + int(np.argmax(scores[1:]))
    if not (scores[0] and (scores[best] - scores[0]) / abs(scores[0]) > gain):
        return rotation, False, rotations, scores
    log.info("a projection partner scores above the choice at its tilt by %.2f %%: taken", 100 * (scores[best] - scores[0]) / abs(scores[0]))
    rotation, _ = model.tilt_search(prepared, rotations[best], phase)
    rotations, scores = check_partners(model, pattern, rotation, symmetry, phase=phase, q_max=q_max, prepared=prepared)
    return rotation, True, rotations, scores


def polish_partners(model, pattern, rotation, symmetry, *, phase: int = 0, q_max: float, prepared=None, step: float = 0.05,
                    excited: bool = True):
    """Polish a rotation and each of its projection partners, each from its own searched tilt, and score them.

    The rotation (already tilt-searched) and each partner (its tilt searched from the rotation's,
    :meth:`.refine.PatternModel.tilt_search`) are polished by a Nelder-Mead search of the three
    rotation angles and the thickness (initial steps ``step`` degrees) on every reflection that
    reaches the detector; each is then scored at its best of 30 thicknesses (as
    :func:`check_partners`). The score is peaked to about 0.1° of tilt, finer than the tilt
    search's steps, and partners differ only in their few higher-order reflections.

    Returns
    -------
    rotations : numpy.ndarray
        (1 + n, 3, 3): the rotation and its n partners, polished; (1, 3, 3), the rotation as given, without partners.
    scores : numpy.ndarray
        (1 + n,) their scores; ``[nan]`` without partners.
    """
    table = model.tables[phase]
    rotation = np.asarray(rotation, dtype=np.float64)
    partners = projection_partners(rotation, table.g, table.intensity, symmetry, q_max=q_max)
    if not len(partners):
        return rotation[None], np.array([np.nan])
    prepared = model.prepare(pattern) if prepared is None else prepared
    thicknesses = np.geomspace(40.0, 640.0, 30)
    starts = [rotation] + [model.tilt_search(prepared, p, phase)[0] for p in partners]
    rotations, scores = [], []
    for start in starts:
        near = model.near(start, phase, within_deg=1.0)
        t0 = thicknesses[int(np.argmax(near.thickness_scores(prepared, start, thicknesses, phase)))]
        if excited:
            near = near.excited(start, phase, within_deg=1.0)
        v, _, _ = near._polish(prepared, start, phase, t0, np.zeros(3), math.radians(step), fit_thickness=True)
        polished = rotation_vector_matrix(v) @ start
        rotations.append(polished)
        scores.append(float(model.near(polished, phase, within_deg=1.0).thickness_scores(prepared, polished, thicknesses, phase).max()))
    return np.stack(rotations), np.array(scores)


def fit_partners(model, pattern, rotation, symmetry, *, phase: int = 0, q_max: float, search_deg: float = 1.0):
    """Fit a rotation and each of its projection partners to a pattern; the kinematic scores decide.

    Parameters
    ----------
    model : PatternModel
        The rendered-pattern model (:class:`.refine.PatternModel`).
    pattern : numpy.ndarray
        (qy, qx) calibrated pattern.
    rotation : array_like
        (3, 3) crystal -> sample rotation.
    symmetry : numpy.ndarray
        (s, 3, 3) proper rotations of the phase's point group.
    phase : int
        The phase's index in the model.
    q_max, search_deg : float
        As in :func:`projection_partners` and :meth:`.refine.PatternModel.refine`.

    Returns
    -------
    rotations : numpy.ndarray
        (1 + n, 3, 3): the rotation and its n partners, each refined from two starts (its own, and
        the partner of the other's refined rotation; the better fit is kept); (1, 3, 3), the rotation unrefined, when it has no partners.
    scores : numpy.ndarray
        (1 + n,) their fitted scores; ``[nan]`` without partners (nothing is fitted).
    """
    table = model.tables[phase]
    rotation = np.asarray(rotation, float)
    first = projection_partners(rotation, table.g, table.intensity, symmetry, q_max=q_max)
    if not len(first):
        return rotation[None], np.array([np.nan])
    prepared = model.prepare(pattern)

    def fit(start):
        return _fit(model, prepared, start, phase, search_deg)

    # every candidate is fitted from its own start and from the other's fitted tilt: a partner inherits
    # the tilt off the zone, the fit is peaked to ~0.1° of tilt, and a template solution's tilt is not
    # that good; the better of the two fits counts
    own = fit(rotation)
    classes = [[own]] + [[fit(p)] for p in first]
    for p in projection_partners(own[0], table.g, table.intensity, symmetry, q_max=q_max):
        near = misorientation_angles(p, np.stack([c[0][0] for c in classes[1:]]), symmetry)
        if near.min() < 5.0:
            classes[1 + int(near.argmin())].append(fit(p))
    best = [max(c, key=lambda f: f[1]) for c in classes]
    winner = 1 + int(np.argmax([f[1] for f in best[1:]]))
    for p in projection_partners(best[winner][0], table.g, table.intensity, symmetry, q_max=q_max):
        if misorientation_angles(p, own[0][None], symmetry)[0] < 5.0:
            best[0] = max(best[0], fit(p), key=lambda f: f[1])
    return np.stack([f[0] for f in best]), np.array([f[1] for f in best])


def fit_alone(model, pattern, rotation, *, phase: int = 0, search_deg: float = 1.0):
    """Fit one rotation (3, 3) to a pattern (qy, qx) as :func:`fit_partners` fits each candidate; returns the rotation and its score."""
    return _fit(model, model.prepare(pattern), np.asarray(rotation, float), phase, search_deg)


def _fit(model, prepared, rotation, phase: int, search_deg: float):
    """The better of the model's refinement and a local fit from the rotation itself (its best thickness, then a fine polish).

    The refinement starts from a thin crystal's tilt grid and can settle in a neighbouring
    optimum; a partner built from the crystal is already at its own tilt.
    """
    refined, _, score = model.refine(prepared, rotation, phase, search_deg=search_deg)
    model = model.near(rotation, phase)  # the same scores near the start, fewer reflections
    thicknesses = np.geomspace(40.0, 640.0, 30)
    t0 = thicknesses[int(np.argmax(model.thickness_scores(prepared, rotation, thicknesses, phase)))]
    v, _, local = model._polish(prepared, rotation, phase, t0, np.zeros(3), math.radians(0.05), fit_thickness=True)
    if local > score:
        return rotation_vector_matrix(v) @ rotation, local
    return refined, score
