"""Known student mistakes, one module per assignment: ``tests/mistakes/<assignment id>.py``.

Each module defines

- ``MISTAKES: dict[str, dict[str, str]]``: mistake name -> {answer-cell grade_id: the full source a
  student would write in that cell, without the ``### BEGIN/END SOLUTION`` markers};
- ``MUST_FAIL: dict[str, list[str]]``: mistake name -> grade_ids of the test cells that must score
  below their points for it.

``tests/test_course.py`` autogrades, for every mistake, the released student notebook with every answer
cell filled with the reference solution except the mistaken cell(s), and asserts that the total drops
and each cell in ``MUST_FAIL`` loses points.
"""
