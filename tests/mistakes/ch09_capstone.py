"""Classic mistakes of chapter 9 (the whole pipeline on your own folder), each of which must cost points.

MISTAKES: mistake name -> {answer cell grade_id: the student's full replacement source}.
MUST_FAIL: mistake name -> grade_ids of the test cells that must score below full points.
"""

_HEADER = '''def run_pipeline(root, device=None) -> dict:
    """Frozen pretrained network + new softmax trained on cached features for the image folder at root."""
'''


def _pipeline(classes="len(splits.classes)", freeze_line="    freeze(model, trainable_stages=1)\n",
              val='feats["val"]', preprocess_line="") -> str:
    return _HEADER + f'''    splits = image_folder_splits(root, train_per_class=profile.train_per_class)
    model, preprocess, _ = load_pretrained(image_size=profile.image_size)
{preprocess_line}    replace_head(model, {classes})
{freeze_line}    feats = {{name: cached_features(model, getattr(splits, name), preprocess, device=device, progress=False)
             for name in ("train", "val", "test")}}
    history = fit(top_stages(model), feats["train"], {val}, test=feats["test"], epochs=profile.head_epochs,
                  lr=1e-2, batch_size=profile.batch_size, device=device, progress=False)
    return {{"accuracy": history.test.accuracy, "val_accuracy": history.best_val_acc, "classes": splits.classes,
            "model": model, "preprocess": preprocess, "history": history}}
'''


MISTAKES: dict[str, dict[str, str]] = {
    # The cat detector's 3 classes copied over: the head does not match the folders.
    "hard_coded_3_classes": {"run_pipeline": _pipeline(classes="3")},
    # The epoch is chosen on the test set (passed to fit as the validation set).
    "test_set_used_for_selection": {"run_pipeline": _pipeline(val='feats["test"]')},
    # The backbone is never frozen (the cache still works, but the model is not what was asked).
    "backbone_not_frozen": {"run_pipeline": _pipeline(freeze_line="")},
    # No normalisation: resize and crop, but pixels left in [0, 1].
    "no_normalisation": {"run_pipeline": _pipeline(preprocess_line='''    from torchvision.transforms import v2
    preprocess = v2.Compose([v2.Resize(preprocess.resize_size[0]), v2.CenterCrop(profile.image_size),
                             v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
''')},
}

MUST_FAIL: dict[str, list[str]] = {
    "hard_coded_3_classes": ["test_pipeline_shape"],
    "test_set_used_for_selection": ["test_selected_on_val"],
    "backbone_not_frozen": ["test_pipeline_shape"],
    "no_normalisation": ["test_preprocessing"],
}
