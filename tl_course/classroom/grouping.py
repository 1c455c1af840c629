r"""Which known mistakes may share one graded submission, and the mistake catalogue they come from.

Grading a notebook costs a kernel start, the torch import, the model load and the whole notebook, so the
course's tests and the grading bench hand in several known mistakes in one submission where that stays a
valid proof (:func:`group_mistakes`): two mistakes share a submission only if they change different
answer cells and neither's answer cells can reach the test cells the other must fail, by a conservative
name-level data flow over the notebook (:func:`cell_dependencies`). Each mistake is then still proven by
a failing cell only it can cause.

The catalogue: ``tl_course/classroom/mistakes/<assignment>.py`` (see that package's docstring), read by
:func:`load_catalogue`.

>>> layout = [("answer", "f", "def f():\n    return 1"), ("test", "test_f", "assert f() == 1"),
...           ("answer", "g", "def g():\n    return 2"), ("test", "test_g", "assert g() == 2")]
>>> cell_dependencies([(kind, gid, [src]) for kind, gid, src in layout])
{'test_f': {'f'}, 'test_g': {'g'}}
>>> group_mistakes({"f0": {"f": "def f():\n    return 0"}, "g0": {"g": "def g():\n    return 0"}},
...                {"f0": ["test_f"], "g0": ["test_g"]}, layout)
[('f0', 'g0')]
"""
from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import symtable
from dataclasses import dataclass, field

__all__ = ["Catalogue", "load_catalogue", "student_id", "cell_dependencies", "group_mistakes"]


@dataclass(frozen=True)
class Catalogue:
    """One assignment's known mistakes (``tl_course/classroom/mistakes/<assignment>.py``): ``mistakes``
    (name -> {answer grade_id: source}), ``must_fail`` (name -> test grade_ids that must lose points),
    ``kind`` (name -> "leak", "how", "forbidden" or "narrow") and ``alternative`` (answer grade_id -> a
    correct source in another style)."""

    mistakes: dict[str, dict[str, str]]
    must_fail: dict[str, list[str]]
    kind: dict[str, str] = field(default_factory=dict)
    alternative: dict[str, str] = field(default_factory=dict)


def load_catalogue(assignment: str) -> Catalogue | None:
    """The mistake catalogue of an assignment, or None when it has none.

    >>> catalogue = load_catalogue("ch02_cat_detector")
    >>> len(catalogue.mistakes) >= 8 and set(catalogue.mistakes) == set(catalogue.must_fail)
    True
    >>> load_catalogue("ch99_nothing") is None
    True
    """
    name = f"{__package__}.mistakes.{assignment}"
    if not assignment.isidentifier() or importlib.util.find_spec(name) is None:
        return None
    module = importlib.import_module(name)
    return Catalogue(mistakes=dict(module.MISTAKES), must_fail=dict(module.MUST_FAIL),
                     kind=dict(getattr(module, "KIND", {})), alternative=dict(getattr(module, "ALTERNATIVE", {})))


def student_id(mistakes: str | tuple[str, ...]) -> str:
    """The student id of the submission holding these mistakes.

    >>> student_id(("f0", "g0"))
    'mistake-f0+g0'
    """
    names = (mistakes,) if isinstance(mistakes, str) else mistakes
    return "mistake-" + "+".join(names)


def _statements(source: str) -> list[tuple[set[str], set[str], bool, set[str]]]:
    """Per top-level statement of a cell: (global names read, names bound, whether the bind is
    unconditional, names bound to a module, function or class). Scoping comes from ``symtable``, so a function's
    parameters and locals are not mistaken for notebook globals; IPython magics and shell lines are dropped."""
    text = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        src = ast.unparse(node)
        table = symtable.symtable(src, "<cell>", "exec")
        reads, binds = set(), set()
        for sym in table.get_symbols():
            if sym.is_referenced():
                reads.add(sym.get_name())
            if sym.is_assigned() or sym.is_imported():
                binds.add(sym.get_name())
        stack = list(table.get_children())
        while stack:  # nested scopes: implicit globals they read, names they declare global and assign
            t = stack.pop()
            stack.extend(t.get_children())
            for sym in t.get_symbols():
                if (sym.is_global() or sym.is_free()) and sym.is_referenced():
                    reads.add(sym.get_name())
                if sym.is_declared_global() and sym.is_assigned():
                    binds.add(sym.get_name())
        unconditional = isinstance(node, (ast.Assign, ast.AnnAssign, ast.FunctionDef, ast.AsyncFunctionDef,
                                          ast.ClassDef, ast.Import, ast.ImportFrom))
        if isinstance(node, ast.For):
            # the body sees the loop target freshly bound, never its old value
            targets = {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
            in_iter = {n.id for n in ast.walk(node.iter) if isinstance(n, ast.Name)}
            reads = reads - (targets - in_iter)
            if isinstance(node.iter, (ast.Tuple, ast.List)) and node.iter.elts:
                # a loop over a non-empty literal always rebinds its target: kill those names' old taint
                out.append((reads - set(dir(builtins)), targets, True, set()))
                binds = binds - targets
        # names that hold modules, functions or classes: passing an object to a function changes the object,
        # not the function, so these are never tainted by being read
        modules = binds if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                                             ast.ClassDef)) else set()
        out.append((reads - set(dir(builtins)), binds, unconditional, modules))
    return out


