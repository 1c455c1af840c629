"""tl_course keeps its promises under bad input, interruptions and reuse (issue 9).

One test (or a few) per finding, each through the public API: a wrong result becomes the right result or
one clear sentence, and nothing computed is lost."""
from __future__ import annotations

import copy
import io
import json
import os
import random
import shutil
import stat
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms import v2

import tl_course
from tl_course import cache as C
from tl_course.checks import check_head, check_only_head_trains, snapshot
from tl_course.data import ImageDataset, Samples, image_folder_splits, train_transform
from tl_course.cache import cached_features, load_features
from tl_course.features import extract_features
from tl_course.freezing import build_optimizer, freeze, replace_top_stages, stages, unfreeze
from tl_course.models import load_pretrained, load_random_init, replace_head
from tl_course.training import History, TrainOptions, evaluate, fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_photos(few_photos):
    return Samples(few_photos.files[:2], few_photos.labels[:2], few_photos.classes)


def _cache(model, samples, preprocess, directory, **kwargs):
    return cached_features(model, samples, preprocess, directory=directory, progress=False, device="cpu", **kwargs)


def _pt_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".pt")


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message and message.rstrip().endswith((".", "?", ")")), message
    return message


# ---------------------------------------------------------------------------------------------
# The cache key: labels, preprocessing identity, integrity
# ---------------------------------------------------------------------------------------------
def test_relabelled_files_get_their_new_labels_without_recomputing(frozen, two_photos, small_preprocess, tmp_path,
                                                                   count_extractions):
    first = _cache(frozen, two_photos, small_preprocess, tmp_path)
    relabelled = Samples(two_photos.files, [2, 2], ("Tigger", "Misty", "neither"))
    again = _cache(frozen, relabelled, small_preprocess, tmp_path)
    assert again.labels.tolist() == [2, 2]  # not the stale [0, 0]
    assert again.fingerprint != first.fingerprint
    assert torch.equal(again.features, first.features)
    assert len(count_extractions) == 1  # the activations were reused, not recomputed
    renamed = Samples(two_photos.files, [2, 2], ("cat", "other cat", "anything else"))
    assert _cache(frozen, renamed, small_preprocess, tmp_path).classes == renamed.classes
    # and reading the relabelled file back gives the new labels too
    assert load_features(next(p for p in _pt_files(tmp_path) if again.fingerprint[:24] in p.name)).labels.tolist() \
        == [2, 2]


