"""The instrument between the ideal diffraction patterns and the stored counts.

The kinematic model of :mod:`stemnmf.simulate.render` gives the expected
counts of an ideal detector: the direct beam on the centre pixel at every
position, round rings, no beam stop. :class:`InstrumentParameters` describes
what a real microscope and detector add, applied in this order to each
pattern of expected counts:

1. **geometry**: the pattern moves with the descan (linear and quadratic in
   the scan position, plus random jitter per position) and a fixed offset,
   and is distorted about the beam by an ellipse (axis ratio, angle) and a
   rotation of the detector relative to the scan (bilinear resampling);
2. **beam stop** (fixed on the detector): a disk, or a disk with an arm to the
   detector edge, with a Gaussian penumbra and a leak (transmitted fraction);
3. **Poisson noise** of the electrons (when the scan has noise);
4. **gain**: a smooth multiplicative field (rms ``gain_rms``);
5. **read noise** (Gaussian per frame) and a fixed **dark offset** per pixel
   (zero mean, so dark-subtracted values go negative);
6. **hot pixels** (a constant added to every frame) and **dead pixels** (0);
7. **saturation** (values clipped);
8. **binning** (sums of ``bin`` x ``bin`` pixels).

Every random choice (jitter, gain field, dark offset, hot and dead pixels)
comes from one stream of the seed, drawn once for the whole scan; the noise of
each scan row from a stream of (seed, row). A row is therefore the same
whatever the row blocks or threads.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import h5py
import numpy as np
from scipy import ndimage, special

from stemnmf.errors import ConfigError, InputError
from stemnmf.simulate.render import poisson_counts

__all__ = [
    "InstrumentParameters",
    "InstrumentModel",
    "INSTRUMENT_PRESETS",
    "instrument_preset",
    "build_instrument",
    "load_instrument_truth",
    "beam_stop_transmission",
    "translate_patterns",
]

#: spawn_key tag of the instrument's random stream (after sample 0, orientations 1, noise 2).
INSTRUMENT_STREAM = 3
#: spawn_key tag of the per-row noise when the instrument draws it.
INSTRUMENT_NOISE_STREAM = 2

#: Lengths of the presets are in pixels of a 256-pixel detector and scale with the detector size.
_PRESET_DETECTOR = 256
_LENGTHS = (
    "descan", "descan_quadratic", "descan_jitter", "beam_stop_radius", "beam_stop_width",
    "beam_stop_penumbra", "gain_length",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class InstrumentParameters:
    """Distortions of the microscope and detector (all off by default).

    Lengths are in pixels of the simulated (unbinned) detector, angles in
    degrees from +qx towards +qy, counts in electrons x gain.

    Attributes
    ----------
    descan : float
        Linear descan: the beam moves by this many px from one edge of the
        scan to the other, along ``descan_angle`` for the scan columns and
        90 degrees further for the scan rows.
    descan_quadratic : float
        Quadratic descan: the beam moves by up to this many px at the scan
        edges (qy with the row, qx with the column, zero at the centre).
    descan_angle : float
        Direction of the linear descan of the scan columns.
    descan_jitter : float
        Random shift per position, px rms in each coordinate.
    origin_offset : (float, float)
        Mean beam position relative to the centre pixel (qy, qx), px.
    ellipse_ratio : float
        Axis ratio a/b of the elliptical distortion (area kept).
    ellipse_angle : float
        Direction of the long axis ``a``.
    detector_rotation : float
        Rotation of the pattern relative to the scan.
    beam_stop : {'none', 'disk', 'arm'}
    beam_stop_radius : float
        Radius of the disk (or of the round tip of the arm), px.
    beam_stop_width : float
        Width of the arm, px.
    beam_stop_angle : float
        Direction of the arm from the tip to the detector edge.
    beam_stop_offset : (float, float)
        Centre of the stop relative to the centre pixel, px.
    beam_stop_penumbra : float
        Gaussian edge of the shadow, standard deviation in px.
    beam_stop_leak : float
        Fraction of the intensity that passes the stop.
    gain_rms : float
        Relative rms of the smooth gain field (mean 1).
    gain_length : float
        Correlation length of the gain field (Gaussian filter sigma), px.
    hot_pixels, dead_pixels : int
        Number of hot pixels (``hot_pixel_level`` counts added to every
        frame) and of dead pixels (always 0).
    hot_pixel_level : float
        Counts a hot pixel adds to every frame.
    dark_offset : float
        Fixed offset per pixel left after dark subtraction, rms counts
        (zero mean: some pixels are negative).
    read_noise : float
        Gaussian read noise per pixel and frame, rms counts.
    saturation : float or None
        Values above it are clipped to it.
    bin : int
        Sum ``bin`` x ``bin`` detector pixels.
    """

    descan: float = 0.0
    descan_quadratic: float = 0.0
    descan_angle: float = 30.0
    descan_jitter: float = 0.0
    origin_offset: tuple[float, float] = (0.0, 0.0)
    ellipse_ratio: float = 1.0
    ellipse_angle: float = 0.0
    detector_rotation: float = 0.0
    beam_stop: str = "none"
    beam_stop_radius: float = 8.0
    beam_stop_width: float = 8.0
    beam_stop_angle: float = -60.0
    beam_stop_offset: tuple[float, float] = (0.0, 0.0)
    beam_stop_penumbra: float = 1.5
    beam_stop_leak: float = 0.001
    gain_rms: float = 0.0
    gain_length: float = 24.0
    hot_pixels: int = 0
    dead_pixels: int = 0
    hot_pixel_level: float = 100.0
    dark_offset: float = 0.0
    read_noise: float = 0.0
    saturation: float | None = None
    bin: int = 1

    @property
    def geometric(self) -> bool:
        """True when patterns are moved or distorted."""
        return bool(
            self.descan or self.descan_quadratic or self.descan_jitter or any(self.origin_offset)
            or self.ellipse_ratio != 1.0 or self.detector_rotation
        )  # fmt: skip

    @property
    def active(self) -> bool:
        """True when the instrument changes anything."""
        return self != InstrumentParameters()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FIELDS = frozenset(f.name for f in dataclasses.fields(InstrumentParameters))

#: Named instruments; lengths in pixels of a 256-pixel detector (scaled to the detector used).
INSTRUMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # the example of issue 17: descan 5 px + 0.2 px jitter, ellipse 1.04 at 25 deg, a beam-stop arm over the
    # direct beam (1.5 px penumbra, 0.1 % leak), 10 % rms smooth gain, 25 hot pixels
    "realistic": dict(
        descan=5.0,
        descan_jitter=0.2,
        ellipse_ratio=1.04,
        ellipse_angle=25.0,
        beam_stop="arm",
        beam_stop_radius=10.0,
        beam_stop_width=10.0,
        beam_stop_penumbra=1.5,
        beam_stop_leak=0.001,
        gain_rms=0.1,
        gain_length=24.0,
        hot_pixels=25,
    ),
}


def _number(name, value, *, low=0.0, strict=False):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a number")
    if value < low or (strict and value == low):
        raise ConfigError(f"{name}={value!r} must be {'above' if strict else 'at least'} {low:g}")
    return value


def check_instrument(p: InstrumentParameters, det_shape) -> None:
    """Raise ConfigError for an impossible instrument."""
    for name in ("descan_angle", "ellipse_angle", "detector_rotation", "beam_stop_angle", "descan", "descan_quadratic"):
        _number(name, getattr(p, name), low=-math.inf)
    for name in ("descan_jitter", "beam_stop_radius", "beam_stop_width", "beam_stop_penumbra", "gain_rms",
                 "hot_pixel_level", "dark_offset", "read_noise"):  # fmt: skip
        _number(name, getattr(p, name))
    _number("gain_length", p.gain_length, strict=True)
    _number("ellipse_ratio", p.ellipse_ratio, low=1.0)
    if p.ellipse_ratio > 2:
        raise ConfigError(f"ellipse_ratio={p.ellipse_ratio} is too large", "use 1 <= ellipse_ratio <= 2")
    if not 0 <= _number("beam_stop_leak", p.beam_stop_leak) <= 1:
        raise ConfigError(f"beam_stop_leak={p.beam_stop_leak} must be a fraction between 0 and 1")
    if p.beam_stop not in ("none", "disk", "arm"):
        raise ConfigError(f"beam_stop={p.beam_stop!r} is unknown", "use 'none', 'disk' or 'arm'")
    if p.saturation is not None:
        _number("saturation", p.saturation, strict=True)
    for name in ("origin_offset", "beam_stop_offset"):
        value = getattr(p, name)
        if len(value) != 2:
            raise ConfigError(f"{name}={value!r} must be two numbers (qy, qx)")
        for v in value:
            _number(name, v, low=-math.inf)
    qy, qx = det_shape
    for name in ("hot_pixels", "dead_pixels", "bin"):
        value = getattr(p, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "bin" else 0):
            raise ConfigError(f"{name}={value!r} must be a {'positive' if name == 'bin' else 'non-negative'} integer")
    if p.hot_pixels + p.dead_pixels > qy * qx // 10:
        raise ConfigError(f"{p.hot_pixels + p.dead_pixels} hot and dead pixels are too many for a {qy} x {qx} detector")
    if p.bin > min(qy, qx):
        raise ConfigError(f"bin={p.bin} is larger than the {qy} x {qx} detector", "use a smaller bin")


def instrument_preset(name: str, det_shape=(256, 256)) -> dict[str, Any]:
    """The parameters of a named instrument for a detector, lengths scaled from 256 px."""
    if name not in INSTRUMENT_PRESETS:
        raise ConfigError(f"unknown instrument {name!r}", f"choose one of {', '.join(INSTRUMENT_PRESETS)}")
    values = dict(INSTRUMENT_PRESETS[name])
    scale = min(det_shape) / _PRESET_DETECTOR
    for key in _LENGTHS:
        if key in values:
            values[key] = float(values[key]) * scale
    return values


def make_instrument(values) -> InstrumentParameters:
    """An InstrumentParameters from a dict (lists become tuples, integral floats of counts become int)."""
    values = dict(values)
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown instrument parameter(s) {', '.join(unknown)}", f"known: {', '.join(sorted(FIELDS))}")
    for key in ("origin_offset", "beam_stop_offset"):
        if key in values and not isinstance(values[key], tuple):
            try:
                values[key] = tuple(float(v) for v in values[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{key}={values[key]!r} must be two numbers (qy, qx)") from None
    for key in ("hot_pixels", "dead_pixels", "bin"):
        if isinstance(values.get(key), float) and values[key].is_integer():
            values[key] = int(values[key])
    return InstrumentParameters(**values)


# -- the fixed fields of an instrument ----------------------------------------------------------


def _rotation(degrees: float) -> np.ndarray:
    """2 x 2 rotation in (qy, qx) coordinates by an angle from +qx towards +qy."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    # (qx, qy) -> (c qx - s qy, s qx + c qy), written for (qy, qx) vectors
    return np.array([[c, s], [-s, c]])


