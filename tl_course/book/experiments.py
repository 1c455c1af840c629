"""Fair sweeps of "how much to freeze": cached activations at several cuts, warm-started runs of the top
``k`` stages, linear probes at every cut, and tidy result tables.

One setup per domain (:func:`domain_setup`) fixes the model, the preprocessing and the largest nested
splits, so every page and notebook that sweeps a domain hits the *same* activation caches (the cache key
is the model's bottom weights, the cut, the preprocessing and the exact file list).

The methodology every sweep here follows (state it on the page that shows the numbers):

- **warm start**: the new softmax is trained first on cached final features (``head_epochs``, the best
  validation epoch kept); every ``k >= 2`` run starts from that head, then unfreezes the top ``k`` stages;
- **equal budget**: in one row of a sweep (one training-set size) every ``k >= 2`` gets the same number of
  optimizer steps after the warm start (:func:`epochs_for`), and keeps its best *validation* epoch;
- **BatchNorm**: below the cut everything is fixed, BN statistics included (activations are extracted in
  eval mode). Inside the trained stages ``bn="train"`` lets BN use batch statistics and update its running
  averages (PyTorch's default); ``bn="frozen"`` keeps them in eval mode (the Keras advice for small data),
  their scale and shift still train;
- **selection on validation, report on test**, seeds given explicitly.

>>> setup = domain_setup("eurosat")
>>> feats = split_features(setup, cuts=sweep_cuts(setup.model, ks=(1, 2, 3)))
>>> rows = sweep(setup.model, feats, sizes=(10, 50), ks=(1, 2, 3), seeds=(0,))
"""
from __future__ import annotations

import copy
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.transforms._presets import ImageClassification

from ..data import Samples, Splits, cat_detector_splits, eurosat_splits
from ..cache import cached_features, warm_features
from ..features import FeatureSet, top_stages
from ..freezing import freeze, freeze_bn_stats, stages
from ..models import get_head, load_pretrained, replace_head
from ..profiles import Profile, autocast, get_device, get_profile
from ..training import fit, seed_everything

__all__ = [
    "Setup",
    "domain_setup",
    "sweep_cuts",
    "warm_cache",
    "cut_features",
    "split_features",
    "first_per_class",
    "epochs_for",
    "RunResult",
    "train_head",
    "train_top_k",
    "linear_probe",
    "probe_curve",
    "sweep",
    "summarise",
    "best_k_by_val",
    "html_table",
]


# ---------------------------------------------------------------------------------------------
# One setup per domain: model, preprocessing, largest nested splits
# ---------------------------------------------------------------------------------------------
class Setup(NamedTuple):
    """What :func:`domain_setup` returns: everything a sweep of one domain needs."""

    name: str  #: "pets" or "eurosat"
    model: nn.Module  #: pretrained EfficientNet-Lite0 with a fresh ``len(classes)``-way head (not trained)
    preprocess: ImageClassification  #: deterministic eval transform (the cache depends on it)
    splits: Splits  #: train = the largest size of the sweep; val / test fixed
    sizes: tuple[int, ...]  #: training photos per class of the sweep, ascending
    classes: tuple[str, ...]


def _no_crop(preprocess: ImageClassification) -> ImageClassification:
    # EuroSAT tiles have no centred object: resize to the input size, crop nothing away.
    size = preprocess.crop_size[0]
    return ImageClassification(crop_size=size, resize_size=size, mean=preprocess.mean, std=preprocess.std,
                               interpolation=preprocess.interpolation)


