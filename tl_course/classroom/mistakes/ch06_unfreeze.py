"""Classic mistakes for chapter 6 (freeze fewer layers: new hidden units + softmax on activations cached at a cut).

MISTAKES: mistake -> {answer grade_id: the student's full source}; MUST_FAIL: mistake -> test grade_ids that
must lose points; KIND: mistake -> leak | how | forbidden | narrow; ALTERNATIVE: a correct answer in another
style for every answer cell (must score 100 %).
"""

from tl_course.classroom.mistakes import add_new_mistakes, swap

_FREEZE_HEADER = '''def freeze_all_but_last(model, k):
    """Freeze every stage of ``model`` except the last ``k``; frozen stages stay in eval mode. Returns ``model``."""
'''
_KEEP_EVAL = '''    def stay_in_eval(self, mode=True):
        self.training = False
        return self

'''
_TOP_HEADER = '''def new_top(in_channels, hidden_units, num_classes):
    """Global average pooling, a hidden layer of hidden_units ReLU units, and a Linear to num_classes logits."""
'''
_TRAIN_HEADER = '''def train_new_top(model, splits, preprocess, cut, hidden_units=256, epochs=15, device=None):
    """New hidden units + softmax trained on the activations of model at cut; epoch chosen on splits.val."""
'''
_RUN = '''

CUT = len(stages(fresh_model())) - 2
top, history = train_new_top(fresh_model(), splits, preprocess, CUT, device=device)
'''


def _train(train="splits.train", val="splits.val", cut="cut", top="new_top(train.features.shape[1], hidden_units, len(splits.classes))",
           lr="1e-3") -> str:
    return _TRAIN_HEADER + f'''    train = cached_features(model, {train}, preprocess, cut={cut}, device=device, progress=False)
    val = cached_features(model, {val}, preprocess, cut={cut}, device=device, progress=False)
    seed_everything(0)
    top = {top}
    optimizer = torch.optim.AdamW(top.parameters(), lr={lr}, weight_decay=1e-4)
    history = fit(top, train, val, epochs=epochs, optimizer=optimizer, device=device, progress=False)
    return top, history
''' + _RUN