def distortion_matrix(p: InstrumentParameters) -> np.ndarray:
    """2 x 2 matrix taking ideal (qy, qx) offsets from the beam to detector offsets: ellipse after rotation."""
    root = math.sqrt(p.ellipse_ratio)
    # (qy, qx) components: the a axis is the direction (sin, cos) of ellipse_angle
    axis_a = np.array([math.sin(math.radians(p.ellipse_angle)), math.cos(math.radians(p.ellipse_angle))])
    axis_b = np.array([axis_a[1], -axis_a[0]])
    stretch = root * np.outer(axis_a, axis_a) + np.outer(axis_b, axis_b) / root
    return stretch @ _rotation(p.detector_rotation)


def descan_shifts(p: InstrumentParameters, scan_shape, rng: np.random.Generator) -> np.ndarray:
    """(sy, sx, 2) beam position relative to the centre pixel, px (qy, qx)."""
    sy, sx = scan_shape
    ty = (np.arange(sy) / max(sy - 1, 1) - 0.5)[:, None]
    tx = (np.arange(sx) / max(sx - 1, 1) - 0.5)[None, :]
    a = math.radians(p.descan_angle)
    along_x = np.array([math.sin(a), math.cos(a)])  # (qy, qx) direction of the column descan
    along_y = np.array([along_x[1], -along_x[0]])  # 90 degrees further
    shifts = p.descan * (tx[..., None] * along_x + ty[..., None] * along_y)
    shifts = shifts + np.zeros((sy, sx, 2))
    shifts[..., 0] += 4.0 * p.descan_quadratic * np.broadcast_to(ty**2, (sy, sx))
    shifts[..., 1] += 4.0 * p.descan_quadratic * np.broadcast_to(tx**2, (sy, sx))
    shifts += np.asarray(p.origin_offset, dtype=np.float64)
    jitter = rng.standard_normal((sy, sx, 2))
    if p.descan_jitter:
        shifts += p.descan_jitter * jitter
    return shifts


