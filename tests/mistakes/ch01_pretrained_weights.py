"""Classic mistakes of chapter 1 (open-source weights: top-k guesses), each of which must cost points.

MISTAKES: mistake name -> {answer cell grade_id: the student's full replacement source}.
MUST_FAIL: mistake name -> grade_ids of the test cells that must score below full points.
"""

_HEADER = '''def top_k(model, image, preprocess, categories, k=5, device=None):
    """The k most probable categories of a PIL image: [(name, probability), ...], most probable first."""
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
    top = probs.topk(k)
    return [(categories[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
'''},
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
    top = probs.topk(k)
    return [(categories[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
'''},
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
}

MUST_FAIL: dict[str, list[str]] = {
    "no_softmax": ["test_top_k_photos", "test_top_k_reference"],
    "no_eval_mode": ["test_top_k_eval_mode"],
    "imagenet_normalisation": ["test_top_k_reference"],
    "sorted_ascending": ["test_top_k_photos", "test_top_k_reference"],
    "count_tensors": ["test_count_params"],
    "count_ignores_requires_grad": ["test_count_params"],
}