def cell_dependencies(cells: list[tuple[str, str | None, list[str]]]) -> dict[str, set[str]]:
    """For every graded test cell, the answer cells whose code can influence it.

    ``cells``: the code cells in notebook order, ``(kind, grade_id, sources)`` with kind ``"answer"``,
    ``"test"`` or ``"other"``; an answer cell lists every source it may hold (reference and mistakes).
    Conservative data flow by name, statement by statement: a statement depends on the answer cells that
    tainted any global it reads (a function's body included); it taints the names it binds (an unconditional
    top-level binding replaces the old taint) *and* every name it reads except names of modules, functions
    and classes, because calling a student function on an object may change that object. Passes repeat until nothing changes,
    because a function body reads globals bound later. Not covered: a student monkey-patching a module (no
    catalogue mistake does).
    """
    parsed, modules = [], set()
    for kind, grade_id, sources in cells:
        statements = [st for src in sources for st in _statements(src)]
        if kind == "answer" and len(sources) > 1:  # several possible sources: no kill, union everything
            statements = [(set().union(*(s[0] for s in statements)) if statements else set(),
                           set().union(*(s[1] for s in statements)) if statements else set(), False,
                           set().union(*(s[3] for s in statements)) if statements else set())]
        modules |= set().union(*(st[3] for st in statements)) if statements else set()
        parsed.append((kind, grade_id, statements))
    taint: dict[str, frozenset[str]] = {}
    deps: dict[str, set[str]] = {}
    for _ in range(10):
        before = dict(taint)
        for kind, grade_id, statements in parsed:
            cell_deps = {grade_id} if kind == "answer" else set()
            for reads, binds, unconditional, _mods in statements or [(set(), set(), False, set())]:
                mine = set(cell_deps)
                for n in reads:
                    mine |= taint.get(n, frozenset())
                cell_deps |= mine
                for n in binds:
                    taint[n] = frozenset(mine) if unconditional else taint.get(n, frozenset()) | mine
                if mine:
                    for n in reads - binds - modules:
                        taint[n] = taint.get(n, frozenset()) | mine
            if kind == "test":
                deps[grade_id] = cell_deps
        if taint == before:
            break
    return deps


def group_mistakes(mistakes: dict[str, dict[str, str]], must_fail: dict[str, list[str]],
                   layout: list[tuple[str, str | None, str]]) -> list[tuple[str, ...]]:
    """Mistakes packed into submissions (greedy, in catalogue order) such that, within one submission, the
    mistakes change disjoint answer cells and no mistake's answer cells reach a test cell another must fail.

    ``layout``: ``(kind, grade_id, reference source)`` of every code cell, in order (see
    :func:`cell_dependencies`).
    """
    groups: list[list[str]] = []
    for name in mistakes:
        for group in groups:
            members = group + [name]
            used = [set(mistakes[m]) for m in members]
            if sum(map(len, used)) != len(set().union(*used)):
                continue
            cells = [(kind, gid, [src] + [mistakes[m][gid] for m in members if kind == "answer" and gid in mistakes[m]])
                     for kind, gid, src in layout]
            deps = cell_dependencies(cells)
            if all(not (set(mistakes[a]) & deps.get(t, set()))
                   for a in members for b in members if a != b for t in must_fail[b]):
                group.append(name)
                break
        else:
            groups.append([name])
    return [tuple(g) for g in groups]