def beam_stop_transmission(p: InstrumentParameters, det_shape, centre) -> np.ndarray:
    """(qy, qx) fraction of the intensity that reaches each pixel past the beam stop."""
    qy, qx = det_shape
    if p.beam_stop == "none":
        return np.ones(det_shape, np.float32)
    cy, cx = centre[0] + p.beam_stop_offset[0], centre[1] + p.beam_stop_offset[1]
    yy, xx = np.meshgrid(np.arange(qy) - cy, np.arange(qx) - cx, indexing="ij")
    inside = p.beam_stop_radius - np.hypot(yy, xx)  # signed distance, positive inside the disk
    if p.beam_stop == "arm":
        a = math.radians(p.beam_stop_angle)
        along = xx * math.cos(a) + yy * math.sin(a)
        across = np.abs(-xx * math.sin(a) + yy * math.cos(a))
        arm = np.where(along > 0, p.beam_stop_width / 2.0 - across, -np.inf)
        inside = np.maximum(inside, arm)
    if p.beam_stop_penumbra > 0:
        blocked = 0.5 * (1.0 + special.erf(inside / (math.sqrt(2.0) * p.beam_stop_penumbra)))
    else:
        blocked = (inside >= 0).astype(np.float64)
    return (1.0 - (1.0 - p.beam_stop_leak) * blocked).astype(np.float32)


