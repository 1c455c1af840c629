"""The lecture's speed trick: the frozen part of the network is a fixed function, so compute its
activations for every image once, save them to disk, and train the top of the network on them.

Generalised to any stage boundary (the *cut*): ``stages(model)[:cut]`` is the frozen bottom whose
activations are cached, ``stages(model)[cut:]`` is the top that trains on them. ``cut = len(stages) - 1``
(the default) caches the pooled features just before the softmax.

Cache files are keyed by a fingerprint of the model class, the bottom's weights and buffers, the cut,
the preprocessing and the exact file list (path, size, modification time): change any of them and
the cache is recomputed. Files are written atomically (temp file + rename) and loaded without
pickle (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .freezing import StagedModel, stages
from .profiles import autocast, get_device

__all__ = [
    "FeatureSet",
    "bottom_stages",
    "top_stages",
    "extract_features",
    "cached_features",
    "features_fingerprint",
    "save_features",
    "load_features",
    "cache_dir",
]


@dataclass
class FeatureSet:
    """Cached activations at a cut: ``features[i]`` belongs to ``files[i]`` with class ``labels[i]``."""

    features: torch.Tensor  #: (N, ...) on the CPU
    labels: torch.Tensor  #: (N,) int64
    files: list[str]
    cut: int
    fingerprint: str

    def __len__(self) -> int:
        return len(self.labels)


def cache_dir() -> Path:
    """Where feature caches live: ``$TL_COURSE_CACHE`` or ``~/.cache/tl_course/features``.

    >>> cache_dir().name
    'features'
    """
    root = os.environ.get("TL_COURSE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "tl_course" / "features"


def _resolve_cut(model: nn.Module, cut: int | None) -> tuple[list[nn.Module], int]:
    all_stages = stages(model)
    cut = len(all_stages) - 1 if cut is None else cut
    if not 1 <= cut < len(all_stages):
        raise ValueError(f"cut must be between 1 and {len(all_stages) - 1} for this model, got {cut}.")
    return all_stages, cut


def bottom_stages(model: nn.Module, cut: int | None = None) -> StagedModel:
    """The frozen bottom ``stages(model)[:cut]`` as one module (shares the model's parameters).

    >>> bottom = bottom_stages(model)          # everything but the softmax layer
    """
    all_stages, cut = _resolve_cut(model, cut)
    return StagedModel(*all_stages[:cut])


def top_stages(model: nn.Module, cut: int | None = None) -> StagedModel:
    """The trainable top ``stages(model)[cut:]``: it maps cached activations at ``cut`` to logits.

    >>> logits = top_stages(model, cut)(features)   # equals model(images) for a frozen bottom
    """
    all_stages, cut = _resolve_cut(model, cut)
    return StagedModel(*all_stages[cut:])


def _tensor_digest(h: "hashlib._Hash", tensor: torch.Tensor) -> None:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    h.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
    h.update(t.view(torch.uint8).numpy().tobytes())


def features_fingerprint(model: nn.Module, files: Iterable[str | Path], preprocess: Callable,
                         cut: int | None = None, fp16: bool = False) -> str:
    """A hex digest that changes whenever the cached activations would: model class, the bottom's
    weights and BatchNorm statistics, the cut, the preprocessing and the exact file list.

    >>> features_fingerprint(model, samples.files, preprocess)[:12]
    '3f1c9a...'
    """
    all_stages, cut = _resolve_cut(model, cut)
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__name__}|cut={cut}|fp16={fp16}|".encode())
    for stage in all_stages[:cut]:
        for name, tensor in stage.state_dict().items():
            h.update(name.encode())
            _tensor_digest(h, tensor)
    h.update(repr(preprocess).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


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

    The model's train/eval flags are restored afterwards; the model stays on ``device``.

    >>> features, labels = extract_features(model, ImageDataset(splits.train, preprocess))
    """
    device = get_device(device)
    bottom = bottom_stages(model, cut)
    modes = {m: m.training for m in bottom.modules()}
    bottom.to(device).eval()  # eval: BatchNorm uses its running statistics, dropout is off
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


def save_features(fs: FeatureSet, path: str | Path) -> Path:
    """Write ``fs`` atomically: a temp file in the same folder, then a rename. An interrupted write
    leaves no file at ``path`` (and removes its temp file).

    >>> save_features(fs, "train.pt")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        payload = {"features": fs.features, "labels": fs.labels, "files": list(fs.files), "cut": fs.cut,
                   "fingerprint": fs.fingerprint}
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_features(path: str | Path) -> FeatureSet:
    """Read a cache written by :func:`save_features` (no pickle: ``weights_only=True``).

    >>> fs = load_features("train.pt")
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    fs = FeatureSet(payload["features"], payload["labels"], list(payload["files"]), int(payload["cut"]),
                    str(payload["fingerprint"]))
    if len(fs.features) != len(fs.labels) or len(fs.labels) != len(fs.files):
        raise ValueError("features, labels and files have different lengths")
    return fs


def cached_features(model: nn.Module, samples, preprocess: Callable, cut: int | None = None,
                    fp16: bool = False, device: str | torch.device | None = None, batch_size: int = 32,
                    num_workers: int = 0, directory: str | Path | None = None,
                    progress: bool = True) -> FeatureSet:
    """Activations at ``cut`` for ``samples`` (a :class:`tl_course.data.Samples`), computed once and then
    read back from ``directory`` (default :func:`cache_dir`). ``preprocess`` must be the deterministic
    eval transform: augmentation would make the "fixed function" random.

    A cache that cannot be read (half-written by an older version, damaged) is reported in one warning
    and recomputed. ``fp16=True`` halves the file size.

    >>> train = cached_features(model, splits.train, preprocess)   # slow the first time, instant after
    """
    from .data import ImageDataset  # local import: data imports nothing from here

    all_stages, cut = _resolve_cut(model, cut)
    fingerprint = features_fingerprint(model, samples.files, preprocess, cut, fp16)
    path = Path(directory or cache_dir()) / f"{type(model).__name__}-cut{cut}-{fingerprint[:24]}.pt"
    if path.exists():
        try:
            fs = load_features(path)
            if fs.fingerprint != fingerprint:
                raise ValueError("fingerprint does not match")
            fs.features = fs.features.float()
            return fs
        except Exception as err:  # noqa: BLE001 - any unreadable cache is recomputed, never trusted
            warnings.warn(f"Ignoring unreadable feature cache {path} ({err}); recomputing it.", stacklevel=2)
    features, labels = extract_features(model, ImageDataset(samples, preprocess), cut=cut, device=device,
                                        batch_size=batch_size, num_workers=num_workers, progress=progress)
    stored = FeatureSet(features.half() if fp16 else features, labels, [str(f) for f in samples.files], cut,
                        fingerprint)
    save_features(stored, path)
    return FeatureSet(features, labels, stored.files, cut, fingerprint)
