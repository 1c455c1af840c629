"""Classic mistakes for chapter 5 (precompute the activations); each must cost points."""

_EXTRACT_HEADER = '''def extract_features(backbone, loader, device=None):
    """Features of every image in ``loader`` as ``(features, labels)``: float32 and int64 CPU tensors."""
'''

MISTAKES: dict[str, dict[str, str]] = {
    # No .eval(): BatchNorm normalises with batch statistics and updates its running statistics.
    "train_mode_extraction": {"extract_features": _EXTRACT_HEADER + '''    device = tl_course.get_device(device)
    backbone.to(device)
    features, labels = [], []
    with torch.inference_mode():
        for images, targets in loader:
            features.append(backbone(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(targets).cpu())
    return torch.cat(features), torch.cat(labels).long()
'''},
    # Gradients on: the features carry an autograd graph (requires_grad True).
    "gradients_on": {"extract_features": _EXTRACT_HEADER + '''    device = tl_course.get_device(device)
    backbone.to(device).eval()
    features, labels = [], []
    for images, targets in loader:
        features.append(backbone(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets).cpu())
    return torch.cat(features), torch.cat(labels).long()
'''},
    # Augmentation inside the cache: every read of an item is a different random crop / flip.
    "augmentation_in_cache": {"make_cache_dataset": '''def make_cache_dataset(samples, preprocess):
    """A dataset of ``(image, label)`` for ``samples`` whose items are safe to cache."""
    return ImageDataset(samples, train_transform(preprocess))
'''},
    # Pickled custom object: torch.load(weights_only=True) refuses it.
    "pickled_custom_object": {"save_load": '''class FeatureCache:
    def __init__(self, features, labels):
        self.features, self.labels = features, labels


def save_features(path, features, labels):
    """Write features and labels to ``path`` in a file that loads without pickle."""
    torch.save(FeatureCache(features, labels), path)


def load_features(path):
    """Read ``(features, labels)`` written by ``save_features``."""
    cache = torch.load(path, weights_only=False)
    return cache.features, cache.labels
'''},
    # The softmax never trains (learning rate 0): it stays at its random initialisation.
    "head_not_trained": {"train_head": '''seed_everything(0)
head = nn.Linear(train_fs.features.shape[1], 3)
history = fit(head, train_fs, val_fs, epochs=profile.head_epochs, lr=0.0, device=device, progress=False)
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "train_mode_extraction": ["test_extract_features"],
    "gradients_on": ["test_extract_features"],
    "augmentation_in_cache": ["test_make_cache_dataset"],
    "pickled_custom_object": ["test_save_load"],
    "head_not_trained": ["test_train_head"],
}
