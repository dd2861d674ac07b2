"""Kinematic diffraction of grains: spot positions, excitation errors, intensities, disks.

For a grain with rotation R (crystal -> lab), every reflection g of the
crystal sits at g_lab = R g. With the incident wave vector k0 = (0, 0, K),
K = 1 / lambda, the excitation error is the signed distance of g from the
Ewald sphere along the beam,

    s = (K^2 - |k0 + g|^2) / (2 K) = -g_z - |g|^2 / (2 K),

and a path length t through the grain gives the kinematic intensity (fraction
of the incident beam)

    I_g(t) = (lambda gamma |F_g| / V_c)^2 * sin^2(pi s t) / (pi s)^2
           = (pi t / xi_g)^2 * sinc^2(pi s t),      xi_g = pi V_c / (lambda gamma |F_g|),

with F_g the structure factor in Å, V_c the cell volume and gamma the Lorentz
factor (relativistic correction of the scattering factors). The diffracted
beam leaves along k0 + g and lands at the detector position g_xy, where it
forms a disk of radius alpha / lambda (alpha the probe semi-convergence angle),
blurred by the detector point-spread function.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from stemnmf.io.dataset import electron_wavelength
from stemnmf.simulate.crystal import Crystal
from stemnmf.simulate.scattering import amorphous_intensity, lorentz_factor

__all__ = ["Optics", "Reflections", "kinematic_intensity", "disk_stencils", "diffraction_pattern"]


@dataclasses.dataclass(frozen=True)
class Optics:
    """Beam and detector.

    Attributes
    ----------
    beam_energy : float
        keV.
    convergence_angle : float
        Probe semi-convergence angle in mrad.
    q_pixel : float
        Detector pixel size in 1/Å.
    det_shape : (int, int)
        Detector pixels (qy, qx).
    detector_blur : float
        Standard deviation of the detector/probe point-spread function, in pixels.
    """

    beam_energy: float = 300.0
    convergence_angle: float = 1.05
    q_pixel: float = 0.01
    det_shape: tuple[int, int] = (256, 256)
    detector_blur: float = 0.5

    @property
    def wavelength(self) -> float:
        """Å."""
        return electron_wavelength(self.beam_energy)

    @property
    def gamma(self) -> float:
        return lorentz_factor(self.beam_energy)

    @property
    def disk_radius(self) -> float:
        """Radius of the diffraction disks in pixels: alpha / lambda / q_pixel."""
        return self.convergence_angle * 1e-3 / self.wavelength / self.q_pixel

    @property
    def origin(self) -> tuple[int, int]:
        """Detector pixel (row, column) of the direct beam: the centre pixel."""
        return self.det_shape[0] // 2, self.det_shape[1] // 2

    @property
    def g_max(self) -> float:
        """Largest |g| (1/Å) whose disk can touch the detector."""
        qy, qx = self.det_shape
        oy, ox = self.origin
        far_y = max(oy, qy - 1 - oy)
        far_x = max(ox, qx - 1 - ox)
        return (math.hypot(far_y, far_x) + self.disk_radius + 3 * self.detector_blur + 2) * self.q_pixel


@dataclasses.dataclass(frozen=True, eq=False)
class Reflections:
    """The reflections of a crystal that can reach a detector, with their intensity prefactors.

    Attributes
    ----------
    hkl : numpy.ndarray
        (m, 3) Miller indices.
    g : numpy.ndarray
        (m, 3) reciprocal vectors in the crystal frame, 1/Å.
    prefactor : numpy.ndarray
        (m,) (lambda gamma |F| / V_c)^2 in 1/Å^2: I = prefactor * t^2 sinc^2(s t).
    """

    hkl: np.ndarray
    g: np.ndarray
    prefactor: np.ndarray

    @classmethod
    def of(cls, crystal: Crystal, optics: Optics) -> Reflections:
        hkl, g, F = crystal.reflections(optics.g_max)
        prefactor = (optics.wavelength * optics.gamma * np.abs(F) / crystal.volume) ** 2
        return cls(hkl, g, prefactor)

    def in_lab(self, rotation, optics: Optics):
        """Detector positions (m, 2) in pixels (row, col) and excitation errors (m,) for a rotation."""
        g_lab = self.g @ np.asarray(rotation).T
        K = 1.0 / optics.wavelength
        s = -g_lab[:, 2] - np.einsum("ij,ij->i", g_lab, g_lab) / (2.0 * K)
        oy, ox = optics.origin
        centres = np.stack([oy + g_lab[:, 1] / optics.q_pixel, ox + g_lab[:, 0] / optics.q_pixel], axis=1)
        return centres, s


def kinematic_intensity(prefactor, s, t) -> np.ndarray:
    """prefactor * t^2 sinc^2(pi s t) = prefactor * sin^2(pi s t) / (pi s)^2, broadcast over the inputs."""
    t = np.asarray(t, dtype=np.float64)
    return np.asarray(prefactor) * t**2 * np.sinc(np.asarray(s) * t) ** 2


def disk_stencils(centres, radius: float, blur: float):
    """Blurred, anti-aliased disks of unit total intensity at sub-pixel centres.

    Parameters
    ----------
    centres : array_like
        (m, 2) disk centres (row, col) in pixels.
    radius : float
        Disk radius in pixels.
    blur : float
        Gaussian standard deviation in pixels.

    Returns
    -------
    stencils : numpy.ndarray
        (m, n, n) float32, each summing to 1.
    corners : numpy.ndarray
        (m, 2) int detector (row, col) of each stencil's first pixel.
    """
    centres = np.atleast_2d(np.asarray(centres, dtype=np.float64))
    half = int(math.ceil(radius + 4 * blur + 1.5))
    base = np.floor(centres + 0.5).astype(np.int64)
    corners = base - half
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    dy = offsets[None, :, None] - (centres[:, 0] - base[:, 0])[:, None, None]
    dx = offsets[None, None, :] - (centres[:, 1] - base[:, 1])[:, None, None]
    r = np.sqrt(dy**2 + dx**2)
    # anti-aliased edge: 1 inside, linear over one pixel across the rim
    disk = np.clip(radius + 0.5 - r, 0.0, 1.0)
    if radius < 0.5:  # a disk smaller than a pixel: keep its area on the nearest pixels
        disk = np.clip(1.0 - r, 0.0, 1.0)
    if blur > 0:
        disk = ndimage.gaussian_filter(disk, sigma=(0, blur, blur), mode="constant", truncate=4.0)
    disk /= disk.sum(axis=(1, 2), keepdims=True)
    return disk.astype(np.float32), corners


def clip_slices(corners, size: int, det_shape):
    """Detector and stencil slices of each stencil, clipped to the detector (None if off it)."""
    qy, qx = det_shape
    out = []
    for cy, cx in np.asarray(corners):
        y0, x0 = max(cy, 0), max(cx, 0)
        y1, x1 = min(cy + size, qy), min(cx + size, qx)
        if y1 <= y0 or x1 <= x0:
            out.append(None)
        else:
            out.append((slice(y0, y1), slice(x0, x1), slice(y0 - cy, y1 - cy), slice(x0 - cx, x1 - cx)))
    return out


def amorphous_image(optics: Optics) -> np.ndarray:
    """Per-pixel fraction of the beam scattered by 1 Å of amorphous carbon, detector-blurred (float64)."""
    qy, qx = optics.det_shape
    oy, ox = optics.origin
    yy, xx = np.meshgrid(np.arange(qy) - oy, np.arange(qx) - ox, indexing="ij")
    q = np.hypot(yy, xx) * optics.q_pixel
    image = amorphous_intensity(q, optics.beam_energy, optics.wavelength) * optics.q_pixel**2
    if optics.detector_blur > 0:
        image = ndimage.gaussian_filter(image, optics.detector_blur, mode="constant")
    return image


def diffraction_pattern(
    crystal: Crystal,
    rotation,
    thickness: float,
    optics: Optics | None = None,
    *,
    central_beam: bool = True,
    max_scattered: float = 0.9,
) -> np.ndarray:
    """Noise-free kinematic pattern of one grain (fractions of the incident beam).

    Parameters
    ----------
    crystal : Crystal
    rotation : array_like
        (3, 3) crystal -> lab rotation (beam along lab +z), e.g. from
        :func:`stemnmf.simulate.zone_axis_rotation`.
    thickness : float
        Path length of the beam through the grain, Å.
    optics : Optics, optional
        Beam and detector (default 300 keV, 1.05 mrad, 256 x 256 pixels of 0.01 1/Å).
    central_beam : bool, default True
        Include the transmitted beam (1 - scattered fraction).
    max_scattered : float, default 0.9
        When the kinematic intensities add up to more than this (thick grains
        on a zone axis), they are scaled down to it, as in :func:`simulate`.

    Returns
    -------
    numpy.ndarray
        (qy, qx) float32.
    """
    optics = optics or Optics()
    reflections = Reflections.of(crystal, optics)
    centres, s = reflections.in_lab(rotation, optics)
    intensity = kinematic_intensity(reflections.prefactor, s, thickness)
    total = float(intensity.sum())
    if total > max_scattered:
        intensity = intensity * (max_scattered / total)
    pattern = np.zeros(optics.det_shape, np.float64)
    stencils, corners = disk_stencils(centres, optics.disk_radius, optics.detector_blur)
    for value, stencil, where in zip(intensity, stencils, clip_slices(corners, stencils.shape[1], optics.det_shape)):
        if where is not None:
            pattern[where[0], where[1]] += value * stencil[where[2], where[3]]
    if central_beam:
        stencil, corner = disk_stencils([optics.origin], optics.disk_radius, optics.detector_blur)
        where = clip_slices(corner, stencil.shape[1], optics.det_shape)[0]
        pattern[where[0], where[1]] += max(0.0, 1.0 - float(intensity.sum())) * stencil[0][where[2], where[3]]
    return pattern.astype(np.float32)
