"""Classic mistakes for chapter 5 (precompute the activations); each must cost points.

MISTAKES: mistake -> {answer grade_id: the student's full source}; MUST_FAIL: mistake -> test grade_ids that
must lose points; KIND: mistake -> leak | how | forbidden | narrow; ALTERNATIVE: a correct answer in another
style for every answer cell (must score 100 %).
"""

_EXTRACT_HEADER = '''def extract_features(backbone, loader, device=None):
    """Features of every image in ``loader`` as ``(features, labels)``: float32 and int64 CPU tensors."""
'''
_SAVE_LOAD = '''def save_features(path, features, labels):
    """Write features and labels to ``path`` in a file that loads without pickle."""
    torch.save({"features": %s, "labels": labels.detach().cpu()}, path)


def load_features(path):
    """Read ``(features, labels)`` written by ``save_features``."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["features"], payload["labels"]
'''
_CACHE_HEADER = '''def make_cache_dataset(samples, preprocess):
    """A dataset of ``(image, label)`` for ``samples`` whose items are safe to cache."""
'''


def _loop(setup="", batches="        for start in range(0, len(y), batch_size):\n", order="torch.randperm(len(y))",
          zero="            optimizer.zero_grad()\n", loss="loss_fn(head(xb), yb)",
          val_x="val[0].to(device)", val_y="val[1].to(device)", keep="        if best_acc is None or val_acc > best_acc:\n"
          "            best_acc, best_state = val_acc, copy.deepcopy(head.state_dict())\n",
          restore="    if best_state is not None:\n        head.load_state_dict(best_state)\n",
          device="    device = tl_course.get_device(device)\n", x="x[idx]") -> str:
    return f'''def train_softmax(head, train, val, epochs, lr, batch_size=32, device=None):
    """Mini-batch training of ``head`` on ``train = (features, labels)``; keeps the best epoch on ``val``."""
{device}    head.to(device)
    x, y = train
{setup}    val_x, val_y = {val_x}, {val_y}
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    history, best_acc, best_state = [], None, None
    for epoch in range(1, epochs + 1):
        head.train()
        order = {order}
        total = 0.0
{batches}            idx = order[start:start + batch_size]
            xb, yb = {x}.to(device), y[idx].to(device)
{zero}            loss = {loss}
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        head.eval()
        with torch.no_grad():
            val_acc = (head(val_x).argmax(1) == val_y).float().mean().item()
        history.append({{"epoch": epoch, "train_loss": total / max(1, len(y)), "val_acc": val_acc}})
{keep}{restore}    return history
'''


def _cat_head(train="(train.features, train.labels)", val="(val.features, val.labels)", lr="1e-2") -> str:
    return f'''def train_cat_head(train, val):
    """A new 3-way softmax trained with train_softmax on the feature set ``train``, epoch chosen on ``val``."""
    seed_everything(0)
    head = nn.Linear(train.features.shape[1], 3)
    history = train_softmax(head, {train}, {val},
                            epochs=30, lr={lr}, batch_size=profile.batch_size, device=device)
    return head, history


head, history = train_cat_head(train_fs, val_fs)
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
    # The course's own function instead of the loop the exercise asks for.
    "extract_calls_library": {"extract_features": _EXTRACT_HEADER + '''    return tl_course.extract_features(backbone, loader, device=device)
'''},
    # The device argument is ignored: always the CPU, so "cuda" is silently not used.
    "extract_ignores_device": {"extract_features": _EXTRACT_HEADER + '''    backbone.cpu().eval()
    features, labels = [], []
    with torch.no_grad():
        for images, targets in loader:
            features.append(backbone(images).float())
            labels.append(torch.as_tensor(targets))
    return torch.cat(features), torch.cat(labels).long()
'''},
    # Augmentation inside the cache: every read of an item is a different random crop / flip.
    "augmentation_in_cache": {"make_cache_dataset": _CACHE_HEADER + '''    return ImageDataset(samples, train_transform(preprocess))
