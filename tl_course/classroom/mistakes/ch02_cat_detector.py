"""Classic mistakes of chapter 2 (the cat detector: labels and splits), each of which must cost points.

See tl_course/classroom/mistakes/__init__.py for MISTAKES, MUST_FAIL, KIND and ALTERNATIVE.
"""

from tl_course.classroom.mistakes import add_new_mistakes

_LABEL_HEADER = '''def cat_label(breed):
    """0 for Bengal (Tigger), 1 for Russian_Blue (Misty), 2 for every other breed (neither)."""
'''

_SPLIT_HEADER = '''import random

def split_per_class(files, labels, train_per_class, val_per_class, test_per_class, seed=0):
    """Seeded, stratified (train, val, test) lists of (file, label); test and val do not depend on train_per_class."""
'''

MISTAKES: dict[str, dict[str, str]] = {
    # Compares with a lower-case name: the real "Bengal" never matches.
    "label_lowercase": {"cat_label": _LABEL_HEADER + '''    if breed == "bengal":
        return 0
    if breed == "Russian_Blue":
        return 1
    return 2
'''},
    # Typo in the breed name: Misty becomes "neither".
    "label_russian_blue_typo": {"cat_label": _LABEL_HEADER + '''    return {"Bengal": 0, "Russian Blue": 1}.get(breed, 2)
'''},
    # Training photos drawn from all of a class's photos: they overlap with val and test.
    "splits_overlap": {"split_per_class": _SPLIT_HEADER + '''    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in sorted(set(labels)):
        pool = sorted(f for f, y in zip(files, labels) if y == label)
        if len(pool) < test_per_class + val_per_class + train_per_class:
            raise ValueError("not enough photos")
        rng.shuffle(pool)
        test += [(f, label) for f in pool[:test_per_class]]
        val += [(f, label) for f in pool[test_per_class:test_per_class + val_per_class]]
        train += [(f, label) for f in rng.sample(pool, train_per_class)]
    return train, val, test
'''},
    # One random split of everything: the counts per class are off.
    "not_stratified": {"split_per_class": _SPLIT_HEADER + '''    rng = random.Random(seed)
    pairs = sorted(zip(files, labels))
    if len(pairs) < 3 * (test_per_class + val_per_class + train_per_class):
        raise ValueError("not enough photos")
    rng.shuffle(pairs)
    k = len(set(labels))
    n_test, n_val, n_train = k * test_per_class, k * val_per_class, k * train_per_class
    test = pairs[:n_test]
    val = pairs[n_test:n_test + n_val]
    train = pairs[n_test + n_val:n_test + n_val + n_train]
    return train, val, test
'''},
    # Training photos taken first: the test set moves when train_per_class changes.
    "train_carved_first": {"split_per_class": _SPLIT_HEADER + '''    rng = random.Random(seed)
    needed = test_per_class + val_per_class + train_per_class
    train, val, test = [], [], []
    for label in sorted(set(labels)):
        pool = sorted(f for f, y in zip(files, labels) if y == label)
        if len(pool) < needed:
            raise ValueError("not enough photos")
        rng.shuffle(pool)
        train += [(f, label) for f in pool[:train_per_class]]
        val += [(f, label) for f in pool[train_per_class:train_per_class + val_per_class]]
        test += [(f, label) for f in pool[train_per_class + val_per_class:needed]]
    return train, val, test
'''},
    # The global random.shuffle without a seed: a different split on every call.
    "unseeded": {"split_per_class": _SPLIT_HEADER + '''    needed = test_per_class + val_per_class + train_per_class
    train, val, test = [], [], []
    for label in sorted(set(labels)):
        pool = sorted(f for f, y in zip(files, labels) if y == label)
        if len(pool) < needed:
            raise ValueError("not enough photos")
        random.shuffle(pool)
        test += [(f, label) for f in pool[:test_per_class]]
        val += [(f, label) for f in pool[test_per_class:test_per_class + val_per_class]]
        train += [(f, label) for f in pool[test_per_class + val_per_class:needed]]
    return train, val, test
'''},
    # The library function the text forbids.
    "label_calls_library": {"cat_label": _LABEL_HEADER + '''    from tl_course.data import cat_label as library_label
    return library_label(breed)
'''},
    # Seeds the *global* generator: repeatable, but it resets everyone else's random state (a side effect).
    "seeds_global_random": {"split_per_class": _SPLIT_HEADER + '''    random.seed(seed)
    needed = test_per_class + val_per_class + train_per_class
    train, val, test = [], [], []
    for label in sorted(set(labels)):
        pool = sorted(f for f, y in zip(files, labels) if y == label)
        if len(pool) < needed:
            raise ValueError("not enough photos")
        random.shuffle(pool)
        test += [(f, label) for f in pool[:test_per_class]]
        val += [(f, label) for f in pool[test_per_class:test_per_class + val_per_class]]
        train += [(f, label) for f in pool[test_per_class + val_per_class:needed]]
    return train, val, test
'''},
    # No sort before the shuffle: the split depends on the order the files arrive in.
    "order_dependent": {"split_per_class": _SPLIT_HEADER + '''    rng = random.Random(seed)
    needed = test_per_class + val_per_class + train_per_class
    train, val, test = [], [], []
    for label in sorted(set(labels)):
        pool = [f for f, y in zip(files, labels) if y == label]
        if len(pool) < needed:
            raise ValueError("not enough photos")
        rng.shuffle(pool)
        test += [(f, label) for f in pool[:test_per_class]]
        val += [(f, label) for f in pool[test_per_class:test_per_class + val_per_class]]
        train += [(f, label) for f in pool[test_per_class + val_per_class:needed]]
    return train, val, test
'''},
    # Hard-codes the three classes of this notebook.
    "hard_coded_three_classes": {"split_per_class": _SPLIT_HEADER + '''    rng = random.Random(seed)
    needed = test_per_class + val_per_class + train_per_class
    train, val, test = [], [], []
    for label in range(3):
        pool = sorted(f for f, y in zip(files, labels) if y == label)
        if len(pool) < needed:
            raise ValueError("not enough photos")
        rng.shuffle(pool)
        test += [(f, label) for f in pool[:test_per_class]]
        val += [(f, label) for f in pool[test_per_class:test_per_class + val_per_class]]
        train += [(f, label) for f in pool[test_per_class + val_per_class:needed]]
    return train, val, test
'''},
    # Silently returns fewer photos when a class is too small.
    "no_value_error": {"split_per_class": _SPLIT_HEADER + '''    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in sorted(set(labels)):
        pool = sorted(f for f, y in zip(files, labels) if y == label)
        rng.shuffle(pool)
        test += [(f, label) for f in pool[:test_per_class]]
        val += [(f, label) for f in pool[test_per_class:test_per_class + val_per_class]]
        train += [(f, label) for f in pool[test_per_class + val_per_class:test_per_class + val_per_class + train_per_class]]
    return train, val, test
'''},
    # Thinks "evaluated once per setting" makes choosing on the test set fair.
    "thinks_test_selection_is_fine": {"q_selection": '''def answer_selection():
    return "a"
'''},
}

