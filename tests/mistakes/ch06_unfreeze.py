"""Classic mistakes for chapter 6 (freeze fewer layers); each must cost points."""

_FREEZE_HEADER = '''def freeze_all_but_last(model, k):
    """Freeze every stage of ``model`` except the last ``k``; frozen stages stay in eval mode. Returns ``model``."""
'''
_GROUPS_HEADER = '''def discriminative_param_groups(model, head_lr, backbone_lr):
    """Parameter groups: the new head at ``head_lr``, other trainable parameters at ``backbone_lr``."""
'''
_KEEP_EVAL = '''    def stay_in_eval(self, mode=True):
        self.training = False
        return self

'''

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
    # Freezes the new head too (k - 1 trainable stages below it, head frozen).
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
    # One learning rate for everything: backbone_lr ignored.
    "one_lr_for_everything": {"discriminative_param_groups": _GROUPS_HEADER + '''    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": head_lr}]
'''},
    # Frozen parameters handed to the optimizer with the pretrained stages.
    "frozen_params_in_groups": {"discriminative_param_groups": _GROUPS_HEADER + '''    head = list(stages(model)[-1].parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return [{"params": backbone, "lr": backbone_lr}, {"params": head, "lr": head_lr}]
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "bn_left_in_train_mode": ["test_freeze_all_but_last"],
    "require_grad_typo": ["test_freeze_all_but_last"],
    "head_frozen_too": ["test_freeze_all_but_last"],
    "one_lr_for_everything": ["test_discriminative_param_groups"],
    "frozen_params_in_groups": ["test_discriminative_param_groups"],
}
