"""Classic mistakes of chapter 4 (freeze and train only the softmax), each of which must cost points.

See tl_course/classroom/mistakes/__init__.py for MISTAKES, MUST_FAIL, KIND and ALTERNATIVE.
"""

_FREEZE_HEADER = '''def freeze_backbone(model: nn.Module) -> nn.Module:
    """Freeze every parameter except the head's; keep the frozen BatchNorm layers in eval mode. Returns model."""
'''

_TRAIN_HEADER = '''def train_head(model, train_data, val_data, device):
    """Freeze the backbone, build the optimizer, train only the head with validation on val_data."""
'''

_KEEP_BN_EVAL = '''    head_modules = set(head.modules())
    frozen_bns = [m for m in model.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in head_modules]

    def keep_frozen_bn_in_eval(module, inputs):
        for bn in frozen_bns:
            bn.eval()

    model.register_forward_pre_hook(keep_frozen_bn_in_eval)
    return model
'''

MISTAKES: dict[str, dict[str, str]] = {
    # p.require_grad (no "s") creates a new attribute: nothing is frozen.
    "require_grad_typo": {"freeze_backbone": _FREEZE_HEADER + '''    head = get_head(model)
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.require_grad = id(p) in head_params
''' + _KEEP_BN_EVAL},
    # Everything frozen, the new head included: nothing can train.
    "head_frozen_too": {"freeze_backbone": _FREEZE_HEADER + '''    head = get_head(model)
    for p in model.parameters():
        p.requires_grad = False
''' + _KEEP_BN_EVAL},
    # requires_grad handled right, but the frozen BatchNorm layers follow model.train(): statistics drift.
    "bn_left_in_train_mode": {"freeze_backbone": _FREEZE_HEADER + '''    head_params = {id(p) for p in get_head(model).parameters()}
    for p in model.parameters():
        p.requires_grad = id(p) in head_params
    return model
'''},
    # The optimizer gets every parameter, frozen or not.
    "optimizer_over_all_parameters": {"make_optimizer": '''def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters of model only, at learning rate lr."""
    return torch.optim.AdamW(model.parameters(), lr=lr)
'''},
    # Counts every parameter, trainable or not.
    "count_all_parameters": {"count_trainable": '''def count_trainable(model: nn.Module) -> int:
    """Number of trainable parameters (numbers, not tensors)."""
    return sum(p.numel() for p in model.parameters())
'''},
    # The library function the text forbids.
    "calls_tl_course_freeze": {"freeze_backbone": '''import tl_course

''' + _FREEZE_HEADER + '''    return tl_course.freeze(model, trainable_stages=1)
'''},
    # Head hard-coded as timm's `classifier`: on a ResNet (head `fc`) the head is frozen with the rest.
    "head_hard_coded_as_classifier": {"freeze_backbone": _FREEZE_HEADER + '''    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier")
    head = get_head(model)
''' + _KEEP_BN_EVAL},
    # A training run that trains nothing: learning rate 0.
    "training_with_lr_zero": {"train_head": _TRAIN_HEADER + '''    freeze_backbone(model)
    return fit(model, train_data, val_data, epochs=profile.finetune_epochs,
               optimizer=make_optimizer(model, 0.0), device=device, progress=False)
'''},
    # A training run that trains nothing: zero epochs.
    "training_zero_epochs": {"train_head": _TRAIN_HEADER + '''    freeze_backbone(model)
    return fit(model, train_data, val_data, epochs=0,
               optimizer=make_optimizer(model, 1e-2), device=device, progress=False)
'''},
    # Forgets to freeze: the optimizer then holds every parameter and the pretrained weights move.
    "forgets_to_freeze": {"train_head": _TRAIN_HEADER + '''    return fit(model, train_data, val_data, epochs=profile.finetune_epochs,
               optimizer=make_optimizer(model, 1e-2), device=device, progress=False)
'''},
    # Chooses the epoch on the notebook's test set ("it is the real measure").
    "selects_on_test": {"train_head": _TRAIN_HEADER + '''    freeze_backbone(model)
    return fit(model, train_data, test_data, epochs=profile.finetune_epochs,
               optimizer=make_optimizer(model, 1e-2), device=device, progress=False)
'''},
    # "More data is better": trains on train + val, and still validates on val.
    "trains_on_val_too": {"train_head": _TRAIN_HEADER + '''    from torch.utils.data import ConcatDataset
    freeze_backbone(model)
    return fit(model, ConcatDataset([train_data, val_data]), val_data, epochs=profile.finetune_epochs,
               optimizer=make_optimizer(model, 1e-2), device=device, progress=False)
'''},
    # Believes requires_grad=False also protects the BatchNorm statistics.
    "thinks_frozen_means_fixed": {"q_frozen_bn": '''def answer_frozen_bn():
    return "a"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "require_grad_typo": ["test_freeze_params"],
    "head_frozen_too": ["test_freeze_params"],
    "bn_left_in_train_mode": ["test_freeze_bn_eval"],
    "optimizer_over_all_parameters": ["test_make_optimizer"],
    "count_all_parameters": ["test_count_trainable"],
    "calls_tl_course_freeze": ["test_own_freeze"],
    "head_hard_coded_as_classifier": ["test_freeze_params"],
    "training_with_lr_zero": ["test_train_head"],
    "training_zero_epochs": ["test_train_head"],
    "forgets_to_freeze": ["test_train_head"],
    "selects_on_test": ["test_train_head"],
    "trains_on_val_too": ["test_train_head"],
    "thinks_frozen_means_fixed": ["test_q_frozen_bn"],
}

KIND: dict[str, str] = {
    "require_grad_typo": "how",
    "head_frozen_too": "how",
    "bn_left_in_train_mode": "how",
    "optimizer_over_all_parameters": "how",
    "count_all_parameters": "how",
    "calls_tl_course_freeze": "forbidden",
    "head_hard_coded_as_classifier": "narrow",
    "training_with_lr_zero": "how",
    "training_zero_epochs": "how",
    "forgets_to_freeze": "how",
    "selects_on_test": "leak",
    "trains_on_val_too": "leak",
    "thinks_frozen_means_fixed": "how",
}

# Correct, in another style: BatchNorm kept in eval by overriding train() on each frozen layer; a hand-written
# training loop that keeps the best validation epoch; Adam over a filter.
ALTERNATIVE: dict[str, str] = {
    "freeze_backbone": '''import types

def _stay_in_eval(self, mode=True):
    return nn.Module.train(self, False)

def freeze_backbone(model):
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    keep = set(map(id, head.parameters()))
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.train = types.MethodType(_stay_in_eval, m)
            m.eval()
    return model
''',
    "make_optimizer": '''def make_optimizer(model, lr):
    return torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=lr)
''',
    "train_head": '''import copy
from torch.utils.data import DataLoader

def train_head(model, train_data, val_data, device):
    freeze_backbone(model)
    model.to(device)
    opt = make_optimizer(model, 1e-2)
    g = torch.Generator().manual_seed(0)
    best_acc, best_state = -1.0, None
    for epoch in range(profile.finetune_epochs):
        model.train()
        for x, y in DataLoader(train_data, batch_size=16, shuffle=True, generator=g):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
        model.eval()
        right = 0
        with torch.no_grad():
            for x, y in DataLoader(val_data, batch_size=64):
                right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        if right / len(val_data) > best_acc:
            best_acc, best_state = right / len(val_data), copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_acc
''',
}
