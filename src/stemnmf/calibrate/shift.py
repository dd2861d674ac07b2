"""Sub-pixel shifts of patterns (bilinear: intensities stay non-negative, the centre of mass exact)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stemnmf.calibrate.common import as_stack
from stemnmf.engine import Engine
from stemnmf.errors import CalibrationError, ConfigError

__all__ = ["shift_patterns", "shifted_sum", "shifted_mask", "correct_shift"]


_BATCH = 64


def _shift_integer(image: np.ndarray, dy: int, dx: int, out: np.ndarray, weight) -> None:
    """``out[..., y, x] += weight * image[..., y - dy, x - dx]`` with zero outside."""
    qy, qx = image.shape[-2:]
    if abs(dy) >= qy or abs(dx) >= qx:
        return
    ys_out = slice(max(dy, 0), qy + min(dy, 0))
    xs_out = slice(max(dx, 0), qx + min(dx, 0))
    ys_in = slice(max(-dy, 0), qy + min(-dy, 0))
    xs_in = slice(max(-dx, 0), qx + min(-dx, 0))
    out[..., ys_out, xs_out] += weight * image[..., ys_in, xs_in]


def shift_patterns(patterns, shifts) -> np.ndarray:
    """Move each pattern by a sub-pixel shift with bilinear interpolation.

    ``out[y, x] = in[y - dy, x - dx]``; pixels that come from outside the
    detector are 0. Non-negative input stays non-negative and the centre of
    mass of content away from the edges moves by exactly the shift.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx).
    shifts : array_like
        (..., 2) shifts (dy, dx) in pixels, one per pattern (or one for all).

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``patterns``.
    """
    stack, lead = as_stack(patterns)
    n = stack.shape[0]
    shifts = np.broadcast_to(np.asarray(shifts, dtype=np.float64), (*lead, 2)).reshape(n, 2)
    if not np.isfinite(shifts).all():
        raise ConfigError("shifts hold NaN or Inf", "fill in missing origins (origin_fit) before shifting")
    out = np.zeros_like(stack)
    base = np.floor(shifts).astype(np.int64)
    frac = (shifts - base).astype(np.float32)
    # patterns with the same whole-pixel shift are interpolated together, a few
    # at a time so that the temporaries stay small
    keys, groups = np.unique(base, axis=0, return_inverse=True)
    groups = groups.ravel()
    for g, (iy, ix) in enumerate(keys):
        members = np.nonzero(groups == g)[0]
        for start in range(0, members.size, _BATCH):
            batch = members[start : start + _BATCH]
            fy = frac[batch, 0][:, None, None]
            fx = frac[batch, 1][:, None, None]
            img = stack[batch]
            acc = np.zeros_like(img)
            _shift_integer(img, int(iy), int(ix), acc, (1 - fy) * (1 - fx))
            _shift_integer(img, int(iy) + 1, int(ix), acc, fy * (1 - fx))
            _shift_integer(img, int(iy), int(ix) + 1, acc, (1 - fy) * fx)
            _shift_integer(img, int(iy) + 1, int(ix) + 1, acc, fy * fx)
            out[batch] = acc
    return out.reshape(*lead, *stack.shape[1:])


_CORNERS = ((0, 0), (1, 0), (0, 1), (1, 1))


def shifted_sum(patterns, shifts) -> np.ndarray:
    """``sum_i shift_patterns(patterns[i], shifts[i])`` without shifting each pattern.

    Bilinear shifting is linear: patterns sharing a whole-pixel shift are
    first combined with their four interpolation weights (one matrix
    product), and only those four images are shifted. One pattern (qy, qx)
    with many shifts gives the sum of its shifted copies.

    Returns
    -------
    numpy.ndarray
        (qy, qx) float64.
    """
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    single = np.ndim(patterns) == 2
    stack, _ = as_stack(patterns)
    if not single and stack.shape[0] != shifts.shape[0]:
        raise ConfigError(f"{stack.shape[0]} patterns but {shifts.shape[0]} shifts")
    if not np.isfinite(shifts).all():
        raise ConfigError("shifts hold NaN or Inf", "leave out positions without an origin")
    qy, qx = stack.shape[1:]
    out = np.zeros((qy, qx), dtype=np.float64)
    if shifts.shape[0] == 0:
        return out
    base = np.floor(shifts).astype(np.int64)
    fy, fx = (shifts - base).T
    weights = np.stack([(1 - fy) * (1 - fx), fy * (1 - fx), (1 - fy) * fx, fy * fx])  # (4, n)
    keys, groups = np.unique(base, axis=0, return_inverse=True)
    groups = groups.ravel()
    for g, (iy, ix) in enumerate(keys):
        members = np.nonzero(groups == g)[0]
        if single:
            combined = weights[:, members].sum(axis=1)[:, None] * stack[0].reshape(1, -1).astype(np.float64)
        else:
            combined = np.zeros((4, qy * qx), dtype=np.float64)
            for start in range(0, members.size, 4 * _BATCH):
                batch = members[start : start + 4 * _BATCH]
                # einsum without BLAS: small products, and BLAS threads only fight the engine's
                combined += np.einsum(
                    "kg,gp->kp", weights[:, batch].astype(np.float32), stack[batch].reshape(batch.size, -1),
                    optimize=False,
                )
        combined = combined.reshape(4, qy, qx)
        for k, (dy, dx) in enumerate(_CORNERS):
            _shift_integer(combined[k], int(iy) + dy, int(ix) + dx, out, 1.0)
    return out


def shifted_mask(mask, shifts, shape) -> np.ndarray:
    """The mask after shifting patterns by ``shifts``: grown by the largest shift (rounded up).

    Bilinear interpolation reads at most ``ceil(|shift|)`` px away, so the
    pixels filled from outside the detector or from masked pixels are those
    within that distance of the edges or of the mask.

    Raises
    ------
    CalibrationError
        When nothing is left unmasked.
    """
    shifts = np.asarray(shifts, dtype=np.float64)
    reach = int(np.ceil(np.abs(shifts).max())) if shifts.size else 0
    out = np.zeros(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    if reach:
        if out.any():
            out = ndimage.binary_dilation(out, structure=np.ones((3, 3), bool), iterations=reach)
        out[:reach] = out[-reach:] = True
        out[:, :reach] = out[:, -reach:] = True
    if out.all():
        raise CalibrationError(
            f"shifts of up to {reach} px leave no unmasked detector pixel", "crop less or check the origins"
        )
    return out


def _shift_kernel(block, chunk, *, shifts):
    own = block[chunk.own]
    return shift_patterns(own.reshape(-1, *own.shape[2:]), shifts[chunk.positions])


def correct_shift(dataset, *, origins=None, reference=None, engine=None):
    """Move every pattern so that its origin lands on ``reference``.

    Parameters
    ----------
    dataset : Dataset4D
    origins : array_like, optional
        (sy, sx, 2) origins; default ``dataset.origins``.
    reference : tuple of float, optional
        Target (qy, qx); default the mean origin.
    engine : Engine, optional

    Returns
    -------
    Dataset4D
        Lazy when the input is lazy; ``origins`` all equal to ``reference``,
        ``Calibration.origin = reference``, and the mask grown by the largest
        shift (rounded up) so that pixels filled from outside the detector or
        from masked pixels are masked.
    """
    engine = engine or Engine()
    origins = dataset.origins if origins is None else np.asarray(origins, dtype=np.float64)
    if origins is None:
        raise CalibrationError("the dataset has no origins to correct", "measure them first (origin='com')")
    origins = np.asarray(origins, dtype=np.float64)
    if origins.shape != (*dataset.scan_shape, 2):
        raise ConfigError(f"origins shape {origins.shape} does not match the scan {dataset.scan_shape}")
    if not np.isfinite(origins).all():
        raise CalibrationError(
            "some origins are missing (NaN)", "fit a surface over the scan first (origin_fit='plane')"
        )
    if reference is None:
        reference = origins.reshape(-1, 2).mean(axis=0)
    reference = np.asarray(reference, dtype=np.float64)
    shifts = (reference[None, None, :] - origins).reshape(-1, 2)
    mask = shifted_mask(dataset.mask, shifts, dataset.pattern_shape)
    target = np.broadcast_to(reference.astype(np.float32), (*dataset.scan_shape, 2)).copy()
    return engine.transform(
        _shift_kernel,
        dataset,
        kwargs={"shifts": shifts},
        desc="shift correction",
        mask=mask if (mask.any() or dataset.mask is not None) else None,
        origins=target,
        calibration=dataset.calibration.replace(origin=tuple(float(v) for v in reference)),
    )