def gain_field(p: InstrumentParameters, det_shape, rng: np.random.Generator) -> np.ndarray:
    """(qy, qx) smooth gain of mean 1 and relative rms ``gain_rms`` (at least 0.05)."""
    noise = rng.standard_normal(det_shape)
    if not p.gain_rms:
        return np.ones(det_shape, np.float32)
    smooth = ndimage.gaussian_filter(noise, p.gain_length, mode="wrap")
    smooth -= smooth.mean()
    smooth *= p.gain_rms / max(float(smooth.std()), 1e-30)
    return np.clip(1.0 + smooth, 0.05, None).astype(np.float32)


def _pick_pixels(rng, det_shape, n_hot, n_dead):
    qy, qx = det_shape
    chosen = rng.permutation(qy * qx)[: n_hot + n_dead]
    hot = np.zeros(qy * qx, bool)
    dead = np.zeros(qy * qx, bool)
    hot[chosen[:n_hot]] = True
    dead[chosen[n_hot:]] = True
    return hot.reshape(det_shape), dead.reshape(det_shape)


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    *lead, qy, qx = image.shape
    ny, nx = qy // factor, qx // factor
    cut = image[..., : ny * factor, : nx * factor]
    return cut.reshape(*lead, ny, factor, nx, factor).sum(axis=(-3, -1))


