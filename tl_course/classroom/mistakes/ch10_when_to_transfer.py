"""Known mistakes of chapter 10 (when to transfer: the decision as a contract, a predicted and measured data
curve on EuroSAT, its plot, the data needed, and reading the measurement), each of which must cost points.

See tl_course/classroom/mistakes/__init__.py for MISTAKES, MUST_FAIL, KIND, ALTERNATIVE(S), NEW_MISTAKES and CLASS.
"""

from tl_course.classroom.mistakes import add_new_mistakes

_VALIDATE = '''    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a whole number >= 1, got {n_per_class!r}.")
    if distance not in ("near", "far"):
        raise ValueError(f'distance must be "near" or "far", got {distance!r}.')
    if (isinstance(gpu_hours, bool) or not isinstance(gpu_hours, (int, float, np.integer, np.floating))
            or not math.isfinite(gpu_hours) or gpu_hours < 0):
        raise ValueError(f"gpu_hours must be a finite number >= 0, got {gpu_hours!r}.")
'''


def _strategy(validate: str = _VALIDATE, scratch: str = "n_per_class >= 10_000 and gpu_hours >= 1_000",
              thresholds: str = '(100, 1_000) if distance == "near" else (30, 300)', below_first: str = "n_per_class < first",
              last: str = "n_per_class < second or gpu_hours < 1", names: str = "STRATEGIES[{}]") -> str:
    """The reference choose_strategy with one piece replaced."""
    return f'''def choose_strategy(n_per_class, distance, gpu_hours) -> str:
{validate}    if {scratch}:
        return {names.format(3)}
    first, second = {thresholds}
    if {below_first}:
        return {names.format(0)}
    if {last}:
        return {names.format(1)}
    return {names.format(2)}
'''


def _curve(rows: str = "first_per_class(y_train, n)", fit: str = "x_train[rows], y_train[rows], num_classes",
           classes: str = "int(y_train.max()) + 1", measure: str = "with torch.no_grad():\n    predicted = probe(x_val).argmax(1)\n",
           head: str = "", loop: str = "sizes", acc: str = "float((predicted == y_val).float().mean())",
           sizes_out: str = "np.asarray(list(sizes))") -> str:
    """The reference data_curve with one piece replaced."""
    measure = "".join("        " + line + "\n" for line in measure.splitlines())
    return f'''def data_curve(x_train, y_train, x_val, y_val, sizes, fit_probe):
{head}    num_classes = {classes}
    accuracies = []
    for n in {loop}:
        rows = {rows}
        probe = fit_probe({fit})
{measure}        accuracies.append({acc})
    return {sizes_out}, np.asarray(accuracies, dtype=float)
'''


def _needed(validate: bool = True, pick: str = "sizes[accuracies >= target]",
            none: str = "        return None\n", head: str = "") -> str:
    """The reference photos_needed with one piece replaced."""
    checks = '''    if len(sizes) == 0 or len(sizes) != len(accuracies):
        raise ValueError("a curve needs as many accuracies as sizes, and at least one.")
    if not 0 <= target <= 1:
        raise ValueError(f"target must be between 0 and 1, got {target!r}.")
''' if validate else ""
    return f'''def photos_needed(curve, target):
{head}    sizes, accuracies = (np.asarray(v, dtype=float) for v in curve)
{checks}    reached = {pick}
    if len(reached) == 0:
{none}    return int(reached.min())
'''


_REASONING = '''def prediction_was() -> str:
    measured = float(curve_top[1][{index}])
    if abs(PREDICTED_ACCURACY - measured) <= 0.05:
        return "close"
    return {verdict}


def cut_to_use() -> int:
    return {cut}
'''


def _reasoning(index: str = "-1", verdict: str = '"too high" if PREDICTED_ACCURACY > measured else "too low"',
               cut: str = "MY_CUT if curve_mine[1][-1] > curve_top[1][-1] else 9") -> str:
    return _REASONING.format(index=index, verdict=verdict, cut=cut)


