"""tl_course.data: odd image files, bring-your-own folders, offline errors, and the real cat-detector splits."""
from __future__ import annotations

import io
import os
import random
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageFile
from torchvision.transforms import v2

from tl_course import data
from tl_course.data import (CLASSES, BadImageError, DataUnavailableError, ImageDataset, Samples, breed_of,
                            cat_detector_splits, cat_label, check_images, data_root, find_pet_images,
                            image_folder_splits, load_rgb, train_transform)

# The offline photos: $TL_COURSE_DATA, else ../shared/data beside the repository.
DATA = Path(os.environ.get("TL_COURSE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PETS = DATA / "oxford-iiit-pet" / "images"
BEES = DATA / "hymenoptera_data"
needs_pets = pytest.mark.skipif(not PETS.is_dir(), reason=f"no Oxford-IIIT Pet photos in {PETS} (set TL_COURSE_DATA)")
needs_bees = pytest.mark.skipif(not BEES.is_dir(), reason=f"no hymenoptera_data in {DATA} (set TL_COURSE_DATA)")


# ---------------------------------------------------------------------------------------------
# Synthetic odd files
# ---------------------------------------------------------------------------------------------
READABLE = {  # name -> (size, mode in the file)
    "gray.jpg": ((40, 30), "L"),
    "cmyk.jpg": ((41, 31), "CMYK"),
    "png_named.jpg": ((42, 32), "RGB"),
    "anim.gif": ((43, 33), "P"),
    "rgba.png": ((44, 34), "RGBA"),
    "gray16.png": ((45, 35), "I;16"),
}
BROKEN = ("truncated.jpg", "random.jpg")


def _noise(size, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def write_odd_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in [*READABLE, *BROKEN]}
    Image.new("L", READABLE["gray.jpg"][0], 128).save(paths["gray.jpg"], "JPEG")
    Image.new("CMYK", READABLE["cmyk.jpg"][0], (0, 255, 255, 0)).save(paths["cmyk.jpg"], "JPEG")
    Image.new("RGB", READABLE["png_named.jpg"][0], (10, 200, 30)).save(paths["png_named.jpg"], "PNG")
    size = READABLE["anim.gif"][0]
    frames = [Image.new("RGB", size, (255, 0, 0)), Image.new("RGB", size, (0, 0, 255))]
    frames[0].save(paths["anim.gif"], "GIF", save_all=True, append_images=frames[1:], duration=100)
    rgba = Image.new("RGBA", READABLE["rgba.png"][0], (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 10, 10))  # a fully transparent corner
    rgba.save(paths["rgba.png"], "PNG")
    w, h = READABLE["gray16.png"][0]
    gray16 = np.full((h, w), 65535, dtype=np.uint16)
    gray16[0, 0], gray16[0, 1] = 0, 128 * 257
    Image.fromarray(gray16).save(paths["gray16.png"], "PNG")
    buffer = io.BytesIO()
    _noise((64, 64)).save(buffer, "JPEG", quality=95)
    paths["truncated.jpg"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    paths["random.jpg"].write_bytes(random.Random(0).randbytes(2000))
    return paths


@pytest.fixture
def odd(tmp_path) -> dict[str, Path]:
    return write_odd_images(tmp_path / "odd")


@pytest.fixture(scope="module")
def preprocess():
    from tl_course.models import load_pretrained

    return load_pretrained("efficientnet_lite0", image_size=160)[1]


# ---------------------------------------------------------------------------------------------
# load_rgb / check_images
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(READABLE))
def test_odd_but_readable_files_load_as_rgb_with_their_size(odd, name):
    image = load_rgb(odd[name])
    assert image.mode == "RGB"
    assert image.size == READABLE[name][0]
    assert Image.open(odd[name]).mode == READABLE[name][1]  # the fixture really wrote that mode


def test_png_named_jpg_is_read_by_content(odd):
    assert Image.open(odd["png_named.jpg"]).format == "PNG"
    assert load_rgb(odd["png_named.jpg"]).getpixel((0, 0)) == (10, 200, 30)


def test_gif_gives_its_first_frame(odd):
    assert Image.open(odd["anim.gif"]).n_frames == 2
    r, g, b = load_rgb(odd["anim.gif"]).getpixel((20, 20))
    assert r > 200 and g < 50 and b < 50  # red, not the blue second frame


def test_transparent_pixels_become_white(odd):
    image = load_rgb(odd["rgba.png"])
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((30, 30)) == (255, 0, 0)


def test_16_bit_gray_is_scaled_not_clipped(odd):
    image = load_rgb(odd["gray16.png"])
    assert [image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("name", BROKEN)
def test_broken_files_raise_bad_image_error_naming_the_file(odd, name):
    with pytest.raises(BadImageError, match="cannot read this image") as info:
        load_rgb(odd[name])
    assert str(info.value).startswith(f"{odd[name]}: ")
    assert isinstance(info.value, ValueError)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never switched on globally


def test_check_images_skips_broken_files_with_one_warning_each(odd, recwarn):
    names = [*READABLE, *BROKEN]
    samples = Samples([odd[n] for n in names], list(range(len(names))), tuple(names))
    kept = check_images(samples)
    assert kept.files == [odd[n] for n in READABLE]
    assert kept.labels == list(range(len(READABLE)))
    assert kept.classes == samples.classes
    messages = [str(w.message) for w in recwarn]
    skipped = [m for m in messages if m.startswith("Skipping ")]
    assert sorted(skipped) == sorted(m for m in skipped if any(m.startswith(f"Skipping {odd[n]}: ") for n in BROKEN))
    for name in BROKEN:
        assert sum(m.startswith(f"Skipping {odd[name]}: ") for m in messages) == 1
    # one "converted" warning per readable file that is not RGB, none for the RGB PNG named .jpg
    converted = [m for m in messages if "converted to RGB" in m]
    not_rgb = [n for n, (_, mode) in READABLE.items() if mode != "RGB"]
    assert sorted(converted) == sorted(f"{odd[n]} is a {READABLE[n][1]} image: converted to RGB." for n in not_rgb)
    assert len(messages) == len(BROKEN) + len(not_rgb)


def test_check_images_is_silent_on_plain_rgb(tmp_path, recwarn):
    path = tmp_path / "plain.jpg"
    _noise((20, 20)).save(path, "JPEG")
    assert check_images(Samples([path], [0], ("a",))).files == [path]
    assert len(recwarn) == 0


def test_image_dataset_and_train_transform_on_odd_files(odd, preprocess):
    crop = preprocess.crop_size[0]
    assert crop == 160
    samples = Samples([odd["cmyk.jpg"], odd["anim.gif"]], [1, 2], CLASSES)
    dataset = ImageDataset(samples, preprocess)
    assert len(dataset) == 2
    image, label = dataset[1]
    assert image.shape == (3, crop, crop) and image.dtype == torch.float32 and label == 2
    augmented, label = ImageDataset(samples, train_transform(preprocess))[0]
    assert augmented.shape == (3, crop, crop) and augmented.dtype == torch.float32 and label == 1
    assert isinstance(ImageDataset(samples)[0][0], Image.Image)  # no transform: the PIL image


def test_train_transform_normalises_like_the_model(preprocess):
    transform = train_transform(preprocess)
    assert isinstance(transform, v2.Compose)
    normalize = [t for t in transform.transforms if isinstance(t, v2.Normalize)]
    assert len(normalize) == 1
    assert list(normalize[0].mean) == list(preprocess.mean) == [0.5, 0.5, 0.5]  # Lite0's, not ImageNet's
    assert list(normalize[0].std) == list(preprocess.std)
    crop = [t for t in transform.transforms if isinstance(t, v2.RandomResizedCrop)][0]
    assert list(crop.size) == [160, 160] and crop.scale == (0.7, 1.0)
    assert crop.interpolation == preprocess.interpolation
    # a uniform 0.5-grey image normalises to about 0 whatever the crop and flip (jitter keeps mid-grey near 0.5)
    out = transform(Image.new("RGB", (200, 180), (128, 128, 128)))
    assert out.shape == (3, 160, 160) and out.dtype == torch.float32
    assert out.abs().max() < 0.25


# ---------------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------------
def test_breed_and_label_from_file_names():
    assert breed_of("Russian_Blue_12.jpg") == "Russian_Blue"
    assert breed_of(Path("/x/american_pit_bull_terrier_7.jpg")) == "american_pit_bull_terrier"
    assert [cat_label(b) for b in ("Bengal", "Russian_Blue", "Persian", "pug")] == [0, 1, 2, 2]
    assert CLASSES[cat_label("Bengal")] == "Tigger" and CLASSES[cat_label("Russian_Blue")] == "Misty"
    with pytest.raises(ValueError, match="not an Oxford-IIIT Pet file name"):
        breed_of("tigger.jpg")


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_COURSE_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("TL_COURSE_DATA")
    assert data_root() == Path.home() / ".cache" / "tl_course" / "data"


def test_samples_len_and_counts():
    samples = Samples(["a.jpg", "b.jpg", "c.jpg"], [2, 0, 2], CLASSES)
    assert len(samples) == 3
    assert samples.counts() == {"Tigger": 1, "Misty": 0, "neither": 2}
    assert list(samples.counts()) == list(CLASSES)
    assert samples.files[0] == Path("a.jpg")
    with pytest.raises(ValueError):
        Samples(["a.jpg"], [0, 1], CLASSES)


# ---------------------------------------------------------------------------------------------
# Missing photos
# ---------------------------------------------------------------------------------------------
def test_no_photos_and_no_download_is_data_unavailable(tmp_path):
    with pytest.raises(DataUnavailableError, match="TL_COURSE_DATA") as info:
        find_pet_images(tmp_path, download=False)
    assert str(tmp_path / "oxford-iiit-pet" / "images") in str(info.value)


def test_failed_download_is_one_clear_sentence(tmp_path, monkeypatch):
    calls = []

    def offline(root, download=False, **kwargs):
        calls.append((root, download))
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", offline)
    with pytest.raises(DataUnavailableError) as info:
        find_pet_images(tmp_path, download=True)
    message = str(info.value)
    assert calls == [(str(tmp_path), True)]
    assert "TL_COURSE_DATA" in message and "oxford-iiit-pet/images/*.jpg" in message
    assert str(tmp_path / "oxford-iiit-pet" / "images") in message
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0  # one sentence
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no urllib traceback attached
    assert isinstance(info.value, RuntimeError)


def test_find_pet_images_returns_sorted_jpgs_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", None)  # calling it would fail the test
    images = tmp_path / "oxford-iiit-pet" / "images"
    images.mkdir(parents=True)
    for name in ("pug_2.jpg", "Bengal_10.jpg", "Bengal_1.jpg", "Bengal_1.mat"):
        (images / name).touch()
    assert [p.name for p in find_pet_images(tmp_path)] == ["Bengal_1.jpg", "Bengal_10.jpg", "pug_2.jpg"]


def _fake_pets(root: Path, per_breed: dict[str, int]) -> Path:
    images = root / "oxford-iiit-pet" / "images"
    images.mkdir(parents=True)
    for breed, n in per_breed.items():
        for i in range(1, n + 1):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(images / f"{breed}_{i}.jpg", "JPEG")
    return root


def test_too_few_photos_is_a_clear_value_error(tmp_path):
    root = _fake_pets(tmp_path, {"Bengal": 5, "Russian_Blue": 9, "pug": 9, "Persian": 9})
    with pytest.raises(ValueError, match=r"Only 5 Tigger photos .* 6 are needed"):
        cat_detector_splits(train_per_class=2, val_per_class=1, test_per_class=3, root=root)
    splits = cat_detector_splits(train_per_class=1, val_per_class=1, test_per_class=3, root=root)
    assert splits.test.counts() == {"Tigger": 3, "Misty": 3, "neither": 3}
    with pytest.raises(ValueError, match="train_per_class"):
        cat_detector_splits(train_per_class=-1, root=root)


def test_a_bad_chosen_pet_photo_is_dropped_with_a_warning(tmp_path):
    root = _fake_pets(tmp_path, {"Bengal": 2, "Russian_Blue": 2, "pug": 2})
    bad = root / "oxford-iiit-pet" / "images" / "Bengal_1.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="Skipping .*Bengal_1.jpg: cannot read this image"):
        splits = cat_detector_splits(train_per_class=1, val_per_class=0, test_per_class=1, root=root)
    assert len(splits.train) + len(splits.test) == 5
    assert bad not in splits.train.files + splits.test.files


# ---------------------------------------------------------------------------------------------
# Bring-your-own image folders (synthetic)
# ---------------------------------------------------------------------------------------------
def _folder(root: Path, layout: dict[str, int]) -> Path:
    """``layout``: "train/cats" -> number of tiny JPEGs to write there (0: an empty folder)."""
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _noise((12, 10), seed=i).save(root / sub / f"{i}.jpg", "JPEG")
    return root


def test_empty_class_folder_is_a_value_error_naming_the_class(tmp_path):
    root = _folder(tmp_path, {"train/cats": 3, "train/dogs": 0, "val/cats": 2, "val/dogs": 2})
    with pytest.raises(ValueError, match=r"'dogs'.*train[/\\]dogs"):
        image_folder_splits(root)


def test_class_folder_with_only_broken_images_is_a_value_error(tmp_path):
    root = _folder(tmp_path, {"train/cats": 3, "train/dogs": 0, "val/cats": 2, "val/dogs": 2})
    (root / "train" / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.warns(UserWarning, match="Skipping"), pytest.raises(ValueError, match="'dogs'"):
        image_folder_splits(root)


def test_missing_val_folder_is_file_not_found(tmp_path):
    root = _folder(tmp_path, {"train/cats": 2})
    with pytest.raises(FileNotFoundError, match="val"):
        image_folder_splits(root)


def test_an_existing_test_folder_is_the_test_split(tmp_path):
    root = _folder(tmp_path, {"train/a": 4, "train/b": 4, "val/a": 3, "val/b": 3, "test/a": 2, "test/b": 1,
                              "train/.ipynb_checkpoints": 1})
    splits = image_folder_splits(root, train_per_class=2)
    assert splits.classes == ("a", "b")
    assert splits.train.counts() == {"a": 2, "b": 2}
    assert splits.val.counts() == {"a": 3, "b": 3}
    assert splits.test.counts() == {"a": 2, "b": 1}
    assert all(root / "test" in f.parents for f in splits.test.files)


# ---------------------------------------------------------------------------------------------
# Real photos: the cat detector
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pets() -> data.Splits:
    if not PETS.is_dir():
        pytest.skip(f"no Oxford-IIIT Pet photos in {PETS} (set TL_COURSE_DATA)")
    return cat_detector_splits(root=DATA)


def _names(samples: Samples) -> list[str]:
    return [f.name for f in samples.files]


@needs_pets
def test_cat_splits_are_stratified_with_exact_counts(pets):
    assert pets.classes == CLASSES == ("Tigger", "Misty", "neither")
    assert pets.train.counts() == {"Tigger": 20, "Misty": 20, "neither": 20}
    assert pets.val.counts() == {"Tigger": 10, "Misty": 10, "neither": 10}
    assert pets.test.counts() == {"Tigger": 30, "Misty": 30, "neither": 30}
    assert all(s.classes == CLASSES for s in (pets.train, pets.val, pets.test))


@needs_pets
def test_cat_splits_are_disjoint(pets):
    train, val, test = (set(s.files) for s in (pets.train, pets.val, pets.test))
    assert len(train) + len(val) + len(test) == 180
    assert not (train & val) and not (train & test) and not (val & test)


@needs_pets
def test_labels_follow_the_breed(pets):
    for samples in (pets.train, pets.val, pets.test):
        for path, label in zip(samples.files, samples.labels):
            breed = breed_of(path)
            assert label == {"Bengal": 0, "Russian_Blue": 1}.get(breed, 2), path
            assert path.parent == PETS


@needs_pets
def test_neither_covers_the_other_breeds(pets):
    def neither_breeds(samples):
        return [breed_of(f) for f, label in zip(samples.files, samples.labels) if label == 2]

    test_breeds = neither_breeds(pets.test)
    assert len(set(test_breeds)) == 30  # 30 photos, 30 different breeds
    every = set(test_breeds) | set(neither_breeds(pets.val)) | set(neither_breeds(pets.train))
    assert len(every) == 35 and not every & {"Bengal", "Russian_Blue"}
    assert len(set(neither_breeds(pets.train))) == 20


@needs_pets
def test_same_seed_same_splits_other_seed_other_splits(pets):
    again = cat_detector_splits(root=DATA)
    for name in ("train", "val", "test"):
        assert getattr(again, name) == getattr(pets, name)
    other = cat_detector_splits(seed=1, root=DATA)
    assert _names(other.test) != _names(pets.test)
    assert set(other.train.files) != set(pets.train.files)
    assert other.test.counts() == pets.test.counts()


@needs_pets
def test_test_and_val_do_not_move_when_train_size_changes(pets):
    small = cat_detector_splits(train_per_class=5, root=DATA)
    assert small.test == pets.test and small.val == pets.val
    assert small.train.counts() == {"Tigger": 5, "Misty": 5, "neither": 5}
    assert set(small.train.files) < set(pets.train.files)  # the sweep adds photos, never swaps them


@needs_pets
def test_too_many_training_photos_is_a_value_error():
    with pytest.raises(ValueError, match="Tigger"):
        cat_detector_splits(train_per_class=161, root=DATA)


@needs_pets
def test_real_pet_photos_load_as_tensors(pets, preprocess, recwarn):
    dataset = ImageDataset(pets.val, preprocess)
    image, label = dataset[0]
    assert image.shape == (3, 160, 160) and image.dtype == torch.float32
    assert label == pets.val.labels[0]
    augmented, _ = ImageDataset(pets.val, train_transform(preprocess))[0]
    assert augmented.shape == image.shape and augmented.dtype == image.dtype
    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch.shape == (4, 3, 160, 160) and labels.tolist() == pets.val.labels[:4]
    assert len(recwarn) == 0  # the offline photos are all plain RGB


# ---------------------------------------------------------------------------------------------
# Real photos: bring-your-own folders (hymenoptera_data)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bees() -> data.Splits:
    if not BEES.is_dir():
        pytest.skip(f"no hymenoptera_data in {DATA} (set TL_COURSE_DATA)")
    return image_folder_splits(BEES)


@needs_bees
def test_image_folder_classes_and_counts(bees):
    assert bees.classes == ("ants", "bees")
    assert bees.train.counts() == {"ants": 123, "bees": 121}
    assert bees.val.counts() == {"ants": 35, "bees": 41}  # val/ split 50/50 per class, the odd one to test
    assert bees.test.counts() == {"ants": 35, "bees": 42}
    assert BEES / "train" / "ants" / "ant photos.jpg" in bees.train.files
    assert BEES / "train" / "ants" / "formica.jpeg" in bees.train.files


@needs_bees
def test_image_folder_val_and_test_come_from_val_and_are_disjoint(bees):
    val, test = set(bees.val.files), set(bees.test.files)
    assert not val & test
    assert val | test == set((BEES / "val").rglob("*.jpg"))
    for samples in (bees.train, bees.val, bees.test):
        for path, label in zip(samples.files, samples.labels):
            assert path.parent.name == bees.classes[label]


@needs_bees
def test_image_folder_is_seeded_and_the_cap_keeps_val_and_test(bees):
    assert image_folder_splits(BEES) == bees
    assert image_folder_splits(BEES, seed=1).test != bees.test
    capped = image_folder_splits(BEES, train_per_class=10)
    assert capped.train.counts() == {"ants": 10, "bees": 10}
    assert set(capped.train.files) < set(bees.train.files)
    assert capped.val == bees.val and capped.test == bees.test
    assert image_folder_splits(BEES, train_per_class=10).train == capped.train
