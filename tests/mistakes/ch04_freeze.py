"""Classic mistakes of chapter 4 (freeze and train only the softmax), each of which must cost points.

MISTAKES: mistake name -> {answer cell grade_id: the student's full replacement source}.
MUST_FAIL: mistake name -> grade_ids of the test cells that must score below full points.
"""

_FREEZE_HEADER = '''def freeze_backbone(model: nn.Module) -> nn.Module:
    """Freeze every parameter except the head's; keep the frozen BatchNorm layers in eval mode. Returns model."""
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
    # A training run that trains nothing: learning rate 0.
    "training_with_lr_zero": {"train_head": '''# Freeze cat_model, build its optimizer and train it (it is trained in place).
freeze_backbone(cat_model)
history = fit(cat_model, train_data, val_data, epochs=profile.finetune_epochs,
              optimizer=make_optimizer(cat_model, 0.0), device=device, progress=False)
'''},
    # A training run that trains nothing: zero epochs.
    "training_zero_epochs": {"train_head": '''# Freeze cat_model, build its optimizer and train it (it is trained in place).
freeze_backbone(cat_model)
history = fit(cat_model, train_data, val_data, epochs=0,
              optimizer=make_optimizer(cat_model, 1e-2), device=device, progress=False)
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "require_grad_typo": ["test_freeze_backbone"],
    "head_frozen_too": ["test_freeze_backbone"],
    "bn_left_in_train_mode": ["test_freeze_backbone"],
    "optimizer_over_all_parameters": ["test_make_optimizer"],
    "count_all_parameters": ["test_count_trainable"],
    "training_with_lr_zero": ["test_train_head"],
    "training_zero_epochs": ["test_train_head"],
}
