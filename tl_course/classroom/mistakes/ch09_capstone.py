"""Classic mistakes of chapter 9 (the capstone: choose k, save and reload, predict, the whole pipeline).

MISTAKES: mistake -> {answer grade_id: the student's full source}; MUST_FAIL: mistake -> test grade_ids that
must lose points; KIND: mistake -> leak | how | forbidden | narrow; ALTERNATIVE: a correct answer in another
style for every answer cell (must score 100 %).
"""

from tl_course.classroom.mistakes import add_new_mistakes, swap

_HEADER = '''def run_pipeline(root, device=None) -> dict:
    """Frozen pretrained network + new softmax trained on cached features for the image folder at root."""
'''


def _pipeline(classes="len(splits.classes)", freeze_line="    freeze(model, trainable_stages=1)\n",
              val='feats["val"]') -> str:
    return _HEADER + f'''    splits = image_folder_splits(root, train_per_class=profile.train_per_class)
    model, preprocess, _ = load_pretrained(image_size=profile.image_size)
    replace_head(model, {classes})
{freeze_line}    feats = {{name: cached_features(model, getattr(splits, name), preprocess, device=device, progress=False)
             for name in ("train", "val", "test")}}
    history = fit(top_stages(model), feats["train"], {val}, test=feats["test"], epochs=profile.head_epochs,
                  lr=1e-2, batch_size=profile.batch_size, device=device, progress=False)
    return {{"accuracy": history.test.accuracy, "val_accuracy": history.best_val_acc, "classes": splits.classes,
            "model": model, "preprocess": preprocess, "history": history}}
'''


_CHOOSE_HEADER = '''def choose_k(model, splits, preprocess, candidates=(1, 2), epochs=20, device=None):
    """The number of top stages to fine-tune, chosen on the validation photos: (best_k, {k: val accuracy})."""
'''


def _choose(copy_line="        m = replace_head(copy.deepcopy(model), len(splits.classes))\n", val_split="splits.val",
            best="max(candidates, key=lambda k: (accuracies[k], -k))") -> str:
    return _CHOOSE_HEADER + f'''    accuracies = {{}}
    for k in candidates:
{copy_line}        freeze(m, trainable_stages=k)
        cut = len(stages(m)) - k
        train = cached_features(m, splits.train, preprocess, cut=cut, device=device, progress=False)
        val = cached_features(m, {val_split}, preprocess, cut=cut, device=device, progress=False)
        history = fit(top_stages(m, cut), train, val, epochs=epochs, lr=1e-2, device=device, progress=False)
        accuracies[k] = history.best_val_acc
    best_k = {best}
    return best_k, accuracies
'''


_PREDICT_HEADER = '''def predict_photo(model, preprocess, path, classes):
    """(class name, softmax probabilities) of the photo at path."""
'''