def _shift_whole(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by whole pixels (+qy, +qx), zero where nothing comes in."""
    out = np.zeros_like(image)
    qy, qx = image.shape
    if abs(dy) >= qy or abs(dx) >= qx:
        return out
    out[max(dy, 0) : qy + min(dy, 0), max(dx, 0) : qx + min(dx, 0)] = image[
        max(-dy, 0) : qy + min(-dy, 0), max(-dx, 0) : qx + min(-dx, 0)
    ]
    return out


def translate_patterns(patterns: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Patterns moved by sub-pixel shifts, blurred far less than by bilinear interpolation.

    Each shift is split into whole pixels (rounded) and a remainder of at most
    half a pixel. The remainder is a cubic-spline shift (prefiltered, the
    detector's edge pixels continued outwards): on a disk of the simulator it
    adds at most ~0.03 px^2 to the second moment per axis, against
    ``f (1 - f)`` (up to 0.25 px^2, as much as the detector blur of 0.5 px)
    for bilinear interpolation. A Fourier shift would add none on band-limited
    patterns, but the simulator's anti-aliased disks are not band-limited: it
    rings over the whole pattern. The whole pixels are an exact array shift,
    zero where nothing comes in. The spline's small undershoot is clipped at 0.

    Parameters
    ----------
    patterns : numpy.ndarray
        (n, qy, qx) float patterns.
    shifts : numpy.ndarray
        (n, 2) moves in px (+qy, +qx).

    Returns
    -------
    numpy.ndarray
        (n, qy, qx), the dtype of ``patterns``.
    """
    n = patterns.shape[0]
    shifts = np.asarray(shifts, dtype=np.float64).reshape(n, 2)
    whole = np.floor(shifts + 0.5)
    part = shifts - whole
    out = np.empty_like(patterns)
    for j in range(n):
        moved = patterns[j]
        if part[j].any():
            moved = ndimage.shift(moved.astype(np.float64), part[j], order=3, mode="nearest")
            moved = np.clip(moved, 0.0, None).astype(patterns.dtype)
        out[j] = _shift_whole(moved, int(whole[j, 0]), int(whole[j, 1]))
    return out


@dataclasses.dataclass(eq=False)
class InstrumentModel:
    """An ideal-pattern model seen through an instrument; draws rows like the model it wraps.

    Attributes
    ----------
    ideal : SimulationModel
        The kinematic model, without noise (expected counts).
    params : InstrumentParameters
    noise : bool
        Poisson noise (and read noise) on the counts.
    seed : int
    shifts : numpy.ndarray
        (sy, sx, 2) beam position relative to the centre pixel, px (unbinned).
    centre : (float, float)
        The centre pixel (where the ideal beam lies).
    matrix : numpy.ndarray
        (2, 2) ideal -> detector distortion about the beam.
    transmission, gain, dark : numpy.ndarray
        (qy, qx) beam stop, gain field and dark offset (unbinned).
    hot, dead : numpy.ndarray
        (qy, qx) bool.
    """

    ideal: Any
    params: InstrumentParameters
    noise: bool
    seed: int
    shifts: np.ndarray
    centre: tuple[float, float]
    matrix: np.ndarray
    transmission: np.ndarray
    gain: np.ndarray
    dark: np.ndarray
    hot: np.ndarray
    dead: np.ndarray

    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.ideal.scan_shape

    @property
    def det_shape(self) -> tuple[int, int]:
        qy, qx = self.ideal.det_shape
        return qy // self.params.bin, qx // self.params.bin

    def __dask_tokenize__(self):
        return ("stemnmf.simulate.InstrumentModel", self.ideal.token, repr(self.params), self.noise)

    def _warp(self, row: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """Patterns (sx, qy, qx) of one scan row distorted about the centre, then moved by ``shifts``.

        The distortion (ellipse, rotation) is the same at every position: bilinear
        resampling on the same coordinates for every pattern (skipped when the
        matrix is the identity). The move is :func:`translate_patterns`: a real
        descan moves the continuous pattern before the pixels integrate it, so it
        adds no blur; the spline adds ~10x less than a bilinear move, which by a
        fraction ``f`` of a pixel blurs each pattern by a variance ``f (1 - f)``
        px^2 that changes with the position.
        Distorting about the centre and then moving is the same map as distorting
        about the moved beam.
        """
        if not np.array_equal(self.matrix, np.eye(2)):
            qy, qx = row.shape[1:]
            centre = np.asarray(self.centre)[:, None]
            grid = np.indices((qy, qx), dtype=np.float64).reshape(2, -1)
            source = np.linalg.inv(self.matrix) @ (grid - centre) + centre
            row = np.stack([
                ndimage.map_coordinates(pattern, source, order=1, mode="constant", cval=0.0).reshape(qy, qx)
                for pattern in row
            ])  # fmt: skip
        return translate_patterns(row, shifts)

    def render(self, start: int, stop: int) -> np.ndarray:
        """Scan rows ``start:stop`` as float32 (rows, sx, qy, qx) counts, binned."""
        expected = self.ideal.render(start, stop)
        p = self.params
        out = np.empty((stop - start, self.scan_shape[1], *self.det_shape), np.float32)
        for i, row in enumerate(range(start, stop)):
            counts = expected[i]
            if p.geometric:
                counts = self._warp(counts, self.shifts[row])
            counts = counts * self.transmission
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(INSTRUMENT_NOISE_STREAM, row)))
            if self.noise:
                counts = poisson_counts(np.clip(counts, 0.0, None), rng)
            counts *= self.gain
            if self.noise and p.read_noise:
                counts += np.float32(p.read_noise) * rng.standard_normal(counts.shape, dtype=np.float32)
            counts += self.dark
            counts[:, self.hot] += np.float32(p.hot_pixel_level)
            counts[:, self.dead] = 0.0
            if p.saturation is not None:
                np.minimum(counts, np.float32(p.saturation), out=counts)
            out[i] = _bin(counts, p.bin)
        return out

    def truth(self) -> dict[str, np.ndarray]:
        """Arrays stored under ``/truth/instrument/`` (on the binned detector)."""
        f = self.params.bin
        origin = (np.asarray(self.centre) + self.shifts - (f - 1) / 2.0) / f
        a = math.radians(self.params.ellipse_angle)
        angle = math.atan2(math.sin(a), math.cos(a))
        if angle <= -math.pi / 2:
            angle += math.pi
        elif angle > math.pi / 2:
            angle -= math.pi
        blocked = self.transmission < 0.5
        mask = _bin((blocked | self.hot | self.dead).astype(np.int32), f) > 0
        return {
            "instrument/origin": origin.astype(np.float32),
            "instrument/ellipse": np.array([self.params.ellipse_ratio, angle], np.float64),
            "instrument/detector_rotation": np.float64(math.radians(self.params.detector_rotation)),
            "instrument/gain": (_bin(self.gain, f) / f**2).astype(np.float32),
            "instrument/transmission": (_bin(self.transmission, f) / f**2).astype(np.float32),
            "instrument/beam_stop": _bin(blocked.astype(np.int32), f).astype(bool).astype(np.uint8),
            "instrument/mask": mask.astype(np.uint8),
            "instrument/hot_pixels": np.argwhere(self.hot).astype(np.int32).reshape(-1, 2),
            "instrument/dead_pixels": np.argwhere(self.dead).astype(np.int32).reshape(-1, 2),
        }


