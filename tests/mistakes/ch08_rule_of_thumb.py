"""Classic mistakes of chapter 8 (reading a sweep), each of which must cost points.

MISTAKES: mistake name -> {answer cell grade_id: the student's full replacement source}.
MUST_FAIL: mistake name -> grade_ids of the test cells that must score below full points.
"""

MISTAKES: dict[str, dict[str, str]] = {
    # The setting is chosen on the test accuracy (read from the global sweep) instead of validation.
    "test_set_used_for_selection": {"best_stages": '''def best_stages(val_acc, sizes, ks) -> dict:
    """The best number of trainable stages per size."""
    return {n: ks[int(np.nanargmax(test_acc[i]))] for i, n in enumerate(sizes)}
'''},
    # Ties go to the most stages (the last maximum), the more expensive setting.
    "ties_to_more_stages": {"best_stages": '''def best_stages(val_acc, sizes, ks) -> dict:
    """The best number of trainable stages per size."""
    out = {}
    for i, n in enumerate(sizes):
        row = np.nan_to_num(np.asarray(val_acc[i], dtype=float), nan=-1.0)
        out[n] = ks[len(row) - 1 - int(np.argmax(row[::-1]))]
    return out
'''},
    # Only compares the ends: a dip in the middle is missed.
    "only_compares_ends": {"more_data_more_stages": '''def more_data_more_stages(best: dict, sizes) -> bool:
    """True if the rule of thumb holds."""
    ordered = [best[n] for n in sorted(sizes)]
    return ordered[-1] > ordered[0]
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "test_set_used_for_selection": ["test_best_stages"],
    "ties_to_more_stages": ["test_best_stages"],
    "only_compares_ends": ["test_more_data_more_stages"],
}
