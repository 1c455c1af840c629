"""Classic mistakes for chapter 3 (replace the softmax); format in ``tl_course/classroom/mistakes/__init__.py``."""

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
