"""The grading benchmark's own parts, without grading a notebook (the benchmark itself is a command:
``python -m tl_course.classroom bench``): the synthetic class, the score check and the projection."""
from __future__ import annotations

import nbformat
import pytest

from tl_course.classroom.bench import Planned, build_class, check_scores, projection
from tl_course.classroom.grouping import load_catalogue
from tl_course.classroom.notebooks import answers, is_answer, reference_answers
from tl_course.classroom.release import ROOT

ASSIGNMENT = "ch02_cat_detector"


def _answers(path) -> dict[str, str]:
    return answers(nbformat.read(path, as_version=4))


def test_synthetic_class_holds_reference_blank_and_mistakes(tmp_path):
    mistakes = sorted(load_catalogue(ASSIGNMENT).mistakes.items())
    assert len(mistakes) >= 2, "tl_course/classroom/mistakes/ch02_cat_detector.py should hold the known mistakes."
    planned = build_class(tmp_path, [ASSIGNMENT], students=4)
    assert [(p.student, p.kind, p.expect) for p in planned] == [
        ("s01", "reference", "max"), ("s02", "blank", "zero"),
        ("s03", f"mistake: {mistakes[0][0]}", "below max"), ("s04", f"mistake: {mistakes[1][0]}", "below max")]
    assert (tmp_path / "nbgrader_config.py").read_bytes() == (ROOT / "nbgrader_config.py").read_bytes()
    assert (tmp_path / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()

    reference = reference_answers(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    released = _answers(ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    assert all("BEGIN SOLUTION" not in src for src in reference.values()) and reference != released

    def handed_in(student):
        return _answers(tmp_path / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")

    assert handed_in("s01") == reference
    assert handed_in("s02") == released
    for student, (name, cells) in zip(("s03", "s04"), mistakes[:2]):
        got = handed_in(student)
        assert {gid: got[gid] for gid in cells} == cells, f"{name}: the mistake's cells are not in the notebook"
        assert {gid: src for gid, src in got.items() if gid not in cells} == \
            {gid: src for gid, src in reference.items() if gid not in cells}, f"{name}: other cells changed"
    # every other cell (tests, text, setup) is the released notebook's, unchanged
    for student in ("s01", "s03"):
        nb = nbformat.read(tmp_path / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
        rel = nbformat.read(ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
        assert [c.source for c in nb.cells if not is_answer(c)] == [c.source for c in rel.cells if not is_answer(c)]


def test_unknown_assignment_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not an assignment of this course"):
        build_class(tmp_path, ["ch99_nothing"], students=1)


def test_check_scores_names_each_mismatch():
    planned = [Planned("s01", "a", "reference", "max"), Planned("s02", "a", "blank", "zero"),
               Planned("s03", "a", "mistake: x", "below max"), Planned("s04", "a", "reference", "max")]
    assert check_scores(planned, {("s01", "a"): (10, 10), ("s02", "a"): (0, 10), ("s03", "a"): (7, 10),
                                  ("s04", "a"): (10, 10)}) == []
    wrong = check_scores(planned, {("s01", "a"): (9, 10), ("s02", "a"): (1, 10), ("s03", "a"): (10, 10)})
    assert wrong == ["s01/a (reference): 9 of 10, expected max", "s02/a (blank): 1 of 10, expected zero",
                     "s03/a (mistake: x): 10 of 10, expected below max", "s04/a (reference): not in the gradebook"]
    assert check_scores([Planned("s01", "a", "reference", "max")], {("s01", "a"): (0, 0)})  # nothing to score


def test_projection_arithmetic():
    p = projection(20.0, 1.0)  # 300 x 9 = 2700 notebooks, 16 cores / 2 threads = 8 workers
    assert (p["notebooks"], p["workers"], p["threads"]) == (2700, 8, 2)
    assert p["parallel_hours"] == pytest.approx(2700 * 20 / 8 / 3600)       # 1.875 h
    assert p["record_hours"] == pytest.approx(2700 * 1 / 3600)              # 0.75 h
    assert p["hours"] == pytest.approx(1.875)
    # when the serial recording is the slower part, it bounds the run
    assert projection(2.0, 1.0)["hours"] == pytest.approx(0.75)
    assert projection(10.0, students=30, notebooks=1, cores=4, threads=1)["hours"] == pytest.approx(30 * 10 / 4 / 3600)
