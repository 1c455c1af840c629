"""Instructor tooling: write nbgrader notebooks, release them, read the repository URL.

The instructor notebooks in ``solutions/<id>/<id>.ipynb`` are the nbgrader *source*; the student
notebooks in ``notebooks/<id>/<id>.ipynb`` are the *release*, produced by ``nbgrader
generate_assignment`` (``make notebooks`` or ``python -m tl_course.classroom release``), never by hand.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import nbformat

from . import notebooks
from .gradebook import nbgrader_tools_on_path

__all__ = ["ROOT", "assignments", "repository_url", "release_version", "install_spec", "colab_url", "md", "code",
           "solution", "tests", "readonly", "setup_cells", "sync_setup_cells", "write_notebook", "release"]

ROOT = Path(__file__).resolve().parents[2]


def assignments(root: Path = ROOT) -> list[str]:
    """Assignment ids: one folder per chapter in ``solutions/``.

    >>> assignments()[:1]
    ['ch01_pretrained_weights']
    """
    return sorted(p.name for p in (root / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())


def repository_url(root: Path = ROOT) -> str:
    """The course repository URL, from its one home: ``repository.url`` in ``_config.yml``.

    >>> repository_url().startswith("https://")
    True
    """
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def release_version(root: Path = ROOT) -> str:
    """The course version a release pins: ``[project] version`` of ``pyproject.toml``.

    >>> release_version()
    '0.1.0'
    """
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    version = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M) if project else None
    if not version:
        raise ValueError(f"{root / 'pyproject.toml'} has no [project] version = \"...\": the release pins it.")
    return version.group(1)


def install_spec(root: Path = ROOT) -> str:
    """What a student notebook's setup cell gives ``pip install`` in Colab: the course package from the
    repository (``_config.yml``) at the tag ``v<version>`` of the release (:func:`release_version`).

    Pinned to a tag, not a branch: a notebook released last term keeps installing the package it was written
    for, whatever ``main`` holds now. Pinned to a tag, not a commit: the tag is known before the commit that
    carries the release exists, so regenerating the notebooks gives the same bytes (the release is reproducible).

    >>> install_spec() == f"tl_course @ git+{repository_url()}@v{release_version()}"
    True
    """
    return f"tl_course @ git+{repository_url(root)}@v{release_version(root)}"


def colab_url(assignment_id: str, root: Path = ROOT) -> str:
    """Colab link of a student notebook (Colab opens it straight from the repository).

    >>> colab_url("ch01_pretrained_weights").endswith("/blob/main/notebooks/ch01_pretrained_weights/ch01_pretrained_weights.ipynb")
    True
    """
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    branch = config["repository"].get("branch", "main")
    path = re.sub(r"^https://github.com/", "", repository_url(root))
    return f"https://colab.research.google.com/github/{path}/blob/{branch}/notebooks/{assignment_id}/{assignment_id}.ipynb"


def _meta(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def md(text: str, grade_id: str | None = None) -> nbformat.NotebookNode:
    """A markdown cell (locked when given a ``grade_id``)."""
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    if grade_id:
        cell.metadata.update(_meta(grade_id, grade=False, solution=False, locked=True))
    return cell


def code(text: str) -> nbformat.NotebookNode:
    """An ordinary code cell (students may edit it)."""
    return nbformat.v4.new_code_cell(text.strip("\n"))


def readonly(grade_id: str, text: str) -> nbformat.NotebookNode:
    """A locked code cell: nbgrader restores its source before grading."""
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    cell.metadata.update(_meta(grade_id, grade=False, solution=False, locked=True))
    return cell


def solution(grade_id: str, text: str) -> nbformat.NotebookNode:
    """An answer cell: the part between ``### BEGIN SOLUTION`` / ``### END SOLUTION`` is cleared on release."""
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    cell.metadata.update(_meta(grade_id, grade=False, solution=True, locked=False))
    return cell


def tests(grade_id: str, points: int, text: str) -> nbformat.NotebookNode:
    """A locked, graded test cell worth ``points`` (may hold ``### BEGIN HIDDEN TESTS`` blocks)."""
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    cell.metadata.update(_meta(grade_id, grade=True, solution=False, locked=True, points=points))
    return cell


def setup_cells(assignment_id: str, root: Path = ROOT) -> list[nbformat.NotebookNode]:
    """The first cells of every student notebook: Open-in-Colab badge, install-in-Colab setup, device check.

    The badge opens the notebook on the repository's branch; the setup cell installs :func:`install_spec`
    (the tagged release) and prints the profile the notebook runs, which is the one to grade it with.

    >>> badge, setup = setup_cells("ch01_pretrained_weights")
    >>> f'"{install_spec()}"' in setup.source and colab_url("ch01_pretrained_weights") in badge.source
    True
    """
    badge = md(f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(assignment_id, root)})",
               grade_id="colab_badge")
    setup = readonly("setup", f'''
# Setup. In Colab this installs the course package at the version this notebook was released with (a minute);
# anywhere else it does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{install_spec(root)}"], check=True)

import warnings
warnings.filterwarnings("ignore")  # keep grading output clean: nbgrader scores a cell that writes to stderr 0

import torch
import tl_course
from tl_course import get_device, get_profile

device = get_device()          # CUDA > MPS > CPU
profile = get_profile()        # TL_COURSE_PROFILE = ci | cpu | gpu (default: gpu if CUDA, else cpu)
print(f"tl_course {{tl_course.__version__}}, torch {{torch.__version__}}, device {{device}}, profile {{profile.name}}")
''')
    return [badge, setup]


