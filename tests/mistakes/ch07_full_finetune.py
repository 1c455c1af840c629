"""Classic mistakes of chapter 7 (full fine-tuning), each of which must cost points.

MISTAKES: mistake name -> {answer cell grade_id: the student's full replacement source}.
MUST_FAIL: mistake name -> grade_ids of the test cells that must score below full points.
"""

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

MISTAKES: dict[str, dict[str, str]] = {
    # The epoch is picked by test accuracy: the reported test number is then a selected, optimistic one.
    "test_set_used_for_selection": {"select_epoch": '''def select_epoch(history: list[dict]) -> int:
    """The epoch to keep."""
    return max(history, key=lambda e: e["test_acc"])["epoch"]
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
    # The optimizer only gets the backbone (named by the old layers), the new head never trains.
    "optimizer_missing_head": {"setup_full_finetune": _SETUP_HEADER + '''    unfreeze(model)
    head_ids = {id(p) for p in get_head(model).parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": lr * backbone_factor}])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    return optimizer, scheduler
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "test_set_used_for_selection": ["test_select_epoch"],
    "backbone_still_frozen": ["test_everything_trains"],
    "bn_still_frozen_in_eval": ["test_everything_trains"],
    "same_lr_for_all_groups": ["test_learning_rates"],
    "optimizer_missing_head": ["test_everything_trains", "test_learning_rates"],
}
