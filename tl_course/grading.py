"""Helpers for the hidden test cells of the graded notebooks: grade on data the notebook never sees,
check *how* a result was obtained, and say in one sentence what went wrong.

A hidden test cell imports what it needs *inside the cell* (``from tl_course import grading``) and builds
its own inputs, bars and references there, so no notebook global that a student cell can rebind is
trusted. The pieces:

- :func:`held_out_samples`: pet photos that no split the notebook can build at the active profile's sizes
  contains (the *end* of each class's seeded pool; :func:`tl_course.data.cat_detector_splits` takes
  test, val, train from the *start*);
- :class:`trace` / :func:`traced`: which functions (code objects: ``tl_course.freeze``, timm's
  ``reset_classifier``, ``tl_course.fit``, the re-seeding functions of :data:`SEEDING`, ...) or which
  objects (an ``nn.Module``, a ``Compose``) ran while a student function ran, with the arguments each call
  received, and which image files were decoded, DataLoader worker processes included (:meth:`Trace.files_read`);
- :class:`SpyDataset`: which items were read, and which were *trained on* (their logits back-propagated);
- the contract of what a function leaves unchanged: :class:`CallerState` (training flags, instance
  overrides, hooks, ``requires_grad``, weights and buffers, the global random generators), :func:`shares_state`;
- devices and gradients at the model's forward: :class:`device_probe` (meta device on a CPU grader),
  :func:`devices_of`, :class:`grad_modes`; inputs the notebook never shows: :func:`head_with_dropout_and_bn`;
- :func:`bn_modes`, :func:`bn_in_train_mode`, :func:`snapshot`, :func:`changed`, :func:`moved`: BatchNorm
  modes and weights unchanged / moved;
- :func:`fail`: raise the one-sentence ``AssertionError`` the feedback shows.

Everything here is independent of the library functions a student is asked to write, so a test never
uses the function under test as its own oracle.

>>> import torch
>>> from tl_course import grading
>>> def replace_head(model, num_classes):                    # a student's answer, written by hand
...     model[-1] = torch.nn.Linear(model[-1].in_features, num_classes)
...     return model
>>> with grading.trace(forbidden=grading.FORBIDDEN_HEAD) as t:
...     _ = replace_head(grading.toy_model(5), 3)
>>> t.forbidden_called()                                      # [] when no library shortcut ran
[]
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .checks import changed, snapshot  # grading.snapshot / changed: hidden test cells import them from here

__all__ = ["held_out_samples", "held_out_dataset", "split_sizes", "reachable_per_class", "Trace", "trace",
           "traced", "code_of", "FORBIDDEN_HEAD", "FORBIDDEN_FREEZE", "SEEDING", "bn_modes", "bn_in_train_mode",
           "snapshot", "changed", "moved", "fail", "attempt", "check", "SpyDataset", "rng_states", "CallerState",
           "shares_state", "devices_of", "device_probe", "grad_modes", "head_with_dropout_and_bn", "FirstPassBest", "toy_model",
           "toy_data", "record_forwards", "ValueState", "image_folder", "tree_state",
           "output_is_head_output"]


# ---------------------------------------------------------------------------------------------
# Held-out photos
# ---------------------------------------------------------------------------------------------
def split_sizes(profile=None) -> int:
    """Photos per class the largest cat-detector split set at ``profile`` takes from each class's pool: the
    notebooks' (test + val + twice ``train_per_class``: ch06 trains on up to twice the profile's training set)
    or the book's pets sweep (``pets_test_per_class + pets_val_per_class + max(pets_sizes)``, the splits
    ``tl_course.book.experiments.domain_setup("pets")`` builds and whose cached features a notebook may reuse),
    whichever is larger.

    >>> from tl_course.profiles import get_profile
    >>> split_sizes(get_profile("ci"))
    184
    """
    from .profiles import get_profile

    p = profile or get_profile()
    notebooks = p.test_per_class + p.val_per_class + 2 * p.train_per_class
    book = p.pets_test_per_class + p.pets_val_per_class + max(p.pets_sizes)
    return max(notebooks, book)


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

    >>> from tl_course import preprocessing
    >>> test = held_out_dataset(preprocessing("efficientnet_lite0", image_size=64), per_class=2)
    >>> len(test), test[0][0].shape
    (6, torch.Size([3, 64, 64]))
    """
    from .data import ImageDataset

    return ImageDataset(held_out_samples(per_class, seed, profile), preprocess)


