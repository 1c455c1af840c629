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
- **selection on validation, report on test**, seeds given explicitly; every seed is used through a
  private generator (the caller's global ``random`` / NumPy / torch generators are left as they were).

A page sweeps a domain in three calls (on the EuroSAT tiles, minutes on a CPU)::

    setup = domain_setup("eurosat")
    feats = split_features(setup, cuts=sweep_cuts(setup.model, ks=(1, 2, 3)))
    rows = sweep(setup.model, feats, sizes=(10, 50), ks=(1, 2, 3), seeds=(0,), plan=SweepPlan(steps=100))

>>> SweepPlan().steps, SweepPlan(max_epochs=15).max_epochs
(100, 15)
"""
from __future__ import annotations

import copy
import html
import math
from dataclasses import dataclass, fields
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
from ..profiles import Profile, get_profile
from ..training import TrainOptions, fit

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
    "SweepPlan",
    "choose_by_val",
    "check_grid",
    "sweep_plan",
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

    (With the photos: ``domain_setup("eurosat", get_profile("ci")).sizes == (10, 50, 250)``.)

    >>> domain_setup("mars")
    Traceback (most recent call last):
    ...
    ValueError: Unknown domain 'mars': use 'pets' or 'eurosat'.
    """
    if domain not in ("pets", "eurosat"):
        raise ValueError(f"Unknown domain {domain!r}: use 'pets' or 'eurosat'.")
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

    >>> from torch import nn
    >>> from tl_course.freezing import StagedModel
    >>> sweep_cuts(StagedModel(*[nn.Identity()] * 9, nn.Linear(4, 2)), ks=(1, 2, 3))   # 10 stages, like Lite0
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

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from torch import nn
    >>> from torchvision.transforms import v2
    >>> from tl_course.data import Samples, Splits
    >>> from tl_course.freezing import StagedModel
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    >>> samples = Samples(sorted(folder.glob("*.png")), [0, 1, 0, 1], ("dark", "bright"))
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ...                     nn.Linear(4, 2))
    >>> preprocess = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    >>> warm_cache(model, samples, preprocess, cuts=[2, 1], pooled_cuts=[1, 2], directory=folder / "cache") > 0
    True
    >>> warm_cache(model, samples, preprocess, cuts=[2], directory=folder / "cache")    # all on disk
    0.0
    """
    return warm_features(model, samples, preprocess, cuts, pooled_cuts, device=device, batch_size=batch_size,
                         num_workers=num_workers, directory=directory)


def cut_features(model: nn.Module, samples: Samples, preprocess: Callable, cut: int, pooled: bool = False,
                 device: str | torch.device | None = None, directory: str | Path | None = None) -> FeatureSet:
    """Activations at ``cut`` for ``samples`` (spatially averaged if ``pooled``), from the cache, computed if
    missing.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from torch import nn
    >>> from torchvision.transforms import v2
    >>> from tl_course.data import Samples, Splits
    >>> from tl_course.freezing import StagedModel
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    >>> samples = Samples(sorted(folder.glob("*.png")), [0, 1, 0, 1], ("dark", "bright"))
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ...                     nn.Linear(4, 2))
    >>> preprocess = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    >>> cut_features(model, samples, preprocess, cut=1, pooled=True, directory=folder / "cache").features.shape
    torch.Size([4, 4])
    """
    return cached_features(model, samples, preprocess, cut=cut, device=device, directory=directory,
                           progress=False, pooled=pooled)


def split_features(setup: Setup, cuts: Iterable[int] = (), pooled_cuts: Iterable[int] = (),
                   device: str | torch.device | None = None, directory: str | Path | None = None,
                   ) -> dict[str, dict]:
    """Train / val / test activations of a setup at every cut, one forward pass per split.

    Returns ``{"cut": {cut: {"train": fs, "val": fs, "test": fs}}, "pooled": {cut: {...}}, "seconds": s}``
    where ``seconds`` is the extraction time of this call (0 when everything was cached).

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from torch import nn
    >>> from torchvision.transforms import v2
    >>> from tl_course.data import Samples, Splits
    >>> from tl_course.freezing import StagedModel
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    >>> samples = Samples(sorted(folder.glob("*.png")), [0, 1, 0, 1], ("dark", "bright"))
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ...                     nn.Linear(4, 2))
    >>> preprocess = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    >>> setup = Setup("demo", model, preprocess, Splits(samples, samples, samples, samples.classes), (1, 2),
    ...               samples.classes)
    >>> feats = split_features(setup, cuts=[3, 2], pooled_cuts=[1], directory=folder / "cache")
    >>> feats["cut"][3]["train"].features.shape, feats["pooled"][1]["val"].features.shape
    (torch.Size([4, 4]), torch.Size([4, 4]))
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

    >>> import torch
    >>> fs = FeatureSet(torch.arange(5.0).reshape(5, 1), torch.tensor([0, 1, 0, 1, 0]), list("abcde"), 9, "")
    >>> x, y = first_per_class(fs, 2)
    >>> x.flatten().tolist(), y.tolist()
    ([0.0, 1.0, 2.0, 3.0], [0, 1, 0, 1])
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
    for name, value in (("n_train", n_train), ("batch_size", batch_size), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    if not 1 <= min_epochs <= max_epochs:
        raise ValueError(f"need 1 <= min_epochs <= max_epochs, got {min_epochs} and {max_epochs}.")
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
    curve: tuple[float, ...] = ()  #: validation accuracy after every epoch (the learning curve)
    lr: float = float("nan")  #: the learning rate it trained with


def _pair(data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, FeatureSet):
        return data.features, data.labels
    return data[0], data[1]


def train_head(model: nn.Module, train, val, test=None, *, epochs: int = 60, lr: float = 1e-2,
               batch_size: int = 32, seed: int = 0, device: str | torch.device | None = None) -> RunResult:
    """k = 1, the warm start of every deeper run: a fresh softmax (drawn from ``seed`` by a private
    generator) on cached final features (cut ``len(stages) - 1``), best validation epoch kept. Neither
    ``model`` nor the caller's random number generators are changed.

    >>> import torch
    >>> from torch import nn
    >>> from tl_course.freezing import StagedModel
    >>> model = StagedModel(nn.Linear(2, 2), nn.Linear(2, 2))      # 2 stages: the cut is 1
    >>> x = torch.randn(20, 2); y = (x[:, 0] > 0).long()
    >>> head = train_head(model, (x, y), (x, y), epochs=5, seed=0)
    >>> head.k, sorted(head.head_state)
    (1, ['bias', 'weight'])
    """
    net = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):  # the head drawn from this seed, the caller's generator untouched
        torch.manual_seed(seed)
        replace_head(net, get_head(net).out_features)
    freeze(net, trainable_stages=1)
    n = len(stages(net))
    top = top_stages(net, n - 1)
    train = _pair(train)
    h = fit(top, train, val, test=test, epochs=epochs, lr=lr, batch_size=batch_size, device=device,
            progress=False, options=TrainOptions(seed=seed))
    head = stages(net)[-1]
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    return RunResult(1, seed, float(h.best_val_acc), float(h.test.accuracy) if h.test else float("nan"),
                     h.seconds, len(h.epochs), int(h.best_epoch), len(h.epochs) * math.ceil(len(train[1]) / batch_size),
                     state, tuple(float(e["val_acc"]) for e in h.epochs), float(lr))


