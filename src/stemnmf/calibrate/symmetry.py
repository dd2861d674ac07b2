"""The origin from the diffraction itself: the centre of inversion symmetry of the patterns.

Kinematic diffraction obeys Friedel's law and amorphous or polycrystalline
rings are round (elliptical after distortion, which keeps the centre), so a
pattern summed over a block of probe positions is close to symmetric under
inversion through the undiffracted-beam position c: I(p) ~ I(2c - p). That
point is where the autoconvolution (I * I)(s) peaks, at s = 2c. This works
whether or not the direct beam is visible (behind a beam stop, saturated),
which is what the centre-of-mass and cross-correlation methods need.

Masked pixels (beam stop, bad pixels) carry no weight: the autoconvolution of
the weighted image is divided by the autoconvolution of the weights (the
number of pixel pairs that both count), so a shadow on one side does not pull
the centre towards the other.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import fft as scipy_fft
from scipy import ndimage

from stemnmf.calibrate.common import check_mask
from stemnmf.calibrate.shift import shifted_sum
from stemnmf.calibrate.surface import OriginFit
from stemnmf.errors import CalibrationError, ConfigError

__all__ = [
    "SymmetryOrigins",
    "block_edges",
    "block_sums_kernel",
    "shadow_mask",
    "symmetry_center",
    "symmetry_centers",
    "symmetry_origins",
]

log = logging.getLogger(__name__)

#: Pixel pairs below this fraction of the most at any offset s make that s too poorly sampled to use.
_MIN_OVERLAP = 0.3


def _prepared(image: np.ndarray, weights: np.ndarray, local: np.ndarray, smooth: float) -> np.ndarray:
    """sqrt-compressed image minus its masked local mean (Gaussian ``smooth``; ``local`` = filtered weights)."""
    compressed = np.sqrt(np.clip(image, 0.0, None))
    num = ndimage.gaussian_filter(compressed * weights, smooth, mode="nearest")
    prepared = (compressed - num / local) * weights
    # a few very strong disks of a thick grain (far from Friedel-symmetric: their excitation errors differ)
    # must not decide alone: clip at the 99th percentile
    valid = weights > 0
    if valid.any():
        limit = float(np.percentile(np.abs(prepared[valid]), 99))
        np.clip(prepared, -limit, limit, out=prepared)
    return prepared


def _parabola(minus: float, centre: float, plus: float) -> float:
    curvature = minus - 2.0 * centre + plus
    if not np.isfinite(curvature) or curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))


def symmetry_centers(
    images,
    *,
    mask=None,
    guess=None,
    search_radius: float | None = None,
    smooth: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre of inversion symmetry of each of a stack of (qy, qx) images.

    Each image is compressed (square root of its counts, so a few bright disks
    do not decide alone), high-passed (minus its masked Gaussian local
    mean of ``smooth`` px) and clipped at the 99th percentile of its absolute values; its autoconvolution, normalised by that of the
    mask, is searched for its maximum at s = 2c within ``search_radius`` of
    the guess, refined by a parabola through the neighbours.

    Parameters
    ----------
    images : array_like
        (n, qy, qx) or (qy, qx).
    mask : array_like of bool, optional
        (qy, qx) True = ignored.
    guess : (float, float), optional
        Where to look (default the detector centre).
    search_radius : float, optional
        Largest distance of the centre from the guess, px (default 1/8 of the
        smaller detector side).
    smooth : float, optional
        Gaussian sigma of the high-pass, px (default 1/16 of the smaller side, at least 2).

    Returns
    -------
    centers : numpy.ndarray
        (n, 2) (qy, qx) float64.
    scores : numpy.ndarray
        (n,) normalised autoconvolution at the peak over its rms in the search
        window (higher is more certain).
    """
    stack = np.asarray(images, dtype=np.float64)
    single = stack.ndim == 2
    stack = stack.reshape(-1, *stack.shape[-2:])
    qy, qx = stack.shape[1:]
    weights = (~check_mask(mask, (qy, qx))).astype(np.float64)
    smooth = max(2.0, min(qy, qx) / 16.0) if smooth is None else float(smooth)
    search = min(qy, qx) / 8.0 if search_radius is None else float(search_radius)
    if search <= 0 or smooth <= 0:
        raise ConfigError("search_radius and smooth must be positive")
    guess = np.array(((qy - 1) / 2.0, (qx - 1) / 2.0) if guess is None else guess, dtype=np.float64)
    shape = (scipy_fft.next_fast_len(2 * qy, real=True), scipy_fft.next_fast_len(2 * qx, real=True))
    fw = scipy_fft.rfft2(weights, shape)
    pairs = scipy_fft.irfft2(fw * fw, shape)
    local = np.maximum(ndimage.gaussian_filter(weights, smooth, mode="nearest"), 1e-6)
    yy, xx = np.indices(shape)
    window = (np.hypot(yy - 2 * guess[0], xx - 2 * guess[1]) <= 2 * search) & (pairs > _MIN_OVERLAP * pairs.max())
    if not window.any():
        raise CalibrationError("the symmetry search window is empty", "give a guess on the detector")
    centers = np.full((len(stack), 2), np.nan)
    scores = np.zeros(len(stack))
    for k, image in enumerate(stack):
        prepared = _prepared(image, weights, local, smooth)
        spectrum = scipy_fft.rfft2(prepared, shape)
        # correlation coefficient between the image and its inversion through s / 2, over the pixels both see:
        # the autoconvolution over the energy of the overlapping part (both in one inverse transform)
        both = scipy_fft.irfft2(np.stack([spectrum * spectrum, scipy_fft.rfft2(prepared**2, shape) * fw]), shape)
        conv, energy = both[0], both[1]
        norm = np.where(window, conv / np.maximum(energy, 1e-12 * max(float(energy.max()), 1e-300)), -np.inf)
        iy, ix = np.unravel_index(int(np.argmax(norm)), shape)
        values = norm[window]
        spread = float(np.sqrt(np.mean(values**2))) or 1e-30
        scores[k] = float(norm[iy, ix]) / spread
        if 0 < iy < shape[0] - 1 and 0 < ix < shape[1] - 1:
            dy = _parabola(norm[iy - 1, ix], norm[iy, ix], norm[iy + 1, ix])
            dx = _parabola(norm[iy, ix - 1], norm[iy, ix], norm[iy, ix + 1])
        else:
            dy = dx = 0.0
        centers[k] = ((iy + dy) / 2.0, (ix + dx) / 2.0)
    if single:
        return centers[0], scores[:1]
    return centers, scores


