"""The learning-rate range test (L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV
2017; fastai's ``lr_find``): train for a few dozen steps while the learning rate grows geometrically, and
plot the loss against it. Too small a rate barely moves the loss; too large a one makes it explode; a good
rate lies where the loss falls fastest, somewhat below the minimum.

The test trains a *copy* of the model: the caller's weights, modes and random generators are left as they
were.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["LRRange", "lr_range_test"]


@dataclass(frozen=True)
class LRRange:
    """What the range test measured: the learning rate of every step, the smoothed training loss after
    it, and ``suggested``, the rate where the smoothed loss fell fastest (per decade of learning rate),
    looked for before the loss reached its minimum."""

    lrs: np.ndarray
    losses: np.ndarray
    suggested: float


def _batches(data, batch_size: int, generator: torch.Generator):
    if isinstance(data, torch.utils.data.DataLoader):
        loader = data
    else:
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
            data = torch.utils.data.TensorDataset(*data)
        elif hasattr(data, "features") and hasattr(data, "labels"):  # a cached FeatureSet
            data = torch.utils.data.TensorDataset(data.features.float(), data.labels)
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the training data yields no batch: give at least one example "
                             "(and batch_size <= its size when the loader drops the last batch).")


def lr_range_test(model: nn.Module, train, *, start: float = 1e-6, end: float = 1.0, steps: int = 60,
                  batch_size: int = 32, weight_decay: float = 0.0, smoothing: float = 0.9,
                  diverge: float = 4.0, seed: int = 0, device: str | torch.device = "cpu") -> LRRange:
    """Run the range test on a copy of ``model`` over ``train`` (a dataset of ``(input, label)``, a
    DataLoader, a ``FeatureSet`` or a ``(features, labels)`` pair): ``steps`` AdamW steps over the
    *trainable* parameters, the rate growing geometrically from ``start`` to ``end``; the loss is smoothed
    exponentially (``smoothing``) and the test stops early once it exceeds ``diverge`` times its minimum.

    >>> torch.manual_seed(0) is not None
    True
    >>> x = torch.randn(200, 8); y = (x[:, 0] > 0).long()
    >>> result = lr_range_test(nn.Linear(8, 2), (x, y), start=1e-4, end=100.0, steps=60, batch_size=20)
    >>> 1e-3 < result.suggested < 10 and len(result.lrs) == len(result.losses) <= 60
    True
    >>> lr_range_test(nn.Linear(8, 2), (x, y), start=1e-2, end=1e-3)
    Traceback (most recent call last):
    ...
    ValueError: the range must grow: start (0.01) must be below end (0.001), both positive.
    """
    if not 0 < start < end:
        raise ValueError(f"the range must grow: start ({start}) must be below end ({end}), both positive.")
    if steps < 5:
        raise ValueError(f"steps must be at least 5 to draw a curve, got {steps}.")
    net = copy.deepcopy(model).to(device)
    net.train()  # modules the course keeps in eval mode (frozen BatchNorm) stay there by their own class
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter: nothing to test (freeze leaves at least "
                         "the head trainable).")
    optimizer = torch.optim.AdamW(params, lr=start, weight_decay=weight_decay)
    factor = (end / start) ** (1 / (steps - 1))
    generator = torch.Generator().manual_seed(seed)
    lrs, losses, avg, best = [], [], 0.0, math.inf
    with torch.random.fork_rng(devices=[]):  # dropout inside the copy: seeded, the caller's generator untouched
        torch.manual_seed(seed)
        for step, (inputs, labels) in zip(range(steps), _batches(train, batch_size, generator)):
            lr = start * factor ** step
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = nn.functional.cross_entropy(net(inputs.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            avg = smoothing * avg + (1 - smoothing) * loss.item()
            smoothed = avg / (1 - smoothing ** (step + 1))  # bias-corrected, as in Adam
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                break
    lrs_a, losses_a = np.asarray(lrs), np.asarray(losses)
    return LRRange(lrs_a, losses_a, _steepest(lrs_a, losses_a))


def _steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The rate where the loss falls fastest per decade, before its minimum, ignoring the first tenth of the
    steps (the smoothed loss is still settling there); a tenth of the minimum's rate when the curve is too
    short to have a slope.

    >>> lrs = np.geomspace(1e-4, 1, 41)
    >>> _steepest(lrs, 1 / (1 + np.exp(-(np.log10(lrs) + 2) * 4)) * -1 + 2)   # falls fastest at 1e-2
    0.01
    """
    lowest = int(np.nanargmin(losses))
    skip = max(2, len(lrs) // 10)
    if lowest - skip < 3:
        return float(lrs[lowest] / 10)
    window = losses[skip:lowest + 1]
    slopes = np.gradient(window, np.log10(lrs[skip:lowest + 1]))
    return float(lrs[skip + int(np.argmin(slopes))])
