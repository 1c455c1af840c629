"""One training loop for every case in the course: a softmax on cached features, the top stages on
cached activations, or the whole network on images.

Model selection happens on the validation set; the test set, if given, is evaluated once at the end.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .freezing import build_optimizer
from .checks import snapshot
from .profiles import autocast, get_device

__all__ = ["History", "Evaluation", "seed_everything", "fit", "evaluate", "predict"]


@dataclass
class Evaluation:
    """What :func:`evaluate` returns."""

    accuracy: float
    loss: float
    per_class_accuracy: list[float]  #: recall of each class (NaN for a class with no examples)
    confusion: torch.Tensor  #: (K, K) counts, rows = true class, columns = predicted class
    predictions: torch.Tensor  #: (N,) predicted class indices
    labels: torch.Tensor  #: (N,) true class indices


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
    """Seed Python, NumPy and PyTorch so that a run on the CPU repeats exactly.

    >>> seed_everything(0)
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _is_tensor_pair(data) -> bool:
    return (hasattr(data, "features") and hasattr(data, "labels")) or (
        isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data))


def _tensor_pair(data) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "features"):
        return data.features.float(), torch.as_tensor(data.labels).long()
    return data[0].float(), data[1].long()


class _Batches:
    """Mini-batches from either in-memory tensors (cached features: indexed directly, no DataLoader
    overhead, so an epoch costs microseconds) or a dataset of images (DataLoader)."""

    def __init__(self, data, batch_size: int, shuffle: bool, device: torch.device, num_workers: int,
                 generator: torch.Generator | None):
        self.device, self.shuffle, self.batch_size, self.generator = device, shuffle, batch_size, generator
        if _is_tensor_pair(data):
            x, y = _tensor_pair(data)
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
                yield x.to(self.device, non_blocking=True), torch.as_tensor(y).to(self.device, non_blocking=True)
            return
        x, y = self.tensors
        n = len(y)
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else torch.arange(
            n, device=self.device)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield x[idx], y[idx]


