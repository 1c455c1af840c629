"""Classic mistakes for chapter 5 (precompute the activations); each must cost points.

MISTAKES: mistake -> {answer grade_id: the student's full source}; MUST_FAIL: mistake -> test grade_ids that
must lose points; KIND: mistake -> leak | how | forbidden | narrow; ALTERNATIVE: a correct answer in another
style for every answer cell (must score 100 %).
"""

from tl_course.classroom.mistakes import add_new_mistakes, swap

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

# ---------------------------------------------------------------------------------------------
# Issue 16: every graded function is checked against its whole contract. Each mistake below breaks one line of
# a docstring contract, at least two per class of mistake, in different styles: 1 side effects on what the caller
# owns, 2 selection discipline, 3 heads other than one nn.Linear, 4 generality, 5 device, 6 ties and order,
# 7 autograd hygiene, 8 the wrong object returned.
# ---------------------------------------------------------------------------------------------
_EXTRACT = _EXTRACT_HEADER + '''    device = tl_course.get_device(device)
    backbone.to(device).eval()
    features, labels = [], []
    with torch.inference_mode():
        for images, targets in loader:
            features.append(backbone(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(targets).cpu())
    return torch.cat(features), torch.cat(labels).long()
'''
_SOFTMAX = _loop()


NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on what the caller owns
    "extract_freezes_the_backbone": (1, "narrow", {"extract_features": swap(
        _EXTRACT, "    backbone.to(device).eval()\n",
        "    backbone.to(device).eval()\n    backbone.requires_grad_(False)  # frozen while we extract\n")},
        ["test_extract_features"]),
    "extract_keeps_eval_with_an_override": (1, "narrow", {"extract_features": swap(
        _EXTRACT, "    backbone.to(device).eval()\n",
        "    backbone.to(device).eval()\n    backbone.train = lambda mode=True: backbone  # nobody switches it back\n")},
        ["test_extract_features"]),
    "loop_shuffles_with_seeded_numpy": (1, "narrow", {"train_softmax": "import numpy as np\n\n\n" + swap(
        _SOFTMAX, "        order = torch.randperm(len(y))\n",
        "        np.random.seed(epoch)  # reproducible shuffles\n        order = torch.from_numpy(np.random.permutation(len(y)))\n")},
        ["test_train_softmax_loop"]),
    "loop_seeds_torch": (1, "narrow", {"train_softmax": swap(
        _SOFTMAX, "    x, y = train\n", "    x, y = train\n    torch.manual_seed(0)\n")}, ["test_train_softmax_loop"]),
    # 2. selection discipline
    "loop_keeps_the_live_state_dict": (2, "how", {"train_softmax": swap(
        _SOFTMAX, "copy.deepcopy(head.state_dict())", "head.state_dict()")}, ["test_train_softmax_selection"]),
    "loop_selects_on_the_training_loss": (2, "how", {"train_softmax": swap(swap(
        _SOFTMAX, "        if best_acc is None or val_acc > best_acc:\n            best_acc, best_state = val_acc, ",
        "        if best_acc is None or total < best_acc:  # the lowest loss is the best fit\n            best_acc, best_state = total, "),
        "    history, best_acc", "    history, best_acc")}, ["test_train_softmax_selection"]),
    # 3. heads other than one nn.Linear
    "loop_validates_in_train_mode": (3, "how", {"train_softmax": swap(_SOFTMAX, "        head.eval()\n", "")},
                                     ["test_train_softmax_loop"]),
    "loop_sets_train_mode_once": (3, "how", {"train_softmax": swap(swap(
        _SOFTMAX, "    for epoch in range(1, epochs + 1):\n        head.train()\n",
        "    head.train()\n    for epoch in range(1, epochs + 1):\n"), "        head.eval()\n", "")},
        ["test_train_softmax_loop"]),
    "cat_head_ends_with_softmax": (3, "how", {"train_cat_head": swap(
        _cat_head(), "    head = nn.Linear(train.features.shape[1], 3)\n",
        "    head = nn.Sequential(nn.Linear(train.features.shape[1], 3), nn.Softmax(dim=1))  # probabilities\n")},
        ["test_train_cat_head"]),
    "cat_head_ends_with_relu": (3, "how", {"train_cat_head": swap(
        _cat_head(), "    head = nn.Linear(train.features.shape[1], 3)\n",
        "    head = nn.Sequential(nn.Linear(train.features.shape[1], 3), nn.ReLU())\n")}, ["test_train_cat_head"]),
    # 4. generality
    "loop_one_hot_three_classes": (4, "narrow", {"train_softmax": swap(
        _SOFTMAX, "loss = loss_fn(head(xb), yb)",
        "loss = -(nn.functional.one_hot(yb, 3) * torch.log_softmax(head(xb), 1)).sum(1).mean()")},
        ["test_train_softmax_loop"]),
    "loop_counts_classes_in_the_labels": (4, "narrow", {"train_softmax": swap(swap(
        _SOFTMAX, "    loss_fn = nn.CrossEntropyLoss()\n",
        "    n_classes = len(torch.unique(y))\n    loss_fn = nn.CrossEntropyLoss()\n"),
        "loss = loss_fn(head(xb), yb)", "loss = loss_fn(head(xb)[:, :n_classes], yb)")}, ["test_train_softmax_loop"]),
    "loop_one_batch_too_many": (4, "narrow", {"train_softmax": _loop(
        batches="        for b in range(len(y) // batch_size + 1):\n            start = b * batch_size\n")},
        ["test_train_softmax_loop"]),
    "cat_head_width_hard_coded": (4, "narrow", {"train_cat_head": swap(
        _cat_head(), "nn.Linear(train.features.shape[1], 3)", "nn.Linear(1280, 3)  # EfficientNet-Lite0's features")},
        ["test_train_cat_head"]),
    "cat_head_width_from_the_notebook": (4, "narrow", {"train_cat_head": swap(
        _cat_head(), "nn.Linear(train.features.shape[1], 3)", "nn.Linear(train_fs.features.shape[1], 3)")},
        ["test_train_cat_head"]),
    # 5. device
    "extract_leaves_images_on_the_cpu": (5, "narrow", {"extract_features": swap(
        _EXTRACT, "backbone(images.to(device))", "backbone(images)")}, ["test_extract_features"]),
    "extract_never_moves_the_backbone": (5, "narrow", {"extract_features": swap(
        _EXTRACT, "    backbone.to(device).eval()\n", "    backbone.eval()\n")}, ["test_extract_features"]),
    "loop_leaves_batches_on_the_cpu": (5, "narrow", {"train_softmax": swap(
        _SOFTMAX, "xb, yb = x[idx].to(device), y[idx].to(device)", "xb, yb = x[idx], y[idx]")},
        ["test_train_softmax_loop"]),
    "loop_never_moves_the_head": (5, "narrow", {"train_softmax": swap(_SOFTMAX, "    head.to(device)\n", "")},
                                  ["test_train_softmax_loop"]),
    # 6. ties and order
    "loop_keeps_the_latest_tie": (6, "how", {"train_softmax": swap(
        _SOFTMAX, "val_acc > best_acc", "val_acc >= best_acc")}, ["test_train_softmax_selection"]),
    "loop_picks_the_latest_of_the_best": (6, "how", {"train_softmax": swap(swap(
        _SOFTMAX, "        if best_acc is None or val_acc > best_acc:\n            best_acc, best_state = val_acc, copy.deepcopy(head.state_dict())\n",
        "        states.append(copy.deepcopy(head.state_dict()))\n"),
        "    if best_state is not None:\n        head.load_state_dict(best_state)\n",
        "    states = states if epochs else []\n    if states:  # the most trained of the best epochs\n"
        "        best = max(range(len(history)), key=lambda i: (history[i]['val_acc'], i))\n"
        "        head.load_state_dict(states[best])\n").replace(
        "    history, best_acc, best_state = [], None, None\n", "    history, best_acc, best_state, states = [], None, None, []\n")},
        ["test_train_softmax_selection"]),
    "cache_dataset_sorted_by_name": (6, "narrow", {"make_cache_dataset": _CACHE_HEADER + '''    pairs = sorted(zip(samples.files, samples.labels))  # a tidy, reproducible order
    return ImageDataset(Samples([f for f, _ in pairs], [y for _, y in pairs], samples.classes), preprocess)
'''}, ["test_make_cache_dataset"]),
    "cache_dataset_sorts_the_callers_samples": (6, "narrow", {"make_cache_dataset": _CACHE_HEADER + '''    order = sorted(range(len(samples.files)), key=lambda i: str(samples.files[i]))
    samples.files[:] = [samples.files[i] for i in order]
    samples.labels[:] = [samples.labels[i] for i in order]
    return ImageDataset(samples, preprocess)
'''}, ["test_make_cache_dataset"]),
    # 7. autograd hygiene
    "extract_detaches_afterwards": (7, "how", {"extract_features": _EXTRACT_HEADER + '''    device = tl_course.get_device(device)
    backbone.to(device).eval()
    features, labels = [], []
    for images, targets in loader:
        features.append(backbone(images.to(device)).detach().float().cpu())
        labels.append(torch.as_tensor(targets).cpu())
    return torch.cat(features), torch.cat(labels).long()
'''}, ["test_extract_features"]),
    "extract_reads_dot_data": (7, "how", {"extract_features": _EXTRACT_HEADER + '''    device = tl_course.get_device(device)
    backbone = backbone.to(device)
    backbone.eval()
    xs, ys = [], []
    for batch in loader:
        out = backbone(batch[0].to(device))
        xs.append(out.data.cpu().float())
        ys.append(batch[1].long())
    return torch.cat(xs), torch.cat(ys)
'''}, ["test_extract_features"]),
    "loop_running_loss_as_tensor": (7, "how", {"train_softmax": swap(
        _SOFTMAX, "total += loss.item() * len(idx)", "total += loss * len(idx)")}, ["test_train_softmax_loop"]),
    "loop_stacks_the_losses": (7, "how", {"train_softmax": swap(swap(swap(
        _SOFTMAX, "        total = 0.0\n", "        losses = []\n"),
        "            total += loss.item() * len(idx)\n", "            losses.append(loss)\n"),
        '"train_loss": total / max(1, len(y))', '"train_loss": torch.stack(losses).mean()')},
        ["test_train_softmax_loop"]),
    # 8. the wrong object returned
    "cache_dataset_with_random_flips": (8, "leak", {"make_cache_dataset": _CACHE_HEADER + '''    from torchvision.transforms import v2
    return ImageDataset(samples, v2.Compose([v2.RandomHorizontalFlip(), preprocess]))  # a little variety
'''}, ["test_make_cache_dataset"]),
    "cache_dataset_with_colour_jitter": (8, "leak", {"make_cache_dataset": _CACHE_HEADER + '''    from torchvision import transforms as T
    return ImageDataset(samples, T.Compose([T.ColorJitter(brightness=0.3, contrast=0.3), preprocess]))
'''}, ["test_make_cache_dataset"]),
    "load_returns_the_dict": (8, "narrow", {"save_load": _SAVE_LOAD.replace(
        '    return payload["features"], payload["labels"]\n', "    return payload  # features and labels by name\n")
        % "features.detach().cpu()"}, ["test_save_load"]),
}