MISTAKES: dict[str, dict[str, str]] = {
    # requires_grad False, but the frozen stages follow model.train(): BatchNorm statistics drift.
    "bn_left_in_train_mode": {"freeze_all_but_last": _FREEZE_HEADER + '''    all_stages = stages(model)
    for i, stage in enumerate(all_stages):
        for p in stage.parameters():
            p.requires_grad = i >= len(all_stages) - k
    return model
'''},
    # Typo: sets a new attribute, freezes nothing.
    "require_grad_typo": {"freeze_all_but_last": _FREEZE_HEADER + _KEEP_EVAL + '''    all_stages = stages(model)
    for i, stage in enumerate(all_stages):
        frozen = i < len(all_stages) - k
        for p in stage.parameters():
            p.require_grad = not frozen
        if frozen:
            for module in stage.modules():
                module.training = False
                module.train = types.MethodType(stay_in_eval, module)
    return model
'''},
    # Freezes the new head too.
    "head_frozen_too": {"freeze_all_but_last": _FREEZE_HEADER + _KEEP_EVAL + '''    all_stages = stages(model)
    for i, stage in enumerate(all_stages):
        frozen = i < len(all_stages) - k or i == len(all_stages) - 1
        for p in stage.parameters():
            p.requires_grad = not frozen
        if frozen:
            for module in stage.modules():
                module.training = False
                module.train = types.MethodType(stay_in_eval, module)
    return model
'''},
    # The library's freeze: the exercise is to write it.
    "freeze_with_library": {"freeze_all_but_last": _FREEZE_HEADER + '''    return tl_course.freeze(model, trainable_stages=k)
'''},
    # No ReLU: two Linear layers make one linear map, the hidden units add nothing.
    "top_without_relu": {"new_top": _TOP_HEADER + '''    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, hidden_units),
                         nn.Linear(hidden_units, num_classes))
'''},
    # Flattened feature maps into a LazyLinear: right for the first spatial size only.
    "top_flattens_fixed_size": {"new_top": _TOP_HEADER + '''    return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden_units), nn.ReLU(), nn.Linear(hidden_units, num_classes))
'''},
    # No hidden layer at all: just the softmax.
    "top_without_hidden_layer": {"new_top": _TOP_HEADER + '''    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))
'''},
    # The epoch chosen on the test photos.
    "selects_on_test": {"train_new_top": _train(val="splits.test")},
    # Training and validation photos pooled for training.
    "trains_on_train_and_val": {"train_new_top": _train(
        train="tl_course.Samples(splits.train.files + splits.val.files, splits.train.labels + splits.val.labels, splits.classes)")},
    # Cached before the softmax (the default cut), not at the cut asked for.
    "default_cut": {"train_new_top": _train(cut="None", top="new_top(train.features.shape[1], hidden_units, len(splits.classes)) if train.features.dim() == 4 else nn.Linear(train.features.shape[1], len(splits.classes))")},
    # The pretrained top stages fine-tuned instead of new hidden units (option a, not b).
    "reuses_pretrained_stages": {"train_new_top": _train(top="tl_course.top_stages(replace_head(model, len(splits.classes)), cut)")},
    "question_hidden_units": {"q_cache_cut": '''def q_cache_cut():
    """"A", "B", "C" or "D"."""
    return "A"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "bn_left_in_train_mode": ["test_freeze_all_but_last"],
    "require_grad_typo": ["test_freeze_all_but_last"],
    "head_frozen_too": ["test_freeze_all_but_last"],
    "freeze_with_library": ["test_freeze_all_but_last"],
    "top_without_relu": ["test_new_top"],
    "top_flattens_fixed_size": ["test_new_top"],
    "top_without_hidden_layer": ["test_new_top"],
    "selects_on_test": ["test_train_new_top"],
    "trains_on_train_and_val": ["test_train_new_top"],
    "default_cut": ["test_train_new_top"],
    "reuses_pretrained_stages": ["test_train_new_top"],
    "question_hidden_units": ["test_q_cache_cut"],
}

KIND: dict[str, str] = {
    "bn_left_in_train_mode": "how",
    "require_grad_typo": "how",
    "head_frozen_too": "how",
    "freeze_with_library": "forbidden",
    "top_without_relu": "how",
    "top_flattens_fixed_size": "narrow",
    "top_without_hidden_layer": "how",
    "selects_on_test": "leak",
    "trains_on_train_and_val": "leak",
    "default_cut": "narrow",
    "reuses_pretrained_stages": "how",
    "question_hidden_units": "how",
}

ALTERNATIVE: dict[str, str] = {
    "freeze_all_but_last": '''def freeze_all_but_last(model, k):
    parts = stages(model)
    for stage in parts[:len(parts) - k]:
        stage.requires_grad_(False)
        for m in stage.modules():
            m.eval()
            m.train = (lambda self: (lambda mode=True: self))(m)   # stays in eval whatever model.train() says
    for stage in parts[len(parts) - k:]:
        stage.requires_grad_(True)
    return model
''',
    "new_top": '''class NewTop(nn.Module):
    def __init__(self, c, h, k):
        super().__init__()
        self.hidden = nn.Linear(c, h)
        self.dropout = nn.Dropout(0.2)
        self.out = nn.Linear(h, k)

    def forward(self, x):
        x = x.mean(dim=(2, 3))
        return self.out(self.dropout(torch.relu(self.hidden(x))))


def new_top(in_channels, hidden_units, num_classes):
    return NewTop(in_channels, hidden_units, num_classes)
''',
    "train_new_top": '''def train_new_top(model, splits, preprocess, cut, hidden_units=256, epochs=15, device=None):
    feats = {name: cached_features(model, getattr(splits, name), preprocess, cut=cut, device=device, progress=False)
             for name in ("train", "val")}
    torch.manual_seed(1)
    top = new_top(feats["train"].features.size(1), hidden_units, len(splits.classes))
    history = fit(top, feats["train"], feats["val"], epochs=epochs,
                  optimizer=torch.optim.Adam(top.parameters(), lr=2e-3), device=device, progress=False)
    return top, history


CUT = len(stages(fresh_model())) - 2
top, history = train_new_top(fresh_model(), splits, preprocess, CUT, device=device)
''',
    "q_cache_cut": '''def q_cache_cut():
    return "c"
''',
}

# ---------------------------------------------------------------------------------------------
# Issue 16: every graded function is checked against its whole contract. Each mistake below breaks one line of
# a docstring contract, at least two per class of mistake that can occur here, in different styles: 1 side
# effects on what the caller owns, 2 selection discipline, 3 heads other than one nn.Linear, 4 generality,
# 5 device, 8 the wrong object returned (6 ties and order and 7 autograd hygiene cannot occur: no function here
# orders, breaks ties or runs a forward pass of its own; cached_features and fit do).
# ---------------------------------------------------------------------------------------------
_FREEZE = _FREEZE_HEADER + _KEEP_EVAL + '''    all_stages = stages(model)
    cut = len(all_stages) - k
    for i, stage in enumerate(all_stages):
        frozen = i < cut
        for p in stage.parameters():
            p.requires_grad = not frozen
        if frozen:
            for module in stage.modules():
                module.training = False
                module.train = types.MethodType(stay_in_eval, module)
    return model
'''
_TOP = _TOP_HEADER + '''    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, hidden_units), nn.ReLU(),
                         nn.Linear(hidden_units, num_classes))
