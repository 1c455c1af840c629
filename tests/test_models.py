"""tl_course.models: real offline weights that recognise a cat, the checkpoint key map, the offline
error for torchvision weights, and a head replacement that changes exactly one layer for every family."""
from __future__ import annotations

import copy
import re
import urllib.error

import pytest
import timm
import torch
from torch import nn

from conftest import PETS, needs_pets
from tl_course import families
from tl_course.checks import snapshot
from tl_course.data import load_rgb
from tl_course.families import lite0_key_map
from tl_course.models import (SUPPORTED_MODELS, WeightsUnavailableError, get_head, imagenet_categories,
                              load_pretrained, load_random_init, preprocessing, replace_head)

CAT_CLASSES = {"tiger cat", "tabby", "Egyptian cat"}


# ---------------------------------------------------------------------------------------------
# The offline pretrained weights
# ---------------------------------------------------------------------------------------------
@needs_pets
def test_pretrained_lite0_sees_a_cat_in_bengal_photos(pretrained):
    model, preprocess, categories = pretrained
    files = sorted(PETS.glob("Bengal_*.jpg"))[:5]
    assert len(files) == 5
    x = torch.stack([preprocess(load_rgb(f)) for f in files])
    with torch.no_grad():
        top5 = model(x).topk(5).indices
    for f, row in zip(files, top5):
        names = [categories[i] for i in row]
        assert CAT_CLASSES & set(names), f"{f.name}: no cat class in the top 5 {names}"
        assert names[0] in CAT_CLASSES, f"{f.name}: top-1 is {names[0]!r}"


def test_lite0_key_map_covers_the_checkpoint_one_to_one():
    checkpoint = torch.load(families._lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    mapping = lite0_key_map(list(checkpoint))

    assert len(checkpoint) == 296
    assert set(mapping) == set(checkpoint)
    assert len(set(mapping.values())) == len(mapping) == len(target)  # one-to-one
    assert set(mapping.values()) == set(target)
    for src, dst in mapping.items():
        assert checkpoint[src].shape == target[dst].shape, (src, dst)
    # The loaded model holds exactly the checkpoint tensors.
    loaded = load_pretrained().model.state_dict()
    assert all(torch.equal(checkpoint[src], loaded[dst]) for src, dst in mapping.items())


def test_lite0_key_map_rejects_an_unknown_key():
    with pytest.raises(KeyError, match="_mystery"):
        lite0_key_map(["_mystery.weight"])


def test_preprocess_is_the_lite0_one(pretrained):
    preprocess = pretrained.preprocess
    assert list(preprocess.mean) == [0.5, 0.5, 0.5]
    assert list(preprocess.std) == [0.5, 0.5, 0.5]
    assert list(preprocess.crop_size) == [224]
    small = load_pretrained(image_size=160).preprocess
    assert list(small.crop_size) == [160]
    assert list(small.mean) == [0.5, 0.5, 0.5] and list(small.std) == [0.5, 0.5, 0.5]


def test_preprocessing_without_loading_the_model(pretrained):
    assert repr(preprocessing()) == repr(pretrained.preprocess)
    assert repr(preprocessing("efficientnet_lite0", 160)) == repr(load_pretrained(image_size=160).preprocess)
    assert repr(preprocessing("resnet18", 160)) == repr(load_random_init("resnet18", image_size=160).preprocess)
    assert preprocessing("resnet18").mean == [0.485, 0.456, 0.406]  # torchvision's record, not Lite0's 0.5
    with pytest.raises(ValueError, match="image_size"):
        preprocessing(image_size=0)
    with pytest.raises(ValueError, match="Unknown model 'vgg16'"):
        preprocessing("vgg16")


def test_imagenet_categories():
    categories = imagenet_categories()
    assert len(categories) == 1000
    assert categories[281] == "tabby" and categories[282] == "tiger cat" and categories[285] == "Egyptian cat"


def test_pretrained_outputs_1000_logits_in_eval_mode(pretrained):
    assert not pretrained.model.training
    assert get_head(pretrained.model).out_features == 1000


# ---------------------------------------------------------------------------------------------
# No network
# ---------------------------------------------------------------------------------------------
def test_torchvision_weights_offline_raise_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        load_pretrained("resnet18")

    assert calls and calls[0].endswith(".pth")  # it really tried the download, and only that failed
    err = info.value
    message = str(err)
    assert "efficientnet_lite0" in message
    assert "\n" not in message
    assert len(re.findall(r"[.!?](?:\s|$)", message)) == 1, message  # one sentence
    assert message.endswith(".")
    assert err.__cause__ is None and err.__suppress_context__ is True  # no chained traceback
    assert isinstance(err, RuntimeError)


def test_unknown_model_name_is_a_value_error():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        load_pretrained("vgg_nonexistent")
    with pytest.raises(ValueError):
        load_random_init("vgg_nonexistent")


# ---------------------------------------------------------------------------------------------
# replace_head
# ---------------------------------------------------------------------------------------------
def _n_linear(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in model.modules())


@pytest.mark.parametrize("name", SUPPORTED_MODELS)
def test_replace_head_swaps_exactly_the_head(name, pretrained):
    if name == "efficientnet_lite0":
        model = copy.deepcopy(pretrained.model)
    else:
        torch.manual_seed(0)
        model = load_random_init(name).model
    old = get_head(model)
    old_in = old.in_features
    n_linear = _n_linear(model)
    head_names = {n for n, m in model.named_modules() if m is old}
    (head_name,) = head_names
    before = snapshot(model)

    assert replace_head(model, 5) is model
    new = get_head(model)
    assert type(new) is nn.Linear and new is not old
    assert (new.in_features, new.out_features) == (old_in, 5)
    assert new.weight.requires_grad and new.bias.requires_grad
    assert model.get_submodule(head_name) is new  # same place, not appended after the old one
    assert _n_linear(model) == n_linear
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        if key.startswith(head_name + "."):
            assert after[key].shape[0] == 5
        else:
            assert torch.equal(after[key], value), f"{key} changed"
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)


def test_replace_head_initialises_freshly(lite0):
    old_weight = get_head(lite0).weight.detach().clone()
    replace_head(lite0, 3)
    new = get_head(lite0)
    assert not torch.equal(new.weight.detach(), old_weight[:3])
    assert new.weight.abs().max() <= 1 / new.in_features ** 0.5 + 1e-6  # nn.Linear's default init bound
    assert lite0.num_classes == 3  # timm's own record follows