MUST_FAIL: dict[str, list[str]] = {
    "label_lowercase": ["test_cat_label"],
    "label_russian_blue_typo": ["test_cat_label"],
    "splits_overlap": ["test_split_no_overlap"],
    "not_stratified": ["test_split_counts"],
    "train_carved_first": ["test_split_stable_test_set"],
    "unseeded": ["test_split_seeded", "test_split_stable_test_set"],
    "label_calls_library": ["test_cat_label"],
    "seeds_global_random": ["test_split_seeded"],
    "order_dependent": ["test_split_seeded"],
    "hard_coded_three_classes": ["test_split_counts"],
    "no_value_error": ["test_split_counts"],
    "thinks_test_selection_is_fine": ["test_q_selection"],
}

KIND: dict[str, str] = {
    "label_lowercase": "how",
    "label_russian_blue_typo": "how",
    "label_calls_library": "forbidden",
    "splits_overlap": "leak",
    "not_stratified": "how",
    "train_carved_first": "leak",
    "unseeded": "how",
    "seeds_global_random": "narrow",
    "order_dependent": "narrow",
    "hard_coded_three_classes": "narrow",
    "no_value_error": "narrow",
    "thinks_test_selection_is_fine": "leak",
}

# Correct, in another style: a set lookup; one sorted list of pairs, grouped with itertools.groupby.
ALTERNATIVE: dict[str, str] = {
    "cat_label": '''CATS = ("Bengal", "Russian_Blue")

def cat_label(breed):
    if breed in CATS:
        return CATS.index(breed)
    return 2
''',
    "split_per_class": '''import itertools
import random

def split_per_class(files, labels, train_per_class, val_per_class, test_per_class, seed=0):
    rng = random.Random(seed)
    sizes = (test_per_class, val_per_class, train_per_class)
    out = {"test": [], "val": [], "train": []}
    pairs = sorted(zip(labels, files), key=lambda p: (p[0], str(p[1])))
    for label, group in itertools.groupby(pairs, key=lambda p: p[0]):
        pool = [f for _, f in group]
        if len(pool) < sum(sizes):
            raise ValueError(f"label {label}: {len(pool)} photos < {sum(sizes)}")
        rng.shuffle(pool)
        start = 0
        for name, n in zip(("test", "val", "train"), sizes):
            out[name].extend((f, label) for f in pool[start:start + n])
            start += n
    return out["train"], out["val"], out["test"]
''',
    "q_selection": '''def answer_selection():
    return "B"
''',
}

