"""The direct beam in every pattern, measured two ways (see :mod:`stemnmf.calibrate.origin`).

``'com'``
    Centre of mass of the direct beam: the brightest blob (a box filter the
    size of the probe, searched near the mean beam position) is located, then
    the centre of mass of the background-subtracted intensity inside a disk of
    1.5 probe radii + 2 px around it is taken, three times, each time about
    the previous estimate.
``'xcorr'``
    Cross-correlation with a probe template (given, or the radially averaged
    direct beam of the mean pattern), refined to ``1 / upsample`` px with a
    matrix-multiply DFT around the peak (Guizar-Sicairos et al., Opt. Lett. 33
    (2008) 156) and a parabola through the finest samples.

Patterns without a direct beam (beam intensity below ``min_beam_fraction`` of
the scan's median) get NaN.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from stemnmf.calibrate.common import as_stack, check_mask, pattern_statistics
from stemnmf.calibrate.shift import _BATCH, shifted_sum
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError

__all__ = [
    "ProbeEstimate",
    "OriginMeasurement",
    "estimate_probe",
    "probe_template",
    "com_origins",
    "xcorr_origins",
    "measure_origins",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ProbeEstimate:
    """The direct beam of one (mean) pattern.

    Attributes
    ----------
    center : tuple of float
        (qy, qx) in pixels.
    radius : float
        Radius of the bright disk (pixels above half the peak), in pixels.
    contrast : float
        Peak height above the pattern's median, in noise standard deviations.
    """

    center: tuple[float, float]
    radius: float
    contrast: float


def _robust_sigma(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


def estimate_probe(image, *, mask=None, min_contrast: float = 5.0) -> ProbeEstimate:
    """Locate the direct beam of a pattern (normally the mean pattern).

    The brightest blob after a 3 x 3 box filter is taken; its radius is that of
    the connected pixels above half its height over the median, its centre the
    centre of mass of those pixels' excess intensity.

    Raises
    ------
    CalibrationError
        If no blob stands ``min_contrast`` noise standard deviations above the
        median (no direct beam).
    """
    image = np.asarray(image, dtype=np.float64)
    mask = check_mask(mask, image.shape)
    work = np.where(mask, np.nan, image)
    base = float(np.nanmedian(work))
    noise = _robust_sigma(work)
    smooth = ndimage.uniform_filter(np.where(mask, base, image), size=3, mode="nearest")
    smooth[mask] = -np.inf
    peak_index = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    height = float(smooth[peak_index]) - base
    scale = max(noise, 1e-6 * max(abs(float(np.nanmax(work))), 1e-30))
    contrast = height / scale if scale > 0 else 0.0
    if not np.isfinite(height) or height <= 0 or contrast < min_contrast:
        raise CalibrationError(
            f"no direct beam found: the brightest spot is only {contrast:.1f} noise levels above the median",
            "check the data, give origin=None, or pass a probe template",
        )
    bright = (work - base) > 0.5 * height
    labels, _ = ndimage.label(np.nan_to_num(bright, nan=0).astype(bool))
    region = labels == labels[peak_index]
    if not region.any():
        region = np.zeros_like(bright, dtype=bool)
        region[peak_index] = True
    weights = np.where(region, work - base, 0.0)
    yy, xx = np.indices(image.shape)
    total = weights.sum()
    if total > 0:
        center = (float((weights * yy).sum() / total), float((weights * xx).sum() / total))
    else:  # a flat peak region: its brightest pixel
        center = (float(peak_index[0]), float(peak_index[1]))
    radius = float(np.sqrt(region.sum() / np.pi))
    return ProbeEstimate(center, max(radius, 0.5), float(contrast))


def probe_template(image, center, radius: float, *, mask=None) -> np.ndarray:
    """A rotationally symmetric probe template centred exactly at ``center``.

    The radial profile of ``image`` about ``center`` (0.5 px bins) minus the
    median of the pattern, cut at ``1.5 * radius + 2`` px.

    Returns
    -------
    numpy.ndarray
        (qy, qx) float32, non-negative, zero outside the cut.
    """
    image = np.asarray(image, dtype=np.float64)
    mask = check_mask(mask, image.shape)
    base = float(np.median(image[~mask]))
    yy, xx = np.indices(image.shape)
    r = np.hypot(yy - center[0], xx - center[1])
    cut = 1.5 * radius + 2.0
    use = (~mask) & (r <= cut + 1)
    bins = np.floor(r[use] / 0.5).astype(int)
    sums = np.bincount(bins, weights=image[use] - base)
    counts = np.bincount(bins)
    prof = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    centres = (np.arange(prof.size) + 0.5) * 0.5
    ok = counts > 0
    template = np.interp(r, centres[ok], prof[ok], right=0.0)
    template[r > cut] = 0.0
    return np.clip(template, 0, None).astype(np.float32)


# -- centre of mass ----------------------------------------------------------------------


def _brightest_blob(work, *, radius, guess, search_radius):
    """(cy, cx) of the brightest probe-sized blob of every pattern, searched near ``guess``."""
    n, qy, qx = work.shape
    size = max(3, int(round(radius)) | 1)
    if guess is not None:
        search_radius = float(search_radius if search_radius is not None else max(4.0 * radius, 8.0))
        reach = int(np.ceil(search_radius)) + size
        y0, y1 = max(0, int(np.floor(guess[0])) - reach), min(qy, int(np.ceil(guess[0])) + reach + 1)
        x0, x1 = max(0, int(np.floor(guess[1])) - reach), min(qx, int(np.ceil(guess[1])) + reach + 1)
    else:
        y0, y1, x0, x1 = 0, qy, 0, qx
    smooth = ndimage.uniform_filter(work[:, y0:y1, x0:x1], size=(1, size, size), mode="constant")
    if guess is not None:
        yy, xx = np.indices((y1 - y0, x1 - x0))
        outside = np.hypot(yy + y0 - guess[0], xx + x0 - guess[1]) > search_radius
        smooth[:, outside] = -np.inf
    width = x1 - x0
    flat_peak = np.argmax(smooth.reshape(n, -1), axis=1)
    cy = (flat_peak // width + y0).astype(np.float64)
    cx = (flat_peak % width + x0).astype(np.float64)
    return cy, cx


def _beam_centre_of_mass(work, mask, cy, cx, *, radius, n_iter):
    """Centre of mass of the beam's own pixels (above half its height, grown by one pixel), ``n_iter`` times.

    Returns (cy, cx, beam, halves): ``halves`` (n, 2) is the centre of mass of the final weights on the
    pixels with an even ``row + column`` minus that on the odd ones (NaN where a half is empty).
    """
    n, qy, qx = work.shape
    window = 1.5 * radius + 2.0
    half = int(np.ceil(window)) + 2
    offsets = np.arange(-half, half + 1)
    index = np.arange(n)[:, None, None]
    grow = np.ones((1, 3, 3), dtype=bool)
    ring2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    corner_sel = ring2 > window**2
    core_sel = ring2 <= max(0.5 * radius, 1.0) ** 2
    beam = np.zeros(n)
    background = None
    for _ in range(max(1, int(n_iter))):
        iy = np.rint(cy).astype(np.int64)
        ix = np.rint(cx).astype(np.int64)
        ry = iy[:, None] + offsets[None, :]
        rx = ix[:, None] + offsets[None, :]
        valid = ((ry >= 0) & (ry < qy))[:, :, None] & ((rx >= 0) & (rx < qx))[:, None, :]
        rows = np.clip(ry, 0, qy - 1)
        cols = np.clip(rx, 0, qx - 1)
        valid &= ~mask[rows[:, :, None], cols[:, None, :]]
        patch = work[index, rows[:, :, None], cols[:, None, :]].astype(np.float64)
        d2 = (ry[:, :, None] - cy[:, None, None]) ** 2 + (rx[:, None, :] - cx[:, None, None]) ** 2
        inside = (d2 <= window**2) & valid
        if background is None:
            # local background: median of the patch's corners (outside the window)
            background = _row_median(patch[:, corner_sel], valid[:, corner_sel])
        height = _row_median(patch[:, core_sel], valid[:, core_sel]) - background
        excess = patch - background[:, None, None]
        own = ndimage.binary_dilation(excess > 0.5 * height[:, None, None], structure=grow) & inside
        weights = np.where(own & (height > 0)[:, None, None], np.clip(excess, 0, None), 0.0)
        beam = weights.sum(axis=(1, 2))
        ok = beam > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            new_y = (weights.sum(axis=2) * ry).sum(axis=1) / beam
            new_x = (weights.sum(axis=1) * rx).sum(axis=1) / beam
        cy = np.where(ok, new_y, cy)
        cx = np.where(ok, new_x, cx)
    return cy, cx, beam, _checkerboard_halves(weights, ry, rx)


def _checkerboard_halves(weights, ry, rx):
    """(n, 2) centre of mass of ``weights`` on the even pixels (row + column even) minus that on the odd ones."""
    even = ((ry[:, :, None] + rx[:, None, :]) % 2) == 0
    centres = []
    for part in (np.where(even, weights, 0.0), np.where(even, 0.0, weights)):
        total = part.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            centres.append(np.stack([(part.sum(axis=2) * ry).sum(axis=1) / total,
                                     (part.sum(axis=1) * rx).sum(axis=1) / total], axis=1))
    return centres[0] - centres[1]


def com_origins(
    patterns,
    *,
    radius: float,
    guess=None,
    search_radius: float | None = None,
    mask=None,
    n_iter: int = 3,
    return_halves: bool = False,
):
    """Direct-beam centre of every pattern by windowed centre of mass.

    The brightest probe-sized blob (box filter) near ``guess`` gives a first
    estimate; then, ``n_iter`` times, the centre of mass of the intensity
    above the local background (median of the patch corners outside a window
    of ``1.5 * radius + 2`` px) over the beam's own pixels: those of the window
    above half the beam's height (median of its core), grown by one pixel to
    keep the disk's edge. Weaker Bragg disks near the beam carry no weight.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx).
    radius : float
        Probe (direct-beam disk) radius in pixels.
    guess : tuple of float, optional
        Expected (qy, qx) of the beam; the brightest blob is searched within
        ``search_radius`` of it. None searches the whole pattern.
    search_radius : float, optional
        Default ``max(4 * radius, 8)`` px.
    mask : array_like of bool, optional
        Masked pixels carry no weight.
    n_iter : int, default 3
        Centre-of-mass iterations.
    return_halves : bool, default False
        Also return the difference of the centres of mass of the two
        checkerboard halves of the beam's pixels (rows + columns even, odd).
        With noise independent from pixel to pixel its spread is twice the
        origin's measurement noise, whatever the detector's gain.

    Returns
    -------
    origins : numpy.ndarray
        (..., 2) float64 (qy, qx); NaN where the window holds no intensity.
    beam : numpy.ndarray
        (...,) float64: background-subtracted intensity in the final window.
    halves : numpy.ndarray
        (..., 2) float64 even-half minus odd-half centre; only with ``return_halves``.
    """
    stack, lead = as_stack(patterns)
    n, qy, qx = stack.shape
    mask = check_mask(mask, (qy, qx))
    if not np.isfinite(radius) or radius <= 0:
        raise ConfigError(f"probe radius {radius!r} must be positive")
    if n > 4 * _BATCH:  # a few at a time: the temporaries stay small
        parts = [
            com_origins(stack[i : i + 4 * _BATCH], radius=radius, guess=guess, search_radius=search_radius,
                        mask=mask, n_iter=n_iter, return_halves=True)
            for i in range(0, n, 4 * _BATCH)
        ]
        origins, beam, halves = (np.concatenate([p[k] for p in parts]) for k in range(3))
    else:
        work = np.where(mask[None], np.float32(0), stack) if mask.any() else stack
        cy, cx = _brightest_blob(work, radius=radius, guess=guess, search_radius=search_radius)
        cy, cx, beam, halves = _beam_centre_of_mass(work, mask, cy, cx, radius=radius, n_iter=n_iter)
        origins = np.stack([cy, cx], axis=1)
        origins[~(beam > 0)] = np.nan
        halves[~(beam > 0)] = np.nan
    out = (origins.reshape(*lead, 2), beam.reshape(lead))
    return (*out, halves.reshape(*lead, 2)) if return_halves else out


def _row_median(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Median of each row over its ``ok`` entries (0 where a row has none)."""
    out = np.zeros(values.shape[0])
    full = ok.all(axis=1)
    if full.any():
        out[full] = np.median(values[full], axis=1)
    rest = ~full & ok.any(axis=1)
    if rest.any():
        out[rest] = np.nanmedian(np.where(ok[rest], values[rest], np.nan), axis=1)
    return out


