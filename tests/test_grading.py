"""tl_course.grading: the helpers hidden test cells use. Fast: no notebook, tiny models, file names only
where possible."""
from __future__ import annotations

import sys
import threading

import pytest
import torch
from torch import nn

from tl_course import grading
from tl_course.profiles import get_profile

from conftest import DATA, needs_pets


# ---------------------------------------------------------------------------------------------
# Held-out photos
# ---------------------------------------------------------------------------------------------
def test_split_sizes_counts_the_largest_split_a_notebook_or_the_book_builds():
    ci = get_profile("ci")
    book = ci.pets_test_per_class + ci.pets_val_per_class + max(ci.pets_sizes)
    notebooks = ci.test_per_class + ci.val_per_class + 2 * ci.train_per_class
    assert grading.split_sizes(ci) == max(book, notebooks) == book
    big = get_profile("ci", train_per_class=500)
    assert grading.split_sizes(big) == ci.test_per_class + ci.val_per_class + 2 * 500


@needs_pets
def test_held_out_is_disjoint_from_the_books_pets_splits():
    """domain_setup("pets") at ci takes pets_test + pets_val + max(pets_sizes) photos per class; per_class=20 at ci
    used to return 8 of its training photos."""
    from tl_course.data import cat_detector_splits

    ci = get_profile("ci")
    pets = cat_detector_splits(max(ci.pets_sizes), ci.pets_val_per_class, ci.pets_test_per_class, seed=0, root=DATA)
    used = set(pets.train.files) | set(pets.val.files) | set(pets.test.files)
    held = grading.held_out_samples(per_class=15, profile=ci, root=DATA)
    assert not used & set(held.files)
    with pytest.raises(ValueError, match="leaving 16 < 20 held out"):
        grading.held_out_samples(per_class=20, profile=ci, root=DATA)


@needs_pets
@pytest.mark.parametrize("profile_name", ["ci", "cpu"])
def test_held_out_photos_are_in_no_split_the_profile_can_build(profile_name):
    from tl_course.data import _cat_detector_pools, find_pet_images

    profile = get_profile(profile_name)
    held = grading.held_out_samples(per_class=10, profile=profile, root=DATA)
    assert held.counts() == {"Tigger": 10, "Misty": 10, "neither": 10}
    held_files = set(held.files)
    assert len(held_files) == 30
    # every file any cat_detector_splits(seed=0) at this profile's sizes (sweeps included) can use
    reached = grading.split_sizes(profile)
    pools = _cat_detector_pools(find_pet_images(DATA), seed=0)
    reachable = {f for pool in pools for f in pool[:reached]}
    assert not held_files & reachable
    # labels are right
    from tl_course.data import breed_of, cat_label

    assert all(cat_label(breed_of(f)) == y for f, y in zip(held.files, held.labels))


@needs_pets
def test_held_out_is_disjoint_from_the_real_ci_splits():
    from tl_course.data import cat_detector_splits

    ci = get_profile("ci")
    splits = cat_detector_splits(ci.train_per_class, ci.val_per_class, ci.test_per_class,
                                 seed=0, root=DATA)
    used = set(splits.train.files) | set(splits.val.files) | set(splits.test.files)
    held = grading.held_out_samples(per_class=10, profile=ci, root=DATA)
    assert not used & set(held.files)


@needs_pets
def test_held_out_refuses_a_profile_that_uses_every_photo():
    with pytest.raises(ValueError, match="grade with the ci or cpu profile"):
        grading.held_out_samples(per_class=10, profile=get_profile("gpu"), root=DATA)
    with pytest.raises(ValueError, match="per_class"):
        grading.held_out_samples(per_class=0, profile=get_profile("ci"), root=DATA)


# ---------------------------------------------------------------------------------------------
# The tracer
# ---------------------------------------------------------------------------------------------
def _library(x):
    return x + 1


class _Thing:
    def method(self, x):
        return _library(x)


