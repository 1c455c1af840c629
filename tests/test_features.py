"""tl_course.features: cached activations give exactly the frozen model's logits, the cache is reused,
invalidated by anything that changes the activations (and by nothing else), written atomically and
read without pickle."""
from __future__ import annotations

import os
import pickle
import shutil
import warnings

import pytest
import torch

from tl_course import cache as C
from tl_course.cache import cached_features, load_features, save_features
from tl_course.data import ImageDataset, Samples, load_rgb
from tl_course.features import FeatureSet, extract_features, features_fingerprint, top_stages
from tl_course.freezing import freeze, stages
from tl_course.models import replace_head


def _images(samples: Samples, preprocess) -> torch.Tensor:
    return torch.stack([preprocess(load_rgb(f)) for f in samples.files])


def _cache(frozen, samples, preprocess, directory, **kwargs) -> FeatureSet:
    return cached_features(frozen, samples, preprocess, directory=directory, progress=False, device="cpu", **kwargs)


def _files(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------------------------
# Cached features compute the frozen model
# ---------------------------------------------------------------------------------------------
def test_cached_head_logits_equal_the_frozen_model(frozen, few_photos, small_preprocess, tmp_path):
    fs = _cache(frozen, few_photos, small_preprocess, tmp_path)
    assert fs.cut == len(stages(frozen)) - 1 == 9
    assert fs.features.shape == (len(few_photos), 1280)
    assert fs.labels.tolist() == few_photos.labels
    assert fs.files == [str(f) for f in few_photos.files]
    frozen.eval()
    with torch.no_grad():
        expected = frozen(_images(few_photos, small_preprocess))
        logits = top_stages(frozen)(fs.features)
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0)


def test_deeper_cut_top_stages_equal_the_frozen_model(lite0, few_photos, small_preprocess, tmp_path):
    model = freeze(replace_head(lite0, 3), trainable_stages=3)
    cut = len(stages(model)) - 3
    fs = _cache(model, few_photos, small_preprocess, tmp_path, cut=cut)
    assert fs.cut == cut and fs.features.ndim == 4  # a feature map (N, C, H, W), before pooling
    model.eval()
    with torch.no_grad():
        expected = model(_images(few_photos, small_preprocess))
        logits = top_stages(model, cut)(fs.features)
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# Reuse and invalidation
# ---------------------------------------------------------------------------------------------
def test_cache_is_reused_and_invalidated_only_by_what_changes_the_activations(
        frozen, few_photos, small_preprocess, tmp_path, count_extractions):
    from tl_course.models import load_pretrained

    photos = Samples(few_photos.files[:3], few_photos.labels[:3], few_photos.classes)
    first = _cache(frozen, photos, small_preprocess, tmp_path)
    assert len(count_extractions) == 1 and len(_files(tmp_path)) == 1

    again = _cache(frozen, photos, small_preprocess, tmp_path)  # reused
    assert len(count_extractions) == 1
    assert torch.equal(again.features, first.features) and again.fingerprint == first.fingerprint

    # The head's weights are not part of the cached function: still reused.
    with torch.no_grad():
        frozen.classifier.weight.add_(1.0)
    assert _cache(frozen, photos, small_preprocess, tmp_path).fingerprint == first.fingerprint
    assert len(count_extractions) == 1

    seen = {first.fingerprint}

    def assert_recomputed(fs: FeatureSet) -> None:
        assert fs.fingerprint not in seen
        seen.add(fs.fingerprint)
        assert len(count_extractions) == len(seen)
        assert len(_files(tmp_path)) == len(seen)  # a new file, the old ones kept

    # A different file list.
    fewer = Samples(photos.files[:2], photos.labels[:2], photos.classes)
    assert_recomputed(_cache(frozen, fewer, small_preprocess, tmp_path))
    # A different cut.
    assert_recomputed(_cache(frozen, photos, small_preprocess, tmp_path, cut=8))
    # Different preprocessing (image size).
    assert_recomputed(_cache(frozen, photos, load_pretrained(image_size=72).preprocess, tmp_path))
    # A frozen stage's weights change.
    with torch.no_grad():
        frozen.conv_stem.weight.mul_(1.01)
    changed = _cache(frozen, photos, small_preprocess, tmp_path)
    assert_recomputed(changed)
    assert not torch.equal(changed.features, first.features)
    # A frozen BatchNorm statistic changes.
    with torch.no_grad():
        frozen.bn2.running_mean.add_(0.1)
    assert_recomputed(_cache(frozen, photos, small_preprocess, tmp_path))