'''
_TRAIN = _train()


NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on what the caller owns
    "freeze_resets_the_head": (1, "how", {"freeze_all_but_last": swap(
        _FREEZE, "    return model\n", "    head = [m for m in all_stages[-1].modules() if isinstance(m, nn.Linear)][-1]\n"
        "    head.reset_parameters()  # a fresh softmax to train\n    return model\n")},
        ["test_freeze_all_but_last"]),
    "top_built_once_and_cached": (1, "narrow", {"new_top": "import functools\n\n\n@functools.cache\n" + _TOP},
                                  ["test_new_top"]),
    "train_new_top_freezes_the_model": (1, "narrow", {"train_new_top": swap(
        _TRAIN, "    train = cached_features(", "    model.requires_grad_(False)  # the bottom is frozen\n    train = cached_features(")},
        ["test_train_new_top"]),
    "train_new_top_leaves_the_model_in_eval": (1, "narrow", {"train_new_top": swap(
        _TRAIN, "    train = cached_features(", "    model.eval()  # fixed BatchNorm statistics for the cache\n    train = cached_features(")},
        ["test_train_new_top"]),
    # 2. selection discipline
    "fit_without_validation": (2, "leak", {"train_new_top": swap(
        _TRAIN, "fit(top, train, val, epochs=epochs", "fit(top, train, epochs=epochs")}, ["test_train_new_top"]),
    "validates_on_the_training_activations": (2, "leak", {"train_new_top": swap(
        _TRAIN, "fit(top, train, val, epochs=epochs", "fit(top, train, train, epochs=epochs")}, ["test_train_new_top"]),
    # 3. heads other than one nn.Linear
    "top_ends_with_softmax": (3, "how", {"new_top": swap(
        _TOP, "nn.Linear(hidden_units, num_classes))", "nn.Linear(hidden_units, num_classes), nn.Softmax(dim=1))")},
        ["test_new_top"]),
    "top_relu_after_every_linear": (3, "how", {"new_top": _TOP_HEADER + '''    layers = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for n_in, n_out in [(in_channels, hidden_units), (hidden_units, num_classes)]:
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)
'''}, ["test_new_top"]),
    # 4. generality
    "freeze_negative_slice": (4, "narrow", {"freeze_all_but_last": _FREEZE_HEADER + _KEEP_EVAL + '''    all_stages = stages(model)
    for stage in all_stages[:-k]:
        stage.requires_grad_(False)
        for module in stage.modules():
            module.training = False
            module.train = types.MethodType(stay_in_eval, module)
    for stage in all_stages[-k:]:
        stage.requires_grad_(True)
    return model
'''}, ["test_freeze_all_but_last"]),
    "top_three_classes": (4, "narrow", {"new_top": swap(
        _TOP, "nn.Linear(hidden_units, num_classes))", "nn.Linear(hidden_units, 3))  # Tigger, Misty, neither")},
        ["test_new_top"]),
    "train_new_top_three_classes": (4, "narrow", {"train_new_top": _train(
        top="new_top(train.features.shape[1], hidden_units, 3)")}, ["test_train_new_top"]),
    # 5. device
    "fit_without_device": (5, "narrow", {"train_new_top": swap(
        _TRAIN, "optimizer=optimizer, device=device, progress=False", "optimizer=optimizer, progress=False")},
        ["test_train_new_top"]),
    "cache_without_device": (5, "narrow", {"train_new_top": swap(swap(
        _TRAIN, "splits.train, preprocess, cut=cut, device=device,", "splits.train, preprocess, cut=cut,"),
        "splits.val, preprocess, cut=cut, device=device,", "splits.val, preprocess, cut=cut,")},
        ["test_train_new_top"]),
    # 8. the wrong object returned
    "freeze_returns_a_copy": (8, "narrow", {"freeze_all_but_last": swap(
        _FREEZE, "    all_stages = stages(model)\n",
        "    model = copy.deepcopy(model)  # leave the caller's network alone\n    all_stages = stages(model)\n")},
        ["test_freeze_all_but_last"]),
    "train_new_top_returns_the_accuracy": (8, "narrow", {"train_new_top": swap(
        _TRAIN, "    return top, history\n", "    return top, history.best_val_acc\n")}, ["test_train_new_top"]),
}

#: issue-16 class of mistake (1..8, see NEW_MISTAKES) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# requires_grad_ on whole stages and a train() override that ignores its argument; a functional top; a
# hand-written training loop on the cached activations that keeps the best epoch.
_ALTERNATIVE_OWN_LOOP: dict[str, str] = {
    "freeze_all_but_last": '''def _frozen_train(self, mode=True):
    return nn.Module.train(self, False)


