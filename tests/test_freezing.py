"""tl_course.freezing: stages compute the model, frozen weights and BatchNorm statistics stay
bit-identical through real optimizer steps, and the optimizer sees only what trains."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tl_course.checks import bn_running_stats, optimizer_parameter_ids, snapshot
from tl_course.freezing import (StagedModel, build_optimizer, count_parameters, freeze, param_groups,
                                replace_top_stages, stages, trainable_parameters, unfreeze)
from tl_course.models import SUPPORTED_MODELS, get_head, load_random_init, replace_head

# From the families' records (tl_course/families.py).
N_STAGES = {"efficientnet_lite0": 10, "resnet18": 6, "resnet34": 6, "resnet50": 6, "efficientnet_b0": 10,
            "efficientnet_b1": 10, "mobilenet_v3_large": 18, "mobilenet_v3_small": 14}
BN = nn.modules.batchnorm._BatchNorm


@pytest.fixture(scope="module")
def random_models():
    """One randomly initialised model per supported family (no download), shared read-only."""
    torch.manual_seed(0)
    return {name: load_random_init(name).model for name in SUPPORTED_MODELS}


@pytest.fixture
def head3(lite0):
    """A private pretrained Lite0 with a new 3-way head."""
    return replace_head(lite0, 3)


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int = 3, size: int = 64) -> None:
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(n):
        x = torch.randn(4, 3, size, size, generator=g)
        y = torch.randint(0, 3, (4,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _stage_param_ids(stage: nn.Module) -> set[int]:
    return {id(p) for p in stage.parameters()}


def _modules(stage: nn.Module, model: nn.Module) -> list[nn.Module]:
    """The model's own modules inside a stage (stages() wraps some of them in fresh containers)."""
    own = {id(m) for m in model.modules()}
    return [m for m in stage.modules() if id(m) in own]


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------
def test_stage_count_matches_supported_models():
    assert set(N_STAGES) == set(SUPPORTED_MODELS)


