"""Helpers for the hidden test cells of the graded notebooks: grade on data the notebook never sees,
check *how* a result was obtained, and say in one sentence what went wrong.

A hidden test cell imports what it needs *inside the cell* (``from tl_course import grading``) and builds
its own inputs, bars and references there, so no notebook global that a student cell can rebind is
trusted. The pieces:

- :func:`held_out_samples`: pet photos that no split the notebook can build at the active profile's sizes
  contains (the *end* of each class's seeded pool; :func:`tl_course.data.cat_detector_splits` takes
  test, val, train from the *start*);
- :class:`trace` / :func:`traced`: which functions (code objects: ``tl_course.freeze``, timm's
  ``reset_classifier``, ``tl_course.fit``, ...) ran while a student function ran, with the arguments
  each call received, and which image files were decoded (:meth:`Trace.files_read`);
- :func:`bn_modes`, :func:`bn_in_train_mode`, :func:`snapshot`, :func:`changed`, :func:`moved`: BatchNorm
  modes and weights unchanged / moved;
- :func:`fail`: raise the one-sentence ``AssertionError`` the feedback shows.

Everything here is independent of the library functions a student is asked to write, so a test never
uses the function under test as its own oracle.

>>> from tl_course import grading
>>> photos = grading.held_out_samples(per_class=5)           # 15 photos the notebook never sees
>>> with grading.trace(forbidden=grading.FORBIDDEN_HEAD) as t:
...     replace_head(model, 3)                                # the student's function
>>> t.forbidden_called()                                       # [] when written by hand
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .checks import snapshot  # grading.snapshot: hidden test cells import it from here

__all__ = ["held_out_samples", "held_out_dataset", "split_sizes", "reachable_per_class", "Trace", "trace",
           "traced", "code_of", "FORBIDDEN_HEAD", "FORBIDDEN_FREEZE", "bn_modes", "bn_in_train_mode",
           "snapshot", "changed", "moved", "fail", "check", "SpyDataset"]


# ---------------------------------------------------------------------------------------------
# Held-out photos
# ---------------------------------------------------------------------------------------------
def split_sizes(profile=None) -> int:
    """Photos per class the largest split set the notebook can build at ``profile`` takes from each pool:
    test + val + train.

    >>> split_sizes(get_profile("ci"))
    60
    """
    from .profiles import get_profile

    p = profile or get_profile()
    return p.test_per_class + p.val_per_class + p.train_per_class


def reachable_per_class(profile=None) -> int:
    """Alias of :func:`split_sizes` named for what it means: the first photos of each pool a notebook reaches."""
    return split_sizes(profile)


def held_out_samples(per_class: int = 10, seed: int = 0, profile=None, root: Path | None = None):
    """``per_class`` photos of each class (Tigger, Misty, neither) that no ``cat_detector_splits(seed=seed)``
    at ``profile``'s sizes contains: the last photos of each class's seeded pool.

    Raises ``ValueError`` (one sentence) when the profile's splits leave fewer than ``per_class`` photos of a
    class (the ``gpu`` profile uses all 200 Bengal photos): grade with the ``ci`` or ``cpu`` profile.

    >>> held = held_out_samples(per_class=5)
    >>> held.counts()
    {'Tigger': 5, 'Misty': 5, 'neither': 5}
    """
    from .data import CLASSES, Samples, _cat_detector_pools, check_images, find_pet_images
    from .profiles import get_profile

    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a whole number >= 1, got {per_class!r}.")
    profile = profile or get_profile()
    reached = split_sizes(profile)
    pools = _cat_detector_pools(find_pet_images(root), seed)
    files, labels = [], []
    for label, pool in enumerate(pools):
        spare = len(pool) - reached
        if spare < per_class:
            raise ValueError(f"The {profile.name} profile's splits use {reached} of the {len(pool)} {CLASSES[label]} "
                             f"photos, leaving {max(spare, 0)} < {per_class} held out: grade with the ci or cpu profile.")
        chosen = pool[len(pool) - per_class:]
        files += chosen
        labels += [label] * len(chosen)
    return check_images(Samples(files, labels, CLASSES))


def held_out_dataset(preprocess: Callable, per_class: int = 10, seed: int = 0, profile=None):
    """:func:`held_out_samples` as an :class:`tl_course.data.ImageDataset` with the eval ``preprocess``.

    >>> test = held_out_dataset(preprocess, per_class=10)
    """
    from .data import ImageDataset

    return ImageDataset(held_out_samples(per_class, seed, profile), preprocess)


# ---------------------------------------------------------------------------------------------
# Which functions ran
# ---------------------------------------------------------------------------------------------
def code_of(fn: Any):
    """The code object behind a function, bound or unbound method, ``functools.wraps`` wrapper or callable.

    >>> code_of(tl_course.freeze) is tl_course.freezing.freeze.__code__
    True
    """
    seen = 0
    while seen < 10:
        seen += 1
        if hasattr(fn, "__code__"):
            return fn.__code__
        if hasattr(fn, "__func__"):
            fn = fn.__func__
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        elif callable(fn) and hasattr(type(fn), "__call__") and hasattr(type(fn).__call__, "__code__"):
            fn = type(fn).__call__
        else:
            break
    raise TypeError(f"{fn!r} has no Python code to watch.")


def _forbidden_head() -> dict[str, Any]:
    from . import models

    found = {"tl_course.replace_head": models.replace_head}
    try:
        import timm.models

        for cls_name in ("EfficientNet", "ResNet", "MobileNetV3"):
            cls = getattr(timm.models, cls_name, None)
            if cls is not None and hasattr(cls, "reset_classifier"):
                found[f"timm {cls_name}.reset_classifier"] = cls.reset_classifier
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return found


def _forbidden_freeze() -> dict[str, Any]:
    from . import freezing

    found = {"tl_course.freeze": freezing.freeze}
    try:
        import timm.utils.model as timm_model

        for name in ("freeze", "unfreeze", "freeze_batch_norm_2d"):
            if hasattr(timm_model, name):
                found[f"timm.utils.{name}"] = getattr(timm_model, name)
    except ImportError:  # pragma: no cover
        pass
    return found


class _Lazy(dict):
    """A dict filled on first use (so importing grading imports no timm)."""

    def __init__(self, make: Callable[[], dict]):
        super().__init__()
        self._make = make

    def _fill(self):
        if not super().__len__():
            self.update(self._make())

    def items(self):
        self._fill()
        return super().items()

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self):
        self._fill()
        return super().__len__()


#: Library shortcuts that "write replace_head yourself" forbids: name -> function.
FORBIDDEN_HEAD: dict[str, Any] = _Lazy(_forbidden_head)
#: Library shortcuts that "write the freeze yourself" forbids: name -> function.
FORBIDDEN_FREEZE: dict[str, Any] = _Lazy(_forbidden_freeze)


@dataclass
class Trace:
    """What ran inside a :class:`trace` block.

    ``calls[name]`` is the list of calls of the watched function ``name``, each a dict of its arguments as
    received (a shallow copy of the callee's locals at entry); ``files`` the image paths decoded through
    ``tl_course.data`` (``load_rgb`` / ``ImageDataset``), in order.
    """

    calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    forbidden: tuple[str, ...] = ()

    def called(self, name: str) -> bool:
        return bool(self.calls.get(name))

    def forbidden_called(self) -> list[str]:
        """Names of the forbidden functions that ran, in watch order."""
        return [n for n in self.forbidden if self.calls.get(n)]

    def files_read(self) -> set[Path]:
        return {Path(f) for f in self.files}


class trace:
    """Context manager: record calls of ``watch`` and ``forbidden`` functions and the image files decoded.

    Uses ``sys.setprofile`` (and ``threading.setprofile`` for new threads), restored in ``finally``; the
    profile function only compares code objects, so a training run costs a few per cent more.

    >>> with trace(watch={"fit": tl_course.fit}, forbidden=FORBIDDEN_FREEZE) as t:
    ...     history = train_head(model, train_data, val_data)
    >>> t.calls["fit"][0]["val"] is val_data, t.forbidden_called()
    """

    def __init__(self, watch: dict[str, Any] | None = None, forbidden: dict[str, Any] | None = None,
                 files: bool = True):
        from . import data

        self._names: dict[Any, str] = {}
        forbidden = dict(forbidden.items()) if forbidden else {}
        for name, fn in list((watch or {}).items()) + list(forbidden.items()):
            self._names[code_of(fn)] = name
        self._read_code = code_of(data._read) if files else None
        self.result = Trace(forbidden=tuple(forbidden))

    def _profile(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if code is self._read_code:
            self.result.files.append(Path(frame.f_locals.get("path")))
            return
        name = self._names.get(code)
        if name is not None:
            self.result.calls.setdefault(name, []).append(dict(frame.f_locals))

    def __enter__(self) -> Trace:
        self._saved = sys.getprofile()
        self._saved_thread = threading.getprofile() if hasattr(threading, "getprofile") else None
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        return self.result

    def __exit__(self, *exc) -> bool:
        sys.setprofile(self._saved)
        threading.setprofile(self._saved_thread)
        return False


def traced(fn: Callable, *args, watch: dict[str, Any] | None = None, forbidden: dict[str, Any] | None = None,
           **kwargs) -> tuple[Any, Trace]:
    """``(fn(*args, **kwargs), Trace)``: call a student function under :class:`trace`.

    >>> model, t = traced(replace_head, net, 3, forbidden=FORBIDDEN_HEAD)
    """
    with trace(watch=watch, forbidden=forbidden) as t:
        result = fn(*args, **kwargs)
    return result, t


class SpyDataset(torch.utils.data.Dataset):
    """A dataset that records every item read and whether ``model`` was in train mode at that moment.

    Hand the spies to the student's training function instead of the plain datasets: validation photos
    read while the model is in ``train()`` mode were trained on (``ConcatDataset([train, val])``), training
    photos never read in train mode were never trained on. Works with ``fit`` and hand-written loops alike
    (``num_workers=0``; the mode is read in the same process).

    >>> train, val = SpyDataset(train_data, model), SpyDataset(val_data, model)
    >>> history = train_head(model, train, val, device)
    >>> val.reads(training=True)        # [] unless validation photos were trained on
    """

    def __init__(self, dataset, model: nn.Module):
        self.dataset = dataset
        self.model = model
        self.log: list[tuple[int, bool]] = []
        for name in ("samples", "classes", "transform"):  # what ImageDataset users may read
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        self.log.append((int(index), bool(self.model.training)))
        return self.dataset[index]

    def reads(self, training: bool | None = None) -> list[int]:
        """Indices read (in train mode only, in eval mode only, or all)."""
        return [i for i, t in self.log if training is None or t == training]


# ---------------------------------------------------------------------------------------------
# BatchNorm modes and weights
# ---------------------------------------------------------------------------------------------
def bn_modes(model: nn.Module) -> dict[str, bool]:
    """``{module name: training flag}`` of every BatchNorm layer.

    >>> bn_modes(model)["bn1"]
    False
    """
    return {name: m.training for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def bn_in_train_mode(model: nn.Module, skip: Iterable[nn.Module] = ()) -> list[str]:
    """Names of the BatchNorm layers in train mode (outside the modules in ``skip``, e.g. a trainable head)."""
    skipped = {id(m) for s in skip for m in s.modules()}
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and id(m) not in skipped]


def changed(before: dict[str, torch.Tensor], model: nn.Module, ignore: Iterable[str] = ("num_batches_tracked",)
            ) -> list[str]:
    """Names of the tensors of ``model`` no longer bit-identical to ``before`` (suffixes in ``ignore`` skipped)."""
    now = model.state_dict()
    ignore = tuple(ignore)
    return [k for k, v in before.items()
            if k in now and not k.endswith(ignore) and not torch.equal(v, now[k].detach().to("cpu"))]


def moved(before: dict[str, torch.Tensor], model: nn.Module, prefix: str = "", min_relative: float = 1e-4
          ) -> dict[str, float]:
    """``{name: relative change}`` of the float tensors starting with ``prefix`` that moved by at least
    ``min_relative`` (``||after - before|| / ||before||``): "did it really train?", not "did one bit flip?".
    """
    now = model.state_dict()
    out = {}
    for k, v in before.items():
        if not k.startswith(prefix) or k not in now or not v.is_floating_point():
            continue
        after = now[k].detach().to("cpu", v.dtype)
        rel = float((after - v).norm() / v.norm().clamp_min(1e-12))
        if rel >= min_relative:
            out[k] = rel
    return out


# ---------------------------------------------------------------------------------------------
# Feedback
# ---------------------------------------------------------------------------------------------
def fail(what: str, where: str = "") -> None:
    """Raise the one-sentence ``AssertionError`` a student sees: what was wrong, then where to look.

    >>> fail("The test photos were read while training", "train only on train_data")
    Traceback (most recent call last):
    AssertionError: The test photos were read while training: train only on train_data.
    """
    sentence = what.rstrip(". ")
    if where:
        sentence += f": {where.rstrip('. ')}"
    raise AssertionError(sentence + ".")


def check(condition: Any, what: str, where: str = "") -> None:
    """:func:`fail` unless ``condition`` is true."""
    if not condition:
        fail(what, where)