# -- cross-correlation -------------------------------------------------------------------


def _upsampled_dft(spectrum: np.ndarray, shifts: np.ndarray, upsample: int, size: int) -> np.ndarray:
    """Cross-correlation sampled on a fine grid of ``size`` x ``size`` points around each shift.

    ``spectrum`` is (n, N, M) = P * conj(T); ``shifts`` (n, 2) are the grid
    centres in pixels. Returns (n, size, size) real values at
    ``shift + (k - size // 2) / upsample``.
    """
    n, N, M = spectrum.shape
    steps = (np.arange(size) - size // 2) / upsample
    fy = np.fft.fftfreq(N)
    fx = np.fft.fftfreq(M)
    dy = shifts[:, 0][:, None] + steps[None, :]  # (n, size)
    dx = shifts[:, 1][:, None] + steps[None, :]
    ky = np.exp(2j * np.pi * dy[:, :, None] * fy[None, None, :])  # (n, size, N)
    kx = np.exp(2j * np.pi * dx[:, :, None] * fx[None, None, :])  # (n, size, M)
    out = ky @ spectrum @ np.swapaxes(kx, 1, 2)
    return out.real


def _parabola_offset(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
    denom = minus - 2 * centre + plus
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = 0.5 * (minus - plus) / denom
    return np.where((denom < 0) & np.isfinite(offset), np.clip(offset, -0.5, 0.5), 0.0)


def _xcorr_batch(stack, template, template_center, upsample, mask, guess, search_radius):
    n, qy, qx = stack.shape
    template = np.where(mask, 0.0, template)
    work = np.where(mask[None], 0.0, stack).astype(np.float64)
    work -= np.median(stack[:, ~mask], axis=1)[:, None, None]
    work = np.where(mask[None], 0.0, np.clip(work, 0, None))
    spectrum = np.fft.fft2(work) * np.conj(np.fft.fft2(template))[None]
    corr = np.fft.ifft2(spectrum).real
    sy = np.fft.fftfreq(qy, 1.0 / qy)
    sx = np.fft.fftfreq(qx, 1.0 / qx)
    if guess is not None:
        search_radius = float(search_radius if search_radius is not None else max(qy, qx) / 4)
        expect = np.asarray(guess, dtype=np.float64) - np.asarray(template_center, dtype=np.float64)
        far = np.hypot(sy[:, None] - expect[0], sx[None, :] - expect[1]) > search_radius
        corr[:, far] = -np.inf
    flat = np.argmax(corr.reshape(n, -1), axis=1)
    coarse = np.stack([sy[flat // qx], sx[flat % qx]], axis=1)
    peak = corr.reshape(n, -1)[np.arange(n), flat]
    shifts = coarse
    if upsample > 1:
        size = int(np.ceil(1.5 * upsample)) | 1
        fine = _upsampled_dft(spectrum, coarse, upsample, size) / (qy * qx)
        best = np.argmax(fine.reshape(n, -1), axis=1)
        by, bx = best // size, best % size
        inner_y = np.clip(by, 1, size - 2)
        inner_x = np.clip(bx, 1, size - 2)
        rows = np.arange(n)
        oy = _parabola_offset(fine[rows, inner_y - 1, bx], fine[rows, inner_y, bx], fine[rows, inner_y + 1, bx])
        ox = _parabola_offset(fine[rows, by, inner_x - 1], fine[rows, by, inner_x], fine[rows, by, inner_x + 1])
        oy = np.where(inner_y == by, oy, 0.0)
        ox = np.where(inner_x == bx, ox, 0.0)
        shifts = coarse + (np.stack([by, bx], axis=1) - size // 2 + np.stack([oy, ox], axis=1)) / upsample
        peak = fine[rows, by, bx]
    origins = shifts + np.asarray(template_center, dtype=np.float64)[None, :]
    origins[~(peak > 0)] = np.nan
    return origins, np.asarray(peak, dtype=np.float64)


def xcorr_origins(
    patterns,
    template,
    template_center,
    *,
    upsample: int = 10,
    mask=None,
    guess=None,
    search_radius: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Direct-beam centre of every pattern by cross-correlation with a probe template.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx).
    template : array_like
        (qy, qx) probe image (non-negative, zero away from the beam).
    template_center : tuple of float
        Where the beam centre is in ``template``.
    upsample : int, default 10
        Refinement factor of the correlation peak (precision ``1 / upsample``
        px before a final parabolic step).
    mask : array_like of bool, optional
        Masked pixels are zeroed in patterns and template.
    guess, search_radius : optional
        Restrict the coarse peak to shifts within ``search_radius`` px of
        ``guess - template_center``.

    Returns
    -------
    origins : numpy.ndarray
        (..., 2) float64 (qy, qx); NaN where the correlation has no positive peak.
    peak : numpy.ndarray
        (...,) correlation peak value (a beam-intensity measure).
    """
    stack, lead = as_stack(patterns)
    n, qy, qx = stack.shape
    mask = check_mask(mask, (qy, qx))
    template = np.asarray(template, dtype=np.float64)
    if template.shape != (qy, qx):
        raise ConfigError(f"probe template shape {template.shape} does not match the patterns {(qy, qx)}")
    upsample = int(upsample)
    if upsample < 1:
        raise ConfigError(f"upsample={upsample} must be at least 1")
    origins = np.empty((n, 2))
    peak = np.empty(n)
    for start in range(0, n, _BATCH):
        stop = min(n, start + _BATCH)
        origins[start:stop], peak[start:stop] = _xcorr_batch(
            stack[start:stop], template, template_center, upsample, mask, guess, search_radius
        )
    return origins.reshape(*lead, 2), peak.reshape(lead)


# -- surface fit -------------------------------------------------------------------------

# -- dataset-level -----------------------------------------------------------------------


def _measure(patterns, method, options):
    """(origins, beam, halves) of (n, qy, qx) patterns; ``halves`` NaN for 'xcorr' (no checkerboard split)."""
    if method == "com":
        return com_origins(patterns, return_halves=True, **options)
    origins, peak = xcorr_origins(patterns, **options)
    return origins, peak, np.full_like(origins, np.nan)


def _origin_kernel(block, chunk, *, method, options, recentre_to, prepare):
    """Engine reduce kernel: packed per-position origins and beam, and the re-centred pattern sum.

    The per-position part is packed as ``[first position, count, origins..., beam..., halves...]``
    so that partial results combine by concatenation.
    """
    own = block[chunk.own]
    patterns = own.reshape(-1, *own.shape[2:])
    if prepare is not None:
        patterns = prepare[0](patterns, **prepare[1])
    origins, beam, halves = _measure(patterns, method, options)
    packed = np.concatenate([[chunk.positions.start, chunk.n_positions], origins.ravel(), beam.ravel(),
                             halves.ravel()])
    total = np.zeros(patterns.shape[1:], dtype=np.float64)
    coverage = np.zeros(patterns.shape[1:], dtype=np.float64)
    count = np.zeros(1, dtype=np.float64)
    if recentre_to is not None:
        ok = np.isfinite(origins).all(axis=1) & (beam > 0)
        if ok.any():
            shifts = np.asarray(recentre_to)[None, :] - origins[ok]
            mask = options.get("mask")
            valid = np.ones(patterns.shape[1:], np.float32) if mask is None else (~mask).astype(np.float32)
            selected = patterns[ok] if mask is None else patterns[ok] * valid
            total += shifted_sum(selected, shifts)
            coverage += shifted_sum(valid, shifts)
            count[0] = ok.sum()
    return packed, total, coverage, count


def _concatenate(a, b):
    return np.concatenate([a, b])


def _unpack(packed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    origins = np.full((n, 2), np.nan)
    beam = np.full(n, np.nan)
    halves = np.full((n, 2), np.nan)
    i = 0
    while i < packed.size:
        start, m = int(packed[i]), int(packed[i + 1])
        origins[start : start + m] = packed[i + 2 : i + 2 + 2 * m].reshape(m, 2)
        beam[start : start + m] = packed[i + 2 + 2 * m : i + 2 + 3 * m]
        halves[start : start + m] = packed[i + 2 + 3 * m : i + 2 + 5 * m].reshape(m, 2)
        i += 2 + 5 * m
    return origins, beam, halves


@dataclasses.dataclass
class OriginMeasurement:
    """Direct-beam origins measured over a scan.

    Attributes
    ----------
    origins : numpy.ndarray
        (sy, sx, 2) float64 (qy, qx); NaN where no beam was found.
    beam : numpy.ndarray
        (sy, sx) beam intensity (or correlation peak) per position.
    probe : ProbeEstimate
        The direct beam of the mean pattern (or of the given probe).
    recentred_mean : numpy.ndarray or None
        (qy, qx) mean of the patterns each moved so that its measured origin
        lands on ``probe.center`` (positions without a beam left out), each
        pixel normalised by how many patterns covered it; a sharp mean pattern
        for the ellipse fit. None unless asked for.
    recentred_mask : numpy.ndarray or None
        (qy, qx) pixels of ``recentred_mean`` covered by fewer than 90 % of the
        patterns (detector edges, masked pixels moved around).
    halves : numpy.ndarray or None
        (sy, sx, 2) difference of the centres of mass of the two checkerboard
        halves of the beam's pixels ('com'; see :func:`com_origins`), NaN
        where no beam; its spread is twice the measurement noise. None for 'xcorr'.
    """

    origins: np.ndarray
    beam: np.ndarray
    probe: ProbeEstimate
    recentred_mean: np.ndarray | None = None
    recentred_mask: np.ndarray | None = None
    halves: np.ndarray | None = None


def _method_options(method, estimate, source, mask, upsample) -> dict:
    """Keyword arguments of :func:`com_origins` or :func:`xcorr_origins` for a probe ``estimate``."""
    search = max(4.0 * estimate.radius, 8.0)
    if method == "com":
        return dict(radius=estimate.radius, guess=estimate.center, search_radius=search, mask=mask)
    return dict(
        template=probe_template(source, estimate.center, estimate.radius, mask=mask),
        template_center=estimate.center,
        upsample=upsample,
        mask=mask,
        guess=estimate.center,
        search_radius=search,
    )


def _recentred(total, coverage, count):
    """(mean, mask) of the re-centred patterns; pixels covered by fewer than 90 % of them masked."""
    if count[0] <= 0:
        return None, None
    coverage = np.asarray(coverage)
    mean_mask = coverage < 0.9 * count[0]
    mean = np.where(mean_mask, 0.0, np.asarray(total) / np.maximum(coverage, 1e-12)).astype(np.float32)
    if mean_mask.all():
        return None, None
    return mean, mean_mask


def measure_origins(
    dataset,
    *,
    method: str = "com",
    engine=None,
    mean_pattern=None,
    probe=None,
    min_beam_fraction: float = 0.1,
    upsample: int = 10,
    recentred_mean: bool = False,
    prepare=None,
    mask=False,
) -> OriginMeasurement:
    """Direct-beam origin at every probe position of a Dataset4D (one streamed pass).

    Parameters
    ----------
    dataset : Dataset4D
    method : {'com', 'xcorr'}
    engine : Engine, optional
    mean_pattern : array_like, optional
        (qy, qx) mean pattern (computed when not given) used to find the probe.
    probe : array_like, optional
        (qy, qx) probe image for 'xcorr' (e.g. a vacuum pattern); default the
        radially averaged direct beam of the mean pattern.
    min_beam_fraction : float, default 0.1
        Positions whose beam intensity is below this fraction of the scan's
        median are marked as having no beam (NaN).
    upsample : int, default 10
        'xcorr' refinement factor.
    recentred_mean : bool, default False
        Also accumulate the mean of the re-centred patterns in the same pass.
    prepare : tuple, optional
        ``(func, kwargs)`` applied to each chunk's (n, qy, qx) patterns before
        measuring (e.g. hot-pixel replacement and binning fused into this pass);
        ``mean_pattern``, ``probe`` and ``mask`` then refer to its output.
    mask : array_like of bool or None, optional
        Detector mask of the (prepared) patterns; default ``dataset.mask``.

    Returns
    -------
    OriginMeasurement

    Raises
    ------
    CalibrationError
        No direct beam in the mean pattern, or in none of the patterns.
    """
    if method not in ("com", "xcorr"):
        raise ConfigError(f"origin method {method!r} is unknown", "use 'com', 'xcorr' or None")
    engine = engine or Engine()
    mask = dataset.mask if mask is False else mask
    if mean_pattern is None:
        if prepare is not None:
            raise ConfigError("measure_origins with prepare needs the mean pattern of the prepared patterns")
        mean_pattern, _ = pattern_statistics(dataset, engine)
    estimate = estimate_probe(probe if probe is not None else mean_pattern, mask=mask)
    options = _method_options(method, estimate, probe if probe is not None else mean_pattern, mask, upsample)
    packed, total, coverage, count = engine.reduce(
        _origin_kernel,
        dataset,
        combine=[_concatenate, "sum", "sum", "sum"],
        kwargs=dict(
            method=method,
            options=options,
            recentre_to=estimate.center if recentred_mean else None,
            prepare=prepare,
        ),
        desc=f"origins ({method})",
    )
    origins, beam, halves = _unpack(np.asarray(packed), dataset.n_positions)
    finite = np.isfinite(beam) & (beam > 0)
    if not finite.any():
        raise CalibrationError("no direct beam found in any pattern", "check the data or use origin=None")
    level = np.median(beam[finite])
    weak = ~finite | (beam < min_beam_fraction * level)
    origins[weak] = np.nan
    halves[weak] = np.nan
    if weak.any():
        log.info("no direct beam in %d of %d patterns", int(weak.sum()), weak.size)
    mean, mean_mask = _recentred(total, coverage, count) if recentred_mean else (None, None)
    return OriginMeasurement(
        origins=origins.reshape(*dataset.scan_shape, 2),
        beam=beam.reshape(dataset.scan_shape),
        probe=estimate,
        recentred_mean=mean,
        recentred_mask=mean_mask,
        halves=halves.reshape(*dataset.scan_shape, 2) if method == "com" else None,
    )