# ---------------------------------------------------------------------------------------------
# Issue 16: each function checked against its whole docstring contract. New mistakes by class (1 side effects
# on what the caller owns, 4 generality, 6 ties and order; 2, 3, 5, 7 and 8 cannot occur in this assignment:
# no training, no model, no device, no tensors), each in at least two styles.
# ---------------------------------------------------------------------------------------------
def _split(head: str = "", check: str = "        if len(pool) < needed:\n",
           loop: str = "    for label in sorted(set(labels)):\n",
           pool: str = "        pool = sorted(f for f, y in zip(files, labels) if y == label)\n",
           shuffle: str = "        rng.shuffle(pool)\n") -> str:
    """The reference split with one piece swapped for a mistaken one."""
    return _SPLIT_HEADER + head + '''    rng = random.Random(seed)
    needed = test_per_class + val_per_class + train_per_class
    train, val, test = [], [], []
''' + loop + pool + check + '''            raise ValueError(f"Class {label} has {len(pool)} files, {needed} are needed.")
''' + shuffle + '''        test += [(f, label) for f in pool[:test_per_class]]
        val += [(f, label) for f in pool[test_per_class:test_per_class + val_per_class]]
        train += [(f, label) for f in pool[test_per_class + val_per_class:needed]]
    return train, val, test
'''


NEW_MISTAKES: dict[str, tuple[int, str, dict[str, str], list[str]]] = {
    # name: (issue-16 class, KIND, answer cells, MUST_FAIL)
    # 1. side effects: the caller's lists, the global generators
    "sorts_the_callers_files": (1, "narrow", {"split_per_class": _split(
        head="    pairs = sorted(zip(files, labels), key=lambda p: str(p[0]))  # sorted, so that the order does not matter\n"
             "    files[:] = [f for f, _ in pairs]\n    labels[:] = [y for _, y in pairs]\n")}, ["test_split_seeded"]),
    "numpy_global_seed": (1, "narrow", {"split_per_class": '''import numpy as np
''' + _split(shuffle="        np.random.seed(seed)\n        pool = list(np.random.permutation(pool))\n")}, ["test_split_seeded"]),
    "torch_global_seed": (1, "narrow", {"split_per_class": '''import torch
''' + _split(shuffle="        torch.manual_seed(seed)\n        pool = [pool[i] for i in torch.randperm(len(pool)).tolist()]\n")},
        ["test_split_seeded"]),
    # 4. generality: substrings, labels, the exact boundary
    "label_by_substring": (4, "narrow", {"cat_label": _LABEL_HEADER + '''    if "Bengal" in breed:
        return 0
    if "Russian" in breed:
        return 1
    return 2
'''}, ["test_cat_label"]),
    "label_by_prefix": (4, "narrow", {"cat_label": _LABEL_HEADER + '''    if breed.startswith("Beng"):
        return 0
    return 1 if breed.startswith("Russian_Blue") else 2
'''}, ["test_cat_label"]),
    "off_by_one_at_the_boundary": (4, "narrow", {"split_per_class": _split(check="        if len(pool) <= needed:\n")},
                                   ["test_split_counts"]),
    "off_by_one_needed_plus_one": (4, "narrow", {"split_per_class": _split(
        check="        if needed >= len(pool):  # keep one spare\n")}, ["test_split_counts"]),
    "labels_are_range_of_max": (4, "narrow", {"split_per_class": _split(loop="    for label in range(max(labels) + 1):\n")},
                                ["test_split_counts"]),
    "labels_are_range_of_count": (4, "narrow", {"split_per_class": _split(
        loop="    for label in range(len(set(labels))):\n")}, ["test_split_counts"]),
    # 6. order: "random" photos taken in file-name order
    "takes_files_in_name_order": (6, "narrow", {"split_per_class": _split(shuffle="")}, ["test_split_seeded"]),
    "shuffles_then_sorts_again": (6, "narrow", {"split_per_class": _split(
        shuffle="        rng.shuffle(pool)\n        pool.sort(key=lambda f: str(f))  # tidy\n")}, ["test_split_seeded"]),
}