def test_fingerprint_follows_the_file_contents(frozen, few_photos, small_preprocess, tmp_path):
    copies = []
    for f in few_photos.files[:2]:
        copies.append(tmp_path / f.name)
        shutil.copy2(f, copies[-1])
    photos = Samples(copies, few_photos.labels[:2], few_photos.classes)
    before = features_fingerprint(frozen, photos.files, small_preprocess)
    assert features_fingerprint(frozen, photos.files, small_preprocess) == before  # deterministic
    st = os.stat(copies[0])
    os.utime(copies[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the photo was edited
    assert features_fingerprint(frozen, photos.files, small_preprocess) != before
    assert features_fingerprint(frozen, photos.files[::-1], small_preprocess) != before  # order matters


# ---------------------------------------------------------------------------------------------
# Robust files
# ---------------------------------------------------------------------------------------------
def test_interrupted_write_leaves_nothing_that_loads(frozen, few_photos, small_preprocess, tmp_path, monkeypatch):
    photos = Samples(few_photos.files[:2], few_photos.labels[:2], few_photos.classes)
    cache = tmp_path / "cache"
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(C.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _cache(frozen, photos, small_preprocess, cache)
    assert _files(cache) == []  # no target file, no temp file
    monkeypatch.setattr(C.torch, "save", real_save)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing half-written is found and complained about
        fs = _cache(frozen, photos, small_preprocess, cache)
    assert len(fs) == 2 and len(_files(cache)) == 1


def test_damaged_cache_warns_once_and_is_recomputed(frozen, few_photos, small_preprocess, tmp_path,
                                                    count_extractions):
    photos = Samples(few_photos.files[:2], few_photos.labels[:2], few_photos.classes)
    good = _cache(frozen, photos, small_preprocess, tmp_path)
    (path,) = tmp_path.iterdir()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _cache(frozen, photos, small_preprocess, tmp_path)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "feature cache" in str(caught[0].message) and str(path) in str(caught[0].message)
    assert len(count_extractions) == 2
    assert torch.equal(again.features, good.features)
    assert torch.equal(load_features(path).features, good.features)  # the file was rewritten whole


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    with open(path, "w") as f:
        f.write("code ran while loading")
    return path


def test_load_features_uses_no_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"features": torch.zeros(1, 2), "labels": torch.zeros(1, dtype=torch.long), "files": ["a"],
                "cut": 1, "fingerprint": "x", "extra": _Evil(str(marker))}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_features(path)
    assert not marker.exists()
    # A plain file written by save_features loads.
    fs = FeatureSet(torch.ones(2, 3), torch.tensor([0, 2]), ["a.jpg", "b.jpg"], 9, "abc")
    back = load_features(save_features(fs, tmp_path / "ok.pt"))
    assert torch.equal(back.features, fs.features) and back.labels.tolist() == [0, 2]
    assert (back.files, back.cut, back.fingerprint) == (fs.files, 9, "abc")


def test_fp16_stores_half_and_returns_float32(frozen, few_photos, small_preprocess, tmp_path):
    photos = Samples(few_photos.files[:3], few_photos.labels[:3], few_photos.classes)
    full = _cache(frozen, photos, small_preprocess, tmp_path / "fp32")
    half = _cache(frozen, photos, small_preprocess, tmp_path / "fp16", fp16=True)
    assert half.fingerprint != full.fingerprint
    (path,) = (tmp_path / "fp16").iterdir()
    assert load_features(path).features.dtype == torch.float16
    for fs in (half, _cache(frozen, photos, small_preprocess, tmp_path / "fp16", fp16=True)):  # fresh and cached
        assert fs.features.dtype == torch.float32
        assert torch.allclose(fs.features, full.features, rtol=1e-2, atol=1e-2)
    assert (path.stat().st_size < 0.75 * next((tmp_path / "fp32").iterdir()).stat().st_size)


# ---------------------------------------------------------------------------------------------
# extract_features
# ---------------------------------------------------------------------------------------------
def test_extract_features_restores_flags_and_is_deterministic(frozen, few_photos, small_preprocess):
    frozen.train()
    flags = {name: m.training for name, m in frozen.named_modules()}
    assert any(flags.values()) and not all(flags.values())
    dataset = ImageDataset(few_photos, small_preprocess)

    x1, y1 = extract_features(frozen, dataset, device="cpu", batch_size=4)
    assert {name: m.training for name, m in frozen.named_modules()} == flags
    x2, _ = extract_features(frozen, dataset, device="cpu", batch_size=4)

    assert x1.device.type == "cpu" and x1.dtype == torch.float32 and x1.shape == (len(few_photos), 1280)
    assert y1.dtype == torch.int64 and y1.tolist() == few_photos.labels
    assert not x1.requires_grad
    assert torch.equal(x1, x2)  # a fixed function of the image
    # Dropout / BatchNorm in eval: the same as the eval model's own bottom.
    frozen.eval()
    with torch.no_grad():
        expected = torch.nn.Sequential(*stages(frozen)[:-1])(_images(few_photos, small_preprocess))
    assert torch.allclose(x1, expected, atol=1e-5, rtol=0)
