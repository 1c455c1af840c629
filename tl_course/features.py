"""The lecture's speed trick, part 1: the frozen part of the network is a fixed function of the image.

Generalised to any stage boundary (the *cut*): ``stages(model)[:cut]`` is the frozen bottom
(:func:`bottom_stages`) whose activations :func:`extract_features` computes, ``stages(model)[cut:]`` is the
top (:func:`top_stages`) that trains on them. ``cut = len(stages) - 1`` (the default) gives the pooled
features just before the softmax.

:func:`features_fingerprint` is the identity of a set of activations: it covers everything they depend on,
the *architecture* of the frozen bottom (every module's type and configuration, e.g. the pooling type, and
its forward hooks), its weights and buffers (BatchNorm statistics included), the cut, the stored dtype
(``fp16``) and the arithmetic (fp16 autocast on CUDA, fp32 elsewhere), a *declared* identity of the
preprocessing (:func:`preprocess_identity`), the exact file list with each file's size and modification
time (what ``make`` and ``rsync`` trust), and the labels and class names. Change any of them and the
fingerprint changes.

Part 2, the on-disk cache of these activations (:func:`~tl_course.cache.cached_features`), is
:mod:`tl_course.cache`.

>>> import torch
>>> from torch import nn
>>> from tl_course.freezing import StagedModel
>>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 2))
>>> data = torch.utils.data.TensorDataset(torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 0, 1, 1]))
>>> x, y = extract_features(model, data, device="cpu")
>>> x.shape, y.tolist()
(torch.Size([5, 4]), [0, 1, 0, 1, 1])
>>> torch.allclose(top_stages(model)(x), model.eval()(data.tensors[0]), atol=1e-6)
True
"""
from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .freezing import StagedModel, _EvalMode, stages
from .profiles import autocast, get_device

__all__ = [
    "FeatureSet",
    "bottom_stages",
    "top_stages",
    "extract_features",
    "features_fingerprint",
    "preprocess_identity",
]

#: the version of the fingerprint and of the cache files (:mod:`tl_course.cache`): bump it when either
#: changes, and old files are never hit
FORMAT = "tl_course.features/3"


@dataclass
class FeatureSet:
    """Cached activations at a cut: ``features[i]`` belongs to ``files[i]`` with class ``labels[i]``
    (lengths that do not pair up are a ``ValueError``; ``files`` may be empty when unknown).

    >>> import torch
    >>> len(FeatureSet(torch.zeros(2, 4), torch.tensor([0, 1]), ["a.jpg", "b.jpg"], cut=9, fingerprint=""))
    2
    """

    features: torch.Tensor  #: (N, ...) on the CPU
    labels: torch.Tensor  #: (N,) int64
    files: list[str]
    cut: int
    fingerprint: str
    classes: tuple[str, ...] = ()  #: class names, ``classes[labels[i]]`` (empty when unknown)

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels) or (self.files and len(self.files) != len(self.labels)):
            raise ValueError(f"FeatureSet has {len(self.features)} feature rows, {len(self.labels)} labels and "
                             f"{len(self.files)} files: they must pair up one to one (files may be left empty).")

    def __len__(self) -> int:
        return len(self.labels)


def _resolve_cut(model: nn.Module, cut: int | None) -> tuple[list[nn.Module], int]:
    all_stages = stages(model)
    cut = len(all_stages) - 1 if cut is None else cut
    if not 1 <= cut < len(all_stages):
        raise ValueError(f"cut must be between 1 and {len(all_stages) - 1} for this model, got {cut}.")
    return all_stages, cut


def bottom_stages(model: nn.Module, cut: int | None = None) -> StagedModel:
    """The frozen bottom ``stages(model)[:cut]`` as one module (shares the model's parameters).

    >>> from torch import nn
    >>> from tl_course.freezing import StagedModel
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    >>> bottom_stages(model)                   # everything but the softmax layer
    StagedModel(
      (0): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))
      (1): Flatten(start_dim=1, end_dim=-1)
    )
    >>> len(bottom_stages(model, cut=1))
    1
    """
    all_stages, cut = _resolve_cut(model, cut)
    return StagedModel(*all_stages[:cut])