def test_trace_sees_forbidden_calls_by_any_name_and_restores_the_profiler():
    alias = _library  # a student's own binding of the same function
    before = sys.getprofile()

    def student_uses_library(x):
        return alias(x) * 2

    def student_by_hand(x):
        return (x + 1) * 2

    r, t = grading.traced(student_uses_library, 1, forbidden={"_library": _library})
    assert r == 4 and t.forbidden_called() == ["_library"] and t.calls["_library"][0]["x"] == 1
    r, t = grading.traced(student_by_hand, 1, forbidden={"_library": _library})
    assert r == 4 and t.forbidden_called() == []
    # methods (bound or not) are watched through their code object
    _, t = grading.traced(lambda: _Thing().method(3), forbidden={"method": _Thing().method})
    assert t.forbidden_called() == ["method"] and t.calls["method"][0]["x"] == 3
    assert sys.getprofile() is before


def test_trace_restores_the_profiler_when_the_student_code_raises():
    before = sys.getprofile()

    def boom():
        raise RuntimeError("student bug")

    with pytest.raises(RuntimeError):
        grading.traced(boom, forbidden={"_library": _library})
    assert sys.getprofile() is before
    if hasattr(threading, "getprofile"):
        assert threading.getprofile() is None


def test_trace_records_arguments_and_image_files(tmp_path):
    from PIL import Image

    from tl_course.data import load_rgb

    path = tmp_path / "Bengal_1.jpg"
    Image.new("RGB", (8, 8), "red").save(path)

    def fit_like(model, train, val=None, epochs=1):
        return epochs

    def student():
        load_rgb(path)
        return fit_like("m", "train-set", val="val-set", epochs=3)

    _, t = grading.traced(student, watch={"fit": fit_like})
    (call,) = t.calls["fit"]
    assert call["train"] == "train-set" and call["val"] == "val-set" and call["epochs"] == 3
    assert t.files_read() == {path}


def test_forbidden_presets_cover_the_library_shortcuts():
    import tl_course
    from tl_course.models import load_random_init

    assert "tl_course.replace_head" in dict(grading.FORBIDDEN_HEAD.items())
    assert "tl_course.freeze" in dict(grading.FORBIDDEN_FREEZE.items())
    net = load_random_init("resnet18", image_size=32).model
    _, t = grading.traced(tl_course.replace_head, net, 3, forbidden=grading.FORBIDDEN_HEAD)
    assert t.forbidden_called() == ["tl_course.replace_head"]
    _, t = grading.traced(tl_course.freeze, net, forbidden=grading.FORBIDDEN_FREEZE)
    assert "tl_course.freeze" in t.forbidden_called()
    timm = pytest.importorskip("timm")
    effnet = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    _, t = grading.traced(effnet.reset_classifier, 3, forbidden=grading.FORBIDDEN_HEAD)
    assert t.forbidden_called() == ["timm EfficientNet.reset_classifier"]


def test_forbidden_presets_answer_keys_in_and_get_before_any_other_use():
    """Issue 15: the lazy presets answered as empty for keys(), `in` and .get until items() had filled them."""
    for preset, name in ((grading.FORBIDDEN_HEAD, "tl_course.replace_head"), (grading.FORBIDDEN_FREEZE, "tl_course.freeze")):
        fresh = type(preset)(preset._make)  # not yet filled
        assert name in fresh
        fresh = type(preset)(preset._make)
        assert name in fresh.keys()
        fresh = type(preset)(preset._make)
        assert fresh.get(name) is not None and fresh[name] is not None and len(fresh) >= 1


def _decode_in_a_worker(paths):
    from tl_course.data import load_rgb

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            load_rgb(paths[i])
            return i

    return list(torch.utils.data.DataLoader(Photos(), batch_size=1, num_workers=1))


def test_trace_sees_files_decoded_in_dataloader_workers(tmp_path):
    from PIL import Image

    paths = [tmp_path / f"Bengal_{i}.jpg" for i in range(3)]
    for path in paths:
        Image.new("RGB", (8, 8), "red").save(path)
    _, t = grading.traced(_decode_in_a_worker, paths)
    assert t.files_read() == set(paths)
    assert t.worker_loaders == [1]