def freeze_all_but_last(model, k):
    parts = stages(model)
    n_frozen = len(parts) - k
    for index, stage in enumerate(parts):
        trainable = index >= n_frozen
        stage.requires_grad_(trainable)
        if not trainable:
            for module in stage.modules():
                module.train = types.MethodType(_frozen_train, module)
                module.train()
    return model
''',
    "new_top": '''class PoolMLP(nn.Module):
    def __init__(self, in_channels, hidden_units, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden_units)
        self.bn = nn.BatchNorm1d(hidden_units)
        self.fc2 = nn.Linear(hidden_units, num_classes)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def new_top(in_channels, hidden_units, num_classes):
    return PoolMLP(in_channels, hidden_units, num_classes)
''',
    "train_new_top": '''def train_new_top(model, splits, preprocess, cut, hidden_units=256, epochs=15, device=None):
    device = tl_course.get_device(device)
    tr = cached_features(model, splits.train, preprocess, cut=cut, device=device, progress=False)
    va = cached_features(model, splits.val, preprocess, cut=cut, device=device, progress=False)
    torch.manual_seed(0)
    top = new_top(tr.features.shape[1], hidden_units, len(splits.classes)).to(device)
    opt = torch.optim.AdamW(top.parameters(), lr=1e-3)
    history, best, kept = [], -1.0, None
    for epoch in range(1, epochs + 1):
        top.train()
        for idx in torch.randperm(len(tr.labels)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(top(tr.features[idx].to(device)), tr.labels[idx].to(device)).backward()
            opt.step()
        top.eval()
        with torch.no_grad():
            acc = (top(va.features.to(device)).argmax(1).cpu() == va.labels).float().mean().item()
        history.append({"epoch": epoch, "val_acc": acc})
        if acc > best:
            best, kept = acc, copy.deepcopy(top.state_dict())
    top.load_state_dict(kept)
    return top, history


CUT = len(stages(fresh_model())) - 2
top, history = train_new_top(fresh_model(), splits, preprocess, CUT, device=device)
''',
    "q_cache_cut": '''def q_cache_cut():
    answer = "C"  # a stage below the cut that trains changes what the cache holds
    return answer
''',
}

# a loop over named parameters with the stage of each found by identity; nn.Sequential with Dropout before the
# softmax layer; fit with keyword arguments and SGD.
_ALTERNATIVE_NAMED: dict[str, str] = {
    "freeze_all_but_last": '''def freeze_all_but_last(model, k):
    parts = stages(model)
    trainable = {id(p) for stage in parts[len(parts) - k:] for p in stage.parameters()}
    for _, p in model.named_parameters():
        p.requires_grad = id(p) in trainable
    for stage in parts[:len(parts) - k]:
        for module in stage.modules():
            module.eval()
            module.train = types.MethodType(lambda self, mode=True: self, module)
    return model
''',
    "new_top": '''def new_top(in_channels, hidden_units, num_classes):
    top = nn.Sequential()
    top.add_module("pool", nn.AdaptiveAvgPool2d((1, 1)))
    top.add_module("flatten", nn.Flatten(1))
    top.add_module("hidden", nn.Linear(in_channels, hidden_units))
    top.add_module("relu", nn.ReLU(inplace=True))
    top.add_module("dropout", nn.Dropout(0.3))
    top.add_module("softmax_layer", nn.Linear(hidden_units, num_classes))
    return top
''',
    "train_new_top": '''def train_new_top(model, splits, preprocess, cut, hidden_units=256, epochs=15, device=None):
    kwargs = dict(cut=cut, device=device, progress=False)
    train_acts = cached_features(model, splits.train, preprocess, **kwargs)
    val_acts = cached_features(model, splits.val, preprocess, **kwargs)
    seed_everything(2)
    top = new_top(train_acts.features.size(1), hidden_units=hidden_units, num_classes=len(splits.classes))
    sgd = torch.optim.SGD(top.parameters(), lr=0.05, momentum=0.9)
    return top, fit(top, train=train_acts, val=val_acts, epochs=epochs, optimizer=sgd, device=device, progress=False)


CUT = len(stages(fresh_model())) - 2
top, history = train_new_top(fresh_model(), splits, preprocess, CUT, device=device)
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_OWN_LOOP, _ALTERNATIVE_NAMED]
