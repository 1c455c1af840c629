"""Labelled photos: the Tigger / Misty / neither cat detector, bring-your-own image folders, robust image loading.

The running example tells two cats apart from everything else: Tigger is an Oxford-IIIT Pet ``Bengal``
(tiger-striped), Misty a ``Russian_Blue`` (grey), and every other breed, cat or dog, is "neither". The photos
live in ``$TL_COURSE_DATA/oxford-iiit-pet/images/<Breed>_<n>.jpg`` (default ``~/.cache/tl_course/data``);
with internet they are downloaded there once, offline point ``TL_COURSE_DATA`` at a copy.

Splits are made from file names only (seeded, stratified, no decoding), then just the chosen files are checked
with :func:`check_images`, so building a notebook's ~200-image split stays fast; an unreadable chosen file is
dropped with a warning rather than replaced.
"""
from __future__ import annotations

import os
import random
import re
import struct
import warnings
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps
from torchvision.transforms import v2

from .paths import data_root

__all__ = [
    "CLASSES",
    "DataUnavailableError",
    "BadImageError",
    "Samples",
    "Splits",
    "data_root",
    "breed_of",
    "cat_label",
    "find_pet_images",
    "cat_detector_splits",
    "image_folder_splits",
    "load_rgb",
    "check_images",
    "ImageDataset",
    "train_transform",
]

#: The cat detector's classes; a label is an index into this tuple.
CLASSES: tuple[str, ...] = ("Tigger", "Misty", "neither")

#: Oxford-IIIT Pet breed of each cat; every other breed is "neither".
_CAT_BREEDS = {"Bengal": 0, "Russian_Blue": 1}

# What image_folder_splits accepts (torchvision's ImageFolder list, plus GIF, which load_rgb reads).
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

PathLike = Union[str, os.PathLike]


class DataUnavailableError(RuntimeError):
    """The photos are not on disk and could not be downloaded."""


class BadImageError(ValueError):
    """One image file cannot be decoded (corrupt, truncated or not an image)."""