MISTAKES: dict[str, dict[str, str]] = {
    # "A far domain's features fit less well, so keep more of the network frozen": the thresholds swapped.
    "far_freezes_more": {"choose_strategy": _strategy(
        thresholds='(30, 300) if distance == "near" else (100, 1_000)')},
    # Trains from scratch whenever the data set is huge, whatever the compute budget.
    "scratch_without_budget": {"choose_strategy": _strategy(scratch="n_per_class >= 10_000")},
    # Fine-tunes everything even with no GPU time at all.
    "budget_ignored_for_fine_tuning": {"choose_strategy": _strategy(last="n_per_class < second")},
    # Reads the comparison the wrong way round: a guess below the measurement is called "too high".
    "prediction_sign_flipped": {"reasoning": _reasoning(
        verdict='"too low" if PREDICTED_ACCURACY > measured else "too high"')},
    # Compares the prediction with the smallest training set's accuracy, not the largest.
    "prediction_against_first_size": {"reasoning": _reasoning(index="0")},
    # "The lecture's default is the top features": cut 9 whatever the measurement says.
    "cut_always_top": {"reasoning": _reasoning(cut="9")},
}

MUST_FAIL: dict[str, list[str]] = {
    "far_freezes_more": ["test_strategy_rules"],
    "scratch_without_budget": ["test_strategy_rules"],
    "budget_ignored_for_fine_tuning": ["test_strategy_rules"],
    "prediction_sign_flipped": ["test_reasoning"],
    "prediction_against_first_size": ["test_reasoning"],
    "cut_always_top": ["test_reasoning"],
}

KIND: dict[str, str] = {
    "far_freezes_more": "how",
    "scratch_without_budget": "how",
    "budget_ignored_for_fine_tuning": "how",
    "prediction_sign_flipped": "how",
    "prediction_against_first_size": "how",
    "cut_always_top": "how",
}

NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on what the caller owns
    # Standardises the caller's features in place "so that every probe trains better".
    "curve_standardises_in_place": (1, "narrow", {"data_curve": _curve(head='''    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train -= mean
    x_train /= std
    x_val -= mean
    x_val /= std
''')}, ["test_data_curve"]),
    # Seeds the global generator and takes a "random" subset of each class.
    "curve_random_rows_global_seed": (1, "narrow", {"data_curve": _curve(
        head="    torch.manual_seed(0)\n",
        rows="torch.cat([torch.nonzero(y_train == c).flatten()[torch.randperm(int((y_train == c).sum()))[:n]] "
             "for c in torch.unique(y_train).tolist()])")}, ["test_data_curve"]),
    # Sorts the caller's lists in place before drawing them.
    "draw_sorts_callers_lists": (1, "narrow", {"draw_curves": '''def draw_curves(curves, ax) -> dict:
    drawn = {}
    for label, (sizes, accuracies) in curves.items():
        pairs = sorted(zip(list(sizes), list(accuracies)))
        sizes[:] = [p[0] for p in pairs]
        accuracies[:] = [p[1] for p in pairs]
        drawn[label] = (np.asarray(sizes, dtype=float), np.asarray(accuracies, dtype=float))
        ax.plot(drawn[label][0], drawn[label][1], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training tiles per class")
    ax.set_ylabel("validation accuracy")
    ax.legend()
    return drawn
'''}, ["test_draw_curves"]),
    # Sorts the caller's curve in place (sizes and accuracies together) to walk it from the smallest size.
    "needed_sorts_callers_curve": (1, "narrow", {"photos_needed": '''def photos_needed(curve, target):
    sizes, accuracies = curve
    if len(sizes) == 0 or len(sizes) != len(accuracies):
        raise ValueError("a curve needs as many accuracies as sizes, and at least one.")
    if not 0 <= target <= 1:
        raise ValueError(f"target must be between 0 and 1, got {target!r}.")
    pairs = sorted(zip(list(sizes), list(accuracies)))
    sizes[:] = [p[0] for p in pairs]
    accuracies[:] = [p[1] for p in pairs]
    for size, accuracy in zip(sizes, accuracies):
        if accuracy >= target:
            return int(size)
    return None
'''}, ["test_photos_needed"]),
    # 2. selection discipline
    # Scores every probe on the rows it was trained on.
    "curve_scores_training_rows": (2, "how", {"data_curve": _curve(
        measure="with torch.no_grad():\n    predicted = probe(x_train[rows]).argmax(1)\n",
        acc="float((predicted == y_train[rows]).float().mean())")}, ["test_data_curve"]),
    # "More data is better": the validation rows are added to every training set.
    "curve_pools_validation": (2, "leak", {"data_curve": _curve(
        fit="torch.cat([x_train[rows], x_val]), torch.cat([y_train[rows], y_val]), num_classes")},
        ["test_data_curve"]),
    # 4. generality: thresholds, input checks, class counts
    # Strict comparisons at the thresholds: exactly 100 near images per class still only train the softmax.
    "strategy_strict_thresholds": (4, "narrow", {"choose_strategy": _strategy(
        below_first="n_per_class <= first", last="n_per_class <= second or gpu_hours <= 1",
        scratch="n_per_class > 10_000 and gpu_hours > 1_000")}, ["test_strategy_rules"]),
    # One set of thresholds for every domain: the distance is read, checked and ignored.
    "strategy_ignores_distance": (4, "narrow", {"choose_strategy": _strategy(thresholds="(100, 1_000)")},
                                  ["test_strategy_rules"]),
    # Checks the budget's sign only: NaN, infinity and the string "24" get through or raise TypeError.
    "strategy_budget_sign_only": (4, "narrow", {"choose_strategy": _strategy(validate='''    if not isinstance(n_per_class, (int, np.integer)) or isinstance(n_per_class, bool) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a whole number >= 1, got {n_per_class!r}.")
    if distance not in ("near", "far"):
        raise ValueError(f"distance must be near or far, got {distance!r}.")
    if gpu_hours < 0:
        raise ValueError("gpu_hours cannot be negative.")
''')}, ["test_strategy_invalid"]),
    # Checks n_per_class < 1 only: True, 2.5 and "100" pass or raise TypeError.
    "strategy_size_check_only_positive": (4, "narrow", {"choose_strategy": '''def choose_strategy(n_per_class, distance, gpu_hours) -> str:
    if n_per_class < 1:
        raise ValueError("n_per_class must be at least 1.")
    if distance not in ("near", "far"):
        raise ValueError("distance must be near or far.")
    if not gpu_hours >= 0 or gpu_hours == float("inf"):
        raise ValueError("gpu_hours must be a finite number >= 0.")
    if n_per_class >= 10_000 and gpu_hours >= 1_000:
        return STRATEGIES[3]
    first, second = (100, 1_000) if distance == "near" else (30, 300)
    if n_per_class < first:
        return STRATEGIES[0]
    if n_per_class < second or gpu_hours < 1:
        return STRATEGIES[1]
    return STRATEGIES[2]
'''}, ["test_strategy_invalid"]),
    # Ten classes, as in EuroSAT: right for the notebook's data only.
    "curve_ten_classes": (4, "narrow", {"data_curve": _curve(classes="10")}, ["test_data_curve"]),
    # Counts the distinct labels: labels with a gap (0, 2, 3) need one more output.
    "curve_counts_distinct_labels": (4, "narrow", {"data_curve": _curve(classes="len(torch.unique(y_train))")},
                                     ["test_data_curve"]),
    # An accuracy "above" the target is taken literally: exactly at the target does not count.
    "needed_strictly_above": (4, "narrow", {"photos_needed": _needed(pick="sizes[accuracies > target]")},
                              ["test_photos_needed"]),
    # No checks: an empty curve gives None, a target of 1.5 gives None.
    "needed_no_input_checks": (4, "narrow", {"photos_needed": _needed(validate=False)}, ["test_photos_needed"]),
    # 6. ties and order
    # Walks the sizes in sorted order, but returns them sorted too: the caller's order is lost.
    "curve_sizes_sorted": (6, "narrow", {"data_curve": _curve(loop="sorted(sizes)",
                                                              sizes_out="np.asarray(sorted(sizes))")},
                           ["test_data_curve"]),
    # Draws the points in the order given: an unsorted curve zigzags.
    "draw_in_given_order": (6, "narrow", {"draw_curves": '''def draw_curves(curves, ax) -> dict:
    drawn = {}
    for label, (sizes, accuracies) in curves.items():
        x, y = np.asarray(sizes, dtype=float), np.asarray(accuracies, dtype=float)
        ax.plot(x, y, "o-", label=label)
        order = np.argsort(x)
        drawn[label] = (x[order], y[order])
    ax.set_xscale("log")
    ax.set_xlabel("tiles per class")
    ax.set_ylabel("accuracy")
    ax.legend()
    return drawn
'''}, ["test_draw_curves"]),
    # The first size in the list that reaches the target, as if sizes were always sorted.
    "needed_first_in_list_order": (6, "narrow", {"photos_needed": '''def photos_needed(curve, target):
    sizes, accuracies = [np.asarray(v, dtype=float).tolist() for v in curve]
    if not sizes or len(sizes) != len(accuracies):
        raise ValueError("a curve needs as many accuracies as sizes, and at least one.")
    if not 0 <= target <= 1:
        raise ValueError(f"target must be between 0 and 1, got {target!r}.")
    for size, accuracy in zip(sizes, accuracies):
        if accuracy >= target:
            return int(size)
    return None
'''}, ["test_photos_needed"]),
    # 7. autograd hygiene
    # Measures with gradients on, then detaches.
    "curve_measures_with_gradients": (7, "how", {"data_curve": _curve(
        measure="predicted = probe(x_val).detach().argmax(1)\n")}, ["test_data_curve"]),
    # The PyTorch tutorial's `_, preds = torch.max(outputs, 1)`, with no torch.no_grad() around the forward.
    "curve_measures_like_the_tutorial": (7, "how", {"data_curve": _curve(
        measure="outputs = probe(x_val)\n_, predicted = torch.max(outputs, 1)\n")}, ["test_data_curve"]),
    # 8. the wrong object returned
    # Returns a shortened name: "fine-tune everything" is not one of STRATEGIES.
    "strategy_short_name": (8, "narrow", {"choose_strategy": _strategy(
        names='["train only the softmax", "fine-tune the last layers", "fine-tune everything", '
              '"train from scratch"][{}]')}, ["test_strategy_rules"]),
    # Returns the position in STRATEGIES instead of the name.
    "strategy_returns_index": (8, "narrow", {"choose_strategy": _strategy(names="{}")}, ["test_strategy_rules"]),
    # Accuracies in percent (87.0), not fractions.
    "curve_in_percent": (8, "narrow", {"data_curve": _curve(
        acc="100 * float((predicted == y_val).float().mean())")}, ["test_data_curve"]),
    # Draws with pyplot: a new figure, and nothing on the Axes it was given.
    "draw_with_pyplot": (8, "narrow", {"draw_curves": '''def draw_curves(curves, ax) -> dict:
    import matplotlib.pyplot as plt

    drawn = {}
    for label, (sizes, accuracies) in curves.items():
        order = np.argsort(np.asarray(sizes, dtype=float))
        drawn[label] = (np.asarray(sizes, dtype=float)[order], np.asarray(accuracies, dtype=float)[order])
        plt.plot(*drawn[label], marker="o", label=label)
    plt.xscale("log")
    plt.xlabel("training tiles per class")
    plt.ylabel("validation accuracy")
    plt.legend()
    return drawn
'''}, ["test_draw_curves"]),
    # "Not reached" reported as the largest size measured.
    "needed_largest_when_unreached": (8, "narrow", {"photos_needed": _needed(
        none="        return int(sizes.max())\n")}, ["test_photos_needed"]),
}

