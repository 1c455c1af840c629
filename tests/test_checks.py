"""tl_course.checks: the autograder's checks pass a correct frozen model and catch each classic mistake
with one helpful sentence."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tl_course.checks import (bn_running_stats, changed, check_head, check_only_head_trains, optimizer_parameter_ids,
                              optimizer_step, snapshot)
from tl_course.freezing import build_optimizer, freeze
from tl_course.models import replace_head


@pytest.fixture
def model(lite0):
    """A private pretrained Lite0 with a new 3-way head, nothing frozen yet."""
    return replace_head(lite0, 3)


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message and message.endswith((".", "?")), message
    return message


def test_correctly_frozen_model_passes(model):
    freeze(model, trainable_stages=1)
    check_only_head_trains(model, build_optimizer(model), model.classifier)
    check_head(model, 3)


def test_correct_manual_freeze_in_eval_mode_passes(model):
    # The student's way: requires_grad = False below the head and the frozen part kept in eval mode.
    for p in model.parameters():
        p.requires_grad = False
    replace_head(model, 3)

    body = [m for name, m in model.named_children() if name != "classifier"]
    for m in body:
        m.train = lambda mode=True, m=m: nn.Module.train(m, False)  # noqa: B023 - bound per module
    check_only_head_trains(model, torch.optim.AdamW(model.classifier.parameters(), lr=1e-2), model.classifier)


def test_require_grad_typo_is_caught(model):
    for p in model.parameters():
        p.require_grad = False  # the typo: a new attribute, nothing frozen
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with pytest.raises(AssertionError) as err:
        check_only_head_trains(model, optimizer, model.classifier)
    assert "requires_grad" in _one_sentence(err) and "optimizer" in str(err.value)


def test_require_grad_typo_with_a_head_only_optimizer_is_caught(model):
    for p in model.parameters():
        p.require_grad = False
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=1e-3)
    with pytest.raises(AssertionError) as err:  # BatchNorm statistics of the "frozen" body move
        check_only_head_trains(model, optimizer, model.classifier)
    assert re.search(r"\d+ frozen tensors changed", _one_sentence(err))


def test_everything_frozen_including_the_head_is_caught(model):
    freeze(model, trainable_stages=0)
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=1e-3)
    with pytest.raises(AssertionError) as err:
        check_only_head_trains(model, optimizer, model.classifier)
    assert "head" in _one_sentence(err) and "frozen" in str(err.value)


def test_batchnorm_left_in_train_mode_is_caught(model):
    for p in model.parameters():
        p.requires_grad = False
    replace_head(model, 3)  # a fresh, trainable head; but the body follows model.train()
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=1e-3)
    stats = bn_running_stats(model)
    with pytest.raises(AssertionError) as err:
        check_only_head_trains(model, optimizer, model.classifier)
    message = _one_sentence(err)
    assert "frozen tensors changed" in message and "running_" in message and "eval mode" in message
    # The check stepped a copy: the caller's statistics are untouched.
    assert all(torch.equal(v, bn_running_stats(model)[k]) for k, v in stats.items())


def test_optimizer_over_all_parameters_is_caught(model):
    freeze(model, trainable_stages=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(AssertionError) as err:
        check_only_head_trains(model, optimizer, model.classifier)
    n = len(list(model.parameters()))
    assert f"updates {n} tensors" in _one_sentence(err) and "head has 2" in str(err.value)


def test_optimizer_over_the_old_head_is_caught(lite0):
    old = lite0.classifier
    optimizer = torch.optim.AdamW(old.parameters(), lr=1e-3)
    freeze(replace_head(lite0, 3), trainable_stages=1)
    with pytest.raises(AssertionError) as err:
        check_only_head_trains(lite0, optimizer, lite0.classifier)
    assert "not in this model" in _one_sentence(err)


# ---------------------------------------------------------------------------------------------
# check_head
# ---------------------------------------------------------------------------------------------
def test_check_head_catches_a_kept_1000_way_head(lite0):
    with pytest.raises(AssertionError) as err:
        check_head(lite0, 3)
    assert "1000" in _one_sentence(err)
    check_head(lite0, 1000)  # a 1000-way model is right when 1000 classes are asked for


def test_check_head_catches_a_head_stacked_after_the_old_one(lite0):
    stacked_inside = lite0
    stacked_inside.classifier = nn.Sequential(stacked_inside.classifier, nn.Linear(1000, 3))
    with pytest.raises(AssertionError) as err:
        check_head(stacked_inside, 3)
    assert "1000" in _one_sentence(err) and "stack" in str(err.value)


def test_check_head_catches_a_model_wrapped_with_a_new_layer(lite0):
    wrapped = nn.Sequential(lite0, nn.Linear(1000, 3))
    with pytest.raises(AssertionError) as err:
        check_head(wrapped, 3)
    assert "stack" in _one_sentence(err)


def test_check_head_restores_training_mode(model):
    model.train()
    check_head(model, 3)
    assert model.training


# ---------------------------------------------------------------------------------------------
# The building blocks
# ---------------------------------------------------------------------------------------------
def test_snapshot_changed_and_optimizer_step(model):
    freeze(model, trainable_stages=1)
    optimizer = build_optimizer(model)
    before = snapshot(model)
    assert all(v.device.type == "cpu" for v in before.values())
    assert before["classifier.weight"] is not model.classifier.weight  # a copy
    assert changed(before, model) == []
    optimizer_step(model, optimizer)
    assert changed(before, model) == ["classifier.weight", "classifier.bias"]
    assert optimizer_parameter_ids(optimizer) == {id(model.classifier.weight), id(model.classifier.bias)}