def domain_setup(domain: str, profile: Profile | None = None, seed: int = 0) -> Setup:
    """The model, preprocessing and largest nested splits of ``domain`` ("pets" or "eurosat") for a profile.

    Pets: the Tigger / Misty / neither splits at ``profile.image_size`` with ``profile.pets_*`` sizes.
    EuroSAT: ten classes at ``profile.eurosat_image_size`` (64 = native tiles, no crop) with
    ``profile.eurosat_*`` sizes. Pages that call this with the same profile share their caches.

    >>> setup = domain_setup("eurosat", get_profile("ci"))
    >>> setup.sizes, len(setup.splits.val)
    ((10, 50, 250), 200)
    """
    profile = profile or get_profile()
    if domain == "pets":
        sizes = tuple(sorted(profile.pets_sizes))
        splits = cat_detector_splits(sizes[-1], profile.pets_val_per_class, profile.pets_test_per_class, seed=seed)
        pretrained = load_pretrained(image_size=profile.image_size)
        preprocess = pretrained.preprocess
    elif domain == "eurosat":
        sizes = tuple(sorted(profile.eurosat_sizes))
        splits = eurosat_splits(sizes[-1], profile.eurosat_val_per_class, profile.eurosat_test_per_class, seed=seed)
        pretrained = load_pretrained(image_size=profile.eurosat_image_size)
        preprocess = _no_crop(pretrained.preprocess)
    else:
        raise ValueError(f"Unknown domain {domain!r}: use 'pets' or 'eurosat'.")
    model = replace_head(pretrained.model, len(splits.classes))
    return Setup(domain, model, preprocess, splits, sizes, splits.classes)


def sweep_cuts(model: nn.Module, ks: Iterable[int]) -> list[int]:
    """The cuts that training the top ``k`` stages needs: ``len(stages) - k`` for each ``k``.

    >>> sweep_cuts(load_pretrained().model, ks=(1, 2, 3))
    [9, 8, 7]
    """
    n = len(stages(model))
    return [n - k for k in ks]


# ---------------------------------------------------------------------------------------------
# Activations at several cuts from one forward pass, in tl_course.cache's format
# ---------------------------------------------------------------------------------------------
def warm_cache(model: nn.Module, samples: Samples, preprocess: Callable, cuts: Iterable[int] = (),
               pooled_cuts: Iterable[int] = (), device: str | torch.device | None = None, batch_size: int = 64,
               num_workers: int = 0, directory: str | Path | None = None) -> float:
    """Write every missing cache file for ``samples`` in ONE forward pass; returns the seconds it took (0 if
    everything was on disk). The files are :func:`tl_course.cache.cached_features`'s own (full maps at
    ``cuts``, maps averaged over space at ``pooled_cuts``): see :func:`tl_course.cache.warm_features`.

    >>> seconds = warm_cache(model, splits.train, preprocess, cuts=[9, 8, 7], pooled_cuts=range(1, 10))
    """
    return warm_features(model, samples, preprocess, cuts, pooled_cuts, device=device, batch_size=batch_size,
                         num_workers=num_workers, directory=directory)


def cut_features(model: nn.Module, samples: Samples, preprocess: Callable, cut: int, pooled: bool = False,
                 device: str | torch.device | None = None, directory: str | Path | None = None) -> FeatureSet:
    """Activations at ``cut`` for ``samples`` (spatially averaged if ``pooled``), from the cache, computed if
    missing.

    >>> probe_train = cut_features(model, splits.train, preprocess, cut=3, pooled=True)
    """
    return cached_features(model, samples, preprocess, cut=cut, device=device, directory=directory,
                           progress=False, pooled=pooled)


def split_features(setup: Setup, cuts: Iterable[int] = (), pooled_cuts: Iterable[int] = (),
                   device: str | torch.device | None = None, directory: str | Path | None = None,
                   ) -> dict[str, dict]:
    """Train / val / test activations of a setup at every cut, one forward pass per split.

    Returns ``{"cut": {cut: {"train": fs, "val": fs, "test": fs}}, "pooled": {cut: {...}}, "seconds": s}``
    where ``seconds`` is the extraction time of this call (0 when everything was cached).

    >>> feats = split_features(setup, cuts=[9, 8, 7], pooled_cuts=range(1, 10))
    >>> feats["cut"][9]["train"].features.shape
    torch.Size([2500, 1280])
    """
    cuts, pooled_cuts = list(cuts), list(pooled_cuts)
    out: dict[str, dict] = {"cut": {c: {} for c in cuts}, "pooled": {c: {} for c in pooled_cuts}, "seconds": 0.0}
    for name in ("train", "val", "test"):
        samples = getattr(setup.splits, name)
        out["seconds"] += warm_cache(setup.model, samples, setup.preprocess, cuts, pooled_cuts, device=device,
                                     directory=directory)
        for kind, chosen in (("cut", cuts), ("pooled", pooled_cuts)):
            for c in chosen:
                out[kind][c][name] = cut_features(setup.model, samples, setup.preprocess, c, pooled=kind == "pooled",
                                                  device=device, directory=directory)
    return out