def top_stages(model: nn.Module, cut: int | None = None) -> StagedModel:
    """The trainable top ``stages(model)[cut:]``: it maps cached activations at ``cut`` to logits
    (``top_stages(model, cut)(bottom_stages(model, cut)(x)) == model(x)``).

    >>> import torch
    >>> from torch import nn
    >>> from tl_course.freezing import StagedModel
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    >>> x = torch.randn(1, 3, 8, 8)
    >>> torch.equal(top_stages(model, 1)(bottom_stages(model, 1)(x)), model(x))
    True
    """
    all_stages, cut = _resolve_cut(model, cut)
    return StagedModel(*all_stages[cut:])


def _tensor_digest(h: "hashlib._Hash", tensor: torch.Tensor) -> None:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    h.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
    h.update(t.view(torch.uint8).numpy().tobytes())


# Transforms whose output is random: a cache of them would freeze one random draw forever.
_RANDOM_NAMES = {"ColorJitter", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix", "ElasticTransform",
                 "GaussianNoise", "ScaleJitter", "MixUp", "CutMix"}


def _is_random(obj) -> bool:
    name = type(obj).__name__
    if name.startswith("Random") or "Random" in name or name in _RANDOM_NAMES or "Augment" in name:
        return True
    if name == "GaussianBlur":  # sigma drawn from [min, max] for every image unless min == max
        sigma = getattr(obj, "sigma", (0.0, 0.0))
        return isinstance(sigma, (list, tuple)) and len(sigma) == 2 and sigma[0] != sigma[1]
    if name == "JPEG":  # v2.JPEG: quality drawn from a range
        quality = getattr(obj, "quality", (0, 0))
        return isinstance(quality, (list, tuple)) and quality[0] != quality[1]
    return False


class _Opaque(ValueError):
    pass


