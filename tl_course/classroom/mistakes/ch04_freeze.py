"""Classic mistakes of chapter 4 (freeze and train only the softmax), each of which must cost points.

See tl_course/classroom/mistakes/__init__.py for MISTAKES, MUST_FAIL, KIND and ALTERNATIVE.
"""

from tl_course.classroom.mistakes import add_new_mistakes

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

# ---------------------------------------------------------------------------------------------
# Issue 16: every graded function is checked against its whole contract. The mistakes below break one line
# of a docstring contract each, written in at least two styles per class of mistake:
# 1 side effects on what the caller owns, 2 selection discipline, 3 heads other than one nn.Linear (mode
# mistakes), 4 generality, 5 device, 7 autograd hygiene (classes 6 and 8 cannot occur in this assignment).
# ---------------------------------------------------------------------------------------------
_LOOP_START = '''import copy
from torch.utils.data import DataLoader

def train_head(model, train_data, val_data, device):
    freeze_backbone(model)
    model.to(device)
    opt = make_optimizer(model, 1e-2)
'''


def _loop(train_mode: str = "        model.train()\n", move_x: str = "x.to(device)", validate: str | None = None,
          keep: str = "    model.load_state_dict(best_state)\n", extra_train: str = "") -> str:
    """A hand-written train_head, correct unless one piece is swapped for a mistaken one."""
    validate = validate if validate is not None else '''        model.eval()
        right = 0
        with torch.no_grad():
            for x, y in DataLoader(val_data, batch_size=64):
                right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
'''
    return _LOOP_START + f'''    best_acc, best_state = -1.0, None
    for epoch in range(profile.finetune_epochs):
{train_mode}        for x, y in DataLoader(train_data, batch_size=16, shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model({move_x}), y.to(device)).backward()
            opt.step()
{extra_train}{validate}        if right / len(val_data) > best_acc:
            best_acc, best_state = right / len(val_data), copy.deepcopy(model.state_dict())
{keep}    return best_acc
'''


_FIT = '''    freeze_backbone(model)
    return fit(model, train_data, val_data, epochs=profile.finetune_epochs,
               optimizer=make_optimizer(model, 1e-2), device=device, progress=False)
'''

NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on what the caller owns
    "freeze_reinitialises_the_head": (1, "how", {"freeze_backbone": _FREEZE_HEADER + '''    head = get_head(model)
    head.reset_parameters()  # "a fresh head to train"
    for p in model.parameters():
        p.requires_grad = False
    for p in head.parameters():
        p.requires_grad = True
''' + _KEEP_BN_EVAL}, ["test_freeze_params"]),
    "freeze_replaces_the_head_object": (1, "how", {"freeze_backbone": _FREEZE_HEADER + '''    model.requires_grad_(False)
    replace_head(model, get_head(model).out_features)  # a new, trainable head of the same size
''' + _KEEP_BN_EVAL.replace("    head_modules = set(head.modules())", "    head = get_head(model)\n    head_modules = set(head.modules())")}, ["test_freeze_params"]),
    "optimizer_freezes_the_model": (1, "how", {"make_optimizer": '''def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    freeze_backbone(model)  # "to be safe"
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
'''}, ["test_make_optimizer"]),
    "optimizer_unfreezes_the_head": (1, "how", {"make_optimizer": '''def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    get_head(model).requires_grad_(True)  # the head must always train
    return torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=lr)
'''}, ["test_make_optimizer"]),
    "train_head_seeds_everything": (1, "how", {"train_head": _TRAIN_HEADER + '''    seed_everything(0)  # reproducible
''' + _FIT}, ["test_train_head_contract"]),
    "train_head_reseeds_numpy_and_random": (1, "how", {"train_head": '''import random
import numpy as np

''' + _TRAIN_HEADER + '''    random.seed(0)
    np.random.seed(0)
''' + _FIT}, ["test_train_head_contract"]),
    # 2. selection discipline
    "fit_without_validation": (2, "leak", {"train_head": _TRAIN_HEADER + '''    freeze_backbone(model)
    return fit(model, train_data, epochs=profile.finetune_epochs,
               optimizer=make_optimizer(model, 1e-2), device=device, progress=False)
'''}, ["test_train_head_contract"]),
    "loop_never_validates": (2, "leak", {"train_head": _LOOP_START + '''    model.train()
    for epoch in range(profile.finetune_epochs):
        for x, y in DataLoader(train_data, batch_size=16, shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
    return model
'''}, ["test_train_head_contract"]),
    "loop_keeps_the_last_epoch": (2, "leak", {"train_head": _loop(keep="")}, ["test_train_head_contract"]),
    "loop_records_best_keeps_last": (2, "leak", {"train_head": _loop(keep="    print(f'best validation accuracy {best_acc:.1%}')\n")},
                                     ["test_train_head_contract"]),
    "loop_pools_validation_into_training": (2, "leak", {"train_head": _loop(extra_train='''        for x, y in DataLoader(val_data, batch_size=16, shuffle=True):  # "more data"
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
''')}, ["test_train_head", "test_train_head_contract"]),
    # 3. heads with Dropout / BatchNorm: mode mistakes
    "loop_validates_in_train_mode": (3, "how", {"train_head": _loop(validate='''        right = 0
        with torch.no_grad():
            for x, y in DataLoader(val_data, batch_size=64):
                right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
''')}, ["test_train_head_contract"]),
    "loop_sets_train_once_before_the_loop": (3, "how", {"train_head": _loop(train_mode="").replace(
        "    best_acc, best_state = -1.0, None\n", "    best_acc, best_state = -1.0, None\n    model.train()\n").replace(
        "        model.eval()\n        right = 0\n", "        right = 0\n")}, ["test_train_head_contract"]),
    # 4. generality
    "freeze_head_found_by_class_count": (4, "narrow", {"freeze_backbone": _FREEZE_HEADER + '''    head = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 3][-1]
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad = id(p) in head_params
''' + _KEEP_BN_EVAL}, ["test_freeze_params"]),
    "freeze_last_two_parameters_are_the_head": (4, "narrow", {"freeze_backbone": _FREEZE_HEADER + '''    params = list(model.parameters())
    for p in params[:-2]:
        p.requires_grad = False
    for p in params[-2:]:  # weight and bias of the last layer
        p.requires_grad = True
    head = get_head(model)
''' + _KEEP_BN_EVAL}, ["test_freeze_params"]),
    "loop_hard_codes_three_classes": (4, "narrow", {"train_head": _loop().replace(
        "    best_acc, best_state = -1.0, None\n",
        "    best_acc, best_state = -1.0, None\n    loss_fn = nn.CrossEntropyLoss(weight=torch.ones(3, device=device))  # Tigger, Misty, neither\n").replace(
        "            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()",
        "            loss_fn(model(x.to(device)), y.to(device)).backward()")}, ["test_train_head_contract"]),
    "loop_reads_class_names_from_the_data": (4, "narrow", {"train_head": _loop().replace(
        "    best_acc, best_state = -1.0, None\n",
        "    best_acc, best_state = -1.0, None\n    n_classes = len(train_data.classes)\n").replace(
        "                right += int((model(x.to(device)).argmax(1).cpu() == y).sum())",
        "                right += int((model(x.to(device))[:, :n_classes].argmax(1).cpu() == y).sum())")},
        ["test_train_head_contract"]),
    # 5. device
    "loop_leaves_batches_on_the_cpu": (5, "narrow", {"train_head": _loop(move_x="x")}, ["test_train_head_contract"]),
    "loop_never_moves_the_model": (5, "narrow", {"train_head": _loop().replace("    model.to(device)\n", "")},
                                   ["test_train_head_contract"]),
    # 7. autograd hygiene
    "loop_validates_with_gradients_then_detach": (7, "how", {"train_head": _loop(validate='''        model.eval()
        right = 0
        for x, y in DataLoader(val_data, batch_size=64):
            right += int((model(x.to(device)).detach().argmax(1).cpu() == y).sum())
''')}, ["test_train_head_contract"]),
    "loop_validates_without_no_grad": (7, "how", {"train_head": _loop(validate='''        model.eval()
        right = 0
        for x, y in DataLoader(val_data, batch_size=64):
            logits = model(x.to(device))
            right += (logits.argmax(1).cpu() == y).sum().item()
''')}, ["test_train_head_contract"]),
    # reads in DataLoader workers, which the contract forbids (the grader follows reads in this process)
    "fit_with_worker_processes": (2, "how", {"train_head": _TRAIN_HEADER + '''    freeze_backbone(model)
    from tl_course import TrainOptions

    return fit(model, train_data, val_data, epochs=profile.finetune_epochs, options=TrainOptions(num_workers=1),
               optimizer=make_optimizer(model, 1e-2), device=device, progress=False)
'''}, ["test_train_head"]),
}