# ---------------------------------------------------------------------------------------------
# Which functions ran
# ---------------------------------------------------------------------------------------------
def code_of(fn: Any):
    """The code object behind a function, bound or unbound method, ``functools.wraps`` wrapper (the wrapped
    function's: a decorator's wrapper code is shared by every function it decorates) or callable.

    >>> import tl_course
    >>> code_of(tl_course.freeze) is tl_course.freezing.freeze.__code__
    True
    """
    seen = 0
    while seen < 10:
        seen += 1
        if hasattr(fn, "__wrapped__"):  # a decorator's generic wrapper code is shared by every function it wraps
            fn = fn.__wrapped__
        elif hasattr(fn, "__code__"):
            return fn.__code__
        elif hasattr(fn, "__func__"):
            fn = fn.__func__
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


class _Lazy(Mapping):
    """A read-only mapping filled on first use of any method (so importing grading imports no timm):
    ``keys()``, ``in``, ``.get``, ``[]``, ``items()``, ``len`` all see the same names.

    >>> lazy = _Lazy(lambda: {"a": 1})
    >>> "a" in lazy, lazy.get("a"), list(lazy.keys()), lazy["a"]
    (True, 1, ['a'], 1)
    """

    def __init__(self, make: Callable[[], dict]):
        self._make = make
        self._filled: dict | None = None

    def _data(self) -> dict:
        if self._filled is None:
            self._filled = dict(self._make())
        return self._filled

    def __getitem__(self, key):
        return self._data()[key]

    def __iter__(self):
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data()!r})"


def _seeding() -> dict[str, Any]:
    import random

    from .training import seed_everything

    return {"torch.manual_seed": torch.manual_seed, "torch.seed": torch.seed,
            "torch.set_rng_state": torch.set_rng_state, "random.seed": random.Random.seed,
            "random.setstate": random.Random.setstate, "tl_course.seed_everything": seed_everything}


#: Library shortcuts that "write replace_head yourself" forbids: name -> function.
FORBIDDEN_HEAD: Mapping[str, Any] = _Lazy(_forbidden_head)
#: Library shortcuts that "write the freeze yourself" forbids: name -> function.
FORBIDDEN_FREEZE: Mapping[str, Any] = _Lazy(_forbidden_freeze)
#: Functions that reseed the global torch / Python generators: name -> function (``trace(watch=SEEDING)``;
#: calls made inside ``tl_course.fit``, which restores every generator, are not recorded). NumPy's legacy
#: ``np.random.seed`` is compiled code no tracer sees: :class:`CallerState` compares its state instead.
SEEDING: Mapping[str, Any] = _Lazy(_seeding)


@dataclass
class Trace:
    """What ran inside a :class:`trace` block.

    ``calls[name]`` is the list of calls of the watched function ``name``, each a dict of its arguments as
    received (a shallow copy of the callee's locals at entry); ``files`` the image paths decoded through
    ``tl_course.data`` (``load_rgb`` / ``ImageDataset``) or opened with ``PIL.Image.open``, in the grading
    process *and* in DataLoader worker processes; ``worker_loaders`` the ``num_workers`` of every DataLoader
    iterator with worker processes started inside the block.
    """

    calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    forbidden: tuple[str, ...] = ()
    worker_loaders: list[int] = field(default_factory=list)

    def called(self, name: str) -> bool:
        return bool(self.calls.get(name))

    def forbidden_called(self) -> list[str]:
        """Names of the forbidden functions that ran, in watch order."""
        return [n for n in self.forbidden if self.calls.get(n)]

    def files_read(self) -> set[Path]:
        return {Path(f) for f in self.files}


def _watch_key(fn: Any) -> tuple[Any, Any]:
    """``(code object, instance or None)``: a callable *object* (an ``nn.Module``, a torchvision
    ``Compose``) shares its ``__call__`` code with every object of its class, so it is matched by identity too;
    functions, methods and classes' functions match by code alone (any instance)."""
    if isinstance(fn, type) or hasattr(fn, "__code__") or hasattr(fn, "__func__") or hasattr(fn, "__wrapped__"):
        return code_of(fn), None
    return code_of(fn), fn


def _outside_fit(frame) -> bool:
    from .training import fit

    fit_code = fit.__code__
    f = frame.f_back
    while f is not None:
        if f.f_code is fit_code:
            return False
        f = f.f_back
    return True