#: issue-16 class of mistake (1..8) of the mistakes added for it (3 heads and 5 device cannot occur here:
#: the probes are the notebook's own, on the CPU)
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# A table looked up with bisect; NumPy masks and inference_mode; sorted pairs drawn with semilogx; min() with
# a default; another prediction and cut (5: better than the top features at 100 tiles per class).
ALTERNATIVE: dict[str, str] = {
    "choose_strategy": '''import bisect
import numbers

THRESHOLDS = {"near": [100, 1_000], "far": [30, 300]}


def choose_strategy(n_per_class, distance, gpu_hours) -> str:
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, numbers.Integral):
        raise ValueError(f"n_per_class must be an integer, not {type(n_per_class).__name__}.")
    if n_per_class < 1:
        raise ValueError("n_per_class must be at least 1.")
    if not isinstance(distance, str) or distance not in THRESHOLDS:
        raise ValueError(f"distance must be one of {sorted(THRESHOLDS)}.")
    if isinstance(gpu_hours, bool) or not isinstance(gpu_hours, numbers.Real) or not (0 <= gpu_hours < float("inf")):
        raise ValueError("gpu_hours must be a finite, non-negative number.")
    if min(n_per_class / 10_000, gpu_hours / 1_000) >= 1:
        return "train from scratch"
    level = bisect.bisect_right(THRESHOLDS[distance], n_per_class)
    if level == 2 and gpu_hours < 1:
        level = 1
    return STRATEGIES[level]
''',
    "prediction": '''PREDICTED_ACCURACY = 0.9
print(f"I predict {PREDICTED_ACCURACY:.0%} at {max(SIZES)} tiles per class.")
''',
    "data_curve": '''def data_curve(x_train, y_train, x_val, y_val, sizes, fit_probe):
    labels = y_train.numpy()
    k = int(labels.max()) + 1
    result = []
    for n in sizes:
        idx = torch.as_tensor(np.sort(np.asarray(first_per_class(y_train, n))))
        probe = fit_probe(x_train[idx], y_train[idx], k)
        with torch.inference_mode():
            hits = (probe(x_val).argmax(dim=1) == y_val).numpy()
        result.append(hits.mean())
    return np.array(sizes), np.array(result)
''',
    "experiment": '''MY_CUT = 5
curve_mine = data_curve(train[MY_CUT][0], train[MY_CUT][1], val[MY_CUT][0], val[MY_CUT][1], SIZES, fit_probe)
for n, a in zip(*curve_mine):
    print(f"cut {MY_CUT}, {int(n):>3} tiles per class: validation accuracy {a:.1%}")
''',
    "draw_curves": '''def draw_curves(curves, ax) -> dict:
    out = {}
    for name in curves:
        points = sorted(zip(np.asarray(curves[name][0], dtype=float).tolist(),
                            np.asarray(curves[name][1], dtype=float).tolist()), key=lambda p: p[0])
        xs = np.array([p[0] for p in points])
        ys = np.array([p[1] for p in points])
        ax.semilogx(xs, ys, "s--", label=name)
        out[name] = (xs, ys)
    ax.set(xlabel="tiles per class (log scale)", ylabel="accuracy on validation")
    ax.legend(loc="lower right")
    return out
''',
    "photos_needed": '''def photos_needed(curve, target):
    sizes = [float(s) for s in np.asarray(curve[0]).ravel()]
    accs = [float(a) for a in np.asarray(curve[1]).ravel()]
    if len(sizes) != len(accs) or not sizes:
        raise ValueError("sizes and accuracies must be two non-empty sequences of the same length.")
    if target < 0 or target > 1:
        raise ValueError("target is an accuracy: between 0 and 1.")
    best = min((s for s, a in zip(sizes, accs) if a >= target), default=None)
    return None if best is None else int(best)
''',
    "reasoning": '''def prediction_was() -> str:
    gap = PREDICTED_ACCURACY - curve_top[1][np.argmax(curve_top[0])]
    if gap > 0.05:
        return "too high"
    if gap < -0.05:
        return "too low"
    return "close"


def cut_to_use() -> int:
    scores = {9: curve_top[1][-1], MY_CUT: curve_mine[1][-1]}
    return max(sorted(scores, reverse=True), key=lambda c: (scores[c], c == 9))
''',
}

