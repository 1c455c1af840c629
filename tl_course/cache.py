"""The lecture's speed trick, part 2: compute the frozen bottom's activations once, keep them on disk, and
train the top of the network on them (:func:`cached_features`).

A cache file is found by its key, :func:`~tl_course.features.features_fingerprint` (the bottom's
architecture and weights, the cut, the preprocessing, the files, the labels...). When only the labels or
class names changed, the activations of an earlier file are reused (checked) instead of recomputed.

Files are written atomically (temp file + rename, readable by others as the umask allows, so a class or
a JupyterHub can share one cache folder), loaded without pickle (``torch.load(weights_only=True)``) and
integrity-checked on load: a SHA-256 digest of the stored tensors and names is kept beside them, and a
file whose contents do not match it is reported in one warning and recomputed, never used.

**The cache deletes only what it wrote.** Its files have a name of its own
(``<Model>-[pooled-]cut<k>-<8 hex>-<24 hex>.pt``) *and* start with its format header
(``tl_course.features/...``); anything else in the folder (your ``lite0_finetuned_best.pt``, a book page's
results, a hidden file) is never deleted, counted or touched. Housekeeping: the cache's temp files left by
a killed writer are removed once they are an hour old; after each write the cache's files are pruned to
``$TL_COURSE_CACHE_MAX_GB`` (default 5; ``0`` or ``inf``: no cap) GB, least recently used first (a cache
hit counts as a use). That variable is read *before* anything is computed, so a bad value costs nothing.
:func:`prune_cache` and :func:`clear_cache` do the same by hand. A cache folder that cannot be written
(read-only, or a file) costs the reuse only: the features are still returned, with one warning.
``~`` in ``TL_COURSE_CACHE`` or in a ``directory`` argument means the home folder.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from PIL import Image
>>> from torch import nn
>>> from torchvision.transforms import v2
>>> from tl_course.data import Samples
>>> from tl_course.freezing import StagedModel
>>> folder = Path(tempfile.mkdtemp())
>>> for i in range(4):
...     Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
>>> samples = Samples(sorted(folder.glob("*.png")), [0, 1, 0, 1], ("dark", "bright"))
>>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 2))
>>> preprocess = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
>>> train = cached_features(model, samples, preprocess, directory=folder / "cache", device="cpu", progress=False)
>>> train.features.shape, train.labels.tolist()
(torch.Size([4, 4]), [0, 1, 0, 1])
>>> again = cached_features(model, samples, preprocess, directory=folder / "cache", device="cpu", progress=False)
>>> torch.equal(again.features, train.features)         # read back, not recomputed
True
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from . import features as _features  # extract_features is looked up on call (tests count the calls)
from .features import FORMAT, FeatureSet, _activations_key, _resolve_cut, _tensor_digest, _with_labels
from .freezing import stages
from .paths import cache_dir, cache_max_bytes
from .profiles import autocast, get_device

__all__ = [
    "cached_features",
    "warm_features",
    "save_features",
    "load_features",
    "cache_dir",
    "prune_cache",
    "clear_cache",
]

_STALE_TEMP_SECONDS = 3600  # a writer that has not written for an hour is dead (temp files grow as they write)
#: the names the cache gives its files (see _cache_name) and its temp files (mkstemp in save_features)
_NAME = re.compile(r"[^\W\d]\w*-(?:pooled-)?cut\d+-[0-9a-f]{8}-[0-9a-f]{24}\.pt")
_TEMP = re.compile(r"\.(?P<name>.+)\.[\w-]+\.tmp")
_HEADER = FORMAT.split("/")[0].encode() + b"/"  # b"tl_course.features/": every version of the format


# ---------------------------------------------------------------------------------------------
# One file: save, load, integrity
# ---------------------------------------------------------------------------------------------
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
    allows (0644 under the usual umask 022), like any file you create. ``~`` means the home folder.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> fs = FeatureSet(torch.ones(2, 3), torch.tensor([0, 1]), ["a.jpg", "b.jpg"], cut=9, fingerprint="demo")
    >>> path = save_features(fs, Path(tempfile.mkdtemp()) / "train.pt")
    >>> load_features(path).labels.tolist()
    [0, 1]
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a shared cache must be readable by others
        files = [str(f) for f in fs.files]
        # "format" first: the cache recognises its own files by this header (see _written_by_cache)
        payload = {"format": FORMAT, "features": fs.features, "labels": fs.labels, "files": files, "cut": fs.cut,
                   "fingerprint": fs.fingerprint, "classes": list(fs.classes), "activations": activations or "",
                   "digest": _payload_digest(fs.features, fs.labels, files, fs.cut, fs.fingerprint, fs.classes)}
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _load(path: str | Path) -> tuple[FeatureSet, dict]:
    payload = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
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

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> fs = FeatureSet(torch.zeros(1, 2), torch.tensor([1]), ["a.jpg"], cut=3, fingerprint="demo")
    >>> back = load_features(save_features(fs, Path(tempfile.mkdtemp()) / "val.pt"))
    >>> back.files, back.cut, back.features.shape
    (['a.jpg'], 3, torch.Size([1, 2]))
    """
    return _load(path)[0]


