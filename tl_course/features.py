"""The lecture's speed trick: the frozen part of the network is a fixed function, so compute its
activations for every image once, save them to disk, and train the top of the network on them.

Generalised to any stage boundary (the *cut*): ``stages(model)[:cut]`` is the frozen bottom whose
activations are cached, ``stages(model)[cut:]`` is the top that trains on them. ``cut = len(stages) - 1``
(the default) caches the pooled features just before the softmax.

The cache key covers everything a cached FeatureSet depends on: the model class and the bottom's weights
and BatchNorm statistics, the cut, the stored dtype (``fp16``) and the arithmetic (fp16 autocast on CUDA,
fp32 elsewhere), a *declared* identity of the preprocessing (see :func:`preprocess_identity`), the exact
file list with each file's size and modification time (what ``make`` and ``rsync`` trust), and the labels
and class names. Change any of them and the key changes. When only the labels or class names changed, the
activations of an earlier file are reused (checked) instead of recomputed.

Files are written atomically (temp file + rename, readable by others as the umask allows, so a class or
a JupyterHub can share one cache folder), loaded without pickle (``torch.load(weights_only=True)``) and
integrity-checked on load: a SHA-256 digest of the stored tensors and names is kept beside them, and a
file whose contents do not match it is reported in one warning and recomputed, never used.

Housekeeping: temp files left by a killed writer are removed once they are an hour old; after each write
the folder is pruned to ``$TL_COURSE_CACHE_MAX_GB`` (default 5) GB, least recently used first (a cache
hit counts as a use). :func:`prune_cache` and :func:`clear_cache` do the same by hand. A cache folder
that cannot be written (read-only, or a file) costs the reuse only: the features are still returned,
with one warning.
"""
from __future__ import annotations

import enum
import hashlib
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .freezing import StagedModel, stages
from .paths import cache_dir, cache_max_bytes
from .profiles import autocast, get_device

__all__ = [
    "FeatureSet",
    "bottom_stages",
    "top_stages",
    "extract_features",
    "cached_features",
    "warm_features",
    "features_fingerprint",
    "preprocess_identity",
    "save_features",
    "load_features",
    "cache_dir",
    "prune_cache",
    "clear_cache",
]

_FORMAT = "tl_course.features/2"  # bump when the key or the payload changes: old files are never hit
_STALE_TEMP_SECONDS = 3600  # a writer that has not written for an hour is dead (temp files grow as they write)


@dataclass
class FeatureSet:
    """Cached activations at a cut: ``features[i]`` belongs to ``files[i]`` with class ``labels[i]``."""

    features: torch.Tensor  #: (N, ...) on the CPU
    labels: torch.Tensor  #: (N,) int64
    files: list[str]
    cut: int
    fingerprint: str
    classes: tuple[str, ...] = ()  #: class names, ``classes[labels[i]]`` (empty when unknown)

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

    >>> preprocess_identity(load_pretrained().preprocess)[:45]
    'torchvision.transforms._presets.ImageClassifi'
    >>> preprocess_identity(my_resize, preprocess_id="my_resize v1")
    'id:my_resize v1|...'
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


