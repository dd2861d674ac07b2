"""From a sample to patterns: intensity maps, blur across the scan, disks, noise.

Every pattern is a linear combination of fixed detector images: one blurred
disk per (grain, reflection), the central disk and the amorphous background.
The weight of each image at each position is a map over the scan: the
kinematic intensity of the reflection for the path length through the grain
there, the transmitted fraction, the amorphous thickness. The Gaussian blur
across the scan is linear, so it is applied to these maps (exactly) instead of
to the patterns. A block of scan rows is then drawn by adding each disk image,
weighted by its map, into the pixels it covers, and Poisson noise is drawn per
scan row from a generator seeded by (seed, row), so a row's patterns never
depend on how the scan is split into blocks or threads.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from stemnmf.simulate.crystal import Crystal, zone_axis_rotation
from stemnmf.simulate.physics import (
    Optics,
    Reflections,
    amorphous_image,
    clip_slices,
    diffraction_pattern,
    disk_stencils,
    kinematic_intensity,
)
from stemnmf.simulate.rotations import quaternion_to_matrix
from stemnmf.simulate.sample import Sample
from stemnmf.simulate.scattering import amorphous_scattered_fraction

__all__ = ["SimulationModel", "build_model", "poisson_counts", "render_rows"]

log = logging.getLogger(__name__)

#: spawn_key tags of the random streams: the sample, the orientation set, the noise of each row
#: (3: the instrument's), the phase of each grain in a two-phase film.
SAMPLE_STREAM, ORIENTATION_STREAM, NOISE_STREAM, PHASE_STREAM = 0, 1, 2, 4

#: Weight maps are trimmed to where they exceed this fraction of the beam (1e-3 electrons at a dose of 1e5).
_MAP_FLOOR = 1e-8

#: Expected counts above which numpy's Poisson sampler is used (below: inverse transform).
_POISSON_SWITCH = 10.0


@dataclasses.dataclass(eq=False)
class _SpotTerm:
    """One disk image and its weight map over a window of the scan (field-of-view rows y0:y1, columns x0:x1)."""

    y0: int
    y1: int
    x0: int
    x1: int
    weights: np.ndarray  # (y1 - y0, x1 - x0) float32, expected counts in the disk
    stencil: np.ndarray  # (n, n) float32, sums to 1 (before clipping to the detector)
    where: tuple  # (det rows, det cols, stencil rows, stencil cols)


@dataclasses.dataclass(eq=False)
class SimulationModel:
    """Everything needed to draw any block of scan rows; picklable.

    Attributes
    ----------
    scan_shape, det_shape : (int, int)
    spots : list of _SpotTerm
        Every (grain, reflection) disk that reaches the detector.
    spot_rows : numpy.ndarray
        (n_spots, 2) first and last + 1 scan row of each spot's weight map.
    central_map : numpy.ndarray
        (sy, sx) expected counts in the central disk.
    central_stencil, central_slices
        The central disk image and where it lies on the detector.
    amorphous_map : numpy.ndarray
        (sy, sx) amorphous thickness (Å) times the dose (and the kinematic cap), blurred across the scan.
    amorphous_image : numpy.ndarray
        (qy, qx) fraction of the beam per pixel per Å of amorphous carbon.
    noise : bool
    seed : int
        Root of the random streams.
    token : str
        Identifies the model for dask.
    """

    scan_shape: tuple[int, int]
    det_shape: tuple[int, int]
    spots: list
    spot_rows: np.ndarray
    central_map: np.ndarray
    central_stencil: np.ndarray
    central_slices: tuple
    amorphous_map: np.ndarray
    amorphous_image: np.ndarray
    noise: bool
    seed: int
    token: str

    def __dask_tokenize__(self):
        return ("stemnmf.simulate.SimulationModel", self.token)

    def render(self, start: int, stop: int) -> np.ndarray:
        """Scan rows ``start:stop`` as float32 (rows, sx, qy, qx) counts."""
        sx = self.scan_shape[1]
        qy, qx = self.det_shape
        rows = stop - start
        out = np.zeros((rows, sx, qy, qx), np.float32)
        hit = np.flatnonzero((self.spot_rows[:, 0] < stop) & (self.spot_rows[:, 1] > start))
        for k in hit:
            spot = self.spots[k]
            r0, r1 = max(start, spot.y0), min(stop, spot.y1)
            dy, dx, ty, tx = spot.where
            weights = spot.weights[r0 - spot.y0 : r1 - spot.y0, :, None, None]
            out[r0 - start : r1 - start, spot.x0 : spot.x1, dy, dx] += weights * spot.stencil[ty, tx]
        dy, dx, ty, tx = self.central_slices
        out[:, :, dy, dx] += self.central_map[start:stop, :, None, None] * self.central_stencil[ty, tx]
        out += self.amorphous_map[start:stop, :, None, None] * self.amorphous_image
        if self.noise:
            for i, row in enumerate(range(start, stop)):
                rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(NOISE_STREAM, row)))
                out[i] = poisson_counts(out[i], rng)
        return out


def render_rows(model: SimulationModel, start: int, stop: int, n_threads: int = 1) -> np.ndarray:
    """Rows ``start:stop`` of the scan, drawn by up to ``n_threads`` threads (same result for any count)."""
    rows = stop - start
    n_threads = max(1, min(int(n_threads), rows))
    if n_threads == 1:
        return model.render(start, stop)
    out = np.empty((rows, model.scan_shape[1], *model.det_shape), np.float32)
    bounds = np.linspace(start, stop, n_threads + 1).round().astype(int)

    def work(a, b):
        out[a - start : b - start] = model.render(a, b)

    with ThreadPoolExecutor(n_threads, thread_name_prefix="stemnmf-sim") as pool:
        for future in [pool.submit(work, a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]:
            future.result()
    return out


def _dask_rows(model: SimulationModel, start: int, stop: int, n_threads: int) -> np.ndarray:
    return render_rows(model, start, stop, n_threads)


def poisson_counts(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson draws with the given means, as float32 of the same shape.

    Means up to 10 are drawn by inverse transform from one uniform number per
    pixel: the comparisons with P(X = 0) and P(X <= 1) run over the whole
    array, and the few pixels with two or more counts walk up the cumulative
    distribution in float64. Means above 10 use ``Generator.poisson``. Exact in
    distribution (to the rounding of the cumulative sums).
    """
    lam = np.ascontiguousarray(expected, dtype=np.float32).ravel()
    u = rng.random(lam.size, dtype=np.float32)
    p0 = np.exp(-lam)
    out = np.greater_equal(u, p0).astype(np.float32)
    cdf1 = lam + np.float32(1)
    cdf1 *= p0
    two = np.greater_equal(u, cdf1)
    out += two
    rest = np.flatnonzero(two)
    high = np.flatnonzero(lam > _POISSON_SWITCH)
    if rest.size:
        rest = rest[lam[rest] <= _POISSON_SWITCH]
        lam_r = lam[rest].astype(np.float64)
        u_r = u[rest].astype(np.float64)
        p = np.exp(-lam_r) * lam_r**2 / 2.0
        cdf = np.exp(-lam_r) * (1.0 + lam_r) + p
        n = 2
        while rest.size:
            done = u_r < cdf
            out[rest[done]] = n
            keep = ~done
            rest, lam_r, u_r, p, cdf = rest[keep], lam_r[keep], u_r[keep], p[keep], cdf[keep]
            n += 1
            p *= lam_r / n
            cdf += p
            if n > 100:  # unreachable for means <= 10 except through rounding
                out[rest] = n
                break
    if high.size:
        out[high] = rng.poisson(lam[high].astype(np.float64))
    return out.reshape(np.shape(expected))