class trace:
    """Context manager: record calls of ``watch`` and ``forbidden`` functions and the image files decoded.

    Uses ``sys.setprofile`` (and ``threading.setprofile`` for new threads), restored in ``finally``. A profiler
    already active (an outer :class:`trace`, a coverage tool) keeps receiving every event: traces nest.
    DataLoader worker processes started by ``fork`` inherit the profiler and report the files they decode
    through a temporary log; with the ``spawn`` start method :attr:`Trace.worker_loaders` says workers ran
    unseen. Watch a callable object (an ``nn.Module``, a ``Compose``) to record calls of *that* object only.

    >>> import tl_course
    >>> def train_head(model, train, val):                   # a student's answer that calls fit
    ...     return tl_course.fit(model, train, val, epochs=1, progress=False)
    >>> val_data = toy_data(6, 3, seed=1)
    >>> with trace(watch={"fit": tl_course.fit}, forbidden=FORBIDDEN_FREEZE) as t:
    ...     _ = train_head(toy_model(3), toy_data(12, 3), val_data)
    >>> t.calls["fit"][0]["val"] is val_data, t.forbidden_called()
    (True, [])
    """

    def __init__(self, watch: Mapping[str, Any] | None = None, forbidden: Mapping[str, Any] | None = None,
                 files: bool = True):
        from . import data

        self._names: dict[Any, list[tuple[str, Any]]] = {}
        forbidden = dict(forbidden.items()) if forbidden else {}
        for name, fn in list((watch or {}).items()) + list(forbidden.items()):
            code, instance = _watch_key(fn)
            self._names.setdefault(code, []).append((name, instance))
        self._seeding = {code_of(f) for f in _seeding().values()}
        self._read_codes = set()
        if files:
            from PIL import Image

            self._read_codes = {code_of(data._read), code_of(Image.open)}
        from torch.utils.data import dataloader

        self._worker_code = code_of(dataloader._MultiProcessingDataLoaderIter.__init__)
        self.result = Trace(forbidden=tuple(forbidden))

    def _profile(self, frame, event, arg):
        if self._outer is not None:
            self._outer(frame, event, arg)
        if event != "call":
            return
        code = frame.f_code
        if code in self._read_codes:
            path = frame.f_locals.get("path", frame.f_locals.get("fp"))
            if isinstance(path, (str, os.PathLike)):
                self._record_file(Path(path))
            return
        if code is self._worker_code:
            loader = frame.f_locals.get("loader")
            self.result.worker_loaders.append(int(getattr(loader, "num_workers", 1)))
            return
        entries = self._names.get(code)
        if entries is None:
            return
        if code in self._seeding and not _outside_fit(frame):
            return
        me = frame.f_locals.get("self")
        for name, instance in entries:
            if instance is None or me is instance:
                self.result.calls.setdefault(name, []).append(dict(frame.f_locals))

    def _record_file(self, path: Path) -> None:
        if os.getpid() == self._pid:
            self.result.files.append(path)
        else:  # a forked DataLoader worker: its copy of self.result dies with it
            with open(self._log, "a", encoding="utf-8") as log:
                log.write(f"{path}\n")

    def __enter__(self) -> Trace:
        import tempfile

        self._pid = os.getpid()
        fd, self._log = tempfile.mkstemp(prefix="tl_course_trace_", suffix=".log")
        os.close(fd)
        self._outer = sys.getprofile()
        self._saved_thread = threading.getprofile() if hasattr(threading, "getprofile") else None
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        return self.result

    def __exit__(self, *exc) -> bool:
        sys.setprofile(self._outer)
        threading.setprofile(self._saved_thread)
        try:
            self.result.files += [Path(line) for line in Path(self._log).read_text(encoding="utf-8").splitlines()
                                  if line]
        finally:
            os.unlink(self._log)
        return False


def traced(fn: Callable, *args, watch: Mapping[str, Any] | None = None,
           forbidden: Mapping[str, Any] | None = None, **kwargs) -> tuple[Any, Trace]:
    """``(fn(*args, **kwargs), Trace)``: call a student function under :class:`trace`.

    >>> import tl_course
    >>> model, t = traced(tl_course.replace_head, toy_model(5), 3, forbidden=FORBIDDEN_HEAD)
    >>> t.forbidden_called()                                  # the library's own replace_head is the shortcut
    ['tl_course.replace_head']
    """
    with trace(watch=watch, forbidden=forbidden) as t:
        result = fn(*args, **kwargs)
    return result, t