def _activations_key(model: nn.Module, files: Iterable[str | Path], preprocess: Callable, cut: int | None,
                     fp16: bool, preprocess_id: str | None, device) -> str:
    """A digest of what the activations depend on (not the labels)."""
    all_stages, cut = _resolve_cut(model, cut)
    h = hashlib.sha256()
    h.update(f"{_FORMAT}|{type(model).__module__}.{type(model).__name__}|cut={cut}|fp16={fp16}|"
             f"{_compute_identity(get_device(device))}|".encode())
    for stage in all_stages[:cut]:
        for name, tensor in stage.state_dict().items():
            h.update(name.encode())
            _tensor_digest(h, tensor)
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
    """A hex digest that changes whenever the cached FeatureSet would: model class, the bottom's
    weights and BatchNorm statistics, the cut, fp16 storage and the arithmetic of ``device``, the declared
    preprocessing identity (:func:`preprocess_identity`), the exact file list (path, size, modification
    time), and the labels and class names.

    >>> features_fingerprint(model, samples.files, preprocess, labels=samples.labels, classes=samples.classes)[:12]
    '3f1c9a...'
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
    there (never split across devices).

    >>> features, labels = extract_features(model, ImageDataset(splits.train, preprocess))
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


def _payload_digest(features: torch.Tensor, labels: torch.Tensor, files: list[str], cut: int,
                    fingerprint: str, classes) -> str:
    h = hashlib.sha256()
    _tensor_digest(h, features)
    _tensor_digest(h, labels)
    for f in files:
        h.update(f.encode("utf-8", "surrogatepass") + b"\0")
    h.update(f"|{cut}|{fingerprint}|{list(classes)}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_features(fs: FeatureSet, path: str | Path, *, activations: str | None = None) -> Path:
    """Write ``fs`` atomically: a temp file in the same folder, then a rename. An interrupted write
    leaves no file at ``path`` (and removes its temp file). A SHA-256 digest of the contents is stored
    with them and checked by :func:`load_features`. The file is readable by group and others as the umask
    allows (0644 under the usual umask 022), like any file you create.

    >>> save_features(fs, "train.pt")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a shared cache must be readable by others
        files = [str(f) for f in fs.files]
        payload = {"format": _FORMAT, "features": fs.features, "labels": fs.labels, "files": files, "cut": fs.cut,
                   "fingerprint": fs.fingerprint, "classes": list(fs.classes), "activations": activations or "",
                   "digest": _payload_digest(fs.features, fs.labels, files, fs.cut, fs.fingerprint, fs.classes)}
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _load(path: str | Path) -> tuple[FeatureSet, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    fs = FeatureSet(payload["features"], payload["labels"], list(payload["files"]), int(payload["cut"]),
                    str(payload["fingerprint"]), tuple(payload.get("classes", ())))
    if len(fs.features) != len(fs.labels) or len(fs.labels) != len(fs.files):
        raise ValueError("features, labels and files have different lengths")
    if "digest" in payload:  # files of tl_course <= 0.1.0 have none (and are never cache hits)
        if _payload_digest(fs.features, fs.labels, fs.files, fs.cut, fs.fingerprint, fs.classes) != payload["digest"]:
            raise ValueError("its contents do not match the digest stored with them (the file is damaged)")
    return fs, payload


def load_features(path: str | Path) -> FeatureSet:
    """Read a cache written by :func:`save_features` (no pickle: ``weights_only=True``) and check its
    digest: a damaged file raises ``ValueError`` instead of returning wrong numbers.

    >>> fs = load_features("train.pt")
    """
    return _load(path)[0]


def prune_cache(max_bytes: int | None = None, directory: str | Path | None = None,
                keep: Iterable[str | Path] = ()) -> list[Path]:
    """Delete cached feature files, least recently used first, until the folder holds at most ``max_bytes``
    (default ``$TL_COURSE_CACHE_MAX_GB``, 5 GB; ``<= 0`` in the variable means no cap). Files in ``keep``
    stay. Also removes temp files of writers dead for an hour. Returns the deleted files.

    >>> prune_cache(max_bytes=2 * 10**9)          # keep at most 2 GB of cached features
    """
    directory = Path(directory or cache_dir())
    if max_bytes is None:
        max_bytes = cache_max_bytes()
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:  # temp files of killed writers (a live writer keeps its temp file's mtime fresh)
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            try:
                if now - p.stat().st_mtime > _STALE_TEMP_SECONDS:
                    p.unlink()
                    removed.append(p)
            except OSError:
                pass
    if max_bytes is None:
        return removed
    keep = {Path(k).resolve() for k in keep}
    files = []
    for p in entries:
        if p.suffix == ".pt" and not p.name.startswith(".") and p.is_file():
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in files)
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= max_bytes:
            break
        if p.resolve() in keep:
            continue
        try:
            p.unlink()
        except OSError:
            continue
        total -= size
        removed.append(p)
    return removed


def clear_cache(directory: str | Path | None = None) -> list[Path]:
    """Delete every cached feature file in ``directory`` (default :func:`cache_dir`).

    >>> clear_cache()
    """
    return prune_cache(max_bytes=0, directory=directory)


def _cache_name(model: nn.Module, cut: int, activations: str, fingerprint: str, pooled: bool = False) -> str:
    # The activations key in the name finds a file to reuse when only labels / class names changed; the
    # fingerprint is the file's identity (the book finds a file by fingerprint[:24]).
    kind = "pooled-cut" if pooled else "cut"
    return f"{type(model).__name__}-{kind}{cut}-{activations[:8]}-{fingerprint[:24]}.pt"