def train_top_k(model: nn.Module, k: int, head: RunResult, train, val, test=None, *, epochs: int = 10,
                lr: float = 1e-3, pretrained_lr_factor: float = 1.0, bn: str = "train", batch_size: int = 32,
                seed: int = 0, device: str | torch.device | None = None) -> RunResult:
    """Train the top ``k`` stages (k >= 2) on cached activations at cut ``len(stages) - k``, starting from the
    warm-started ``head`` (:func:`train_head`), best validation epoch kept. ``model`` is not changed.

    ``bn="train"``: BatchNorm in the trained stages uses batch statistics and updates its running averages;
    ``bn="frozen"``: it stays in eval mode (ImageNet statistics), its scale and shift still train.

    >>> import torch
    >>> from torch import nn
    >>> from tl_course.freezing import StagedModel
    >>> model = StagedModel(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2))
    >>> acts = torch.randn(20, 2); y = (acts[:, 0] > 0).long()
    >>> head = train_head(model, (torch.randn(20, 4), y), (torch.randn(20, 4), y), epochs=2)   # on cut-2 acts
    >>> run = train_top_k(model, 2, head, (acts, y), (acts, y), epochs=3)   # stages 1 and 2 train on acts
    >>> run.k, run.epochs
    (2, 3)
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
    h = fit(top, train, val, test=test, epochs=epochs, lr=lr, batch_size=batch_size, device=device, progress=False,
            options=TrainOptions(pretrained_lr_factor=pretrained_lr_factor, seed=seed))
    return RunResult(k, seed, float(h.best_val_acc), float(h.test.accuracy) if h.test else float("nan"),
                     head.seconds + h.seconds, len(h.epochs), int(h.best_epoch),
                     len(h.epochs) * math.ceil(len(train[1]) / batch_size), None,
                     tuple(float(e["val_acc"]) for e in h.epochs), float(lr))


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training ``mean`` and ``1 / std`` per column, with 0 instead of ``1 / std`` for a column that is
    constant on the training rows (it would be divided by almost nothing)."""
    mean = x.mean(0, keepdim=True)
    std = x.std(0, correction=0, keepdim=True)  # correction=0: one training row gives 0, not NaN
    informative = std > 1e-6 * (1 + mean.abs())
    return mean, torch.where(informative, 1 / std.clamp_min(1e-12), torch.zeros_like(std))