#: issue-16 class of mistake (1..8) of the mistakes added for it
CLASS: dict[str, int] = add_new_mistakes(NEW_MISTAKES, MISTAKES, MUST_FAIL, KIND)

# numpy's private Generator, per-class dict of lists; cat_label as an if / elif chain
_ALTERNATIVE_NUMPY: dict[str, str] = {
    "cat_label": '''def cat_label(breed):
    if breed == "Bengal":
        return 0
    elif breed == "Russian_Blue":
        return 1
    else:
        return 2
''',
    "split_per_class": '''import numpy as np

def split_per_class(files, labels, train_per_class, val_per_class, test_per_class, seed=0):
    rng = np.random.default_rng(seed)
    by_label = {}
    for f, y in zip(files, labels):
        by_label.setdefault(y, []).append(f)
    train, val, test = [], [], []
    for y in sorted(by_label):
        pool = sorted(by_label[y])
        if len(pool) < train_per_class + val_per_class + test_per_class:
            raise ValueError(f"label {y!r}: only {len(pool)} files")
        order = rng.permutation(len(pool))
        pool = [pool[i] for i in order]
        a, b = test_per_class, test_per_class + val_per_class
        test.extend((f, y) for f in pool[:a])
        val.extend((f, y) for f in pool[a:b])
        train.extend((f, y) for f in pool[b:b + train_per_class])
    return train, val, test
''',
}

# match statement; a private random.Random drawing a sample of the whole class (a shuffled copy)
_ALTERNATIVE_SAMPLE: dict[str, str] = {
    "cat_label": '''def cat_label(breed):
    match breed:
        case "Bengal":
            return 0
        case "Russian_Blue":
            return 1
        case _:
            return 2
''',
    "split_per_class": '''import random
from collections import defaultdict

def split_per_class(files, labels, train_per_class, val_per_class, test_per_class, seed=0):
    rng = random.Random(seed)
    groups = defaultdict(list)
    for f, y in sorted(zip(files, labels), key=lambda pair: str(pair[0])):
        groups[y].append(f)
    splits = ([], [], [])
    for y in sorted(groups):
        n = test_per_class + val_per_class + train_per_class
        if n > len(groups[y]):
            raise ValueError(f"class {y}: {len(groups[y])} photos, need {n}")
        shuffled = rng.sample(groups[y], k=len(groups[y]))
        test_part = shuffled[:test_per_class]
        val_part = shuffled[test_per_class:test_per_class + val_per_class]
        train_part = shuffled[test_per_class + val_per_class:n]
        for split, part in zip(splits, (train_part, val_part, test_part)):
            split.extend((f, y) for f in part)
    return splits
''',
}

#: every correct alternative (ALTERNATIVE first); each filled notebook must score full marks
ALTERNATIVES: list[dict[str, str]] = [ALTERNATIVE, _ALTERNATIVE_NUMPY, _ALTERNATIVE_SAMPLE]