@dataclass
class _Entry:
    """Where the activations of ``samples`` at one cut live in the cache, and what they must match."""

    cut: int
    pooled: bool
    files: list[str]
    labels: torch.Tensor
    classes: tuple
    activations: str
    fingerprint: str
    path: Path

    def result(self, features: torch.Tensor) -> FeatureSet:
        return FeatureSet(features.float(), self.labels.clone(), list(self.files), self.cut, self.fingerprint,
                          self.classes)


def _entry(model: nn.Module, samples, preprocess: Callable, cut: int | None, fp16: bool, device,
           preprocess_id: str | None, directory, pooled: bool) -> _Entry:
    _, cut = _resolve_cut(model, cut)
    files = [str(f) for f in samples.files]
    labels = [int(y) for y in samples.labels]
    classes = tuple(getattr(samples, "classes", ()) or ())
    activations = _activations_key(model, samples.files, preprocess, cut, fp16, preprocess_id, device)
    if pooled:  # spatially averaged maps are other numbers: another key, another file
        activations = hashlib.sha256(f"{activations}|pooled".encode()).hexdigest()
    fingerprint = _with_labels(activations, labels, classes)
    path = Path(directory or cache_dir()) / _cache_name(model, cut, activations, fingerprint, pooled)
    return _Entry(cut, pooled, files, torch.tensor(labels, dtype=torch.long), classes, activations, fingerprint,
                  path)


def _usable(entry: _Entry, candidate: Path, check_fingerprint: bool) -> torch.Tensor | None:
    try:
        fs, payload = _load(candidate)
        if (payload.get("format") != _FORMAT or payload.get("activations") != entry.activations
                or fs.files != entry.files):
            raise ValueError("its key does not match")
        if check_fingerprint and fs.fingerprint != entry.fingerprint:
            raise ValueError("fingerprint does not match")
    except Exception as err:  # noqa: BLE001 - any unreadable or damaged cache is recomputed, never trusted
        warnings.warn(f"Ignoring unreadable feature cache {candidate} ({err}); recomputing it.", stacklevel=4)
        return None
    try:
        os.utime(candidate)  # a use, for least-recently-used pruning
    except OSError:
        pass
    return fs.features


def _lookup(model: nn.Module, entry: _Entry) -> torch.Tensor | None:
    """The cached activations of ``entry``, or None (then they must be computed)."""
    try:
        exists = entry.path.is_file()
    except OSError:
        exists = False
    if exists:
        return _usable(entry, entry.path, check_fingerprint=True)
    # Same files, model, cut and preprocessing, other labels or class names: reuse those activations.
    kind = "pooled-cut" if entry.pooled else "cut"
    try:
        siblings = sorted(entry.path.parent.glob(f"{type(model).__name__}-{kind}{entry.cut}-{entry.activations[:8]}-*.pt"))
    except OSError:
        siblings = []
    for sibling in siblings:
        features = _usable(entry, sibling, check_fingerprint=False)
        if features is not None:
            _store(FeatureSet(features, entry.labels, entry.files, entry.cut, entry.fingerprint, entry.classes),
                   entry.path, entry.activations, entry.path.parent)
            return features
    return None


def cached_features(model: nn.Module, samples, preprocess: Callable, cut: int | None = None,
                    fp16: bool = False, device: str | torch.device | None = None, batch_size: int = 32,
                    num_workers: int = 0, directory: str | Path | None = None,
                    progress: bool = True, preprocess_id: str | None = None, pooled: bool = False) -> FeatureSet:
    """Activations at ``cut`` for ``samples`` (a :class:`tl_course.data.Samples`), computed once and then
    read back from ``directory`` (default :func:`cache_dir`). Labels and class names are always those of
    ``samples``.

    ``preprocess`` must be deterministic (augmentation would make the "fixed function" random, and is
    refused). torchvision and timm transforms are recognised by their parameters; a plain function or a
    ``v2.Lambda`` needs ``preprocess_id="<a name you change when the code changes>"``. See the module
    docstring for the cache key, the integrity check and the housekeeping.

    A cache that cannot be read or fails its integrity check is reported in one warning and recomputed.
    A folder that cannot be written is reported in one warning; the features are returned all the same.
    ``fp16=True`` halves the file size. ``pooled=True`` stores the maps averaged over space, ``(N, channels)``:
    what a linear probe at an early cut trains on. :func:`warm_features` fills several cuts in one pass.

    >>> train = cached_features(model, splits.train, preprocess)   # slow the first time, instant after
    >>> train = cached_features(model, splits.train, my_fn, preprocess_id="my_fn v2")
    >>> probe = cached_features(model, splits.train, preprocess, cut=4, pooled=True)
    """
    entry = _entry(model, samples, preprocess, cut, fp16, device, preprocess_id, directory, pooled)
    features = _lookup(model, entry)
    if features is not None:
        return entry.result(features)
    if pooled:
        warm_features(model, samples, preprocess, pooled_cuts=[entry.cut], fp16=fp16, device=device,
                      batch_size=batch_size, num_workers=num_workers, directory=directory,
                      preprocess_id=preprocess_id)
        features = _lookup(model, entry)
        if features is not None:
            return entry.result(features)
        raise RuntimeError(f"The pooled activations at cut {entry.cut} could not be cached in {entry.path.parent}.")
    from .data import ImageDataset  # local import: data imports nothing from here

    features, _ = extract_features(model, ImageDataset(samples, preprocess), cut=entry.cut, device=device,
                                   batch_size=batch_size, num_workers=num_workers, progress=progress)
    _store(FeatureSet(features.half() if fp16 else features, entry.labels, entry.files, entry.cut,
                      entry.fingerprint, entry.classes), entry.path, entry.activations, entry.path.parent)
    return entry.result(features)


