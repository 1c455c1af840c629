"""Classic mistakes for chapter 3 (replace the softmax); format in ``tl_course/classroom/mistakes/__init__.py``."""

from tl_course.classroom.mistakes import add_new_mistakes

_SIGNATURE = '''def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the last nn.Linear of `model` by a fresh `num_classes`-way nn.Linear, in place; return `model`."""
'''

_COUNT_SIGNATURE = '''def count_trainable(model: nn.Module) -> int:
    """Number of scalar parameters of `model` with requires_grad=True."""
'''

MISTAKES: dict[str, dict[str, str]] = {
    # Keeps the 1000-way ImageNet head: the model still outputs 1000 scores.
    "kept_imagenet_head": {"replace_head": _SIGNATURE + "    return model\n"},
    # Adds the new head after the old one: the output shape is right, but the 1000-way layer stays.
    "stacked_after_old_head": {"replace_head": _SIGNATURE + '''    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Sequential(old, nn.Linear(old.out_features, num_classes)))
    return model
'''},
    # Only knows timm's EfficientNet: on a ResNet it adds an unused `classifier` and keeps `fc`.
    "only_timm_classifier": {"replace_head": _SIGNATURE + '''    model.classifier = nn.Linear(1280, num_classes)
    return model
'''},
    # Ignores num_classes: a fresh layer, but 1000-way again.
    "new_head_1000_outputs": {"replace_head": _SIGNATURE + '''    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(old.in_features, 1000))
    return model
'''},
    # Takes the 1000 outputs as the new layer's inputs: the forward pass fails with a shape mismatch.
    "wrong_in_features": {"replace_head": _SIGNATURE + '''    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(old.out_features, num_classes))
    return model
'''},
    # Keeps the first num_classes rows of the ImageNet weights instead of a fresh initialisation.
    "head_sliced_from_old_weights": {"replace_head": _SIGNATURE + '''    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    new = nn.Linear(old.in_features, num_classes)
    with torch.no_grad():
        new.weight.copy_(old.weight[:num_classes])
        new.bias.copy_(old.bias[:num_classes])
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    return model
'''},
    # Counts every parameter, frozen or not.
    "count_all_parameters": {"count_trainable": _COUNT_SIGNATURE + "    return sum(p.numel() for p in model.parameters())\n"},
    # Counts tensors, not numbers.
    "count_tensors_not_numbers": {"count_trainable": _COUNT_SIGNATURE
                                  + "    return len([p for p in model.parameters() if p.requires_grad])\n"},
    # The library function the text forbids.
    "calls_tl_course_replace_head": {"replace_head": '''import tl_course

''' + _SIGNATURE + '''    return tl_course.replace_head(model, num_classes)
'''},
    # timm's own method where it exists, by hand elsewhere.
    "calls_timm_reset_classifier": {"replace_head": _SIGNATURE + '''    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return model
    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype))
    return model
'''},
    # A new float32 layer on the default device, always with a bias: fine for the demo model only.
    "ignores_dtype_device_bias": {"replace_head": _SIGNATURE + '''    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return model
'''},
    # Right dtype and device, but always a bias.
    "always_bias": {"replace_head": _SIGNATURE + '''    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype))
    return model
'''},
    # "Safe" copy: the caller's model keeps its 1000-way head.
    "returns_a_copy": {"replace_head": _SIGNATURE + '''    import copy
    model = copy.deepcopy(model)
    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    return model
'''},
    # "ResNet gives an error, test with the EfficientNet twice": rebinds the notebook's `resnet`, which tests
    # that read notebook globals would then trust; works for timm's `classifier` only.
    "rebinds_resnet_global": {"replace_head": '''resnet = copy.deepcopy(lite0)

''' + _SIGNATURE + '''    old = model.classifier
    model.classifier = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    return model
'''},
    # Believes the backbone is reset.
    "thinks_backbone_reset": {"q_new_head": '''def answer_new_head():
    return "a"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "kept_imagenet_head": ["test_head_shape", "test_head_replaced"],
    "stacked_after_old_head": ["test_head_replaced", "test_rest_unchanged"],
    "only_timm_classifier": ["test_head_shape", "test_head_replaced", "test_rest_unchanged"],
    "new_head_1000_outputs": ["test_head_shape", "test_head_replaced"],
    "wrong_in_features": ["test_head_shape", "test_head_replaced"],
    "head_sliced_from_old_weights": ["test_head_replaced"],
    "count_all_parameters": ["test_count_trainable"],
    "count_tensors_not_numbers": ["test_count_trainable"],
    "calls_tl_course_replace_head": ["test_own_replace_head"],
    "calls_timm_reset_classifier": ["test_own_replace_head"],
    "ignores_dtype_device_bias": ["test_head_dtype_device"],
    "always_bias": ["test_head_dtype_device"],
    "returns_a_copy": ["test_rest_unchanged"],
    "thinks_backbone_reset": ["test_q_new_head"],
    "rebinds_resnet_global": ["test_head_shape", "test_head_replaced"],
}

KIND: dict[str, str] = {
    "kept_imagenet_head": "how",
    "stacked_after_old_head": "how",
    "only_timm_classifier": "narrow",
    "new_head_1000_outputs": "how",
    "wrong_in_features": "how",
    "head_sliced_from_old_weights": "how",
    "count_all_parameters": "how",
    "count_tensors_not_numbers": "how",
    "calls_tl_course_replace_head": "forbidden",
    "calls_timm_reset_classifier": "forbidden",
    "ignores_dtype_device_bias": "narrow",
    "always_bias": "narrow",
    "returns_a_copy": "narrow",
    "thinks_backbone_reset": "how",
    "rebinds_resnet_global": "leak",
}

# Correct, in another style: walk the module tree by hand instead of get_submodule; a loop count.
ALTERNATIVE: dict[str, str] = {
    "replace_head": '''def _last_linear_slot(parent):
    """(owner module, attribute name) of the last nn.Linear below parent, in registration order."""
    found = None
    for child_name, child in parent.named_children():
        if isinstance(child, nn.Linear):
            found = (parent, child_name)
        deeper = _last_linear_slot(child)
        if deeper is not None:
            found = deeper
    return found

def replace_head(model, num_classes):
    owner, key = _last_linear_slot(model)
    old = owner._modules[key]
    owner._modules[key] = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                                    device=old.weight.device, dtype=old.weight.dtype)
    return model
''',
    "count_trainable": '''def count_trainable(model):
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            total += p.numel()
    return total
''',
    "q_new_head": '''def answer_new_head():
    return "B"
''',
}

# ---------------------------------------------------------------------------------------------
# Issue 16: replace_head checked against its whole docstring contract. New mistakes by class (1 side effects
# on what the caller owns, 3 a head other than one nn.Linear, 4 generality, 5 device, 8 the wrong object;
# 2, 6 and 7 cannot occur: nothing is trained, chosen or ordered here), each in at least two styles.
# ---------------------------------------------------------------------------------------------
def _replace(before: str = "", new: str = "nn.Linear(old.in_features, num_classes, bias=old.bias is not None)",
             to: str = ".to(device=old.weight.device, dtype=old.weight.dtype)", find: str | None = None,
             put: str = "    setattr(parent, attr, new)\n", after: str = "", ret: str = "    return model\n") -> str:
    """The reference replace_head with one piece swapped for a mistaken one."""
    find = find if find is not None else (
        "    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]\n")
    return _SIGNATURE + before + find + f'''    new = {new}{to}
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
''' + put + after + ret


NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on the caller's model and generators; one head shared between calls
    "sets_eval_mode": (1, "narrow", {"replace_head": _replace(after="    model.eval()  # ready to predict\n")},
                       ["test_rest_unchanged"]),
    "freezes_the_backbone_too": (1, "narrow", {"replace_head": _replace(
        before="    for p in model.parameters():  # only the new head should train\n        p.requires_grad = False\n")},
        ["test_rest_unchanged"]),
    "reseeds_torch_for_a_reproducible_head": (1, "narrow", {"replace_head": _replace(
        before="    torch.manual_seed(0)  # the same new head every run\n")}, ["test_rest_unchanged"]),
    "caches_the_new_head": (1, "narrow", {"replace_head": '''_HEADS = {}

''' + _replace(new="_HEADS.setdefault((old.in_features, num_classes, old.bias is not None), "
                   "nn.Linear(old.in_features, num_classes, bias=old.bias is not None))")}, ["test_head_replaced"]),
    "head_as_default_argument": (1, "narrow", {"replace_head": '''def replace_head(model, num_classes, _made={}):
    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    key = (old.in_features, num_classes)
    if key not in _made:
        _made[key] = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new = _made[key].to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    return model
'''}, ["test_head_replaced"]),
    # 3. something after the logits
    "softmax_after_the_logits": (3, "how", {"replace_head": _replace(
        put="    setattr(parent, attr, nn.Sequential(new, nn.Softmax(dim=1)))  # probabilities\n")}, ["test_head_replaced"]),
    "relu_after_the_logits": (3, "how", {"replace_head": _replace(
        put="    setattr(parent, attr, nn.Sequential(new, nn.ReLU()))\n")}, ["test_head_replaced"]),
    # 4. the head found by its width or by the last child, not by its place
    "head_found_by_width_1000": (4, "narrow", {"replace_head": _replace(
        find="    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == 1000][-1]\n")},
        ["test_head_replaced"]),
    "head_found_by_in_features": (4, "narrow", {"replace_head": _replace(
        find="    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)"
             " and m.in_features in (512, 1280, 960) and m.out_features >= 1000][-1]\n")}, ["test_head_replaced"]),
    # 5. device or dtype only half matched
    "matches_dtype_not_device": (5, "narrow", {"replace_head": _replace(to=".to(old.weight.dtype)")},
                                 ["test_head_dtype_device"]),
    "matches_device_not_dtype": (5, "narrow", {"replace_head": _replace(to=".to(next(model.parameters()).device)")},
                                 ["test_head_dtype_device"]),
    # 8. the wrong object returned
    "returns_the_new_head": (8, "how", {"replace_head": _replace(ret="    return new\n")},
                             ["test_head_shape", "test_head_replaced", "test_rest_unchanged"]),
    "returns_the_parent_module": (8, "how", {"replace_head": _replace(ret="    return parent\n")},
                                  ["test_rest_unchanged"]),
}

#: issue-16 class of mistake (1..8) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# reversed(list(named_modules())) and get_submodule; the layer built with factory kwargs; numpy count
_ALTERNATIVE_REVERSED: dict[str, str] = {
    "replace_head": '''def replace_head(model, num_classes):
    for name, module in reversed(list(model.named_modules())):
        if isinstance(module, nn.Linear):
            break
    *path, attr = name.split(".")
    parent = model.get_submodule(".".join(path))
    layer = nn.Linear(module.in_features, num_classes, bias=module.bias is not None,
                      device=module.weight.device, dtype=module.weight.dtype)
    setattr(parent, attr, layer)
    return model
''',
    "count_trainable": '''import numpy as np

def count_trainable(model):
    return int(np.sum([np.prod(p.shape) for p in model.parameters() if p.requires_grad], dtype=np.int64))
''',
}

# the parent found while walking named_modules; an nn.Sequential parent indexed by position
_ALTERNATIVE_PARENT_WALK: dict[str, str] = {
    "replace_head": '''def replace_head(model, num_classes):
    slot = None
    for parent in model.modules():
        for key, child in parent.named_children():
            if isinstance(child, nn.Linear):
                slot = (parent, key, child)
    parent, key, old = slot
    fresh = nn.Linear(old.in_features, num_classes, old.bias is not None)
    fresh = fresh.to(old.weight)        # same device and dtype as the old weight
    if isinstance(parent, nn.Sequential) and key.isdigit():
        parent[int(key)] = fresh
    else:
        setattr(parent, key, fresh)
    return model
''',
    "count_trainable": '''def count_trainable(model):
    return sum(map(torch.numel, filter(lambda p: p.requires_grad, model.parameters())))
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_REVERSED, _ALTERNATIVE_PARENT_WALK]
