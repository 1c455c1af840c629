"""The package's shape: the instructor's subpackage never imports torch, no module imports itself back
through another, and the grader's integrity check sees the whole package (fast: nothing runs a notebook).

The import graph is read from the source (``ast``), not by importing: every ``import tl_course...`` and
``from ... import`` naming a module of the package, relative or absolute, at module level *or inside a
function* (a function-level import is a cycle waiting for its first call), counts as an edge. Left out:
imports under ``if TYPE_CHECKING:`` (they never run) and ``importlib.import_module`` (the lazy package
face's, resolved at run time).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tl_course
from tl_course.classroom import sandbox

PACKAGE = Path(tl_course.__file__).resolve().parent


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (subpackages included)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``module`` imports (see the module docstring for what counts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from X import name`: X.name when that is a module, else X
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import tl_course.data.x` -> tl_course.data
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    """The checker itself: it finds a cycle that is there, and none where there is none."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_reads_relative_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\nfrom typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from .c import C\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..sub.c import g\n    import pkg.sub.a\n")
    (pkg / "sub" / "c.py").write_text("import os\n")
    files = module_files(pkg)
    graph = {m: imports_of(m, p, set(files)) for m, p in files.items()}
    assert graph["pkg.sub.a"] == {"pkg.sub.b"}                     # the TYPE_CHECKING import does not count
    assert graph["pkg.sub.b"] == {"pkg.sub.c", "pkg.sub.a"}
    assert find_cycle(graph) == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "tl_course.classroom.grade" in graph["tl_course.classroom.bench"]
    assert not any("tl_course.classroom.bench" in deps for module, deps in graph.items()
                   if module != "tl_course.classroom.__main__"), "only the command line imports the bench"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _fresh_python(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_classroom_is_torch_free():
    """Importing every module of tl_course.classroom (the mistake catalogue included) loads no torch."""
    out = _fresh_python(
        "import importlib, json, pkgutil, sys, tl_course.classroom as c\n"
        "names = [m.name for m in pkgutil.walk_packages(c.__path__, c.__name__ + '.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'names': names, 'torch': sorted(m for m in sys.modules if m.split('.')[0] == 'torch')}))")
    classroom = {m for m in module_files() if m.startswith("tl_course.classroom.")}
    assert set(out["names"]) == classroom, "walk_packages missed modules"
    assert {"tl_course.classroom.grade", "tl_course.classroom.sandbox", "tl_course.classroom.bench",
            "tl_course.classroom.__main__", "tl_course.classroom.mistakes.ch02_cat_detector"} <= set(out["names"])
    assert out["torch"] == [], f"importing tl_course.classroom loads {out['torch'][:5]}"


def test_import_tl_course_alone_is_torch_free():
    out = _fresh_python("import json, sys, tl_course\n"
                        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))")
    assert out == []


def test_the_checker_sees_torch_when_it_is_imported():
    """The torch-free check can fail: a module that needs torch shows up."""
    out = _fresh_python("import json, sys, tl_course\ntl_course.load_pretrained\n"
                        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))")
    assert "torch" in out


def test_integrity_spec_covers_the_subpackages_and_the_lazy_face():
    spec = sandbox.integrity_spec()
    modules = set(module_files())
    assert set(spec["defs"]) == modules
    assert "grade_class" in spec["defs"]["tl_course.classroom.grade"]
    assert "run_job" in spec["defs"]["tl_course.classroom.sandbox"]
    assert any(spec["defs"][m] for m in modules if m.startswith("tl_course.book."))
    # every public name of the lazy face is an alias of the module that defines it
    for module, names in tl_course._MODULES.items():
        for name in names:
            assert spec["aliases"]["tl_course"][name] == [f"tl_course.{module}", name], name
    assert set(spec["aliases"]["tl_course"]) >= set(tl_course.__all__)
