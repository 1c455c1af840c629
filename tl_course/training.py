"""One training loop for every case in the course: a softmax on cached features, the top stages on
cached activations, or the whole network on images.

Model selection happens on the validation set; the test set, if given, is evaluated once at the end.

>>> import torch
>>> from torch import nn
>>> x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)); y = (x[:, 0] > 0).long()
>>> head = nn.Linear(2, 2)
>>> history = fit(head, (x, y), (x, y), epochs=20, lr=0.1, progress=False)
>>> history.best_val_acc > 0.9
True
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .freezing import build_optimizer
from .checks import snapshot
from .profiles import autocast, get_device

__all__ = ["History", "Evaluation", "TrainOptions", "seed_everything", "fit", "evaluate", "predict"]


@dataclass
class Evaluation:
    """What :func:`evaluate` returns."""

    accuracy: float
    loss: float
    per_class_accuracy: list[float]  #: recall of each class (NaN for a class with no examples)
    confusion: torch.Tensor  #: (K, K) counts, rows = true class, columns = predicted class
    predictions: torch.Tensor  #: (N,) predicted class indices
    labels: torch.Tensor  #: (N,) true class indices


@dataclass(frozen=True)
class TrainOptions:
    """The rarely changed knobs of :func:`fit`, in one value: ``fit(..., options=TrainOptions(seed=3))``.

    >>> TrainOptions().schedule, TrainOptions(seed=None, amp=False).seed
    ('cosine', None)
    """

    weight_decay: float = 1e-4  #: AdamW's, on weights only (not biases and norm weights)
    pretrained_lr_factor: float = 0.1  #: pretrained stages learn at ``lr * pretrained_lr_factor``
    schedule: str | None = "cosine"  #: "cosine" (annealed to zero over the run) or None (constant)
    amp: bool = True  #: mixed precision on CUDA (fp32 elsewhere)
    num_workers: int = 0  #: DataLoader workers for image data sets
    seed: int | None = 0  #: shuffling, dropout, augmentation; None: the caller's generators (advanced)
    label_smoothing: float = 0.0  #: of the cross-entropy loss

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", None):
            raise ValueError(f"Unknown schedule {self.schedule!r}: use 'cosine' or None.")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be a whole number >= 0, got {self.num_workers!r}.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be a whole number or None, got {self.seed!r}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}.")


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run: ``epochs[i]`` has epoch, train_loss, train_acc, val_loss,
    val_acc, seconds. ``best_epoch`` is the epoch whose weights the model holds at the end."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0
    test: Evaluation | None = None  #: evaluated once, after training, on the selected weights

    @property
    def best_val_acc(self) -> float | None:
        if self.best_epoch is None:
            return None
        return self.epochs[self.best_epoch - 1]["val_acc"]

    def seconds_per_epoch(self) -> float:
        return float(np.mean([e["seconds"] for e in self.epochs])) if self.epochs else 0.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all global generators) so that a script run on the CPU repeats
    exactly. Library code should not call it: :func:`fit` seeds a private copy instead
    (``TrainOptions.seed``) and leaves the caller's generators as they were.

    >>> import torch
    >>> seed_everything(0); a = torch.rand(1)
    >>> seed_everything(0); torch.equal(a, torch.rand(1))
    True
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _is_tensor_pair(data) -> bool:
    return (hasattr(data, "features") and hasattr(data, "labels")) or (
        isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data))


def _class_indices(labels, where: str) -> torch.Tensor:
    """``labels`` as int64 class indices, shape ``(N,)``; anything else is one sentence saying what is expected
    (one-hot or probability rows, fractional numbers)."""
    y = torch.as_tensor(labels)
    if y.ndim != 1:
        raise ValueError(f"The {where} labels have shape {tuple(y.shape)}: one class index per example is "
                         f"expected, shape ({len(y) if y.ndim else 'N'},) (for one-hot labels pass labels.argmax(1)).")
    if y.is_floating_point() or y.is_complex():
        if not torch.equal(y, y.round()):
            raise ValueError(f"The {where} labels hold fractional numbers (dtype {y.dtype}): class indices "
                             "0, 1, 2, ... are expected.")
    return y.long()


def _tensor_pair(data, where: str = "training") -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "features"):
        return data.features.float(), _class_indices(data.labels, where)
    return data[0].float(), _class_indices(data[1], where)


class _Batches:
    """Mini-batches from either in-memory tensors (cached features: indexed directly, no DataLoader
    overhead, so an epoch costs microseconds) or a dataset of images (DataLoader)."""

    def __init__(self, data, batch_size: int, shuffle: bool, device: torch.device, num_workers: int,
                 generator: torch.Generator | None, where: str = "training"):
        self.device, self.shuffle, self.batch_size, self.generator = device, shuffle, batch_size, generator
        self.where = where
        if _is_tensor_pair(data):
            x, y = _tensor_pair(data, where)
            if len(x) != len(y):
                raise ValueError(f"{len(x)} feature rows but {len(y)} labels: features and labels must pair up "
                                 "one to one (same length).")
            self.tensors = (x.to(device), y.to(device))
            self.loader = None
        else:
            self.tensors = None
            self.loader = data if isinstance(data, DataLoader) else DataLoader(
                data, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=generator,
                pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        return -(-len(self.tensors[1]) // self.batch_size)

    def __iter__(self):
        if self.loader is not None:
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), _class_indices(y, self.where).to(self.device,
                                                                                            non_blocking=True)
            return
        x, y = self.tensors
        n = len(y)
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else torch.arange(
            n, device=self.device)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield x[idx], y[idx]


def _run_eval(model: nn.Module, batches: _Batches, device: torch.device, amp: bool):
    """Logits and labels of every batch, in eval mode (each module's flag restored, even on an error)."""
    modes = {m: m.training for m in model.modules()}  # every module's own flag, restored even on an error
    model.eval()
    logits, labels = [], []
    try:
        with torch.inference_mode(), autocast(device, amp):
            for x, y in batches:
                logits.append(model(x).float())
                labels.append(y)
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not logits:
        raise ValueError(f"There is nothing to evaluate: the {batches.where} data yields no batch.")
    return torch.cat(logits), torch.cat(labels)


def _check_labels(labels: torch.Tensor, num_outputs: int, where: str) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_outputs):
        raise ValueError(f"The {where} labels run from {int(labels.min())} to {int(labels.max())} but the model has "
                         f"{num_outputs} outputs: labels must be class indices 0..{num_outputs - 1} "
                         "(give the model one output per class).")