def test_trace_watches_a_module_object_not_every_module():
    preprocess, own = nn.Identity(), nn.Identity()
    _, t = grading.traced(lambda: own(torch.zeros(1)), watch={"preprocess": preprocess})
    assert not t.called("preprocess")
    _, t = grading.traced(lambda: preprocess(torch.zeros(1)), watch={"preprocess": preprocess})
    assert len(t.calls["preprocess"]) == 1


def test_traces_nest_and_the_outer_one_keeps_recording():
    with grading.trace(watch={"_library": _library}) as outer:
        _library(1)
        _, inner = grading.traced(_library, 2, watch={"_library": _library})
        _library(3)
    assert [c["x"] for c in inner.calls["_library"]] == [2]
    assert [c["x"] for c in outer.calls["_library"]] == [1, 2, 3]


def test_seeding_is_traced_outside_fit_only():
    import random

    from tl_course import fit, seed_everything

    model = nn.Linear(2, 2)
    data = (torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    _, t = grading.traced(fit, model, data, data, epochs=1, batch_size=2, progress=False, watch=grading.SEEDING)
    assert t.calls == {}  # fit seeds a private copy of every generator and restores them
    _, t = grading.traced(lambda: (seed_everything(0), random.seed(1)), watch=grading.SEEDING)
    assert {"tl_course.seed_everything", "torch.manual_seed", "random.seed"} <= set(t.calls)


def test_caller_state_names_each_side_effect():
    import random

    import numpy as np

    def fresh():
        torch.manual_seed(5)
        return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(), nn.Linear(3, 2))

    net = fresh()
    state = grading.CallerState.of(net)
    assert state.changes() == []
    net[2].eval()
    assert state.changes() == ["the training flag of '2' (train -> eval)"]
    net = fresh()
    state = grading.CallerState.of(net)
    net[0].weight.requires_grad = False
    net[1].train = lambda mode=True: net[1]
    net[0].register_forward_hook(lambda *a: None)
    found = state.changes()
    assert any("requires_grad of 1 parameter" in f for f in found)
    assert any("own train()" in f for f in found) and any("hooks" in f for f in found)
    net = fresh()
    state = grading.CallerState.of(net)
    np.random.seed(12345)  # a seed no earlier test used: the state differs whatever ran before
    random.seed(12345)
    assert state.changes() == ["the global Python random generator", "the global NumPy random generator"]
    state = grading.CallerState.of(net)
    torch.randn(1)
    assert state.changes(rng=("random", "numpy")) == [] and state.changes() == ["the global torch random generator"]
    with torch.no_grad():
        net[3].bias.add_(1)
    assert state.changes(rng=()) == ["1 weight or buffer tensor of the model (first: 3.bias)"]
    with pytest.raises(AssertionError, match=r"^f changed what belongs to the caller: 1 weight"):
        state.check("f", rng=())


def test_shares_state_and_devices():
    a = nn.Linear(2, 2)
    b = nn.Sequential(a)
    assert grading.shares_state(a, b) and not grading.shares_state(a, nn.Linear(2, 2))
    assert grading.devices_of({"x": [torch.zeros(1)], "y": 3}) == {"cpu"}


def test_device_probe_sees_inputs_left_on_the_cpu():
    def forgets(model, x, device):
        model.to(device)
        return model(x)

    def moves(model, x, device):
        model.to(device)
        return model(x.to(device))

    def model_stays(model, x, device):
        return model(x.to(device))

    for fn, inputs, weights in ((forgets, ["cpu"], ["meta"]), (moves, ["meta"], ["meta"]),
                                (model_stays, ["meta"], ["cpu"])):
        net = nn.Linear(2, 2)
        with grading.device_probe(net) as probe:
            fn(net, torch.zeros(1, 2), torch.device("meta"))
            raise AssertionError("never reached: the probe stops the function at the first forward")
        assert probe.reached and probe.inputs == inputs and probe.weights == weights