class SpyDataset(torch.utils.data.Dataset):
    """A dataset that records every item read, whether ``model`` was in train mode at that moment, and which
    items were *trained on*: read into a batch whose logits (the output of ``head``, by default
    ``tl_course.get_head(model)``, or of ``model`` itself when the head did not run) received a gradient.

    Hand the spies to the student's training function instead of the plain datasets: validation photos
    trained on (``ConcatDataset([train, val])``) or training photos never trained on show, whatever mode the
    model was in (a loop that keeps a frozen backbone in ``eval()`` mode trains on every photo all the same).
    Reads are attributed in the grading process (``num_workers=0``; :attr:`Trace.worker_loaders` says when
    workers ran).

    >>> import tl_course
    >>> model = toy_model(3)
    >>> train, val = SpyDataset(toy_data(12, 3), model), SpyDataset(toy_data(6, 3, seed=1), model)
    >>> _ = tl_course.fit(model, train, val, epochs=2, progress=False)
    >>> val.trained(), len(train.trained())   # no validation example trained on; every training one
    (set(), 12)
    """

    def __init__(self, dataset, model: nn.Module, head: nn.Module | None = None):
        self.dataset = dataset
        self.model = model
        self.log: list[tuple[int, bool]] = []
        self._pending: list[int] = []
        self._trained: set[int] = set()
        for name in ("samples", "classes", "transform"):  # what ImageDataset users may read
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))
        if head is None:
            try:
                from .models import get_head

                head = get_head(model)
            except Exception:  # noqa: BLE001 - any model without a linear layer: its output is the logits
                head = model
        # the head's output, or the model's when a student's code replaced the head or never calls it alone
        self._handles = [m.register_forward_hook(self._on_forward) for m in dict.fromkeys([head, model])]
        #: one entry per forward of the head on a batch of this dataset: (indices, gradients on?, model in
        #: train mode?, predicted classes or None, labels as read)
        self.forwards: list[tuple[list[int], bool, bool, list[int] | None, list]] = []

    def _on_forward(self, module, inputs, output) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        batch = [i for i, _ in pending]
        preds = None
        if isinstance(output, torch.Tensor) and output.dim() == 2 and output.device.type != "meta":
            preds = output.detach().argmax(1).cpu().tolist()
        self.forwards.append((batch, torch.is_grad_enabled(), bool(self.model.training), preds,
                              [y for _, y in pending]))
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad: self._trained.update(batch))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        self.log.append((int(index), bool(self.model.training)))
        item = self.dataset[index]
        try:
            label = int(item[1])
        except (TypeError, ValueError, IndexError):
            label = None
        self._pending.append((int(index), label))
        return item

    def passes(self) -> list[float]:
        """Accuracy of every complete evaluation pass (forwards without gradients, in order, covering the
        whole dataset) against this dataset's labels: what a loop validating on it saw, epoch by epoch."""
        out, correct, seen = [], 0, 0
        for batch, grad, _, preds, labels in self.forwards:
            if grad or preds is None or len(preds) != len(batch):
                continue
            correct += sum(p == y for p, y in zip(preds, labels))
            seen += len(batch)
            if seen >= len(self.dataset):
                out.append(correct / seen)
                correct, seen = 0, 0
        return out

    def forwards_with_gradients(self, trained: bool | None = None) -> int:
        """How many forwards on this dataset's batches ran with gradients on (``trained=False``: only those
        never back-propagated, e.g. a validation pass without ``torch.no_grad()``)."""
        return sum(1 for batch, grad, _, _, _ in self.forwards
                   if grad and (trained is None or bool(set(batch) & self._trained) == trained))

    def forwards_in_train_mode(self) -> int:
        """How many forwards on this dataset's batches ran with the model in train mode."""
        return sum(1 for _, _, training, _, _ in self.forwards if training)

    def pass_predictions(self) -> list[dict[int, int]]:
        """``{index: predicted class}`` of every complete evaluation pass (see :meth:`passes`)."""
        out, current = [], {}
        for batch, grad, _, preds, _ in self.forwards:
            if grad or preds is None or len(preds) != len(batch):
                continue
            current.update(zip(batch, preds))
            if len(current) >= len(self.dataset):
                out.append(current)
                current = {}
        return out


    def reads(self, training: bool | None = None) -> list[int]:
        """Indices read (in train mode only, in eval mode only, or all)."""
        return [i for i, t in self.log if training is None or t == training]

    def trained(self) -> set[int]:
        """Indices of the items whose logits were back-propagated (trained on)."""
        return set(self._trained)

    def close(self) -> None:
        """Remove the forward hooks from the head and the model."""
        for handle in self._handles:
            handle.remove()


