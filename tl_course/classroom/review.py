"""The instructor's review list: submissions whose own cells touch the interpreter's machinery.

Student code and the hidden tests share one kernel, so a notebook can make a wrong answer pass by changing
what the tests rely on: profilers and tracers, ``sys.displayhook``, builtins, the import system, IPython's
input transformers and events, the course's grading module, comparison dunders. Whatever such a notebook
scores, it is listed in ``summary.md`` with the cell and what it touches, so that a person reads it.

This is a reading aid, not a wall: a name built at run time (``getattr(sys, "set" + "profile")``) is
not seen. :func:`machinery_cells` reads the cells the student wrote (every code cell but the test cells
and locked cells, whose source nbgrader restores).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

#: what a cell must not need for this course, each with a name for the list
PATTERNS: dict[str, str] = {
    "profiler/tracer": r"\b(?:sys|threading)\s*\.\s*(?:setprofile|settrace|_getframe|monitoring)\b|\bsettrace\b|\bsetprofile\b",
    "display hook": r"\bsys\s*\.\s*(?:displayhook|excepthook|__displayhook__)\b|\bdisplayhook\b",
    "builtins": r"\b__builtins__\b|\bimport\s+builtins\b|\bbuiltins\s*\.",
    "import system": r"\b__import__\b|\bimportlib\b|\bsys\s*\.\s*(?:modules|meta_path|path_hooks|path_importer_cache)\b",
    "IPython internals": r"\bget_ipython\b|\binput_transformers\w*|\bast_transformers\b|\bevents\s*\.\s*register\b|"
                         r"\bpre_run_cell\b|\bpost_run_cell\b|\bregister_magic|\bInteractiveShell\b|\bset_custom_exc\b|"
                         r"\b_?showtraceback\b|\bdisplay_pub\b|\bpublish_display_data\b|\bvnd\.tl-course\b",
    "code made at run time": r"(?<![.\w])(?:exec|eval|compile)\s*\(|\b__code__\b|\bFunctionType\b|\bCodeType\b",
    "the course's grading module": r"\btl_course\s*\.\s*grading\b|\bfrom\s+tl_course\.grading\b|\bforbidden_called\b",
    "comparison dunders": r"\bdef\s+__(?:eq|ne|lt|le|gt|ge|hash|bool|len|contains|instancecheck|subclasscheck)__\b",
    "random state": r"\brandom\s*\.\s*(?:getstate|setstate)\b|\bnp\s*\.\s*random\s*\.\s*(?:get_state|set_state)\b",
    "frames and memory": r"\bf_back\b|\bf_globals\b|\bf_locals\b|\bgc\s*\.\s*get_referr|\bctypes\b|\binspect\s*\.\s*(?:currentframe|stack)\b",
    "shadows a builtin": r"^\s*(?:str|int|float|bool|len|isinstance|type|abs|round|sum|range|print|set|list|dict|tuple)\s*=",
}
_COMPILED = {name: re.compile(pattern, re.MULTILINE) for name, pattern in PATTERNS.items()}


def _restored(cell: Mapping) -> bool:
    """A cell nbgrader puts back from the instructor's source before grading (a test or a locked cell)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return (bool(meta.get("grade")) or bool(meta.get("locked"))) and not meta.get("solution")


def machinery_cells(nb: Mapping) -> list[tuple[str, list[str]]]:
    """For each code cell the student wrote that touches the machinery: its name (the nbgrader grade id,
    else ``cell <n>``) and what it touches.

    >>> nb = {"cells": [{"cell_type": "code", "source": "import sys\\nsys.displayhook('ok')",
    ...                  "metadata": {"nbgrader": {"grade_id": "cat_label", "solution": True}}},
    ...                 {"cell_type": "code", "source": "class Any(int):\\n    def __eq__(self, o): return True",
    ...                  "metadata": {}},
    ...                 {"cell_type": "code", "source": "x = 1 + 1", "metadata": {}}]}
    >>> machinery_cells(nb)
    [('cat_label', ['display hook']), ('cell 2', ['comparison dunders'])]
    """
    found = []
    for n, cell in enumerate(nb.get("cells", []), start=1):
        if cell.get("cell_type") != "code" or _restored(cell):
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        hits = [name for name, pattern in _COMPILED.items() if pattern.search(source)]
        if hits:
            name = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {n}"
            found.append((str(name), hits))
    return found
