"""Noise standard deviation (NSD) of patterns, and the NSD matrix for comparing preprocessing.

Cao et al. (2025) define the NSD of a pattern as the standard deviation of its
pixel values about their mean. :func:`nsd` computes exactly that (over
unmasked pixels, population standard deviation). Because Bragg spots raise it
too, :func:`nsd_background` takes the same standard deviation over a
background region only: the detector corners outside a circle about the
centre (the outermost ring), where a pattern holds nothing but noise and
diffuse background. :func:`nsd_matrix` tabulates either measure for several
preprocessing variants at the same probe positions, as in the paper's NSD
matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from stemnmf.calibrate.common import as_stack, check_mask
from stemnmf.errors import ConfigError, DataValueError
from stemnmf.filters.methods import preprocess

__all__ = ["nsd", "nsd_background", "background_region", "NSDMatrix", "nsd_matrix", "compare_preprocessing"]


def nsd(patterns, *, mask=None):
    """Standard deviation of each pattern's unmasked pixel values about their mean.

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx).
    mask : array_like of bool, optional

    Returns
    -------
    float or numpy.ndarray
        A float for one pattern, else shape (...,).
    """
    stack, lead = as_stack(patterns)
    mask = check_mask(mask, stack.shape[1:])
    values = stack[:, ~mask].astype(np.float64)
    out = values.std(axis=1)
    return float(out[0]) if not lead else out.reshape(lead)


def background_region(shape, *, center=None, radius=None, mask=None, min_pixels: int = 16) -> np.ndarray:
    """Pixels farther than ``radius`` from ``center`` and unmasked (True = used).

    Parameters
    ----------
    shape : tuple of int
        (qy, qx).
    center : tuple of float, optional
        Default the detector centre.
    radius : float, optional
        Radius of the outermost ring (plus a margin); default the distance from
        the centre to the nearest detector edge, which leaves the corners.
    mask : array_like of bool, optional
    min_pixels : int, default 16

    Raises
    ------
    DataValueError
        When fewer than ``min_pixels`` pixels remain.
    """
    qy, qx = shape
    mask = check_mask(mask, shape)
    if center is None:
        center = ((qy - 1) / 2.0, (qx - 1) / 2.0)
    if radius is None:
        radius = min(center[0] + 0.5, qy - 0.5 - center[0], center[1] + 0.5, qx - 0.5 - center[1])
    yy, xx = np.indices(shape)
    region = (np.hypot(yy - center[0], xx - center[1]) > radius) & ~mask
    if region.sum() < min_pixels:
        raise DataValueError(
            f"only {int(region.sum())} detector pixels lie outside radius {radius:.1f} px of the centre",
            "give a smaller radius (the outermost ring) or use the NSD over the whole pattern",
        )
    return region


def nsd_background(patterns, *, center=None, radius=None, mask=None, min_pixels: int = 16):
    """NSD over the background region (detector corners outside the outermost ring).

    Parameters
    ----------
    patterns : array_like
        (..., qy, qx).
    center, radius, mask, min_pixels
        As in :func:`background_region`.

    Returns
    -------
    float or numpy.ndarray
        A float for one pattern, else shape (...,).
    """
    stack, lead = as_stack(patterns)
    region = background_region(stack.shape[1:], center=center, radius=radius, mask=mask, min_pixels=min_pixels)
    out = stack[:, region].astype(np.float64).std(axis=1)
    return float(out[0]) if not lead else out.reshape(lead)


@dataclasses.dataclass
class NSDMatrix:
    """NSD of several preprocessing variants at the same probe positions.

    Attributes
    ----------
    names : list of str
        The variants (rows).
    positions : numpy.ndarray
        (m,) flat probe-position indices (y * sx + x) (columns).
    values : numpy.ndarray
        (n_variants, m) NSD of each variant at each position.
    region : str
        'all' (whole pattern) or 'background'.
    """

    names: list[str]
    positions: np.ndarray
    values: np.ndarray
    region: str

    @property
    def mean(self) -> np.ndarray:
        """(n_variants,) mean NSD over the positions."""
        return self.values.mean(axis=1)

    @property
    def ratio(self) -> np.ndarray:
        """(n_variants, n_variants): mean NSD of row variant / mean NSD of column variant."""
        mean = self.mean
        with np.errstate(divide="ignore", invalid="ignore"):
            return mean[:, None] / mean[None, :]

    def to_results(self, prefix: str = "/filters/nsd") -> dict:
        """``{path: value}`` for the results file."""
        return {
            f"{prefix}/names": np.asarray(self.names, dtype=str),
            f"{prefix}/positions": np.asarray(self.positions, dtype=np.int64),
            f"{prefix}/values": np.asarray(self.values, dtype=np.float64),
            f"{prefix}/region": self.region,
        }

    def table(self) -> str:
        """A plain-text table: one row per variant, mean NSD and ratio to the first."""
        width = max(len(n) for n in self.names)
        lines = [f"{'variant':<{width}}  mean NSD  ratio to {self.names[0]}"]
        for name, mean, ratio in zip(self.names, self.mean, self.ratio[:, 0]):
            lines.append(f"{name:<{width}}  {mean:8.4g}  {ratio:8.3f}")
        return "\n".join(lines)


def _default_positions(n_positions_total: int, count: int) -> np.ndarray:
    count = min(int(count), n_positions_total)
    return np.unique(np.linspace(0, n_positions_total - 1, count).round().astype(np.int64))


def _patterns_at(variant, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(m, qy, qx) patterns of a Dataset4D or array at flat positions, and its mask."""
    if hasattr(variant, "scan_shape") and hasattr(variant, "read_rows"):
        sy, sx = variant.scan_shape
        if positions.max() >= sy * sx:
            raise ConfigError(f"positions must be flat indices in [0, {sy * sx})")
        qy, qx = variant.pattern_shape
        stack = np.empty((positions.size, qy, qx), dtype=np.float32)
        rows = positions // sx
        for row in np.unique(rows):
            block = variant.read_rows(int(row), int(row) + 1)[0]
            where = np.nonzero(rows == row)[0]
            stack[where] = block[positions[where] % sx]
        return stack, variant.mask
    array = np.asarray(variant)
    if array.ndim < 3:
        raise DataValueError(f"a variant must hold several patterns (..., qy, qx), got shape {array.shape}")
    flat = array.reshape(-1, *array.shape[-2:])
    return flat[positions].astype(np.float32), None


