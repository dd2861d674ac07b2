"""Full-reference image-quality metrics: SSIM, PSNR, GMSD, MDSI.

NumPy/SciPy versions of the functions of ``piq`` 0.8.0 with their default
arguments, which Cao et al. (2025) used to compare component patterns. Each
takes a reference and an image (or stacks of them, shape (n, H, W)), divides
both by ``data_range`` and works in float64 on gray images:

- :func:`ssim`: Gaussian window 11 x 11 (sigma 1.5), k1 0.01, k2 0.03, average
  pooling by ``max(1, round(min(H, W) / 256))`` first, 'valid' filtering, mean
  of the SSIM map. 1 for identical images.
- :func:`psnr`: ``-10 log10(MSE + 1e-8)``, so identical images give 80 dB.
- :func:`gmsd`: 2 x 2 average pooling (bottom/right zero pad when odd), Prewitt
  gradient magnitude (kernels / 3, zero padding 1), GMS with t = 170 / 255**2,
  population standard deviation of the GMS map. 0 for identical images.
- :func:`mdsi`: values x255, pooling as piq, gray repeated to RGB and turned
  into L, H, M channels, gradient similarity with the fused image, chromaticity
  similarity, 'sum' combination and deviation pooling with complex powers.
  0 for identical images.

SSIM and PSNR grow with similarity; GMSD and MDSI are distances and shrink.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from stemnmf.errors import ConfigError, DataValueError

__all__ = ["ssim", "psnr", "gmsd", "mdsi", "iqa_matrix", "METRICS", "HIGHER_IS_SIMILAR"]

_EPS_PSNR = 1e-8
_PREWITT_SMOOTH = np.full(3, 1.0 / 3.0)
_PREWITT_DIFF = np.array([-1.0, 0.0, 1.0])


def _prepare(reference, image, data_range) -> tuple[np.ndarray, np.ndarray, bool]:
    """Both inputs as float64 (n, H, W) divided by ``data_range``; True if they were 2D."""
    ref = np.asarray(reference)
    img = np.asarray(image)
    if ref.shape != img.shape:
        raise DataValueError(
            f"reference shape {ref.shape} and image shape {img.shape} differ",
            "compare images (or stacks) of the same shape",
        )
    if ref.ndim not in (2, 3) or ref.size == 0:
        raise DataValueError(
            f"images must be (H, W) or stacks (n, H, W), got shape {ref.shape}",
            "pass 2D images or a 3D stack of them",
        )
    for array in (ref, img):
        if array.dtype.kind not in "biuf":
            raise DataValueError(f"images must hold real numbers, got dtype {array.dtype}")
    try:
        data_range = float(data_range)
    except (TypeError, ValueError):
        raise ConfigError(f"data_range={data_range!r} is not a number", "give the images' value range, e.g. 1.0 or 255") from None
    if not np.isfinite(data_range) or data_range <= 0:
        raise ConfigError(f"data_range={data_range!r} must be positive", "give the images' value range, e.g. 1.0 or 255")
    ref = ref.astype(np.float64) / data_range
    img = img.astype(np.float64) / data_range
    if not (np.isfinite(ref).all() and np.isfinite(img).all()):
        raise DataValueError("images contain NaN or Inf", "replace non-finite values before comparing")
    single = ref.ndim == 2
    if single:
        ref, img = ref[None], img[None]
    return ref, img, single


def _result(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _avg_pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Average pooling over non-overlapping ``factor`` x ``factor`` blocks (remainder dropped)."""
    if factor == 1:
        return x
    n, h, w = x.shape
    h2, w2 = h // factor, w // factor
    return x[:, : h2 * factor, : w2 * factor].reshape(n, h2, factor, w2, factor).mean(axis=(2, 4))