@dataclass
class Samples:
    """A list of labelled image files; ``labels[i]`` is the index in ``classes`` of ``files[i]``."""

    files: list[Path]
    labels: list[int]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.files = [Path(f) for f in self.files]
        self.labels = [int(label) for label in self.labels]
        self.classes = tuple(self.classes)
        if len(self.files) != len(self.labels):
            raise ValueError(f"Samples has {len(self.files)} files but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, int]:
        """Images per class name, in class order.

        >>> Samples([Path("a.jpg"), Path("b.jpg")], [0, 2], CLASSES).counts()
        {'Tigger': 1, 'Misty': 0, 'neither': 1}
        """
        return {name: self.labels.count(i) for i, name in enumerate(self.classes)}


@dataclass
class Splits:
    """Train / validation / test samples over the same classes (pick models on ``val``, report on ``test``)."""

    train: Samples
    val: Samples
    test: Samples
    classes: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Where the photos are
# ---------------------------------------------------------------------------------------------
def breed_of(path: PathLike) -> str:
    """The Oxford-IIIT Pet breed of a photo: its file name without the trailing ``_<n>.<ext>``.

    >>> breed_of("Russian_Blue_12.jpg")
    'Russian_Blue'
    """
    stem = Path(path).stem
    m = re.fullmatch(r"(.+)_\d+", stem)
    if not m:
        raise ValueError(f"{Path(path).name!r} is not an Oxford-IIIT Pet file name (<Breed>_<n>.jpg).")
    return m.group(1)


def cat_label(breed: str) -> int:
    """The cat-detector label of a breed: ``Bengal`` -> 0 (Tigger), ``Russian_Blue`` -> 1 (Misty), else 2.

    >>> [cat_label(b) for b in ("Bengal", "Russian_Blue", "Persian", "pug")]
    [0, 1, 2, 2]
    """
    return _CAT_BREEDS.get(breed, CLASSES.index("neither"))


def find_pet_images(root: Path | None = None, download: bool = True) -> list[Path]:
    """Sorted paths of the Oxford-IIIT Pet photos under ``root`` (default :func:`data_root`).

    Looks for ``<root>/oxford-iiit-pet/images/*.jpg``; if there are none and ``download`` is true, downloads
    the dataset there once with :func:`download_dataset` (``torchvision.datasets.OxfordIIITPet``, about 800 MB,
    shows progress).
    Raises :class:`DataUnavailableError` if the photos are missing and cannot be downloaded.

    >>> images = find_pet_images()
    >>> images[0].name
    'Abyssinian_1.jpg'
    """
    root = Path(root).expanduser() if root is not None else data_root()
    images_dir = root / "oxford-iiit-pet" / "images"
    found = sorted(images_dir.glob("*.jpg"))
    if found:
        return found
    advice = "set TL_COURSE_DATA to a folder holding oxford-iiit-pet/images/*.jpg"
    if not download:
        raise DataUnavailableError(f"No Oxford-IIIT Pet photos in {images_dir} (download=False); {advice}.")
    try:
        download_dataset(PETS, root)
    except (OSError, RuntimeError, EOFError) as err:  # URLError is an OSError; a bad archive is an EOFError/OSError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataUnavailableError(
            f"No Oxford-IIIT Pet photos in {images_dir} and the download failed ({reason}); {advice}."
        ) from None
    found = sorted(images_dir.glob("*.jpg"))
    if not found:
        raise DataUnavailableError(f"The download left no photos in {images_dir}; {advice}.")
    return found


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------
def _cat_detector_pools(images: list[Path], seed: int) -> list[list[Path]]:
    """Per class, every photo in the (seeded) order the splits are taken from."""
    rng = random.Random(seed)
    by_breed: dict[str, list[Path]] = {}
    for path in images:
        try:
            by_breed.setdefault(breed_of(path), []).append(path)
        except ValueError:
            warnings.warn(f"Skipping {path}: the name is not <Breed>_<n>.jpg, so its breed is unknown.", stacklevel=3)
    pools: list[list[Path]] = []
    for breed in _CAT_BREEDS:  # Tigger, Misty
        pool = sorted(by_breed.pop(breed, []))
        rng.shuffle(pool)
        pools.append(pool)
    # "neither": breeds in a seeded order, each breed shuffled, then dealt round-robin (one photo of each
    # breed, then a second of each, ...), so any run of up to 35 consecutive photos has 35 different breeds.
    breeds = sorted(by_breed)
    rng.shuffle(breeds)
    for breed in breeds:
        by_breed[breed].sort()
        rng.shuffle(by_breed[breed])
    dealt = zip_longest(*(by_breed[b] for b in breeds))
    pools.append([path for round_ in dealt for path in round_ if path is not None])
    return pools


def cat_detector_splits(train_per_class: int = 20, val_per_class: int = 10, test_per_class: int = 30,
                        seed: int = 0, root: Path | None = None) -> Splits:
    """Seeded, stratified train / val / test splits of the Tigger / Misty / neither detector.

    Every split has the same number of photos per class (``train_per_class`` etc.). Per class the photos are
    shuffled with ``random.Random(seed)`` and taken in the order TEST, then VAL, then TRAIN, so the test and
    val sets stay exactly the same when only ``train_per_class`` changes: a sweep over training-set sizes is
    compared on one test set.

    "neither" is deliberately *balanced*, not natural: it gets as many photos per split as each cat, dealt
    round-robin across the 35 other breeds (one of each breed, in a seeded breed order, before any breed gets
    a second), so every breed is represented once the splits together hold 35 or more "neither" photos, and
    no split is dominated by a few breeds. Real life has far more "neither" than Tigger; accuracy on these
    splits is therefore balanced accuracy.

    File names decide the split; only the chosen photos are then decoded by :func:`check_images`, and one that
    cannot be read is dropped with a warning (that split is one short). Raises ``ValueError`` if a class has
    too few photos for the requested sizes.

    >>> splits = cat_detector_splits(train_per_class=5)
    >>> splits.train.counts()
    {'Tigger': 5, 'Misty': 5, 'neither': 5}
    """
    _check_sizes(train_per_class, val_per_class, test_per_class)
    pools = _cat_detector_pools(find_pet_images(root), seed)
    return _nested_splits(pools, CLASSES, train_per_class, val_per_class, test_per_class, "photos")


def _check_sizes(train_per_class: int, val_per_class: int, test_per_class: int) -> None:
    sizes = {"test_per_class": test_per_class, "val_per_class": val_per_class, "train_per_class": train_per_class}
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {n!r}.")


