"""A preview figure of a simulated scan: mean and max pattern, dark-field image, truth maps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stemnmf.engine import Engine
from stemnmf.errors import ConfigError

__all__ = ["preview", "scan_summary"]


def _summary_kernel(block, chunk, *, annulus, n_positions):
    own = block[chunk.own]
    flat = own.reshape(-1, *own.shape[2:])
    total = flat.sum(axis=0, dtype=np.float64)
    peak = flat.max(axis=0)
    dark = np.zeros(n_positions, np.float64)
    dark[chunk.positions] = flat[:, annulus].sum(axis=1, dtype=np.float64)
    return total, peak, dark


def scan_summary(dataset, engine=None, *, inner: float | None = None, outer: float | None = None):
    """Mean pattern, maximum pattern and an annular dark-field image, in one pass.

    Parameters
    ----------
    dataset : Dataset4D
    engine : stemnmf.engine.Engine, optional
    inner, outer : float, optional
        Annulus of the dark-field detector in 1/Å (default 0.3 to 1.0, or 15 %
        to 95 % of the detector half-width when q_pixel is unknown).

    Returns
    -------
    mean : numpy.ndarray
        (qy, qx) float64.
    peak : numpy.ndarray
        (qy, qx) float32.
    dark_field : numpy.ndarray
        (sy, sx) float64.
    """
    engine = engine or Engine()
    sy, sx, qy, qx = dataset.shape
    cal = dataset.calibration
    oy, ox = cal.origin if cal.origin is not None else (qy / 2, qx / 2)
    yy, xx = np.meshgrid(np.arange(qy) - oy, np.arange(qx) - ox, indexing="ij")
    radius = np.hypot(yy, xx)
    half = min(qy, qx) / 2
    if cal.q_pixel:
        inner_px = (0.3 if inner is None else inner) / cal.q_pixel
        outer_px = (1.0 if outer is None else outer) / cal.q_pixel
    else:
        inner_px, outer_px = 0.15 * half, 0.95 * half
    annulus = (radius >= inner_px) & (radius <= outer_px)
    if not annulus.any():
        annulus = radius >= 0.15 * half
    total, peak, dark = engine.reduce(
        _summary_kernel,
        dataset,
        combine=("sum", "max", "sum"),
        kwargs={"annulus": annulus, "n_positions": sy * sx},
        desc="preview",
    )
    return total / (sy * sx), peak, dark.reshape(sy, sx)


def preview(dataset, truth=None, path: str | os.PathLike = "preview.png", *, engine=None, dpi: int = 100) -> Path:
    """Save a preview figure of a (simulated) scan.

    Panels: mean pattern and maximum pattern (log scale), an annular
    dark-field image, and with ground truth the grain with the longest path at
    each position and the number of grains along the beam.

    Returns
    -------
    pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise ConfigError(f"preview file {path} has an unknown image type", "use .png, .pdf, .svg or .jpg")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist", "create it first")
    mean, peak, dark = scan_summary(dataset, engine)
    n_panels = 5 if truth is not None else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(3.2 * n_panels, 3.6), constrained_layout=True)
    q = dataset.calibration.q_pixel
    for ax, image, title in ((axes[0], mean, "mean pattern"), (axes[1], peak, "max pattern")):
        ax.imshow(np.log10(np.maximum(image, 0) + 1.0), cmap="magma")
        ax.set_title(title + (f" ({q:g} 1/Å per px)" if q else ""), fontsize=9)
        ax.set_axis_off()
    axes[2].imshow(dark, cmap="gray")
    axes[2].set_title("annular dark field", fontsize=9)
    axes[2].set_axis_off()
    if truth is not None:
        thickness = truth.thickness if truth.thickness is not None else truth.labels.astype(np.float32)
        count = truth.labels.sum(axis=0)
        grain = np.where(count > 0, np.argmax(thickness, axis=0), -1) if len(thickness) else np.full(count.shape, -1)
        shown = np.ma.masked_less(grain, 0)
        axes[3].imshow(shown, cmap="tab20", interpolation="nearest", vmin=0, vmax=max(19, truth.n_grains - 1))
        axes[3].set_title(f"truth: {truth.n_grains} grains (longest path)", fontsize=9)
        axes[3].set_axis_off()
        im = axes[4].imshow(np.minimum(count, 3), cmap="viridis", vmin=0, vmax=3, interpolation="nearest")
        axes[4].set_title("grains along the beam", fontsize=9)
        axes[4].set_axis_off()
        bar = fig.colorbar(im, ax=axes[4], ticks=[0, 1, 2, 3], shrink=0.8)
        bar.ax.set_yticklabels(["0", "1", "2", "3+"])
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
