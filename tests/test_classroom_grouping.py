"""The mistake grouping (:mod:`tl_course.classroom.grouping`) on toy notebooks, and the catalogue loader on
the course's own: fast, no notebook runs."""
from __future__ import annotations

import pytest

from tl_course.classroom.grouping import (Catalogue, _statements, cell_dependencies, group_mistakes, load_catalogue,
                                          student_id)
from tl_course.classroom.notebooks import code_layout, reference_answers
from tl_course.classroom.release import ROOT, assignments


def test_grouping_keeps_dependent_mistakes_apart():
    """The grouping rule itself, on a toy notebook: f feeds g's test through a global, h is independent."""
    layout = [("answer", "f", "def f():\n    return 1"),
              ("other", None, "x = f()"),
              ("answer", "g", "def g(v):\n    return v + 1"),
              ("test", "test_g", "assert g(x) == 2"),
              ("answer", "h", "def h():\n    return 3"),
              ("test", "test_h", "assert h() == 3"),
              ("test", "test_f", "assert f() == 1")]
    deps = cell_dependencies([(k, g, [s]) for k, g, s in layout])
    assert deps == {"test_g": {"f", "g"}, "test_h": {"h"}, "test_f": {"f"}}
    mistakes = {"f_wrong": {"f": "def f():\n    return 0"}, "g_wrong": {"g": "def g(v):\n    return v"},
                "h_wrong": {"h": "def h():\n    return 0"}}
    must_fail = {"f_wrong": ["test_f"], "g_wrong": ["test_g"], "h_wrong": ["test_h"]}
    groups = group_mistakes(mistakes, must_fail, layout)
    assert ("f_wrong", "h_wrong") in groups and ("g_wrong",) in groups
    # a mistake that rebinds another cell's input through `global` (run before that cell's test) is kept apart
    layout = [layout[0], layout[1], layout[4], layout[2], layout[3], layout[5], layout[6]]  # h's cell before g's
    sneaky = {"h_rebinds_x": {"h": "def h():\n    global x\n    x = 5\n    return 3\nh()"}, "g_wrong": mistakes["g_wrong"]}
    must_fail = {"h_rebinds_x": ["test_h"], **must_fail}
    assert group_mistakes(sneaky, must_fail, layout) == [("h_rebinds_x",), ("g_wrong",)]
    # ... and so is one that mutates a shared object by calling a student function on it
    layout = [("other", None, "data = [1, 2]"), ("answer", "f", "def f(v):\n    return sum(v)"),
              ("other", None, "f(data)"), ("answer", "g", "def g(v):\n    return len(v)"),
              ("test", "test_g", "assert g(data) == 2"), ("test", "test_f", "assert f([1]) == 1")]
    mutating = {"f_pops": {"f": "def f(v):\n    v.pop()\n    return 1"}, "g_wrong": {"g": "def g(v):\n    return 0"}}
    must_fail = {"f_pops": ["test_f"], "g_wrong": ["test_g"]}
    assert group_mistakes(mutating, must_fail, layout) == [("f_pops",), ("g_wrong",)]
    # self-contained test cells let independent mistakes share a submission
    layout[4] = ("test", "test_g", "import math\nd = [1, 2]\nassert g(d) == 2")
    assert group_mistakes(mutating, must_fail, layout) == [("f_pops", "g_wrong")]


def test_statements_scope_reads_and_binds():
    """Parameters and locals are not notebook globals; a function body's globals are read; magics dropped."""
    [(reads, binds, unconditional, modules)] = _statements("def f(a):\n    b = a + offset\n    return len(b)")
    assert reads == {"offset"} and binds == {"f"} and unconditional and modules == {"f"}
    [(reads, binds, unconditional, _)] = _statements("%matplotlib inline\nif ok:\n    y = x")
    assert reads == {"ok", "x"} and binds == {"y"} and not unconditional
    [(reads, binds, _, modules)] = _statements("import numpy as np")
    assert binds == modules == {"np"}
    assert _statements("def broken(:\n") == []


def test_unconditional_rebinding_kills_the_old_taint():
    layout = [("answer", "f", "x = 1"), ("other", None, "x = 2"), ("test", "t", "assert x == 2")]
    assert cell_dependencies([(k, g, [s]) for k, g, s in layout]) == {"t": set()}
    layout[1] = ("other", None, "if True:\n    x = 2")        # a conditional bind keeps it
    assert cell_dependencies([(k, g, [s]) for k, g, s in layout]) == {"t": {"f"}}


def test_a_function_body_reads_globals_bound_later():
    layout = [("answer", "f", "def f():\n    return later"), ("answer", "g", "later = 3"),
              ("test", "t", "assert f() == 3")]
    assert cell_dependencies([(k, g, [s]) for k, g, s in layout]) == {"t": {"f", "g"}}


def test_mistakes_changing_the_same_cell_never_share():
    layout = [("answer", "f", "def f():\n    return 1"), ("test", "t1", "assert f() == 1"),
              ("test", "t2", "assert f() > 0")]
    mistakes = {"zero": {"f": "def f():\n    return 0"}, "minus": {"f": "def f():\n    return -1"}}
    assert group_mistakes(mistakes, {"zero": ["t1"], "minus": ["t2"]}, layout) == [("zero",), ("minus",)]


def test_student_id():
    assert student_id("a") == "mistake-a" and student_id(("a", "b")) == "mistake-a+b"


def test_load_catalogue_of_every_assignment():
    for assignment in assignments():
        catalogue = load_catalogue(assignment)
        assert isinstance(catalogue, Catalogue), assignment
        assert catalogue.mistakes and set(catalogue.mistakes) == set(catalogue.must_fail), assignment
    assert load_catalogue("ch99_nothing") is None
    assert load_catalogue("../etc") is None                     # not a module name: no catalogue, no import


@pytest.mark.parametrize("assignment", ["ch02_cat_detector", "ch05_cache_activations"])
def test_groups_of_a_real_catalogue_are_a_partition_with_disjoint_cells(assignment):
    catalogue = load_catalogue(assignment)
    source = ROOT / "solutions" / assignment / f"{assignment}.ipynb"
    layout = code_layout(source)
    assert {gid for kind, gid, _ in layout if kind == "answer"} == set(reference_answers(source))
    groups = group_mistakes(catalogue.mistakes, catalogue.must_fail, layout)
    assert sorted(m for g in groups for m in g) == sorted(catalogue.mistakes)
    assert len(groups) < len(catalogue.mistakes), "nothing shares a submission: the grouping saves nothing"
    for group in groups:
        cells = [gid for m in group for gid in catalogue.mistakes[m]]
        assert len(cells) == len(set(cells)), f"{group} change the same answer cell"