'''},
    # ImageNet statistics hard-coded: right for many torchvision models, wrong for the preprocess given.
    "imagenet_stats_hard_coded": {"make_cache_dataset": _CACHE_HEADER + '''    from torchvision.transforms import v2
    size = preprocess.crop_size[0]
    transform = v2.Compose([v2.Resize(preprocess.resize_size[0]), v2.CenterCrop(size), v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return ImageDataset(samples, transform)
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
    # Everything cast to float32 on the way in: a float16 (or float64) cache comes back changed.
    "cache_cast_to_float32": {"save_load": _SAVE_LOAD % "features.detach().cpu().float()"},
    # tl_course.fit does the training: the exercise is the loop itself.
    "loop_calls_fit": {"train_softmax": '''def train_softmax(head, train, val, epochs, lr, batch_size=32, device=None):
    """Mini-batch training of ``head`` on ``train = (features, labels)``; keeps the best epoch on ``val``."""
    history = tl_course.fit(head, train, val, epochs=epochs, lr=lr, batch_size=batch_size, device=device,
                            progress=False)
    return [{"epoch": e["epoch"], "train_loss": e["train_loss"], "val_acc": e["val_acc"]} for e in history.epochs]
'''},
    # No zero_grad: every step uses the sum of all gradients so far.
    "no_zero_grad": {"train_softmax": _loop(zero="")},
    # Mean squared error between softmax and one-hot labels instead of the cross-entropy.
    "mse_instead_of_cross_entropy": {"train_softmax": _loop(
        loss="((torch.softmax(head(xb), 1) - nn.functional.one_hot(yb, 3).float()) ** 2).mean()")},
    # The same order every epoch.
    "no_shuffle": {"train_softmax": _loop(order="torch.arange(len(y))")},
    # range(n // batch_size) batches: the last, smaller batch is never used.
    "drops_last_batch": {"train_softmax": _loop(
        batches="        for start in range(0, len(y) - batch_size + 1, batch_size):\n")},
    # The features are cast to float32: a float64 head on float64 features crashes.
    "casts_features_to_float32": {"train_softmax": _loop(x="x[idx].float()")},
    # The features are L2-normalised in place: the caller's tensors change.
    "normalises_callers_tensors": {"train_softmax": _loop(
        setup="    x /= x.norm(dim=1, keepdim=True)\n")},
    # The last epoch's weights are kept, whatever the validation accuracy says.
    "keeps_last_epoch": {"train_softmax": _loop(keep="", restore="")},
    # "val_acc" measured on the training features: the epoch is chosen by training accuracy.
    "selects_on_training_accuracy": {"train_softmax": _loop(val_x="x.to(device)", val_y="y.to(device)")},
    # load_state_dict(best_state) without a guard: epochs=0 crashes.
    "crashes_with_zero_epochs": {"train_softmax": _loop(restore="    head.load_state_dict(best_state)\n")},
    # The notebook's test features used to choose the epoch.
    "cat_head_selects_on_test": {"train_cat_head": _cat_head(val="(test_fs.features, test_fs.labels)")},
    # Training and validation photos pooled for training ("more data").
    "cat_head_trains_on_val_too": {"train_cat_head": _cat_head(
        train="(torch.cat([train.features, val.features]), torch.cat([train.labels, val.labels]))")},
    # Learning rate 0: the softmax stays at its random initialisation.
    "cat_head_not_trained": {"train_cat_head": _cat_head(lr="0.0")},
    # "More variety from augmentation" sounds good but is wrong for a cache.
    "question_augmented_cache": {"cache_question": '''def cache_question():
    """"A", "B", "C" or "D"."""
    return "C"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "train_mode_extraction": ["test_extract_features"],
    "gradients_on": ["test_extract_features"],
    "extract_calls_library": ["test_extract_features"],
    "extract_ignores_device": ["test_extract_features"],
    "augmentation_in_cache": ["test_make_cache_dataset"],
    "imagenet_stats_hard_coded": ["test_make_cache_dataset"],
    "pickled_custom_object": ["test_save_load"],
    "cache_cast_to_float32": ["test_save_load"],
    "loop_calls_fit": ["test_train_softmax_loop"],
    "no_zero_grad": ["test_train_softmax_loop"],
    "mse_instead_of_cross_entropy": ["test_train_softmax_loop"],
    "no_shuffle": ["test_train_softmax_loop"],
    "drops_last_batch": ["test_train_softmax_loop"],
    "casts_features_to_float32": ["test_train_softmax_loop"],
    "normalises_callers_tensors": ["test_train_softmax_loop"],
    "keeps_last_epoch": ["test_train_softmax_selection"],
    "selects_on_training_accuracy": ["test_train_softmax_selection"],
    "crashes_with_zero_epochs": ["test_train_softmax_selection"],
    "cat_head_selects_on_test": ["test_train_cat_head"],
    "cat_head_trains_on_val_too": ["test_train_cat_head"],
    "cat_head_not_trained": ["test_train_cat_head"],
    "question_augmented_cache": ["test_cache_question"],
}

KIND: dict[str, str] = {
    "train_mode_extraction": "how",
    "gradients_on": "how",
    "extract_calls_library": "forbidden",
    "extract_ignores_device": "narrow",
    "augmentation_in_cache": "leak",
    "imagenet_stats_hard_coded": "narrow",
    "pickled_custom_object": "how",
    "cache_cast_to_float32": "narrow",
    "loop_calls_fit": "forbidden",
    "no_zero_grad": "how",
    "mse_instead_of_cross_entropy": "how",
    "no_shuffle": "how",
    "drops_last_batch": "narrow",
    "casts_features_to_float32": "narrow",
    "normalises_callers_tensors": "narrow",
    "keeps_last_epoch": "how",
    "selects_on_training_accuracy": "how",
    "crashes_with_zero_epochs": "narrow",
    "cat_head_selects_on_test": "leak",
    "cat_head_trains_on_val_too": "leak",
    "cat_head_not_trained": "how",
    "question_augmented_cache": "how",
}

ALTERNATIVE: dict[str, str] = {
    # no_grad instead of inference_mode, the mode restored afterwards, labels gathered as a Python list
    "extract_features": '''def extract_features(backbone, loader, device=None):
    dev = torch.device(device) if device is not None else tl_course.get_device()
    was_training = backbone.training
    backbone = backbone.to(dev)
    backbone.eval()
    chunks, all_labels = [], []
    try:
        with torch.no_grad():
            for batch in loader:
                images, targets = batch[0], batch[1]
                out = backbone(images.to(dev))
                chunks.append(out.detach().to("cpu", torch.float32))
                all_labels += [int(t) for t in targets]
    finally:
        backbone.train(was_training)
    return torch.cat(chunks, dim=0), torch.tensor(all_labels, dtype=torch.int64)
''',
    # a small Dataset class of one's own
    "make_cache_dataset": '''class FixedImages(torch.utils.data.Dataset):
    def __init__(self, files, labels, transform):
        self.files, self.labels, self.transform = list(files), list(labels), transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(tl_course.load_rgb(self.files[i])), self.labels[i]


def make_cache_dataset(samples, preprocess):
    return FixedImages(samples.files, samples.labels, preprocess)
''',
    # safetensors instead of torch.save
    "save_load": '''from safetensors.torch import save_file, load_file


def save_features(path, features, labels):
    save_file({"x": features.detach().cpu().contiguous(), "y": labels.detach().cpu().contiguous()}, str(path))


def load_features(path):
    tensors = load_file(str(path))
    return tensors["x"], tensors["y"]
''',
    # SGD with momentum, torch.split batches, log_softmax + nll_loss, head.zero_grad, a while loop
    "train_softmax": '''import torch.nn.functional as F


def train_softmax(head, train, val, epochs, lr, batch_size=32, device=None):
    dev = tl_course.get_device(device)
    head = head.to(dev)
    features, labels = train[0].to(dev), train[1].to(dev)
    opt = torch.optim.SGD(head.parameters(), lr=lr * 10, momentum=0.9)
    history, best, epoch = [], (-1.0, None), 0
    while epoch < epochs:
        epoch += 1
        head.train()
        losses = []
        for idx in torch.split(torch.randperm(len(labels), device=dev), batch_size):
            head.zero_grad(set_to_none=True)
            loss = F.nll_loss(F.log_softmax(head(features[idx]), dim=1), labels[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item() * len(idx))
        head.eval()
        with torch.no_grad():
            predictions = head(val[0].to(dev)).argmax(dim=1).cpu()
        acc = (predictions == val[1].cpu()).double().mean().item()
        history.append(dict(epoch=epoch, train_loss=sum(losses) / max(len(labels), 1), val_acc=acc))
        if acc > best[0]:
            best = (acc, {k: v.detach().clone() for k, v in head.state_dict().items()})
    if best[1] is not None:
        head.load_state_dict(best[1])
    return history
''',
    "train_cat_head": '''def train_cat_head(train, val):
    torch.manual_seed(1)
    n_features = train.features.size(-1)
    head = nn.Linear(n_features, len(tl_course.CLASSES))
    log = train_softmax(head, (train.features, train.labels), (val.features, val.labels), epochs=40, lr=5e-3,
                        batch_size=16, device=device)
    return head, log


head, history = train_cat_head(train_fs, val_fs)
''',
    "cache_question": '''def cache_question():
    answer = "b"  # the frozen part is a fixed function of the image
    return answer
''',
}


# More mistakes the hidden tests catch, kept out of CI's autograde to stay inside its time budget (every
# mistake in one answer cell costs one more autograde). Checked with all the others in one kernel during
# development; move one back into MISTAKES to have CI prove it again.
EXTRA_MISTAKES: dict[str, dict[str, str]] = {name: MISTAKES.pop(name) for name in ['no_shuffle', 'selects_on_training_accuracy', 'crashes_with_zero_epochs', 'casts_features_to_float32', 'normalises_callers_tensors', 'cat_head_not_trained']}
EXTRA_MUST_FAIL: dict[str, list[str]] = {name: MUST_FAIL.pop(name) for name in EXTRA_MISTAKES}
EXTRA_KIND: dict[str, str] = {name: KIND.pop(name) for name in EXTRA_MISTAKES}
