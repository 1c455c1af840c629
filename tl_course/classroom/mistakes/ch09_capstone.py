"""Classic mistakes of chapter 9 (the capstone: choose k, save and reload, predict, the whole pipeline).

MISTAKES: mistake -> {answer grade_id: the student's full source}; MUST_FAIL: mistake -> test grade_ids that
must lose points; KIND: mistake -> leak | how | forbidden | narrow; ALTERNATIVE: a correct answer in another
style for every answer cell (must score 100 %).
"""

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
            logits = model(torch.stack([preprocess(load_rgb(Path(path)))]))
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
