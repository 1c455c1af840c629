"""Classic mistakes of chapter 7 (full fine-tuning, the two-phase recipe), each of which must cost points.

MISTAKES: mistake -> {answer grade_id: the student's full source}; MUST_FAIL: mistake -> test grade_ids that
must lose points; KIND: mistake -> leak | how | forbidden | narrow; ALTERNATIVE: a correct answer in another
style for every answer cell (must score 100 %).
"""

from tl_course.classroom.mistakes import add_new_mistakes, swap

_SETUP_HEADER = '''def setup_full_finetune(model: nn.Module, lr: float, backbone_factor: float, epochs: int, steps_per_epoch: int):
    """Make every layer of model trainable (BatchNorm included) and return (optimizer, scheduler)."""
'''

_GROUPS_AND_SCHEDULE = '''    head_ids = {id(p) for p in get_head(model).parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": lr * backbone_factor},
                                   {"params": head, "lr": lr}])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    return optimizer, scheduler
'''

_TWO_PHASE_HEADER = '''def two_phase_finetune(model, train, val, head_epochs, finetune_epochs, lr, backbone_factor=0.1, batch_size=32,
                       device=None):
    """Phase 1: only the new head trains on the frozen network; phase 2: everything, at lower learning rates."""
'''


def _two_phase(phase1_freeze="    freeze(model, trainable_stages=1)\n", phase1_train="train", phase2_lr="lr / 10",
               phase1=True) -> str:
    body = _TWO_PHASE_HEADER
    if phase1:
        body += phase1_freeze + f'''    phase1 = fit(model, {phase1_train}, val, epochs=head_epochs, lr=lr, batch_size=batch_size, device=device,
                 progress=False)
'''
    else:
        body += "    phase1 = None\n"
    return body + f'''    steps = math.ceil(len(train) / batch_size)
    optimizer, _ = setup_full_finetune(model, {phase2_lr}, backbone_factor, finetune_epochs, steps)
    phase2 = fit(model, train, val, epochs=finetune_epochs, optimizer=optimizer, batch_size=batch_size, device=device,
                 progress=False)
    return phase1, phase2
'''


