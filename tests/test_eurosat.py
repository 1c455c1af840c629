"""The EuroSAT loader: nested, stratified, disjoint, seeded splits; the offline and online paths."""
from __future__ import annotations

from pathlib import Path

import pytest
import torchvision
from PIL import Image

from tl_course.data import (EUROSAT_CLASSES, DataUnavailableError, eurosat_splits, find_eurosat_images)

from conftest import DATA

EUROSAT = DATA / "eurosat" / "2750"
needs_eurosat = pytest.mark.skipif(not EUROSAT.is_dir(),
                                   reason=f"no EuroSAT tiles in {EUROSAT} (set TL_COURSE_DATA)")


def _fake_eurosat(root: Path, per_class: int = 6) -> None:
    """A tiny EuroSAT in torchvision's layout: ``per_class`` 8x8 JPEG tiles per class."""
    for c, name in enumerate(EUROSAT_CLASSES):
        folder = root / "eurosat" / "2750" / name
        folder.mkdir(parents=True)
        for i in range(1, per_class + 1):
            Image.new("RGB", (8, 8), (20 * c, 10 * i, 0)).save(folder / f"{name}_{i}.jpg")


@pytest.fixture(scope="module")
def big():
    if not EUROSAT.is_dir():
        pytest.skip(f"no EuroSAT tiles in {EUROSAT}")
    return eurosat_splits(40, 20, 30, seed=0, root=DATA, download=False)


@needs_eurosat
def test_splits_are_stratified_with_exact_counts(big):
    assert big.classes == EUROSAT_CLASSES
    for split, n in ((big.train, 40), (big.val, 20), (big.test, 30)):
        assert split.counts() == {name: n for name in EUROSAT_CLASSES}


@needs_eurosat
def test_labels_follow_the_class_folder(big):
    for split in (big.train, big.val, big.test):
        for path, label in zip(split.files, split.labels):
            assert path.parent.name == EUROSAT_CLASSES[label]
            assert path.name.startswith(EUROSAT_CLASSES[label] + "_")


@needs_eurosat
def test_splits_are_disjoint(big):
    train, val, test = (set(s.files) for s in (big.train, big.val, big.test))
    assert not train & val and not train & test and not val & test
    assert len(train) == len(big.train)  # no file twice inside a split either


@needs_eurosat
def test_train_grows_by_prefix_and_val_test_stay_fixed(big):
    small = eurosat_splits(5, 20, 30, seed=0, root=DATA, download=False)
    assert small.val.files == big.val.files and small.test.files == big.test.files
    for label in range(len(EUROSAT_CLASSES)):
        few = [f for f, y in zip(small.train.files, small.train.labels) if y == label]
        many = [f for f, y in zip(big.train.files, big.train.labels) if y == label]
        assert few == many[:5]


@needs_eurosat
def test_same_seed_same_splits_other_seed_other_splits(big):
    again = eurosat_splits(40, 20, 30, seed=0, root=DATA, download=False)
    other = eurosat_splits(40, 20, 30, seed=1, root=DATA, download=False)
    assert again.train.files == big.train.files and again.test.files == big.test.files
    assert other.test.files != big.test.files and other.train.files != big.train.files


def test_too_many_tiles_is_a_clear_value_error(tmp_path):
    _fake_eurosat(tmp_path, per_class=6)
    with pytest.raises(ValueError, match="Only 6 AnnualCrop tiles .* 7 are needed"):
        eurosat_splits(3, 2, 2, root=tmp_path, download=False)
    with pytest.raises(ValueError, match="whole number"):
        eurosat_splits(-1, 2, 2, root=tmp_path, download=False)


def test_splits_from_the_torchvision_layout_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "EuroSAT", None)  # calling it would fail the test
    _fake_eurosat(tmp_path, per_class=6)
    splits = eurosat_splits(2, 2, 2, seed=3, root=tmp_path)
    assert len(splits.train) == len(splits.val) == len(splits.test) == 20
    assert [len(t) for t in find_eurosat_images(tmp_path)] == [6] * 10


def test_offline_is_one_clear_sentence_naming_tl_course_data(tmp_path, monkeypatch):
    calls = []

    def offline(root, download=False, **kwargs):
        calls.append((root, download))
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "EuroSAT", offline)
    with pytest.raises(DataUnavailableError) as err:
        eurosat_splits(2, 2, 2, root=tmp_path)
    message = str(err.value)
    assert "TL_COURSE_DATA" in message and "eurosat/2750" in message and "download failed" in message
    assert "\n" not in message and err.value.__cause__ is None  # one sentence, no chained traceback
    assert calls == [(str(tmp_path), True)]


def test_download_false_never_calls_torchvision(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "EuroSAT", None)
    with pytest.raises(DataUnavailableError, match="download=False.*TL_COURSE_DATA"):
        find_eurosat_images(tmp_path, download=False)


def test_online_path_calls_torchvision_eurosat_with_download_true(tmp_path, monkeypatch):
    calls = []

    def fake_download(root, download=False, **kwargs):
        # What the real class does: download and extract into <root>/eurosat/2750/<Class>/.
        calls.append((root, download))
        _fake_eurosat(Path(root), per_class=4)

    monkeypatch.setattr(torchvision.datasets, "EuroSAT", fake_download)
    splits = eurosat_splits(2, 1, 1, root=tmp_path)
    assert calls == [(str(tmp_path), True)]
    assert splits.train.counts() == {name: 2 for name in EUROSAT_CLASSES}
    eurosat_splits(2, 1, 1, root=tmp_path)  # second call: tiles on disk, no second download
    assert len(calls) == 1


def test_a_download_that_leaves_no_tiles_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "EuroSAT", lambda root, download=False: None)
    with pytest.raises(DataUnavailableError, match="left no tiles.*TL_COURSE_DATA"):
        find_eurosat_images(tmp_path)
