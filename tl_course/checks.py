"""Checks of the facts transfer learning depends on, in the words a student needs when one fails.

The autograder tests and the chapters call these; each raises ``AssertionError`` with one clear sentence.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["snapshot", "changed", "bn_running_stats", "optimizer_step", "optimizer_parameter_ids",
           "check_head", "check_only_head_trains"]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer (BatchNorm running statistics included), by name.

    >>> before = snapshot(torch.nn.BatchNorm2d(8))
    >>> sorted(before)
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: nn.Module, ignore: Iterable[str] = ("num_batches_tracked",)
            ) -> list[str]:
    """Names of the tensors of ``model`` that are no longer bit-identical to ``before`` (a :func:`snapshot`),
    skipping names ending in ``ignore`` (by default BatchNorm's step counter, which counts forward passes in
    train mode and is no weight; ``ignore=()`` compares everything).

    >>> net = nn.Linear(2, 2)
    >>> before = snapshot(net)
    >>> with torch.no_grad():
    ...     _ = net.bias.add_(1)
    >>> changed(before, net)
    ['bias']
    """
    now = model.state_dict()
    ignore = tuple(ignore)
    return [k for k, v in before.items()
            if k in now and not (ignore and k.endswith(ignore)) and not torch.equal(v, now[k].detach().to("cpu"))]


def bn_running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm running mean and variance, by module name.

    >>> stats = bn_running_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)))
    >>> sorted(stats)
    ['1.running_mean', '1.running_var']
    """
    stats = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            stats[f"{name}.running_mean"] = m.running_mean.detach().to("cpu", copy=True)
            stats[f"{name}.running_var"] = m.running_var.detach().to("cpu", copy=True)
    return stats


def optimizer_parameter_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    """``id()`` of every parameter the optimizer updates.

    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    >>> optimizer_parameter_ids(optimizer) == {id(p) for p in model[1].parameters()}
    True
    """
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, image_size: int = 64, batch_size: int = 4,
                   seed: int = 0) -> None:
    """One real training step in ``model.train()`` mode on a random batch (what a training loop does).

    >>> from tl_course.freezing import build_optimizer, freeze
    >>> from tl_course.models import load_random_init
    >>> model = freeze(load_random_init("resnet18").model, trainable_stages=1)
    >>> before = snapshot(model)
    >>> optimizer_step(model, build_optimizer(model))
    >>> changed(before, model)  # only the trainable head moved, the frozen BatchNorm statistics did not
    ['fc.weight', 'fc.bias']
    """
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device)
    model.train()
    optimizer.zero_grad()
    logits = model(x)
    y = torch.randint(0, logits.shape[1], (batch_size,), generator=g).to(device)
    nn.functional.cross_entropy(logits, y).backward()
    optimizer.step()


def check_head(model: nn.Module, num_classes: int, image_size: int = 64) -> None:
    """The network ends in a ``num_classes``-way layer and outputs ``num_classes`` logits.

    >>> from tl_course.models import load_random_init, replace_head
    >>> model = replace_head(load_random_init("resnet18").model, 3)
    >>> check_head(model, 3)  # passes: says nothing
    >>> check_head(model, 5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: The model outputs (3,) values per image, not 5: replace the 1000-way layer instead of ...
    """
    from .models import get_head

    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}  # each module's own flag, restored even if forward fails
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, image_size, image_size, device=device))
    finally:
        for m, mode in modes.items():
            m.training = mode
    assert out.shape == (2, num_classes), (
        f"The model outputs {tuple(out.shape[1:])} values per image, not {num_classes}: "
        "replace the 1000-way layer instead of keeping it or stacking a new layer after it.")
    head = get_head(model)
    assert head.out_features == num_classes, f"The last linear layer has {head.out_features} outputs, not {num_classes}."
    imagenet = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == 1000]
    assert num_classes == 1000 or not imagenet, (
        f"The old 1000-way layer {imagenet[0]!r} is still in the network: replace it instead of stacking "
        "a new layer after it.")


def check_only_head_trains(model: nn.Module, optimizer: torch.optim.Optimizer, head: nn.Module,
                           image_size: int = 64) -> None:
    """After ``model.train()`` and one optimizer step: the head changed, every other weight and every
    BatchNorm running statistic is bit-identical, and the optimizer holds exactly the head's parameters.

    The caller's objects are left exactly as they were: every weight, buffer, gradient, train/eval flag and
    the optimizer's state are restored afterwards (in place, not on a copy: a student's hooks may refer to
    the original modules).

    >>> from tl_course.freezing import build_optimizer, freeze
    >>> from tl_course.models import load_random_init, replace_head
    >>> model = freeze(replace_head(load_random_init("resnet18").model, 3), trainable_stages=1)
    >>> check_only_head_trains(model, build_optimizer(model), model.fc)  # passes: says nothing
    >>> unfrozen = replace_head(load_random_init("resnet18").model, 3)
    >>> everything = torch.optim.SGD(unfrozen.parameters(), lr=0.1)
    >>> check_only_head_trains(unfrozen, everything, unfrozen.fc)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: The optimizer updates 62 tensors but the new head has 2: build it from the trainable ...
    """
    import copy

    params = {id(p): p for p in [*model.parameters(), *head.parameters(),
                                 *(p for g in optimizer.param_groups for p in g["params"])]}.values()
    saved_params = [(p, p.detach().clone(), None if p.grad is None else p.grad.detach().clone()) for p in params]
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    saved_modes = {m: m.training for m in [*model.modules(), *head.modules()]}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    try:
        _check_only_head_trains(model, optimizer, head, image_size)
    finally:
        with torch.no_grad():
            for p, value, grad in saved_params:
                p.copy_(value)
                p.grad = grad
            for b, value in saved_buffers:
                b.copy_(value)
        for m, mode in saved_modes.items():
            m.training = mode
        optimizer.load_state_dict(saved_optimizer)


def _check_only_head_trains(model: nn.Module, optimizer: torch.optim.Optimizer, head: nn.Module,
                            image_size: int) -> None:
    head_ids = {id(p) for p in head.parameters()}
    held = optimizer_parameter_ids(optimizer)
    assert held, "The optimizer holds no parameters."
    assert held <= {id(p) for p in model.parameters()}, "The optimizer holds parameters that are not in this model."
    assert held == head_ids, (
        f"The optimizer updates {len(held)} tensors but the new head has {len(head_ids)}: "
        "build it from the trainable parameters only (p.requires_grad).")
    head_names = {n for n, p in model.named_parameters() if id(p) in head_ids}
    assert any(p.requires_grad for p in head.parameters()), (
        "The new head is frozen (requires_grad is False), so nothing can train: freeze only the layers below it.")
    before = snapshot(model)
    optimizer_step(model, optimizer, image_size=image_size)
    moved = set(changed(before, model))
    frozen_moved = sorted(n for n in moved - head_names if not n.endswith("num_batches_tracked"))
    assert not frozen_moved, (
        f"{len(frozen_moved)} frozen tensors changed after one step (first: {frozen_moved[0]}): "
        "set requires_grad = False on them and keep BatchNorm layers of the frozen part in eval mode.")
    assert head_names & moved, "The new head did not change after an optimizer step: is it frozen too?"