def test_grad_modes_records_each_forward():
    net = nn.Linear(2, 2)
    with grading.grad_modes(net) as modes:
        net(torch.zeros(1, 2)).detach()
        with torch.no_grad():
            net(torch.zeros(1, 2))
    assert modes == [True, False]


def test_head_with_dropout_and_bn_depends_on_the_mode():
    head = grading.head_with_dropout_and_bn(8, 3)
    x = torch.randn(6, 8)
    head.eval()
    a = head(x)
    head.train()
    assert not torch.allclose(a, head(x))


def test_changed_is_one_function():
    from tl_course import checks

    assert grading.changed is checks.changed
    bn = nn.BatchNorm1d(2)
    before = grading.snapshot(bn)
    bn.num_batches_tracked += 1
    assert grading.changed(before, bn) == [] and grading.changed(before, bn, ignore=()) == ["num_batches_tracked"]


def test_code_of_unwraps_decorators():
    """torch.manual_seed is wrapped by a decorator whose wrapper code many torch functions share: watching it
    must not record calls of the others."""
    import functools

    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            return f(*args, **kwargs)
        return wrapper

    one, other = deco(_library), deco(lambda x: x)
    _, t = grading.traced(other, 1, watch={"one": one})
    assert not t.called("one")
    _, t = grading.traced(one, 1, watch={"one": one})
    assert t.called("one")


def test_code_of_rejects_what_has_no_python_code():
    with pytest.raises(TypeError):
        grading.code_of(len)


# ---------------------------------------------------------------------------------------------
# BatchNorm modes, weights, feedback
# ---------------------------------------------------------------------------------------------
def test_bn_modes_and_train_mode_list():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(2)))
    m.train()
    assert grading.bn_modes(m) == {"1": True, "2.0": True}
    assert grading.bn_in_train_mode(m, skip=[m[2]]) == ["1"]
    m.eval()
    assert grading.bn_in_train_mode(m) == []


def test_changed_and_moved():
    m = nn.Linear(4, 2)
    before = grading.snapshot(m)
    assert grading.changed(before, m) == [] and grading.moved(before, m) == {}
    with torch.no_grad():
        m.weight.add_(1e-9 * torch.ones_like(m.weight))  # below a real training step: not "moved"
    assert grading.moved(before, m, min_relative=1e-4) == {}
    with torch.no_grad():
        m.weight.mul_(2.0)
    assert set(grading.moved(before, m)) == {"weight"} and grading.changed(before, m) == ["weight"]
    bn = nn.BatchNorm1d(2)
    b = grading.snapshot(bn)
    bn.num_batches_tracked += 1
    assert grading.changed(b, bn) == []  # the step counter alone is not a change of the network


def test_spy_dataset_records_reads_and_the_model_mode():
    model = nn.Linear(2, 2)
    data = [(torch.zeros(2), 0), (torch.ones(2), 1)]
    spy = grading.SpyDataset(data, model)
    assert len(spy) == 2
    model.train()
    x, y = spy[1]
    assert y == 1
    model.eval()
    spy[0]
    assert spy.reads() == [1, 0] and spy.reads(training=True) == [1] and spy.reads(training=False) == [0]
    # through fit: train photos are read in train mode, validation photos only in eval mode
    from tl_course import fit

    xs = torch.randn(8, 2)
    train = grading.SpyDataset([(xs[i], i % 2) for i in range(8)], model)
    val = grading.SpyDataset([(xs[i], i % 2) for i in range(4)], model)
    fit(model, train, val, epochs=1, batch_size=4, progress=False)
    assert sorted(train.reads(training=True)) == list(range(8)) and val.reads(training=True) == []
    assert sorted(val.reads(training=False)) == list(range(4))
    assert train.trained() == set(range(8)) and val.trained() == set()