MISTAKES: dict[str, dict[str, str]] = {
    # The epoch is picked by test accuracy: the reported test number is then a selected, optimistic one.
    "test_set_used_for_selection": {"select_epoch": '''def select_epoch(history: list[dict]) -> int:
    """The epoch to keep."""
    return max(history, key=lambda e: e["test_acc"])["epoch"]
'''},
    # The position in the list, not the "epoch" value: right only when the history starts at epoch 1 in order.
    "select_epoch_returns_position": {"select_epoch": '''def select_epoch(history: list[dict]) -> int:
    """The epoch to keep."""
    accuracies = [e["val_acc"] for e in history]
    return accuracies.index(max(accuracies)) + 1
'''},
    # requires_grad=False left over from freeze(): the backbone is in the optimizer but cannot train.
    "backbone_still_frozen": {"setup_full_finetune": _SETUP_HEADER + _GROUPS_AND_SCHEDULE},
    # requires_grad set by hand, but tl_course.freeze's eval-mode override is left on: BatchNorm stays frozen.
    "bn_still_frozen_in_eval": {"setup_full_finetune": _SETUP_HEADER + '''    for p in model.parameters():
        p.requires_grad = True
''' + _GROUPS_AND_SCHEDULE},
    # One learning rate for the pretrained layers and the new head.
    "same_lr_for_all_groups": {"setup_full_finetune": _SETUP_HEADER + '''    unfreeze(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    return optimizer, scheduler
'''},
    # The optimizer only gets the backbone, the new head never trains.
    "optimizer_missing_head": {"setup_full_finetune": _SETUP_HEADER + '''    unfreeze(model)
    head_ids = {id(p) for p in get_head(model).parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": lr * backbone_factor}])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    return optimizer, scheduler
'''},
    # The head found by its EfficientNet name: ResNet's head is `fc`, so there it lands with the backbone.
    "head_found_by_name": {"setup_full_finetune": _SETUP_HEADER + '''    unfreeze(model)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    backbone = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": lr * backbone_factor}, {"params": head, "lr": lr}])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    return optimizer, scheduler
'''},
    # The library builds the groups: the exercise is to build them.
    "groups_from_library": {"setup_full_finetune": _SETUP_HEADER + '''    unfreeze(model)
    optimizer = tl_course.build_optimizer(model, lr=lr, pretrained_lr_factor=backbone_factor)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    return optimizer, scheduler
'''},
    # No phase 1: everything is unfrozen from the first step.
    "no_head_phase": {"two_phase_finetune": _two_phase(phase1=False)},
    # Phase 1 "freezes" with requires_grad only: BatchNorm statistics of the frozen layers drift.
    "phase1_bn_drifts": {"two_phase_finetune": _two_phase(phase1_freeze='''    head_ids = {id(p) for p in get_head(model).parameters()}
    for p in model.parameters():
        p.requires_grad = id(p) in head_ids
''')},
    # Phase 1 forgets to freeze: the random head's gradients reach the pretrained layers at once.
    "phase1_not_frozen": {"two_phase_finetune": _two_phase(phase1_freeze="")},
    # Phase 2 at the phase-1 learning rate: nothing is lowered for the head.
    "phase2_not_lower": {"two_phase_finetune": _two_phase(phase2_lr="lr")},
    # "More data": the validation photos are added to phase 1's training set.
    "phase1_trains_on_val": {"two_phase_finetune": _two_phase(
        phase1_train="torch.utils.data.ConcatDataset([train, val])")},
    # The intuitive but wrong answer.
    "question_memory": {"q_two_phase": '''def q_two_phase():
    """"A", "B", "C" or "D"."""
    return "A"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "test_set_used_for_selection": ["test_select_epoch"],
    "select_epoch_returns_position": ["test_select_epoch"],
    "backbone_still_frozen": ["test_everything_trains"],
    "bn_still_frozen_in_eval": ["test_everything_trains"],
    "same_lr_for_all_groups": ["test_learning_rates"],
    "optimizer_missing_head": ["test_everything_trains", "test_learning_rates"],
    "head_found_by_name": ["test_learning_rates"],
    "groups_from_library": ["test_learning_rates"],
    "no_head_phase": ["test_two_phase_head_first"],
    "phase1_bn_drifts": ["test_two_phase_head_first"],
    "phase1_not_frozen": ["test_two_phase_head_first"],
    "phase2_not_lower": ["test_two_phase_unfreeze"],
    "phase1_trains_on_val": ["test_two_phase_head_first"],
    "question_memory": ["test_q_two_phase"],
}

KIND: dict[str, str] = {
    "test_set_used_for_selection": "leak",
    "select_epoch_returns_position": "narrow",
    "backbone_still_frozen": "how",
    "bn_still_frozen_in_eval": "how",
    "same_lr_for_all_groups": "how",
    "optimizer_missing_head": "how",
    "head_found_by_name": "narrow",
    "groups_from_library": "forbidden",
    "no_head_phase": "how",
    "phase1_bn_drifts": "how",
    "phase1_not_frozen": "how",
    "phase2_not_lower": "how",
    "phase1_trains_on_val": "leak",
    "question_memory": "how",
}

ALTERNATIVE: dict[str, str] = {
    # requires_grad and train() restored by hand, groups by name lookup of the head's parameters, LambdaLR
    "setup_full_finetune": '''def setup_full_finetune(model, lr, backbone_factor, epochs, steps_per_epoch):
    tl_course.unfreeze(model)
    model.requires_grad_(True)
    head_params = set(get_head(model).parameters())
    groups = [{"params": [p for p in model.parameters() if p not in head_params], "lr": lr * backbone_factor},
              {"params": list(get_head(model).parameters()), "lr": lr}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    total = max(1, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
    return optimizer, scheduler
''',
    # an own training loop for both phases
    "two_phase_finetune": '''def _epochs(model, optimizer, train, val, epochs, batch_size, device):
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True)
    best, best_state, log = -1.0, None, []
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            optimizer.step()
        acc = tl_course.evaluate(model, val, device=device).accuracy
        log.append(acc)
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return log


def two_phase_finetune(model, train, val, head_epochs, finetune_epochs, lr, backbone_factor=0.1, batch_size=32,
                       device=None):
    device = tl_course.get_device(device)
    model.to(device)
    tl_course.freeze(model, trainable_stages=1)
    head_opt = torch.optim.Adam(get_head(model).parameters(), lr=lr)
    first = _epochs(model, head_opt, train, val, head_epochs, batch_size, device)
    optimizer, _ = setup_full_finetune(model, lr * 0.3, backbone_factor, finetune_epochs, 1)
    second = _epochs(model, optimizer, train, val, finetune_epochs, batch_size, device)
    return first, second
''',
    "select_epoch": '''def select_epoch(history):
    best_epoch, best_val = None, float("-inf")
    for entry in sorted(history, key=lambda e: e["epoch"]):
        if entry["val_acc"] > best_val:
            best_epoch, best_val = entry["epoch"], entry["val_acc"]
    return best_epoch
''',
    "q_two_phase": '''def q_two_phase():
    return "b"
''',
}


# More mistakes the hidden tests catch, kept out of CI's autograde to stay inside its time budget (every
# mistake in one answer cell costs one more autograde). Checked with all the others in one kernel during
# development; move one back into MISTAKES to have CI prove it again.
EXTRA_MISTAKES: dict[str, dict[str, str]] = {name: MISTAKES.pop(name) for name in ['optimizer_missing_head', 'head_found_by_name', 'phase1_not_frozen']}
EXTRA_MUST_FAIL: dict[str, list[str]] = {name: MUST_FAIL.pop(name) for name in EXTRA_MISTAKES}
EXTRA_KIND: dict[str, str] = {name: KIND.pop(name) for name in EXTRA_MISTAKES}

# ---------------------------------------------------------------------------------------------
# Issue 16: every graded function is checked against its whole contract. Each mistake below breaks one line of
# a docstring contract, at least two per class of mistake that can occur here, in different styles: 1 side
# effects on what the caller owns, 2 selection discipline, 3 mode mistakes (the networks have BatchNorm and
# Dropout), 4 generality, 5 device, 6 ties and order, 7 autograd hygiene, 8 the wrong object returned.
# ---------------------------------------------------------------------------------------------
_SETUP = _SETUP_HEADER + "    unfreeze(model)\n" + _GROUPS_AND_SCHEDULE
_SELECT_HEADER = '''def select_epoch(history: list[dict]) -> int:
    """The epoch to keep."""
'''
_OWN_LOOP_VALIDATION = '''        acc = tl_course.evaluate(model, val, device=device).accuracy
'''


def _own_loop(validation: str = _OWN_LOOP_VALIDATION, move_x: str = "x.to(device)") -> str:
    """The ALTERNATIVE's hand-written two-phase loop with its validation (or one line) swapped."""
    source = ALTERNATIVE["two_phase_finetune"]
    for old, new in [("model(x.to(device))", f"model({move_x})"), (_OWN_LOOP_VALIDATION, validation)]:
        if old == new:
            continue
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on what the caller owns
    "setup_resets_batchnorm_statistics": (1, "how", {"setup_full_finetune": swap(
        _SETUP, "    unfreeze(model)\n", '''    unfreeze(model)
    for m in model.modules():  # fresh statistics for the new data
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
''')}, ["test_everything_trains"]),
    "setup_reinitialises_the_head": (1, "how", {"setup_full_finetune": swap(
        _SETUP, "    unfreeze(model)\n", "    unfreeze(model)\n    get_head(model).reset_parameters()  # start the head afresh\n")},
        ["test_everything_trains"]),
    "select_sorts_the_history": (1, "narrow", {"select_epoch": _SELECT_HEADER + '''    history.sort(key=lambda e: e["epoch"])
    best = history[0]
    for entry in history[1:]:
        if entry["val_acc"] > best["val_acc"]:
            best = entry
    return best["epoch"]
'''}, ["test_select_epoch"]),
    "select_drops_the_test_numbers": (1, "narrow", {"select_epoch": _SELECT_HEADER + '''    for entry in history:
        entry.pop("test_acc", None)  # so that it cannot influence the choice
    return max(history, key=lambda e: (e["val_acc"], -e["epoch"]))["epoch"]
'''}, ["test_select_epoch"]),
    "two_phase_seeds_everything": (1, "narrow", {"two_phase_finetune": swap(
        _two_phase(), "    freeze(model, trainable_stages=1)\n",
        "    seed_everything(0)  # reproducible\n    freeze(model, trainable_stages=1)\n")}, ["test_two_phase_unfreeze"]),
    # 2. selection discipline
    "phase1_without_validation": (2, "leak", {"two_phase_finetune": swap(
        _two_phase(), "phase1 = fit(model, train, val, epochs=head_epochs", "phase1 = fit(model, train, epochs=head_epochs")},
        ["test_two_phase_unfreeze"]),
    "phase2_without_validation": (2, "leak", {"two_phase_finetune": swap(
        _two_phase(), "phase2 = fit(model, train, val, epochs=finetune_epochs", "phase2 = fit(model, train, epochs=finetune_epochs")},
        ["test_two_phase_unfreeze"]),
    "select_on_train_accuracy": (2, "leak", {"select_epoch": _SELECT_HEADER + '''    return max(history, key=lambda e: (e.get("train_acc", 0), e["val_acc"]))["epoch"]
'''}, ["test_select_epoch"]),
    "select_on_val_plus_test": (2, "leak", {"select_epoch": _SELECT_HEADER + '''    scores = {e["epoch"]: e["val_acc"] + e["test_acc"] for e in history}  # all the evidence
    return max(sorted(scores), key=lambda epoch: scores[epoch])
'''}, ["test_select_epoch"]),
    # 3. mode mistakes: the networks have BatchNorm and Dropout
    "own_loop_validates_in_train_mode": (3, "how", {"two_phase_finetune": _own_loop('''        right = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(val, batch_size=64):
                right += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        acc = right / len(val)
''')}, ["test_two_phase_head_first", "test_two_phase_unfreeze"]),
    "own_loop_accuracy_helper_without_eval": (3, "how", {"two_phase_finetune": "@torch.no_grad()\n"
        "def _accuracy(model, data, device):\n"
        "    x, y = zip(*[data[i] for i in range(len(data))])\n"
        "    return (model(torch.stack(x).to(device)).argmax(1).cpu() == torch.tensor(y)).float().mean().item()\n\n\n"
        + _own_loop("        acc = _accuracy(model, val, device)\n")}, ["test_two_phase_head_first", "test_two_phase_unfreeze"]),
    # 4. generality
    "schedule_over_epochs_only": (4, "narrow", {"setup_full_finetune": swap(
        _SETUP, "T_max=max(1, epochs * steps_per_epoch)", "T_max=epochs")}, ["test_learning_rates"]),
    "select_assumes_epoch_order": (4, "narrow", {"select_epoch": _SELECT_HEADER + '''    accuracies = [e["val_acc"] for e in history]
    return history[0]["epoch"] + accuracies.index(max(accuracies))
'''}, ["test_select_epoch"]),
    # 5. device
    "phase1_fit_without_device": (5, "narrow", {"two_phase_finetune": swap(
        _two_phase(), "phase1 = fit(model, train, val, epochs=head_epochs, lr=lr, batch_size=batch_size, device=device,",
        "phase1 = fit(model, train, val, epochs=head_epochs, lr=lr, batch_size=batch_size,")},
        ["test_two_phase_unfreeze"]),
    "own_loop_leaves_batches_on_the_cpu": (5, "narrow", {"two_phase_finetune": _own_loop(move_x="x")},
                                           ["test_two_phase_unfreeze"]),
    # 6. ties and order
    "select_first_in_list_order": (6, "how", {"select_epoch": _SELECT_HEADER + '''    return max(history, key=lambda e: e["val_acc"])["epoch"]
'''}, ["test_select_epoch"]),
    "select_keeps_the_latest_tie": (6, "how", {"select_epoch": _SELECT_HEADER + '''    best_epoch, best_acc = None, -1.0
    for entry in sorted(history, key=lambda e: e["epoch"]):
        if entry["val_acc"] >= best_acc:
            best_epoch, best_acc = entry["epoch"], entry["val_acc"]
    return best_epoch
'''}, ["test_select_epoch"]),
    # 7. autograd hygiene
    "own_loop_validates_with_gradients": (7, "how", {"two_phase_finetune": _own_loop('''        model.eval()
        right = 0
        for x, y in torch.utils.data.DataLoader(val, batch_size=64):
            right += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        acc = right / len(val)
''')}, ["test_two_phase_unfreeze"]),
    "own_loop_detaches_validation": (7, "how", {"two_phase_finetune": _own_loop('''        model.eval()
        pairs = [(model(x.to(device)).detach().cpu(), y) for x, y in torch.utils.data.DataLoader(val, batch_size=8)]
        acc = (torch.cat([p for p, _ in pairs]).argmax(1) == torch.cat([y for _, y in pairs])).float().mean().item()
''')}, ["test_two_phase_unfreeze"]),
    # 8. the wrong object returned
    "setup_returns_scheduler_first": (8, "narrow", {"setup_full_finetune": swap(
        _SETUP, "    return optimizer, scheduler\n", "    return scheduler, optimizer\n")},
        ["test_everything_trains", "test_learning_rates", "test_two_phase_head_first", "test_two_phase_unfreeze"]),
    "select_returns_the_entry": (8, "narrow", {"select_epoch": _SELECT_HEADER + '''    return max(history, key=lambda e: (e["val_acc"], -e["epoch"]))  # the best epoch's record
'''}, ["test_select_epoch"]),
}

#: issue-16 class of mistake (1..8, see NEW_MISTAKES) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# requires_grad_ by hand, the head's group first, LinearLR; fit for both phases
# with keyword arguments; numpy for the selection.
_ALTERNATIVE_BY_HAND: dict[str, str] = {
    "setup_full_finetune": '''def setup_full_finetune(model, lr, backbone_factor, epochs, steps_per_epoch):
    tl_course.unfreeze(model)  # the modes: every layer follows model.train() again
    for p in model.parameters():
        p.requires_grad_(True)
    head = get_head(model)
    in_head = {id(p) for p in head.parameters()}
    optimizer = torch.optim.AdamW([
        {"params": list(head.parameters()), "lr": lr},
        {"params": [p for p in model.parameters() if id(p) not in in_head], "lr": lr * backbone_factor},
    ])
    total = max(1, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.01, total_iters=total)
    return optimizer, scheduler
''',
    "two_phase_finetune": '''def two_phase_finetune(model, train, val, head_epochs, finetune_epochs, lr, backbone_factor=0.1, batch_size=32,
                       device=None):
    tl_course.freeze(model, trainable_stages=1)
    head_only = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    first = fit(model, train=train, val=val, epochs=head_epochs, optimizer=head_only, batch_size=batch_size,
                device=device, progress=False)
    steps = -(-len(train) // batch_size)
    optimizer, scheduler = setup_full_finetune(model, lr=lr / 3, backbone_factor=backbone_factor,
                                               epochs=finetune_epochs, steps_per_epoch=steps)
    second = fit(model, train=train, val=val, epochs=finetune_epochs, optimizer=optimizer, batch_size=batch_size,
                 device=device, progress=False)
    return first, second
''',
    "select_epoch": '''import numpy as np


def select_epoch(history):
    epochs = np.array([e["epoch"] for e in history])
    accs = np.array([e["val_acc"] for e in history])
    return int(epochs[accs == accs.max()].min())
''',
}

# a hand-written loop that validates in eval mode without gradients by hand; StepLR-free ExponentialLR; a
# selection by sorting a copy.
_ALTERNATIVE_OWN_VALIDATION: dict[str, str] = {
    "setup_full_finetune": '''def setup_full_finetune(model, lr, backbone_factor, epochs, steps_per_epoch):
    unfreeze(model)
    head_names = {f"{name}." for name, m in model.named_modules() if m is get_head(model)}
    head, rest = [], []
    for name, p in model.named_parameters():
        (head if any(name.startswith(h) for h in head_names) else rest).append(p)
    optimizer = torch.optim.Adam([{"params": rest, "lr": lr * backbone_factor}, {"params": head}], lr=lr)
    steps = max(1, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.01 ** (1 / steps))
    return optimizer, scheduler
''',
    "two_phase_finetune": ALTERNATIVE["two_phase_finetune"].replace(_OWN_LOOP_VALIDATION, '''        model.eval()
        right = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(val, batch_size=64):
                right += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        acc = right / len(val)
'''),
    "select_epoch": '''def select_epoch(history):
    ranked = sorted(history, key=lambda e: (-e["val_acc"], e["epoch"]))
    return ranked[0]["epoch"]
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_BY_HAND, _ALTERNATIVE_OWN_VALIDATION]