def predict(model: nn.Module, data, device: str | torch.device | None = None, batch_size: int = 64,
            amp: bool = True) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) for every example of ``data``, as a CPU tensor.

    ``data``: a dataset of ``(image, label)``, a DataLoader, a FeatureSet or a ``(features, labels)`` pair.

    >>> import torch
    >>> from torch import nn
    >>> predict(nn.Linear(4, 3), (torch.zeros(5, 4), torch.zeros(5, dtype=torch.long))).shape
    torch.Size([5, 3])
    """
    device = get_device(device)
    model.to(device)
    logits, _ = _run_eval(model, _Batches(data, batch_size, False, device, 0, None, "prediction"), device, amp)
    return logits.cpu()


def evaluate(model: nn.Module, data, device: str | torch.device | None = None, batch_size: int = 64,
             num_classes: int | None = None, amp: bool = True) -> Evaluation:
    """Accuracy, loss, per-class accuracy and confusion matrix of ``model`` on ``data``.

    The matrix has one row (true class) and one column (predicted class) per output of the model, or
    ``num_classes`` of them: more than the model's outputs is fine (classes it never predicts), fewer is a
    ``ValueError`` (a prediction outside the matrix would be counted in the wrong cell). Labels outside
    ``0..K-1`` and labels that are not one class index per example are a ``ValueError`` too.

    >>> import torch
    >>> from torch import nn
    >>> always2 = nn.Linear(2, 3)
    >>> with torch.no_grad():
    ...     _ = always2.weight.zero_(); _ = always2.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    >>> result = evaluate(always2, (torch.zeros(4, 2), torch.tensor([0, 0, 1, 2])), device="cpu")
    >>> result.accuracy, result.confusion.tolist()
    (0.25, [[0, 0, 2], [0, 0, 1], [0, 0, 1]])
    """
    device = get_device(device)
    model.to(device)
    logits, labels = _run_eval(model, _Batches(data, batch_size, False, device, 0, None, "evaluation"), device, amp)
    logits, labels = logits.cpu(), labels.cpu()
    outputs = logits.shape[1]
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < outputs):
        raise ValueError(f"num_classes={num_classes!r} but the model has {outputs} outputs: the confusion matrix "
                         f"needs a row and a column for every class the model can predict (leave num_classes out "
                         f"for {outputs}, or give the model one output per class).")
    k = num_classes or outputs
    _check_labels(labels, outputs, "evaluation")
    pred = logits.argmax(1)
    confusion = torch.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    support = confusion.sum(1)
    per_class = [float(confusion[i, i] / support[i]) if support[i] else float("nan") for i in range(k)]
    return Evaluation(
        accuracy=float((pred == labels).float().mean()) if len(labels) else float("nan"),
        loss=float(nn.functional.cross_entropy(logits, labels)) if len(labels) else float("nan"),
        per_class_accuracy=per_class, confusion=confusion, predictions=pred, labels=labels)


def _length(data) -> int | None:
    """Examples in ``data`` (None when an iterable dataset does not know)."""
    if _is_tensor_pair(data):
        return len(_tensor_pair(data)[1])
    try:
        return len(data.dataset) if isinstance(data, DataLoader) else len(data)
    except TypeError:  # an iterable dataset: its length is unknown
        return None


def _batches_of(loader: DataLoader) -> int | None:
    """Batches a DataLoader yields (None when it cannot know)."""
    try:
        return len(loader)
    except TypeError:
        return None


def _validate(train, val, test, epochs, batch_size) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a whole number >= 0, got {epochs!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    for name, data in (("train", train), ("val", val), ("test", test)):
        if data is None:
            continue
        if _length(data) == 0:
            raise ValueError(f"The {name} set is empty: fit needs at least one example in it.")
        if isinstance(data, DataLoader) and _batches_of(data) == 0:
            raise ValueError(f"The {name} DataLoader yields no batch ({_length(data)} examples, batch_size="
                             f"{data.batch_size}, drop_last={data.drop_last}): fit needs at least one batch "
                             "(use drop_last=False or a smaller batch_size).")
        if _is_tensor_pair(data):
            where = {"train": "training", "val": "validation", "test": "test"}[name]
            x, y = _tensor_pair(data, where)
            if len(x) != len(y):
                raise ValueError(f"The {name} set has {len(x)} feature rows but {len(y)} labels: features and "
                                 "labels must pair up one to one.")
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise ValueError(f"The {name} features hold {bad} NaN or infinite values: recompute them "
                                 "(a damaged cache or a broken image) before training on them.")


def fit(model: nn.Module, train, val=None, *, test=None, epochs: int = 10, lr: float = 1e-3, batch_size: int = 32,
        optimizer: torch.optim.Optimizer | None = None, device: str | torch.device | None = None,
        progress: bool = True, history: History | None = None, options: TrainOptions | None = None) -> History:
    """Train ``model`` on ``train`` and keep the weights of the best validation epoch.

    ``train`` / ``val`` / ``test``: a dataset of ``(image, label)``, a DataLoader, a
    :class:`~tl_course.features.FeatureSet` or a ``(features, labels)`` pair of tensors; labels are class
    indices, one per example. Without ``optimizer``, :func:`~tl_course.freezing.build_optimizer`: AdamW over
    the *trainable* parameters only, the last stage at ``lr`` and pretrained stages at
    ``lr * options.pretrained_lr_factor``, no weight decay on biases and norm weights; the cosine
    ``options.schedule`` anneals to zero, stepped only after optimizer steps that really happened (on CUDA
    the loss scaler skips steps with overflowing gradients). On CUDA: mixed precision (``options.amp``),
    pinned memory and non-blocking copies. ``test`` is evaluated once, at the end, on the selected weights
    (``history.test``). The rarely changed knobs live in ``options`` (:class:`TrainOptions`).

    ``options.seed`` (default 0) makes a run repeat exactly (shuffling, dropout, random augmentation): fit
    seeds a private copy of the random number generators and restores the caller's afterwards, so the code
    after ``fit`` draws the same random numbers as if fit had not run. ``seed=None`` uses (and advances) the
    caller's.

    Stopping: Ctrl-C (``KeyboardInterrupt``), or a loss that is NaN / infinite (``FloatingPointError``),
    ends training; the model is left holding the best validation epoch's weights (as promised), and the
    record so far is kept, in ``history`` if you passed one and as ``error.history`` on the re-raised error.
    Bad arguments are a ``ValueError`` that says which, raised *before the first optimizer step*: an empty
    set, a DataLoader that yields no batch (``drop_last=True`` with fewer examples than ``batch_size``;
    named: train, val or test), ``epochs < 0``, ``batch_size < 1``, features and labels of different lengths,
    NaN features, labels that are not one class index per example (one-hot rows, fractions), labels outside
    ``0..K-1``. An iterable data set that turns out to yield nothing is refused after an epoch without steps.

    >>> import torch
    >>> from torch import nn
    >>> x = torch.randn(30, 4); y = (x[:, 0] > 0).long()
    >>> head = nn.Linear(4, 2)
    >>> history = fit(head, (x[:20], y[:20]), (x[20:], y[20:]), test=(x, y), epochs=5, lr=0.1, progress=False,
    ...               options=TrainOptions(seed=3, schedule=None))
    >>> len(history.epochs), 1 <= history.best_epoch <= 5, history.test.confusion.shape
    (5, True, torch.Size([2, 2]))
    >>> h = History(); _ = fit(head, (x, y), epochs=1, history=h, progress=False)   # h survives a Ctrl-C
    """
    options = options if options is not None else TrainOptions()
    if not isinstance(options, TrainOptions):
        raise ValueError(f"options must be a TrainOptions, got {type(options).__name__}.")
    _validate(train, val, test, epochs, batch_size)
    device = get_device(device)
    if options.seed is None:
        return _fit(model, train, val, test, epochs, lr, optimizer, batch_size, device, options, progress, history)
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            seed_everything(options.seed)
            return _fit(model, train, val, test, epochs, lr, optimizer, batch_size, device, options, progress,
                        history)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _fit(model, train, val, test, epochs, lr, optimizer, batch_size, device, options: TrainOptions, progress,
         history) -> History:
    model.to(device)
    seed, num_workers, amp = options.seed, options.num_workers, options.amp
    generator = torch.Generator().manual_seed(
        seed if seed is not None else int(torch.randint(0, 2**62, (1,))))  # not torch.seed(): that re-seeds
    train_batches = _Batches(train, batch_size, True, device, num_workers, generator, "training")
    val_batches = (_Batches(val, max(batch_size, 64), False, device, num_workers, None, "validation")
                   if val is not None else None)
    if optimizer is None:
        optimizer = build_optimizer(model, lr, options.weight_decay, options.pretrained_lr_factor)
    scheduler = None
    if options.schedule == "cosine":
        steps = _batches_of(train_batches.loader) if train_batches.loader is not None else len(train_batches)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * (steps or 1)))
    # fp16 autocast needs loss scaling against gradient underflow; CPU runs in fp32.
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=options.label_smoothing)
    # validation / test labels held in memory are checked against the model's outputs before the first step
    held_out = [(where, _tensor_pair(data, where)[1]) for where, data in (("validation", val), ("test", test))
                if data is not None and _is_tensor_pair(data)]

    history = history if history is not None else History()
    history.epochs.clear()
    history.best_epoch, history.test = None, None
    best_key, best_state = None, None
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), disable=not progress, desc="epochs", unit="epoch")
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for x, y in train_batches:
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, use_amp):
                    logits = model(x)
                    if epoch == 1:  # before any step on bad labels; held-out ones before the first step
                        for where, labels in (("training", y), *(held_out if not seen else ())):
                            _check_labels(labels, logits.shape[1], where)
                    loss = loss_fn(logits.float(), y)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):  # checked before the step: the weights stay finite
                    raise FloatingPointError(
                        f"The training loss became {loss_value} in epoch {epoch}: check the inputs for NaN or "
                        "infinite values, or lower the learning rate.")
                scale = scaler.get_scale()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                # The scaler skips the optimizer step when gradients overflow (and lowers its scale): the
                # schedule must count only the steps that happened.
                if scheduler is not None and not scaler.get_scale() < scale:
                    scheduler.step()
                total_loss += loss_value * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += len(y)
            if seen == 0:  # an iterable data set whose length was unknown: no step was taken, nothing changed
                raise ValueError("The train data yielded no batch: fit needs at least one batch per epoch.")
            record = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                      "val_loss": None, "val_acc": None}
            if val_batches is not None:
                logits, labels = _run_eval(model, val_batches, device, amp)
                _check_labels(labels, logits.shape[1], "validation")
                record["val_loss"] = float(loss_fn(logits, labels))
                record["val_acc"] = float((logits.argmax(1) == labels).float().mean())
                key = (record["val_acc"], -record["val_loss"])
                if best_key is None or key > best_key:
                    best_key, history.best_epoch = key, epoch
                    best_state = snapshot(model)
            record["seconds"] = time.perf_counter() - t0
            history.epochs.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                            val_acc="-" if record["val_acc"] is None else f"{record['val_acc']:.3f}")
    except (KeyboardInterrupt, FloatingPointError) as err:
        bar.close()
        # Keep the promise of the docstring: the model holds the best validation epoch's weights, and the
        # record so far is not lost.
        if best_state is not None:
            model.load_state_dict(best_state)
        history.seconds = time.perf_counter() - start
        err.history = history
        kept = (f"the model holds the weights of the best epoch {history.best_epoch}" if best_state is not None
                else "no validation epoch finished, so the model holds the last weights")
        err.add_note(f"fit stopped after {len(history.epochs)} complete epoch(s); {kept}; the record so far is "
                     "error.history (or the History you passed as history=).")
        raise
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        history.best_epoch = epochs if epochs else None
    history.seconds = time.perf_counter() - start
    if test is not None:
        history.test = evaluate(model, test, device=device, amp=amp)
    return history