def _pad_bottom_right(x: np.ndarray, before: int, after: int) -> np.ndarray:
    if before == 0 and after == 0:
        return x
    return np.pad(x, ((0, 0), (before, after), (before, after)))


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Separable correlation with ``outer(kernel_1d, kernel_1d)`` over (H, W), 'valid' region only."""
    half = kernel_1d.size // 2
    out = ndimage.correlate1d(x, kernel_1d, axis=1, mode="constant")
    out = ndimage.correlate1d(out, kernel_1d, axis=2, mode="constant")
    return out[:, half : x.shape[1] - half, half : x.shape[2] - half]


def _gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """Prewitt gradient magnitude (kernels divided by 3, zero padding 1), same size as ``x``."""
    gx = ndimage.correlate1d(x, _PREWITT_DIFF, axis=2, mode="constant")
    gx = ndimage.correlate1d(gx, _PREWITT_SMOOTH, axis=1, mode="constant")
    gy = ndimage.correlate1d(x, _PREWITT_DIFF, axis=1, mode="constant")
    gy = ndimage.correlate1d(gy, _PREWITT_SMOOTH, axis=2, mode="constant")
    return np.sqrt(gx**2 + gy**2)


def _similarity(a: np.ndarray, b: np.ndarray, constant: float) -> np.ndarray:
    return (2.0 * a * b + constant) / (a**2 + b**2 + constant)


def ssim(reference, image, data_range: float = 1.0):
    """Structural similarity (piq 0.8.0 defaults).

    Parameters
    ----------
    reference, image : array_like
        Gray images (H, W), or stacks (n, H, W) compared pairwise.
    data_range : float, default 1.0
        Value range of the images; both are divided by it.

    Returns
    -------
    float or numpy.ndarray
        SSIM, 1 for identical images; shape (n,) for stacks.

    Raises
    ------
    DataValueError
        If shapes differ, or the image is smaller than the 11 x 11 window
        after downsampling.
    """
    x, y, single = _prepare(reference, image, data_range)
    factor = max(1, round(min(x.shape[-2:]) / 256))
    x, y = _avg_pool(x, factor), _avg_pool(y, factor)
    size = 11
    if min(x.shape[-2:]) < size:
        raise DataValueError(
            f"images of {reference.shape[-2:] if hasattr(reference, 'shape') else np.shape(reference)[-2:]} "
            f"pixels are smaller than the 11 x 11 SSIM window",
            "compare images of at least 11 x 11 pixels",
        )
    kernel = _gaussian_1d(size, 1.5)
    c1, c2 = 0.01**2, 0.03**2
    mu_x = _filter_valid(x, kernel)
    mu_y = _filter_valid(y, kernel)
    mu_xx, mu_yy, mu_xy = mu_x**2, mu_y**2, mu_x * mu_y
    sigma_xx = _filter_valid(x * x, kernel) - mu_xx
    sigma_yy = _filter_valid(y * y, kernel) - mu_yy
    sigma_xy = _filter_valid(x * y, kernel) - mu_xy
    cs = (2.0 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    ss = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs
    return _result(ss.mean(axis=(1, 2)), single)


def psnr(reference, image, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB (piq 0.8.0 defaults).

    ``-10 log10(MSE + 1e-8)`` on images divided by ``data_range``; identical
    images give 80 dB.

    Parameters
    ----------
    reference, image : array_like
        Gray images (H, W), or stacks (n, H, W) compared pairwise.
    data_range : float, default 1.0
        Value range of the images.

    Returns
    -------
    float or numpy.ndarray
        PSNR in dB; shape (n,) for stacks.
    """
    x, y, single = _prepare(reference, image, data_range)
    mse = np.mean((x - y) ** 2, axis=(1, 2))
    return _result(-10.0 * np.log10(mse + _EPS_PSNR), single)


def gmsd(reference, image, data_range: float = 1.0):
    """Gradient magnitude similarity deviation (piq 0.8.0 defaults).

    Parameters
    ----------
    reference, image : array_like
        Gray images (H, W), or stacks (n, H, W) compared pairwise.
    data_range : float, default 1.0
        Value range of the images.

    Returns
    -------
    float or numpy.ndarray
        GMSD, 0 for identical images (a distance); shape (n,) for stacks.
    """
    x, y, single = _prepare(reference, image, data_range)
    t = 170.0 / 255.0**2
    pad = max(x.shape[1] % 2, x.shape[2] % 2)
    x = _avg_pool(_pad_bottom_right(x, 0, pad), 2)
    y = _avg_pool(_pad_bottom_right(y, 0, pad), 2)
    gx, gy = _gradient_magnitude(x), _gradient_magnitude(y)
    gms = (2.0 * gx * gy + t) / (gx**2 + gy**2 + t)
    return _result(gms.std(axis=(1, 2)), single)