def _blur_crop(maps, y0, x0, pad, sigma, scan_shape):
    """Blur (m, ny, nx) maps on the padded grid across the scan and crop them to the field of view.

    Returns (maps, fy0, fy1, fx0, fx1) in field-of-view coordinates, or None if nothing is in view.
    """
    sy, sx = scan_shape
    radius = int(4.0 * sigma + 0.5) if sigma > 0 else 0
    if radius:
        maps = np.pad(maps, ((0, 0), (radius, radius), (radius, radius)))
        maps = ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="constant", truncate=4.0)
    # padded-grid index of maps[:, 0, 0], then field-of-view index
    fy, fx = y0 - radius - pad, x0 - radius - pad
    ny, nx = maps.shape[1:]
    a0, a1 = max(fy, 0), min(fy + ny, sy)
    b0, b1 = max(fx, 0), min(fx + nx, sx)
    if a1 <= a0 or b1 <= b0:
        return None
    return maps[:, a0 - fy : a1 - fy, b0 - fx : b1 - fx], a0, a1, b0, b1


def build_model(
    sample: Sample,
    crystal: Crystal,
    optics: Optics,
    *,
    dose: float,
    noise: bool,
    seed: int,
    scan_blur: float,
    carbon_thickness: float,
    amorphous_matrix: bool,
    min_intensity: float,
    max_scattered: float,
    token: str,
    second_crystal: Crystal | None = None,
) -> tuple[SimulationModel, dict]:
    """Precompute the disk images and their weight maps for a sample.

    Grains whose ``phase`` is 1 diffract as ``second_crystal``.

    Returns
    -------
    model : SimulationModel
    info : dict
        ``amorphous_thickness`` (sy, sx) in Å, ``scattered`` (sy, sx) total
        scattered fraction before the blur, ``n_reflections`` drawn.
    """
    phases = [Reflections.of(crystal, optics)]
    if second_crystal is not None:
        phases.append(Reflections.of(second_crystal, optics))
    py, px = sample.padded_shape
    pad = sample.pad
    sy, sx = sample.scan_shape
    scattered = np.zeros((py, px))
    in_grains = np.zeros((py, px))
    per_grain = []
    for grain, tmap in zip(sample.grains, sample.maps):
        t = tmap.t
        if t.size == 0 or t.max() <= 0:
            continue
        reflections = phases[grain.phase]
        centres, s = reflections.in_lab(grain.rotation, optics)
        inside = t > 0
        values = t[inside]
        intensity = kinematic_intensity(reflections.prefactor[:, None], s[:, None], values[None, :])
        window = (slice(tmap.y0, tmap.y0 + t.shape[0]), slice(tmap.x0, tmap.x0 + t.shape[1]))
        total = np.zeros(t.shape)
        total[inside] = intensity.sum(axis=0)
        scattered[window] += total
        in_grains[window] += t
        keep = intensity.max(axis=1) >= min_intensity
        per_grain.append((tmap, inside, intensity[keep], centres[keep]))

    amorphous = np.full((py, px), float(carbon_thickness))
    if amorphous_matrix:
        amorphous += np.clip(sample.film_thickness - in_grains, 0.0, None)
    amorphous_fraction = amorphous * amorphous_scattered_fraction(optics.beam_energy, optics.wavelength)
    total = scattered + amorphous_fraction
    cap = np.where(total > max_scattered, max_scattered / np.maximum(total, 1e-30), 1.0)
    central = 1.0 - cap * total

    floor = _MAP_FLOOR * dose
    spots = []
    for tmap, inside, intensity, centres in per_grain:
        stencils, corners = disk_stencils(centres, optics.disk_radius, optics.detector_blur)
        slices = clip_slices(corners, stencils.shape[1], optics.det_shape)
        on_detector = np.array([w is not None for w in slices], dtype=bool)
        if not on_detector.any():
            continue
        t = tmap.t
        window = (slice(tmap.y0, tmap.y0 + t.shape[0]), slice(tmap.x0, tmap.x0 + t.shape[1]))
        maps = np.zeros((int(on_detector.sum()), *t.shape))
        maps[:, inside] = intensity[on_detector]
        maps *= (cap[window] * dose)[None]
        cropped = _blur_crop(maps, tmap.y0, tmap.x0, pad, scan_blur, sample.scan_shape)
        if cropped is None:
            continue
        maps, a0, a1, b0, b1 = cropped
        for weights, stencil, where in zip(maps, stencils[on_detector], [w for w in slices if w is not None]):
            above = weights > floor
            rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
            if rows.size == 0:
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            spots.append(
                _SpotTerm(
                    a0 + r0, a0 + r1, b0 + c0, b0 + c1,
                    np.ascontiguousarray(weights[r0:r1, c0:c1], dtype=np.float32),
                    stencil,
                    where,
                )
            )  # fmt: skip
    n_reflections = len(spots)
    spot_rows = np.array([[sp.y0, sp.y1] for sp in spots], dtype=np.int64).reshape(-1, 2)

    def field(values, mode="nearest"):
        if scan_blur > 0:
            values = ndimage.gaussian_filter(values, scan_blur, mode=mode, truncate=4.0)
        return np.ascontiguousarray(values[pad : pad + sy, pad : pad + sx], dtype=np.float32)

    central_stencil, corner = disk_stencils([optics.origin], optics.disk_radius, optics.detector_blur)
    model = SimulationModel(
        scan_shape=(sy, sx),
        det_shape=tuple(optics.det_shape),
        spots=spots,
        spot_rows=spot_rows,
        central_map=field(central * dose),
        central_stencil=central_stencil[0],
        central_slices=clip_slices(corner, central_stencil.shape[1], optics.det_shape)[0],
        amorphous_map=field(amorphous * cap * dose),
        amorphous_image=amorphous_image(optics).astype(np.float32),
        noise=bool(noise),
        seed=int(seed),
        token=token,
    )
    info = {
        "amorphous_thickness": amorphous[pad : pad + sy, pad : pad + sx].astype(np.float32),
        "scattered": (cap * total)[pad : pad + sy, pad : pad + sx].astype(np.float32),
        "n_reflections": n_reflections,
        "capped_fraction": float(np.mean(cap[pad : pad + sy, pad : pad + sx] < 1)),
    }
    log.debug("model: %d disk images with their weight maps", n_reflections)
    return model, info