#: issue-16 class of mistake (1..8, see NEW_MISTAKES) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# A DataLoader over a TensorDataset, the functional API, the kept copy on the CPU; the photos decoded once into a
# list; a tuple in the cache file.
_ALTERNATIVE_DATALOADER: dict[str, str] = {
    "extract_features": '''def extract_features(backbone, loader, device=None):
    device = tl_course.get_device(device)
    backbone.train(False)
    backbone.to(device)
    feats, labs = [], []
    with torch.no_grad():
        for x, y in loader:
            feats.append(backbone(x.to(device)).to(device="cpu", dtype=torch.float32))
            labs.append(torch.as_tensor(y, dtype=torch.int64).cpu())
    return torch.cat(feats), torch.cat(labs)
''',
    "make_cache_dataset": '''def make_cache_dataset(samples, preprocess):
    # every photo decoded and prepared once: a list of (tensor, label) is a dataset too
    return [(preprocess(tl_course.load_rgb(f)), int(y)) for f, y in zip(samples.files, samples.labels)]
''',
    "save_load": '''def save_features(path, features, labels):
    torch.save((features.detach().cpu().clone(), labels.detach().cpu().clone()), path)


def load_features(path):
    features, labels = torch.load(path, weights_only=True)
    return features, labels
''',
    "train_softmax": '''import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def train_softmax(head, train, val, epochs, lr, batch_size=32, device=None):
    device = tl_course.get_device(device)
    head.to(device)
    loader = DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    history, best_acc, best_state = [], float("-inf"), None
    for epoch in range(epochs):
        head.train()
        seen, loss_sum = 0, 0.0
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(head(xb.to(device)), yb.to(device))
            loss.backward()
            opt.step()
            loss_sum += float(loss) * len(yb)
            seen += len(yb)
        head.eval()
        with torch.inference_mode():
            correct = (head(val[0].to(device)).argmax(dim=1).cpu() == val[1].cpu()).sum().item()
        acc = correct / len(val[1])
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_acc": float(acc)})
        if acc > best_acc:
            best_acc = acc
            best_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    if best_state is not None:
        head.load_state_dict(best_state)
    return history
''',
    "train_cat_head": '''def train_cat_head(train, val):
    torch.manual_seed(2)
    head = nn.Linear(train.features.shape[-1], 3, bias=True)
    history = train_softmax(head, (train.features, train.labels), (val.features, val.labels), epochs=25, lr=2e-2,
                            batch_size=32, device=device)
    return head, history


head, history = train_cat_head(train_fs, val_fs)
''',
}