def _describe(obj, opaque_ok: bool) -> str:
    """A stable text of what a transform computes: its class and its parameters, recursively."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return repr(obj)
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__qualname__}.{obj.name}"
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_describe(o, opaque_ok) for o in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_describe(k, opaque_ok)}:{_describe(v, opaque_ok)}"
                              for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(obj, torch.Tensor):
        h = hashlib.sha256()
        _tensor_digest(h, obj)
        return f"tensor:{h.hexdigest()[:16]}"
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if _is_random(obj):
        raise ValueError(
            f"preprocess contains {cls.__name__}, a random transform: cached features must be a fixed function of "
            "each image, so cache with the deterministic eval transform (load_pretrained(...).preprocess) and "
            "augment only when training through the network.")
    known = cls.__module__.startswith(("torchvision.transforms", "timm.data")) and cls.__name__ != "Lambda"
    if not known:
        if opaque_ok:
            return f"opaque:{name}"
        raise _Opaque(name)
    params = {k: v for k, v in vars(obj).items() if not k.startswith("_") and k != "training"}
    if isinstance(obj, nn.Module):
        params.update({f"module.{k}": v for k, v in obj._modules.items()})
    return name + "(" + ",".join(f"{k}={_describe(v, opaque_ok)}" for k, v in sorted(params.items())) + ")"


def preprocess_identity(preprocess: Callable, preprocess_id: str | None = None) -> str:
    """What the cache key records about the preprocessing: a *declared* identity.

    torchvision transforms (the ``ImageClassification`` preset that :func:`~tl_course.models.load_pretrained`
    returns, deterministic ``transforms.v2`` pipelines) and timm's get one automatically: their classes and
    parameters (sizes, interpolation, mean, std, ...). A plain function or ``v2.Lambda`` cannot be looked
    into: give it a name with ``preprocess_id`` that you change whenever the function changes. A random
    (augmenting) transform is refused with a ``ValueError``, with or without a name.

    >>> from torchvision.transforms import v2
    >>> preprocess_identity(v2.Resize(64)).split("(")[0]
    'torchvision.transforms.v2._geometry.Resize'
    >>> preprocess_identity(v2.Resize(64)) == preprocess_identity(v2.Resize(72))
    False
    >>> def my_resize(img):
    ...     return img
    >>> preprocess_identity(my_resize, preprocess_id="my_resize v1")
    'id:my_resize v1|opaque:builtins.function'
    >>> preprocess_identity(v2.RandomHorizontalFlip())
    Traceback (most recent call last):
    ...
    ValueError: preprocess contains RandomHorizontalFlip, a random transform: cached features must be a fixed function of each image, so cache with the deterministic eval transform (load_pretrained(...).preprocess) and augment only when training through the network.
    """
    if preprocess_id is not None:
        return f"id:{preprocess_id}|{_describe(preprocess, opaque_ok=True)}"
    try:
        return _describe(preprocess, opaque_ok=False)
    except _Opaque as err:
        short = str(err).rsplit(".", 1)[-1]
        what = "a plain function" if short in ("function", "partial", "method") else f"a {short}"
        raise ValueError(
            f"cached_features cannot look inside preprocess ({what}), so it could not tell when the cache goes "
            "stale: pass preprocess_id='a name you change whenever that code changes', or use a torchvision "
            "transform such as load_pretrained(...).preprocess.") from None


def _compute_identity(device: torch.device) -> str:
    # The arithmetic the activations come from: fp16 autocast on CUDA (see profiles.autocast), fp32 elsewhere.
    return "cuda-fp16-autocast" if device.type == "cuda" else "fp32"


def _value_text(value) -> str:
    """A stable text of a module attribute (a number, a name, a layer class, a function...)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(map(_value_text, value)) if isinstance(value, (set, frozenset)) else map(_value_text, value)
        return "[" + ",".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_value_text(k)}:{_value_text(v)}"
                              for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, torch.Tensor):
        h = hashlib.sha256()
        _tensor_digest(h, value)
        return f"tensor:{h.hexdigest()[:16]}"
    if callable(value) and hasattr(value, "__qualname__"):  # a class, a function, a bound method
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    cls = type(value)
    return f"<{cls.__module__}.{cls.__qualname__}>"


