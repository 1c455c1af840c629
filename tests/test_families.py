"""tl_course.families: a new model family is one record, and everything (loading, preprocessing, stages,
freezing, the head) follows it; the registry is back as it was after the ``with`` block, whatever happened."""
from __future__ import annotations

import re
import threading
from functools import partial

import pytest
import torch
import torchvision
from torch import nn
from torchvision.transforms._presets import ImageClassification

from tl_course.checks import check_head, check_only_head_trains
from tl_course.families import (BUILTIN_FAMILIES, Family, Weights, family_of, families, find_family, model_names,
                                using_families)
from tl_course.freezing import build_optimizer, freeze, stages, unfreeze
from tl_course.models import (SUPPORTED_MODELS, WeightsUnavailableError, get_head, load_pretrained, load_random_init,
                              preprocessing, replace_head)


class TinyNet(nn.Module):
    """A network of no built-in family. Its head is registered *first*, and the body ends in an ``nn.Linear``
    embedding: the "last nn.Linear" guess picks the wrong layer, only the record's head path finds the head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(16, 3))
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 16), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


def _build_tiny(name: str, weights) -> nn.Module:
    if weights is not None:
        raise WeightsUnavailableError(f"{name} has no pretrained weights: use load_random_init({name!r}).")
    return TinyNet()


TINY_WEIGHTS = Weights(url="", transforms=partial(ImageClassification, crop_size=32, resize_size=36,
                                                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
                       meta={"categories": ["Tigger", "Misty", "neither"]})

TINY = Family("tiny", TinyNet, {"tiny_net": TINY_WEIGHTS}, _build_tiny,
              lambda model: [model.stem, model.body, model.head], head="head.1")


def test_a_new_family_is_one_record():
    with using_families(TINY) as known:
        assert known[0] is TINY and "tiny_net" in model_names()
        torch.manual_seed(0)
        model, preprocess, categories = load_random_init("tiny_net")
        assert type(model) is TinyNet and not model.training
        assert categories == ["Tigger", "Misty", "neither"]
        # the preprocessing is the record's: nobody typed a mean
        assert (preprocess.crop_size, preprocess.resize_size) == ([32], [36])
        assert preprocess.mean == [0.5] * 3 and preprocess.std == [0.25] * 3
        bigger = load_random_init("tiny_net", image_size=48).preprocess
        assert (bigger.crop_size, bigger.resize_size) == ([48], [54])  # the resize keeps its ratio
        assert repr(preprocessing("tiny_net", 48)) == repr(bigger)
        with pytest.raises(WeightsUnavailableError, match="no pretrained weights"):
            load_pretrained("tiny_net")

        # stages: the record's splitter, and they compute the model
        all_stages = stages(model)
        assert [s for s in all_stages] == [model.stem, model.body, model.head]
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            out = x
            for stage in all_stages:
                out = stage(out)
            assert torch.equal(out, model(x))

        # the head: where the record says, not the last nn.Linear
        assert get_head(model) is model.head[1]
        embedding = model.body[5].weight.detach().clone()
        assert replace_head(model, 5) is model
        assert isinstance(model.head[1], nn.Linear) and model.head[1].out_features == 5
        assert torch.equal(model.body[5].weight, embedding) and model.body[5].out_features == 16
        check_head(model, 5)

        # freeze: the last stage trains, the frozen ones stay in eval mode
        freeze(model, trainable_stages=1)
        assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in model.head.parameters()}
        model.train()
        assert not model.stem[1].training and not model.body[1].training and model.head.training
        check_only_head_trains(model, build_optimizer(model), model.head[1])
        unfreeze(model)
        assert all(p.requires_grad for p in model.parameters()) and model.train().stem[1].training

    # after the block the registry is the built-in one again
    assert families() == BUILTIN_FAMILIES and "tiny_net" not in model_names()
    with pytest.raises(ValueError, match="Unknown model 'tiny_net'"):
        load_random_init("tiny_net")
    with pytest.raises(TypeError, match="TinyNet"):
        stages(TinyNet())
    assert family_of(TinyNet()) is None
    loose = TinyNet()
    assert get_head(loose) is loose.body[5]  # with no record: the last nn.Linear, which is the wrong layer here


def test_the_registry_is_restored_after_an_error():
    with pytest.raises(RuntimeError, match="boom"):
        with using_families(TINY):
            assert find_family("tiny_net") is TINY
            raise RuntimeError("boom")
    assert families() == BUILTIN_FAMILIES


def test_nested_blocks_and_other_threads_see_their_own_registry():
    other = Family("tiny2", TinyNet, {"tiny_net2": TINY_WEIGHTS}, _build_tiny, lambda m: [m.stem, m.body, m.head],
                   head="head.1")
    seen_in_thread = []
    with using_families(TINY):
        with using_families(other):
            assert [f.name for f in families()[:2]] == ["tiny2", "tiny"]
            assert family_of(TinyNet()) is other  # the newest record takes the architecture
        assert families()[0] is TINY and "tiny_net2" not in model_names()
        thread = threading.Thread(target=lambda: seen_in_thread.append(model_names()))
        thread.start()
        thread.join()
    assert "tiny_net" not in seen_in_thread[0]  # a thread starts from the built-in registry


def test_an_added_family_can_take_over_an_architecture():
    coarse = Family("resnet_coarse", torchvision.models.ResNet, {"resnet18_coarse": TINY_WEIGHTS},
                    lambda name, weights: torchvision.models.resnet18(num_classes=3),
                    lambda m: [nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3),
                               nn.Sequential(m.layer4, m.avgpool, nn.Flatten(1)), m.fc], head="fc")
    model = torchvision.models.resnet18()
    with using_families(coarse):
        assert len(stages(model)) == 3
        assert load_random_init("resnet18_coarse").model.fc.out_features == 3
    assert len(stages(model)) == 6


def test_a_model_name_belongs_to_one_family():
    clash = Family("mine", TinyNet, {"resnet18": TINY_WEIGHTS}, _build_tiny, lambda m: list(m.children()),
                   head="head.1")
    with pytest.raises(ValueError) as info:
        with using_families(clash):
            pass  # pragma: no cover
    message = str(info.value)
    assert "'resnet18'" in message and "'resnet'" in message and "\n" not in message
    assert len(re.findall(r"[.!?](?:\s|$)", message)) == 1, message
    with pytest.raises(ValueError, match="already belongs"):
        with using_families(TINY, TINY):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="Family records"):
        with using_families("tiny"):
            pass  # pragma: no cover
    assert families() == BUILTIN_FAMILIES


@pytest.mark.parametrize("change, word", [
    ({"architecture": "TinyNet"}, "architecture"),
    ({"weights": {}}, "weights"),
    ({"weights": {"tiny_net": "https://example.org/tiny.pth"}}, "Weights record"),
    ({"weights": {"tiny_net": Weights("", TINY_WEIGHTS.transforms, {})}}, "categories"),
    ({"head": ""}, "head"),
])
def test_a_bad_record_is_refused_in_one_sentence(change, word):
    fields = dict(name="tiny", architecture=TinyNet, weights={"tiny_net": TINY_WEIGHTS}, build=_build_tiny,
                  split=lambda m: [m.stem, m.body, m.head], head="head.1")
    with pytest.raises(ValueError, match=word) as info:
        Family(**{**fields, **change})
    assert "\n" not in str(info.value) and str(info.value).startswith("Family 'tiny'")


def test_a_record_is_read_only():
    with pytest.raises(AttributeError):
        TINY.head = "body.5"
    with pytest.raises(TypeError):
        TINY.weights["other"] = TINY_WEIGHTS
    assert TINY.architecture == f"{__name__}.TinyNet"


# ---------------------------------------------------------------------------------------------
# The built-in records
# ---------------------------------------------------------------------------------------------
def test_builtin_families_cover_the_supported_models():
    assert SUPPORTED_MODELS == model_names()
    assert len(set(SUPPORTED_MODELS)) == len(SUPPORTED_MODELS) >= 5
    for family in BUILTIN_FAMILIES:
        for name, weights in family.weights.items():
            assert find_family(name) is family
            assert len(weights.meta["categories"]) == 1000


@pytest.mark.parametrize("name", SUPPORTED_MODELS)
def test_each_builtin_record_builds_splits_and_finds_its_head(name):
    family = find_family(name)
    torch.manual_seed(0)
    model = load_random_init(name).model
    assert family_of(model) is family
    assert get_head(model) is model.get_submodule(family.head)
    assert isinstance(get_head(model), nn.Linear) and get_head(model).out_features == 1000
    assert any(m is get_head(model) for m in stages(model)[-1].modules())  # the classifier is the last stage


@pytest.mark.parametrize("name", [n for n in SUPPORTED_MODELS if n != "efficientnet_lite0"])
def test_torchvision_records_use_torchvisions_own_preprocessing(name):
    weights = torchvision.models.get_model_weights(name).DEFAULT
    assert repr(preprocessing(name)) == repr(weights.transforms())
    assert find_family(name).weights[name] is weights
