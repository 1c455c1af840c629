"""Freeze by stage: the network as an ordered list of blocks, the early ones fixed, the last ``k`` trained.

A *stage* is a block of the network between two natural boundaries (the stem, a group of blocks, the
head); each model family's record (:mod:`tl_course.families`) says how to cut its networks. Stages are
built on demand as views that share the model's own parameters, so freezing a stage freezes the model and
running the stages one after another computes exactly ``model(x)``.

One way of counting, everywhere in the course: ``stages(model)`` is numbered from 0 (the stem) to
``n - 1`` (the classifier), ``n = len(stages(model))``. Every function counts *trainable* stages from the
top and calls the boundary below them the *cut*:

- ``freeze(model, trainable_stages=k)`` trains ``stages(model)[n - k:]``, the last ``k``, and freezes the rest;
- the cut of that freeze is ``cut = n - k``: ``bottom_stages(model, cut)`` is the frozen ``stages(model)[:cut]``
  whose activations are cached, ``top_stages(model, cut)`` the trained ``stages(model)[cut:]``;
- ``replace_top_stages(model, n_stages=k, ...)`` removes those same last ``k`` stages (the head included);
- ``param_groups`` / ``build_optimizer`` tag each group with its ``stage``, the 0-based index.

>>> from tl_course.models import load_random_init
>>> {name: len(stages(load_random_init(name).model))
...  for name in ("efficientnet_lite0", "resnet18", "efficientnet_b0", "mobilenet_v3_large")}
{'efficientnet_lite0': 10, 'resnet18': 6, 'efficientnet_b0': 10, 'mobilenet_v3_large': 18}
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from .families import family_of

__all__ = [
    "StagedModel",
    "EvalModeBatchNorm2d",
    "stages",
    "freeze",
    "unfreeze",
    "freeze_bn_stats",
    "count_parameters",
    "trainable_parameters",
    "replace_top_stages",
    "param_groups",
    "build_optimizer",
]


class StagedModel(nn.Sequential):
    """A network stored directly as its stages (what :func:`replace_top_stages` returns)."""


def stages(model: nn.Module) -> list[nn.Module]:
    """The network as an ordered list of stages from input to output, the classifier last, cut where the
    model's family record (:func:`tl_course.families.family_of`) says.

    >>> from tl_course.models import load_pretrained
    >>> len(stages(load_pretrained().model))
    10
    >>> stages(nn.Linear(3, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: stages() does not know how to split a Linear into stages: it splits the networks of ...
    """
    if isinstance(model, StagedModel):
        return list(model)
    family = family_of(model)
    if family is None:
        from .families import families

        known = ", ".join(f.architecture.rsplit(".", 1)[-1] for f in families())
        raise TypeError(f"stages() does not know how to split a {type(model).__name__} into stages: it splits the "
                        f"networks of its model families ({known}); add a family with "
                        "tl_course.families.using_families.")
    return family.split(model)


def _keep_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    # The train() of every module of a frozen stage (its class is swapped to an EvalMode<Name> subclass, see
    # _eval_mode_class): model.train() reaches it but it stays in eval mode, so BatchNorm uses (and never
    # updates) its running statistics and dropout stays off. Children get ``mode`` and decide for
    # themselves: with train_bn=True a BatchNorm layer keeps its own class and trains.
    self.training = False
    for child in self.children():
        child.train(mode)
    return self


class _EvalMode:
    """Mixin of the EvalMode<Name> classes: eval mode whatever ``train()`` says, visible in ``print(model)``."""

    train = _keep_eval

    def __reduce_ex__(self, protocol):
        # Pickle (torch.save of a whole model, copy.deepcopy) as the original class plus the class swap, so a
        # file never depends on a class created at run time.
        return _new_eval_mode, (type(self).__mro__[2],), self.__getstate__()


class EvalModeBatchNorm2d(_EvalMode, nn.BatchNorm2d):
    """A ``BatchNorm2d`` that stays in eval mode: it normalises with its running (ImageNet) statistics and never
    updates them, whatever ``model.train()`` says. :func:`freeze` makes every ``BatchNorm2d`` of a frozen stage
    one (its scale and shift get ``requires_grad=False`` too), :func:`freeze_bn_stats` every ``BatchNorm2d`` of
    the model (scale and shift still train), :func:`unfreeze` turns it back into a plain ``BatchNorm2d``.

    Unlike ``torchvision.ops.FrozenBatchNorm2d`` (which timm's ``freeze_batch_norm_2d`` uses: four buffers, no
    parameters, not a ``BatchNorm2d``) it is still an ``nn.BatchNorm2d``: ``isinstance`` holds and the
    ``state_dict`` keys are unchanged.

    >>> bn = EvalModeBatchNorm2d(8).train()
    >>> bn.training, isinstance(bn, nn.BatchNorm2d)
    (False, True)
    """


@functools.cache
def _eval_mode_class(cls: type) -> type:
    """``EvalMode<Name>``, a subclass of ``cls`` that stays in eval mode (made once per class)."""
    if issubclass(cls, _EvalMode):
        return cls
    if cls is nn.BatchNorm2d:
        return EvalModeBatchNorm2d
    return type(f"EvalMode{cls.__name__}", (_EvalMode, cls),
                {"__module__": __name__, "__doc__": f"A {cls.__name__} that stays in eval mode."})


def _new_eval_mode(original: type) -> nn.Module:
    # Unpickling: an empty EvalMode<original>; pickle / deepcopy then restore its state with __setstate__.
    cls = _eval_mode_class(original)
    return cls.__new__(cls)


def _thaw(module: nn.Module) -> None:
    if isinstance(module, _EvalMode):
        module.__class__ = type(module).__mro__[2]
    module.__dict__.pop("train", None)  # the per-instance override of tl_course <= 0.1.0


def _set_frozen(stage: nn.Module, frozen: bool, train_bn: bool) -> None:
    for module in stage.modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p in module.parameters(recurse=False):
            p.requires_grad = (not frozen) or (train_bn and is_bn)
        _thaw(module)
        if frozen and not (train_bn and is_bn):
            # A class swap, not an instance attribute: it survives torch.save / deepcopy / state_dict, shows
            # in print(model), and unfreeze() swaps it back.
            module.__class__ = _eval_mode_class(type(module))
            module.training = False


def freeze(model: nn.Module, trainable_stages: int = 1, train_bn: bool = False) -> nn.Module:
    """Freeze every stage except the last ``trainable_stages`` (1 = only the softmax layer trains); the cut
    is then at ``len(stages(model)) - trainable_stages`` (see the module's docstring).

    Frozen parameters get ``requires_grad=False`` and every module of a frozen stage stays in eval
    mode even after ``model.train()``: BatchNorm keeps its ImageNet running statistics and dropout is
    off. This is done by swapping each such module's class for an ``EvalMode<Name>`` subclass (a plain
    ``BatchNorm2d`` becomes :class:`EvalModeBatchNorm2d`) whose ``train()`` keeps it in eval: ``isinstance``
    and ``state_dict`` keys are unchanged, ``print(model)`` shows what is frozen, ``torch.save`` /
    ``torch.load(weights_only=False)`` and ``copy.deepcopy`` keep it, and :func:`unfreeze` swaps it back.
    Setting ``requires_grad = True`` by hand does not undo it (the modules stay in eval): call
    :func:`unfreeze`. ``train_bn=True`` is fastai's alternative: BatchNorm layers in frozen stages keep training.
    ``trainable_stages=0`` freezes everything; ``len(stages(model))`` trains everything. Returns ``model``.

    >>> from tl_course.models import load_pretrained, replace_head
    >>> model = freeze(replace_head(load_pretrained().model, 3), trainable_stages=1)
    >>> count_parameters(model)
    (3843, 3374851)
    >>> type(model.train().bn1).__name__, model.bn1.training, model.classifier.training  # timm's BatchNormAct2d
    ('EvalModeBatchNormAct2d', False, True)
    """
    all_stages = stages(model)
    if not 0 <= trainable_stages <= len(all_stages):
        raise ValueError(f"trainable_stages must be between 0 and {len(all_stages)}, got {trainable_stages}.")
    cut = len(all_stages) - trainable_stages
    for i, stage in enumerate(all_stages):
        _set_frozen(stage, frozen=i < cut, train_bn=train_bn)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze` and :func:`freeze_bn_stats`: every parameter trainable, every module back to its own
    class (no ``EvalMode`` prefix), so every layer follows ``model.train()`` again.

    >>> from tl_course.models import load_random_init
    >>> model = freeze(load_random_init("resnet18").model, trainable_stages=1)
    >>> type(unfreeze(model).bn1).__name__, count_parameters(model)[0] == count_parameters(model)[1]
    ('BatchNorm2d', True)
    """
    try:
        freeze(model, trainable_stages=len(stages(model)))
    except TypeError:  # a model stages() cannot split: thaw it as one piece
        _set_frozen(model, frozen=False, train_bn=False)
    for module in model.modules():  # also modules frozen once and no longer in a stage
        _thaw(module)
    return model


def freeze_bn_stats(model: nn.Module) -> nn.Module:
    """Keep every BatchNorm layer of ``model`` in eval mode, whatever ``model.train()`` says: it normalises
    with its running (ImageNet) statistics and never updates them, while its scale and shift still train.
    The "BatchNorm statistics frozen" policy of fine-tuning (Keras: call the base model with
    ``training=False``). Same class swap as :func:`freeze`, so :func:`unfreeze` undoes it.

    >>> from tl_course.models import load_random_init
    >>> model = freeze_bn_stats(load_random_init("resnet18").model).train()
    >>> model.bn1.training, model.bn1.weight.requires_grad, model.conv1.training
    (False, True, True)
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.__class__ = _eval_mode_class(type(m))
            m.training = False
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` number of parameters.

    >>> count_parameters(torch.nn.Linear(1280, 3))
    (3843, 3843)
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer should see: only those with ``requires_grad``.

    >>> from tl_course.models import load_random_init
    >>> model = freeze(load_random_init("resnet18").model, trainable_stages=1)
    >>> optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
    >>> [tuple(p.shape) for p in trainable_parameters(model)]
    [(1000, 512), (1000,)]
    """
    return [p for p in model.parameters() if p.requires_grad]


def _output_shape(modules: list[nn.Module], image_size: int, device: torch.device) -> torch.Size:
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    # Every module's own flag, restored exactly: a stage wrapper made by stages() is a new nn.Sequential in
    # train mode, and restoring through it would switch an eval-mode model's stem to train mode.
    modes = {m: m.training for stage in modules for m in stage.modules()}
    try:
        with torch.no_grad():
            for m in modules:
                m.eval()
                x = m(x)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return x.shape[1:]


def replace_top_stages(model: nn.Module, n_stages: int, num_classes: int, hidden_units: tuple[int, ...] = (256,),
                       dropout: float = 0.2, image_size: int = 224) -> StagedModel:
    """The lecture's second option for more data: remove the last ``n_stages`` stages (head included) and
    put new hidden layers plus your own softmax on top of what is left.

    The result is a :class:`StagedModel`: the kept pretrained stages, then one new stage holding
    (pooling if the cut leaves a feature map) -> Linear -> ReLU -> Dropout ... -> Linear(num_classes).

    ``n_stages`` counts like ``trainable_stages`` in :func:`freeze`: the last ``n_stages`` stages go.

    >>> from tl_course.models import load_pretrained
    >>> model = replace_top_stages(load_pretrained().model, n_stages=2, num_classes=3, hidden_units=(128,))
    >>> len(stages(model)), stages(model)[-1]
    (9, Sequential(
      (0): AdaptiveAvgPool2d(output_size=1)
      (1): Flatten(start_dim=1, end_dim=-1)
      (2): Linear(in_features=320, out_features=128, bias=True)
      (3): ReLU(inplace=True)
      (4): Dropout(p=0.2, inplace=False)
      (5): Linear(in_features=128, out_features=3, bias=True)
    ))
    """
    all_stages = stages(model)
    if not 1 <= n_stages < len(all_stages):
        raise ValueError(f"n_stages must be between 1 and {len(all_stages) - 1}, got {n_stages}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a whole number >= 1, got {num_classes!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a whole number of pixels >= 1, got {image_size!r}.")
    kept = all_stages[: len(all_stages) - n_stages]
    device = next(model.parameters()).device
    shape = _output_shape(kept, image_size, device)
    layers: list[nn.Module] = []
    if len(shape) == 3:  # a feature map: pool it to a vector first
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    width = shape[0]
    for units in hidden_units:
        layers += [nn.Linear(width, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = units
    layers.append(nn.Linear(width, num_classes))
    result = StagedModel(*kept, nn.Sequential(*layers).to(device))
    # The new parts (stage wrappers, the new top, the StagedModel itself) take the mode of the model they come
    # from; the model's own modules keep theirs exactly.
    own = set(model.modules())
    for m in result.modules():
        if m not in own:
            m.training = model.training
    return result


def param_groups(model: nn.Module, lr: float, pretrained_lr_factor: float = 0.1,
                 decay: float = 1.0) -> list[dict]:
    """Discriminative learning rates: one optimizer parameter group per trainable stage.

    The last stage (the new head) gets ``lr``; pretrained stages get ``lr * pretrained_lr_factor``, and
    each stage further down a further factor ``decay`` (fastai's ``slice(lo, hi)`` / timm's layer decay).
    Frozen parameters are left out; each group's ``stage`` is the 0-based index into ``stages(model)``.

    >>> from tl_course.models import load_random_init
    >>> model = freeze(load_random_init("resnet18").model, trainable_stages=3)
    >>> optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3))
    >>> [(g["stage"], g["lr"]) for g in optimizer.param_groups]
    [(3, 0.0001), (4, 0.0001), (5, 0.001)]
    """
    try:
        all_stages = stages(model)
    except TypeError:  # a plain module (say, a student's nn.Linear head): one stage, the new layer
        all_stages = [model]
    groups = []
    seen: set[int] = set()
    for distance, stage in enumerate(reversed(all_stages)):
        params = [p for p in stage.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if not params:
            continue
        stage_lr = lr if distance == 0 else lr * pretrained_lr_factor * decay ** (distance - 1)
        groups.append({"params": params, "lr": stage_lr, "stage": len(all_stages) - 1 - distance})
    return groups[::-1]


def build_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4,
                    pretrained_lr_factor: float = 0.1, decay: float = 1.0) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only, with discriminative learning rates per stage.

    Like timm and fastai, weight decay applies to weight matrices and convolution kernels only: each
    stage's 1-D parameters (biases, BatchNorm / LayerNorm weights) go in a second group of that stage
    with ``weight_decay=0``, because decaying a norm's scale or a bias towards zero only harms.
    Every group carries its ``stage`` and ``lr``.

    >>> from tl_course.models import load_random_init
    >>> optimizer = build_optimizer(freeze(load_random_init().model, trainable_stages=1), lr=1e-3)
    >>> [(g["stage"], g["weight_decay"]) for g in optimizer.param_groups]
    [(9, 0.0001), (9, 0.0)]
    """
    groups = []
    for group in param_groups(model, lr, pretrained_lr_factor, decay):
        matrices = [p for p in group["params"] if p.ndim > 1]
        vectors = [p for p in group["params"] if p.ndim <= 1]
        if matrices:
            groups.append({**group, "params": matrices, "weight_decay": weight_decay})
        if vectors:
            groups.append({**group, "params": vectors, "weight_decay": 0.0})
    if not groups:
        raise ValueError("The model has no trainable parameters: did you freeze the new head too?")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