def symmetry_center(image, **options) -> tuple[tuple[float, float], float]:
    """Centre of inversion symmetry of one (qy, qx) image and its score (see :func:`symmetry_centers`)."""
    centers, scores = symmetry_centers(np.asarray(image)[None], **options)
    return (float(centers[0, 0]), float(centers[0, 1])), float(scores[0])


def shadow_mask(image, center, *, mask=None, dark_fraction: float = 0.25, min_size: int = 10, margin: int = 2,
                n_averaged: int = 1, n_sigma: float = 5.0, min_support: float = 0.6):
    """Pixels in a shadow: much darker than the median of their ring about ``center``.

    A beam-stop arm (or any shadow that covers a small part of each ring)
    leaves pixels below ``dark_fraction`` x the median of the pixels at the
    same distance from the centre, and darker by ``n_sigma`` Poisson standard
    deviations of a 3 x 3 mean of ``n_averaged`` patterns (``image`` is their
    mean, in counts). Rings whose median is below 1e-2 of the median ring's
    are not judged (a direct beam leaking through the stop may be 1e5 times
    brighter than the rings: it does not set the scale). Only connected regions of at least ``min_size``
    pixels that come within 1/6 of the detector of the centre, reach out
    radially over at least 1/8 of it and touch the detector edge (or reach 0.4 of its size from
    the centre) are kept: the
    arm that holds a stop over the beam (not the background between the spots
    of a crystal). A region near the centre that stops short (strong Bragg
    disks seen through a partly transparent arm break the shadow) is kept with
    the straight band along its axis out to the detector edge when dark pixels
    lie in that band over at least ``min_support`` of its judged length. The disk
    out to the nearest point of such an arm is added (the stop). Everything is
    grown by ``margin`` px (the penumbra).

    Returns
    -------
    numpy.ndarray
        (qy, qx) bool.
    """
    image = np.asarray(image, dtype=np.float64)
    qy, qx = image.shape
    masked = check_mask(mask, image.shape, allow_full=True)
    smooth = ndimage.uniform_filter(np.where(masked, 0.0, image), 3, mode="nearest")
    yy, xx = np.indices(image.shape)
    radius = np.hypot(yy - center[0], xx - center[1])
    ring = np.round(radius).astype(np.int64)
    valid = ~masked
    order = np.lexsort((smooth[valid], ring[valid]))
    rings, values = ring[valid][order], smooth[valid][order]
    starts = np.searchsorted(rings, np.arange(ring.max() + 2))
    counts = np.diff(starts)
    median = np.zeros(ring.max() + 1)
    has = counts > 0
    median[has] = values[(starts[:-1] + counts // 2)[has]]
    # rings with next to no signal are not judged
    floor = 1e-2 * max(float(np.median(median[has])), 0.0) if has.any() else 0.0
    expected = median[ring]
    noise = np.sqrt(np.clip(expected, 0.0, None) / (9.0 * max(int(n_averaged), 1)))
    judged = valid & (expected > floor)
    dark = judged & (smooth < dark_fraction * expected) & (expected - smooth > n_sigma * noise)
    labels, n = ndimage.label(dark, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(radius), labels, index)
    near = ndimage.minimum(radius, labels, index)
    far = ndimage.maximum(radius, labels, index)
    side = min(qy, qx)
    border = np.zeros(image.shape, dtype=bool)
    border[:2, :] = border[-2:, :] = border[:, :2] = border[:, -2:] = True
    # an arm is held from the edge: it touches the border or reaches the outer part of the detector (the
    # corners, where rings are cut and not judged, may hide its end)
    touches = (ndimage.maximum(border.astype(np.float64), labels, index) > 0) | (far >= 0.4 * side)
    start = (sizes >= min_size) & (near < side / 6.0)
    shadow = np.isin(labels, index[start & (far - near >= side / 8.0) & touches])
    for label in index[start & ~touches]:
        band = _arm_band(labels == label, center, dark, judged, border, min_support)
        if band is not None:
            shadow |= band
    if shadow.any():
        shadow |= radius <= float(radius[shadow].min()) + 1.0
    if margin > 0 and shadow.any():
        shadow = ndimage.binary_dilation(shadow, structure=np.ones((3, 3), bool), iterations=int(margin))
    return shadow


def _arm_band(region, center, dark, judged, border, min_support):
    """The straight band along ``region``'s axis from its inner end to the detector edge, or None.

    The band is as wide as the region (95th percentile of its distance from
    the axis) and is an arm when dark pixels lie in it over at least
    ``min_support`` of the 1-px steps along it that hold judged pixels, and in the
    last quarter of it (the arm is held from the edge).
    """
    ys, xs = np.nonzero(region)
    points = np.column_stack([ys, xs]).astype(np.float64)
    middle = points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((points - middle).T))
    if not values[0] >= 0 or values[1] < 9.0 * max(values[0], 1e-12):  # elongated: length over width >= 3
        return None
    axis = vectors[:, 1] if np.dot(vectors[:, 1], middle - np.asarray(center)) >= 0 else -vectors[:, 1]
    yy, xx = np.indices(region.shape)
    along = (yy - middle[0]) * axis[0] + (xx - middle[1]) * axis[1]
    across = np.abs(-(yy - middle[0]) * axis[1] + (xx - middle[1]) * axis[0])
    half = max(1.0, float(np.percentile(across[region], 95))) + 0.5
    band = (across <= half) & (along >= float(along[region].min()))
    step = np.round(along[band] - along[band].min()).astype(np.int64)
    seen = np.bincount(step, weights=judged[band].astype(np.float64)) > 0
    shaded = np.bincount(step, weights=dark[band].astype(np.float64), minlength=seen.size) > 0
    if not seen.any() or np.count_nonzero(shaded & seen) < min_support * np.count_nonzero(seen):
        return None
    end = step.max() - max(1, step.max() // 4)
    if not (shaded[end:].any() and border[band].any()):
        return None
    return band


# -- blocks of probe positions -----------------------------------------------------------


def block_edges(scan_shape, n_blocks: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Row and column edges of about ``n_blocks`` x ``n_blocks`` blocks of probe positions."""
    out = []
    for size in scan_shape:
        step = max(1, int(np.ceil(size / max(1, int(n_blocks)))))
        out.append(np.append(np.arange(0, size, step), size))
    return out[0], out[1]


def block_sums_kernel(block, chunk, *, row_edges, col_edges):
    """Engine reduce kernel: float64 sum and float32 maximum of the chunk's patterns, and their sum per block.

    The block sums are (nby, nbx, qy, qx) float32 (they only locate centres;
    :func:`~stemnmf.calibrate.calibrate` keeps them within 1/64 of the memory
    budget); the first two outputs are those of
    :func:`stemnmf.calibrate.pattern_statistics`, so one pass gives all three.
    Each block's part of the chunk is summed once in float64 and the total is
    the sum of those parts, so the block sums cost no more than the total.
    """
    own = block[chunk.own]
    out = np.zeros((len(row_edges) - 1, len(col_edges) - 1, *own.shape[2:]), dtype=np.float32)
    total = np.zeros(own.shape[2:], dtype=np.float64)
    first = int(np.searchsorted(row_edges, chunk.start, side="right")) - 1
    last = int(np.searchsorted(row_edges, chunk.stop - 1, side="right")) - 1
    for by in range(first, last + 1):
        r0, r1 = max(row_edges[by], chunk.start) - chunk.start, min(row_edges[by + 1], chunk.stop) - chunk.start
        for bx in range(len(col_edges) - 1):
            part = own[r0:r1, col_edges[bx] : col_edges[bx + 1]].sum(axis=(0, 1), dtype=np.float64)
            total += part
            out[by, bx] = part
    return total, own.reshape(-1, *own.shape[2:]).max(axis=0), out


@dataclasses.dataclass
class SymmetryOrigins:
    """Origins of blocks of positions from the symmetry of their summed patterns.

    Attributes
    ----------
    row_edges, col_edges : numpy.ndarray
        Block boundaries in scan rows and columns.
    centers : numpy.ndarray
        (nby, nbx, 2) symmetry centre (qy, qx) of each block.
    scores : numpy.ndarray
        (nby, nbx) peak over rms of the normalised autoconvolution.
    per_position : numpy.ndarray
        (sy, sx, 2) each position's block centre (for the surface fit and maps).
    """

    row_edges: np.ndarray
    col_edges: np.ndarray
    centers: np.ndarray
    scores: np.ndarray
    per_position: np.ndarray


def symmetry_origins(block_sums, row_edges, col_edges, *, mask=None, guess=None, search_radius=None):
    """Symmetry centres of (nby, nbx, qy, qx) block sums, spread over the scan (see :func:`symmetry_centers`)."""
    block_sums = np.asarray(block_sums)
    nby, nbx, qy, qx = block_sums.shape
    centers, scores = symmetry_centers(
        block_sums.reshape(-1, qy, qx), mask=mask, guess=guess, search_radius=search_radius
    )
    centers = centers.reshape(nby, nbx, 2)
    per_row = np.repeat(np.arange(nby), np.diff(row_edges))
    per_col = np.repeat(np.arange(nbx), np.diff(col_edges))
    per_position = centers[per_row[:, None], per_col[None, :]]
    return SymmetryOrigins(row_edges, col_edges, centers, scores.reshape(nby, nbx), per_position)


def surface_at(fit, ys, xs) -> np.ndarray:
    """Values (n, 2) of a fitted origin surface (:class:`~stemnmf.calibrate.OriginFit`) at scan coordinates."""
    return _design(fit.terms, ys, xs) @ np.asarray(fit.coefficients, np.float64).T


def block_centres(row_edges, col_edges) -> tuple[np.ndarray, np.ndarray]:
    """(nby, nbx) scan coordinates (row, column) of the centre of each block."""
    cy = (row_edges[:-1] + row_edges[1:] - 1) / 2.0
    cx = (col_edges[:-1] + col_edges[1:] - 1) / 2.0
    return np.meshgrid(cy, cx, indexing="ij")


def recentred_block_mean(block_sums, origins, reference, *, mask=None):
    """Mean of the block sums each moved so that its origin lands on ``reference`` (for the ellipse fit).

    Parameters
    ----------
    block_sums : array_like
        (nby, nbx, qy, qx).
    origins : array_like
        (nby, nbx, 2) origin of each block.
    reference : (float, float)
    mask : array_like of bool, optional

    Returns
    -------
    mean : numpy.ndarray
        (qy, qx) float32, each pixel normalised by how many blocks covered it.
    mean_mask : numpy.ndarray
        (qy, qx) bool: covered by fewer than 90 % of the blocks.
    """
    block_sums = np.asarray(block_sums, dtype=np.float64)
    qy, qx = block_sums.shape[2:]
    stack = block_sums.reshape(-1, qy, qx)
    shifts = np.asarray(reference, np.float64)[None, :] - np.asarray(origins, np.float64).reshape(-1, 2)
    valid = (~check_mask(mask, (qy, qx), allow_full=True)).astype(np.float32)
    total = shifted_sum((stack * valid).astype(np.float32), shifts)
    coverage = shifted_sum(valid, shifts)
    mean_mask = coverage < 0.9 * len(stack)
    mean = np.where(mean_mask, 0.0, total / np.maximum(coverage, 1e-12))
    return mean.astype(np.float32), mean_mask


def fit_symmetry_origins(block_sums, row_edges, col_edges, *, mask=None, guess=None, model="plane", search_radius=None):
    """Symmetry centres of the blocks and, unless ``model`` is None, a robust surface through them.

    The surface is :func:`~stemnmf.calibrate.fit_origin_surface` over the
    positions, each carrying its block's centre (so blocks weigh by their
    size and a whole block is rejected as an outlier).

    Returns
    -------
    symmetry : SymmetryOrigins
    fit : OriginFit or None
    """
    symmetry = symmetry_origins(block_sums, row_edges, col_edges, mask=mask, guess=guess, search_radius=search_radius)
    fit = None if model is None else fit_block_surface(symmetry, model=model)
    return symmetry, fit


_TERMS = {"plane": ("1", "y", "x"), "quadratic": ("1", "y", "x", "y^2", "x*y", "x^2")}


def _design(terms, ys, xs) -> np.ndarray:
    y, x = np.asarray(ys, np.float64).ravel(), np.asarray(xs, np.float64).ravel()
    columns = {"1": np.ones_like(y), "y": y, "x": x, "y^2": y * y, "x*y": x * y, "x^2": x * x}
    return np.stack([columns[t] for t in terms], axis=1)


def fit_block_surface(symmetry: SymmetryOrigins, *, model: str = "plane", n_sigma: float = 3.0, min_sigma: float = 0.05,
                      max_iter: int = 30) -> OriginFit:
    """A surface through the block centres, robust to a minority of wrong blocks.

    Starts from the median centre (so up to half the blocks may be wrong,
    e.g. a thick grain whose reflections are far from Friedel-symmetric),
    then repeatedly fits the blocks (weighted by their number of positions)
    whose distance from the surface is within ``n_sigma`` robust standard
    deviations (1.4826 x median distance / sqrt(2), at least ``min_sigma``).

    Returns
    -------
    OriginFit
        Over the positions: each carries its block's residual and outlier flag;
        ``residual_rms`` is over the inlier blocks, weighted by their size.
    """
    if model not in _TERMS:
        raise ConfigError(f"origin fit {model!r} is unknown", "use 'plane', 'quadratic' or None")
    terms = _TERMS[model]
    cy, cx = block_centres(symmetry.row_edges, symmetry.col_edges)
    centres = symmetry.centers.reshape(-1, 2)
    sizes = np.outer(np.diff(symmetry.row_edges), np.diff(symmetry.col_edges)).ravel().astype(np.float64)
    design = _design(terms, cy, cx)
    finite = np.isfinite(centres).all(axis=1)
    if finite.sum() < len(terms) + 1:
        raise CalibrationError(f"only {int(finite.sum())} blocks have a symmetry centre; a {model} fit needs {len(terms) + 1}")
    coef = np.zeros((len(terms), 2))
    coef[0] = np.median(centres[finite], axis=0)
    inliers = finite
    for _ in range(max_iter):
        distance = np.hypot(*(centres - design @ coef).T)
        sigma = max(1.4826 * float(np.median(distance[finite])) / np.sqrt(2.0), min_sigma)
        keep = finite & (distance <= n_sigma * sigma)
        if keep.sum() < len(terms) + 1:
            break
        root = np.sqrt(sizes[keep])[:, None]
        coef, *_ = np.linalg.lstsq(design[keep] * root, centres[keep] * root, rcond=None)
        if np.array_equal(keep, inliers):
            break
        inliers = keep
    residual = centres - design @ coef
    rms = float(np.sqrt(np.sum(sizes[inliers] * np.sum(residual[inliers] ** 2, axis=1)) / sizes[inliers].sum()))
    sy, sx = symmetry.per_position.shape[:2]
    yy, xx = np.indices((sy, sx))
    fitted = (_design(terms, yy, xx) @ coef).reshape(sy, sx, 2)
    per_row = np.repeat(np.arange(len(symmetry.row_edges) - 1), np.diff(symmetry.row_edges))
    per_col = np.repeat(np.arange(len(symmetry.col_edges) - 1), np.diff(symmetry.col_edges))
    nby, nbx = cy.shape
    pick = (per_row[:, None], per_col[None, :])
    return OriginFit(
        model=model,
        terms=terms,
        coefficients=coef.T.copy(),
        fitted=fitted.astype(np.float32),
        residuals=residual.reshape(nby, nbx, 2)[pick],
        outliers=(~inliers).reshape(nby, nbx)[pick],
        residual_rms=rms,
    )


def block_origins(symmetry: SymmetryOrigins, fit: OriginFit | None) -> np.ndarray:
    """(nby, nbx, 2) origin of each block: the fitted surface at its centre, else its own centre."""
    if fit is None:
        return symmetry.centers
    cy, cx = block_centres(symmetry.row_edges, symmetry.col_edges)
    return surface_at(fit, cy, cx).reshape(*cy.shape, 2)