# every metric's docstring names its parameters in full, so that help() on one needs no other
def mdsi(reference, image, data_range: float = 1.0):
    """Mean deviation similarity index (piq 0.8.0 defaults, 'sum' combination).

    The reference plays piq's ``x`` and the image its ``y`` (the order Cao et
    al. used: ``mdsi(raw, nmf)``). The index is not symmetric.

    Parameters
    ----------
    reference, image : array_like
        Gray images (H, W), or stacks (n, H, W) compared pairwise.
    data_range : float, default 1.0
        Value range of the images.

    Returns
    -------
    float or numpy.ndarray
        MDSI, 0 for identical images (a distance); shape (n,) for stacks.
    """
    x, y, single = _prepare(reference, image, data_range)
    x, y = x * 255.0, y * 255.0
    c1, c2, c3, alpha, rho, q, o = 140.0, 55.0, 550.0, 0.6, 1.0, 0.25, 0.25
    factor = max(1, round(min(x.shape[-2:]) / 256))
    pad = factor // 2
    if pad:
        x = _pad_bottom_right(x, (factor - 1) // 2, pad)
        y = _pad_bottom_right(y, (factor - 1) // 2, pad)
    x, y = _avg_pool(x, factor), _avg_pool(y, factor)
    # gray repeated to R = G = B, then the L, H, M channels of MDSI
    lx = 0.2989 * x + 0.587 * x + 0.114 * x
    ly = 0.2989 * y + 0.587 * y + 0.114 * y
    hx, hy = (0.30 + 0.04 - 0.35) * x, (0.30 + 0.04 - 0.35) * y
    mx, my = (0.34 - 0.60 + 0.17) * x, (0.34 - 0.60 + 0.17) * y
    gm_x = _gradient_magnitude(lx)
    gm_y = _gradient_magnitude(ly)
    gm_fused = _gradient_magnitude((lx + ly) / 2.0)
    gs = _similarity(gm_x, gm_y, c1) + _similarity(gm_x, gm_fused, c2) - _similarity(gm_y, gm_fused, c2)
    cs = (2.0 * (hx * hy + mx * my) + c3) / (hx**2 + hy**2 + mx**2 + my**2 + c3)
    gcs = alpha * gs + (1.0 - alpha) * cs
    # principal complex power of a real map (negative values have argument pi)
    modulus = np.abs(gcs) ** q
    phase = np.arctan2(np.zeros_like(gcs), gcs) * q
    gcs_q = modulus * np.exp(1j * phase)
    mean_q = gcs_q.mean(axis=(1, 2), keepdims=True)
    deviation = np.abs(gcs_q - mean_q) ** rho
    return _result(deviation.mean(axis=(1, 2)) ** (o / rho), single)


#: The four metrics by name.
METRICS: dict[str, Callable] = {"ssim": ssim, "psnr": psnr, "gmsd": gmsd, "mdsi": mdsi}
#: True where a larger value means more similar images.
HIGHER_IS_SIMILAR: dict[str, bool] = {"ssim": True, "psnr": True, "gmsd": False, "mdsi": False}


def iqa_matrix(patterns, metric: str, data_range: float = 1.0, *, batch: int = 64) -> np.ndarray:
    """A metric between every pair of patterns.

    Parameters
    ----------
    patterns : array_like, shape (k, H, W)
        Gray images, e.g. the representative patterns of k components.
    metric : {'ssim', 'psnr', 'gmsd', 'mdsi'}
        Which metric.
    data_range : float, default 1.0
        Value range of the patterns.
    batch : int, default 64
        Pairs computed at once (bounds memory).

    Returns
    -------
    numpy.ndarray, shape (k, k)
        ``M[i, j] = metric(reference=patterns[i], image=patterns[j])``; the
        diagonal holds the value for identical images.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown IQA metric {metric!r}", f"use one of {', '.join(METRICS)}")
    patterns = np.asarray(patterns)
    if patterns.ndim != 3:
        raise DataValueError(f"patterns must be a stack (k, H, W), got shape {patterns.shape}")
    k = patterns.shape[0]
    func = METRICS[metric]
    ii, jj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    values = np.empty(k * k)
    for start in range(0, k * k, batch):
        sl = slice(start, start + batch)
        values[sl] = func(patterns[ii[sl]], patterns[jj[sl]], data_range=data_range)
    return values.reshape(k, k)