def linear_probe(train, val, test=None, *, epochs: int = 30, lr: float = 1e-2, weight_decay: float = 1e-3,
                 batch_size: int = 128, seed: int = 0, device: str | torch.device | None = None) -> RunResult:
    """A softmax (multinomial logistic regression) on pooled activations: how linearly separable the classes
    are at that cut; best validation epoch kept.

    Features are standardised with the *training* mean and standard deviation; a column that is constant on
    the training rows (std ``<= 1e-6 * (1 + |mean|)``: a channel that is zero on every training photo, common
    with few photos) carries no information the probe could learn from, and is set to 0 everywhere, never
    divided by a tiny number (which would blow it up on validation and test rows). The probe's initial
    weights are drawn from ``seed`` by a private generator: the caller's global generators are left alone,
    so a bootstrap loop around the probe draws fresh numbers in every round.

    >>> import torch
    >>> x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)); y = (x[:, 0] > 0).long()
    >>> x[:, 2] = 0.0                                    # constant on the training rows
    >>> val = x.clone(); val[:, 2] = 5.0                 # but not on the validation rows
    >>> linear_probe((x, y), (val, y), epochs=20, lr=0.1).val_acc > 0.8
    True
    """
    x, y = _pair(train)
    mean, std = _standardiser(x)

    def norm(data):
        if data is None:
            return None
        a, b = _pair(data)
        return (a - mean) * std, b

    with torch.random.fork_rng(devices=[]):  # the probe drawn from this seed, the caller's generator untouched
        torch.manual_seed(seed)
        head = nn.Linear(x.shape[1], int(y.max()) + 1)
    h = fit(head, norm(train), norm(val), test=norm(test), epochs=epochs, lr=lr, batch_size=batch_size,
            device=device, progress=False, options=TrainOptions(weight_decay=weight_decay, seed=seed))
    return RunResult(0, seed, float(h.best_val_acc), float(h.test.accuracy) if h.test else float("nan"),
                     h.seconds, len(h.epochs), int(h.best_epoch), len(h.epochs) * math.ceil(len(y) / batch_size))