class FirstPassBest(torch.utils.data.Dataset):
    """A validation set whose best epoch is *not* the last, by construction: ``(x, y)`` items of ``dataset``
    with their true label ``y`` during the first complete pass, ``(y + 1) % num_classes`` afterwards. A model
    that learns the task scores best on the first validation pass, so a loop that keeps the last epoch, or
    records the accuracy of one epoch and keeps another's weights, shows (wrap it in :class:`SpyDataset`).

    >>> data = FirstPassBest([(torch.zeros(1), 2), (torch.zeros(1), 0)], num_classes=3)
    >>> [data[i][1] for i in (0, 1, 0, 1)]
    [2, 0, 0, 1]
    """

    def __init__(self, dataset, num_classes: int):
        self.dataset, self.num_classes, self.read = dataset, num_classes, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        x, y = self.dataset[index]
        first = self.read < len(self.dataset)
        self.read += 1
        return x, int(y) if first else (int(y) + 1) % self.num_classes


def toy_model(num_classes: int, seed: int = 0) -> nn.Sequential:
    """A tiny image classifier for contract checks (milliseconds per epoch on a CPU): 3x4x4 images ->
    Flatten, Linear(48, 16), BatchNorm1d, ReLU, Dropout(0.5), Linear(16, ``num_classes``), the head
    (``get_head`` finds it). The BatchNorm and Dropout make every train / eval mode mistake show.

    >>> toy_model(5)(torch.zeros(2, 3, 4, 4)).shape
    torch.Size([2, 5])
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(16, num_classes))


def toy_data(n: int, num_classes: int, seed: int = 0, labels: Iterable[int] | None = None):
    """``n`` 3x4x4 images, class ``k`` a fixed random pattern plus noise (a :func:`toy_model` learns it in one
    epoch), as a ``TensorDataset``; ``labels`` renames the classes ``0..num_classes-1`` (a label set with
    gaps, e.g. ``(0, 2, 5)``). The patterns depend only on ``num_classes``: train and validation sets built with
    other seeds are the same task.

    >>> x, y = toy_data(6, 3, labels=(0, 2, 5)).tensors
    >>> x.shape, y.tolist()
    (torch.Size([6, 3, 4, 4]), [0, 2, 5, 0, 2, 5])
    """
    names = torch.tensor(list(labels) if labels is not None else range(num_classes))
    if len(names) != num_classes:
        raise ValueError(f"labels names {len(names)} classes, num_classes is {num_classes}.")
    patterns = torch.randn(num_classes, 3, 4, 4, generator=torch.Generator().manual_seed(100 + num_classes))
    y = torch.arange(n) % num_classes
    x = 2 * patterns[y] + 0.5 * torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.TensorDataset(x, names[y])


# ---------------------------------------------------------------------------------------------
# The caller's objects: left as they were?
# ---------------------------------------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """The global torch (CPU and every CUDA device), Python ``random`` and NumPy generator states."""
    import random

    import numpy as np

    states = {"torch": torch.get_rng_state(), "random": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape") and hasattr(a, "dtype"):  # numpy array
        import numpy as np

        return bool(np.array_equal(a, b))
    return a == b


_OVERRIDABLE = ("train", "eval", "forward", "__call__", "requires_grad_", "parameters")


@dataclass
class CallerState:
    """Everything a caller owns about ``modules``: each module's training flag, instance overrides of
    ``train`` / ``eval`` / ``forward``, hooks, each parameter's ``requires_grad``, every parameter and buffer
    (copied), and the global random generator states. :meth:`changes` lists what differs now, one phrase each.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    >>> state = CallerState.of(net)
    >>> _ = net.eval()
    >>> state.changes()
    ['the training flag of the model and 2 more modules (train -> eval)']
    """

    modules: tuple[nn.Module, ...]
    flags: list[dict[str, bool]]
    overrides: list[dict[str, tuple[str, ...]]]
    hooks: list[dict[str, int]]
    requires_grad: list[dict[str, bool]]
    tensors: list[dict[str, torch.Tensor]]
    rng: dict[str, Any]

    @classmethod
    def of(cls, *modules: nn.Module) -> "CallerState":
        return cls(modules, [_flags(m) for m in modules], [_overrides(m) for m in modules],
                   [_hooks(m) for m in modules], [{n: p.requires_grad for n, p in m.named_parameters()}
                                                 for m in modules],
                   [snapshot(m) for m in modules], rng_states())

    def changes(self, rng: Iterable[str] = ("torch", "random", "numpy"), tensors: bool = True,
                ignore: Iterable[str] = ()) -> list[str]:
        """What changed since :meth:`of`, one phrase each (``[]``: nothing). ``rng`` names the generators to
        compare (leave ``"torch"`` out for a function allowed to *draw* from it, e.g. a hand-written training
        loop that shuffles; :data:`SEEDING` traces re-seeding instead); ``tensors=False`` skips the weights;
        ``ignore`` names modules (with everything under them) the function may change, e.g. a replaced head."""
        skip = tuple(ignore)

        def kept(name: str) -> bool:
            return not any(name == n or name.startswith(n + ".") for n in skip)

        out = []
        for i, m in enumerate(self.modules):
            what = "the model" if len(self.modules) == 1 else f"module {i}"
            now = _flags(m)
            flipped = [n for n, t in self.flags[i].items() if now.get(n, t) != t and kept(n)]
            if flipped:
                first = flipped[0]
                more = f" and {len(flipped) - 1} more module{'s' * (len(flipped) > 2)}" if len(flipped) > 1 else ""
                arrow = "train -> eval" if self.flags[i][first] else "eval -> train"
                out.append(f"the training flag of {repr(first) if first else what}{more} ({arrow})")
            over = {n: o for n, o in _overrides(m).items() if o != self.overrides[i].get(n, ()) and kept(n)}
            if over:
                name, attrs = next(iter(over.items()))
                out.append(f"{what}'s module {name!r} got its own {attrs[0]}() (an instance override)")
            hooks = {n: c for n, c in _hooks(m).items() if c != self.hooks[i].get(n, 0) and kept(n)}
            if hooks:
                out.append(f"hooks were added to or removed from {what} (first: {next(iter(hooks))!r})")
            grads = [n for n, p in m.named_parameters()
                     if self.requires_grad[i].get(n, p.requires_grad) != p.requires_grad and kept(n)]
            if grads:
                out.append(f"requires_grad of {len(grads)} parameter{'s' * (len(grads) > 1)} of {what} (first: {grads[0]})")
            if tensors:
                moved_ = [k for k in changed(self.tensors[i], m) if kept(k)]
                if moved_:
                    out.append(f"{len(moved_)} weight or buffer tensor{'s' * (len(moved_) > 1)} of {what} "
                               f"(first: {moved_[0]})")
        now_rng = rng_states()
        for name in rng:
            if name in self.rng and not _same(self.rng[name], now_rng.get(name)):
                label = {"torch": "torch", "random": "Python", "numpy": "NumPy"}.get(name, name)
                out.append(f"the global {label} random generator")
        return out

    def check(self, function: str, rng: Iterable[str] = ("torch", "random", "numpy"), tensors: bool = True) -> None:
        """:func:`fail` in one sentence when :meth:`changes` is not empty."""
        found = self.changes(rng, tensors)
        if found:
            fail(f"{function} changed what belongs to the caller: {found[0]}",
                 "work on a copy (copy.deepcopy) or restore it, and use a torch.Generator of your own for randomness")


def _flags(m: nn.Module) -> dict[str, bool]:
    return {n: x.training for n, x in m.named_modules()}


def _overrides(m: nn.Module) -> dict[str, tuple[str, ...]]:
    found = {}
    for n, x in m.named_modules():
        attrs = tuple(a for a in _OVERRIDABLE if a in vars(x))
        if attrs:
            found[n] = attrs
    return found


def _hooks(m: nn.Module) -> dict[str, int]:
    counts = {}
    for n, x in m.named_modules():
        c = sum(len(getattr(x, h, {})) for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"))
        if c:
            counts[n] = c
    return counts


def shares_state(a: nn.Module, b: nn.Module) -> bool:
    """Whether two modules are the same object or share a parameter or buffer (so training one changes
    the other): a function promising a *new* model must return one that shares nothing.

    >>> net = nn.Linear(2, 2)
    >>> shares_state(net, net), shares_state(net, nn.Linear(2, 2))
    (True, False)
    """
    if a is b:
        return True
    ids = {id(t) for t in [*a.parameters(), *a.buffers()]}
    return any(id(t) in ids for t in [*b.parameters(), *b.buffers()])


# ---------------------------------------------------------------------------------------------
# Devices and gradients at the model's forward
# ---------------------------------------------------------------------------------------------
class _Probed(BaseException):
    """Raised by :class:`device_probe` at the first forward (a BaseException: ``except Exception`` in a
    student's loop does not swallow it)."""


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x)]
    for name in ("features", "labels", "logits"):  # FeatureSet, Evaluation, ...
        if hasattr(obj, name):
            return [t for n in ("features", "labels", "logits") for t in _tensors(getattr(obj, n, None))]
    return []


