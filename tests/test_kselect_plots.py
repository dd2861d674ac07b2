"""The drawing helpers put the given arrays on the axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stemnmf.kselect.plots import plot_iqa, plot_loss, plot_most_similar, plot_patterns  # noqa: E402


def test_plot_loss_marks_knee_range_and_choice():
    fig = Figure()
    ax = fig.subplots()
    k = np.arange(3, 11)
    loss = 1.0 / k
    plot_loss(ax, k, loss, knee=5, k_range=(3, 9), chosen_k=6, pca_elbow=4)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), k)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), loss)
    vertical = sorted(line.get_xdata()[0] for line in ax.lines[1:])
    assert vertical == [4, 5, 6]  # PCA elbow, knee, chosen k
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "knee k = 5" in labels and "chosen k = 6" in labels and "range of interest" in labels


def test_plot_iqa_blanks_the_diagonal():
    fig = Figure()
    ax = fig.subplots()
    matrix = np.arange(9.0).reshape(3, 3)
    image = plot_iqa(ax, matrix, metric="gmsd")
    shown = np.ma.getdata(image.get_array())
    assert np.isnan(np.diag(shown)).all()
    assert shown[0, 1] == 1.0 and shown[2, 1] == 7.0
    assert len(ax.texts) == 6  # off-diagonal values written in the cells
    assert ax.get_title() == "GMSD, k = 3"


def test_plot_patterns_and_most_similar():
    fig = Figure()
    axes = plot_patterns(fig, np.random.default_rng(0).random((5, 8, 8)), k=5)
    assert len(axes) == 6 and sum(ax.axison for ax in axes) == 5  # a 2 x 3 grid, the last one off
    fig2 = Figure()
    ax = fig2.subplots()
    plot_most_similar(ax, [4, 5, 6], [0.1, 0.2, 0.9], metric="ssim", threshold=0.85, chosen_k=5)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.1, 0.2, 0.9])
    assert ax.lines[1].get_ydata()[0] == 0.85
