"""Freeze by stage: the network as an ordered list of blocks, the early ones fixed, the last ``k`` trained.

A *stage* is a block of the network between two natural boundaries (the stem, a group of blocks, the
head). Stages are built on demand as views that share the model's own parameters, so freezing a stage
freezes the model and running the stages one after another computes exactly ``model(x)``.

Per family (``len(stages(model))``):

- EfficientNet-Lite0 (timm): stem, the 7 block groups, conv head + pooling, classifier -> 10 stages.
- ResNet (torchvision): stem, layer1, layer2, layer3, layer4 + pooling, fc -> 6 stages.
- EfficientNet-B0 (torchvision): ``features[0]`` (stem), the 7 block groups, last conv + pooling,
  classifier -> 10 stages.
- MobileNetV3-Large (torchvision): ``features[0]`` (stem), each of the 15 inverted-residual blocks
  (torchvision does not group them), last conv + pooling, classifier -> 18 stages.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "StagedModel",
    "FrozenBatchNorm2d",
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
    """The network as an ordered list of stages from input to output, the classifier last.

    >>> from tl_course import load_pretrained
    >>> len(stages(load_pretrained().model))
    10
    """
    if isinstance(model, StagedModel):
        return list(model)
    if hasattr(model, "conv_stem") and hasattr(model, "blocks"):  # timm EfficientNet family
        pool = nn.Sequential(model.conv_head, model.bn2, model.global_pool)
        head = nn.Sequential(nn.Dropout(getattr(model, "drop_rate", 0.0)), model.classifier)
        return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks, pool, head]
    if isinstance(model, torchvision_resnet()):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        top = nn.Sequential(model.layer4, model.avgpool, nn.Flatten(1))
        return [stem, model.layer1, model.layer2, model.layer3, top, model.fc]
    if hasattr(model, "features") and hasattr(model, "avgpool") and hasattr(model, "classifier"):
        # torchvision MobileNetV2/V3, EfficientNet: features[0] is the stem, features[-1] the last 1x1 conv
        feats = list(model.features)
        top = nn.Sequential(feats[-1], model.avgpool, nn.Flatten(1))
        return [*feats[:-1], top, model.classifier]
    raise TypeError(f"stages() does not know how to split a {type(model).__name__} into stages.")


def torchvision_resnet():
    from torchvision.models import ResNet

    return ResNet


def _keep_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    # The train() of every module of a frozen stage (its class is swapped to a Frozen<Name> subclass, see
    # _frozen_class): model.train() reaches it but it stays in eval mode, so BatchNorm uses (and never
    # updates) its running statistics and dropout stays off. Children get ``mode`` and decide for
    # themselves: with train_bn=True a BatchNorm layer keeps its own class and trains.
    self.training = False
    for child in self.children():
        child.train(mode)
    return self


class _Frozen:
    """Mixin of the Frozen<Name> classes: eval mode whatever ``train()`` says, visible in ``print(model)``."""

    _tl_frozen = True
    train = _keep_eval

    def extra_repr(self) -> str:
        own = super().extra_repr()
        return f"{own}, frozen" if own else "frozen"

    def __reduce_ex__(self, protocol):
        # Pickle (torch.save of a whole model, copy.deepcopy) as the original class plus a re-freeze, so a
        # file never depends on a class created at run time.
        return _new_frozen, (type(self).__mro__[2],), self.__getstate__()


class FrozenBatchNorm2d(_Frozen, nn.BatchNorm2d):
    """A ``BatchNorm2d`` of a frozen stage: always in eval mode, so it normalises with its ImageNet running
    statistics and never updates them. Still an ``nn.BatchNorm2d`` (``isinstance`` holds, ``state_dict``
    keys are unchanged); :func:`unfreeze` turns it back into a plain ``BatchNorm2d``.

    >>> freeze(model, 1).bn1
    FrozenBatchNorm2d(32, eps=0.001, momentum=0.1, affine=True, track_running_stats=True, frozen)
    """


_FROZEN_CLASSES: dict[type, type] = {nn.BatchNorm2d: FrozenBatchNorm2d}


def _frozen_class(cls: type) -> type:
    """``Frozen<Name>``, a subclass of ``cls`` that stays in eval mode (made once per class)."""
    if issubclass(cls, _Frozen):
        return cls
    if cls not in _FROZEN_CLASSES:
        _FROZEN_CLASSES[cls] = type(f"Frozen{cls.__name__}", (_Frozen, cls),
                                    {"__module__": __name__, "__doc__": f"A frozen {cls.__name__} (eval mode)."})
    return _FROZEN_CLASSES[cls]


def _new_frozen(original: type) -> nn.Module:
    # Unpickling: an empty Frozen<original>; pickle / deepcopy then restore its state with __setstate__.
    cls = _frozen_class(original)
    return cls.__new__(cls)


def _thaw(module: nn.Module) -> None:
    if isinstance(module, _Frozen):
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
            module.__class__ = _frozen_class(type(module))
            module.training = False


def freeze(model: nn.Module, trainable_stages: int = 1, train_bn: bool = False) -> nn.Module:
    """Freeze every stage except the last ``trainable_stages`` (1 = only the softmax layer trains).

    Frozen parameters get ``requires_grad=False`` and every module of a frozen stage stays in eval
    mode even after ``model.train()``: BatchNorm keeps its ImageNet running statistics and dropout is
    off. This is done by swapping each such module's class for a ``Frozen<Name>`` subclass (a plain
    ``BatchNorm2d`` becomes :class:`FrozenBatchNorm2d`) whose ``train()`` keeps it in eval: ``isinstance``
    and ``state_dict`` keys are unchanged, ``print(model)`` shows what is frozen, ``torch.save`` /
    ``torch.load(weights_only=False)`` and ``copy.deepcopy`` keep it, and :func:`unfreeze` swaps it back.
    Setting ``requires_grad = True`` by hand does not undo it (the modules stay in eval): call
    :func:`unfreeze`. ``train_bn=True`` is fastai's alternative: BatchNorm layers in frozen stages keep training.
    ``trainable_stages=0`` freezes everything; ``len(stages(model))`` trains everything. Returns ``model``.

    >>> model = freeze(replace_head(load_pretrained().model, 3), trainable_stages=1)
    >>> count_parameters(model)
    (3843, 3374851)
    """
    all_stages = stages(model)
    if not 0 <= trainable_stages <= len(all_stages):
        raise ValueError(f"trainable_stages must be between 0 and {len(all_stages)}, got {trainable_stages}.")
    cut = len(all_stages) - trainable_stages
    for i, stage in enumerate(all_stages):
        _set_frozen(stage, frozen=i < cut, train_bn=train_bn)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze`: every parameter trainable, every module back to its own class (no ``Frozen``
    prefix), so every layer follows ``model.train()`` again.

    >>> model = unfreeze(model)
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

    >>> freeze_bn_stats(model).train().bn1.training
    False
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.__class__ = _frozen_class(type(m))
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

    >>> optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-3)
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

    >>> model = replace_top_stages(load_pretrained().model, n_stages=2, num_classes=3, hidden_units=(128,))
    >>> len(stages(model))
    9
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
    Frozen parameters are left out.

    >>> optimizer = torch.optim.AdamW(param_groups(freeze(model, 3), lr=1e-3))
    >>> [g["lr"] for g in optimizer.param_groups]
    [0.0001, 0.0001, 0.001]
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

    >>> optimizer = build_optimizer(freeze(model, trainable_stages=1), lr=1e-3)
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