def nsd_matrix(
    variants: Mapping[str, object],
    *,
    positions: Sequence[int] | None = None,
    n_positions: int = 8,
    region: str = "all",
    center=None,
    radius=None,
    mask=None,
) -> NSDMatrix:
    """Tabulate the NSD of several preprocessing variants at the same probe positions.

    Parameters
    ----------
    variants : mapping of str to Dataset4D or array
        e.g. ``{'raw': ds, 'mean3': preprocess(ds, 'mean3')}``; arrays are
        (sy, sx, qy, qx) or (n, qy, qx), all with the same positions.
    positions : sequence of int, optional
        Flat probe-position indices; default ``n_positions`` evenly spread.
    region : {'all', 'background'}
        NSD over the whole pattern (the paper's definition) or the background region.
    center, radius : optional
        Background region (see :func:`background_region`).
    mask : array_like of bool, optional
        Extra mask; a dataset's own mask is always applied.

    Returns
    -------
    NSDMatrix
    """
    if not variants:
        raise ConfigError("nsd_matrix needs at least one variant")
    if region not in ("all", "background"):
        raise ConfigError(f"region={region!r} is unknown", "use 'all' or 'background'")
    names = list(variants)
    first = variants[names[0]]
    total = first.n_positions if hasattr(first, "n_positions") else int(np.prod(np.shape(first)[:-2]))
    pos = _default_positions(total, n_positions) if positions is None else np.asarray(positions, dtype=np.int64)
    if pos.size == 0 or pos.min() < 0 or pos.max() >= total:
        raise ConfigError(f"positions must be flat indices in [0, {total})")
    rows = []
    for name in names:
        stack, own_mask = _patterns_at(variants[name], pos)
        combined = np.zeros(stack.shape[1:], dtype=bool)
        for m in (own_mask, mask):
            if m is not None:
                combined |= np.asarray(m, dtype=bool)
        if region == "all":
            rows.append(nsd(stack, mask=combined))
        else:
            rows.append(nsd_background(stack, center=center, radius=radius, mask=combined))
    return NSDMatrix(names=names, positions=pos, values=np.stack(rows).astype(np.float64), region=region)


def compare_preprocessing(
    dataset,
    methods: Sequence[str] = ("none", "mean3", "epattern", "lowrank"),
    *,
    positions: Sequence[int] | None = None,
    n_positions: int = 8,
    region: str = "all",
    center=None,
    radius=None,
    options: Mapping[str, Mapping] | None = None,
    engine=None,
) -> NSDMatrix:
    """Run several preprocessing methods on a dataset and tabulate their NSD.

    Parameters
    ----------
    dataset : Dataset4D
    methods : sequence of str
        Methods of :func:`stemnmf.filters.preprocess`.
    options : mapping, optional
        Per-method keyword options, e.g. ``{'lowrank': {'rank': 5}}``.
    positions, n_positions, region, center, radius
        As in :func:`nsd_matrix`; the background centre defaults to
        ``Calibration.origin``.
    engine : Engine, optional

    Returns
    -------
    NSDMatrix
        Rows named after the methods ('none' is the raw data).
    """
    options = dict(options or {})
    unknown = set(options) - set(methods)
    if unknown:
        raise ConfigError(f"options given for methods not compared: {sorted(unknown)}")
    if center is None and dataset.calibration.origin is not None:
        center = dataset.calibration.origin
    variants = {m: preprocess(dataset, m, engine=engine, **dict(options.get(m, {}))) for m in methods}
    return nsd_matrix(
        variants, positions=positions, n_positions=n_positions, region=region, center=center, radius=radius
    )