# If / elif with a scenario tuple; torch.no_grad as a decorator-free loop over a dict; errorbar-free ax.plot with
# a log base 2 axis; torch for photos_needed; an over-estimate and cut 8 (worse than the top features here).
_ALTERNATIVE_CHAIN: dict[str, str] = {
    "choose_strategy": '''def _whole(n):
    return type(n) is not bool and isinstance(n, (int, np.integer))


def choose_strategy(n_per_class, distance, gpu_hours) -> str:
    if not _whole(n_per_class) or n_per_class <= 0:
        raise ValueError(f"n_per_class: expected a whole number of images >= 1, got {n_per_class!r}")
    if distance != "near" and distance != "far":
        raise ValueError(f"distance: expected 'near' or 'far', got {distance!r}")
    if type(gpu_hours) is bool or not isinstance(gpu_hours, (int, float, np.integer, np.floating)):
        raise ValueError(f"gpu_hours: expected a number, got {gpu_hours!r}")
    if gpu_hours != gpu_hours or gpu_hours in (float("inf"), float("-inf")) or gpu_hours < 0:
        raise ValueError(f"gpu_hours: expected a finite number >= 0, got {gpu_hours!r}")
    huge = n_per_class >= 10_000
    long_schedule = gpu_hours >= 1_000
    if huge and long_schedule:
        return "train from scratch"
    if distance == "near":
        low, high = 100, 1_000
    else:
        low, high = 30, 300
    if n_per_class >= high:
        if gpu_hours >= 1:
            return "fine-tune everything from the pretrained weights"
        return "fine-tune the last layers"
    elif n_per_class >= low:
        return "fine-tune the last layers"
    else:
        return "train only the softmax"
''',
    "prediction": '''PREDICTED_ACCURACY = 0.95  # a guess: the frozen features are very good
print(f"I predict {PREDICTED_ACCURACY:.0%} at {max(SIZES)} tiles per class.")
''',
    "data_curve": '''def data_curve(x_train, y_train, x_val, y_val, sizes, fit_probe):
    classes = int(torch.max(y_train).item()) + 1
    scores = {}
    for n in sizes:
        chosen = first_per_class(y_train, n)
        model_n = fit_probe(x_train.index_select(0, torch.as_tensor(chosen)),
                            y_train.index_select(0, torch.as_tensor(chosen)), classes)
        torch.set_grad_enabled(False)
        try:
            right = (model_n(x_val).max(dim=1).indices == y_val).sum().item()
        finally:
            torch.set_grad_enabled(True)
        scores[n] = right / len(y_val)
    return np.array([n for n in sizes]), np.array([scores[n] for n in sizes])
''',
    "experiment": '''MY_CUT = 8
x_tr, y_tr = train[MY_CUT]
x_va, y_va = val[MY_CUT]
curve_mine = data_curve(x_tr, y_tr, x_va, y_va, SIZES, fit_probe)
for n, a in zip(*curve_mine):
    print(f"cut {MY_CUT}, {int(n):>3} tiles per class: validation accuracy {a:.1%}")
''',
    "draw_curves": '''def draw_curves(curves, ax) -> dict:
    result = {}
    for label, curve in curves.items():
        x = np.array([float(v) for v in curve[0]])
        y = np.array([float(v) for v in curve[1]])
        idx = x.argsort(kind="mergesort")
        x, y = x[idx], y[idx]
        ax.plot(x, y, linestyle="-", marker="^", label=str(label))
        result[label] = (x, y)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("images per class")
    ax.set_ylabel("val accuracy")
    ax.legend()
    return result
''',
    "photos_needed": '''def photos_needed(curve, target):
    sizes = torch.as_tensor(np.asarray(curve[0], dtype=float))
    accs = torch.as_tensor(np.asarray(curve[1], dtype=float))
    if sizes.numel() == 0 or sizes.shape != accs.shape:
        raise ValueError("the curve must have one accuracy per size")
    if not (0.0 <= float(target) <= 1.0):
        raise ValueError("target must lie in [0, 1]")
    ok = sizes[accs >= target]
    return int(ok.min().item()) if ok.numel() else None
''',
    "reasoning": '''def prediction_was() -> str:
    measured = curve_top[1][list(curve_top[0]).index(max(SIZES))]
    diff = PREDICTED_ACCURACY - measured
    return "close" if -0.05 <= diff <= 0.05 else ("too high" if diff > 0 else "too low")


def cut_to_use() -> int:
    if curve_mine[1][-1] > curve_top[1][-1]:
        return MY_CUT
    return 9
''',
}