def devices_of(obj) -> set[str]:
    """Device types of every tensor in ``obj`` (tensors, lists, tuples, dicts, a ``FeatureSet``).

    >>> sorted(devices_of((torch.zeros(1), [torch.ones(2, device="meta")])))
    ['cpu', 'meta']
    """
    return {t.device.type for t in _tensors(obj)}


class device_probe:
    """Context manager: moves nothing, records the device types of the tensors reaching ``model``'s first
    forward (:attr:`inputs`) and of the model's own parameters at that moment (:attr:`weights`), then stops
    the student's function there. On a CPU grader hand the function ``device=torch.device("meta")``: inputs
    it forgets to move arrive on ``cpu``, a model it forgets to move stays there.

    >>> net = nn.Linear(2, 2)
    >>> with device_probe(net) as seen:
    ...     net.to("meta")(torch.zeros(1, 2))
    >>> seen.inputs, seen.weights, seen.reached
    (['cpu'], ['meta'], True)
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.inputs: list[str] = []
        self.weights: list[str] = []
        self.reached = False

    def _hook(self, module, inputs):
        self.reached = True
        self.inputs = sorted(devices_of(inputs))
        self.weights = sorted({p.device.type for p in module.parameters()})
        raise _Probed

    def __enter__(self) -> "device_probe":
        self._handle = self.model.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, kind, value, tb) -> bool:
        self._handle.remove()
        return kind is _Probed


class grad_modes:
    """Context manager: ``torch.is_grad_enabled()`` at every forward of ``model`` inside the block.

    >>> net = nn.Linear(2, 2)
    >>> with grad_modes(net) as modes, torch.no_grad():
    ...     _ = net(torch.zeros(1, 2))
    >>> modes
    [False]
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.modes: list[bool] = []

    def __enter__(self) -> list[bool]:
        self._handle = self.model.register_forward_hook(lambda m, i, o: self.modes.append(torch.is_grad_enabled()))
        return self.modes

    def __exit__(self, *exc) -> bool:
        self._handle.remove()
        return False