#: issue-16 class of mistake (1..8, see NEW_MISTAKES) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# The case: a loop that keeps the *whole* model in eval mode while only the head trains (Dropout off,
# BatchNorm on its running statistics, as with cached activations), every answer in another style.
_ALTERNATIVE_EVAL_LOOP: dict[str, str] = {
    "freeze_backbone": '''def freeze_backbone(model):
    head = get_head(model)
    model.requires_grad_(False)
    head.requires_grad_(True)
    in_head = set(head.modules())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in in_head:
            m.register_forward_pre_hook(lambda module, args: setattr(module, "training", False))
    return model
''',
    "count_trainable": '''import numpy as np

def count_trainable(model):
    return int(np.sum([p.numel() for p in model.parameters() if p.requires_grad], dtype=np.int64))
''',
    "make_optimizer": '''def make_optimizer(model, lr):
    return torch.optim.SGD([{"params": [p for _, p in model.named_parameters() if p.requires_grad]}],
                           lr=lr, momentum=0.9)
''',
    "train_head": '''from torch.utils.data import DataLoader

def train_head(model, train_data, val_data, device):
    freeze_backbone(model)
    model = model.to(device).eval()          # eval mode throughout: only the head trains
    head = get_head(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history, best = [], (-1.0, None)
    for epoch in range(profile.finetune_epochs):
        for images, labels in DataLoader(train_data, batch_size=32, shuffle=True):
            loss = nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.inference_mode():
            hits = sum((model(images.to(device)).argmax(1).cpu() == labels).sum().item()
                       for images, labels in DataLoader(val_data, batch_size=50))
        history.append(hits / len(val_data))
        if history[-1] > best[0]:
            best = (history[-1], {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[1])
    return history
''',
}

# fit with the caller's generator (seed=None), keyword style; freezing by overriding train() on a subclass-free
# wrapper; an optimizer over a generator of named parameters.
_ALTERNATIVE_FIT_KEYWORDS: dict[str, str] = {
    "freeze_backbone": '''def freeze_backbone(model):
    head_ids = {id(p) for p in get_head(model).parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in head_ids)
    frozen_bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and not any(id(p) in head_ids for p in m.parameters())]
    original_train = model.train

    def train(mode=True):
        original_train(mode)
        for m in frozen_bn:
            m.training = False
        return model

    model.train = train
    model.train(model.training)
    return model
''',
    "count_trainable": '''def count_trainable(model):
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            total += p.numel()
    return total
''',
    "make_optimizer": '''def make_optimizer(model, lr):
    return torch.optim.AdamW((p for _, p in model.named_parameters() if p.requires_grad), lr=lr, weight_decay=0.0)
''',
    "train_head": '''def train_head(model, train_data, val_data, device):
    from tl_course import TrainOptions

    trainable = freeze_backbone(model)
    history = fit(trainable, train=train_data, val=val_data, epochs=profile.finetune_epochs,
                  optimizer=make_optimizer(trainable, lr=0.01), device=device, progress=False,
                  options=TrainOptions(seed=None))
    return history
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_EVAL_LOOP, _ALTERNATIVE_FIT_KEYWORDS]
