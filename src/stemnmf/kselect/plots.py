"""Matplotlib drawings of the k selection, from plain arrays (the report calls them)."""

from __future__ import annotations

import json

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_loss",
    "plot_iqa",
    "plot_patterns",
    "plot_most_similar",
    "plot_votes",
    "plot_evidence_curves",
    "fig_kselect_evidence",
]

_SIGNAL_NAMES = {
    "knee": "loss knee",
    "iqa": "IQA (Cao)",
    "stability": "split-half stability",
    "heldout": "held-out error",
    "coherence": "map coherence",
    "noise": "noise",
    "peaks": "peak groups",
}

_TITLES = {"ssim": "SSIM", "psnr": "PSNR (dB)", "gmsd": "GMSD", "mdsi": "MDSI"}


def plot_loss(ax, k, loss, *, knee=None, k_range=None, chosen_k=None, pca_elbow=None):
    """The K-component loss curve with its knee, range of interest and chosen k.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    k, loss : array_like
        ``/kselect/k`` and ``/kselect/loss``.
    knee : int, optional
    k_range : (int, int), optional
        First and last k of the range of interest (``/kselect/range``).
    chosen_k, pca_elbow : int, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    k = np.asarray(k)
    ax.plot(k, np.asarray(loss), "o-", color="C0", ms=4, label="K-component loss")
    if k_range is not None:
        ax.axvspan(float(k_range[0]) - 0.5, float(k_range[-1]) + 0.5, color="C2", alpha=0.15, label="range of interest")
    if knee is not None:
        ax.axvline(int(knee), color="C3", ls="--", label=f"knee k = {int(knee)}")
    if chosen_k is not None:
        ax.axvline(int(chosen_k), color="C1", lw=2, alpha=0.7, label=f"chosen k = {int(chosen_k)}")
    if pca_elbow is not None:
        ax.axvline(int(pca_elbow), color="0.5", ls=":", label=f"PCA elbow k = {int(pca_elbow)}")
    ax.set_xticks(k)
    ax.set_xlabel("number of components k")
    ax.set_ylabel("mean |X - WH|")
    ax.legend(fontsize=8)
    return ax


def plot_iqa(ax, matrix, *, metric="ssim", annotate=True, colorbar=True):
    """One IQA matrix between the components of one k.

    The diagonal (a component with itself) is left blank; darker cells are
    more similar pairs for every metric.

    Returns
    -------
    matplotlib.image.AxesImage
    """
    m = np.array(matrix, dtype=float)
    k = m.shape[0]
    np.fill_diagonal(m, np.nan)
    higher = metric in ("ssim", "psnr")
    image = ax.imshow(m, cmap="Blues" if higher else "Blues_r", interpolation="nearest")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("component (image)")
    ax.set_ylabel("component (reference)")
    ax.set_title(f"{_TITLES.get(metric, metric)}, k = {k}")
    if annotate and k <= 12:
        fmt = "{:.1f}" if metric == "psnr" else "{:.2f}"
        for i in range(k):
            for j in range(k):
                if i != j:
                    ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=6)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return image


def plot_patterns(fig, patterns, *, k=None, scale="sqrt", cmap="inferno"):
    """The component patterns of one k in a grid of axes on ``fig``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    patterns : array_like, shape (k, qy, qx)
        ``/kselect/patterns/<k>``.
    scale : {'sqrt', 'log', 'linear'}
        Display scaling (diffraction patterns span decades).

    Returns
    -------
    numpy.ndarray of Axes
    """
    p = np.clip(np.asarray(patterns, dtype=float), 0, None)
    n = p.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    shown = np.sqrt(p) if scale == "sqrt" else np.log1p(p / (p.max() or 1) * 1e3) if scale == "log" else p
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(shown[i], cmap=cmap)
        ax.set_title(f"{i}", fontsize=8)
    if k is not None:
        fig.suptitle(f"component patterns, k = {int(k)}")
    return axes


def plot_most_similar(ax, k_range, most_similar, *, metric="ssim", threshold=None, chosen_k=None):
    """The most similar pair's value against k for one metric, with its threshold."""
    ks = np.asarray(k_range)
    ax.plot(ks, np.asarray(most_similar, dtype=float), "o-", ms=4)
    if threshold is not None:
        ax.axhline(float(threshold), color="C3", ls="--", label="redundancy threshold")
    if chosen_k is not None:
        ax.axvline(int(chosen_k), color="C1", lw=2, alpha=0.7)
    ax.set_xticks(ks)
    ax.set_xlabel("k")
    ax.set_ylabel(f"most similar pair, {_TITLES.get(metric, metric)}")
    return ax


