"""A submission's grade comes from that submission only: its test cells are put right before nbgrader
grades it.

- a **deleted test cell** is restored (appended at the end, where everything it tests is defined) and
  graded: it can no longer keep the mark an earlier submission earned for it;
- a **pasted copy of a test cell** (Jupyter copies the cell's metadata, so both claim one grade id) is
  graded once: the copies become ordinary cells. nbgrader itself would empty their metadata and then
  refuse the whole notebook (``SchemaTooOldError``: 0 points for a correct notebook).

:func:`repair_cells` works on plain nbformat dicts, the same in the sandbox (phase 1) and in the grader
(phase 2), so both see the same cells. nbgrader-free and torch-free: the sandbox loads it by path.
"""
from __future__ import annotations

import copy
import re


def _grade_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _is_test(cell: dict) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def repair_cells(cells: list, tests: list) -> list[str]:
    """Put ``cells`` (a submission's, changed in place) right against ``tests`` (the assignment's test
    cells, in order): a copy of a cell with an nbgrader grade id seen before loses its nbgrader metadata;
    a test cell of ``tests`` missing from ``cells`` is appended. Returns one sentence per change.

    >>> test = {"cell_type": "code", "source": "assert f() == 1", "outputs": [], "execution_count": None,
    ...         "metadata": {"nbgrader": {"grade": True, "solution": False, "locked": True, "grade_id": "t1",
    ...                                   "points": 1, "schema_version": 3}}}
    >>> answer = {"cell_type": "code", "source": "def f(): return 1", "outputs": [], "execution_count": None,
    ...           "metadata": {"nbgrader": {"grade": False, "solution": True, "grade_id": "f", "schema_version": 3}}}
    >>> pasted = [answer, test, copy.deepcopy(test)]
    >>> repair_cells(pasted, [test]), "nbgrader" in pasted[2]["metadata"]
    (['a pasted copy of test cell t1 is graded once (the copy runs as an ordinary cell)'], False)
    >>> deleted = [answer]
    >>> repair_cells(deleted, [test]), [_grade_id(c) for c in deleted]
    (['the deleted test cell t1 was restored at the end and graded'], ['f', 't1'])
    """
    notes: list[str] = []
    seen: set[str] = set()
    for cell in cells:
        gid = _grade_id(cell)
        if gid is None:
            continue
        if gid in seen:
            cell["metadata"].pop("nbgrader", None)
            kind = "test cell" if any(_grade_id(t) == gid for t in tests) else "graded cell"
            notes.append(f"a pasted copy of {kind} {gid} is graded once (the copy runs as an ordinary cell)")
        seen.add(gid)
    for test in tests:
        gid = _grade_id(test)
        if gid not in seen:
            restored = copy.deepcopy(test)
            if "id" in restored or any("id" in c for c in cells):  # nbformat 4.5: a cell id of its own
                restored["id"] = "restored-" + re.sub(r"[^A-Za-z0-9_-]", "-", str(gid))[:50]
            restored["outputs"], restored["execution_count"] = [], None
            cells.append(restored)
            notes.append(f"the deleted test cell {gid} was restored at the end and graded")
    return notes


def test_cells(cells: list) -> list:
    """The test cells of a notebook's cells (the release notebook's: what every submission must hold), each
    a copy with its source as one string (as nbformat reads it).

    >>> test_cells([{"cell_type": "code", "source": ["assert x\\n", "assert y"], "metadata": {"nbgrader": {
    ...     "grade": True, "solution": False, "grade_id": "t"}}}])[0]["source"]
    'assert x\\nassert y'
    """
    out = []
    for cell in cells:
        if _is_test(cell):
            cell = copy.deepcopy(cell)
            if isinstance(cell.get("source"), list):
                cell["source"] = "".join(cell["source"])
            out.append(cell)
    return out
