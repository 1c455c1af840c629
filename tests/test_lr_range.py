"""The learning-rate range test: a real curve, the caller's model and random state left alone, bad input refused."""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from torch import nn

from tl_course.book.lr_range import lr_range_test


def data(n=200):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, 0] > 0).long()


def test_the_loss_falls_then_explodes_and_the_test_stops():
    result = lr_range_test(nn.Linear(8, 2), data(), start=1e-4, end=1e4, steps=80, batch_size=20)
    assert len(result.lrs) < 80, "past the divergence point the test must stop early"
    assert result.losses.min() < result.losses[0] * 0.8
    assert result.lrs[0] < result.suggested < result.lrs[int(np.argmin(result.losses))] * 1.0001
    assert np.all(np.diff(result.lrs) > 0)


def test_the_callers_model_and_random_generators_are_untouched():
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 2))
    head.eval()
    before = copy.deepcopy(head.state_dict())
    states = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    lr_range_test(head, data(), steps=20, batch_size=20)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    assert not head.training
    assert torch.equal(states[0], torch.random.get_rng_state())
    assert np.array_equal(states[1], np.random.get_state()[1]) and states[2] == random.getstate()


def test_only_trainable_parameters_move_in_the_copy_and_a_frozen_model_is_refused():
    frozen = nn.Linear(8, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        lr_range_test(frozen, data())


def test_an_empty_loader_and_a_shrinking_range_are_refused():
    x, y = data(10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, drop_last=True)
    with pytest.raises(ValueError, match="yields no batch"):
        lr_range_test(nn.Linear(8, 2), loader)
    with pytest.raises(ValueError, match="must grow"):
        lr_range_test(nn.Linear(8, 2), (x, y), start=1.0, end=0.1)
