"""Classic mistakes of chapter 1 (open-source weights: top-k guesses), each of which must cost points.

See tl_course/classroom/mistakes/__init__.py for MISTAKES, MUST_FAIL, KIND and ALTERNATIVE.
"""

from tl_course.classroom.mistakes import add_new_mistakes

_HEADER = '''def top_k(model, image, preprocess, categories, k=5, device=None):
    """The k most probable categories of a PIL image: [(name, probability), ...], most probable first."""
'''
_TAIL = '''    top = probs.topk(k)
    return [(categories[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
'''

MISTAKES: dict[str, dict[str, str]] = {
    # Returns the raw scores (logits): not probabilities, not in [0, 1].
    "no_softmax": {"top_k": _HEADER + '''    device = get_device(device)
    model.to(device).eval()
    x = preprocess(image).unsqueeze(0).to(device)
    with torch.no_grad():
        logits = model(x)[0]
    top = logits.topk(k)
    return [(categories[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
'''},
    # Forgets model.eval(): BatchNorm normalises with the one photo's statistics and updates its running stats.
    "no_eval_mode": {"top_k": _HEADER + '''    device = get_device(device)
    model.to(device)
    x = preprocess(image).unsqueeze(0).to(device)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
''' + _TAIL},
    # A hand-typed transform with the ImageNet mean / std (this model was trained with 0.5 / 0.5).
    "imagenet_normalisation": {"top_k": _HEADER + '''    from torchvision import transforms
    transform = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(preprocess.crop_size[0]), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    device = get_device(device)
    model.to(device).eval()
    x = transform(image).unsqueeze(0).to(device)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
''' + _TAIL},
    # Right for Lite0 (0.5 / 0.5 typed by hand, sizes read from preprocess), wrong for any other weights.
    "hand_typed_lite0_normalisation": {"top_k": _HEADER + '''    from torchvision import transforms
    transform = transforms.Compose([
        transforms.Resize(preprocess.resize_size[0], interpolation=preprocess.interpolation),
        transforms.CenterCrop(preprocess.crop_size[0]), transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
    device = get_device(device)
    model.to(device).eval()
    x = transform(image).unsqueeze(0).to(device)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
''' + _TAIL},
    # The global `preprocess` "fixed" to ImageNet statistics in the answer cell and read inside top_k instead
    # of the argument: a test that built its reference from the same global would agree with it.
    "rebinds_global_preprocess": {"top_k": '''from torchvision import transforms
preprocess = transforms.Compose([
    transforms.Resize(preprocess.resize_size[0]), transforms.CenterCrop(preprocess.crop_size[0]),
    transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

''' + _HEADER + '''    device = get_device(device)
    model.to(device).eval()
    x = globals()["preprocess"](image).unsqueeze(0).to(device)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
''' + _TAIL},
    # The right k categories, but least probable first.
    "sorted_ascending": {"top_k": _HEADER + '''    device = get_device(device)
    model.to(device).eval()
    x = preprocess(image).unsqueeze(0).to(device)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    top = probs.topk(k)
    pairs = [(categories[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
    return sorted(pairs, key=lambda pair: pair[1])
'''},
    # `device` ignored: always runs where the model already is (device="cuda" silently runs on the CPU).
    "ignores_device": {"top_k": _HEADER + '''    model.eval()
    x = preprocess(image).unsqueeze(0)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
''' + _TAIL},
    # "Robust" code that hides the error: falls back to the CPU when the requested device is missing.
    "falls_back_to_cpu": {"top_k": _HEADER + '''    try:
        device = get_device(device)
        model.to(device)
    except Exception:
        device = torch.device("cpu")
        model.to(device)
    model.eval()
    x = preprocess(image).unsqueeze(0).to(device)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
''' + _TAIL},
    # Counts tensors instead of numbers.
    "count_tensors": {"count_params": '''def count_params(model):
    """(trainable, total) number of parameters of a model."""
    params = list(model.parameters())
    return len([p for p in params if p.requires_grad]), len(params)
'''},
    # Ignores requires_grad: every parameter counted as trainable.
    "count_ignores_requires_grad": {"count_params": '''def count_params(model):
    """(trainable, total) number of parameters of a model."""
    total = sum(p.numel() for p in model.parameters())
    return total, total
'''},
    # The total from state_dict(): counts BatchNorm buffers, and a layer used twice twice.
    "count_state_dict": {"count_params": '''def count_params(model):
    """(trainable, total) number of parameters of a model."""
    trainable = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False) if p.requires_grad)
    total = sum(t.numel() for t in model.state_dict(keep_vars=True).values())
    return trainable, total
'''},
    # The library call the text forbids.
    "calls_count_parameters": {"count_params": '''def count_params(model):
    """(trainable, total) number of parameters of a model."""
    return tl_course.count_parameters(model)
'''},
    # BatchNorm "re-normalises": a plausible but wrong belief.
    "thinks_batchnorm_fixes_it": {"q_normalisation": '''def answer_normalisation():
    return "c"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "no_softmax": ["test_top_k_photos", "test_top_k_reference"],
    "no_eval_mode": ["test_top_k_eval_mode"],
    "imagenet_normalisation": ["test_top_k_reference"],
    "hand_typed_lite0_normalisation": ["test_top_k_reference"],
    "rebinds_global_preprocess": ["test_top_k_reference"],
    "sorted_ascending": ["test_top_k_photos", "test_top_k_reference"],
    "ignores_device": ["test_top_k_device"],
    "falls_back_to_cpu": ["test_top_k_device"],
    "count_tensors": ["test_count_params"],
    "count_ignores_requires_grad": ["test_count_params"],
    "count_state_dict": ["test_count_params"],
    "calls_count_parameters": ["test_count_params"],
    "thinks_batchnorm_fixes_it": ["test_q_normalisation"],
}

KIND: dict[str, str] = {
    "no_softmax": "how",
    "no_eval_mode": "how",
    "imagenet_normalisation": "how",
    "hand_typed_lite0_normalisation": "narrow",
    "rebinds_global_preprocess": "leak",
    "sorted_ascending": "how",
    "ignores_device": "narrow",
    "falls_back_to_cpu": "narrow",
    "count_tensors": "how",
    "count_ignores_requires_grad": "how",
    "count_state_dict": "narrow",
    "calls_count_parameters": "forbidden",
    "thinks_batchnorm_fixes_it": "how",
}

# Correct, in another style: numpy argsort instead of topk, inference_mode, a manual softmax; a loop count.
ALTERNATIVE: dict[str, str] = {
    "top_k": '''import numpy as np

def top_k(model, image, preprocess, categories, k=5, device=None):
    dev = torch.device(device) if device is not None else get_device()
    net = model.to(dev)
    flags = {name: m.training for name, m in net.named_modules()}
    net.eval()
    batch = torch.stack([preprocess(image)]).to(dev)
    with torch.inference_mode():
        scores = net(batch).double().cpu().numpy()[0]
    for name, m in net.named_modules():
        m.training = flags[name]
    scores = np.exp(scores - scores.max())
    probs = scores / scores.sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [(categories[int(i)], float(probs[i])) for i in order]
''',
    "count_params": '''def count_params(model):
    trainable = total = 0
    for param in model.parameters():
        n = 1
        for size in param.shape:
            n *= size
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
''',
    "q_normalisation": '''def answer_normalisation():
    # the network cannot tell: the numbers are just shifted
    return " B "
''',
}

# ---------------------------------------------------------------------------------------------
# Issue 16: top_k checked against its whole docstring contract. New mistakes by class (1 side effects on the
# caller's model, 4 generality, 5 device, 7 autograd hygiene; 2, 3, 6 and 8 cannot occur in top_k), each in
# at least two styles.
# ---------------------------------------------------------------------------------------------
def _top_k(prepare: str = "    modes = {m: m.training for m in model.modules()}\n    model.to(device).eval()\n",
           x: str = "    x = preprocess(image).unsqueeze(0).to(device)\n",
           forward: str = "    with torch.no_grad():\n        probs = model(x).softmax(dim=1)[0]\n",
           restore: str = "    for m, mode in modes.items():\n        m.training = mode\n",
           tail: str = _TAIL) -> str:
    """The reference top_k with one piece swapped for a mistaken one."""
    return _HEADER + "    device = get_device(device)\n" + prepare + x + forward + restore + tail


NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. the caller's model left in another mode
    "leaves_the_model_in_eval_mode": (1, "narrow", {"top_k": _top_k(prepare="    model.to(device).eval()\n", restore="")},
                                      ["test_top_k_eval_mode"]),
    "restores_train_mode_unconditionally": (1, "narrow", {"top_k": _top_k(
        prepare="    model.to(device).eval()\n", restore="    model.train()  # back to training\n")}, ["test_top_k_eval_mode"]),
    "restores_only_the_top_flag": (1, "narrow", {"top_k": _top_k(
        prepare="    was_training = model.training\n    model.to(device).eval()\n",
        restore="    model.train(was_training)\n")}, ["test_top_k_eval_mode"]),
    # 4. names not from the categories argument
    "names_from_the_notebook_global": (4, "narrow", {"top_k": _top_k(
        tail=_TAIL.replace("categories[i]", "_cats_global[i]")).replace(
        "def top_k(", "_cats_global = load_pretrained(image_size=64).categories\n\ndef top_k(", 1)}, ["test_top_k_reference"]),
    "names_from_torchvision": (4, "narrow", {"top_k": "import torchvision\n\n" + _top_k(
        tail=_TAIL.replace("categories[i]", "torchvision.models.ResNet18_Weights.DEFAULT.meta['categories'][i]"))},
        ["test_top_k_reference"]),
    # 5. the input left behind
    "input_not_moved": (5, "narrow", {"top_k": _top_k(x="    x = preprocess(image).unsqueeze(0)\n")}, ["test_top_k_device"]),
    "input_sent_to_cpu": (5, "narrow", {"top_k": _top_k(x="    x = preprocess(image).unsqueeze(0).to('cpu')\n")},
                          ["test_top_k_device"]),
    # 7. gradients on
    "forward_with_gradients_then_detach": (7, "how", {"top_k": _top_k(
        forward="    probs = model(x).detach().softmax(dim=1)[0]\n")}, ["test_top_k_eval_mode"]),
    "forward_with_gradients_tolist": (7, "how", {"top_k": _top_k(
        forward="    probs = model(x).softmax(dim=1)[0]\n",
        tail="    top = probs.topk(k)\n    return [(categories[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]\n")},
        ["test_top_k_eval_mode"]),
}

#: issue-16 class of mistake (1..8) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# a context manager that restores the flags; sorted() over (probability, index) pairs
_ALTERNATIVE_CONTEXT: dict[str, str] = {
    "top_k": '''from contextlib import contextmanager

@contextmanager
def _evaluating(net):
    saved = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield net
    finally:
        for m, flag in saved:
            m.training = flag

def top_k(model, image, preprocess, categories, k=5, device=None):
    where = get_device(device)
    model.to(where)
    with _evaluating(model), torch.no_grad():
        p = torch.softmax(model(preprocess(image)[None].to(where)), dim=-1).squeeze(0).cpu()
    ranked = sorted(range(len(p)), key=lambda i: float(p[i]), reverse=True)
    return [(categories[i], float(p[i])) for i in ranked[:k]]
''',
    "count_params": '''def count_params(model):
    params = list(model.parameters())
    return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
''',
}

# torch.inference_mode as a decorator; per-module eval() and train(flag) restored by name
_ALTERNATIVE_DECORATOR: dict[str, str] = {
    "top_k": '''@torch.inference_mode()
def _probabilities(model, batch):
    return model(batch).float().softmax(1)[0]

def top_k(model, image, preprocess, categories, k=5, device=None):
    device = get_device(device)
    flags = {name: module.training for name, module in model.named_modules()}
    model.to(device)
    model.eval()
    probs = _probabilities(model, preprocess(image).unsqueeze(0).to(device))
    for name, module in model.named_modules():
        module.training = flags[name]
    values, indices = torch.topk(probs, k)
    return [(categories[int(i)], v.item()) for v, i in zip(values, indices)]
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_CONTEXT, _ALTERNATIVE_DECORATOR]
