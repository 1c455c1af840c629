"""The activation cache keeps its promises (issue 19): it deletes only what it wrote, its key covers the
architecture of the frozen part, an unwritable folder costs only the reuse, its size cap is read before any
work, and ``~`` means the home folder.

Through the public face (``tl_course.cached_features`` ...), one test (or a few) per finding."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

import tl_course
from tl_course.data import ImageDataset, Samples


@pytest.fixture
def two_photos(few_photos):
    return Samples(few_photos.files[:2], few_photos.labels[:2], few_photos.classes)


def _cache(model, samples, preprocess, directory=None, **kwargs):
    return tl_course.cached_features(model, samples, preprocess, directory=directory, progress=False, device="cpu",
                                     **kwargs)


def _names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def _user_files(directory: Path, model) -> dict[str, bytes]:
    """What a student keeps in the cache folder: a checkpoint (a real torch file), a page's results, a
    hidden temp file of an editor, all old."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "lite0_finetuned_best.pt")
    (directory / "ch08-sweep-ci.json").write_text(json.dumps({"pets": []}))
    (directory / ".lite0_finetuned_best.pt.x1y2.tmp").write_bytes(b"an editor's autosave")
    files = {name: (directory / name).read_bytes() for name in _names(directory)}
    for p in directory.iterdir():
        os.utime(p, (0, 0))  # 1970: older than anything the cache writes, first in line for LRU pruning
    return files


def test_pruning_and_clearing_delete_only_the_caches_own_files(frozen, two_photos, small_preprocess, tmp_path,
                                                               monkeypatch):
    mine = _user_files(tmp_path, frozen)
    monkeypatch.setenv("TL_COURSE_CACHE_MAX_GB", "1e-9")  # 1 byte: every write prunes all it may
    _cache(frozen, two_photos, small_preprocess, tmp_path)
    cached = _names(tmp_path) - set(mine)
    assert len(cached) == 1  # the file just written stays (kept), nothing of the user's went
    assert {name: (tmp_path / name).read_bytes() for name in mine} == mine
    _cache(frozen, two_photos, small_preprocess, tmp_path, cut=8)  # another file: the first is pruned
    assert cached.isdisjoint(_names(tmp_path)) and set(mine) <= _names(tmp_path)

    removed = tl_course.clear_cache(tmp_path)
    assert len(removed) == 1 and _names(tmp_path) == set(mine)
    assert tl_course.prune_cache(max_bytes=0, directory=tmp_path) == []
    assert {name: (tmp_path / name).read_bytes() for name in mine} == mine
    # a file that merely *looks* like a cache file by name, but is not the cache's format, stays too
    lookalike = tmp_path / f"EfficientNet-cut9-{'a' * 8}-{'b' * 24}.pt"
    torch.save({"weights": torch.zeros(2)}, lookalike)
    assert tl_course.clear_cache(tmp_path) == [] and lookalike.exists()


def test_the_key_covers_the_architecture_not_only_the_weights(frozen, two_photos, small_preprocess, tmp_path):
    avg = _cache(frozen, two_photos, small_preprocess, tmp_path)
    frozen.reset_classifier(3, global_pool="max")  # a pooling module without weights replaced
    real, _ = tl_course.extract_features(frozen, ImageDataset(two_photos, small_preprocess), device="cpu")
    assert (real - avg.features).abs().max() > 0.1  # max and average pooling really differ here
    again = _cache(frozen, two_photos, small_preprocess, tmp_path)
    assert again.fingerprint != avg.fingerprint
    assert torch.allclose(again.features, real, atol=1e-5)  # the max-pooled features, not the stale ones


def test_a_frozen_copy_of_the_same_network_shares_the_cache(lite0, frozen, two_photos, small_preprocess, tmp_path):
    # freeze() swaps BatchNorm classes (eval mode, the same function): not a different architecture.
    plain = tl_course.replace_head(lite0, 3)
    assert _cache(plain, two_photos, small_preprocess, tmp_path).fingerprint == \
        _cache(frozen, two_photos, small_preprocess, tmp_path).fingerprint


def test_pooled_features_from_an_unwritable_folder_are_returned(frozen, two_photos, small_preprocess, tmp_path,
                                                                monkeypatch):
    not_a_folder = tmp_path / "shared-cache"
    not_a_folder.write_text("a file where the (read-only, shared) cache folder should be")
    monkeypatch.setenv("TL_COURSE_CACHE", str(not_a_folder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = _cache(frozen, two_photos, small_preprocess, pooled=True, cut=3)
    assert fs.features.shape[0] == 2 and fs.features.ndim == 2 and torch.isfinite(fs.features).all()
    assert len(caught) == 1 and "they are returned" in str(caught[0].message)
    full, _ = tl_course.extract_features(frozen, ImageDataset(two_photos, small_preprocess), cut=3, device="cpu")
    assert torch.allclose(fs.features, full.mean(dim=(2, 3)), atol=1e-5)


def test_cache_max_gb_inf_means_no_cap(frozen, two_photos, small_preprocess, tmp_path, monkeypatch):
    monkeypatch.setenv("TL_COURSE_CACHE_MAX_GB", "inf")
    fs = _cache(frozen, two_photos, small_preprocess, tmp_path)
    assert len(fs) == 2 and len(_names(tmp_path)) == 1


@pytest.mark.parametrize("call", ["cached_features", "warm_features"])
def test_a_bad_cache_max_gb_is_refused_before_anything_is_computed(call, frozen, two_photos, small_preprocess,
                                                                   tmp_path, monkeypatch):
    monkeypatch.setenv("TL_COURSE_CACHE_MAX_GB", "5GB")
    forward_passes = []
    frozen.conv_stem.register_forward_pre_hook(lambda module, inputs: forward_passes.append(len(inputs[0])))
    with pytest.raises(ValueError, match="TL_COURSE_CACHE_MAX_GB='5GB' is not a number") as err:
        if call == "cached_features":
            _cache(frozen, two_photos, small_preprocess, tmp_path)
        else:
            tl_course.warm_features(frozen, two_photos, small_preprocess, cuts=[8], directory=tmp_path, device="cpu")
    assert "\n" not in str(err.value)
    assert forward_passes == []  # not one image went through the network
    assert not tmp_path.exists() or _names(tmp_path) == set()


def test_tilde_means_the_home_folder(frozen, two_photos, small_preprocess, tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.setenv("TL_COURSE_CACHE", "~/tl_cache")
    _cache(frozen, two_photos, small_preprocess)
    assert len(_names(home / "tl_cache")) == 1
    _cache(frozen, two_photos, small_preprocess, directory="~/other_cache", cut=8)  # an argument too
    assert len(_names(home / "other_cache")) == 1
    assert tl_course.clear_cache("~/other_cache") and _names(home / "other_cache") == set()
    assert _names(work) == set()  # no folder literally named "~"


def test_the_graders_shared_cache_expands_the_home_folder(monkeypatch):
    from tl_course.classroom.grade import Options
    from tl_course.classroom.jobs import shared_cache

    monkeypatch.setenv("TL_COURSE_CACHE", "~/tl_cache")
    assert shared_cache(Options()) == Path.home() / "tl_cache"