def orientation_fingerprint(crystal: Crystal, rotation, thickness: float, optics: Optics) -> np.ndarray:
    """Unit-norm spot image of one orientation (no central beam), to tell orientations apart."""
    pattern = diffraction_pattern(crystal, rotation, thickness, optics, central_beam=False).astype(np.float64)
    pattern = ndimage.gaussian_filter(pattern, max(1.0, optics.disk_radius))
    norm = np.linalg.norm(pattern)
    return pattern.ravel() / norm if norm > 0 else pattern.ravel()


#: Zone axes the distinct orientations are drawn near (cubic indices; any lattice uses them as [uvw]).
ZONE_AXES = ((0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 1, 2), (0, 1, 3), (1, 2, 3), (1, 1, 4), (0, 1, 2), (1, 2, 2), (1, 3, 3))


def distinct_orientations(
    crystal: Crystal,
    n: int,
    thickness: float,
    optics: Optics,
    rng: np.random.Generator,
    *,
    max_similarity: float = 0.5,
    tilt_deg: float = 1.0,
    min_tilt_deg: float = 0.0,
):
    """``n`` orientations near low-index zone axes whose spot patterns differ clearly.

    Each candidate is a zone axis (cycled through :data:`ZONE_AXES` from a
    random start) tilted by ``min_tilt_deg`` to ``tilt_deg`` and turned by a random angle
    about the beam; it is kept when the cosine similarity of its blurred spot
    image (kinematic, ``thickness``) to every kept one is below
    ``max_similarity``.

    Returns
    -------
    rotations : numpy.ndarray
        (n, 3, 3)
    zone_axes : numpy.ndarray
        (n, 3) int, the zone axis each is near.
    """

    # a coarse detector with the same reciprocal extent keeps this cheap
    coarse = dataclasses.replace(
        optics,
        det_shape=(64, 64),
        q_pixel=optics.q_pixel * min(optics.det_shape) / 64,
        detector_blur=0.5,
    )
    rotations, axes, prints = [], [], []
    start = int(rng.integers(len(ZONE_AXES)))
    threshold = max_similarity
    attempt = 0
    while len(rotations) < n:
        uvw = ZONE_AXES[(start + attempt) % len(ZONE_AXES)]
        attempt += 1
        rotation = zone_axis_rotation(crystal, uvw, in_plane=float(rng.uniform(0, 360)))
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        angle = math.radians(min_tilt_deg) + math.radians(tilt_deg - min_tilt_deg) * float(rng.uniform(0, 1))
        tilt = quaternion_to_matrix(np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis]))
        rotation = tilt @ rotation
        fingerprint = orientation_fingerprint(crystal, rotation, thickness, optics=coarse)
        if all(float(fingerprint @ other) < threshold for other in prints):
            rotations.append(rotation)
            axes.append(uvw)
            prints.append(fingerprint)
        if attempt % 500 == 0:
            threshold = min(0.95, threshold + 0.05)
            log.warning("relaxed the orientation similarity limit to %.2f to find %d orientations", threshold, n)
    return np.array(rotations), np.array(axes, dtype=np.int64)
