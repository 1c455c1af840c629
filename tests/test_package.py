"""The package as installed and imported: ``import tl_course`` is cheap (no torch), every public name
resolves, the packaging declares what each home needs, and a student's notebook needs only the core."""
from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import tl_course

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# ---------------------------------------------------------------------------------------------
# The lazy face (PEP 562)
# ---------------------------------------------------------------------------------------------
def test_import_tl_course_loads_no_torch():
    loaded = json.loads(_run("import sys, json, tl_course; "
                             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
                             "{'torch', 'torchvision', 'timm', 'numpy', 'PIL'} or m.startswith('tl_course.'))))"))
    assert loaded == ["tl_course.paths"] or loaded == [], loaded
    # and the first use of a name loads just what it needs
    assert _run("import sys, tl_course; tl_course.get_profile; print('torch' in sys.modules, "
                "'tl_course.models' in sys.modules)") == "True False"


def test_every_public_name_resolves_to_its_module():
    for module, names in tl_course._MODULES.items():
        mod = importlib.import_module(f"tl_course.{module}")
        for name in names:
            assert getattr(tl_course, name) is getattr(mod, name), f"tl_course.{name}"
    assert sorted(tl_course.__all__) == sorted(n for names in tl_course._MODULES.values() for n in names)
    assert len(set(tl_course.__all__)) == len(tl_course.__all__)  # no name exported by two modules


def test_dir_lists_the_public_names_and_submodules():
    listed = dir(tl_course)
    assert set(tl_course.__all__) <= set(listed)
    assert {"families", "models", "freezing", "book", "classroom"} <= set(listed)
    assert listed == sorted(listed)


def test_submodules_are_attributes():
    assert tl_course.families is importlib.import_module("tl_course.families")
    assert tl_course.classroom is importlib.import_module("tl_course.classroom")


def test_an_unknown_attribute_is_an_attribute_error_in_one_sentence():
    with pytest.raises(AttributeError) as info:
        tl_course.load_pretraind  # noqa: B018 - a typo
    message = str(info.value)
    assert "'load_pretraind'" in message and "tl_course.__all__" in message and "\n" not in message
    assert not hasattr(tl_course, "FrozenBatchNorm2d")  # renamed EvalModeBatchNorm2d, no alias left behind


def test_modules_stays_a_literal_the_grader_can_parse():
    # the sandbox's integrity check reads _MODULES from the source with ast.literal_eval, importing nothing
    tree = ast.parse((ROOT / "tl_course" / "__init__.py").read_text(encoding="utf-8"))
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_MODULES"]
    assert ast.literal_eval(node.value) == tl_course._MODULES


# ---------------------------------------------------------------------------------------------
# Packaging
# ---------------------------------------------------------------------------------------------
def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def test_requires_python_matches_the_code():
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert "3.11" in spec and "3.10" not in spec  # training.fit uses BaseException.add_note (3.11)


def test_extras_keep_the_book_and_the_classroom_out_of_the_core():
    core = _names(PYPROJECT["project"]["dependencies"])
    extras = {name: _names(reqs) for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    assert {"book", "classroom"} <= set(extras)
    assert "jupyter-book" in extras["book"] and "matplotlib" in core  # the notebooks draw: matplotlib is core
    assert {"nbgrader", "dask", "psycopg", "psutil"} <= extras["classroom"]
    assert not core & (extras["book"] | extras["classroom"]), core & (extras["book"] | extras["classroom"])
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert "-e .[book,classroom]" in requirements.splitlines()  # make and CI install everything


def _third_party_imports(source: str) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return {m for m in tops if m not in sys.stdlib_module_names and m != "tl_course"}


def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            lines += [ln for ln in "".join(cell["source"]).splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def test_a_students_notebook_needs_only_the_core_dependencies():
    """What a notebook imports, and what the tl_course modules it imports load, is installed by the core
    (``pip install tl_course``, Colab's set-up cell): never an extra."""
    core = _names(PYPROJECT["project"]["dependencies"])
    distributions = {m: {d.lower().replace("_", "-") for d in ds} for m, ds in packages_distributions().items()}
    modules: set[str] = set()
    student_modules = {p for p in (ROOT / "tl_course").glob("*.py")}  # the student runtime
    for notebook in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        code = _notebook_code(notebook)
        modules |= _third_party_imports(code)
        for node in ast.walk(ast.parse(code)):  # the course's subpackage modules a notebook imports
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tl_course."):
                student_modules.add(ROOT / (node.module.replace(".", "/") + ".py"))
    assert ROOT / "tl_course/book/experiments.py" in student_modules  # chapter 8's notebook uses it
    for path in student_modules:
        modules |= _third_party_imports(path.read_text(encoding="utf-8"))
    missing = {m: distributions.get(m) for m in modules if not distributions.get(m, set()) & core}
    assert not missing, f"imported by a notebook or the student runtime but not a core dependency: {missing}"


def test_the_wheel_holds_every_subpackage(tmp_path):
    """A non-editable install (Colab's ``pip install git+...``) gets tl_course.book and tl_course.classroom too."""
    from setuptools import find_packages

    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    found = set(find_packages(str(ROOT), include=include))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tl_course").rglob("__init__.py")}
    assert found == on_disk and {"tl_course.book", "tl_course.classroom", "tl_course.classroom.mistakes"} <= found