def plot_votes(ax, votes, *, chosen_k=None, plausible_range=None):
    """The k each kind of evidence voted for, the plausible range and the chosen k.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    votes : dict of str to int
        ``/kselect/votes`` (JSON decoded).
    chosen_k : int, optional
    plausible_range : (int, int), optional
    """
    names = list(votes)
    ks = [int(votes[name]) for name in names]
    y = np.arange(len(names))
    if plausible_range is not None:
        ax.axvspan(float(plausible_range[0]) - 0.5, float(plausible_range[1]) + 0.5, color="C2", alpha=0.15,
                   label="plausible range")
    ax.plot(ks, y, "o", color="C0", ms=7)
    if chosen_k is not None:
        ax.axvline(int(chosen_k), color="C1", lw=2, alpha=0.7, label=f"chosen k = {int(chosen_k)}")
    ax.set_yticks(y)
    ax.set_yticklabels([_SIGNAL_NAMES.get(name, name) for name in names])
    ax.set_xlabel("k voted for")
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_evidence_curves(ax, k, *, heldout_error=None, stability=None, coherence_k=None, coherence=None,
                         stability_threshold=None, coherence_threshold=None):
    """Held-out error (relative to its minimum, left axis), split-half stability and map coherence (right axis)."""
    k = np.asarray(k)
    if heldout_error is not None:
        err = np.asarray(heldout_error, dtype=float)
        ax.semilogy(k, err / max(float(err.min()), 1e-300), "o-", color="C0", ms=4, label="held-out error / min")
        ax.set_ylabel("held-out error / minimum")
    twin = ax.twinx()
    if stability is not None:
        twin.plot(k, np.asarray(stability, dtype=float), "s-", color="C3", ms=4, label="split-half stability")
        if stability_threshold is not None:
            twin.axhline(float(stability_threshold), color="C3", ls="--", lw=1)
    if coherence is not None and coherence_k is not None:
        twin.plot(np.asarray(coherence_k), np.asarray(coherence, dtype=float), "^-", color="C4", ms=4,
                  label="least / median map coherence")
        if coherence_threshold is not None:
            twin.axhline(float(coherence_threshold), color="C4", ls=":", lw=1)
    twin.set_ylim(-0.05, 1.05)
    twin.set_ylabel("stability, coherence")
    ax.set_xlabel("number of components k")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    return ax


def fig_kselect_evidence(results):
    """The votes for k and the curves behind the new evidence, from a results file's datasets (None without votes)."""
    if "/kselect/votes" not in results:
        return None
    votes = json.loads(str(results["/kselect/votes"]))
    if not votes:
        return None
    chosen = int(results["/kselect/chosen_k"]) if "/kselect/chosen_k" in results else None
    plausible = np.asarray(results["/kselect/plausible_range"]) if "/kselect/plausible_range" in results else None
    has_curves = "/kselect/heldout/k" in results
    fig = Figure(figsize=(11 if has_curves else 6, 3.6))
    axes = np.atleast_1d(fig.subplots(1, 2 if has_curves else 1))
    plot_votes(axes[0], votes, chosen_k=chosen, plausible_range=plausible)
    axes[0].set_title("votes for k")
    if has_curves:
        limits = {}
        if "/kselect/thresholds_combined" in results:
            limits = json.loads(str(results["/kselect/thresholds_combined"]))
        stability = np.asarray(results["/kselect/heldout/stability"]).mean(axis=0)
        coherence_k = results["/kselect/coherence/k"] if "/kselect/coherence/k" in results else None
        coherence = next((results[f"/kselect/coherence/{name}"] for name in ("ratio", "least")
                          if f"/kselect/coherence/{name}" in results), None)
        plot_evidence_curves(axes[1], results["/kselect/heldout/k"],
                             heldout_error=results["/kselect/heldout/mean_error"],
                             stability=stability, coherence_k=coherence_k, coherence=coherence,
                             stability_threshold=limits.get("stability"), coherence_threshold=limits.get("coherence"))
        axes[1].set_title("held-out error, stability, coherence")
    fig.tight_layout()
    return fig
