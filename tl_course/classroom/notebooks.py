"""nbgrader notebooks, read in one place: the role of every cell (from its ``metadata.nbgrader``), the
reference answers of an instructor notebook, a released notebook filled with answers, the solution markers.

nbgrader marks a cell with ``metadata.nbgrader``: ``grade_id`` (its name), ``solution`` (an answer cell the
student writes), ``grade`` with ``points`` (a graded cell: with ``solution`` a manually graded answer,
without it an autograded test cell), ``locked`` (read-only: nbgrader restores its source before grading).

>>> import nbformat
>>> cell = nbformat.v4.new_code_cell("assert f() == 1")
>>> cell.metadata["nbgrader"] = {"grade": True, "grade_id": "test_f", "locked": True, "points": 2, "solution": False}
>>> role(cell), grade_id(cell), cell_points(cell)
('test', 'test_f', 2.0)
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["SOLUTION_MARKERS", "HIDDEN_TEST_MARKERS", "nbgrader_metadata", "grade_id", "role", "is_answer",
           "is_test", "is_graded", "cell_points", "graded_points", "strip_solution_markers", "reference_answers", "answers",
           "code_layout", "fill_submission"]

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TEST_MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def nbgrader_metadata(cell: Mapping) -> Mapping:
    """A cell's ``metadata.nbgrader`` (empty for a cell nbgrader does not manage); works on an nbformat
    cell and on a cell read as plain JSON."""
    return (cell.get("metadata") or {}).get("nbgrader") or {}


def grade_id(cell: Mapping) -> str | None:
    """The cell's nbgrader name, or None."""
    return nbgrader_metadata(cell).get("grade_id")


def role(cell: Mapping) -> str:
    """``"answer"`` (a solution cell), ``"test"`` (an autograded test cell: graded code, not a solution),
    ``"locked"`` (read-only, not graded), or ``"other"`` (a cell nbgrader leaves alone)."""
    meta = nbgrader_metadata(cell)
    if meta.get("solution"):
        return "answer"
    if meta.get("grade") and cell.get("cell_type") == "code":
        return "test"
    if meta.get("locked"):
        return "locked"
    return "other"


def is_answer(cell: Mapping) -> bool:
    """Whether the student writes this cell (``solution``)."""
    return role(cell) == "answer"


def is_test(cell: Mapping) -> bool:
    """Whether this is an autograded test cell (graded code, not a solution): the cells that score."""
    return role(cell) == "test"


def is_graded(cell: Mapping) -> bool:
    """Whether nbgrader scores this cell (``grade``): a test cell, or a manually graded answer."""
    return bool(nbgrader_metadata(cell).get("grade"))


def cell_points(cell: Mapping) -> float:
    """The points a graded cell is worth (0 for any other)."""
    meta = nbgrader_metadata(cell)
    return float(meta.get("points", 0) or 0) if meta.get("grade") else 0.0


def graded_points(nb) -> dict[str, float]:
    """grade_id -> points of every autograded test cell of a notebook, in order."""
    return {grade_id(c): cell_points(c) for c in nb.cells if is_test(c)}


def strip_solution_markers(source: str) -> str:
    """An answer cell's source without its ``### BEGIN/END SOLUTION`` lines (what a student who wrote the
    reference answer would hand in).

    >>> strip_solution_markers("def f():\\n    ### BEGIN SOLUTION\\n    return 1\\n    ### END SOLUTION")
    'def f():\\n    return 1'
    """
    return "\n".join(line for line in source.splitlines() if line.strip() not in SOLUTION_MARKERS)


def answers(nb) -> dict[str, str]:
    """grade_id -> source of every answer cell of a notebook, as it stands."""
    return {grade_id(c): c.source for c in nb.cells if is_answer(c)}


def reference_answers(source: Path) -> dict[str, str]:
    """grade_id -> reference answer (markers stripped) of every answer cell of an instructor notebook."""
    import nbformat

    return {gid: strip_solution_markers(src) for gid, src in answers(nbformat.read(source, as_version=4)).items()}


def code_layout(source: Path) -> list[tuple[str, str | None, str]]:
    """``(kind, grade_id, source)`` of every code cell of an instructor notebook, in order, with kind
    ``"answer"``, ``"test"`` or ``"other"`` and the answers' markers stripped (what
    :func:`tl_course.classroom.grouping.group_mistakes` reads)."""
    import nbformat

    out = []
    for cell in nbformat.read(source, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        kind = role(cell) if role(cell) in ("answer", "test") else "other"
        out.append((kind, grade_id(cell), strip_solution_markers(cell.source)))
    return out


def fill_submission(released: Path, source: Path, replacements: Mapping[str, str] | None = None):
    """The released student notebook with every answer cell holding the reference solution (without the
    ``### BEGIN/END SOLUTION`` lines), except the cells in ``replacements`` (grade_id -> source); every
    other cell stays the released one. An unknown grade_id in ``replacements`` is a ValueError.

    >>> from tl_course.classroom.release import ROOT
    >>> nb = fill_submission(ROOT / "notebooks/ch02_cat_detector/ch02_cat_detector.ipynb",
    ...                      ROOT / "solutions/ch02_cat_detector/ch02_cat_detector.ipynb")
    >>> answers(nb) == reference_answers(ROOT / "solutions/ch02_cat_detector/ch02_cat_detector.ipynb")
    True
    """
    import nbformat

    replacements = dict(replacements or {})
    reference = reference_answers(source)
    unknown = set(replacements) - set(reference)
    if unknown:
        raise ValueError(f"These answer cells do not exist in {Path(source).name}: {sorted(unknown)}.")
    nb = nbformat.read(released, as_version=4)
    for cell in nb.cells:
        if is_answer(cell):
            cell.source = replacements.get(grade_id(cell), reference[grade_id(cell)])
    return nb
