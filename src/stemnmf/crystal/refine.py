"""Continuous orientation refinement against a rendered kinematic pattern.

The template matching finds a few candidate orientations on a grid; this
module polishes each by maximising the agreement of the pattern with a
rendered model of it and keeps the best. The model of orientation ``R`` and
thickness ``t`` is the sum of the kinematic spots of :mod:`.kinematics`
(intensity |F|^2 sinc^2(s t), side lobes included), each drawn as the probe's
disk (radius alpha / lambda) blurred by ``blur`` pixels. The agreement is the
normalised cross-correlation of the square roots of the model and of the
pattern (its ring background removed) over the detector outside ``r_min``:
the square root keeps the weaker spots, whose excitation errors tell a
crystal from its Σ3 twin and fix the tilt, from being drowned by the few
strongest. Nelder-Mead optimises the three rotation angles and log t.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
from scipy import ndimage, optimize

from stemnmf.crystal.kinematics import ReflectionTable, kinematic_spots

__all__ = ["DetectorGeometry", "PatternModel", "prepare_pattern", "rotation_vector_matrix"]


@dataclasses.dataclass(frozen=True)
class DetectorGeometry:
    """Where a sample-frame reciprocal vector lands on the detector.

    Attributes
    ----------
    shape : (int, int)
    q_pixel : float
        1/Å per pixel.
    origin : (float, float)
        Direct beam (row, col).
    rotation : float
        Detector x axis from the sample x axis, degrees counter-clockwise.
    flip : bool
        Detector y against sample y.
    disk_radius : float
        Diffraction disk radius, pixels.
    blur : float
        Gaussian blur of the disks, pixels.
    """

    shape: tuple
    q_pixel: float
    origin: tuple
    rotation: float = 0.0
    flip: bool = False
    disk_radius: float = 1.0
    blur: float = 1.0

    def pixels(self, x, y):
        """Detector (row, col) of sample-frame positions x, y (1/Å): the inverse of the polar resampling."""
        a = math.radians(self.rotation)
        dx = math.cos(a) * x + math.sin(a) * y
        dy = -math.sin(a) * x + math.cos(a) * y
        if self.flip:
            dy = -dy
        return self.origin[0] + dy / self.q_pixel, self.origin[1] + dx / self.q_pixel


def rotation_vector_matrix(vector) -> np.ndarray:
    """Rotation (3, 3) of a rotation vector (axis times angle in radians)."""
    v = np.asarray(vector, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-15:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)


def _radius_map(geometry: DetectorGeometry) -> np.ndarray:
    rows, cols = np.indices(geometry.shape, dtype=np.float64)
    return np.hypot(rows - geometry.origin[0], cols - geometry.origin[1])


def _disk_kernel_fft(geometry: DetectorGeometry) -> np.ndarray:
    """rfft2 of the blurred disk, centred on pixel (0, 0) with wrap-around."""
    qy, qx = geometry.shape
    rows = np.fft.fftfreq(qy, 1.0 / qy)[:, None]
    cols = np.fft.fftfreq(qx, 1.0 / qx)[None, :]
    sub = (np.arange(4) + 0.5) / 4 - 0.5  # 4 x 4 supersampling of the disk's edge
    disk = np.zeros((qy, qx))
    for dy in sub:
        for dx in sub:
            disk += np.hypot(rows + dy, cols + dx) <= max(geometry.disk_radius, 0.5)
    if geometry.blur > 0:
        disk = ndimage.gaussian_filter(disk, geometry.blur, mode="wrap")
    return np.fft.rfft2(disk / disk.sum())


def prepare_pattern(pattern, geometry: DetectorGeometry, mask: np.ndarray) -> np.ndarray:
    """Square root of the pattern less its ring background (median per pixel ring), zero mean and unit norm in ``mask``."""
    image = np.nan_to_num(np.asarray(pattern, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    rings = np.rint(_radius_map(geometry)).astype(np.int64)
    labels = np.arange(rings.max() + 1)
    background = np.asarray(ndimage.median(image, labels=rings, index=labels))
    values = np.sqrt(np.clip(image - background[rings], 0.0, None))[mask]
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 0 else values


class PatternModel:
    """Rendered kinematic patterns of one or more phases on one detector, and their fit to a pattern.

    Parameters
    ----------
    tables : list of ReflectionTable
        One per phase (:func:`.kinematics.reflection_table`).
    geometry : DetectorGeometry
    r_min : float
        Pixels nearer the direct beam than this (1/Å) are left out.
    """

    def __init__(self, tables, geometry: DetectorGeometry, *, r_min: float):
        self.tables = list(tables)
        self.geometry = geometry
        self.mask = _radius_map(geometry) * geometry.q_pixel >= r_min
        self.kernel = _disk_kernel_fft(geometry)
        disk = np.clip(np.fft.irfft2(self.kernel, s=geometry.shape), 0.0, None)
        self.root_kernel = np.fft.rfft2(np.sqrt(disk))
        self.root_sum = float(np.sqrt(disk).sum())
        self.n_mask = int(self.mask.sum())

    def prepare(self, pattern) -> np.ndarray:
        """The pattern as :meth:`score` wants it: correlated with the square root of the disk.

        The prepared pattern D (:func:`prepare_pattern`, zero outside the mask)
        correlated with sqrt(disk) gives, at a spot centre, that spot's term of
        the cross-correlation: as long as the disks do not overlap,
        sqrt(model) = sum_i sqrt(I_i) sqrt(disk(x - x_i)).
        """
        image = np.zeros(self.geometry.shape)
        image[self.mask] = prepare_pattern(pattern, self.geometry, self.mask)
        correlated = np.fft.irfft2(np.fft.rfft2(image) * np.conj(self.root_kernel), s=image.shape)
        return ndimage.spline_filter(correlated, order=3)  # for cubic interpolation at the spots

    def near(self, rotation, phase: int = 0, *, within_deg: float = 5.0) -> "PatternModel":
        """The model less the reflections of ``phase`` that no rotation within ``within_deg`` of ``rotation`` puts on the detector.

        :meth:`score` leaves out spots whose centre falls off the detector, so the scores of
        rotations within ``within_deg`` of ``rotation`` are unchanged; a fit near a start then
        computes about a quarter of a spinel's reflections (8 323 of the indexer's 28 546 on a
        128-pixel detector of 0.02 1/Å).
        """
        table = self.tables[phase]
        g_lab = table.g @ np.asarray(rotation, dtype=np.float64).T
        reach = np.linalg.norm(table.g, axis=1) * 2.0 * math.sin(math.radians(within_deg) / 2.0) / self.geometry.q_pixel
        rows, cols = self.geometry.pixels(g_lab[:, 0], g_lab[:, 1])
        qy, qx = self.geometry.shape
        margin = reach + 1.0
        keep = (rows > -margin) & (rows < qy - 1 + margin) & (cols > -margin) & (cols < qx - 1 + margin)
        near = copy.copy(self)
        near.tables = list(self.tables)
        near.tables[phase] = ReflectionTable(table.g[keep], table.intensity[keep], table.wave_number)
        return near

    def excited(self, rotation, phase: int = 0, *, within_deg: float = 3.0, s_max: float = 0.2) -> "PatternModel":
        """The model less the reflections of ``phase`` whose excitation error stays above ``s_max`` (1/Å) for every rotation within ``within_deg`` of ``rotation``.

        Approximate scores for a search: a reflection left out would add at most
        |F|^2 / (pi s_max t)^2 to the model (0.16 % of its |F|^2 at 40 Å and 0.2 1/Å); a
        spinel near a zone axis keeps about 500 of the 7 800 reflections :meth:`near` keeps.
        """
        table = self.tables[phase]
        g_lab = table.g @ np.asarray(rotation, dtype=np.float64).T
        s = -g_lab[:, 2] - np.einsum("ij,ij->i", g_lab, g_lab) * (0.5 / table.wave_number)
        reach = np.linalg.norm(table.g, axis=1) * 2.0 * math.sin(math.radians(within_deg) / 2.0)  # most a rotation moves g_z
        keep = np.abs(s) <= float(s_max) + reach
        excited = copy.copy(self)
        excited.tables = list(self.tables)
        excited.tables[phase] = ReflectionTable(table.g[keep], table.intensity[keep], table.wave_number)
        return excited

    def tilt_search(self, prepared, rotation, phase: int = 0, *, span: float = 3.0, step: float = 0.5,
                    steps=(0.5, 0.25, 0.125, 0.0625), thicknesses=None, rounds: int = 3):
        """Best rotation near ``rotation`` by a grid of tilts, then a compass search; returns it and its (approximate) score.

        A grid of tilts about the sample x and y axes (``-span`` to ``span`` degrees in steps of
        ``step``; by default +-3° in 0.5° steps, 13 x 13 tilts: +-2° in 1° steps missed regions
        2.6-3.2° off, bench/RESULTS-index.md, round 12b) escapes an optimum of the template
        refinement a few degrees off; from its best, turns of +-d about the sample x, y and z axes
        (d in ``steps``, degrees; up to ``rounds`` moves per d) climb the score, each rotation at its best of ``thicknesses`` (default: 8
        from 40 to 640 Å). Scored with the reflections :meth:`excited` keeps (about 15x faster).
        """
        thicknesses = np.geomspace(40.0, 640.0, 8) if thicknesses is None else np.asarray(thicknesses, dtype=np.float64)
        start = np.asarray(rotation, dtype=np.float64)
        reach = math.hypot(span, span) + rounds * float(sum(steps)) + 1.0
        model = self.near(start, phase, within_deg=reach).excited(start, phase, within_deg=reach)

        def score(r):
            return float(model.thickness_scores(prepared, r, thicknesses, phase).max())

        offsets = np.arange(-span, span + 1e-9, step) if span > 0 else np.zeros(1)
        grid = [rotation_vector_matrix(np.radians([a, b, 0.0])) @ start for a in offsets for b in offsets]
        values = [score(r) for r in grid]
        best, value = grid[int(np.argmax(values))], max(values)
        for d in steps:
            scaled = [rotation_vector_matrix(np.radians(d) * v) for v in np.concatenate([np.eye(3), -np.eye(3)])]
            for _ in range(int(rounds)):
                moves = [t @ best for t in scaled]
                values = [score(r) for r in moves]
                if max(values) <= value:
                    break
                best, value = moves[int(np.argmax(values))], max(values)
        return best, value

    def render(self, rotation, thickness: float, phase: int = 0) -> np.ndarray:
        """Model image (qy, qx) of a crystal -> sample rotation and a thickness (Å)."""
        x, y, intensity = kinematic_spots(self.tables[phase], rotation, thickness)
        rows, cols = self.geometry.pixels(x, y)
        qy, qx = self.geometry.shape
        r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        fr, fc = rows - r0, cols - c0
        image = np.zeros(qy * qx)
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
            r, c = r0 + dr, c0 + dc
            inside = (r >= 0) & (r < qy) & (c >= 0) & (c < qx)
            np.add.at(image, r[inside] * qx + c[inside], (w * intensity)[inside])
        return np.fft.irfft2(np.fft.rfft2(image.reshape(qy, qx)) * self.kernel, s=(qy, qx))

    def score(self, prepared: np.ndarray, rotation, thickness: float, phase: int = 0) -> float:
        """Normalised cross-correlation of sqrt(model) with a prepared pattern, inside the mask.

        Computed spot by spot (no image is rendered): the numerator samples the
        prepared pattern at the spot centres (cubic interpolation); with
        sum(disk) = 1 the model's sum of squares is sum_i I_i and its sum is
        sum_i sqrt(I_i) sum(sqrt(disk)). Spots whose centre lies outside the
        mask are left out.
        """
        x, y, intensity = kinematic_spots(self.tables[phase], rotation, thickness)
        rows, cols = self.geometry.pixels(x, y)
        qy, qx = self.geometry.shape
        r0, c0 = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
        inside = (r0 >= 0) & (r0 < qy) & (c0 >= 0) & (c0 < qx)
        inside[inside] = self.mask[r0[inside], c0[inside]]
        sampled = ndimage.map_coordinates(prepared, np.stack([rows[inside], cols[inside]]), order=3, prefilter=False)
        intensity = intensity[inside]
        amplitude = np.sqrt(intensity)
        total = float(amplitude.sum()) * self.root_sum
        spread = float(intensity.sum()) - total * total / self.n_mask
        return float(amplitude @ sampled) / math.sqrt(spread) if spread > 0 else 0.0

    def thickness_scores(self, prepared: np.ndarray, rotation, thicknesses, phase: int = 0) -> np.ndarray:
        """:meth:`score` of one rotation at each of ``thicknesses`` (t,): the spots are placed and sampled once."""
        table = self.tables[phase]
        g_lab = table.g @ np.asarray(rotation, dtype=np.float64).T
        s = -g_lab[:, 2] - np.einsum("ij,ij->i", g_lab, g_lab) * (0.5 / table.wave_number)
        rows, cols = self.geometry.pixels(g_lab[:, 0], g_lab[:, 1])
        qy, qx = self.geometry.shape
        r0, c0 = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
        inside = (r0 >= 0) & (r0 < qy) & (c0 >= 0) & (c0 < qx)
        inside[inside] = self.mask[r0[inside], c0[inside]]
        sampled = ndimage.map_coordinates(prepared, np.stack([rows[inside], cols[inside]]), order=3, prefilter=False)
        thicknesses = np.asarray(thicknesses, dtype=np.float64)
        intensity = table.intensity[inside] * np.sinc(s[inside][None, :] * thicknesses[:, None]) ** 2  # (t, m)
        amplitude = np.sqrt(intensity)
        total = amplitude.sum(axis=1) * self.root_sum
        spread = intensity.sum(axis=1) - total * total / self.n_mask
        numerator = amplitude @ sampled
        return np.where(spread > 0, numerator / np.sqrt(np.where(spread > 0, spread, 1.0)), 0.0)

    def rendered_score(self, prepared_image: np.ndarray, rotation, thickness: float, phase: int = 0) -> float:
        """:meth:`score` from a rendered model and a :func:`prepare_pattern` image (zero outside the mask); slow, for checks."""
        model = np.sqrt(np.clip(self.render(rotation, thickness, phase), 0.0, None)) * self.mask
        total = float(model.sum())
        spread = float(np.einsum("ij,ij->", model, model)) - total * total / self.n_mask
        return float(np.einsum("ij,ij->", model, prepared_image)) / math.sqrt(spread) if spread > 0 else 0.0

    def _polish(self, prepared, start, phase, thickness, v, step, *, fit_thickness: bool):
        """Nelder-Mead from rotation vector ``v`` (and log t offset) with initial steps ``step`` (radians)."""
        n = 4 if fit_thickness else 3

        def loss(x):
            t = thickness * math.exp(float(np.clip(x[3], -2.0, 2.0))) if fit_thickness else thickness
            return -self.score(prepared, rotation_vector_matrix(x[:3]) @ start, t, phase)

        x0 = np.concatenate([v, [0.0]])[:n]
        simplex = np.vstack([np.zeros(n), np.diag([step, step, step, 0.1][:n])]) + x0
        result = optimize.minimize(
            loss, x0, method="Nelder-Mead",
            options={"initial_simplex": simplex, "xatol": 1e-5, "fatol": 1e-7, "maxiter": 100 * n},
        )
        t = thickness * math.exp(float(np.clip(result.x[3], -2.0, 2.0))) if fit_thickness else thickness
        return result.x[:3], t, -float(result.fun)

    def refine(self, prepared, rotation, phase: int = 0, *, search_deg: float = 1.0, thicknesses=None):
        """Best rotation near ``rotation`` (within about ``search_deg`` + 1°), its thickness (Å) and score.

        The agreement is sharply peaked in the tilt for thick crystals (their
        rocking curve is narrow), so the search continues from a thin crystal's
        smooth landscape: the best of a grid of tilts about the sample x and y
        axes (within ``search_deg``, in steps of half of it) starts a fit of
        the rotation at 40 Å, then at 80 Å; the best
        of ``thicknesses`` (default: 40 to 640 Å in 30 steps of 10 %) at that rotation seeds a last search over the
        rotation and log t. Reflections that no rotation within ``search_deg`` + 5° of the start
        puts on the detector are left out (:meth:`near`): the same scores in about half the time.
        """
        start = np.asarray(rotation, dtype=np.float64)
        model = self.near(start, phase, within_deg=float(search_deg) + 5.0)  # the same scores with fewer reflections
        thicknesses = np.geomspace(40.0, 640.0, 30) if thicknesses is None else np.asarray(thicknesses, dtype=np.float64)
        tilts = np.radians(search_deg) * np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
        seeds = [np.array([a, b, 0.0]) for a in tilts for b in tilts]
        v = seeds[int(np.argmax([model.score(prepared, rotation_vector_matrix(x) @ start, 40.0, phase) for x in seeds]))]
        for thickness, step in ((40.0, 0.5), (80.0, 0.2)):
            v, _, _ = model._polish(prepared, start, phase, thickness, v, math.radians(step), fit_thickness=False)
        turned = rotation_vector_matrix(v) @ start
        t0 = thicknesses[int(np.argmax([model.score(prepared, turned, t, phase) for t in thicknesses]))]
        v, t, score = model._polish(prepared, start, phase, t0, v, math.radians(0.05), fit_thickness=True)
        return rotation_vector_matrix(v) @ start, t, score