# A lookup over rows of a rule table; pandas-free list comprehensions; one plot call per curve with the log
# scale set first; a while loop over sorted positions; a close prediction and cut 6.
_ALTERNATIVE_TABLE: dict[str, str] = {
    "choose_strategy": '''RULES = [  # (distance, at least n, at least hours) -> strategy, first match wins
    (None, 10_000, 1_000, 3),
    ("near", 1_000, 1, 2), ("far", 300, 1, 2),
    ("near", 100, 0, 1), ("far", 30, 0, 1),
    (None, 1, 0, 0),
]


def choose_strategy(n_per_class, distance, gpu_hours) -> str:
    try:
        ok_n = not isinstance(n_per_class, bool) and int(n_per_class) == n_per_class and n_per_class >= 1
        ok_n = ok_n and not isinstance(n_per_class, (float, np.floating, str))
    except (TypeError, ValueError):
        ok_n = False
    if not ok_n:
        raise ValueError(f"{n_per_class!r} is not a valid number of images per class (a whole number >= 1).")
    if distance not in {"near", "far"}:
        raise ValueError(f"{distance!r} is not a distance: use 'near' or 'far'.")
    try:
        ok_h = not isinstance(gpu_hours, (bool, str)) and math.isfinite(gpu_hours) and gpu_hours >= 0
    except TypeError:
        ok_h = False
    if not ok_h:
        raise ValueError(f"{gpu_hours!r} is not a budget in GPU hours (a finite number >= 0).")
    for where, n, hours, k in RULES:
        if where in (None, distance) and n_per_class >= n and gpu_hours >= hours:
            return STRATEGIES[k]
    return STRATEGIES[1]
''',
    "prediction": '''PREDICTED_ACCURACY = 0.85
print(f"I predict {PREDICTED_ACCURACY:.0%} at {max(SIZES)} tiles per class.")
''',
    "data_curve": '''def data_curve(x_train, y_train, x_val, y_val, sizes, fit_probe):
    def one(n):
        keep = first_per_class(y_train, n)
        p = fit_probe(x_train[keep], y_train[keep], int(y_train.max().item()) + 1)
        with torch.no_grad():
            return float(np.mean(p(x_val).argmax(-1).numpy() == y_val.numpy()))

    return np.array(list(sizes)), np.array([one(n) for n in sizes])
''',
    "experiment": '''MY_CUT = 6
curve_mine = data_curve(*train[MY_CUT], *val[MY_CUT], SIZES, fit_probe)
for n, a in zip(*curve_mine):
    print(f"cut {MY_CUT}, {int(n):>3} tiles per class: validation accuracy {a:.1%}")
''',
    "draw_curves": '''def draw_curves(curves, ax) -> dict:
    ax.set_xscale("log")
    drawn = {}
    for label in sorted(curves, key=str):
        s = np.asarray(curves[label][0], dtype=float).copy()
        a = np.asarray(curves[label][1], dtype=float).copy()
        order = np.lexsort((a, s))
        drawn[label] = (s[order], a[order])
        ax.plot(drawn[label][0], drawn[label][1], marker=".", markersize=8, label=label)
    ax.set_xlabel("n per class")
    ax.set_ylabel("accuracy")
    ax.legend()
    return drawn
''',
    "photos_needed": '''def photos_needed(curve, target):
    sizes, accuracies = list(curve[0]), list(curve[1])
    if len(sizes) == 0 or len(sizes) != len(accuracies) or not 0 <= target <= 1:
        raise ValueError("need a non-empty curve (sizes, accuracies) of equal lengths and a target in [0, 1]")
    positions = sorted(range(len(sizes)), key=lambda i: float(sizes[i]))
    i = 0
    while i < len(positions):
        if float(accuracies[positions[i]]) >= target:
            return int(sizes[positions[i]])
        i += 1
    return None
''',
    "reasoning": '''def prediction_was() -> str:
    last = float(curve_top[1][-1])
    if PREDICTED_ACCURACY > last + 0.05:
        return "too high"
    elif PREDICTED_ACCURACY < last - 0.05:
        return "too low"
    return "close"


def cut_to_use() -> int:
    return 9 if curve_top[1][-1] >= curve_mine[1][-1] else MY_CUT
''',
}

ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_CHAIN, _ALTERNATIVE_TABLE]
