"""Known student mistakes, one module per assignment: ``tl_course/classroom/mistakes/<assignment id>.py``.

Each module defines

- ``MISTAKES: dict[str, dict[str, str]]``: mistake name -> {answer-cell grade_id: the full source a
  student would write in that cell, without the ``### BEGIN/END SOLUTION`` markers};
- ``MUST_FAIL: dict[str, list[str]]``: mistake name -> grade_ids of the test cells that must score
  below their points for it;
- ``KIND: dict[str, str]``: mistake name -> its class of hole, one of
  ``"leak"`` (graded on data the student could see or train on, or a rebindable global),
  ``"how"`` (a right-looking result obtained the wrong way: data used, learning rates, BN modes, weights),
  ``"forbidden"`` (a library shortcut where the text says "write it yourself"),
  ``"narrow"`` (works only for the narrow input: order, sizes, model family, dtype / device, side effects);
- ``ALTERNATIVE: dict[str, str]``: answer-cell grade_id -> a *correct* source in another style (another
  loop structure, numpy instead of torch, ...); the notebook filled with it must score 100 %;
- ``ALTERNATIVES: list[dict[str, str]]`` (optional): every correct alternative, ``ALTERNATIVE`` first; each
  filled notebook must score 100 %;
- ``CLASS: dict[str, int]`` (optional): mistake name -> its class in issue 16's list (1 side effects on what
  the caller owns, 2 selection discipline, 3 heads other than one ``nn.Linear``, 4 generality, 5 device,
  6 ties and order, 7 autograd hygiene, 8 the wrong object returned); ``book/instructors.md`` tabulates which
  check catches each.

``tests/test_course.py`` autogrades the released student notebook with every answer cell filled with the
reference solution except the mistaken cell(s), and asserts that the total drops and each cell in
``MUST_FAIL`` loses points. At least 8 mistakes per assignment. Mistakes are grouped into one submission
where a name-level data-flow analysis proves they cannot influence each other's ``MUST_FAIL`` cells
(:func:`tl_course.classroom.grouping.group_mistakes`): spreading a catalogue over several answer cells makes the run cheaper.
"""


def swap(source: str, old: str, new: str) -> str:
    """``source`` with the one occurrence of ``old`` replaced (a mistake is the reference with one piece swapped).

    >>> swap("x = f(1)", "f(1)", "g(1)")
    'x = g(1)'
    >>> swap("f(1) + f(1)", "f(1)", "g(1)")
    Traceback (most recent call last):
    ValueError: 'f(1)' occurs 2 times
    """
    if source.count(old) != 1:
        raise ValueError(f"{old!r} occurs {source.count(old)} times")
    return source.replace(old, new)


def add_new_mistakes(new: dict, mistakes: dict, must_fail: dict, kind: dict) -> dict[str, int]:
    """Add ``NEW_MISTAKES`` (name -> (issue-16 class, KIND, answer cells, MUST_FAIL)) to a catalogue's
    ``MISTAKES``, ``MUST_FAIL`` and ``KIND``; return its ``CLASS`` (name -> issue-16 class).

    >>> m, f, k = {}, {}, {}
    >>> add_new_mistakes({"typo": (4, "narrow", {"c": "x = 2"}, ["t"])}, m, f, k), m, f, k
    ({'typo': 4}, {'typo': {'c': 'x = 2'}}, {'typo': ['t']}, {'typo': 'narrow'})
    """
    for name, (_, kind_of, cells, fails) in new.items():
        mistakes[name] = cells
        must_fail[name] = fails
        kind[name] = kind_of
    return {name: cls for name, (cls, _, _, _) in new.items()}