def build_instrument(ideal, params: InstrumentParameters, *, noise: bool, seed: int, centre) -> InstrumentModel:
    """Draw the fixed fields of an instrument (one random stream of the seed) around a noise-free model."""
    check_instrument(params, ideal.det_shape)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(INSTRUMENT_STREAM,)))
    det = tuple(ideal.det_shape)
    shifts = descan_shifts(params, ideal.scan_shape, rng)
    gain = gain_field(params, det, rng)
    dark_draw = rng.standard_normal(det)
    dark = (params.dark_offset * dark_draw).astype(np.float32)
    hot, dead = _pick_pixels(rng, det, params.hot_pixels, params.dead_pixels)
    beam = (float(centre[0]), float(centre[1]))
    return InstrumentModel(
        ideal=ideal,
        params=params,
        noise=bool(noise),
        seed=int(seed),
        shifts=shifts,
        centre=beam,
        matrix=distortion_matrix(params),
        transmission=beam_stop_transmission(params, det, beam),
        gain=gain,
        dark=dark,
        hot=hot,
        dead=dead,
    )


def load_instrument_truth(path) -> dict[str, np.ndarray]:
    """The instrument's truth of a simulated scan file (``/truth/instrument/*``), by name.

    Raises
    ------
    InputError
        If the file holds no instrument truth.
    """
    with h5py.File(path, "r") as h5:
        if "truth/instrument" not in h5:
            raise InputError(f"{path} holds no instrument truth (/truth/instrument)", "simulate it with --instrument")
        group = h5["truth/instrument"]
        return {name: group[name][()] for name in group}