def _nested_splits(pools: list[list[Path]], classes, train_per_class: int, val_per_class: int,
                   test_per_class: int, what: str) -> Splits:
    """Per class (one shuffled pool each), TEST first, then VAL, then TRAIN: test and val do not move when
    only ``train_per_class`` changes, and a smaller training set is a prefix of a larger one."""
    needed = test_per_class + val_per_class + train_per_class
    for label, pool in enumerate(pools):
        if len(pool) < needed:
            raise ValueError(
                f"Only {len(pool)} {classes[label]} {what} are available but {needed} are needed "
                f"(test {test_per_class} + val {val_per_class} + train {train_per_class} per class); "
                f"ask for fewer."
            )
    bounds = {"test": (0, test_per_class),
              "val": (test_per_class, test_per_class + val_per_class),
              "train": (test_per_class + val_per_class, needed)}
    split = {}
    for name, (start, stop) in bounds.items():
        files = [path for pool in pools for path in pool[start:stop]]
        labels = [label for label, pool in enumerate(pools) for _ in pool[start:stop]]
        split[name] = check_images(Samples(files, labels, classes))
    return Splits(train=split["train"], val=split["val"], test=split["test"], classes=classes)


def _class_folders(folder: Path) -> list[str]:
    # Hidden folders are never classes (Jupyter leaves .ipynb_checkpoints everywhere).
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path, name: str) -> list[Path]:
    """Sorted image files under ``folder`` (recursively, like ImageFolder); an empty class is an error."""
    files, ignored = [], []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        (files if path.suffix.lower() in _IMAGE_SUFFIXES else ignored).append(path)
    if ignored:
        kinds = ", ".join(sorted({p.suffix.lower() or p.name for p in ignored}))
        warnings.warn(f"Ignoring {len(ignored)} file(s) in {folder} that are not images ({kinds}).", stacklevel=3)
    if not files:
        raise ValueError(f"Class {name!r} has no images in {folder}: put photos there or remove the folder.")
    return files


def _as_samples(files: dict[str, list[Path]], classes: list[str]) -> Samples:
    return Samples([f for c in classes for f in files[c]],
                   [i for i, c in enumerate(classes) for _ in files[c]], tuple(classes))


def _require_every_class(samples: Samples, folder: Path) -> None:
    for name, count in samples.counts().items():
        if count == 0:
            raise ValueError(f"Class {name!r} has no readable image in {folder / name}: "
                             f"every chosen file there was unreadable.")


