"""tl_course.book.plots: what each figure shows (titles, colours, cell texts, pixel values), read back from the artists."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display in CI

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from tl_course.book.plots import plot_confusion, plot_heatmap, plot_history, plot_topk, show_images

# Any warning (e.g. constrained layout giving up) would land on a user's stderr in a notebook.
pytestmark = pytest.mark.filterwarnings("error")

CLASSES = ["Tigger", "Misty", "neither"]


def _render(fig: Figure) -> None:
    """Draw the figure for real, so layout and text problems surface here rather than in a notebook."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def _cell_texts(ax) -> dict[tuple[int, int], str]:
    """{(row, col): text} of the numbers written in the cells of an imshow matrix."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def _pil(seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (12, 10, 3) if mode == "RGB" else (12, 10)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


# ---------------------------------------------------------------------------------------------
# show_images
# ---------------------------------------------------------------------------------------------
def test_show_images_grid_titles_and_colours(capsys):
    images = [_pil(i) for i in range(7)]
    true = [0, 1, 2, 0, 1, 2, 0]
    pred = [0, 2, 2, 0, 1, 0, 0]  # wrong at 1 and 5
    fig = show_images(images, true, pred, classes=CLASSES, ncols=3, title="test set")
    _render(fig)

    assert isinstance(fig, Figure)
    assert len(fig.axes) == 7  # 3x3 grid, the 2 empty cells removed
    assert all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.get_suptitle() == "test set"
    for ax, t, p in zip(fig.axes, true, pred):
        title = ax.get_title()
        assert f"true: {CLASSES[t]}" in title and f"pred: {CLASSES[p]}" in title
        expected = "green" if t == p else "red"
        assert to_rgba(ax.title.get_color()) == to_rgba(expected)
    assert to_rgba(fig.axes[1].title.get_color()) == to_rgba("red")
    # a PIL image is shown pixel for pixel
    np.testing.assert_array_equal(np.asarray(fig.axes[0].images[0].get_array()), np.asarray(images[0]))
    assert capsys.readouterr().err == ""


def test_show_images_string_labels_and_no_predictions(capsys):
    fig = show_images([_pil(0), _pil(1, mode="L")], ["cat", "dog"])
    _render(fig)
    assert [ax.get_title() for ax in fig.axes] == ["true: cat", "true: dog"]
    assert all("pred" not in ax.get_title() for ax in fig.axes)
    assert fig.axes[1].images[0].get_array().ndim == 2  # grey image shown as grey, not as 3 channels
    # mixed ints and names compare by name: right -> green
    fig = show_images([_pil(0)], ["Misty"], [1], classes=CLASSES)
    assert to_rgba(fig.axes[0].title.get_color()) == to_rgba("green")
    assert capsys.readouterr().err == ""


def test_show_images_unnormalises_tensors(capsys):
    # pixel values k/255 exactly as ToTensor() makes them, normalised with mean = std = 0.5 (EfficientNet-Lite0)
    original = torch.randint(0, 256, (3, 3, 8, 6)).float() / 255
    batch = (original - 0.5) / 0.5
    fig = show_images(batch, torch.tensor([0, 1, 2]), classes=CLASSES, mean=[0.5] * 3, std=[0.5] * 3)
    _render(fig)
    assert len(fig.axes) == 3
    for ax, image in zip(fig.axes, original):
        shown = np.asarray(ax.images[0].get_array())
        assert shown.shape == (8, 6, 3)  # HWC
        np.testing.assert_allclose(shown, image.permute(1, 2, 0).numpy(), atol=1e-6)
    # values outside [0, 1] after un-normalising are clipped, not wrapped
    fig = show_images([torch.full((3, 2, 2), 5.0)], mean=0.5, std=0.5)
    assert np.asarray(fig.axes[0].images[0].get_array()).max() == 1.0
    assert capsys.readouterr().err == ""


def test_show_images_tensor_needs_mean_and_std():
    with pytest.raises(ValueError, match="mean and std"):
        show_images([torch.zeros(3, 4, 4)])
    with pytest.raises(ValueError, match="labels"):
        show_images([_pil(0), _pil(1)], true_labels=[0])


# ---------------------------------------------------------------------------------------------
# plot_topk
# ---------------------------------------------------------------------------------------------
def test_plot_topk_bars_in_descending_order(capsys):
    categories = [f"class {i}" for i in range(1000)]
    probs = torch.zeros(1000)
    probs[[7, 281, 42, 999, 3, 500]] = torch.tensor([0.05, 0.4, 0.2, 0.15, 0.1, 0.02])
    fig = plot_topk(_pil(0), probs, categories, k=5)
    _render(fig)

    image_ax, bar_ax = fig.axes
    assert len(image_ax.images) == 1
    expected = ["class 281", "class 42", "class 999", "class 3", "class 7"]
    # order the labels by where they are drawn, top to bottom
    ticks = sorted(zip(bar_ax.get_yticks(), bar_ax.get_yticklabels()),
                   key=lambda tick: bar_ax.transData.transform((0, tick[0]))[1], reverse=True)
    assert [label.get_text() for _, label in ticks] == expected
    widths = sorted(((bar.get_y(), bar.get_width()) for bar in bar_ax.patches),
                    key=lambda yw: bar_ax.transData.transform((0, yw[0]))[1], reverse=True)
    np.testing.assert_allclose([w for _, w in widths], [0.4, 0.2, 0.15, 0.1, 0.05], rtol=1e-6)
    assert capsys.readouterr().err == ""


def test_plot_topk_into_given_axes():
    fig = Figure()
    ax = fig.subplots()
    probs = np.array([0.1, 0.6, 0.3])
    assert plot_topk(None, probs, ["a", "b", "c"], k=2, ax=ax) is fig
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "c"]
    with pytest.raises(ValueError, match="image_ax"):
        plot_topk(_pil(0), probs, ["a", "b", "c"], ax=ax)


# ---------------------------------------------------------------------------------------------
# plot_history
# ---------------------------------------------------------------------------------------------
def _history(n: int, val: bool = True, offset: float = 0.0) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e + offset, "train_acc": 1 - 0.5 / e,
             "val_loss": 1.2 / e + offset if val else None, "val_acc": 1 - 0.6 / e if val else None,
             "seconds": 0.1} for e in range(1, n + 1)]


class _Result:
    def __init__(self, epochs, best_epoch=None):
        self.epochs, self.best_epoch = epochs, best_epoch


def test_plot_history_lines_and_legend(capsys):
    a = _Result(_history(5), best_epoch=4)
    b = _history(3, offset=0.1)
    fig = plot_history(a, b, labels=["head only", "fine-tuned"])
    _render(fig)

    loss_ax, acc_ax = fig.axes
    for ax in (loss_ax, acc_ax):
        assert len(ax.lines) == 4  # 2 histories x (train solid, val dashed)
        styles = sorted((line.get_color(), line.get_linestyle()) for line in ax.lines)
        assert styles == [("C0", "-"), ("C0", "--"), ("C1", "-"), ("C1", "--")]
        assert len(ax.collections) == 1  # the best-epoch star of history a only
        star = ax.collections[0].get_offsets()[0]
        assert star[0] == 4
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert legend[:2] == ["head only", "fine-tuned"]
    assert {"train", "val"} <= set(legend)
    # the star sits on the validation curve at epoch 4
    assert acc_ax.collections[0].get_offsets()[0][1] == pytest.approx(1 - 0.6 / 4)
    np.testing.assert_allclose(loss_ax.lines[0].get_xdata(), [1, 2, 3, 4, 5])
    assert acc_ax.get_ylabel() == "accuracy"
    assert capsys.readouterr().err == ""


def test_plot_history_without_validation(capsys):
    no_val = [{k: v for k, v in e.items() if not k.startswith("val")} for e in _history(4)]
    fig = plot_history(_history(4, val=False), no_val)
    _render(fig)
    for ax in fig.axes:
        assert len(ax.lines) == 2  # train only, one per history
        assert all(line.get_linestyle() == "-" for line in ax.lines)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["run 1", "run 2", "train"]
    assert capsys.readouterr().err == ""


def test_plot_history_rejects_bad_input():
    with pytest.raises(ValueError, match="labels"):
        plot_history(_history(2), labels=["a", "b"])
    with pytest.raises(ValueError, match="best_epoch"):
        plot_history(_Result(_history(2), best_epoch=7))


# ---------------------------------------------------------------------------------------------
# plot_confusion
# ---------------------------------------------------------------------------------------------
def test_plot_confusion_counts(capsys):
    confusion = torch.tensor([[8, 1, 1], [0, 10, 0], [3, 0, 17]])
    fig = plot_confusion(confusion, CLASSES, title="test")
    _render(fig)

    ax = fig.axes[0]
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), confusion.numpy())
    texts = _cell_texts(ax)
    assert texts == {(r, c): str(int(confusion[r, c])) for r in range(3) for c in range(3)}
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    # contrast: the darkest cell (17) is written in white, an empty one (0) in black
    colours = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_color() for t in ax.texts}
    assert colours[(2, 2)] == "white" and colours[(1, 0)] == "black"
    assert capsys.readouterr().err == ""


def test_plot_confusion_normalized_into_axes():
    fig = Figure()
    ax = fig.subplots()
    confusion = np.array([[3, 1], [0, 0]])  # second class has no examples
    assert plot_confusion(confusion, ["a", "b"], ax=ax, normalize=True) is fig
    texts = _cell_texts(ax)
    assert texts == {(0, 0): "0.75", (0, 1): "0.25"}  # the empty row is left blank
    np.testing.assert_allclose(np.ma.filled(ax.images[0].get_array()[0], np.nan), [0.75, 0.25])


# ---------------------------------------------------------------------------------------------
# plot_heatmap
# ---------------------------------------------------------------------------------------------
def test_plot_heatmap_cells_and_nan(capsys):
    values = np.array([[0.512, 0.634, np.nan], [0.701, 0.889, 0.9456]])
    fig = plot_heatmap(values, row_labels=[2, 20], col_labels=["1", "2", "3"], xlabel="trainable stages",
                       ylabel="images per class", title="accuracy", fmt="{:.1%}")
    _render(fig)

    ax, colorbar_ax = fig.axes  # the heat map and its colour bar
    texts = _cell_texts(ax)
    assert (0, 2) not in texts  # NaN: no number
    assert texts == {(r, c): f"{values[r, c]:.1%}" for r in range(2) for c in range(3) if (r, c) != (0, 2)}
    assert np.ma.is_masked(ax.images[0].get_array()[0, 2])  # drawn in the "bad" (grey) colour
    assert ax.get_xlabel() == "trainable stages" and ax.get_ylabel() == "images per class"
    assert ax.get_title() == "accuracy"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "20"]
    # text colour follows the cell: dark low end of viridis -> white, bright high end -> black
    colours = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_color() for t in ax.texts}
    assert colours[(0, 0)] == "white" and colours[(1, 2)] == "black"
    assert capsys.readouterr().err == ""


def test_plot_heatmap_default_fmt_and_shape_check():
    fig = plot_heatmap(torch.tensor([[1.0, 2.5]]), [5], ["a", "b"], "x", "y")
    assert sorted(_cell_texts(fig.axes[0]).values()) == ["1.00", "2.50"]
    with pytest.raises(ValueError, match="shape"):
        plot_heatmap(np.zeros((2, 2)), [1], ["a", "b"], "x", "y")