def _module_identity(module: nn.Module) -> str:
    """What a module computes besides its tensors: its class, its configuration (every public attribute:
    kernel sizes, strides, ``pool_type``, ``eps``...) and its forward hooks. A class that
    :func:`~tl_course.freezing.freeze` swapped in (``EvalMode<Name>``) counts as the class it replaced: in
    eval mode, where activations are computed, the two are the same function."""
    cls = type(module)
    if issubclass(cls, _EvalMode):
        cls = cls.__mro__[2]  # EvalMode<Name> -> (_EvalMode, <Name>): the original class
    config = {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"}
    hooks = [*module._forward_pre_hooks.values(), *module._forward_hooks.values()]
    return f"{cls.__module__}.{cls.__qualname__}{_value_text(config)}hooks={_value_text(hooks)}"


def _architecture_digest(h: "hashlib._Hash", stage_list: Iterable[nn.Module]) -> None:
    """Feed ``h`` with everything the stages compute: each module's identity (:func:`_module_identity`),
    then every parameter and buffer (persistent or not) by name."""
    for i, stage in enumerate(stage_list):
        for name, module in stage.named_modules():
            h.update(f"{i}:{name}={_module_identity(module)}\n".encode("utf-8", "surrogatepass"))
        for name, tensor in (*stage.named_parameters(), *stage.named_buffers()):
            h.update(f"{i}:{name}".encode())
            _tensor_digest(h, tensor)


def _activations_key(model: nn.Module, files: Iterable[str | Path], preprocess: Callable, cut: int | None,
                     fp16: bool, preprocess_id: str | None, device) -> str:
    """A digest of what the activations depend on (not the labels)."""
    all_stages, cut = _resolve_cut(model, cut)
    h = hashlib.sha256()
    h.update(f"{FORMAT}|{type(model).__module__}.{type(model).__name__}|cut={cut}|fp16={fp16}|"
             f"{_compute_identity(get_device(device))}|".encode())
    _architecture_digest(h, all_stages[:cut])
    h.update(preprocess_identity(preprocess, preprocess_id).encode("utf-8", "surrogatepass"))
    for f in files:
        st = os.stat(f)
        # fsencode: a name that is not valid UTF-8 (a zip from another OS) is hashed as the bytes it is.
        h.update(os.fsencode(os.path.abspath(f)) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _with_labels(activations: str, labels, classes) -> str:
    h = hashlib.sha256(activations.encode())
    h.update(f"|labels={[int(y) for y in labels] if labels is not None else None}".encode())
    h.update(f"|classes={list(classes) if classes is not None else None}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def features_fingerprint(model: nn.Module, files: Iterable[str | Path], preprocess: Callable,
                         cut: int | None = None, fp16: bool = False, *, labels=None, classes=None,
                         preprocess_id: str | None = None, device: str | torch.device | None = None) -> str:
    """A hex digest that changes whenever the cached FeatureSet would: the model class, the bottom's
    architecture (each module's type and configuration, e.g. a global pool changed from average to max by
    ``reset_classifier(..., global_pool="max")``, and its forward hooks), its weights and buffers (BatchNorm
    statistics), the cut, fp16 storage and the arithmetic of ``device``, the declared preprocessing identity
    (:func:`preprocess_identity`), the exact file list (path, size, modification time), and the labels and
    class names.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from torch import nn
    >>> from torchvision.transforms import v2
    >>> from tl_course.freezing import StagedModel
    >>> photo = Path(tempfile.mkdtemp()) / "a.png"
    >>> _ = photo.write_bytes(b"not read, only stat()ed")
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> before = features_fingerprint(model, [photo], v2.Resize(8), labels=[0])
    >>> model[1] = nn.AdaptiveMaxPool2d(1)                 # no weights changed, the function did
    >>> features_fingerprint(model, [photo], v2.Resize(8), labels=[0]) != before
    True
    """
    files = list(files)
    return _with_labels(_activations_key(model, files, preprocess, cut, fp16, preprocess_id, device), labels,
                        classes)


def _as_loader(data, batch_size: int, device: torch.device, num_workers: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def extract_features(model: nn.Module, data: Dataset | DataLoader, cut: int | None = None,
                     device: str | torch.device | None = None, batch_size: int = 32, num_workers: int = 0,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of ``stages(model)[:cut]`` for every image of ``data`` (a dataset of
    ``(image, label)`` or a DataLoader), in eval mode under ``torch.inference_mode()``, batch by batch on
    ``device`` (autocast on CUDA). Returns ``(features, labels)`` as float32 CPU tensors / int64.

    The model's train/eval flags are restored afterwards; the *whole* model moves to ``device`` and stays
    there (never split across devices). A DataLoader that yields no batch is a ``ValueError``.

    >>> import torch
    >>> from torch import nn
    >>> from tl_course.freezing import StagedModel
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    >>> data = torch.utils.data.TensorDataset(torch.randn(3, 3, 8, 8), torch.tensor([1, 0, 1]))
    >>> features, labels = extract_features(model, data, device="cpu")
    >>> features.shape, labels.tolist()
    (torch.Size([3, 144]), [1, 0, 1])
    """
    device = get_device(device)
    bottom = bottom_stages(model, cut)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    modes = {m: m.training for m in model.modules()}
    model.to(device)  # all of it: moving only the bottom would leave the head on another device
    bottom.eval()  # eval: BatchNorm uses its running statistics, dropout is off
    chunks, labels = [], []
    try:
        with torch.inference_mode(), autocast(device):
            for images, targets in tqdm(_as_loader(data, batch_size, device, num_workers), disable=not progress,
                                        desc="features", unit="batch"):
                out = bottom(images.to(device, non_blocking=True))
                chunks.append(out.float().cpu())
                labels.append(torch.as_tensor(targets).cpu())
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not chunks:
        raise ValueError("extract_features got no images.")
    return torch.cat(chunks), torch.cat(labels).long()