def image_folder_splits(root: PathLike, train_per_class: int | None = None, seed: int = 0) -> Splits:
    """Splits from your own photos in the ``{train,val}/<class>/*`` layout of torchvision's ``ImageFolder``.

    The classes are the sorted folder names in ``root/train``. If ``root/test`` exists it is the test split;
    otherwise each class of ``root/val`` is shuffled (``random.Random(seed)``) and cut in half, stratified:
    half stays the validation split (choose models and settings on it) and half becomes the test split (report
    the final number on it once), the odd photo going to test. ``train_per_class`` caps the training photos
    per class (a seeded random choice); ``None`` keeps them all.

    Every chosen file is checked with :func:`check_images`. A class folder with no readable image is a
    ``ValueError`` naming the class and folder; a missing ``train`` or ``val`` folder a ``FileNotFoundError``.

    >>> splits = image_folder_splits(data_root() / "hymenoptera_data")
    >>> splits.classes, splits.train.counts()
    (('ants', 'bees'), {'ants': 123, 'bees': 121})
    """
    root = Path(root).expanduser()
    folders = {name: root / name for name in ("train", "val", "test")}
    for name in ("train", "val"):
        if not folders[name].is_dir():
            raise FileNotFoundError(
                f"{folders[name]} is not a folder: image_folder_splits expects {root}/train/<class>/* "
                f"and {root}/val/<class>/*."
            )
    if train_per_class is not None and (isinstance(train_per_class, bool) or not isinstance(train_per_class, int)
                                        or train_per_class < 1):
        raise ValueError(f"train_per_class must be None or a whole number >= 1, got {train_per_class!r}.")
    classes = _class_folders(folders["train"])
    if not classes:
        raise ValueError(f"No class folders in {folders['train']}: expected {folders['train']}/<class>/*.")
    if len(classes) < 2:
        # One class trains to 100 % accuracy and tells nothing: a classifier needs something to tell apart.
        raise ValueError(f"{folders['train']} has one class folder ({classes[0]!r}): a classifier needs at least "
                         "two classes, one folder per class.")
    has_test = folders["test"].is_dir()
    for name in ("val", "test") if has_test else ("val",):
        extra = sorted(set(_class_folders(folders[name])) - set(classes))
        if extra:
            raise ValueError(f"{folders[name]} has class folder(s) {extra} that {folders['train']} does not have.")

    files = {name: {c: _image_files(folders[name] / c, c) for c in classes}
             for name in (("train", "val", "test") if has_test else ("train", "val"))}
    rng = random.Random(seed)
    if not has_test:
        # Split val before capping train, so val and test do not depend on train_per_class.
        files["test"] = {}
        for c in classes:
            pool = list(files["val"][c])
            if len(pool) < 2:
                raise ValueError(f"Class {c!r} has {len(pool)} image in {folders['val'] / c}: at least 2 are needed "
                                 f"to split val into val and test (or add {root}/test/{c}/).")
            rng.shuffle(pool)
            files["val"][c], files["test"][c] = pool[:len(pool) // 2], pool[len(pool) // 2:]
    if train_per_class is not None:
        for c in classes:
            pool = list(files["train"][c])
            rng.shuffle(pool)
            files["train"][c] = pool[:train_per_class]

    split = {name: check_images(_as_samples(files[name], classes)) for name in ("train", "val", "test")}
    for name in ("train", "val", "test"):
        _require_every_class(split[name], folders[name] if name != "test" or has_test else folders["val"])
    return Splits(train=split["train"], val=split["val"], test=split["test"], classes=tuple(classes))


# ---------------------------------------------------------------------------------------------
# Reading images
# ---------------------------------------------------------------------------------------------
# What Pillow raises on broken files, depending on the format plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    # Pillow's own convert("RGB") clips 16-bit and float values at 255 (a white image); scale them instead.
    a = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.size and a.max() > 255):
        a = a / 257.0  # 0..65535 -> 0..255
    elif img.mode == "F" and a.size and a.max() <= 1.0:
        a = a * 255.0  # floats in 0..1
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def _to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of a loaded image of any mode."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_bit_depth_to_l(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        # Transparent pixels over white, as a viewer shows them; a plain convert keeps their hidden colour
        # (often black), which a network would learn as background.
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")  # also a copy when already RGB, so it outlives the closed file


def _read(path: PathLike) -> tuple[Image.Image, str]:
    """The image as RGB, and its mode in the file (before conversion)."""
    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of a GIF / APNG / multi-page TIFF
            img.load()   # decode everything now: a truncated file fails here, not in a DataLoader worker
            mode = img.mode
            try:
                # Phone photos store "rotate me" in EXIF instead of rotating the pixels.
                img = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a broken EXIF block should not cost a readable photo
                pass
            return _to_rgb(img), mode
    except _DECODE_ERRORS as err:
        reason = str(err) or type(err).__name__
        raise BadImageError(f"{path}: cannot read this image ({reason})") from None


def load_rgb(path: PathLike) -> Image.Image:
    """Open and fully decode one image file as an RGB PIL image (first frame; any mode converted).

    The format is read from the content, not the name (a PNG named ``.jpg`` is fine). Raises
    :class:`BadImageError` if the file cannot be decoded.

    >>> load_rgb(find_pet_images()[0]).mode
    'RGB'
    """
    return _read(path)[0]


def check_images(samples: Samples) -> Samples:
    """The samples whose files can be read, each file decoded once.

    An undecodable file is skipped with one warning (``Skipping <path>: ...``); a readable file that is not
    RGB (grayscale, palette, CMYK, RGBA, 16-bit) is kept with one warning saying it is converted.

    >>> kept = check_images(cat_detector_splits().test)
    """
    files, labels = [], []
    for path, label in zip(samples.files, samples.labels):
        try:
            _, mode = _read(path)
        except BadImageError as err:
            warnings.warn(f"Skipping {err}", stacklevel=2)
            continue
        if mode != "RGB":
            warnings.warn(f"{path} is a {mode} image: converted to RGB.", stacklevel=2)
        files.append(path)
        labels.append(label)
    return Samples(files, labels, samples.classes)