def first_per_class(fs: FeatureSet, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of a nested training split's cache that form the split with ``n`` photos per class: the
    first ``n`` of each class, in file order (what ``cat_detector_splits(n)`` / ``eurosat_splits(n)`` hold).

    >>> x, y = first_per_class(feats["cut"][9]["train"], 10)
    """
    idx = []
    for label in torch.unique(fs.labels).tolist():
        rows = torch.nonzero(fs.labels == label).flatten()
        if len(rows) < n:
            raise ValueError(f"Class {label} has only {len(rows)} cached rows, fewer than {n}.")
        idx.append(rows[:n])
    idx = torch.cat(idx).sort().values
    return fs.features[idx], fs.labels[idx]


def epochs_for(n_train: int, batch_size: int, steps: int, min_epochs: int = 3, max_epochs: int = 60) -> int:
    """Epochs that give about ``steps`` optimizer steps on ``n_train`` examples, clipped to
    ``[min_epochs, max_epochs]`` (one value per row of a sweep: every ``k`` of the row gets the same budget).

    >>> epochs_for(2500, 64, 300), epochs_for(100, 64, 300)
    (8, 60)
    """
    per_epoch = max(1, math.ceil(n_train / batch_size))
    return int(min(max_epochs, max(min_epochs, math.ceil(steps / per_epoch))))


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One cell of a sweep (one size, one ``k``, one seed)."""

    k: int
    seed: int
    val_acc: float
    test_acc: float
    seconds: float  #: training time of this run (extraction excluded; the warm-start head included)
    epochs: int  #: epochs of the top-k phase (of the head for k = 1)
    best_epoch: int
    steps: int  #: optimizer steps of the top-k phase (of the head for k = 1)
    head_state: dict | None = None  #: the trained head's weights (what k >= 2 starts from)


def _pair(data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, FeatureSet):
        return data.features, data.labels
    return data[0], data[1]


def train_head(model: nn.Module, train, val, test=None, *, epochs: int = 60, lr: float = 1e-2,
               batch_size: int = 32, seed: int = 0, device: str | torch.device | None = None) -> RunResult:
    """k = 1, the warm start of every deeper run: a fresh softmax (seeded) on cached final features
    (cut ``len(stages) - 1``), best validation epoch kept. ``model`` is not changed.

    >>> head = train_head(setup.model, first_per_class(train9, 10), val9, test9, seed=0)
    >>> head.val_acc, head.head_state.keys()
    """
    net = copy.deepcopy(model)
    seed_everything(seed)
    replace_head(net, get_head(net).out_features)  # a fresh head, drawn from this seed
    freeze(net, trainable_stages=1)
    n = len(stages(net))
    top = top_stages(net, n - 1)
    train = _pair(train)
    h = fit(top, train, val, test=test, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device,
            progress=False)
    head = stages(net)[-1]
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    return RunResult(1, seed, float(h.best_val_acc), float(h.test.accuracy) if h.test else float("nan"),
                     h.seconds, len(h.epochs), int(h.best_epoch), len(h.epochs) * math.ceil(len(train[1]) / batch_size),
                     state)


def train_top_k(model: nn.Module, k: int, head: RunResult, train, val, test=None, *, epochs: int = 10,
                lr: float = 1e-3, pretrained_lr_factor: float = 1.0, bn: str = "train", batch_size: int = 32,
                seed: int = 0, device: str | torch.device | None = None) -> RunResult:
    """Train the top ``k`` stages (k >= 2) on cached activations at cut ``len(stages) - k``, starting from the
    warm-started ``head`` (:func:`train_head`), best validation epoch kept. ``model`` is not changed.

    ``bn="train"``: BatchNorm in the trained stages uses batch statistics and updates its running averages;
    ``bn="frozen"``: it stays in eval mode (ImageNet statistics), its scale and shift still train.

    >>> run = train_top_k(setup.model, 3, head, first_per_class(train7, 10), val7, test7, epochs=20)
    """
    if bn not in ("train", "frozen"):
        raise ValueError(f"bn must be 'train' or 'frozen', got {bn!r}.")
    net = copy.deepcopy(model)
    n = len(stages(net))
    if not 2 <= k < n:
        raise ValueError(f"k must be between 2 and {n - 1} for cached activations, got {k}.")
    stages(net)[-1].load_state_dict(head.head_state)
    freeze(net, trainable_stages=k)
    top = top_stages(net, n - k)
    if bn == "frozen":
        freeze_bn_stats(top)
    train = _pair(train)
    h = fit(top, train, val, test=test, epochs=epochs, lr=lr, pretrained_lr_factor=pretrained_lr_factor,
            batch_size=batch_size, seed=seed, device=device, progress=False)
    return RunResult(k, seed, float(h.best_val_acc), float(h.test.accuracy) if h.test else float("nan"),
                     head.seconds + h.seconds, len(h.epochs), int(h.best_epoch),
                     len(h.epochs) * math.ceil(len(train[1]) / batch_size))


def linear_probe(train, val, test=None, *, epochs: int = 30, lr: float = 1e-2, weight_decay: float = 1e-3,
                 batch_size: int = 128, seed: int = 0, device: str | torch.device | None = None) -> RunResult:
    """A softmax (multinomial logistic regression) on pooled activations: how linearly separable the classes
    are at that cut. Features are standardised with the *training* mean and std; best validation epoch kept.

    >>> probe = linear_probe(pooled[3]["train"], pooled[3]["val"], pooled[3]["test"])
    """
    x, y = _pair(train)
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True).clamp_min(1e-6)

    def norm(data):
        if data is None:
            return None
        a, b = _pair(data)
        return (a - mean) / std, b

    seed_everything(seed)
    head = nn.Linear(x.shape[1], int(y.max()) + 1)
    h = fit(head, norm(train), norm(val), test=norm(test), epochs=epochs, lr=lr, weight_decay=weight_decay,
            batch_size=batch_size, seed=seed, device=device, progress=False)
    return RunResult(0, seed, float(h.best_val_acc), float(h.test.accuracy) if h.test else float("nan"),
                     h.seconds, len(h.epochs), int(h.best_epoch), len(h.epochs) * math.ceil(len(y) / batch_size))