def head_with_dropout_and_bn(in_features: int, num_classes: int, hidden: int = 16, seed: int = 0) -> nn.Sequential:
    """A head other than one ``nn.Linear``: Linear, BatchNorm1d, ReLU, Dropout(0.5), Linear. Mode mistakes (no
    ``eval()`` while validating, ``train()`` set once before the loop) change its outputs.

    >>> head_with_dropout_and_bn(8, 3)(torch.zeros(4, 8)).shape
    torch.Size([4, 3])
    """
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(hidden, num_classes))


# ---------------------------------------------------------------------------------------------
# BatchNorm modes and weights
# ---------------------------------------------------------------------------------------------
def bn_modes(model: nn.Module) -> dict[str, bool]:
    """``{module name: training flag}`` of every BatchNorm layer.

    >>> bn_modes(toy_model(3).eval())
    {'2': False}
    """
    return {name: m.training for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def bn_in_train_mode(model: nn.Module, skip: Iterable[nn.Module] = ()) -> list[str]:
    """Names of the BatchNorm layers in train mode (outside the modules in ``skip``, e.g. a trainable head)."""
    skipped = {id(m) for s in skip for m in s.modules()}
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and id(m) not in skipped]


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


def attempt(fn: Callable, *args, on: str, hint: str = "", **kwargs) -> Any:
    """``fn(*args, **kwargs)``; an exception from the student's code becomes the one-sentence failure
    "``fn`` failed on ``on`` (the error's first line)": the contract's input is named, not a traceback.

    >>> attempt(int, "x", on="a letter", hint="give it digits")
    Traceback (most recent call last):
    AssertionError: int failed on a letter (ValueError: invalid literal for int() with base 10: 'x'): give it digits.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any error of the student's code is reported, not raised
        first = (str(err).strip().splitlines() or [""])[0][:160]
        name = getattr(fn, "__name__", "the function")
        fail(f"{name} failed on {on} ({type(err).__name__}: {first})".replace(": )", ")"), hint)


def check(condition: Any, what: str, where: str = "") -> None:
    """:func:`fail` unless ``condition`` is true."""
    if not condition:
        fail(what, where)


# --- sweeps and pipelines (ch08, ch09) ---
def record_forwards(module: nn.Module) -> list[dict[str, Any]]:
    """Attach a forward hook to ``module`` (for its lifetime) and return the list it fills, one dict per forward:
    ``training`` (the module's mode), ``grad`` (``torch.is_grad_enabled()``) and ``devices`` (of the inputs).
    For modules the grader builds and hands over (a probe that ``fit_probe`` returns, a head), where a
    :class:`grad_modes` block cannot reach: "measure it in eval mode, without gradients" checked at each call.

    >>> probe = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    >>> log = record_forwards(probe)
    >>> _ = probe(torch.zeros(1, 2))
    >>> with torch.no_grad():
    ...     _ = probe.eval()(torch.zeros(1, 2))
    >>> [(r["training"], r["grad"], r["devices"]) for r in log]
    [(True, True, ['cpu']), (False, False, ['cpu'])]
    """
    log: list[dict[str, Any]] = []
    module.register_forward_hook(lambda m, inputs, output: log.append(
        {"training": bool(m.training), "grad": torch.is_grad_enabled(), "devices": sorted(devices_of(inputs))}))
    return log


def _copy_value(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _copy_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_value(v) for v in obj) if isinstance(obj, list) else tuple(_copy_value(v) for v in obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return obj.copy()
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _copy_value(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return obj


def _first_difference(before, now, path: str) -> str | None:
    if isinstance(before, dict) and not hasattr(now, "__dataclass_fields__"):
        if not isinstance(now, dict) or set(before) != set(now):
            return f"{path} (its keys)"
        for k in before:
            found = _first_difference(before[k], now[k], f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(before, dict):  # a dataclass (FeatureSet, ...) copied as a dict of its fields
        for k, v in before.items():
            found = _first_difference(v, getattr(now, k, None), f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(before, (list, tuple)) and not isinstance(before, torch.Tensor):
        if not isinstance(now, (list, tuple)) or len(before) != len(now):
            return path
        for i, (a, b) in enumerate(zip(before, now)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if _same(before, now) else path


@dataclass
class ValueState:
    """A deep copy of the values a caller hands over (dicts, lists, tuples, tensors, NumPy arrays, dataclasses
    such as a ``FeatureSet``), by name; :meth:`changes` names the first value changed in place since, e.g.
    ``"train[9].features"``. The contract "leave the caller's lists, dicts and feature sets as they are".

    >>> table, cuts = {9: torch.zeros(2)}, [8, 4]
    >>> state = ValueState.of(table=table, cuts=cuts)
    >>> cuts.sort(); table[9] += 1
    >>> state.changes()
    ['table[9]', 'cuts[0]']
    """

    objects: dict[str, Any]
    copies: dict[str, Any]

    @classmethod
    def of(cls, **objects: Any) -> "ValueState":
        return cls(dict(objects), {name: _copy_value(obj) for name, obj in objects.items()})

    def changes(self) -> list[str]:
        """The first changed place of every object that changed, in the order given to :meth:`of`."""
        out = []
        for name, obj in self.objects.items():
            found = _first_difference(self.copies[name], obj, name)
            if found:
                out.append(found)
        return out


def image_folder(root: Path, layout: Mapping[str, Mapping[str, Iterable[Path]]]) -> Path:
    """Build ``root/<split>/<class>/<photo>`` (torchvision's ImageFolder layout) from existing photos, copied:
    a folder of the grader's own (other class names, another number of classes) for a function that takes a
    folder. ``layout``: ``{split: {class name: photo paths}}``. Returns ``root``.

    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     Image.new("RGB", (4, 4)).save(Path(tmp) / "x.jpg")
    ...     root = image_folder(Path(tmp) / "photos", {"train": {"wasps": [Path(tmp) / "x.jpg"]}})
    ...     sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    ['train/wasps/0_x.jpg']
    """
    import shutil

    for split, classes in layout.items():
        for name, photos in classes.items():
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, photo in enumerate(photos):
                shutil.copyfile(photo, folder / f"{i}_{Path(photo).name}")
    return Path(root)


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, modification time in ns)}`` of every file under ``root``: compare before and
    after a call to see files written, changed or deleted in a folder the caller handed over.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     before = tree_state(Path(tmp))
    ...     _ = (Path(tmp) / "model.pt").write_bytes(b"x")
    ...     sorted(set(tree_state(Path(tmp))) - set(before))
    ['model.pt']
    """
    root = Path(root)
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def output_is_head_output(model: nn.Module, head: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model(x)`` is exactly what ``head`` outputs in that forward (in eval mode, without gradients;
    every module's mode restored): no Softmax, ReLU or other layer after the logits.

    >>> head = nn.Linear(4, 3)
    >>> output_is_head_output(nn.Sequential(nn.Flatten(), head), head, torch.randn(2, 4))
    True
    >>> output_is_head_output(nn.Sequential(head, nn.Softmax(dim=1)), head, torch.randn(2, 4))
    False
    """
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda m, i, o: seen.append(o))
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            out = model.eval()(x)
    finally:
        handle.remove()
        for m, mode in modes.items():
            m.training = mode
    return bool(seen) and isinstance(out, torch.Tensor) and out.shape == seen[-1].shape and torch.equal(out, seen[-1])