MISTAKES: dict[str, dict[str, str]] = {
    # The cat detector's 3 classes copied over: the head does not match the folders.
    "hard_coded_3_classes": {"run_pipeline": _pipeline(classes="3")},
    # The epoch is chosen on the test set (passed to fit as the validation set).
    "test_set_used_for_selection": {"run_pipeline": _pipeline(val='feats["test"]')},
    # The backbone is never frozen (the cache still works, but the model is not what was asked).
    "backbone_not_frozen": {"run_pipeline": _pipeline(freeze_line="")},
    # k chosen by the test accuracy.
    "choose_k_on_test": {"choose_k": _choose(val_split="splits.test")},
    # No copy: every k trains (and replaces the head of) the caller's model.
    "choose_k_mutates_model": {"choose_k": _choose(
        copy_line="        m = replace_head(model, len(splits.classes))\n")},
    # "More trainable stages is better": the largest k whatever validation says.
    "choose_k_takes_largest": {"choose_k": _choose(best="max(candidates)")},
    # The whole model pickled: weights_only=True cannot load it.
    "pickled_model": {"save_load_model": '''def save_model(model, path):
    torch.save(model, path)


def load_model(path, num_classes, name="efficientnet_lite0"):
    return torch.load(path, weights_only=False).eval()
'''},
    # The architecture is always EfficientNet-Lite0: a ResNet checkpoint does not load.
    "load_ignores_name": {"save_load_model": '''def save_model(model, path):
    torch.save(model.state_dict(), path)


def load_model(path, num_classes, name="efficientnet_lite0"):
    model = replace_head(load_pretrained().model, num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''},
    # Forgot eval(): one photo in train mode is normalised by its own statistics (and moves the running ones).
    "predict_in_train_mode": {"predict_photo": _PREDICT_HEADER + '''    x = preprocess(load_rgb(path)).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)[0]
    return classes[int(probabilities.argmax())], probabilities
'''},
    # Logits returned as "probabilities".
    "predict_without_softmax": {"predict_photo": _PREDICT_HEADER + '''    model.eval()
    with torch.no_grad():
        logits = model(preprocess(load_rgb(path)).unsqueeze(0))[0]
    return classes[int(logits.argmax())], logits
'''},
    # The course's predict does the forward pass.
    "predict_with_library": {"predict_photo": _PREDICT_HEADER + '''    from tl_course import ImageDataset, Samples, predict
    logits = predict(model, ImageDataset(Samples([path], [0], classes), preprocess), device="cpu")
    probabilities = torch.softmax(logits, dim=1)[0]
    return classes[int(probabilities.argmax())], probabilities
'''},
    # The ants / bees names hard-coded.
    "predict_hard_coded_names": {"predict_photo": _PREDICT_HEADER + '''    model.eval()
    with torch.no_grad():
        probabilities = torch.softmax(model(preprocess(load_rgb(path)).unsqueeze(0)), dim=1)[0]
    return ("ants", "bees", "other")[int(probabilities.argmax())], probabilities
'''},
    "question_test_set": {"q_capstone": '''def q_capstone():
    """"A", "B", "C" or "D"."""
    return "A"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "hard_coded_3_classes": ["test_pipeline_shape"],
    "test_set_used_for_selection": ["test_selected_on_val"],
    "backbone_not_frozen": ["test_pipeline_shape"],
    "choose_k_on_test": ["test_choose_k"],
    "choose_k_mutates_model": ["test_choose_k"],
    "choose_k_takes_largest": ["test_choose_k"],
    "pickled_model": ["test_save_load_model"],
    "load_ignores_name": ["test_save_load_model"],
    "predict_in_train_mode": ["test_predict_photo"],
    "predict_without_softmax": ["test_predict_photo"],
    "predict_with_library": ["test_predict_photo"],
    "predict_hard_coded_names": ["test_predict_photo"],
    "question_test_set": ["test_q_capstone"],
}

KIND: dict[str, str] = {
    "hard_coded_3_classes": "narrow",
    "test_set_used_for_selection": "leak",
    "backbone_not_frozen": "how",
    "choose_k_on_test": "leak",
    "choose_k_mutates_model": "narrow",
    "choose_k_takes_largest": "how",
    "pickled_model": "how",
    "load_ignores_name": "narrow",
    "predict_in_train_mode": "how",
    "predict_without_softmax": "how",
    "predict_with_library": "forbidden",
    "predict_hard_coded_names": "narrow",
    "question_test_set": "leak",
}

ALTERNATIVE: dict[str, str] = {
    "choose_k": '''def choose_k(model, splits, preprocess, candidates=(1, 2), epochs=20, device=None):
    results = {}
    for k in sorted(candidates):
        candidate = copy.deepcopy(model)
        replace_head(candidate, len(splits.classes))
        freeze(candidate, trainable_stages=k)
        cut = len(stages(candidate)) - k
        train_fs, val_fs = (cached_features(candidate, s, preprocess, cut=cut, device=device, progress=False)
                            for s in (splits.train, splits.val))
        top = top_stages(candidate, cut)
        fit(top, train_fs, val_fs, epochs=epochs, lr=5e-3, device=device, progress=False)
        results[k] = tl_course.evaluate(top, val_fs, device=device).accuracy
    best = None
    for k in sorted(results):
        if best is None or results[k] > results[best]:
            best = k
    return best, results
''',
    "save_load_model": '''def save_model(model, path):
    torch.save({name: t.detach().cpu().clone() for name, t in model.state_dict().items()}, str(path))


def load_model(path, num_classes, name="efficientnet_lite0"):
    net = load_random_init(name).model
    replace_head(net, num_classes)
    net.load_state_dict(torch.load(str(path), weights_only=True))
    net.eval()
    return net
''',
    "predict_photo": '''def predict_photo(model, preprocess, path, classes):
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(torch.stack([preprocess(load_rgb(Path(path)))]).to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    probs = logits.softmax(-1).squeeze(0)
    return list(classes)[probs.argmax().item()], probs.clone()
''',
    "run_pipeline": '''def run_pipeline(root, device=None) -> dict:
    splits = image_folder_splits(root, train_per_class=profile.train_per_class)
    pre = load_pretrained(image_size=profile.image_size)
    model = replace_head(pre.model, len(splits.classes))
    freeze(model, trainable_stages=1)
    train = cached_features(model, splits.train, pre.preprocess, device=device, progress=False)
    val = cached_features(model, splits.val, pre.preprocess, device=device, progress=False)
    test = cached_features(model, splits.test, pre.preprocess, device=device, progress=False)
    history = fit(top_stages(model), train, val, epochs=profile.head_epochs, lr=1e-2, device=device, progress=False)
    test_accuracy = tl_course.evaluate(top_stages(model), test, device=device).accuracy
    history.test = None
    return dict(accuracy=test_accuracy, val_accuracy=history.best_val_acc, classes=tuple(splits.classes),
                model=model, preprocess=pre.preprocess, history=history)
''',
    "q_capstone": '''def q_capstone():
    return " b "
''',
}

