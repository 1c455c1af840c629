"""Chapter 8's figures: sweep heat maps with spreads and the best-by-validation path, probe curves, the 2x2."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from tl_course.book.plots import plot_probe_curves, plot_regimes, plot_sweep_heatmap

pytestmark = pytest.mark.filterwarnings("error")


def _render(fig: Figure) -> None:
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def test_heatmap_shows_mean_spread_and_the_best_path():
    mean = np.array([[.70, .75, .72], [.80, .85, .86]])
    spread = np.array([[.01, .02, .03], [.00, .01, np.nan]])
    fig = plot_sweep_heatmap(mean, [10, 250], [1, 2, 3], "k", "n", title="EuroSAT", spread=spread, best=[1, 2])
    _render(fig)
    ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[0, 0] == "0.70\n±0.01" and texts[1, 2] == "0.86"  # NaN spread: the mean alone
    path = [line for line in ax.lines if line.get_label() == "best by validation"][0]
    assert list(path.get_xdata()) == [1, 2] and list(path.get_ydata()) == pytest.approx([0.3, 1.3])
    outlined = sorted((p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches)
    assert outlined == [(1.0, 0.0), (2.0, 1.0)]
    assert ax.get_title() == "EuroSAT"


def test_heatmap_rejects_a_bad_path_or_spread():
    with pytest.raises(ValueError, match="one column index"):
        plot_sweep_heatmap(np.zeros((2, 3)), [1, 2], [1, 2, 3], "k", "n", best=[0, 3])
    with pytest.raises(ValueError, match="spread has shape"):
        plot_sweep_heatmap(np.zeros((2, 3)), [1, 2], [1, 2, 3], "k", "n", spread=np.zeros((3, 2)))


def test_heatmap_draws_into_a_given_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plot_sweep_heatmap(np.ones((1, 2)), [5], [1, 2], "k", "n", ax=axes[1], best=[0]) is fig
    assert axes[1].lines and not axes[0].lines


def test_probe_curves_one_line_per_domain_with_the_best_cut_ringed():
    fig = plot_probe_curves({"pets": ([1, 2, 3], [.5, .7, .9]), "EuroSAT": ([1, 2, 3], [.6, .9, .8], [.01, .02, .01])},
                            chance={"pets": 1 / 3})
    _render(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pets", "EuroSAT"]
    rings = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
    assert sorted((float(r.get_xdata()[0]), float(r.get_ydata()[0])) for r in rings) == [(2.0, .9), (3.0, .9)]
    assert any(line.get_linestyle() == ":" and line.get_ydata()[0] == pytest.approx(1 / 3) for line in ax.lines)
    with pytest.raises(ValueError, match="same length"):
        plot_probe_curves({"x": ([1, 2], [.5])})


def test_regimes_colours_agreement_and_keeps_the_texts():
    fig = plot_regimes([["a", "b"], ["c", "d"]], agree=[[True, False], [None, True]], title="2x2")
    _render(fig)
    axes = fig.axes
    assert [ax.texts[0].get_text() for ax in axes] == ["a", "b", "c", "d"]
    colours = [matplotlib.colors.to_hex(ax.get_facecolor()) for ax in axes]
    assert colours == ["#d9f2d9", "#ffe0b3", "#eeeeee", "#d9f2d9"]
    assert axes[0].get_title() == "similar to ImageNet" and axes[2].get_ylabel() == "large data"
    with pytest.raises(ValueError, match="2 rows x 2 columns"):
        plot_regimes([["a", "b"]])