def sync_setup_cells(assignment_id: str, root: Path = ROOT) -> bool:
    """Rewrite the badge and setup cells of ``solutions/<id>/<id>.ipynb`` from :func:`setup_cells`, so they follow
    ``_config.yml`` and ``pyproject.toml``. Only those two cells (found by grade id) change; the file is written
    only when they differ. Returns whether it was written. :func:`release` calls it first.

    >>> import shutil, tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> for name in ("_config.yml", "pyproject.toml"):
    ...     _ = shutil.copy(ROOT / name, tmp / name)
    >>> _ = shutil.copytree(ROOT / "solutions" / "ch01_pretrained_weights", tmp / "solutions" / "ch01_pretrained_weights")
    >>> sync_setup_cells("ch01_pretrained_weights", tmp)      # the committed cells are up to date
    False
    """
    path = root / "solutions" / assignment_id / f"{assignment_id}.ipynb"
    nb = nbformat.read(path, as_version=4)
    fresh = {cell.metadata["nbgrader"]["grade_id"]: cell for cell in setup_cells(assignment_id, root)}
    changed = False
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in fresh and cell.source != fresh[grade_id].source:
            cell.source = fresh[grade_id].source
            changed = True
    missing = set(fresh) - {cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") for cell in nb.cells}
    if missing:
        raise ValueError(f"{path} has no cell with grade id {', '.join(sorted(missing))}: every notebook starts "
                         "with setup_cells() (the Colab badge, then the setup cell).")
    if changed:
        nbformat.write(nb, path)
    return changed


def write_notebook(path: str | Path, cells: list[nbformat.NotebookNode]) -> Path:
    """Write an nbgrader source notebook with a Python 3 kernel spec.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_notebook(Path(tmp) / "ch01" / "ch01.ipynb", [md("# Title"), code("1 + 1")]).name
    'ch01.ipynb'
    """
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


_EXCEPTION_LINE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Invalid\w*)): (.+)$")


def _source_problems(folder: Path) -> list[str]:
    """What is wrong in an assignment's source notebooks, in words: invalid JSON, unbalanced solution
    markers, duplicate grade ids (the usual reasons generate_assignment fails)."""
    import json

    problems = []
    for path in sorted(folder.glob("*.ipynb")):
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
            problems.append(f"{path.name} is not valid JSON ({err})")
            continue
        seen: dict[str, int] = {}
        for index, cell in enumerate(nb.get("cells", [])):
            source = "".join(cell.get("source", []))
            name = notebooks.grade_id(cell)
            where = f"{path.name} cell {index}" + (f" ({name})" if name else "")
            for begin, end in (notebooks.SOLUTION_MARKERS, notebooks.HIDDEN_TEST_MARKERS):
                if source.count(begin) != source.count(end):
                    problems.append(f"{where} has {source.count(begin)} '{begin}' but {source.count(end)} '{end}'")
            if name:
                if name in seen:
                    problems.append(f"{path.name} uses grade id {name!r} twice (cells {seen[name]} and {index})")
                seen.setdefault(name, index)
    return problems


def _failure_cause(result: dict, folder: Path) -> str:
    """nbgrader hides the cause in its captured log ("see the above traceback"): bring it forward."""
    causes = []
    for text in (result.get("log", ""), result.get("error", "")):
        for line in text.splitlines():
            m = _EXCEPTION_LINE.match(line)
            if m and "NbGraderException" not in m.group(1):
                causes.append(f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}")
    found = _source_problems(folder)
    parts = found + [c for c in dict.fromkeys(causes) if c not in found]
    if not parts:
        return "no cause was reported; nbgrader said:\n" + (result.get("log") or result.get("error") or "")
    return "; ".join(p.rstrip(". ") for p in parts[:3]) + "."


def release(assignment_id: str, root: Path = ROOT, release_dir: Path | None = None) -> Path:
    """Run ``nbgrader generate_assignment`` for one chapter; the student notebook lands in
    ``release_dir`` (default ``notebooks/``). The gradebook used is a throwaway one.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sorted(p.name for p in release("ch02_cat_detector", release_dir=Path(tmp)).iterdir())
    ['ch02_cat_detector.ipynb']
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    release_dir = Path(release_dir or root / "notebooks")
    problems = _source_problems(root / "solutions" / assignment_id)
    if problems:  # named before anything reads or rewrites the notebook
        raise RuntimeError(f"nbgrader generate_assignment {assignment_id} cannot run: "
                           + "; ".join(p.rstrip(". ") for p in problems[:3]) + ".")
    for name in ("_config.yml", "pyproject.toml"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root} has no {name}: a release reads the repository URL and the version "
                                    "from the course root's _config.yml and pyproject.toml.")
    sync_setup_cells(assignment_id, root)  # the badge and the install follow _config.yml and the version
    # ``make notebooks`` calls .venv/bin/python directly: nbgrader's `alembic` must still be found
    nbgrader_tools_on_path()
    with tempfile.TemporaryDirectory() as tmp:
        config = Config()
        config.CourseDirectory.root = str(root)
        config.CourseDirectory.source_directory = "solutions"
        config.CourseDirectory.release_directory = str(Path(tmp) / "release")
        config.CourseDirectory.db_url = f"sqlite:///{tmp}/gradebook.db"
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        result = api.generate_assignment(assignment_id, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {assignment_id} failed: "
                               f"{_failure_cause(result, root / 'solutions' / assignment_id)}")
        target = release_dir / assignment_id
        # the release's own files are replaced; anything else an instructor keeps in that folder stays
        shutil.copytree(Path(tmp) / "release" / assignment_id, target, dirs_exist_ok=True)
    return target