# ---------------------------------------------------------------------------------------------
# Issue 16: every graded function is checked against its whole contract. Each mistake below breaks one line
# of a docstring / exercise contract, two styles per class: 1 side effects on what the caller owns, 2 selection
# discipline, 3 heads other than one Linear, 4 generality, 5 device, 7 autograd hygiene, 8 the wrong object
# returned, and 6 ties and order (at the end of this file).
# ---------------------------------------------------------------------------------------------
def _predict(body: str) -> str:
    """A predict_photo that restores every layer's mode, with ``body`` as its forward pass (x -> probabilities)."""
    return _PREDICT_HEADER + '''    modes = {m: m.training for m in model.modules()}
    model.eval()
    device = next(model.parameters()).device
''' + body + '''    for m, mode in modes.items():
        m.training = mode
    return classes[int(probabilities.argmax())], probabilities
'''


_FORWARD = '''    x = preprocess(load_rgb(path)).unsqueeze(0).to(device)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)[0].cpu()
'''


_SAVE = '''def save_model(model, path):
    torch.save(model.state_dict(), path)


'''

NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on what the caller owns
    "choose_k_seeds_everything": (1, "narrow", {"choose_k": _choose(
        copy_line="        tl_course.seed_everything(0)  # the same start for every k\n"
                  "        m = replace_head(copy.deepcopy(model), len(splits.classes))\n")}, ["test_choose_k"]),
    "choose_k_puts_the_callers_model_in_eval": (1, "narrow", {"choose_k": swap(
        _choose(), "    accuracies = {}\n", "    model.eval()  # a frozen network extracts features in eval mode\n"
        "    accuracies = {}\n")}, ["test_choose_k"]),
    "predict_leaves_the_model_in_eval": (1, "narrow", {"predict_photo": _PREDICT_HEADER + '''    model.eval()
    device = next(model.parameters()).device
''' + _FORWARD + '''    return classes[int(probabilities.argmax())], probabilities
'''}, ["test_predict_photo"]),
    # 2. selection discipline: the number recorded is the validation accuracy of the weights kept
    "choose_k_records_training_accuracy": (2, "how", {"choose_k": swap(
        _choose(), "accuracies[k] = history.best_val_acc",
        'accuracies[k] = max(e["train_acc"] for e in history.epochs)')}, ["test_choose_k"]),
    "pipeline_fit_without_validation": (2, "leak", {"run_pipeline": swap(swap(
        _pipeline(), 'feats["train"], feats["val"], test=', 'feats["train"], test='),
        '"val_accuracy": history.best_val_acc',
        '"val_accuracy": tl_course.evaluate(top_stages(model), feats["val"], device=device).accuracy')},
        ["test_selected_on_val"]),
    # 3. heads other than one Linear
    "predict_only_batchnorm_to_eval": (3, "how", {"predict_photo": _PREDICT_HEADER + '''    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    flags = [m.training for m in norms]
    for m in norms:
        m.eval()  # BatchNorm is what eval mode changes
    device = next(model.parameters()).device
''' + _FORWARD + '''    for m, flag in zip(norms, flags):
        m.train(flag)
    return classes[int(probabilities.argmax())], probabilities
'''}, ["test_predict_photo"]),
    "pipeline_softmax_after_the_head": (3, "how", {"run_pipeline": _pipeline(
        classes="len(splits.classes))\n    model.classifier = torch.nn.Sequential(model.classifier, torch.nn.Softmax(dim=1)"
    )}, ["test_pipeline_shape"]),
    # 4. generality
    "load_model_hard_codes_two_classes": (4, "narrow", {"save_load_model": _SAVE + '''def load_model(path, num_classes, name="efficientnet_lite0"):
    model = replace_head(load_random_init(name).model, 2)  # ants, bees
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''}, ["test_save_load_model"]),
    "save_model_assumes_a_path_object": (4, "narrow", {"save_load_model": '''def save_model(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def load_model(path, num_classes, name="efficientnet_lite0"):
    model = replace_head(load_random_init(name).model, num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''}, ["test_save_load_model"]),
    # 5. device
    "predict_photo_left_on_the_cpu": (5, "narrow", {"predict_photo": _predict(
        _FORWARD.replace(".unsqueeze(0).to(device)", ".unsqueeze(0)"))}, ["test_predict_photo"]),
    "choose_k_ignores_device": (5, "narrow", {"choose_k": _choose().replace(", device=device", "")},
                                ["test_choose_k"]),
    # 7. autograd hygiene
    "predict_detaches_after_the_forward": (7, "how", {"predict_photo": _predict('''    logits = model(preprocess(load_rgb(path)).unsqueeze(0).to(device))
    probabilities = torch.softmax(logits, dim=1)[0].detach().cpu()
''')}, ["test_predict_photo"]),
    "predict_no_grad_only_around_the_softmax": (7, "how", {"predict_photo": _predict('''    logits = model(preprocess(load_rgb(path)).unsqueeze(0).to(device))
    with torch.no_grad():
        probabilities = torch.softmax(logits, dim=1)[0].cpu()
''')}, ["test_predict_photo"]),
    # 8. the wrong object returned
    "pipeline_returns_the_training_transform": (8, "how", {"run_pipeline": swap(
        _pipeline(), '"preprocess": preprocess,', '"preprocess": train_transform(preprocess),').replace(
        _HEADER, "from tl_course.data import train_transform\n\n" + _HEADER)}, ["test_pipeline_shape"]),
    "pipeline_returns_the_top_as_model": (8, "how", {"run_pipeline": swap(
        _pipeline(), '"model": model,', '"model": top_stages(model),')}, ["test_pipeline_shape"]),
}

#: issue-16 class of mistake (1..8, see NEW_MISTAKES) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# Dict comprehensions and min() over (-accuracy, k); os.fspath and train(False); per-layer flags restored in finally.
_ALTERNATIVE_MIN: dict[str, str] = {
    "choose_k": '''def choose_k(model, splits, preprocess, candidates=(1, 2), epochs=20, device=None):
    scores = {}
    n_classes = len(splits.classes)
    for k in candidates:
        net = copy.deepcopy(model)
        replace_head(net, n_classes)
        freeze(net, trainable_stages=k)
        cut = len(stages(net)) - k
        feats = {name: cached_features(net, getattr(splits, name), preprocess, cut=cut, device=device, progress=False)
                 for name in ("train", "val")}
        run = fit(top_stages(net, cut), feats["train"], feats["val"], epochs=epochs, lr=1e-2, device=device,
                  progress=False)
        scores[k] = run.best_val_acc
    return min(scores, key=lambda k: (-scores[k], k)), scores
''',
    "save_load_model": '''def save_model(model, path):
    torch.save(dict(model.state_dict()), os.fspath(path))


def load_model(path, num_classes, name="efficientnet_lite0"):
    net = replace_head(load_random_init(name).model, num_classes)
    net.load_state_dict(torch.load(Path(path), weights_only=True, map_location="cpu"))
    return net.train(False)
''',
    "predict_photo": '''def predict_photo(model, preprocess, path, classes):
    flags = [(m, m.training) for m in model.modules()]
    model.train(False)
    try:
        x = preprocess(load_rgb(str(path)))[None].to(next(model.parameters()).device)
        with torch.no_grad():
            p = torch.nn.functional.softmax(model(x)[0], dim=0).cpu()
    finally:
        for m, flag in flags:
            m.training = flag
    return str(classes[int(torch.argmax(p))]), p
''',
    "q_capstone": '''def q_capstone():
    return "b"
''',
}

# A loop from the largest k down with >= (the smaller k wins a tie); inference mode; the Pretrained fields by name.
_ALTERNATIVE_COUNTDOWN: dict[str, str] = {
    "choose_k": '''def choose_k(model, splits, preprocess, candidates=(1, 2), epochs=20, device=None):
    accuracies, best_k = {}, None
    for k in sorted(candidates, reverse=True):
        m = copy.deepcopy(model)
        m = replace_head(m, len(splits.classes))
        freeze(m, trainable_stages=k)
        cut = len(stages(m)) - k
        tr = cached_features(m, splits.train, preprocess, cut=cut, device=device, progress=False)
        va = cached_features(m, splits.val, preprocess, cut=cut, device=device, progress=False)
        accuracies[k] = fit(top_stages(m, cut), tr, va, epochs=epochs, lr=0.01, device=device,
                            progress=False).best_val_acc
        if best_k is None or accuracies[k] >= accuracies[best_k]:
            best_k = k
    return best_k, accuracies
''',
    "predict_photo": '''def predict_photo(model, preprocess, path, classes):
    was_training = {name: m.training for name, m in model.named_modules()}
    model.eval()
    device = next(iter(model.parameters())).device
    with torch.inference_mode():
        logits = model(preprocess(load_rgb(path)).unsqueeze(0).to(device))
    probabilities = torch.softmax(logits.float(), dim=-1).reshape(-1).to("cpu").clone()
    for name, m in model.named_modules():
        m.training = was_training[name]
    return classes[probabilities.argmax().item()], probabilities
''',
    "run_pipeline": '''def run_pipeline(root, device=None) -> dict:
    splits = image_folder_splits(root, train_per_class=profile.train_per_class)
    pretrained = load_pretrained(image_size=profile.image_size)
    net = pretrained.model
    replace_head(net, len(splits.classes))
    freeze(net, trainable_stages=1)
    cached = {}
    for part in ("train", "val", "test"):
        cached[part] = cached_features(net, getattr(splits, part), pretrained.preprocess, device=device,
                                       progress=False)
    history = fit(top_stages(net), cached["train"], cached["val"], test=cached["test"],
                  epochs=profile.head_epochs, lr=0.01, batch_size=profile.batch_size, device=device, progress=False)
    out = {"model": net, "preprocess": pretrained.preprocess, "history": history, "classes": tuple(splits.classes)}
    out.update(accuracy=history.test.accuracy, val_accuracy=history.best_val_acc)
    return out
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_MIN, _ALTERNATIVE_COUNTDOWN]

# run_pipeline's own contract on the grader's 3-class folder (added after the rest: same classes as above)
NEW_MISTAKES.update({
    "pipeline_seeds_everything": (1, "narrow", {"run_pipeline": swap(
        _pipeline(), "    splits = image_folder_splits(", "    tl_course.seed_everything(0)  # reproducible\n"
        "    splits = image_folder_splits(")}, ["test_pipeline_shape"]),
    "pipeline_head_for_two_classes": (4, "narrow", {"run_pipeline": _pipeline(classes="2")},
                                      ["test_pipeline_shape"]),
})
for _name in ("pipeline_seeds_everything", "pipeline_head_for_two_classes"):
    _cls, _kind, _cells, _fails = NEW_MISTAKES[_name]
    MISTAKES[_name], MUST_FAIL[_name], KIND[_name], CLASS[_name] = _cells, _fails, _kind, _cls

# 6. ties and order: the grader seeds the new heads' initialisation, so k = 1 and k = 2 tie on its validation
# photos; candidates come as (2, 1), so a tie broken by the order of candidates picks 2, not the smaller k.
NEW_MISTAKES.update({
    "choose_k_tie_to_the_first_candidate": (6, "narrow", {"choose_k": _choose(
        best="max(candidates, key=accuracies.get)")}, ["test_choose_k"]),
    "choose_k_argmax_in_candidate_order": (6, "narrow", {"choose_k": _choose(
        best="list(candidates)[int(torch.tensor([accuracies[k] for k in candidates]).argmax())]")}, ["test_choose_k"]),
})
for _name in ("choose_k_tie_to_the_first_candidate", "choose_k_argmax_in_candidate_order"):
    _cls, _kind, _cells, _fails = NEW_MISTAKES[_name]
    MISTAKES[_name], MUST_FAIL[_name], KIND[_name], CLASS[_name] = _cells, _fails, _kind, _cls