# NumPy for the bookkeeping, a hand-made batch index, the mode restored after extraction; a head with its own
# Dropout and BatchNorm for the cat detector.
_ALTERNATIVE_NUMPY: dict[str, str] = {
    "extract_features": '''import numpy as np


def extract_features(backbone, loader, device=None):
    dev = tl_course.get_device(device)
    was = backbone.training
    backbone.eval().to(dev)
    out, labels = [], []
    with torch.inference_mode():
        for images, y in loader:
            out.append(backbone(images.to(dev)).float().cpu().numpy())
            labels.extend(np.asarray(y).tolist())
    backbone.train(was)
    return torch.from_numpy(np.concatenate(out, axis=0)), torch.tensor(labels, dtype=torch.long)
''',
    "make_cache_dataset": '''def make_cache_dataset(samples, preprocess):
    return ImageDataset(tl_course.Samples(list(samples.files), list(samples.labels), samples.classes), preprocess)
''',
    "train_softmax": '''import numpy as np


def train_softmax(head, train, val, epochs, lr, batch_size=32, device=None):
    device = tl_course.get_device(device)
    head = head.to(device)
    features, labels = train
    n = len(labels)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr * 10, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    history, best, kept = [], -1.0, None
    epoch = 0
    while epoch < epochs:
        epoch += 1
        head.train()
        perm = torch.randperm(n)
        losses, sizes = [], []
        start = 0
        while start < n:
            idx = perm[start:start + batch_size]
            start += batch_size
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(head(features[idx].to(device)), labels[idx].to(device))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            sizes.append(len(idx))
        head.train(False)
        with torch.no_grad():
            predicted = head(val[0].to(device)).argmax(1).cpu().numpy()
        acc = float(np.mean(predicted == val[1].cpu().numpy()))
        history.append({"epoch": epoch, "train_loss": float(np.average(losses, weights=sizes)) if losses else 0.0,
                        "val_acc": acc})
        if acc > best:
            best, kept = acc, copy.deepcopy(head.state_dict())
    if kept is not None:
        head.load_state_dict(kept)
    return history
''',
    "train_cat_head": '''def train_cat_head(train, val):
    seed_everything(3)
    width = train.features.shape[1]
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(width, 3))
    history = train_softmax(head, (train.features, train.labels), (val.features, val.labels), epochs=30, lr=1e-2,
                            batch_size=profile.batch_size, device=device)
    return head, history


head, history = train_cat_head(train_fs, val_fs)
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_DATALOADER, _ALTERNATIVE_NUMPY]

# Proven during development (every one loses points; see the grader's session notes), kept out of CI's autograde
# like EXTRA_MISTAKES above: each train_softmax mistake costs one more autograde, and every class keeps at least two
# mistakes in CI.
for _name in ["loop_seeds_torch", "loop_counts_classes_in_the_labels", "loop_never_moves_the_head",
              "loop_picks_the_latest_of_the_best", "loop_stacks_the_losses"]:
    EXTRA_MISTAKES[_name] = MISTAKES.pop(_name)
    EXTRA_MUST_FAIL[_name] = MUST_FAIL.pop(_name)
    EXTRA_KIND[_name] = KIND.pop(_name)
