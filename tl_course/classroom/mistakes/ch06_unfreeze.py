"""Classic mistakes for chapter 6 (freeze fewer layers: new hidden units + softmax on activations cached at a cut).

MISTAKES: mistake -> {answer grade_id: the student's full source}; MUST_FAIL: mistake -> test grade_ids that
must lose points; KIND: mistake -> leak | how | forbidden | narrow; ALTERNATIVE: a correct answer in another
style for every answer cell (must score 100 %).
"""

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