# ---------------------------------------------------------------------------------------------
# Housekeeping: only the cache's own files
# ---------------------------------------------------------------------------------------------
def _written_by_cache(path: Path) -> bool:
    """True for a file the cache wrote: its name is one the cache gives (:func:`_cache_name`) and its
    contents start with the cache's format header. Reads a few hundred bytes, never the tensors."""
    if not _NAME.fullmatch(path.name):
        return False
    try:
        with zipfile.ZipFile(path) as archive:  # torch.save writes a zip whose data.pkl holds the dict
            pickle_name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if pickle_name is None:
                return False
            with archive.open(pickle_name) as f:
                return _HEADER in f.read(512)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _stale_temp(path: Path, now: float) -> bool:
    """A temp file of a cache writer (``.<cache file name>.<random>.tmp``) idle for an hour."""
    match = _TEMP.fullmatch(path.name)
    if not match or not _NAME.fullmatch(match["name"]):
        return False
    try:
        return path.is_file() and now - path.stat().st_mtime > _STALE_TEMP_SECONDS
    except OSError:
        return False


def _prune(directory: Path, max_bytes: int | None, keep: Iterable[str | Path] = ()) -> list[Path]:
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:  # temp files of killed writers (a live writer keeps its temp file's mtime fresh)
        if _stale_temp(p, now):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    if max_bytes is None:
        return removed
    keep = {Path(k).resolve() for k in keep}
    files = []
    for p in entries:
        try:
            if not p.is_file() or not _written_by_cache(p):
                continue
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


def _folder(directory: str | Path | None) -> Path:
    return Path(directory).expanduser() if directory else cache_dir()


def prune_cache(max_bytes: int | None = None, directory: str | Path | None = None,
                keep: Iterable[str | Path] = ()) -> list[Path]:
    """Delete the cache's own files, least recently used first, until they take at most ``max_bytes``
    (default ``$TL_COURSE_CACHE_MAX_GB``, 5 GB; ``0`` or ``inf`` in the variable: no cap). Files in ``keep``
    stay, and so does every file the cache did not write (see the module docstring). Also removes the
    cache's temp files of writers dead for an hour. Returns the deleted files.

    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "lite0_finetuned_best.pt").write_bytes(b"a checkpoint of yours")
    >>> prune_cache(max_bytes=0, directory=folder)       # keep at most 0 bytes of cached features
    []
    >>> [p.name for p in folder.iterdir()]                # yours is not the cache's to delete
    ['lite0_finetuned_best.pt']
    """
    return _prune(_folder(directory), cache_max_bytes() if max_bytes is None else max_bytes, keep)


def clear_cache(directory: str | Path | None = None) -> list[Path]:
    """Delete every file the cache wrote in ``directory`` (default :func:`cache_dir`); nothing else.

    >>> import tempfile
    >>> from pathlib import Path
    >>> clear_cache(Path(tempfile.mkdtemp()))
    []
    """
    return _prune(_folder(directory), 0)


# ---------------------------------------------------------------------------------------------
# Lookup and store
# ---------------------------------------------------------------------------------------------
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
    fp16: bool
    files: list[str]
    labels: torch.Tensor
    classes: tuple
    activations: str
    fingerprint: str
    path: Path

    def result(self, features: torch.Tensor) -> FeatureSet:
        return FeatureSet(features.float(), self.labels.clone(), list(self.files), self.cut, self.fingerprint,
                          self.classes)

    def stored(self, features: torch.Tensor) -> FeatureSet:
        """What goes into the file: fp16 if asked (and then a fresh result equals a read-back one)."""
        return FeatureSet(features.half() if self.fp16 else features, self.labels, self.files, self.cut,
                          self.fingerprint, self.classes)