def test_spy_dataset_knows_what_was_trained_on_whatever_the_mode():
    """A loop that keeps the whole model in eval() mode while its head trains trains on every photo; a
    validation set pooled into training is trained on though read with the model in train mode or not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2))
    xs = torch.randn(8, 2)
    train = grading.SpyDataset([(xs[i], i % 2) for i in range(8)], model)
    val = grading.SpyDataset([(xs[i], i % 2) for i in range(4)], model)
    assert train.trained() == set()
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    model.eval()
    for x, y in torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([train, val]), batch_size=4, shuffle=True):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for x, y in torch.utils.data.DataLoader(val, batch_size=4):  # a validation pass with gradients on
        model(x)
    assert train.trained() == set(range(8)) and val.trained() == set(range(4))
    assert train.reads(training=True) == []


def _train_head_with_fit(model, train, val, keep_best=True):
    from tl_course import fit, get_head

    head = get_head(model)
    for p in model.parameters():
        p.requires_grad = any(p is q for q in head.parameters())
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    if keep_best:
        return fit(model, train, val, epochs=3, optimizer=optimizer, progress=False)
    for _ in range(3):  # validates every epoch, keeps the last
        fit(model, train, val, epochs=1, optimizer=optimizer, progress=False)


def test_first_pass_best_shows_a_loop_that_keeps_the_last_epoch():
    """The selection check by construction: the best validation pass is the first, so the weights kept must
    predict what the first pass predicted."""
    for keep_best in (True, False):
        model = grading.toy_model(4, seed=1)
        train = grading.SpyDataset(grading.toy_data(60, 4, seed=1), model)
        val = grading.SpyDataset(grading.FirstPassBest(grading.toy_data(30, 4, seed=51), 4), model)
        _train_head_with_fit(model, train, val, keep_best)
        passes = val.passes()
        assert len(passes) == 3 and passes[0] > max(passes[1:])
        model.eval()
        with torch.no_grad():
            kept = model(grading.toy_data(30, 4, seed=51).tensors[0]).argmax(1).tolist()
        assert (kept == [val.pass_predictions()[0][i] for i in range(30)]) == keep_best
        assert train.trained() == set(range(60)) and val.trained() == set()
        assert val.forwards_with_gradients() == 0 and val.forwards_in_train_mode() == 0


def test_toy_data_label_sets_with_gaps():
    x, y = grading.toy_data(10, 3, labels=(1, 4, 9)).tensors
    assert set(y.tolist()) == {1, 4, 9} and x.shape == (10, 3, 4, 4)
    with pytest.raises(ValueError, match="num_classes"):
        grading.toy_data(10, 3, labels=(1, 4))


def test_fail_writes_one_sentence():
    with pytest.raises(AssertionError, match=r"^The test photos were read while training: train only on train_data\.$"):
        grading.fail("The test photos were read while training.", "train only on train_data")
    grading.check(True, "never shown")
    with pytest.raises(AssertionError, match=r"^Wrong\.$"):
        grading.check(False, "Wrong")


def test_caller_state_ignores_what_the_function_may_change():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3)).eval()
    state = grading.CallerState.of(net)
    net[1] = nn.Linear(2, 5)  # a new head, in train mode
    net[1].weight.requires_grad = False
    assert state.changes(rng=(), ignore=["1"]) == []
    net[0].train()
    assert state.changes(rng=(), ignore=["1"]) == ["the training flag of '0' (eval -> train)"]


def test_spy_dataset_sees_training_through_the_model_when_the_head_was_replaced():
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2))
    spy = grading.SpyDataset([(torch.randn(2), i % 2) for i in range(4)], model)
    model[1] = nn.Linear(4, 2)  # the student's code swapped the head: the hook on the old one never fires
    for x, y in torch.utils.data.DataLoader(spy, batch_size=2):
        nn.functional.cross_entropy(model(x), y).backward()
    assert spy.trained() == {0, 1, 2, 3}


def test_attempt_turns_a_student_error_into_one_sentence():
    def student(x):
        return [1, 2][x]

    assert grading.attempt(student, 1, on="a list of two") == 2
    with pytest.raises(AssertionError, match=r"^student failed on index 5 \(IndexError: list index out of range\): find it by place\.$"):
        grading.attempt(student, 5, on="index 5", hint="find it by place")