def probe_curve(pooled: dict[int, dict[str, FeatureSet]], n_per_class: int | None = None, seeds: Sequence[int] = (0,),
                **probe_kwargs) -> list[dict]:
    """A linear probe at every cut of ``pooled`` (``split_features(...)["pooled"]``): one row per cut and seed
    with ``cut, seed, channels, val_acc, test_acc, seconds``. ``n_per_class`` trains on a nested subset.

    >>> rows = probe_curve(feats["pooled"], n_per_class=50)
    """
    rows = []
    for cut in sorted(pooled):
        fs = pooled[cut]
        train = first_per_class(fs["train"], n_per_class) if n_per_class else fs["train"]
        for seed in seeds:
            r = linear_probe(train, fs["val"], fs["test"], seed=seed, **probe_kwargs)
            rows.append({"cut": cut, "seed": seed, "channels": int(fs["train"].features.shape[1]),
                         "val_acc": r.val_acc, "test_acc": r.test_acc, "seconds": r.seconds})
    return rows


def sweep(model: nn.Module, feats: dict, sizes: Sequence[int], ks: Sequence[int], seeds: Sequence[int] = (0,), *,
          steps: int = 100, head_steps: int = 1000, head_epochs: int = 60, head_lr: float = 1e-2, lr: float = 1e-3,
          pretrained_lr_factor: float = 1.0, bn: str = "train", batch_size: int = 128, head_batch_size: int = 32,
          min_epochs: int = 5, max_epochs: int = 20, device: str | torch.device | None = None,
          on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Training-set size x trainable stages x seed, on cached activations (``feats`` from
    :func:`split_features` with ``cuts=sweep_cuts(model, ks)``). Returns a tidy table, one dict per run:
    ``size, k, seed, val_acc, test_acc, seconds, epochs, best_epoch, steps``.

    Per (size, seed) the head is trained once (the k = 1 cell: ``epochs_for(n_train, head_batch_size,
    head_steps, 15, head_epochs)`` epochs) and every k >= 2 starts from it, with
    ``epochs_for(n_train, bs, steps, min_epochs, max_epochs)`` epochs (equal for every k of the
    row), where the batch ``bs = min(batch_size, max(8, ceil(n_train / 4)))`` gives a small set at least four
    steps per epoch. ``on_row`` sees each row
    as it is made (progress printing). The head trains with ``head_batch_size`` (cheap), the top stages with
    ``batch_size``: on a CPU a step on tiny activation maps costs about the same for 32 or 128 examples.

    >>> rows = sweep(setup.model, feats, sizes=(10, 50), ks=(1, 2, 3), seeds=(0, 1, 2))
    """
    n = len(stages(model))
    final = feats["cut"][n - 1]
    rows = []
    for size in sizes:
        for seed in seeds:
            head_train = first_per_class(final["train"], size)
            epochs = epochs_for(len(head_train[1]), head_batch_size, head_steps, 15, head_epochs)
            head = train_head(model, head_train, final["val"], final["test"], epochs=epochs, lr=head_lr,
                              batch_size=head_batch_size, seed=seed, device=device)
            for k in ks:
                if k == 1:
                    run = head
                else:
                    fs = feats["cut"][n - k]
                    train = first_per_class(fs["train"], size)
                    # Small sets: smaller batches, so that an epoch has at least 4 steps.
                    bs = min(batch_size, max(8, math.ceil(len(train[1]) / 4)))
                    epochs = epochs_for(len(train[1]), bs, steps, min_epochs, max_epochs)
                    run = train_top_k(model, k, head, train, fs["val"], fs["test"], epochs=epochs, lr=lr,
                                      pretrained_lr_factor=pretrained_lr_factor, bn=bn, batch_size=bs,
                                      seed=seed, device=device)
                row = {"size": size, "k": k, "seed": seed, "val_acc": run.val_acc, "test_acc": run.test_acc,
                       "seconds": run.seconds, "epochs": run.epochs, "best_epoch": run.best_epoch,
                       "steps": run.steps}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Reading a tidy table
# ---------------------------------------------------------------------------------------------
def summarise(rows: Sequence[dict], by: Sequence[str] = ("size", "k"),
              values: Sequence[str] = ("val_acc", "test_acc", "seconds")) -> list[dict]:
    """Mean, sample standard deviation (0 for one seed) and count of ``values`` per group ``by``, in
    first-seen order: ``{"size": 10, "k": 2, "val_acc": .81, "val_acc_std": .01, ..., "n": 3}``.

    >>> summarise(rows)[0]["test_acc"]
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, members in groups.items():
        s = dict(zip(by, key))
        for v in values:
            a = np.array([m[v] for m in members], dtype=float)
            s[v] = float(a.mean())
            s[v + "_std"] = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        s["n"] = len(members)
        out.append(s)
    return out


def best_k_by_val(rows: Sequence[dict]) -> dict[int, int]:
    """Per training-set size, the ``k`` with the highest mean validation accuracy; on a tie the smaller
    (cheaper) ``k``. Test accuracy plays no part.

    >>> best_k_by_val(rows)
    {10: 2, 50: 2, 250: 3}
    """
    best: dict[int, tuple[float, int]] = {}
    for s in summarise(rows):
        key = (round(s["val_acc"], 10), -s["k"])
        if s["size"] not in best or key > best[s["size"]]:
            best[s["size"]] = key
    return {size: -key[1] for size, key in sorted(best.items())}


def html_table(rows: Sequence[Sequence], header: Sequence[str], align: Sequence[str] | None = None) -> str:
    """A small HTML table (what a book page should print: myst-nb renders Markdown output without tables).
    Cells are escaped strings; ``align`` per column, "left" or "right".

    >>> from IPython.display import HTML
    >>> HTML(html_table([(10, "81.0 %")], ["photos per class", "test accuracy"]))
    """
    align = list(align or ["left"] + ["right"] * (len(header) - 1))

    def cells(values, tag):
        return "".join(f'<{tag} style="text-align:{a}">{html.escape(str(v))}</{tag}>' for v, a in zip(values, align))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"