def _run_eval(model: nn.Module, batches: _Batches, device: torch.device, amp: bool):
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
        raise ValueError("There is nothing to evaluate: the data set is empty.")
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

    >>> logits = predict(model, ImageDataset(splits.test, preprocess))
    """
    device = get_device(device)
    model.to(device)
    logits, _ = _run_eval(model, _Batches(data, batch_size, False, device, 0, None), device, amp)
    return logits.cpu()


def evaluate(model: nn.Module, data, device: str | torch.device | None = None, batch_size: int = 64,
             num_classes: int | None = None, amp: bool = True) -> Evaluation:
    """Accuracy, loss, per-class accuracy and confusion matrix of ``model`` on ``data``.

    >>> result = evaluate(model, test_features)
    >>> result.accuracy, result.confusion
    """
    device = get_device(device)
    model.to(device)
    logits, labels = _run_eval(model, _Batches(data, batch_size, False, device, 0, None), device, amp)
    logits, labels = logits.cpu(), labels.cpu()
    k = num_classes or logits.shape[1]
    _check_labels(labels, min(k, logits.shape[1]), "evaluation")
    pred = logits.argmax(1)
    confusion = torch.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    support = confusion.sum(1)
    per_class = [float(confusion[i, i] / support[i]) if support[i] else float("nan") for i in range(k)]
    return Evaluation(
        accuracy=float((pred == labels).float().mean()) if len(labels) else float("nan"),
        loss=float(nn.functional.cross_entropy(logits, labels)) if len(labels) else float("nan"),
        per_class_accuracy=per_class, confusion=confusion, predictions=pred, labels=labels)


def _length(data) -> int | None:
    if _is_tensor_pair(data):
        return len(_tensor_pair(data)[1])
    try:
        return len(data.dataset) if isinstance(data, DataLoader) else len(data)
    except TypeError:  # an iterable dataset: its length is unknown
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
        if _is_tensor_pair(data):
            x, y = _tensor_pair(data)
            if len(x) != len(y):
                raise ValueError(f"The {name} set has {len(x)} feature rows but {len(y)} labels: features and "
                                 "labels must pair up one to one.")
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise ValueError(f"The {name} features hold {bad} NaN or infinite values: recompute them "
                                 "(a damaged cache or a broken image) before training on them.")


def fit(model: nn.Module, train, val=None, *, test=None, epochs: int = 10, lr: float = 1e-3,
        optimizer: torch.optim.Optimizer | None = None, weight_decay: float = 1e-4,
        pretrained_lr_factor: float = 0.1, schedule: str | None = "cosine", batch_size: int = 32,
        device: str | torch.device | None = None, amp: bool = True, num_workers: int = 0, seed: int | None = 0,
        progress: bool = True, label_smoothing: float = 0.0, history: History | None = None) -> History:
    """Train ``model`` on ``train`` and keep the weights of the best validation epoch.

    ``train`` / ``val`` / ``test``: a dataset of ``(image, label)``, a DataLoader, a
    :class:`~tl_course.features.FeatureSet` or a ``(features, labels)`` pair of tensors.
    Without ``optimizer``, :func:`~tl_course.freezing.build_optimizer`: AdamW over the *trainable*
    parameters only, the last stage at ``lr`` and pretrained stages at ``lr * pretrained_lr_factor``, no
    weight decay on biases and norm weights; ``schedule="cosine"`` anneals to zero, stepped only after
    optimizer steps that really happened (on CUDA the loss scaler skips steps with overflowing gradients).
    On CUDA: mixed precision (``amp``), pinned memory and non-blocking copies. ``test`` is evaluated once,
    at the end, on the selected weights (``history.test``).

    ``seed`` makes a run repeat exactly (shuffling, dropout, random augmentation): fit seeds a private copy
    of the random number generators and restores the caller's afterwards, so the code after ``fit`` draws
    the same random numbers as if fit had not run. ``seed=None`` uses (and advances) the caller's.

    Stopping: Ctrl-C (``KeyboardInterrupt``), or a loss that is NaN / infinite (``FloatingPointError``),
    ends training; the model is left holding the best validation epoch's weights (as promised), and the
    record so far is kept, in ``history`` if you passed one and as ``error.history`` on the re-raised error.
    Bad arguments (an empty set, ``epochs < 0``, ``batch_size < 1``, features and labels of different
    lengths, NaN features, labels outside ``0..K-1``) are a ``ValueError`` that says which.

    >>> history = fit(head, train_features, val_features, epochs=50, lr=1e-2, progress=False)
    >>> history.best_epoch, history.test
    >>> h = History(); fit(head, train_features, val_features, history=h)   # h survives a Ctrl-C
    """
    _validate(train, val, test, epochs, batch_size)
    device = get_device(device)
    if seed is None:
        return _fit(model, train, val, test, epochs, lr, optimizer, weight_decay, pretrained_lr_factor, schedule,
                    batch_size, device, amp, num_workers, None, progress, label_smoothing, history)
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            seed_everything(seed)
            return _fit(model, train, val, test, epochs, lr, optimizer, weight_decay, pretrained_lr_factor,
                        schedule, batch_size, device, amp, num_workers, seed, progress, label_smoothing, history)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _fit(model, train, val, test, epochs, lr, optimizer, weight_decay, pretrained_lr_factor, schedule, batch_size,
         device, amp, num_workers, seed, progress, label_smoothing, history) -> History:
    model.to(device)
    generator = torch.Generator().manual_seed(
        seed if seed is not None else int(torch.randint(0, 2**62, (1,))))  # not torch.seed(): that re-seeds
    train_batches = _Batches(train, batch_size, True, device, num_workers, generator)
    val_batches = _Batches(val, max(batch_size, 64), False, device, num_workers, None) if val is not None else None
    if optimizer is None:
        optimizer = build_optimizer(model, lr, weight_decay, pretrained_lr_factor)
    scheduler = None
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(train_batches)))
    elif schedule is not None:
        raise ValueError(f"Unknown schedule {schedule!r}: use 'cosine' or None.")
    # fp16 autocast needs loss scaling against gradient underflow; CPU runs in fp32.
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

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
                    if epoch == 1:
                        _check_labels(y, logits.shape[1], "training")
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
