"""Known mistakes of chapter 8 (run a small sweep on cached activations, choose on validation, report on
test), each written the way a student would, each of which must cost points.

MISTAKES: mistake name -> {answer cell grade_id: the student's full replacement source}.
MUST_FAIL: mistake name -> grade_ids of the test cells that must score below full points.
KIND: mistake name -> "leak" | "how" | "forbidden" | "narrow" (the four classes of issue 8).
ALTERNATIVE: answer cell grade_id -> a correct answer in another style (it must score 100 %).
"""

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
