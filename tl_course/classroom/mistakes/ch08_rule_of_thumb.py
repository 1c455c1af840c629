"""Known mistakes of chapter 8 (run a small sweep on cached activations, choose on validation, report on
test), each written the way a student would, each of which must cost points.

MISTAKES: mistake name -> {answer cell grade_id: the student's full replacement source}.
MUST_FAIL: mistake name -> grade_ids of the test cells that must score below full points.
KIND: mistake name -> "leak" | "how" | "forbidden" | "narrow" (the four classes of issue 8).
ALTERNATIVE: answer cell grade_id -> a correct answer in another style (it must score 100 %).
"""

from tl_course.classroom.mistakes import add_new_mistakes, swap

MISTAKES: dict[str, dict[str, str]] = {
    # --- leak -------------------------------------------------------------------------------------
    # "Which cut is really best? Ask the test set": the cut is chosen on test accuracy.
    "select_on_test": {"report": '''n = max(SIZES)
rows = first_per_class(train[CUTS[0]].labels, n)
results = {}
for cut in CUTS:
    probe = fit_probe(train[cut].features[rows], train[cut].labels[rows], NUM_CLASSES)
    results[cut] = accuracy(probe, test[cut])
chosen_cut = max(results, key=results.get)
test_accuracy = results[chosen_cut]
print(f"{max(SIZES)} tiles per class: cut {chosen_cut}, test accuracy {test_accuracy:.1%}")
'''},
    # Rebinds the table a test trusts: "a final check on held-out tiles" recomputes val_acc on test.
    "val_acc_rebound_on_test": {"report": '''val_acc = sweep(train, test, SIZES, CUTS, fit_probe)  # final check on held-out tiles
n = max(SIZES)
chosen_cut = best_cut(val_acc, SIZES, CUTS)[n]
rows = first_per_class(train[chosen_cut].labels, n)
probe = fit_probe(train[chosen_cut].features[rows], train[chosen_cut].labels[rows], NUM_CLASSES)
test_accuracy = accuracy(probe, test[chosen_cut])
print(f"{max(SIZES)} tiles per class: cut {chosen_cut}, test accuracy {test_accuracy:.1%}")
'''},
    # "More data is better": the validation rows are added to the training rows of every probe.
    "sweep_trains_on_train_and_val": {"sweep": '''def sweep(train, val, sizes, cuts, fit_probe):
    table = np.zeros((len(sizes), len(cuts)))
    for i, n in enumerate(sizes):
        for j, cut in enumerate(cuts):
            rows = first_per_class(train[cut].labels, n)
            x = torch.cat([train[cut].features[rows], val[cut].features])
            y = torch.cat([train[cut].labels[rows], val[cut].labels])
            probe = fit_probe(x, y, NUM_CLASSES)
            table[i, j] = accuracy(probe, val[cut])
    return table
'''},
    # The number to report: picks the best test accuracy of the table.
    "q_reports_best_test": {"questions": '''def regime() -> str:
    return "C"


def what_to_report() -> str:
    return "A"
'''},
    # --- how the result was obtained ----------------------------------------------------------------
    # Accuracy measured on the rows the probe was trained on.
    "sweep_scores_on_training_rows": {"sweep": '''def sweep(train, val, sizes, cuts, fit_probe):
    table = np.zeros((len(sizes), len(cuts)))
    for i, n in enumerate(sizes):
        for j, cut in enumerate(cuts):
            rows = first_per_class(train[cut].labels, n)
            x, y = train[cut].features[rows], train[cut].labels[rows]
            probe = fit_probe(x, y, int(y.max()) + 1)
            with torch.no_grad():
                table[i, j] = float((probe(x).argmax(1) == y).float().mean())
    return table
'''},
    # Its own training loop from chapter 5 (plain SGD on raw activations) instead of the fit_probe it is given.
    "sweep_own_training_loop": {"sweep": '''def sweep(train, val, sizes, cuts, fit_probe):
    table = np.zeros((len(sizes), len(cuts)))
    for i, n in enumerate(sizes):
        for j, cut in enumerate(cuts):
            rows = first_per_class(train[cut].labels, n)
            x, y = train[cut].features[rows], train[cut].labels[rows]
            probe = nn.Linear(x.shape[1], int(y.max()) + 1)
            optimizer = torch.optim.SGD(probe.parameters(), lr=0.01)
            for step in range(20):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(probe(x), y)
                loss.backward()
                optimizer.step()
            table[i, j] = accuracy(probe, val[cut])
    return table
'''},
    # Reports the validation accuracy of the chosen cut as the result.
    "report_on_val": {"report": '''n = max(SIZES)
chosen_cut = best_cut(val_acc, SIZES, CUTS)[n]
rows = first_per_class(train[chosen_cut].labels, n)
probe = fit_probe(train[chosen_cut].features[rows], train[chosen_cut].labels[rows], NUM_CLASSES)
test_accuracy = accuracy(probe, val[chosen_cut])
print(f"{max(SIZES)} tiles per class: cut {chosen_cut}, accuracy {test_accuracy:.1%}")
'''},
    # --- forbidden shortcut -------------------------------------------------------------------------
    # Calls the library's helper (through a FeatureSet of row numbers) instead of writing the selection.
    "first_per_class_library": {"first_per_class": '''def first_per_class(labels, n):
    from tl_course.book.experiments import first_per_class as library_first_per_class
    labels = torch.as_tensor(labels)
    numbers = FeatureSet(torch.arange(len(labels)), labels, [], 0, "")
    rows, _ = library_first_per_class(numbers, n)
    return rows
'''},
    # --- narrow inputs ------------------------------------------------------------------------------
    # Assumes the rows are grouped by class, equally many per class (true of the notebook's splits).
    "first_per_class_assumes_grouped": {"first_per_class": '''def first_per_class(labels, n):
    if n < 0:
        raise ValueError("n must be >= 0")
    classes = len(torch.unique(labels))
    per_class = len(labels) // classes
    if n > per_class:
        raise ValueError(f"only {per_class} rows per class")
    return torch.cat([torch.arange(c * per_class, c * per_class + n) for c in range(classes)])
'''},
    # Takes fewer rows without a word when a class is short, and accepts a negative n.
    "first_per_class_silent_short": {"first_per_class": '''def first_per_class(labels, n):
    labels = torch.as_tensor(labels)
    rows = [torch.nonzero(labels == c).flatten()[:n] for c in torch.unique(labels)]
    return torch.cat(rows).sort().values
'''},
    # Standardises the caller's features in place "so the probe trains better".
    "sweep_standardises_in_place": {"sweep": '''def sweep(train, val, sizes, cuts, fit_probe):
    table = np.zeros((len(sizes), len(cuts)))
    for j, cut in enumerate(cuts):
        x, xv = train[cut].features, val[cut].features
        mean, std = x.mean(0), x.std(0) + 1e-3
        x -= mean
        x /= std
        xv -= mean
        xv /= std
        y = train[cut].labels
        for i, n in enumerate(sizes):
            rows = first_per_class(y, n)
            probe = fit_probe(x[rows], y[rows], int(y.max()) + 1)
            table[i, j] = accuracy(probe, val[cut])
    return table
'''},
    # np.argmax: on a tie the first column wins, not the highest cut.
    "best_cut_ties_to_first_column": {"best_cut": '''def best_cut(val_acc, sizes, cuts) -> dict:
    val_acc = np.asarray(val_acc)
    return {n: cuts[int(np.argmax(val_acc[i]))] for i, n in enumerate(sizes)}
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "select_on_test": ["test_report"],
    "val_acc_rebound_on_test": ["test_report"],
    "sweep_trains_on_train_and_val": ["test_sweep"],
    "q_reports_best_test": ["test_what_to_report"],
    "sweep_scores_on_training_rows": ["test_sweep"],
    "sweep_own_training_loop": ["test_sweep"],
    "report_on_val": ["test_report"],
    "first_per_class_library": ["test_first_per_class"],
    "first_per_class_assumes_grouped": ["test_first_per_class", "test_sweep"],
    "first_per_class_silent_short": ["test_first_per_class"],
    "sweep_standardises_in_place": ["test_sweep"],
    "best_cut_ties_to_first_column": ["test_best_cut"],
}

KIND: dict[str, str] = {
    "select_on_test": "leak",
    "val_acc_rebound_on_test": "leak",
    "sweep_trains_on_train_and_val": "leak",
    "q_reports_best_test": "leak",
    "sweep_scores_on_training_rows": "how",
    "sweep_own_training_loop": "how",
    "report_on_val": "how",
    "first_per_class_library": "forbidden",
    "first_per_class_assumes_grouped": "narrow",
    "first_per_class_silent_short": "narrow",
    "sweep_standardises_in_place": "narrow",
    "best_cut_ties_to_first_column": "narrow",
}

# Correct answers in another style: numpy instead of torch, other loop orders, tl_course.evaluate,
# sorting instead of max(), lower-case letters with spaces.
ALTERNATIVE: dict[str, str] = {
    "first_per_class": '''def first_per_class(labels, n):
    y = np.asarray(labels)
    if n < 0:
        raise ValueError("n cannot be negative")
    taken = {}
    picked = []
    for i, c in enumerate(y.tolist()):
        if taken.get(c, 0) < n:
            taken[c] = taken.get(c, 0) + 1
            picked.append(i)
    counts = {c: int((y == c).sum()) for c in set(y.tolist())}
    short = [c for c, k in counts.items() if k < n]
    if short:
        raise ValueError(f"class {short[0]} has {counts[short[0]]} rows, fewer than {n}")
    return np.array(picked, dtype=np.int64)
''',
    "sweep": '''def sweep(train, val, sizes, cuts, fit_probe):
    from tl_course import evaluate
    rows_out = []
    for n in sizes:
        row = []
        for cut in cuts:
            x = train[cut].features.numpy().astype(np.float64)
            y = train[cut].labels.numpy()
            idx = np.sort(np.asarray(first_per_class(y, n)))
            probe = fit_probe(torch.from_numpy(x[idx]).float(), torch.from_numpy(y[idx]), int(y.max()) + 1)
            row.append(evaluate(probe, (val[cut].features, val[cut].labels), device="cpu").accuracy)
        rows_out.append(row)
    return rows_out
''',
    "best_cut": '''def best_cut(val_acc, sizes, cuts) -> dict:
    table = np.asarray(val_acc, dtype=float).tolist()
    answer = {}
    for size, row in zip(sizes, table):
        ranked = sorted(zip(row, cuts), reverse=True)   # best accuracy first, then the higher cut
        answer[size] = ranked[0][1]
    return answer
''',
    "report": '''largest = sorted(SIZES)[-1]
chosen_cut = best_cut(val_acc, SIZES, CUTS)[largest]
idx = np.sort(np.asarray(first_per_class(train[chosen_cut].labels.numpy(), largest)))
x = train[chosen_cut].features[torch.from_numpy(idx)]
y = train[chosen_cut].labels[torch.from_numpy(idx)]
final_probe = fit_probe(x, y, NUM_CLASSES)
with torch.no_grad():
    predicted = final_probe(test[chosen_cut].features).argmax(1).numpy()
test_accuracy = float(np.mean(predicted == test[chosen_cut].labels.numpy()))
print(f"{largest} tiles per class: cut {chosen_cut}, test accuracy {test_accuracy:.1%}")
''',
    "questions": '''def regime() -> str:
    answer = "c "
    return answer


def what_to_report() -> str:
    return " b"
''',
}

# ---------------------------------------------------------------------------------------------
# Issue 16: every graded function is checked against its whole contract. Each mistake below breaks one line
# of a docstring / exercise contract, at least two styles per class that can occur here: 1 side effects on what
# the caller owns, 2 selection discipline, 3 a probe other than one Linear (mode mistakes), 4 generality,
# 6 ties and order, 7 autograd hygiene, 8 the wrong object returned. Class 5 (device) cannot occur: no function
# takes a device or moves a tensor; the probe and the features both come from the caller.
# Most new mistakes sit in best_cut: they share a graded submission with a sweep mistake (grouping.py).
# ---------------------------------------------------------------------------------------------
_FIRST_PER_CLASS = '''def first_per_class(labels, n):
    """Indices of the first ``n`` rows of every class (label value) in ``labels``; labels left unchanged."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    labels = torch.as_tensor(labels)
    chosen = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        if len(rows) < n:
            raise ValueError(f"Class {c} has only {len(rows)} rows, fewer than n = {n}.")
        chosen.append(rows[:n])
    if not chosen:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(chosen).sort().values
'''

_SWEEP = '''def sweep(train, val, sizes, cuts, fit_probe):
    """Validation accuracy of a probe per (training size, cut): an array (len(sizes), len(cuts))."""
    table = np.zeros((len(sizes), len(cuts)))
    for j, cut in enumerate(cuts):
        x, y = train[cut].features, train[cut].labels
        num_classes = int(y.max()) + 1
        for i, n in enumerate(sizes):
            rows = first_per_class(y, n)
            probe = fit_probe(x[rows], y[rows], num_classes)
            probe.eval()
            with torch.no_grad():
                predicted = probe(val[cut].features).argmax(1)
            table[i, j] = float((predicted == val[cut].labels).float().mean())
    return table
'''

_REPORT = '''n = max(SIZES)
chosen_cut = best_cut(val_acc, SIZES, CUTS)[n]
rows = first_per_class(train[chosen_cut].labels, n)
probe = fit_probe(train[chosen_cut].features[rows], train[chosen_cut].labels[rows], NUM_CLASSES)
test_accuracy = accuracy(probe, test[chosen_cut])
'''


def _best_cut(body: str) -> str:
    return 'def best_cut(val_acc, sizes, cuts) -> dict:\n    """{size: the best cut on validation}."""\n' + body


NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects on what the caller owns
    "sweep_seeds_the_global_generator": (1, "narrow", {"sweep": swap(
        _SWEEP, "            probe = fit_probe(", "            torch.manual_seed(0)  # every probe starts alike\n"
        "            probe = fit_probe(")}, ["test_sweep"]),
    "best_cut_subtracts_the_row_max_in_place": (1, "narrow", {"best_cut": _best_cut('''    val_acc = np.asarray(val_acc, dtype=float)
    val_acc -= val_acc.max(axis=1, keepdims=True)   # 0 marks the best of each row
    return {n: max(c for c, gap in zip(cuts, row) if gap == 0) for n, row in zip(sizes, val_acc)}
''')}, ["test_best_cut"]),
    "best_cut_rounds_the_callers_lists": (1, "narrow", {"best_cut": _best_cut('''    table = val_acc.tolist() if hasattr(val_acc, "tolist") else val_acc
    for row in table:
        for j, a in enumerate(row):
            row[j] = round(a, 3)  # 0.1 + 0.2 != 0.3: compare at a tile's precision
    return {n: max(c for c, a in zip(cuts, row) if a == max(row)) for n, row in zip(sizes, table)}
''')}, ["test_best_cut"]),
    # 2. selection discipline: the number reported belongs to the configuration chosen for it
    "report_test_of_the_top_cut": (2, "leak", {"report": swap(
        _REPORT, "test_accuracy = accuracy(probe, test[chosen_cut])", '''top_rows = first_per_class(train[9].labels, n)  # the deployed model reads the top features
top_probe = fit_probe(train[9].features[top_rows], train[9].labels[top_rows], NUM_CLASSES)
test_accuracy = accuracy(top_probe, test[9])''')}, ["test_report"]),
    "report_choice_from_the_first_row": (2, "leak", {"report": swap(
        _REPORT, "chosen_cut = best_cut(val_acc, SIZES, CUTS)[n]", "chosen_cut = best_cut(val_acc, SIZES, CUTS)[SIZES[0]]")},
        ["test_report"]),
    # 3. a probe other than one Linear: measured in train mode
    "sweep_never_calls_eval": (3, "how", {"sweep": swap(_SWEEP, "            probe.eval()\n", "")}, ["test_sweep"]),
    "sweep_eval_without_parentheses": (3, "how", {"sweep": swap(_SWEEP, "            probe.eval()\n",
                                                                  "            probe.eval\n")}, ["test_sweep"]),
    # 4. generality
    "first_per_class_classes_from_range": (4, "narrow", {"first_per_class": swap(
        _FIRST_PER_CLASS, "for c in torch.unique(labels).tolist():", "for c in range(int(labels.max()) + 1):")},
        ["test_first_per_class"]),
    "best_cut_assumes_an_array": (4, "narrow", {"best_cut": _best_cut('''    best = val_acc.max(axis=1) if isinstance(val_acc, np.ndarray) else val_acc.max(dim=1).values
    return {n: max(c for c, a in zip(cuts, row.tolist()) if a == float(top))
            for n, row, top in zip(sizes, val_acc, best)}
''')}, ["test_best_cut"]),
    # 6. ties and order
    "best_cut_ties_to_the_last_column": (6, "narrow", {"best_cut": _best_cut('''    best = {}
    for n, row in zip(sizes, np.asarray(val_acc, dtype=float).tolist()):
        by_accuracy = {a: c for c, a in zip(cuts, row)}  # a later column overwrites an equal accuracy
        best[n] = by_accuracy[max(by_accuracy)]
    return best
''')}, ["test_best_cut"]),
    "best_cut_argmax_of_the_reversed_row": (6, "narrow", {"best_cut": _best_cut('''    table = np.asarray(val_acc, dtype=float)
    return {n: cuts[len(cuts) - 1 - int(np.argmax(row[::-1]))] for n, row in zip(sizes, table)}  # last = highest
''')}, ["test_best_cut"]),
    # 7. autograd hygiene
    "sweep_measures_with_gradients": (7, "how", {"sweep": swap(_SWEEP, '''            with torch.no_grad():
                predicted = probe(val[cut].features).argmax(1)''', '''            predicted = probe(val[cut].features).argmax(1)  # argmax has no gradient anyway''')},
        ["test_sweep"]),
    "sweep_detaches_the_logits": (7, "how", {"sweep": swap(_SWEEP, '''            with torch.no_grad():
                predicted = probe(val[cut].features).argmax(1)''', '''            logits = probe(val[cut].features).detach()
            predicted = logits.argmax(1)''')}, ["test_sweep"]),
    # 8. the wrong object returned
    "best_cut_returns_column_numbers": (8, "how", {"best_cut": _best_cut('''    table = np.asarray(val_acc, dtype=float)
    return {n: max(j for j in range(len(cuts)) if row[j] == row.max()) for n, row in zip(sizes, table)}
''')}, ["test_best_cut"]),
    "report_chosen_cut_is_the_dict": (8, "how", {"report": '''n = max(SIZES)
chosen_cut = best_cut(val_acc, SIZES, CUTS)
rows = first_per_class(train[chosen_cut[n]].labels, n)
probe = fit_probe(train[chosen_cut[n]].features[rows], train[chosen_cut[n]].labels[rows], NUM_CLASSES)
test_accuracy = accuracy(probe, test[chosen_cut[n]])
'''}, ["test_report"]),
}

#: issue-16 class of mistake (1..8, see NEW_MISTAKES) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# A dict of counters and the notebook's own accuracy(); max over (accuracy, cut) pairs; the report with accuracy().
_ALTERNATIVE_COUNTERS: dict[str, str] = {
    "first_per_class": '''from collections import defaultdict

def first_per_class(labels, n):
    values = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    if n < 0:
        raise ValueError(f"n = {n} is negative")
    seen, picked = defaultdict(int), []
    for row, c in enumerate(values):
        if seen[c] < n:
            picked.append(row)
        seen[c] += 1
    for c, count in seen.items():
        if count < n:
            raise ValueError(f"class {c} has {count} rows, not {n}")
    return torch.tensor(picked, dtype=torch.long)
''',
    "sweep": '''def sweep(train, val, sizes, cuts, fit_probe):
    rows_out = []
    for n in sizes:
        row_out = []
        for cut in cuts:
            labels = train[cut].labels
            idx = first_per_class(labels, n)
            probe = fit_probe(train[cut].features[idx], labels[idx], int(labels.max()) + 1)
            row_out.append(accuracy(probe, val[cut]))
        rows_out.append(row_out)
    return np.array(rows_out)
''',
    "best_cut": '''def best_cut(val_acc, sizes, cuts) -> dict:
    rows = np.asarray(val_acc, dtype=float).tolist()
    return {size: max(zip(row, cuts))[1] for size, row in zip(sizes, rows)}
''',
    "report": '''largest = max(SIZES)
choice = best_cut(val_acc, SIZES, CUTS)
chosen_cut = choice[largest]
keep = first_per_class(train[chosen_cut].labels, largest)
final = fit_probe(train[chosen_cut].features[keep], train[chosen_cut].labels[keep], NUM_CLASSES)
test_accuracy = accuracy(final, test[chosen_cut])
''',
}

# NumPy ranks within each class; an explicit train(False) and inference mode; a sort on (accuracy, cut).
_ALTERNATIVE_RANKS: dict[str, str] = {
    "first_per_class": '''def first_per_class(labels, n):
    y = np.array(labels).reshape(-1)
    if n < 0:
        raise ValueError("n must not be negative")
    values, counts = np.unique(y, return_counts=True)
    if len(values) and counts.min() < n:
        raise ValueError(f"class {values[counts.argmin()]} has only {counts.min()} rows")
    order = np.argsort(y, kind="stable")              # rows grouped by class, data order kept inside a class
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.empty(len(y), dtype=np.int64)
    rank[order] = np.arange(len(y)) - starts
    return np.flatnonzero(rank < n)
''',
    "sweep": '''def sweep(train, val, sizes, cuts, fit_probe):
    out = np.empty((len(sizes), len(cuts)))
    for i, n in enumerate(sizes):
        for j, cut in enumerate(cuts):
            tr, va = train[cut], val[cut]
            rows = torch.as_tensor(first_per_class(tr.labels, n))
            probe = fit_probe(tr.features[rows], tr.labels[rows], int(tr.labels.max().item()) + 1)
            probe.train(False)
            with torch.inference_mode():
                hits = (probe(va.features).argmax(-1) == va.labels).sum().item()
            out[i, j] = hits / len(va.labels)
    return out
''',
    "best_cut": '''def best_cut(val_acc, sizes, cuts) -> dict:
    table = torch.as_tensor(np.asarray(val_acc, dtype=float))
    result = {}
    for i, size in enumerate(sizes):
        row = table[i].tolist()
        j = sorted(range(len(cuts)), key=lambda k: (row[k], cuts[k]))[-1]
        result[size] = cuts[j]
    return result
''',
    "questions": '''def regime() -> str:
    return "c"


def what_to_report() -> str:
    return "B "
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_COUNTERS, _ALTERNATIVE_RANKS]