@pytest.mark.parametrize("name", SUPPORTED_MODELS)
def test_stages_in_sequence_compute_the_model(name, random_models):
    model = random_models[name].eval()
    all_stages = stages(model)
    assert len(all_stages) == N_STAGES[name]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        out = x
        for stage in all_stages:
            out = stage(out)
    assert torch.allclose(out, expected, atol=1e-5, rtol=0), (out - expected).abs().max()
    # Every parameter belongs to exactly one stage, and the last stage is the head.
    ids = [id(p) for s in all_stages for p in s.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert _stage_param_ids(all_stages[-1]) >= {id(p) for p in get_head(model).parameters()}


def test_stages_share_the_models_parameters(head3):
    all_stages = stages(head3)
    model_ids = {id(p) for p in head3.parameters()}
    assert set().union(*(_stage_param_ids(s) for s in all_stages)) == model_ids


def test_stages_rejects_unknown_models():
    with pytest.raises(TypeError):
        stages(nn.Linear(3, 3))


# ---------------------------------------------------------------------------------------------
# freeze / unfreeze
# ---------------------------------------------------------------------------------------------
def test_freeze_one_stage_keeps_frozen_weights_and_bn_statistics(head3):
    freeze(head3, trainable_stages=1)
    head = get_head(head3)
    head_ids = {id(p) for p in head.parameters()}
    optimizer = build_optimizer(head3, lr=1e-2)
    assert optimizer_parameter_ids(optimizer) == head_ids
    before, stats = snapshot(head3), bn_running_stats(head3)
    assert stats  # Lite0 has BatchNorm everywhere

    _steps(head3, optimizer, n=3)

    after = head3.state_dict()
    head_keys = {"classifier.weight", "classifier.bias"}
    for key, value in before.items():
        if key in head_keys:
            assert not torch.equal(after[key], value), f"head tensor {key} did not change"
        else:
            assert torch.equal(after[key], value), f"frozen tensor {key} changed"
    now = bn_running_stats(head3)
    assert all(torch.equal(now[k], v) for k, v in stats.items())
    # After model.train(): frozen modules stay in eval mode, the head follows.
    head3.train()
    for stage in stages(head3)[:-1]:
        assert not any(m.training for m in _modules(stage, head3))
    assert head.training


def test_freeze_k_trains_exactly_the_last_k_stages(head3):
    freeze(head3, trainable_stages=3)
    all_stages = stages(head3)
    expected = set().union(*(_stage_param_ids(s) for s in all_stages[-3:]))
    assert {id(p) for p in head3.parameters() if p.requires_grad} == expected
    assert {id(p) for p in trainable_parameters(head3)} == expected
    head3.train()
    assert not any(m.training for s in all_stages[:-3] for m in _modules(s, head3))
    assert all(m.training for s in all_stages[-3:] for m in _modules(s, head3))
    # A real step moves the last 3 stages only (their BN statistics included).
    before = snapshot(head3)
    _steps(head3, build_optimizer(head3, lr=1e-2), n=1)
    moved = {k for k, v in before.items() if not torch.equal(head3.state_dict()[k], v)}
    names_top = {n for n, p in head3.named_parameters() if id(p) in expected}
    assert names_top <= moved
    assert all(k.startswith(("blocks.6.", "conv_head.", "bn2.", "classifier.")) for k in moved), moved


def test_freeze_rejects_a_bad_count(head3):
    with pytest.raises(ValueError):
        freeze(head3, trainable_stages=11)
    with pytest.raises(ValueError):
        freeze(head3, trainable_stages=-1)


def test_unfreeze_restores_training_mode_and_gradients(head3):
    freeze(head3, trainable_stages=1)
    unfreeze(head3)
    assert all(p.requires_grad for p in head3.parameters())
    head3.train()
    assert all(m.training for m in head3.modules())
    head3.eval()
    assert not any(m.training for m in head3.modules())
    assert not any("train" in m.__dict__ for m in head3.modules())  # no leftover eval override


def test_train_bn_keeps_batchnorm_trainable(head3):
    freeze(head3, trainable_stages=1, train_bn=True)
    frozen = stages(head3)[:-1]
    bns = [m for s in frozen for m in s.modules() if isinstance(m, BN)]
    convs = [m for s in frozen for m in s.modules() if isinstance(m, nn.Conv2d)]
    assert bns and convs
    assert all(p.requires_grad for m in bns for p in m.parameters())
    assert not any(p.requires_grad for m in convs for p in m.parameters())
    head3.train()
    assert all(m.training for m in bns)
    assert not any(m.training for m in convs)
    # A real step: BatchNorm statistics and affine weights move, convolution weights do not.
    before, stats = snapshot(head3), bn_running_stats(head3)
    _steps(head3, build_optimizer(head3, lr=1e-2), n=1)
    now = bn_running_stats(head3)
    assert all(not torch.equal(now[k], v) for k, v in stats.items() if k.startswith("blocks.0."))
    after = head3.state_dict()
    conv_keys = [k for k in before if k.endswith("weight") and after[k].ndim == 4]
    assert conv_keys and all(torch.equal(after[k], before[k]) for k in conv_keys)


def test_freeze_bn_stats_keeps_statistics_while_everything_trains(head3, tmp_path):
    from tl_course.freezing import freeze_bn_stats

    freeze_bn_stats(head3).train()
    bns = [m for m in head3.modules() if isinstance(m, BN)]
    assert bns and not any(m.training for m in bns)
    assert all(p.requires_grad for p in head3.parameters())  # scale and shift still train
    assert repr(bns[0]).startswith("EvalModeBatchNormAct2d(")
    stats = bn_running_stats(head3)
    before = snapshot(head3)
    _steps(head3, build_optimizer(head3, lr=1e-2), n=1)
    assert all(torch.equal(bn_running_stats(head3)[k], v) for k, v in stats.items())
    assert any(not torch.equal(head3.state_dict()[k], v) for k, v in before.items() if k.endswith("bn1.weight"))
    torch.save(head3, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False).train()
    assert not any(m.training for m in loaded.modules() if isinstance(m, BN))
    unfreeze(head3).train()
    assert all(m.training for m in head3.modules() if isinstance(m, BN))


def test_count_parameters(head3):
    freeze(head3, trainable_stages=1)
    trainable, total = count_parameters(head3)
    head = get_head(head3)
    assert trainable == sum(p.numel() for p in head.parameters()) == 1280 * 3 + 3
    assert total == sum(p.numel() for p in head3.parameters())
    assert (trainable, total) == (3843, 3374851)  # the freeze() docstring
    freeze(head3, trainable_stages=0)
    assert count_parameters(head3) == (0, total)
    assert count_parameters(nn.Linear(1280, 3)) == (3843, 3843)


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------
def test_build_optimizer_holds_only_trainable_parameters(head3):
    freeze(head3, trainable_stages=2)
    optimizer = build_optimizer(head3)
    assert optimizer_parameter_ids(optimizer) == {id(p) for p in head3.parameters() if p.requires_grad}
    assert isinstance(optimizer, torch.optim.AdamW)
    freeze(head3, trainable_stages=0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(head3)


def test_param_groups_learning_rates(head3):
    freeze(head3, trainable_stages=3)
    groups = param_groups(head3, lr=1e-3, pretrained_lr_factor=0.1, decay=0.5)
    assert [g["stage"] for g in groups] == [7, 8, 9]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.1 * 0.5, 1e-3 * 0.1, 1e-3])
    all_stages = stages(head3)
    for g in groups:
        assert {id(p) for p in g["params"]} == _stage_param_ids(all_stages[g["stage"]])
    optimizer = build_optimizer(head3, lr=1e-3, decay=1.0)
    # Two groups per stage: weights with decay, 1-D parameters (biases, norm weights) without.
    assert [(g["stage"], g["lr"]) for g in optimizer.param_groups] == [
        (7, pytest.approx(1e-4)), (7, pytest.approx(1e-4)), (8, pytest.approx(1e-4)), (8, pytest.approx(1e-4)),
        (9, pytest.approx(1e-3)), (9, pytest.approx(1e-3))]
    # A plain module is one stage: the new layer, at lr.
    (group,) = param_groups(nn.Linear(4, 3), lr=0.5)
    assert group["lr"] == 0.5


# ---------------------------------------------------------------------------------------------
# replace_top_stages
# ---------------------------------------------------------------------------------------------
def test_replace_top_stages(lite0):
    original_stages = stages(lite0)
    model = replace_top_stages(lite0, n_stages=2, num_classes=3, hidden_units=(64,), image_size=64)
    assert isinstance(model, StagedModel)
    new_stages = stages(model)
    assert len(new_stages) == len(original_stages) - 2 + 1 == 9
    for kept, original in zip(new_stages[:-1], original_stages[:-2]):
        assert all(p is q for p, q in zip(kept.parameters(), original.parameters()))
        assert len(list(kept.parameters())) == len(list(original.parameters()))
    top = new_stages[-1]
    linears = [m for m in top.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(320, 64), (64, 3)]
    assert all(p.requires_grad for p in top.parameters())
    freeze(model, trainable_stages=1)
    assert {id(p) for p in trainable_parameters(model)} == _stage_param_ids(top)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    with pytest.raises(ValueError):
        replace_top_stages(copy.deepcopy(lite0), n_stages=10, num_classes=3)