def warm_features(model: nn.Module, samples, preprocess: Callable, cuts: Iterable[int] = (),
                  pooled_cuts: Iterable[int] = (), fp16: bool = False, device: str | torch.device | None = None,
                  batch_size: int = 64, num_workers: int = 0, directory: str | Path | None = None,
                  preprocess_id: str | None = None) -> float:
    """Cache the activations of ``samples`` at every cut in ``cuts`` (full maps) and ``pooled_cuts``
    (averaged over space) in ONE forward pass, in exactly the files :func:`cached_features` reads. Returns the
    seconds the pass took (0.0 when everything was already on disk). Eval mode, no gradients; the model's
    train/eval flags are restored.

    >>> seconds = warm_features(model, splits.train, preprocess, cuts=[9, 8, 7], pooled_cuts=range(1, 10))
    """
    from .data import ImageDataset

    all_stages = stages(model)
    wanted = [(c, False) for c in cuts] + [(c, True) for c in pooled_cuts]
    for c, _ in wanted:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c < len(all_stages):
            raise ValueError(f"cut must be between 1 and {len(all_stages) - 1} for this model, got {c!r}.")
    missing = {}
    for c, pooled in dict.fromkeys(wanted):
        entry = _entry(model, samples, preprocess, c, fp16, device, preprocess_id, directory, pooled)
        if _lookup(model, entry) is None:
            missing[c, pooled] = entry
    if not missing:
        return 0.0
    start = time.perf_counter()
    device = get_device(device)
    deepest = max(c for c, _ in missing)
    modes = {m: m.training for m in model.modules()}
    model.to(device).eval()  # the whole model (never split across devices); BatchNorm on running statistics
    chunks: dict[tuple[int, bool], list[torch.Tensor]] = {key: [] for key in missing}
    loader = _as_loader(ImageDataset(samples, preprocess), batch_size, device, num_workers)
    try:
        with torch.inference_mode(), autocast(device):
            for images, _ in loader:
                x = images.to(device, non_blocking=True)
                for c in range(1, deepest + 1):
                    x = all_stages[c - 1](x)
                    if (c, False) in chunks:
                        chunks[c, False].append(x.float().cpu())
                    if (c, True) in chunks:
                        chunks[c, True].append((x.mean(dim=(2, 3)) if x.dim() == 4 else x).float().cpu())
    finally:
        for m, mode in modes.items():
            m.training = mode
    for key, entry in missing.items():
        if not chunks[key]:
            raise ValueError("warm_features got no images.")
        features = torch.cat(chunks[key])
        _store(FeatureSet(features.half() if fp16 else features, entry.labels, entry.files, entry.cut,
                          entry.fingerprint, entry.classes), entry.path, entry.activations, entry.path.parent)
    return time.perf_counter() - start


def _store(fs: FeatureSet, path: Path, activations: str, folder: Path) -> None:
    """Save, then prune; a folder that cannot be written loses the reuse, never the features."""
    try:
        save_features(fs, path, activations=activations)
    except OSError as err:
        warnings.warn(f"Could not save the features in the cache folder {folder} ({err.strerror or err}): they are "
                      "returned but will be computed again next time; set TL_COURSE_CACHE to a folder you can "
                      "write to.", stacklevel=3)
        return
    prune_cache(directory=folder, keep=[path])
