"""Figures for the notebooks: image grids, top-k predictions, learning curves, confusion matrices, sweeps.

Every function draws into a new :class:`~matplotlib.figure.Figure` (or into ``ax=`` when given) and
returns the figure; none calls ``plt.show()``. New figures are built with ``Figure(...)`` rather than
``pyplot``: a notebook then shows the returned figure exactly once (pyplot would show it a second time
at the end of the cell), and a loop drawing many figures never trips pyplot's "more than 20 figures"
warning or keeps closed-over figures alive.

Tensors are handled by duck typing (``.detach()``), so this module needs matplotlib and numpy only.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

__all__ = ["show_images", "plot_topk", "plot_history", "plot_confusion", "plot_heatmap"]

_RIGHT, _WRONG = "green", "red"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device, any float dtype) or array-like as a numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor
        t = x.detach().cpu()
        if t.is_floating_point():
            t = t.float()  # numpy has no bfloat16; half is promoted for the same reason
        return t.numpy()
    return np.asarray(x)


def _new_figure(figsize: tuple[float, float]) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "ndim")


def _image_array(image: Any, mean: Sequence[float] | float | None = None,
                 std: Sequence[float] | float | None = None) -> np.ndarray:
    """A PIL image or a CHW tensor as an array ``imshow`` shows correctly (HWC, or HW for one channel).

    A tensor is un-normalised with ``x * std + mean`` per channel (when given) and clipped to [0, 1].
    """
    if _is_tensor(image):
        x = _to_numpy(image).astype(np.float32)
        if x.ndim != 3:
            raise ValueError(f"Expected a CHW image tensor, got shape {tuple(x.shape)}.")
        channels = x.shape[0]
        for name, stat in (("std", std), ("mean", mean)):
            if stat is None:
                continue
            s = np.asarray(stat, dtype=np.float32).reshape(-1)
            if s.size not in (1, channels):
                raise ValueError(f"{name} has {s.size} values for a {channels}-channel image.")
            x = x * s.reshape(-1, 1, 1) if name == "std" else x + s.reshape(-1, 1, 1)
        x = np.clip(x, 0.0, 1.0)
        return x[0] if channels == 1 else np.transpose(x, (1, 2, 0))
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL.Image
        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGB")  # palette, CMYK, 16-bit: imshow cannot show them directly
        return np.asarray(image)
    raise TypeError(f"Expected a PIL image or a CHW tensor, got {type(image).__name__}.")


def _imshow(ax: Axes, array: np.ndarray) -> AxesImage:
    if array.ndim == 2:  # one channel: grey, not the default colour map
        vmax = 255 if array.dtype == np.uint8 else 1.0
        im = ax.imshow(array, cmap="gray", vmin=0, vmax=vmax)
    else:
        im = ax.imshow(array)
    ax.set_axis_off()
    return im


def _label_name(label: Any, classes: Sequence[str] | None) -> str:
    """A label (class index, 0-d tensor or name) as the class name."""
    if isinstance(label, str):
        return label
    index = operator.index(label)  # int, numpy int or integer 0-d tensor; a float label is an error
    return str(classes[index]) if classes is not None else str(index)


def _as_labels(labels: Any, n: int, what: str) -> list | None:
    if labels is None:
        return None
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} {what} for {n} images.")
    return labels


def _annotate(ax: Axes, im: AxesImage, values: np.ndarray, fmt: str) -> None:
    """Write ``fmt.format(value)`` in every finite cell, black on light colours and white on dark ones."""
    for (row, col), value in np.ndenumerate(values):
        if not np.isfinite(value):
            continue  # NaN cells stay blank: there is nothing to report there
        r, g, b, _ = im.cmap(im.norm(value))
        luminance = 0.299 * r + 0.587 * g + 0.114 * b  # perceived brightness (ITU-R BT.601)
        ax.text(col, row, fmt.format(value), ha="center", va="center",
                color="black" if luminance > 0.5 else "white", fontsize=9)


def _grid_ticks(ax: Axes, row_labels: Sequence, col_labels: Sequence) -> None:
    cols = [str(c) for c in col_labels]
    ax.set_xticks(range(len(cols)), cols)
    if max((len(c) for c in cols), default=0) > 4:  # long names overlap unless slanted
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
def show_images(images: Any, true_labels: Sequence | None = None, pred_labels: Sequence | None = None,
                classes: Sequence[str] | None = None, ncols: int = 6, title: str | None = None,
                mean: Sequence[float] | float | None = None,
                std: Sequence[float] | float | None = None) -> Figure:
    """A grid of images, each titled with its true label and, when given, the prediction.

    ``images``: a list of PIL images, or a list / ``(N, C, H, W)`` batch of CHW tensors normalised with
    ``(mean, std)`` (both required for tensors; the result is clipped to [0, 1]). Labels are class
    indices into ``classes`` or names. With predictions the whole cell title is green when right and
    red when wrong.

    >>> import torch
    >>> batch = torch.rand(4, 3, 32, 32) * 2 - 1            # normalised with mean = std = 0.5
    >>> fig = show_images(batch, [0, 1, 2, 0], [0, 2, 2, 0], classes=["Tigger", "Misty", "neither"],
    ...                   mean=[0.5] * 3, std=[0.5] * 3)
    >>> [ax.get_title(loc="center").splitlines()[0] for ax in fig.axes][:2]
    ['true: Tigger', 'true: Misty']
    """
    if _is_tensor(images):
        images = [images] if images.ndim == 3 else list(images)  # a single CHW tensor is one image
    images = list(images)
    if not images:
        raise ValueError("show_images needs at least one image.")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}.")
    if any(_is_tensor(im) for im in images) and (mean is None or std is None):
        raise ValueError("Tensor images need the mean and std they were normalised with (e.g. preprocess.mean).")
    n = len(images)
    true_labels = _as_labels(true_labels, n, "true labels")
    pred_labels = _as_labels(pred_labels, n, "predicted labels")

    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = _new_figure((2.2 * cols, 2.4 * rows + (0.4 if title else 0.0)))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)  # the last row may be short: no empty frames left behind
    for i, (ax, image) in enumerate(zip(axes, images)):
        _imshow(ax, _image_array(image, mean, std))
        lines, color = [], "black"
        if true_labels is not None:
            lines.append(f"true: {_label_name(true_labels[i], classes)}")
        if pred_labels is not None:
            pred = _label_name(pred_labels[i], classes)
            lines.append(f"pred: {pred}")
            if true_labels is not None:
                color = _RIGHT if pred == _label_name(true_labels[i], classes) else _WRONG
        if lines:
            ax.set_title("\n".join(lines), color=color, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_topk(image: Any, probs: Any, categories: Sequence[str], k: int = 5,
              ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """The image on the left and its ``k`` most probable categories as horizontal bars on the right.

    ``probs``: the 1-D vector of class probabilities (a batch of one is accepted). ``image``: a PIL
    image or a CHW tensor in [0, 1] (a normalised tensor would show distorted colours), or ``None`` for
    the bars alone. ``ax``: a pair ``(image_ax, bar_ax)``, or one Axes for the bars alone.

    >>> import torch
    >>> from PIL import Image
    >>> probs = torch.tensor([0.05, 0.6, 0.1, 0.25])
    >>> fig = plot_topk(Image.new("RGB", (32, 32)), probs, ["tabby", "tiger cat", "pug", "Egyptian cat"], k=3)
    >>> [t.get_text() for t in fig.axes[1].get_yticklabels()]
    ['tiger cat', 'Egyptian cat', 'pug']
    """
    p = _to_numpy(probs).astype(np.float64)
    p = p.reshape(-1) if p.ndim > 1 and p.size == p.shape[-1] else p  # (1, 1000) from a batch of one
    if p.ndim != 1:
        raise ValueError(f"probs must be 1-D, got shape {p.shape}.")
    if len(categories) != p.size:
        raise ValueError(f"{len(categories)} categories for {p.size} probabilities.")
    k = min(k, p.size)
    top = np.argsort(-p, kind="stable")[:k]

    if ax is None:
        if image is None:
            fig = _new_figure((5.0, 0.4 * k + 1.0))
            image_ax, bar_ax = None, fig.subplots()
        else:
            fig = _new_figure((9.0, max(3.0, 0.45 * k + 1.2)))
            image_ax, bar_ax = fig.subplots(1, 2, width_ratios=(1, 1.3))
    elif isinstance(ax, Axes):
        if image is not None:
            raise ValueError("One Axes holds the bars only: pass ax=(image_ax, bar_ax) or image=None.")
        image_ax, bar_ax = None, ax
        fig = ax.figure
    else:
        image_ax, bar_ax = ax
        fig = bar_ax.figure

    if image_ax is not None:
        if image is None:
            image_ax.set_axis_off()
        else:
            _imshow(image_ax, _image_array(image))

    names = [str(categories[i]) for i in top]
    bars = bar_ax.barh(range(k), p[top], color="C0")
    bar_ax.set_yticks(range(k), names)
    bar_ax.invert_yaxis()  # most probable on top, read like a ranking
    bar_ax.bar_label(bars, labels=[f"{v:.1%}" for v in p[top]], padding=3, fontsize=9)
    bar_ax.set_xlim(0, 1.2)  # room for the percentage right of a bar near 1
    bar_ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    bar_ax.set_xlabel("probability")
    bar_ax.set_title(f"top-{k}")
    return fig


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def _series(epochs: list[dict], key: str) -> np.ndarray | None:
    """``key`` per epoch with gaps as NaN (the line breaks there); ``None`` when never recorded."""
    values = [e.get(key) for e in epochs]
    if all(v is None for v in values):
        return None
    return np.array([np.nan if v is None else float(v) for v in values])


def plot_history(*histories: Any, labels: Sequence[str] | None = None, metric: str = "acc") -> Figure:
    """Learning curves: loss on the left, ``metric`` (accuracy) on the right; train solid, validation dashed.

    Each history is a list of per-epoch dicts (``epoch``, ``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc``, ...; ``val_*`` missing or ``None`` without a validation set) or an object with that list
    as ``.epochs``. One colour per history, named by ``labels`` in the legend of the loss panel. A history
    with a ``best_epoch`` (1-based, as the ``epoch`` key) gets a star on that epoch in both panels.

    >>> head_only = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + e / 20, "val_loss": 1.2 / e,
    ...               "val_acc": 0.45 + e / 20} for e in range(1, 6)]
    >>> fig = plot_history(head_only, head_only[:3], labels=["head only", "last 2 stages"])
    >>> len(fig.axes)
    2
    """
    if not histories:
        raise ValueError("plot_history needs at least one history.")
    if labels is not None and len(labels) != len(histories):
        raise ValueError(f"{len(labels)} labels for {len(histories)} histories.")
    if labels is None and len(histories) > 1:
        labels = [f"run {i + 1}" for i in range(len(histories))]

    fig = _new_figure((10.0, 4.0))
    loss_ax, metric_ax = fig.subplots(1, 2)
    panels = ((loss_ax, "loss"), (metric_ax, metric))
    any_val = any_best = False
    for i, history in enumerate(histories):
        epochs = list(getattr(history, "epochs", history))
        if not epochs:
            raise ValueError(f"History {i + 1} has no epochs.")
        x = np.array([e["epoch"] for e in epochs])
        color = f"C{i}"
        best = getattr(history, "best_epoch", None)
        if best is not None and best not in x:
            raise ValueError(f"best_epoch {best} of history {i + 1} is not one of its epochs {x.tolist()}.")
        for ax, key in panels:
            train, val = _series(epochs, f"train_{key}"), _series(epochs, f"val_{key}")
            if train is not None:
                ax.plot(x, train, color=color, linestyle="-")
            if val is not None:
                ax.plot(x, val, color=color, linestyle="--")
                any_val = True
            # the star sits on the curve the best epoch was chosen by: validation if there is one
            marked = val if val is not None else train
            if best is not None and marked is not None:
                ax.scatter([best], [marked[x == best][0]], marker="*", s=150, color=color,
                           edgecolors="black", linewidths=0.5, zorder=3)
                any_best = True

    for ax, key in panels:
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
    loss_ax.set_title("loss")
    metric_ax.set_title("accuracy" if metric == "acc" else metric)

    # Proxy handles, not drawn lines: the legend explains colour (run) and style (split) separately.
    handles = [Line2D([], [], color=f"C{i}", label=label) for i, label in enumerate(labels or [])]
    handles.append(Line2D([], [], color="grey", linestyle="-", label="train"))
    if any_val:
        handles.append(Line2D([], [], color="grey", linestyle="--", label="val"))
    if any_best:
        handles.append(Line2D([], [], color="grey", marker="*", markersize=10, linestyle="none",
                              label="best epoch"))
    loss_ax.legend(handles=handles, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------
# Matrices
# ---------------------------------------------------------------------------------------------
def plot_confusion(confusion: Any, classes: Sequence[str], ax: Axes | None = None, normalize: bool = False,
                   title: str | None = None) -> Figure:
    """The confusion matrix (rows = true class, columns = predicted) with the count in every cell.

    ``normalize=True`` divides each row by its total, so a cell is the fraction of that true class
    predicted as the column's class (a row with no examples is left blank).

    >>> fig = plot_confusion([[8, 2], [1, 9]], ["Tigger", "Misty"])
    """
    counts = _to_numpy(confusion)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"Expected a {k}x{k} matrix for {k} classes, got shape {counts.shape}.")
    if normalize:
        totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN marks a class with no examples
            values = counts / totals
        fmt = "{:.2f}"
    else:
        values = counts
        integral = np.issubdtype(counts.dtype, np.integer) or np.all(np.mod(counts, 1) == 0)
        fmt = "{:.0f}" if integral else "{:.2f}"

    fig = ax.figure if ax is not None else _new_figure((1.0 + 0.6 * k + 1.5, 1.0 + 0.6 * k + 1.0))
    ax = ax if ax is not None else fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(values.astype(np.float64)),
                   cmap=matplotlib.colormaps["Blues"].with_extremes(bad="lightgrey"),
                   vmin=0, vmax=1 if normalize else max(float(np.nanmax(values)), 1.0))
    _annotate(ax, im, values.astype(np.float64), fmt)
    _grid_ticks(ax, classes, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return fig


def plot_heatmap(values: Any, row_labels: Sequence, col_labels: Sequence, xlabel: str, ylabel: str,
                 title: str | None = None, fmt: str = "{:.2f}", ax: Axes | None = None,
                 cmap: str | matplotlib.colors.Colormap = "viridis",
                 limits: tuple[float, float] | None = None) -> Figure:
    """A 2-D sweep as a heat map with ``fmt.format(value)`` in every cell and a colour bar; NaN cells are grey.

    ``fmt`` is applied to Python floats (use ``"{:.0f}"`` for whole numbers). ``limits = (low, high)`` fixes the
    colour scale (give two heat maps the same limits to compare their colours); default: this map's own range.

    >>> acc = [[0.61, 0.58, 0.55], [0.72, 0.74, 0.70], [0.85, 0.88, float("nan")]]
    >>> fig = plot_heatmap(acc, row_labels=[2, 5, 20], col_labels=[1, 2, 3], xlabel="trainable stages",
    ...                    ylabel="training images per class", title="test accuracy", fmt="{:.2f}")
    >>> sorted(t.get_text() for t in fig.axes[0].texts)[:3]
    ['0.55', '0.58', '0.61']
    """
    v = _to_numpy(values).astype(np.float64)
    if v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values has shape {v.shape} for {len(row_labels)} rows x {len(col_labels)} columns.")
    finite = v[np.isfinite(v)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if limits is not None:
        vmin, vmax = (float(x) for x in limits)
        if not vmin < vmax:
            raise ValueError(f"limits must be (low, high) with low < high, got {limits!r}.")

    fig = ax.figure if ax is not None else _new_figure(
        (1.5 + 0.9 * len(col_labels) + 1.5, 1.0 + 0.6 * len(row_labels) + 1.0))
    ax = ax if ax is not None else fig.subplots()
    colormap = matplotlib.colormaps.get_cmap(cmap).with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(v), cmap=colormap, vmin=vmin, vmax=vmax, aspect="auto")
    _annotate(ax, im, v, fmt)
    _grid_ticks(ax, row_labels, col_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return fig


# ---------------------------------------------------------------------------------------------
# Chapter 8: sweeps on two domains, probe curves, the size x similarity 2x2
# ---------------------------------------------------------------------------------------------
def plot_sweep_heatmap(mean: Any, row_labels: Sequence, col_labels: Sequence, xlabel: str, ylabel: str,
                       title: str | None = None, spread: Any = None, best: Sequence[int] | None = None,
                       ax: Axes | None = None, fmt: str = "{:.2f}",
                       cmap: str | matplotlib.colors.Colormap = "viridis",
                       limits: tuple[float, float] | None = None) -> Figure:
    """:func:`plot_heatmap` of a sweep's mean, ``± spread`` under each number when given, and the path of
    the chosen setting: ``best[i]`` is the column chosen in row ``i`` (say, by validation accuracy), drawn as
    a red line through outlined cells. ``limits``: the colour scale, shared between maps (see
    :func:`plot_heatmap`).

    >>> test_mean = [[0.70, 0.74, 0.69], [0.80, 0.83, 0.82], [0.88, 0.90, 0.93]]
    >>> test_std = [[0.02, 0.01, 0.03]] * 3
    >>> fig = plot_sweep_heatmap(test_mean, [10, 50, 250], [1, 2, 3], "trainable stages", "tiles per class",
    ...                          spread=test_std, best=[1, 1, 2], limits=(0.5, 1.0))
    >>> fig.axes[0].images[0].get_clim()
    (0.5, 1.0)
    """
    from matplotlib.patches import Rectangle  # local: this section is appended to the module

    m = _to_numpy(mean).astype(np.float64)
    fig = plot_heatmap(m, row_labels, col_labels, xlabel, ylabel, title=title, fmt=fmt, ax=ax, cmap=cmap,
                       limits=limits)
    ax = ax if ax is not None else fig.axes[0]
    if spread is not None:
        s = _to_numpy(spread).astype(np.float64)
        if s.shape != m.shape:
            raise ValueError(f"spread has shape {s.shape}, mean {m.shape}.")
        for text in ax.texts:
            col, row = (round(v) for v in text.get_position())
            if np.isfinite(s[row, col]):
                text.set_text(text.get_text() + "\n±" + fmt.format(s[row, col]))
    if best is not None:
        best = [int(b) for b in best]
        if len(best) != len(row_labels) or not all(0 <= b < len(col_labels) for b in best):
            raise ValueError(f"best needs one column index (0..{len(col_labels) - 1}) per row, got {best}.")
        rows = np.arange(len(best))
        # The path runs through the lower part of each cell, clear of the numbers.
        ax.plot(best, rows + 0.3, color="red", linewidth=1.5, marker="o", markersize=4, alpha=0.8,
                label="best by validation")
        for r, c in zip(rows, best):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, frameon=False)
    return fig


def plot_probe_curves(curves: dict, xlabel: str = "cut (stages below the probe)",
                      ylabel: str = "test accuracy of a linear probe", title: str | None = None,
                      chance: dict | None = None, ax: Axes | None = None) -> Figure:
    """Accuracy of a linear probe at every cut, one line per domain: ``curves[name] = (cuts, mean)`` or
    ``(cuts, mean, spread)`` (error bars); the best cut of each line is ringed. ``chance[name]`` draws that
    domain's chance level as a dotted line.

    >>> cuts = [2, 4, 6, 8]
    >>> fig = plot_probe_curves({"pets": (cuts, [0.5, 0.7, 0.85, 0.9]),
    ...                          "EuroSAT": (cuts, [0.6, 0.8, 0.82, 0.78], [0.02, 0.02, 0.01, 0.02])})
    """
    if not curves:
        raise ValueError("plot_probe_curves needs at least one curve.")
    fig = ax.figure if ax is not None else _new_figure((6.5, 3.6))
    ax = ax if ax is not None else fig.subplots()
    for i, (name, curve) in enumerate(curves.items()):
        cuts, acc = _to_numpy(curve[0]).astype(int), _to_numpy(curve[1]).astype(np.float64)
        err = _to_numpy(curve[2]).astype(np.float64) if len(curve) > 2 and curve[2] is not None else None
        if len(cuts) != len(acc) or (err is not None and len(err) != len(acc)):
            raise ValueError(f"curve {name!r}: cuts, accuracies and spreads must have the same length.")
        color = f"C{i}"
        ax.errorbar(cuts, acc, yerr=err, color=color, marker="o", capsize=3, label=str(name))
        j = int(np.nanargmax(acc))
        ax.plot([cuts[j]], [acc[j]], marker="o", markersize=14, markerfacecolor="none", markeredgecolor=color)
        if chance and name in chance:
            ax.axhline(chance[name], color=color, linestyle=":", linewidth=1)
    ax.set_xticks(sorted({int(c) for curve in curves.values() for c in _to_numpy(curve[0])}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_regimes(cells: Sequence[Sequence[str]], agree: Sequence[Sequence[bool | None]] | None = None,
                 row_labels: Sequence[str] = ("small data", "large data"),
                 col_labels: Sequence[str] = ("similar to ImageNet", "different from ImageNet"),
                 title: str | None = None) -> Figure:
    """The size x similarity 2x2 (CS231n's four regimes) as four text boxes: ``cells[row][col]`` is the text of
    a cell (prediction and measurement); ``agree[row][col]`` colours it green (the measurement agrees with the
    prediction), orange (it does not) or grey (``None``: not measured).

    >>> fig = plot_regimes([["k=1 wins", "..."], ["...", "..."]], agree=[[True, True], [False, True]])
    """
    if len(cells) != len(row_labels) or any(len(r) != len(col_labels) for r in cells):
        raise ValueError(f"cells must be {len(row_labels)} rows x {len(col_labels)} columns.")
    fig = _new_figure((3.6 * len(col_labels) + 1.2, 1.5 * len(row_labels) + 0.8))
    axes = np.asarray(fig.subplots(len(row_labels), len(col_labels), squeeze=False))
    colours = {True: "#d9f2d9", False: "#ffe0b3", None: "#eeeeee"}
    for (r, c), ax in np.ndenumerate(axes):
        state = agree[r][c] if agree is not None else None
        ax.set_facecolor(colours[state])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.5, 0.5, cells[r][c], ha="center", va="center", wrap=True, fontsize=8.5, transform=ax.transAxes)
        if r == 0:
            ax.set_title(col_labels[c], fontsize=10)
        if c == 0:
            ax.set_ylabel(row_labels[r], fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


__all__ += ["plot_sweep_heatmap", "plot_probe_curves", "plot_regimes"]


#: the smallest font the book's drawn diagrams use, in points: at the book's column width (about 750 px for
#: an 8-inch figure) one point is about 1.3 px, so 11 pt stays at or above 11 px on a desktop.
DIAGRAM_FONT = 11


def plot_transfer_diagram(n_stages: int = 10, trainable_stages: int = 1, cached: bool = True,
                          new_layers: str = "new 3-way softmax", width: float = 8.0) -> Figure:
    """The course's picture of transfer learning, in the stage convention of :func:`tl_course.freeze`: a
    network of ``n_stages`` stages whose last one is the **new head**; the top ``trainable_stages`` (the head
    included) train, the pretrained stages below the **cut** are frozen, and, when ``cached``, their output
    is the **cached activations**, saved to disk once and read back every epoch instead of running the
    frozen stages again.

    Stages are drawn from the image (left) to the prediction (right). Every text is at least
    :data:`DIAGRAM_FONT` points.

    >>> fig = plot_transfer_diagram(n_stages=10, trainable_stages=2)
    >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]  # doctest: +NORMALIZE_WHITESPACE
    ['frozen: 8 pretrained stages (requires_grad=False, BatchNorm in eval)', 'trained: 1 pretrained stage',
     'new 3-way softmax']
    >>> plot_transfer_diagram(n_stages=3, trainable_stages=3)
    Traceback (most recent call last):
    ...
    ValueError: trainable_stages must be between 1 and n_stages - 1 = 2 (at least one stage stays frozen), got 3.
    """
    if n_stages < 2:
        raise ValueError(f"n_stages must be at least 2, got {n_stages}.")
    if not 1 <= trainable_stages <= n_stages - 1:
        raise ValueError(f"trainable_stages must be between 1 and n_stages - 1 = {n_stages - 1} (at least one "
                         f"stage stays frozen), got {trainable_stages}.")
    n_stages, cut = n_stages - 1, n_stages - trainable_stages  # pretrained stages; frozen ones below the cut
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = _new_figure((width, 3.4 if cached else 2.6))
    ax = fig.subplots()
    ax.set_axis_off()
    slots = n_stages + 3  # image, the stages, the new head, the prediction
    ax.set_xlim(0, slots)
    ax.set_ylim(-1.9 if cached else -0.3, 3.0)
    frozen, trained, new = "#cfe2f3", "#fde0c5", "#d9f2d9"

    def box(x: float, y: float, w: float, h: float, colour: str, text: str = "", **kw) -> None:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=colour, edgecolor="#444444", linewidth=1))
        if text:
            ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=DIAGRAM_FONT, **kw)

    def arrow(x0: float, y0: float, x1: float, y1: float, **kw) -> None:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12,
                                     color="#444444", linewidth=1.2, **kw))

    box(0.0, 0.2, 0.92, 1.0, "white", "photo")
    for i in range(n_stages):
        x = 1 + i
        box(x + 0.08, 0.2, 0.84, 1.0, frozen if i < cut else trained, str(i + 1))
        arrow(x - 0.1 if i == 0 else x - 0.08, 0.7, x + 0.08, 0.7)
    head_x = 1 + n_stages
    box(head_x + 0.08, 0.2, 0.84, 1.0, new, "new\nhead", color="#1a5e1a")
    arrow(head_x - 0.08, 0.7, head_x + 0.08, 0.7)
    arrow(head_x + 0.92, 0.7, head_x + 1.1, 0.7)
    ax.text(head_x + 1.15, 0.7, "Tigger\nMisty\nneither", ha="left", va="center", fontsize=DIAGRAM_FONT)
    cut_x = 1 + cut
    ax.plot([cut_x, cut_x], [-0.05, 1.75], color="#c0392b", linewidth=2, linestyle="--")
    ax.text(cut_x, 1.8, "cut", ha="center", va="bottom", fontsize=DIAGRAM_FONT, color="#c0392b", weight="bold")
    above = n_stages - cut
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=frozen, edgecolor="#444444",
                     label=f"frozen: {cut} pretrained stage{'s' if cut > 1 else ''} (requires_grad=False, "
                           "BatchNorm in eval)"),
               *([Patch(facecolor=trained, edgecolor="#444444",
                        label=f"trained: {above} pretrained stage{'s' if above > 1 else ''}")] if above else []),
               Patch(facecolor=new, edgecolor="#444444", label=new_layers)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=DIAGRAM_FONT,
              frameon=False, handlelength=1.2, columnspacing=1.2, borderaxespad=0)
    if cached:
        centre = min(max(cut_x, 1.7), slots - 1.7)  # the box stays inside the figure whatever the cut
        box(centre - 1.6, -1.75, 3.2, 0.9, "#f2f2f2", "cached activations\n(computed once, saved to disk)")
        arrow(cut_x - 0.3, 0.15, cut_x - 0.3, -0.8)
        arrow(cut_x + 0.3, -0.8, cut_x + 0.3, 0.15)
        ax.text(cut_x - 0.4, -0.35, "save once", ha="right", va="center", fontsize=DIAGRAM_FONT)
        ax.text(cut_x + 0.4, -0.35, "read every epoch", ha="left", va="center", fontsize=DIAGRAM_FONT)
    return fig


__all__ += ["plot_transfer_diagram", "DIAGRAM_FONT"]


def plot_filters(weight: Any, columns: int = 16, title: str | None = None) -> Figure:
    """The first layer's convolution filters as small colour images, one per output channel.

    ``weight`` has shape ``(out_channels, 3, k, k)`` (an RGB first layer). Each filter is scaled to
    [0, 1] on its own, so the picture shows its pattern (an edge, a colour blob, a stripe), not its size.

    >>> import numpy as np
    >>> fig = plot_filters(np.random.default_rng(0).normal(size=(32, 3, 3, 3)))
    >>> len(fig.axes)
    32
    >>> plot_filters(np.zeros((8, 1, 3, 3)))
    Traceback (most recent call last):
    ...
    ValueError: weight must have shape (out_channels, 3, k, k) (an RGB first layer), got (8, 1, 3, 3).
    """
    w = _to_numpy(weight).astype(float)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"weight must have shape (out_channels, 3, k, k) (an RGB first layer), got {w.shape}.")
    n = w.shape[0]
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = _new_figure((0.5 * cols + 0.4, 0.5 * rows + (0.5 if title else 0.1)))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < n:
            f = w[i].transpose(1, 2, 0)
            span = f.max() - f.min()
            ax.imshow((f - f.min()) / span if span > 0 else np.zeros_like(f), interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=DIAGRAM_FONT)
    return fig


def plot_activation_maps(image: Any, maps: dict[str, Any], per_stage: int = 4, mean: Any = None,
                         std: Any = None) -> Figure:
    """What one photo looks like inside the network: for each entry of ``maps`` (a stage's name ->
    its activations, shape ``(channels, h, w)``), the ``per_stage`` channels that respond most strongly
    (highest mean activation), bright where they fire. The photo itself comes first.

    Early stages keep the photo's layout (edges, fur, the outline); later ones are coarse grids whose
    channels answer "is there an eye / an ear / stripes here".

    >>> import numpy as np
    >>> from PIL import Image
    >>> rng = np.random.default_rng(0)
    >>> fig = plot_activation_maps(Image.new("RGB", (64, 64)), {"stage 1": rng.random((16, 32, 32)),
    ...                                                      "stage 5": rng.random((80, 4, 4))}, per_stage=3)
    >>> len(fig.axes)
    8
    """
    if not maps:
        raise ValueError("maps is empty: give at least one stage's activations.")
    fig = _new_figure((1.6 * (per_stage + 1), 1.7 * len(maps) + 0.2))
    axes = np.asarray(fig.subplots(len(maps), per_stage + 1, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    photo = _image_array(image, mean, std)
    for r, (name, activation) in enumerate(maps.items()):
        a = _to_numpy(activation).astype(float)
        if a.ndim != 3:
            raise ValueError(f"maps[{name!r}] must have shape (channels, h, w), got {a.shape}.")
        if r == 0:
            _imshow(axes[0, 0], photo)
            axes[0, 0].set_title("photo", fontsize=DIAGRAM_FONT)
        else:
            axes[r, 0].set_axis_off()
        strongest = np.argsort(a.mean(axis=(1, 2)))[::-1][:per_stage]
        for c, channel in enumerate(strongest, start=1):
            axes[r, c].imshow(a[channel], cmap="magma", interpolation="nearest")
            axes[r, c].set_title(f"{name}: channel {channel}\n{a.shape[1]} × {a.shape[2]} grid", fontsize=9)
    return fig


__all__ += ["plot_filters", "plot_activation_maps"]


def plot_lr_range(result: Any, chosen: float | None = None, title: str | None = None) -> Figure:
    """The learning-rate range test (:func:`tl_course.book.lr_range.lr_range_test`): smoothed training loss
    against the learning rate (log scale), its suggestion marked, and ``chosen``, the rate the chapter uses,
    as a vertical line.

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> r = SimpleNamespace(lrs=np.geomspace(1e-5, 1, 30), losses=np.linspace(1.1, 0.4, 30), suggested=1e-2)
    >>> fig = plot_lr_range(r, chosen=3e-3)
    >>> fig.axes[0].get_xscale()
    'log'
    """
    fig = _new_figure((6.4, 3.6))
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="tab:blue", label="training loss (smoothed)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate", fontsize=DIAGRAM_FONT)
    ax.set_ylabel("loss", fontsize=DIAGRAM_FONT)
    i = int(np.argmin(np.abs(np.log(result.lrs) - np.log(result.suggested))))
    ax.plot([result.lrs[i]], [result.losses[i]], "o", color="tab:orange",
            label=f"steepest descent: {result.suggested:.0e}")
    if chosen is not None:
        ax.axvline(chosen, color="tab:green", linestyle="--", label=f"chosen: {chosen:g}")
    ax.legend(fontsize=9)
    ax.set_title(title or "learning-rate range test", fontsize=DIAGRAM_FONT)
    return fig


__all__ += ["plot_lr_range"]