class ImageDataset(torch.utils.data.Dataset):
    """Samples as a PyTorch dataset: ``dataset[i] == (transform(load_rgb(file)), label)``.

    >>> from tl_course.models import load_pretrained
    >>> model, preprocess, categories = load_pretrained()
    >>> image, label = ImageDataset(cat_detector_splits().train, preprocess)[0]
    """

    def __init__(self, samples: Samples, transform: Callable | None = None) -> None:
        self.samples = samples
        self.transform = transform  # None: the PIL image itself (for showing it)
        self.classes = samples.classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = load_rgb(self.samples.files[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples.labels[index]


def train_transform(preprocess) -> v2.Compose:
    """Light training augmentation that ends exactly like the model's own eval ``preprocess``.

    Random crop (70-100 % of the area) at the model's crop size and interpolation, horizontal flip, mild
    colour jitter, then the *same* mean / std as ``preprocess`` (read from it, never hard-coded: EfficientNet-Lite0
    uses 0.5 / 0.5, not the ImageNet statistics).

    >>> from tl_course.models import load_pretrained
    >>> model, preprocess, categories = load_pretrained()
    >>> train_transform(preprocess)(load_rgb(find_pet_images()[0])).shape
    torch.Size([3, 224, 224])
    """
    crop = preprocess.crop_size[0]
    return v2.Compose([
        v2.RandomResizedCrop(crop, scale=(0.7, 1.0), interpolation=preprocess.interpolation, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(preprocess.mean), std=list(preprocess.std)),
    ])


# ---------------------------------------------------------------------------------------------
# EuroSAT: a target domain far from ImageNet (satellite tiles, 64 x 64, ten land-use classes)
# ---------------------------------------------------------------------------------------------
#: EuroSAT RGB's ten land-use / land-cover classes, in torchvision's (sorted folder) order.
EUROSAT_CLASSES: tuple[str, ...] = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
                                    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake")


def find_eurosat_images(root: Path | None = None, download: bool = True) -> list[list[Path]]:
    """Per EuroSAT class (in :data:`EUROSAT_CLASSES` order), the sorted tile paths under ``root``.

    Looks for ``<root>/eurosat/2750/<Class>/*.jpg`` (``root`` defaults to :func:`data_root`), the layout
    ``torchvision.datasets.EuroSAT(root, download=True)`` writes; if a class folder is empty or missing and
    ``download`` is true, :func:`download_dataset` makes that call once (about 90 MB). Raises
    :class:`DataUnavailableError`, one sentence naming ``TL_COURSE_DATA``, when the tiles are missing and
    cannot be downloaded.

    >>> [len(tiles) for tiles in find_eurosat_images()][:2]     # the offline copy: 1,000 per class
    [1000, 1000]
    """
    root = Path(root).expanduser() if root is not None else data_root()
    folder = root / "eurosat" / "2750"
    advice = "set TL_COURSE_DATA to a folder holding eurosat/2750/<Class>/*.jpg"

    def tiles() -> list[list[Path]]:
        return [sorted((folder / name).glob("*.jpg")) for name in EUROSAT_CLASSES]

    found = tiles()
    if all(found):
        return found
    if not download:
        raise DataUnavailableError(f"No EuroSAT tiles in {folder} (download=False); {advice}.")
    try:
        download_dataset(EUROSAT, root)
    except (OSError, RuntimeError, EOFError) as err:  # URLError is an OSError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataUnavailableError(
            f"No EuroSAT tiles in {folder} and the download failed ({reason}); {advice}.") from None
    found = tiles()
    empty = [name for name, files in zip(EUROSAT_CLASSES, found) if not files]
    if empty:
        raise DataUnavailableError(f"The download left no tiles for {', '.join(empty)} in {folder}; {advice}.")
    return found


def eurosat_splits(train_per_class: int = 50, val_per_class: int = 10, test_per_class: int = 100,
                   seed: int = 0, root: Path | None = None, download: bool = True) -> Splits:
    """Seeded, stratified, nested train / val / test splits of EuroSAT RGB (ten classes).

    The same shape as :func:`cat_detector_splits`: per class the tiles are shuffled with
    ``random.Random(seed)`` and taken in the order TEST, then VAL, then TRAIN, so test and val stay exactly the
    same when only ``train_per_class`` changes, and the training set of size n is the first n of any larger
    one (per class): a sweep over training-set sizes extracts activations once, for the largest size.

    Only the chosen tiles are decoded (:func:`check_images`); an unreadable one is dropped with a warning.
    Raises ``ValueError`` if a class has too few tiles for the requested sizes.

    >>> splits = eurosat_splits(train_per_class=5, val_per_class=10, test_per_class=20)
    >>> len(splits.train), len(splits.val), len(splits.test), splits.classes[0]
    (50, 100, 200, 'AnnualCrop')
    """
    _check_sizes(train_per_class, val_per_class, test_per_class)
    rng = random.Random(seed)
    pools = []
    for files in find_eurosat_images(root, download):
        pool = list(files)
        rng.shuffle(pool)
        pools.append(pool)
    return _nested_splits(pools, EUROSAT_CLASSES, train_per_class, val_per_class, test_per_class, "tiles")


__all__ += ["EUROSAT_CLASSES", "find_eurosat_images", "eurosat_splits"]


# ---------------------------------------------------------------------------------------------
# Fetching a data set that is not on disk (one helper for all three)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSource:
    """One data set the course can download: what it is, where it lands under the data root, how big it is.

    ``torchvision`` names the ``torchvision.datasets`` class that downloads it (Oxford-IIIT Pet, EuroSAT);
    without it, ``url`` is a zip archive checked against ``sha256`` and unpacked into ``folder``.
    """

    title: str  #: what it is, for the announcement ("the Oxford-IIIT Pet photos")
    folder: str  #: the folder it lands in, relative to the data root
    size: str  #: how big the download is, in words ("about 800 MB")
    url: str  #: where it comes from
    torchvision: str | None = None  #: the ``torchvision.datasets`` class that downloads it, if any
    sha256: str | None = None  #: the archive's SHA-256 (archives only)

    def announcement(self, root: PathLike) -> str:
        """The one sentence printed before a download: what, how big, from where, where to.

        >>> ANTS_AND_BEES.announcement("/data")
        'Downloading the ants / bees photos of the PyTorch transfer-learning tutorial (45 MB) from https://download.pytorch.org/tutorial/hymenoptera_data.zip into /data/hymenoptera_data, once: later runs read them from disk.'
        """
        return (f"Downloading {self.title} ({self.size}) from {self.url} into {Path(root) / self.folder}, once: "
                "later runs read them from disk.")


PETS = DataSource("the Oxford-IIIT Pet photos", "oxford-iiit-pet", "about 800 MB",
                  "https://www.robots.ox.ac.uk/~vgg/data/pets/", torchvision="OxfordIIITPet")
EUROSAT = DataSource("the EuroSAT RGB tiles", "eurosat", "about 90 MB", "https://github.com/phelber/EuroSAT",
                     torchvision="EuroSAT")
#: The PyTorch tutorial's published archive (47,286,322 bytes; ``hymenoptera_data/{train,val}/{ants,bees}/``). Its
#: SHA-256 is the one PyTorch's own tutorials check before unpacking it (pytorch/tutorials,
#: ``.jenkins/download_data.py``, ``download_hymenoptera_data``); it cannot be recomputed here (no internet).
ANTS_AND_BEES = DataSource(
    "the ants / bees photos of the PyTorch transfer-learning tutorial", "hymenoptera_data", "45 MB",
    "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    sha256="fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209")


def download_dataset(source: DataSource, root: PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download ``source`` into ``root`` (default :func:`data_root`) and return ``root / source.folder``.

    Prints :meth:`DataSource.announcement` first. A ``torchvision`` source is fetched by that
    ``torchvision.datasets`` class (``download=True``). An archive is streamed into a temporary folder inside
    ``root`` while its SHA-256 is computed; a wrong checksum is refused before anything is unpacked, members
    that would land outside the folder are refused, and the unpacked folder is moved into place in one rename,
    so a failed or interrupted download leaves nothing behind. An existing ``root / source.folder`` is never
    overwritten. Network errors propagate (``OSError``, ``http.client.HTTPException``); a refused archive is a
    :class:`DataUnavailableError`.

    >>> import hashlib, tempfile, zipfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(tmp / "photos.zip", "w") as zf:
    ...     zf.writestr("photos/train/a/1.txt", "x")
    >>> sha256 = hashlib.sha256((tmp / "photos.zip").read_bytes()).hexdigest()
    >>> mine = DataSource("my photos", "photos", "1 kB", (tmp / "photos.zip").as_uri(), sha256=sha256)
    >>> download_dataset(mine, tmp / "data")  # doctest: +ELLIPSIS
    Downloading my photos (1 kB) from file:///.../photos.zip into .../data/photos, once: later runs read them from disk.
    PosixPath('.../data/photos')
    """
    root = Path(root).expanduser() if root is not None else data_root()
    target = root / source.folder
    if not source.torchvision and target.exists():
        raise DataUnavailableError(f"{target} already exists but is not {source.title}: move it away (nothing was "
                                   "downloaded or changed).")
    print(source.announcement(root), flush=True)
    if source.torchvision:
        # Looked up at call time, not imported at module level, so tests can replace it.
        getattr(torchvision.datasets, source.torchvision)(str(root), download=True)
        return target
    if source.sha256 is None:
        raise ValueError(f"DataSource {source.title!r} has neither torchvision nor sha256: an archive needs its "
                         "SHA-256 so a damaged download can be refused.")
    root.mkdir(parents=True, exist_ok=True)
    import hashlib
    import shutil
    import tempfile
    import urllib.request
    import zipfile

    work = Path(tempfile.mkdtemp(prefix=f".{source.folder}.download-", dir=root))
    try:
        archive = work / "archive.zip"
        digest = hashlib.sha256()
        received = 0
        with urllib.request.urlopen(source.url, timeout=timeout) as response, archive.open("wb") as out:
            expected = response.headers.get("Content-Length")
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
        if expected is not None and expected.isdigit() and received != int(expected):
            raise DataUnavailableError(
                f"The download of {source.url} stopped after {received:,} of {int(expected):,} bytes: nothing was "
                f"unpacked into {root} (try again).")
        if digest.hexdigest() != source.sha256.lower():
            raise DataUnavailableError(
                f"The download of {source.url} has SHA-256 {digest.hexdigest()}, not {source.sha256}: it was "
                f"refused and nothing was unpacked into {root} (a cut connection or a proxy can damage a "
                "download: try again).")
        unpacked = work / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                inside = (unpacked / name).resolve()
                if not inside.is_relative_to(unpacked.resolve()):
                    raise DataUnavailableError(f"{source.url} holds {name!r}, which would land outside {root}: "
                                               "the archive was refused and nothing was unpacked.")
            zf.extractall(unpacked)
        if not (unpacked / source.folder).is_dir():
            raise DataUnavailableError(f"{source.url} has no folder {source.folder}/ at its top: the archive was "
                                       "refused and nothing was unpacked.")
        (unpacked / source.folder).rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def find_ants_and_bees(root: PathLike | None = None, download: bool = True,
                       source: DataSource = ANTS_AND_BEES) -> Path:
    """The ants / bees folder (``{train,val}/{ants,bees}/*.jpg``) under ``root`` (default :func:`data_root`).

    When ``root / "hymenoptera_data"`` has no ``train/`` and ``val/`` and ``download`` is true, it is fetched
    once with :func:`download_dataset` from the PyTorch tutorial's archive (45 MB, checked against its SHA-256);
    otherwise nothing is downloaded. Raises :class:`DataUnavailableError`, one sentence naming
    ``TL_COURSE_DATA``, when the photos are missing and cannot be downloaded. ``source`` fetches another archive
    in the same layout.

    >>> find_ants_and_bees().name      # the offline copy: nothing is downloaded
    'hymenoptera_data'
    """
    import http.client

    root = Path(root).expanduser() if root is not None else data_root()
    folder = root / source.folder
    advice = f"set TL_COURSE_DATA to a folder holding {source.folder}/train/<class>/ and {source.folder}/val/<class>/"
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        return folder
    if not download:
        raise DataUnavailableError(f"No {source.title} in {folder} (download=False); {advice}.")
    try:
        download_dataset(source, root)
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError; a cut connection IncompleteRead
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataUnavailableError(
            f"No {source.title} in {folder} and the download failed ({reason}); {advice}.") from None
    return folder


__all__ += ["DataSource", "PETS", "EUROSAT", "ANTS_AND_BEES", "download_dataset", "find_ants_and_bees"]