def probe_curve(pooled: dict[int, dict[str, FeatureSet]], n_per_class: int | None = None, seeds: Sequence[int] = (0,),
                **probe_kwargs) -> list[dict]:
    """A linear probe at every cut of ``pooled`` (``split_features(...)["pooled"]``): one row per cut and seed
    with ``cut, seed, channels, val_acc, test_acc, seconds``. ``n_per_class`` trains on a nested subset.

    >>> import torch
    >>> x = torch.randn(12, 3); y = torch.tensor([0, 1] * 6)
    >>> fs = FeatureSet(x + y[:, None], y, [str(i) for i in range(12)], 2, "")
    >>> rows = probe_curve({2: {"train": fs, "val": fs, "test": fs}}, n_per_class=4, seeds=(0, 1), epochs=3)
    >>> [(r["cut"], r["seed"], r["channels"]) for r in rows]
    [(2, 0, 3), (2, 1, 3)]
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


def check_grid(grid: Sequence[float], name: str = "grid") -> tuple[float, ...]:
    """A learning-rate grid as a tuple, after checking it: positive finite numbers, strictly ascending.

    >>> check_grid((1e-3, 3e-3, 1e-2))
    (0.001, 0.003, 0.01)
    >>> check_grid((1e-2, 1e-3), "lrs")
    Traceback (most recent call last):
    ...
    ValueError: lrs must be positive learning rates in ascending order, got (0.01, 0.001).
    """
    grid = tuple(grid)
    ok = (len(grid) >= 1 and all(isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g)
                                 and g > 0 for g in grid)
          and all(a < b for a, b in zip(grid, grid[1:])))
    if not ok:
        raise ValueError(f"{name} must be positive learning rates in ascending order, got {grid!r}.")
    return tuple(float(g) for g in grid)


def choose_by_val(runs: Sequence[RunResult]) -> RunResult:
    """The run with the highest *validation* accuracy (its best epoch); on a tie the first in grid order
    (the smallest learning rate). Test accuracy plays no part: a run that is better on test but worse on
    validation is not chosen.

    >>> a = RunResult(2, 0, val_acc=0.80, test_acc=0.95, seconds=1, epochs=5, best_epoch=3, steps=50, lr=1e-4)
    >>> b = RunResult(2, 0, val_acc=0.84, test_acc=0.70, seconds=1, epochs=5, best_epoch=4, steps=50, lr=1e-3)
    >>> choose_by_val([a, b]).lr
    0.001
    """
    runs = list(runs)
    if not runs:
        raise ValueError("choose_by_val needs at least one run.")
    for r in runs:
        if math.isnan(float(r.val_acc)):
            raise ValueError(f"a run with lr={r.lr} has no validation accuracy (NaN): it cannot be ranked.")
    best = runs[0]
    for r in runs[1:]:
        if round(float(r.val_acc), 10) > round(float(best.val_acc), 10):
            best = r
    return best


@dataclass(frozen=True)
class SweepPlan:
    """The budget of a :func:`sweep`: how long each run trains and how fast it learns.

    Per (size, seed) the head is trained once (the k = 1 cell: ``epochs_for(n_train, head_batch_size,
    head_steps, min(15, head_epochs), head_epochs)`` epochs at ``head_lr``) and every k >= 2 starts from it, with
    ``epochs_for(n_train, bs, steps, min_epochs, max_epochs)`` epochs at ``lr`` (pretrained stages at
    ``lr * pretrained_lr_factor``), equal for every k of the row, where the batch ``bs = min(batch_size,
    max(8, ceil(n_train / 4)))`` gives a small set at least four steps per epoch. The head trains with
    ``head_batch_size`` (cheap), the top stages with ``batch_size``: on a CPU a step on tiny activation maps
    costs about the same for 32 or 128 examples. ``bn``: see :func:`train_top_k`.

    >>> SweepPlan(steps=100, max_epochs=15).head_steps
    1000
    """

    steps: int = 100  #: optimizer steps of every k >= 2 run of a row (after the warm start)
    head_steps: int = 1000  #: optimizer steps of the head (k = 1, the warm start)
    head_epochs: int = 60  #: at most this many head epochs
    head_lr: float = 1e-2
    lr: float = 1e-3
    pretrained_lr_factor: float = 1.0
    bn: str = "train"  #: "train" or "frozen" (BatchNorm inside the trained stages)
    batch_size: int = 128  #: of the top-k runs (smaller for small sets: at least 4 steps per epoch)
    head_batch_size: int = 32
    min_epochs: int = 5  #: of the top-k runs
    max_epochs: int = 20  #: of the top-k runs
    #: learning rates the head is tried with (the one with the best validation accuracy is kept); empty:
    #: ``(head_lr,)``
    head_lrs: tuple[float, ...] = ()
    #: learning rates every k >= 2 run is tried with, chosen per cell on validation; empty: ``(lr,)``
    lrs: tuple[float, ...] = ()

    @property
    def head_grid(self) -> tuple[float, ...]:
        """The head's learning rates: ``head_lrs``, or ``(head_lr,)``."""
        return tuple(self.head_lrs) or (self.head_lr,)

    @property
    def grid(self) -> tuple[float, ...]:
        """The learning rates of the k >= 2 runs: ``lrs``, or ``(lr,)``."""
        return tuple(self.lrs) or (self.lr,)

    def settings(self) -> dict:
        """Everything that decides a sweep's numbers, as plain values (what an archived run must match).

        >>> SweepPlan(head_lrs=(1e-3, 1e-2)).settings()["head_lrs"], SweepPlan().settings()["lrs"]
        ([0.001, 0.01], [0.001])
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["head_lrs"], out["lrs"] = list(self.head_grid), list(self.grid)
        return out

    def __post_init__(self) -> None:
        if self.bn not in ("train", "frozen"):
            raise ValueError(f"bn must be 'train' or 'frozen', got {self.bn!r}.")
        check_grid(self.head_grid, "head_lrs")
        check_grid(self.grid, "lrs")
        for name in ("steps", "head_steps", "head_epochs", "batch_size", "head_batch_size", "min_epochs",
                     "max_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"min_epochs ({self.min_epochs}) must not exceed max_epochs ({self.max_epochs}).")


def sweep_plan(profile: Profile | None = None) -> SweepPlan:
    """Chapter 8's protocol for a profile: the head trained 1000 steps (at most 60 epochs) at each rate of
    ``profile.sweep_head_lrs``, every k >= 2 run ``profile.sweep_steps`` steps (at most
    ``profile.sweep_max_epochs`` epochs) at each rate of ``profile.sweep_lrs``, BatchNorm trained; the rate and
    the epoch chosen on validation. The archive (:mod:`tl_course.book.archive`) records ``.settings()`` and
    refuses a file whose settings differ from the current ones.

    >>> sweep_plan(get_profile("cpu")).lrs, sweep_plan(get_profile("ci")).grid
    ((0.0003, 0.001, 0.003), (0.001,))
    """
    profile = profile or get_profile()
    return SweepPlan(head_steps=1000, head_epochs=60, head_lr=profile.sweep_head_lrs[0],
                     head_lrs=tuple(profile.sweep_head_lrs), steps=profile.sweep_steps,
                     max_epochs=profile.sweep_max_epochs, lr=profile.sweep_lrs[0], lrs=tuple(profile.sweep_lrs),
                     bn="train")


def sweep(model: nn.Module, feats: dict, sizes: Sequence[int], ks: Sequence[int], seeds: Sequence[int] = (0,), *,
          plan: SweepPlan | None = None, device: str | torch.device | None = None,
          on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Training-set size x trainable stages x seed, on cached activations (``feats`` from
    :func:`split_features` with ``cuts=sweep_cuts(model, ks)``), with the budget of ``plan``
    (:class:`SweepPlan`, default ``SweepPlan()``). Returns a tidy table, one dict per
    cell and seed: ``size, k, seed, val_acc, test_acc, seconds, epochs, best_epoch, steps, lr, lr_at_edge,
    curve``.

    The protocol: per (size, seed) the head is trained with every rate of ``plan.head_grid`` and the one with
    the best validation accuracy is kept (:func:`choose_by_val`): the ``k = 1`` cell and the warm start of
    every deeper run; per (size, seed, k >= 2) every rate of ``plan.grid`` is tried from that head, and again
    validation chooses. Every run keeps its best validation epoch (early stopping on validation). ``lr`` is the
    chosen rate, ``lr_at_edge`` whether it sat at an end of a grid of several (widen the grid if often),
    ``curve`` the chosen run's validation accuracy per epoch, ``seconds`` the cell's whole search (the head's
    included). ``on_row`` sees each row as it is made (progress printing).

    >>> import torch
    >>> from torch import nn
    >>> from tl_course.freezing import StagedModel
    >>> model = StagedModel(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2))
    >>> x = torch.randn(8, 3); y = torch.tensor([0, 1] * 4)
    >>> fs = FeatureSet(x + y[:, None], y, [str(i) for i in range(8)], 0, "")
    >>> feats = {"cut": {2: {"train": fs, "val": fs, "test": fs}, 1: {"train": fs, "val": fs, "test": fs}}}
    >>> plan = SweepPlan(steps=4, head_steps=4, head_epochs=15, min_epochs=1, max_epochs=2, batch_size=8)
    >>> rows = sweep(model, feats, sizes=(2, 4), ks=(1, 2), plan=plan)
    >>> [(r["size"], r["k"]) for r in rows]
    [(2, 1), (2, 2), (4, 1), (4, 2)]
    """
    plan = plan if plan is not None else SweepPlan()
    n = len(stages(model))
    final = feats["cut"][n - 1]
    rows = []
    for size in sizes:
        for seed in seeds:
            head_train = first_per_class(final["train"], size)
            epochs = epochs_for(len(head_train[1]), plan.head_batch_size, plan.head_steps, min(15, plan.head_epochs),
                                plan.head_epochs)
            heads = [train_head(model, head_train, final["val"], final["test"], epochs=epochs, lr=lr,
                                batch_size=plan.head_batch_size, seed=seed, device=device) for lr in plan.head_grid]
            head = choose_by_val(heads)
            head_seconds = sum(h.seconds for h in heads)  # the search is part of the price
            for k in ks:
                if k == 1:
                    run, grid, seconds = head, plan.head_grid, head_seconds
                else:
                    fs = feats["cut"][n - k]
                    train = first_per_class(fs["train"], size)
                    # Small sets: smaller batches, so that an epoch has at least 4 steps.
                    bs = min(plan.batch_size, max(8, math.ceil(len(train[1]) / 4)))
                    epochs = epochs_for(len(train[1]), bs, plan.steps, plan.min_epochs, plan.max_epochs)
                    tried = [train_top_k(model, k, head, train, fs["val"], fs["test"], epochs=epochs, lr=lr,
                                         pretrained_lr_factor=plan.pretrained_lr_factor, bn=plan.bn, batch_size=bs,
                                         seed=seed, device=device) for lr in plan.grid]
                    run, grid = choose_by_val(tried), plan.grid
                    seconds = head_seconds + sum(r.seconds - head.seconds for r in tried)
                row = {"size": size, "k": k, "seed": seed, "val_acc": run.val_acc, "test_acc": run.test_acc,
                       "seconds": seconds, "epochs": run.epochs, "best_epoch": run.best_epoch,
                       "steps": run.steps, "lr": run.lr,
                       "lr_at_edge": len(grid) > 1 and run.lr in (grid[0], grid[-1]),
                       "curve": list(run.curve)}
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

    >>> rows = [{"size": 10, "k": 2, "seed": s, "val_acc": a, "test_acc": a, "seconds": 1.0}
    ...         for s, a in ((0, 0.8), (1, 0.9))]
    >>> round(summarise(rows)[0]["test_acc"], 3), summarise(rows)[0]["n"]
    (0.85, 2)
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
    (cheaper) ``k``. Test accuracy plays no part. A row whose ``val_acc`` is NaN (a run that never
    validated) cannot be ranked and is a ``ValueError`` naming it: drop or repair such rows first.

    >>> rows = [{"size": 10, "k": k, "seed": 0, "val_acc": a, "test_acc": 0.5, "seconds": 1.0}
    ...         for k, a in ((1, 0.80), (2, 0.84), (3, 0.84))]
    >>> best_k_by_val(rows)
    {10: 2}
    """
    for r in rows:
        if math.isnan(float(r["val_acc"])):
            raise ValueError(f"val_acc is NaN in the row size={r['size']}, k={r['k']}, seed={r.get('seed')}: "
                             "best_k_by_val cannot rank it (drop or repair that row first).")
    best: dict[int, tuple[float, int]] = {}
    for s in summarise(rows):
        key = (round(s["val_acc"], 10), -s["k"])
        if s["size"] not in best or key > best[s["size"]]:
            best[s["size"]] = key
    return {size: -key[1] for size, key in sorted(best.items())}


def html_table(rows: Sequence[Sequence], header: Sequence[str], align: Sequence[str] | None = None) -> str:
    """A small HTML table (what a book page should print: myst-nb renders Markdown output without tables).
    Cells are escaped strings; ``align`` per column, "left", "right" or "center" (default: the first column
    left, the others right). ``align`` and every row must have one entry per column of ``header``: a
    mismatch is a ``ValueError``, never a silently dropped column.

    >>> html_table([(10, "81.0 %")], ["photos", "accuracy"])
    '<table><thead><tr><th style="text-align:left">photos</th><th style="text-align:right">accuracy</th></tr></thead><tbody><tr><td style="text-align:left">10</td><td style="text-align:right">81.0 %</td></tr></tbody></table>'
    """
    header = list(header)
    align = list(align) if align is not None else ["left"] + ["right"] * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} entries but the header has {len(header)} columns: give one "
                         "alignment per column.")
    if any(a not in ("left", "right", "center") for a in align):
        raise ValueError(f"align entries must be 'left', 'right' or 'center', got {align!r}.")
    rows = [list(r) for r in rows]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(f"row {i} has {len(r)} cells but the header has {len(header)} columns.")

    def cells(values, tag):
        return "".join(f'<{tag} style="text-align:{a}">{html.escape(str(v))}</{tag}>' for v, a in zip(values, align))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"