def _entry(model: nn.Module, samples, preprocess: Callable, cut: int | None, fp16: bool, device,
           preprocess_id: str | None, directory, pooled: bool) -> _Entry:
    _, cut = _resolve_cut(model, cut)
    files = [str(f) for f in samples.files]
    labels = [int(y) for y in samples.labels]
    if len(files) != len(labels):
        raise ValueError(f"samples has {len(files)} files but {len(labels)} labels: they must pair up one to one.")
    classes = tuple(getattr(samples, "classes", ()) or ())
    activations = _activations_key(model, samples.files, preprocess, cut, fp16, preprocess_id, device)
    if pooled:  # spatially averaged maps are other numbers: another key, another file
        activations = hashlib.sha256(f"{activations}|pooled".encode()).hexdigest()
    fingerprint = _with_labels(activations, labels, classes)
    path = _folder(directory) / _cache_name(model, cut, activations, fingerprint, pooled)
    return _Entry(cut, pooled, fp16, files, torch.tensor(labels, dtype=torch.long), classes, activations,
                  fingerprint, path)


def _usable(entry: _Entry, candidate: Path, check_fingerprint: bool) -> torch.Tensor | None:
    try:
        fs, payload = _load(candidate)
        if (payload.get("format") != FORMAT or payload.get("activations") != entry.activations
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


def _lookup(model: nn.Module, entry: _Entry, cap: int | None) -> torch.Tensor | None:
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
            _store(entry, features, cap)
            return features
    return None


def _store(entry: _Entry, features: torch.Tensor, cap: int | None) -> None:
    """Save (``features`` as stored), then prune; a folder that cannot be written loses the reuse, never
    the features."""
    folder = entry.path.parent
    try:
        save_features(entry.stored(features), entry.path, activations=entry.activations)
    except OSError as err:
        warnings.warn(f"Could not save the features in the cache folder {folder} ({err.strerror or err}): they are "
                      "returned but will be computed again next time; set TL_COURSE_CACHE to a folder you can "
                      "write to.", stacklevel=4)
        return
    _prune(folder, cap, keep=[entry.path])


def _compute(model: nn.Module, samples, preprocess: Callable, wanted: Iterable[tuple[int, bool]], device,
             batch_size: int, num_workers: int) -> dict[tuple[int, bool], torch.Tensor]:
    """Activations at every ``(cut, pooled)`` of ``wanted`` in ONE forward pass (eval mode, no gradients;
    the model's train/eval flags are restored)."""
    from .data import ImageDataset  # local import: data imports nothing from here

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    wanted = list(wanted)
    all_stages = stages(model)
    device = get_device(device)
    deepest = max(c for c, _ in wanted)
    modes = {m: m.training for m in model.modules()}
    model.to(device).eval()  # the whole model (never split across devices); BatchNorm on running statistics
    chunks: dict[tuple[int, bool], list[torch.Tensor]] = {key: [] for key in wanted}
    loader = _features._as_loader(ImageDataset(samples, preprocess), batch_size, device, num_workers)
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
    if not all(chunks.values()):
        raise ValueError("There are no images to compute activations for (samples is empty).")
    return {key: torch.cat(parts) for key, parts in chunks.items()}


def cached_features(model: nn.Module, samples, preprocess: Callable, cut: int | None = None,
                    fp16: bool = False, device: str | torch.device | None = None, batch_size: int = 32,
                    num_workers: int = 0, directory: str | Path | None = None,
                    progress: bool = True, preprocess_id: str | None = None, pooled: bool = False) -> FeatureSet:
    """Activations at ``cut`` for ``samples`` (a :class:`tl_course.data.Samples`), computed once and then
    read back from ``directory`` (default :func:`cache_dir`; ``~`` expanded). Labels and class names are
    always those of ``samples``.

    ``preprocess`` must be deterministic (augmentation would make the "fixed function" random, and is
    refused). torchvision and timm transforms are recognised by their parameters; a plain function or a
    ``v2.Lambda`` needs ``preprocess_id="<a name you change when the code changes>"``. The key covers the
    bottom's architecture too: after ``model.reset_classifier(3, global_pool="max")`` the max-pooled
    features are computed, not the old average-pooled ones read back. See the module docstring for the
    integrity check and the housekeeping.

    A cache that cannot be read or fails its integrity check is reported in one warning and recomputed.
    A folder that cannot be written is reported in one warning; the features are returned all the same
    (``pooled`` or not). A bad ``$TL_COURSE_CACHE_MAX_GB`` is a ``ValueError`` naming it, before anything is
    computed. ``fp16=True`` halves the file size (and the features returned are the fp16 values, whether
    computed now or read back). ``pooled=True`` stores the maps averaged over space, ``(N, channels)``:
    what a linear probe at an early cut trains on. :func:`warm_features` fills several cuts in one pass.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from torch import nn
    >>> from torchvision.transforms import v2
    >>> from tl_course.data import Samples
    >>> from tl_course.freezing import StagedModel
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(2):
    ...     Image.new("RGB", (8, 8), (200 * i, 0, 0)).save(folder / f"{i}.png")
    >>> samples = Samples(sorted(folder.glob("*.png")), [0, 1], ("dark", "bright"))
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ...                     nn.Linear(4, 2))
    >>> preprocess = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    >>> probe = cached_features(model, samples, preprocess, cut=1, pooled=True, directory=folder / "cache",
    ...                         device="cpu", progress=False)
    >>> probe.features.shape                               # (N, channels) at cut 1
    torch.Size([2, 4])
    >>> lambda_pre = v2.Lambda(lambda img: preprocess(img))
    >>> fs = cached_features(model, samples, lambda_pre, preprocess_id="to tensor v1", directory=folder / "cache",
    ...                      device="cpu", progress=False)
    >>> fs.features.shape
    torch.Size([2, 4])
    """
    cap = cache_max_bytes()  # a bad TL_COURSE_CACHE_MAX_GB is refused before any work
    entry = _entry(model, samples, preprocess, cut, fp16, device, preprocess_id, directory, pooled)
    features = _lookup(model, entry, cap)
    if features is not None:
        return entry.result(features)
    if pooled:
        features = _compute(model, samples, preprocess, [(entry.cut, True)], device, batch_size,
                            num_workers)[entry.cut, True]
    else:
        from .data import ImageDataset  # local import: data imports nothing from here

        features, _ = _features.extract_features(model, ImageDataset(samples, preprocess), cut=entry.cut,
                                                 device=device, batch_size=batch_size, num_workers=num_workers,
                                                 progress=progress)
    stored = entry.stored(features)
    _store(entry, features, cap)
    return entry.result(stored.features)


def warm_features(model: nn.Module, samples, preprocess: Callable, cuts: Iterable[int] = (),
                  pooled_cuts: Iterable[int] = (), fp16: bool = False, device: str | torch.device | None = None,
                  batch_size: int = 64, num_workers: int = 0, directory: str | Path | None = None,
                  preprocess_id: str | None = None) -> float:
    """Cache the activations of ``samples`` at every cut in ``cuts`` (full maps) and ``pooled_cuts``
    (averaged over space) in ONE forward pass, in exactly the files :func:`cached_features` reads. Returns the
    seconds the pass took (0.0 when everything was already on disk). Eval mode, no gradients; the model's
    train/eval flags are restored. A bad ``$TL_COURSE_CACHE_MAX_GB`` is refused before the pass.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from torch import nn
    >>> from torchvision.transforms import v2
    >>> from tl_course.data import Samples
    >>> from tl_course.freezing import StagedModel
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(folder / "a.png")
    >>> samples = Samples([folder / "a.png"], [0], ("only",))
    >>> model = StagedModel(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(64, 1))
    >>> preprocess = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    >>> warm_features(model, samples, preprocess, cuts=[1, 2], pooled_cuts=[1], directory=folder, device="cpu") > 0
    True
    >>> warm_features(model, samples, preprocess, cuts=[1, 2], pooled_cuts=[1], directory=folder, device="cpu")
    0.0
    """
    cap = cache_max_bytes()
    all_stages = stages(model)
    wanted = [(c, False) for c in cuts] + [(c, True) for c in pooled_cuts]
    for c, _ in wanted:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c < len(all_stages):
            raise ValueError(f"cut must be between 1 and {len(all_stages) - 1} for this model, got {c!r}.")
    missing = {}
    for c, pooled in dict.fromkeys(wanted):
        entry = _entry(model, samples, preprocess, c, fp16, device, preprocess_id, directory, pooled)
        if _lookup(model, entry, cap) is None:
            missing[c, pooled] = entry
    if not missing:
        return 0.0
    start = time.perf_counter()
    computed = _compute(model, samples, preprocess, missing, device, batch_size, num_workers)
    for key, entry in missing.items():
        _store(entry, computed[key], cap)
    return time.perf_counter() - start