def _flip_feature_bytes(path: Path, features: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    needle = features.contiguous().numpy().tobytes()[:64]
    at = bytes(data).find(needle)
    assert at >= 0, "stored tensor not found in the file"
    for i in range(at + 3, at + 64, 4):  # the high byte of 16 float32 values: huge numbers or NaN
        data[i] ^= 0x7F
    path.write_bytes(bytes(data))


def test_corrupted_cache_is_detected_and_recomputed(frozen, two_photos, small_preprocess, tmp_path, count_extractions):
    good = _cache(frozen, two_photos, small_preprocess, tmp_path)
    (path,) = _pt_files(tmp_path)
    _flip_feature_bytes(path, good.features)
    with pytest.raises(ValueError, match="damaged"):
        load_features(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _cache(frozen, two_photos, small_preprocess, tmp_path)
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert len(count_extractions) == 2
    assert torch.equal(again.features, good.features) and torch.isfinite(again.features).all()
    assert torch.equal(load_features(path).features, good.features)  # rewritten whole


def test_lambda_and_plain_function_need_a_declared_identity(frozen, two_photos, small_preprocess, tmp_path):
    double = v2.Lambda(lambda img: small_preprocess(img) * 2)
    with pytest.raises(ValueError, match="preprocess_id") as err:
        _cache(frozen, two_photos, double, tmp_path)
    _one_sentence(err)

    def plain(img):
        return small_preprocess(img)

    with pytest.raises(ValueError, match="preprocess_id"):
        _cache(frozen, two_photos, plain, tmp_path)
    # Two different lambdas with two names: two different results, no mix-up.
    halve = v2.Lambda(lambda img: small_preprocess(img) * 0.5)
    a = _cache(frozen, two_photos, double, tmp_path, preprocess_id="double")
    b = _cache(frozen, two_photos, halve, tmp_path, preprocess_id="halve")
    assert not torch.equal(a.features, b.features)
    # A named plain function is a cache hit the second time (one file, not one per run).
    _cache(frozen, two_photos, plain, tmp_path, preprocess_id="plain v1")
    n = len(_pt_files(tmp_path))
    _cache(frozen, two_photos, plain, tmp_path, preprocess_id="plain v1")
    assert len(_pt_files(tmp_path)) == n


def test_random_transforms_are_refused(frozen, two_photos, small_preprocess, tmp_path):
    with pytest.raises(ValueError, match="RandomResizedCrop.*random") as err:
        _cache(frozen, two_photos, train_transform(small_preprocess), tmp_path)
    _one_sentence(err)
    with pytest.raises(ValueError, match="random"):  # a name does not make it deterministic
        _cache(frozen, two_photos, v2.Compose([v2.RandomHorizontalFlip(), small_preprocess]), tmp_path,
               preprocess_id="flip")
    assert not tmp_path.exists() or not _pt_files(tmp_path)


def test_deterministic_v2_pipelines_get_an_identity_from_their_parameters(frozen, two_photos, small_preprocess,
                                                                          tmp_path):
    def pipeline(mean):
        return v2.Compose([v2.Resize(72), v2.CenterCrop(64), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(mean=[mean] * 3, std=[0.5] * 3)])

    a = _cache(frozen, two_photos, pipeline(0.5), tmp_path)
    b = _cache(frozen, two_photos, pipeline(0.4), tmp_path)  # repr-equal up to a number: must not share a key
    assert a.fingerprint != b.fingerprint and not torch.equal(a.features, b.features)
    assert _cache(frozen, two_photos, pipeline(0.5), tmp_path).fingerprint == a.fingerprint


# ---------------------------------------------------------------------------------------------
# Files: non-UTF-8 names, unwritable folders, permissions, stale temp files, eviction
# ---------------------------------------------------------------------------------------------
def test_file_names_that_are_not_utf8_work(frozen, few_photos, small_preprocess, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    target = os.path.join(os.fsencode(folder), b"caf\xe9-\xff.jpg")  # latin-1 bytes from another OS's zip
    try:
        shutil.copyfile(few_photos.files[0], target)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    photo = Path(os.fsdecode(target))
    samples = Samples([photo], [0], few_photos.classes)
    fs = _cache(frozen, samples, small_preprocess, tmp_path / "cache")
    assert fs.files == [str(photo)]
    again = _cache(frozen, samples, small_preprocess, tmp_path / "cache")
    assert torch.equal(again.features, fs.features) and len(_pt_files(tmp_path / "cache")) == 1


def test_misplaced_cache_folder_still_returns_the_features(frozen, two_photos, small_preprocess, tmp_path,
                                                          monkeypatch):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TL_COURSE_CACHE", str(not_a_folder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = cached_features(frozen, two_photos, small_preprocess, progress=False, device="cpu")
    assert len(fs) == 2 and torch.isfinite(fs.features).all()
    assert len(caught) == 1 and "TL_COURSE_CACHE" in str(caught[0].message)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_cache_folder_still_returns_the_features(frozen, two_photos, small_preprocess, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.warns(UserWarning, match="Could not save"):
            fs = _cache(frozen, two_photos, small_preprocess, folder)
        assert len(fs) == 2
    finally:
        folder.chmod(0o755)


def test_cache_files_follow_the_umask_and_stale_temp_files_are_removed(frozen, two_photos, small_preprocess,
                                                                       tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / f".ResNet-cut9-{'d' * 8}-{'e' * 24}.pt.abc.tmp"
    stale.write_bytes(b"half a file from a killed writer")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    fresh = tmp_path / f".ResNet-cut9-{'1' * 8}-{'2' * 24}.pt.def.tmp"  # a writer at work right now: left alone
    fresh.write_bytes(b"being written")
    yours = tmp_path / ".notes.ipynb.abc.tmp"  # not the cache's: never deleted, however old
    yours.write_bytes(b"an editor's temp file")
    os.utime(yours, (hours_ago, hours_ago))
    old_mask = os.umask(0o022)
    try:
        _cache(frozen, two_photos, small_preprocess, tmp_path)
    finally:
        os.umask(old_mask)
    (path,) = _pt_files(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not stale.exists() and fresh.exists() and yours.exists()


def test_cache_is_pruned_least_recently_used_first(frozen, few_photos, small_preprocess, tmp_path, monkeypatch):
    one = Samples(few_photos.files[:1], few_photos.labels[:1], few_photos.classes)
    two = Samples(few_photos.files[1:2], few_photos.labels[1:2], few_photos.classes)
    _cache(frozen, one, small_preprocess, tmp_path)
    (first,) = _pt_files(tmp_path)
    os.utime(first, (time.time() - 60, time.time() - 60))
    monkeypatch.setenv("TL_COURSE_CACHE_MAX_GB", str(first.stat().st_size * 1.5 / 1e9))  # room for one file
    _cache(frozen, two, small_preprocess, tmp_path)
    (kept,) = _pt_files(tmp_path)
    assert kept != first  # the older one went, the new one stays
    assert C.prune_cache(max_bytes=10**12, directory=tmp_path) == []
    assert C.clear_cache(tmp_path) == [kept] and _pt_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# extract_features and devices
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_one_sentence(frozen, two_photos, small_preprocess):
    with pytest.raises(ValueError, match="no CUDA") as err:
        extract_features(frozen, ImageDataset(two_photos, small_preprocess), device="cuda")
    _one_sentence(err)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_extract_features_moves_the_whole_model(frozen, two_photos, small_preprocess):
    extract_features(frozen, ImageDataset(two_photos, small_preprocess), device="cuda")
    assert {p.device.type for p in frozen.parameters()} == {"cuda"}


# ---------------------------------------------------------------------------------------------
# Frozen models: save / load / state_dict / print / unfreeze
# ---------------------------------------------------------------------------------------------
def test_frozen_model_round_trips_and_shows_it_is_frozen(frozen, pretrained):
    keys = list(replace_head(copy.deepcopy(pretrained.model), 3).state_dict())
    assert list(frozen.state_dict()) == keys  # same keys: checkpoints load both ways
    buffer = io.BytesIO()
    torch.save(frozen, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    loaded.train()
    bns = [m for m in stages(loaded)[0].modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # still frozen after loading
    assert get_classifier_training(loaded)
    x = torch.randn(2, 3, 64, 64)
    frozen.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(frozen(x), loaded(x))
    fresh = replace_head(copy.deepcopy(pretrained.model), 3)
    fresh.load_state_dict(frozen.state_dict())
    assert "EvalMode" in repr(frozen) and repr(frozen.bn1).startswith("EvalMode")
    assert isinstance(frozen.bn1, nn.BatchNorm2d)
    plain_types = [type(m) for m in fresh.modules()]
    unfreeze(frozen)
    assert [type(m) for m in frozen.modules()] == plain_types  # unfreeze undoes every class swap
    assert "EvalMode" not in repr(frozen)
    frozen.train()
    assert all(m.training for m in frozen.modules())


def get_classifier_training(model) -> bool:
    return model.classifier.training


def test_plain_batchnorm_becomes_eval_mode_batchnorm2d():
    model = load_random_init("resnet18", image_size=64).model
    freeze(replace_head(model, 3), trainable_stages=1)
    assert type(model.bn1) is tl_course.EvalModeBatchNorm2d
    model2 = copy.deepcopy(model)
    assert type(model2.layer1[0].bn1) is tl_course.EvalModeBatchNorm2d
    unfreeze(model)
    assert type(model.bn1) is nn.BatchNorm2d


# ---------------------------------------------------------------------------------------------
# Train / eval modes restored exactly; checks leave the caller's objects alone
# ---------------------------------------------------------------------------------------------
def test_replace_top_stages_keeps_an_eval_model_in_eval():
    model = load_random_init("resnet18", image_size=64).model.eval()
    new = replace_top_stages(model, n_stages=2, num_classes=3, image_size=64)
    assert not any(m.training for m in model.modules())
    assert not any(m.training for s in stages(new)[:-1] for m in s.modules())


class _Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        raise RuntimeError("boom")


def test_evaluate_and_check_head_restore_modes_even_on_error():
    model = _Boom().train()
    model.bn.eval()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(model, (torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)), device="cpu")
    assert model.training and model.linear.training and not model.bn.training
    with pytest.raises(RuntimeError, match="boom"):
        check_head(model, 3)
    assert model.training and model.linear.training and not model.bn.training


def test_check_only_head_trains_leaves_model_and_optimizer_untouched(lite0):
    model = freeze(replace_head(lite0, 3), trainable_stages=1)
    optimizer = build_optimizer(model, lr=1e-2)
    model.eval()
    before, opt_before = snapshot(model), copy.deepcopy(optimizer.state_dict())
    check_only_head_trains(model, optimizer, model.classifier)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert optimizer.state_dict()["state"] == opt_before["state"] == {}
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())


# ---------------------------------------------------------------------------------------------
# fit: Ctrl-C, non-finite numbers, scheduler, weight decay, the caller's RNG
# ---------------------------------------------------------------------------------------------
def _toy(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return x, y


class _StopAt(nn.Module):
    """A linear model that raises KeyboardInterrupt on its ``at``-th training forward pass (Ctrl-C)."""

    def __init__(self, at: int):
        super().__init__()
        self.linear = nn.Linear(8, 3)
        self.calls, self.at = 0, at

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        return self.linear(x)


def test_ctrl_c_keeps_the_best_weights_and_the_history():
    train, val = _toy(64, 0), _toy(40, 1)
    model = _StopAt(at=2 * 5 + 3)  # 2 batches of 32 per epoch: interrupted inside epoch 7
    torch.manual_seed(0)
    model.linear.reset_parameters()
    history = History()
    with pytest.raises(KeyboardInterrupt) as err:
        fit(model, train, val, epochs=50, lr=0.5, batch_size=32, device="cpu", progress=False, history=history)
    assert err.value.history is history and len(history.epochs) == 6
    best = history.epochs[history.best_epoch - 1]
    now = evaluate(model, val, device="cpu")
    assert now.accuracy == pytest.approx(best["val_acc"]) and now.loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert "best epoch" in "".join(getattr(err.value, "__notes__", []))


def test_non_finite_inputs_are_refused_and_a_nan_loss_stops_training():
    x, y = _toy()
    x[3, 2] = float("nan")
    model = nn.Linear(8, 3)
    before = snapshot(model)
    with pytest.raises(ValueError, match="NaN") as err:
        fit(model, (x, y), epochs=2, device="cpu", progress=False)
    _one_sentence(err)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    class Explodes(nn.Linear):  # finite inputs, a loss that becomes NaN in epoch 2 (say, a too high lr)
        calls = 0

        def forward(self, inp):
            Explodes.calls += 1
            out = super().forward(inp)
            return out * float("nan") if Explodes.calls > 2 else out

    model = Explodes(8, 3)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        fit(model, _toy(), epochs=3, batch_size=32, device="cpu", progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_scheduler_only_steps_after_real_optimizer_steps(monkeypatch):
    class SkippingScaler:  # what GradScaler does when every step overflows: skip it and lower the scale
        def __init__(self, *args, **kwargs):
            self.scale_value = 2.0 ** 16

        def scale(self, loss):
            return loss

        def step(self, optimizer):
            return None

        def update(self):
            self.scale_value /= 2

        def get_scale(self):
            return self.scale_value

    monkeypatch.setattr(torch.amp, "GradScaler", SkippingScaler)
    model = nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a scheduler steps before its optimizer
        fit(model, _toy(), epochs=2, optimizer=optimizer, device="cpu", progress=False)
    assert optimizer.param_groups[0]["lr"] == 0.1  # the schedule did not advance


def test_adamw_does_not_decay_biases_and_norm_weights(lite0):
    model = unfreeze(replace_head(lite0, 3))
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.0 if p.ndim <= 1 else 0.05), name  # biases and norm weights: no decay
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_fit_leaves_the_callers_random_numbers_alone_and_repeats():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = draws()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    torch.manual_seed(1)
    m1 = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    m2 = copy.deepcopy(m1)
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    h1 = fit(m1, _toy(), _toy(20, 1), epochs=3, device="cpu", progress=False,
             options=TrainOptions(seed=3))
    assert draws() == expected  # as if fit had not run
    h2 = fit(m2, _toy(), _toy(20, 1), epochs=3, device="cpu", progress=False,
             options=TrainOptions(seed=3))
    assert [e["train_loss"] for e in h1.epochs] == [e["train_loss"] for e in h2.epochs]  # dropout, shuffle: seeded


# ---------------------------------------------------------------------------------------------
# Bad arguments: one sentence each
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: fit(nn.Linear(8, 3), (torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)), device="cpu",
                 progress=False), "train set is empty"),
    (lambda: fit(nn.Linear(8, 3), _toy(), (torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)), device="cpu",
                 progress=False), "val set is empty"),
    (lambda: fit(nn.Linear(8, 3), _toy(), epochs=-1, device="cpu", progress=False), "epochs"),
    (lambda: fit(nn.Linear(8, 3), _toy(), batch_size=0, device="cpu", progress=False), "batch_size"),
    (lambda: fit(nn.Linear(8, 3), (torch.zeros(5, 8), torch.zeros(4, dtype=torch.long)), device="cpu",
                 progress=False), "5 feature rows but 4 labels"),
    (lambda: fit(nn.Linear(8, 2), _toy(), device="cpu", progress=False), "labels run from 0 to 2"),
    (lambda: evaluate(nn.Linear(8, 2), _toy(), device="cpu"), "labels run from 0 to 2"),
    (lambda: replace_head(nn.Sequential(nn.Linear(8, 1000)), 0), "num_classes"),
    (lambda: load_pretrained(image_size=0), "image_size"),
])
def test_bad_arguments_are_one_sentence(call, match):
    with pytest.raises(ValueError, match=match) as err:
        call()
    _one_sentence(err)


def test_one_class_folder_is_refused(tmp_path, few_photos):
    for split in ("train", "val"):
        (tmp_path / split / "cats").mkdir(parents=True)
        for f in few_photos.files[:2]:
            shutil.copy(f, tmp_path / split / "cats" / f.name)
    with pytest.raises(ValueError, match="at least two classes") as err:
        image_folder_splits(tmp_path)
    _one_sentence(err)


@pytest.mark.parametrize("argv", [["--head-epochs", "0"], ["--images", "0"], ["--ks", "0"]])
def test_bench_refuses_zero_sizes(argv, capsys):
    from tl_course.book import bench

    with pytest.raises(SystemExit) as err:
        bench.main(argv)
    message = capsys.readouterr().err
    assert err.value.code == 2 and ("at least 1" in message or "between 1" in message), message


def test_a_bad_profile_does_not_break_help(monkeypatch, capsys):
    from tl_course import __main__ as cli
    from tl_course.book import bench
    from tl_course.classroom import __main__ as classroom

    monkeypatch.setenv("TL_COURSE_PROFILE", "laptop")
    for main, argv in ((bench.main, ["--help"]), (cli.main, ["--help"]), (cli.main, ["demo", "--help"]),
                       (classroom.main, ["release", "--help"]), (classroom.main, ["grade", "--help"])):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 0
        assert "usage" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:  # and running with it is one sentence, not a traceback
        bench.main([])
    assert err.value.code == 2 and "Unknown TL_COURSE_PROFILE 'laptop'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# release: nbgrader's real cause
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("breakage, match", [
    ("no_end", r"cell \d+ \(\w+\) has 1 '### BEGIN SOLUTION' but 0 '### END SOLUTION'"),
    ("json", "not valid JSON"),
    ("duplicate", "grade id '\\w+' twice"),
])
def test_release_names_the_real_cause(breakage, match, tmp_path):
    from tl_course.classroom.release import release

    name = "ch01_pretrained_weights"
    source = (ROOT / "solutions" / name / f"{name}.ipynb").read_text()
    if breakage == "no_end":
        source = source.replace("### END SOLUTION", "", 1)
    elif breakage == "json":
        source = source[:-40]
    else:
        nb = json.loads(source)
        graded = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id")]
        graded[3]["metadata"]["nbgrader"]["grade_id"] = graded[2]["metadata"]["nbgrader"]["grade_id"]
        source = json.dumps(nb)
    (tmp_path / "solutions" / name).mkdir(parents=True)
    (tmp_path / "solutions" / name / f"{name}.ipynb").write_text(source)
    for config in ("_config.yml", "pyproject.toml"):  # a course root has them; the release reads both
        (tmp_path / config).write_text((ROOT / config).read_text())
    with pytest.raises(RuntimeError, match=match) as err:
        release(name, root=tmp_path, release_dir=tmp_path / "out")
    assert "see the" not in str(err.value).lower()


def test_check_only_head_trains_accepts_a_freeze_done_with_hooks():
    # A student's freeze may keep BatchNorm in eval with a hook that refers to the original modules: the
    # check must step the caller's model (and restore it), not a copy the hook does not reach.
    model = replace_head(load_random_init("resnet18", image_size=64).model, 3)
    head = model.fc
    for p in model.parameters():
        p.requires_grad = any(p is q for q in head.parameters())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def keep_bn_in_eval(module, inputs):
        for bn in bns:
            bn.eval()

    model.register_forward_pre_hook(keep_bn_in_eval)
    before = snapshot(model)
    check_only_head_trains(model, torch.optim.SGD(head.parameters(), lr=0.1), head)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
