"""The graded notebooks, checked the way an instructor uses them: through nbgrader's Python API.

For every assignment in ``solutions/`` (``tl_course.course.assignments()``), in a throwaway course
directory with a real SQLite gradebook and the repository's ``nbgrader_config.py``:

- the instructor solution executes and every test cell passes (``nbgrader.validator.Validator``; the
  ``nbgrader validate`` command exits 0 even when tests fail, so it is not used);
- ``generate_assignment`` reproduces the committed student notebook ``notebooks/<id>/`` byte for byte;
- autograde: the reference solution scores 100 %, the untouched student notebook 0, every known
  mistake in ``tests/mistakes/<id>.py`` loses points in the test cells it names, and the correct answer in
  another style (``ALTERNATIVE``) scores 100 %; every assignment is worth 10 points and has at least
  ``MIN_MISTAKES`` mistakes, each of a known kind (``KINDS``);
- ``generate_feedback`` writes an HTML report with the score; every graded test cell of the reference
  run is silent on stderr (nbgrader scores such a cell 0) and finishes within nbgrader's 30 s default;
- the student notebook opens with the Colab badge and the install-in-Colab setup cell.

All submissions of an assignment are autograded once, in a session fixture; the tests only read the
gradebook. Timings per assignment are printed (``pytest -s``) and visible with ``--durations``.

Speed: one autograde costs a kernel start, the torch import, the model load and the whole notebook, so
mistakes are *grouped* into one submission where that stays a valid proof (:func:`group_mistakes`): two
mistakes share a submission only if they change different answer cells and neither's answer cells can
reach the test cells the other must fail, by a conservative name-level data flow over the notebook
(:func:`cell_dependencies`). Each mistake is then still proven by a failing cell only it can cause.
``TL_COURSE_GROUP_MISTAKES=0`` grades every mistake alone (slow; for checking the grouping itself).
"""
from __future__ import annotations

import ast
import builtins
import difflib
import importlib.util
import symtable
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from tl_course.course import ROOT, assignments, colab_url, repository_url

ASSIGNMENTS = assignments()
MISTAKES_DIR = Path(__file__).resolve().parent / "mistakes"
TEST_CELL_SECONDS = 30  # nbgrader's default per-cell timeout: what a course with default settings would allow
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
KINDS = {"leak": "graded on data the student could see or train on (test/val photos, rebindable globals)",
         "how": "right-looking result obtained the wrong way (data used, LRs, BN modes, weights moved/kept)",
         "forbidden": "a library shortcut where the text says 'write it yourself'",
         "narrow": "works only on the narrow input (order, sizes, model family, dtype/device, side effects)"}
MIN_MISTAKES = 8
POINTS_PER_ASSIGNMENT = 10


# ---------------------------------------------------------------------------------------------
# Known mistakes
# ---------------------------------------------------------------------------------------------
def load_mistakes(assignment_id: str) -> SimpleNamespace | None:
    """``tests/mistakes/<id>.py`` as a namespace: ``MISTAKES``, ``MUST_FAIL``, ``KIND`` and ``ALTERNATIVE``
    (the last two default to empty), or None if the file does not exist."""
    path = MISTAKES_DIR / f"{assignment_id}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"_course_mistakes_{assignment_id}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return SimpleNamespace(MISTAKES=module.MISTAKES, MUST_FAIL=module.MUST_FAIL,
                           KIND=getattr(module, "KIND", {}), ALTERNATIVE=getattr(module, "ALTERNATIVE", {}))


def student_id(mistakes: str | tuple[str, ...]) -> str:
    names = (mistakes,) if isinstance(mistakes, str) else mistakes
    return "mistake-" + "+".join(names)


# ---------------------------------------------------------------------------------------------
# Grouping mistakes into one submission where that stays a valid proof
# ---------------------------------------------------------------------------------------------
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


def notebook_layout(source: Path) -> list[tuple[str, str | None, str]]:
    """``(kind, grade_id, source)`` of every code cell of an instructor notebook (markers stripped)."""
    out = []
    for cell in nbformat.read(source, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        meta = nbgrader_meta(cell)
        kind = "answer" if meta.get("solution") else "test" if meta.get("grade") else "other"
        out.append((kind, meta.get("grade_id"), strip_solution_markers(cell.source)))
    return out


# ---------------------------------------------------------------------------------------------
# Notebook helpers
# ---------------------------------------------------------------------------------------------
def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def strip_solution_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.strip() not in SOLUTION_MARKERS)


def filled_submission(released: Path, source: Path, replacements: dict[str, str]) -> nbformat.NotebookNode:
    """The released student notebook with every answer cell holding the reference solution (markers
    stripped), except the cells in ``replacements`` (grade_id -> source)."""
    reference = {nbgrader_meta(c)["grade_id"]: strip_solution_markers(c.source)
                 for c in nbformat.read(source, as_version=4).cells if nbgrader_meta(c).get("solution")}
    nb = nbformat.read(released, as_version=4)
    unknown = set(replacements) - set(reference)
    assert not unknown, f"tests/mistakes names answer cells that do not exist: {sorted(unknown)}."
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if nbgrader_meta(cell).get("solution"):
            cell.source = replacements.get(grade_id, reference[grade_id])
    return nb


def cell_seconds(cell) -> float | None:
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(timing["shell.execute_reply"]) - parse(timing["iopub.execute_input"])).total_seconds()


# ---------------------------------------------------------------------------------------------
# The course directory and the gradebook
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory):
    """The environment the notebook kernels inherit: ci profile, the photos, a feature cache."""
    saved = dict(os.environ)
    os.environ["TL_COURSE_PROFILE"] = "ci"
    # nbgrader creates a gradebook by running the `alembic` script: find the one beside this Python
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.environ.setdefault("MPLBACKEND", "Agg")
    default_data = ROOT.parent / "shared" / "data"
    if "TL_COURSE_DATA" not in os.environ and default_data.is_dir():
        os.environ["TL_COURSE_DATA"] = str(default_data)
    if "TL_COURSE_CACHE" not in os.environ:
        os.environ["TL_COURSE_CACHE"] = str(tmp_path_factory.mktemp("tl_course_cache"))
    yield dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)


def nbgrader_config(root: Path):
    """The repository's nbgrader_config.py with every directory and the gradebook moved under ``root``."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.source_directory = "solutions"
    config.CourseDirectory.release_directory = "release"
    config.CourseDirectory.submitted_directory = "submitted"
    config.CourseDirectory.autograded_directory = "autograded"
    config.CourseDirectory.feedback_directory = "feedback"
    config.CourseDirectory.db_url = f"sqlite:///{root}/gradebook.db"
    return config


@dataclass
class Course:
    """One assignment in a throwaway nbgrader course directory."""

    assignment_id: str
    root: Path
    config: object
    api: object
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def source(self) -> Path:
        return self.root / "solutions" / self.assignment_id / f"{self.assignment_id}.ipynb"

    @property
    def released(self) -> Path:
        return self.root / "release" / self.assignment_id / f"{self.assignment_id}.ipynb"

    @property
    def db_url(self) -> str:
        return self.config.CourseDirectory.db_url

    def autograded(self, student: str) -> Path:
        return self.root / "autograded" / student / self.assignment_id / f"{self.assignment_id}.ipynb"

    def timed(self, label: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[label] = time.perf_counter() - start


# Built once per assignment and kept for the session: when the tests of two assignments interleave
# (test order, `-k`, reruns), pytest tears a parametrized session fixture down and sets
# it up again; without these the same notebooks would be autograded twice.
_COURSES: dict[str, Course] = {}
_VALIDATIONS: dict[str, dict] = {}
_GRADED: dict[str, "Graded"] = {}


@pytest.fixture(scope="session")
def course(request, tmp_path_factory, kernel_env) -> Course:
    """``solutions/<id>`` copied into a fresh course directory, ``generate_assignment`` run."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    assignment_id = request.param
    if assignment_id in _COURSES:  # pytest re-creates a parametrized session fixture when tests interleave
        yield _COURSES[assignment_id]
        return
    root = tmp_path_factory.mktemp(assignment_id)
    shutil.copytree(ROOT / "solutions" / assignment_id, root / "solutions" / assignment_id)
    config = nbgrader_config(root)
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    c = Course(assignment_id, root, config, api)
    result = c.timed("generate_assignment", api.generate_assignment, assignment_id, force=True, create=True)
    assert result["success"], f"nbgrader generate_assignment {assignment_id} failed:\n{result.get('error')}"
    _COURSES[assignment_id] = c
    yield c
    print(f"\n[{assignment_id}] seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in c.seconds.items())
          + f"; total {sum(c.seconds.values()):.1f}")


@pytest.fixture(scope="session")
def validation(course) -> dict:
    """``Validator().validate`` of the instructor solution (executes it; hidden tests included)."""
    from nbgrader.validator import Validator

    if course.assignment_id not in _VALIDATIONS:
        _VALIDATIONS[course.assignment_id] = course.timed("validate", Validator(config=course.config).validate,
                                                          str(course.source))
    return _VALIDATIONS[course.assignment_id]


@dataclass
class Graded:
    """What the gradebook says after autograding every submission of one assignment."""

    course: Course
    results: dict[str, dict]  #: student -> nbgrader API result (success, log, error)
    score: dict[str, float]
    max_score: dict[str, float]
    cells: dict[str, dict[str, tuple[float, float]]]  #: student -> grade_id -> (score, max_score)
    student_of: dict[str, str] = field(default_factory=dict)  #: mistake -> the student (submission) holding it


def group_enabled() -> bool:
    return os.environ.get("TL_COURSE_GROUP_MISTAKES", "1").strip() not in ("0", "false", "no")


@pytest.fixture(scope="session")
def graded(course) -> Graded:
    """Autograde reference, blank, the alternative answer and the known mistakes (grouped where valid)."""
    if course.assignment_id not in _GRADED:
        _GRADED[course.assignment_id] = _autograde_all(course)
    return _GRADED[course.assignment_id]


def _autograde_all(course: Course) -> Graded:
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    loaded = load_mistakes(course.assignment_id)
    mistakes = loaded.MISTAKES if loaded else {}
    submissions = {
        "reference": nbformat.read(course.source, as_version=4),
        "blank": nbformat.read(course.released, as_version=4),
    }
    if loaded and loaded.ALTERNATIVE:
        submissions["alternative"] = filled_submission(course.released, course.source, loaded.ALTERNATIVE)
    if group_enabled():
        groups = group_mistakes(mistakes, loaded.MUST_FAIL, notebook_layout(course.source)) if mistakes else []
    else:
        groups = [(name,) for name in mistakes]
    student_of = {}
    for group in groups:
        replacements = {gid: src for name in group for gid, src in mistakes[name].items()}
        submissions[student_id(group)] = filled_submission(course.released, course.source, replacements)
        student_of.update({name: student_id(group) for name in group})

    with Gradebook(course.db_url) as gb:
        for student in submissions:
            gb.update_or_create_student(student)
    results = {}
    for student, nb in submissions.items():
        folder = course.root / "submitted" / student / course.assignment_id
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{course.assignment_id}.ipynb")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)  # nbgrader's own "not in session" notices
            results[student] = course.timed(f"autograde {student}", course.api.autograde, course.assignment_id,
                                            student, force=True, create=True)

    score, max_score, cells = {}, {}, {}
    with warnings.catch_warnings(), Gradebook(course.db_url) as gb:
        warnings.simplefilter("ignore", SAWarning)
        for student in submissions:
            if not results[student]["success"]:
                continue
            submission = gb.find_submission(course.assignment_id, student)
            score[student], max_score[student] = submission.score, submission.max_score
            cells[student] = {grade.name: (grade.score, grade.max_score)
                              for notebook in submission.notebooks for grade in notebook.grades}
    summary = ", ".join(f"{s} {score[s]:g}/{max_score[s]:g}" for s in score)
    autogrades = [v for k, v in course.seconds.items() if k.startswith("autograde")]
    print(f"\n[{course.assignment_id}] scores: {summary}")
    print(f"[{course.assignment_id}] {len(mistakes)} mistakes in {len(groups)} submissions; "
          f"{len(autogrades)} autogrades, {sum(autogrades):.1f} s")
    return Graded(course, results, score, max_score, cells, student_of)


def by_assignment():
    """Parametrize a test over every assignment, sharing the session fixture ``course`` per assignment."""
    # `make test` runs `pytest -n 2 --dist loadscope`: this whole module runs in one worker, so the session
    # fixtures (course folder, gradebook, autogrades) are built once per assignment.
    return pytest.mark.parametrize("course", ASSIGNMENTS, indirect=True)


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------
def test_there_are_assignments():
    assert ASSIGNMENTS, "No assignment in solutions/<id>/<id>.ipynb."


@by_assignment()
def test_solution_passes_its_tests(validation):
    assert "type_changed" not in validation, f"Cells changed type: {validation['type_changed']}"
    assert "changed" not in validation, f"Locked cells changed: {validation['changed']}"
    failed = validation.get("failed", [])
    report = "\n\n".join(f"--- cell:\n{f['source']}\n--- error:\n{f['raw_error']}" for f in failed)
    assert not failed, f"{len(failed)} cell(s) of the instructor solution fail:\n{report}"


@by_assignment()
def test_release_matches_committed_notebooks(course):
    generated = course.root / "release" / course.assignment_id
    committed = ROOT / "notebooks" / course.assignment_id
    hint = f"notebooks/{course.assignment_id}/ is out of date with solutions/: run `make notebooks` and commit."
    assert committed.is_dir(), hint
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(generated) == files(committed), f"{hint}\nfiles differ: {files(generated)} vs {files(committed)}"
    for name in files(generated):
        new, old = (generated / name).read_bytes(), (committed / name).read_bytes()
        if new != old:
            diff = difflib.unified_diff(old.decode(errors="replace").splitlines(), new.decode(errors="replace").splitlines(),
                                        f"committed/{name}", f"generated/{name}", lineterm="", n=2)
            pytest.fail(f"{hint}\n" + "\n".join(list(diff)[:200]))


@by_assignment()
def test_student_notebook_opens_with_badge_and_setup(course):
    nb = nbformat.read(ROOT / "notebooks" / course.assignment_id / f"{course.assignment_id}.ipynb", as_version=4)
    badge, setup = nb.cells[0], nb.cells[1]
    assert badge.cell_type == "markdown" and "colab-badge.svg" in badge.source, "The first cell must be the Colab badge."
    assert f"]({colab_url(course.assignment_id)})" in badge.source, (
        f"The Colab badge must link {colab_url(course.assignment_id)}.")
    assert setup.cell_type == "code" and f"git+{repository_url()}" in setup.source, (
        f"The second cell must be the setup cell installing git+{repository_url()} (from _config.yml).")


@by_assignment()
def test_reference_scores_full_marks(graded):
    result = graded.results["reference"]
    assert result["success"], f"autograde of the reference solution failed:\n{result.get('error')}\n{result.get('log')}"
    lost = {k: v for k, v in graded.cells["reference"].items() if v[0] < v[1]}
    assert graded.score["reference"] == graded.max_score["reference"] > 0, (
        f"The reference scores {graded.score['reference']}/{graded.max_score['reference']}; cells losing points: {lost}")


@by_assignment()
def test_reference_test_cells_silent_and_fast(graded):
    nb = nbformat.read(graded.course.autograded("reference"), as_version=4)
    noisy, slow = [], []
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if not meta.get("grade") or meta.get("solution"):
            continue
        if any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in cell.get("outputs", [])):
            noisy.append(meta["grade_id"])
        seconds = cell_seconds(cell)
        if seconds is not None and seconds > TEST_CELL_SECONDS:
            slow.append(f"{meta['grade_id']} ({seconds:.0f} s)")
    assert not noisy, f"Test cells writing to stderr (nbgrader scores them 0): {noisy}."
    assert not slow, f"Test cells slower than {TEST_CELL_SECONDS} s on this machine with the ci profile: {slow}."


@by_assignment()
def test_blank_notebook_scores_zero(graded):
    result = graded.results["blank"]
    assert result["success"], f"autograde of the blank student notebook crashed:\n{result.get('error')}\n{result.get('log')}"
    earned = {k: v for k, v in graded.cells["blank"].items() if v[0] > 0}
    assert graded.score["blank"] == 0, f"The untouched student notebook scores {graded.score['blank']}: {earned}"


@by_assignment()
def test_feedback_shows_the_score(graded):
    course = graded.course
    result = course.timed("generate_feedback", course.api.generate_feedback, course.assignment_id, "reference", force=True)
    assert result["success"], f"generate_feedback failed:\n{result.get('error')}"
    html = course.root / "feedback" / "reference" / course.assignment_id / f"{course.assignment_id}.html"
    assert html.exists(), f"No feedback file {html}."
    text = html.read_text()
    score = f"{graded.score['reference']:g}"
    assert score in text and f"{graded.max_score['reference']:g}" in text, f"The feedback does not show the score {score}."


@by_assignment()
def test_assignment_has_known_mistakes(course):
    loaded = load_mistakes(course.assignment_id)
    assert loaded, (f"tests/mistakes/{course.assignment_id}.py is missing (MISTAKES, MUST_FAIL, KIND, ALTERNATIVE; "
                    "see tests/mistakes/__init__.py).")
    mistakes, must_fail = loaded.MISTAKES, loaded.MUST_FAIL
    nb = nbformat.read(course.source, as_version=4)
    answer_cells = {nbgrader_meta(c)["grade_id"] for c in nb.cells if nbgrader_meta(c).get("solution")}
    test_cells = {nbgrader_meta(c)["grade_id"] for c in nb.cells
                  if nbgrader_meta(c).get("grade") and not nbgrader_meta(c).get("solution")}
    assert mistakes and set(mistakes) == set(must_fail), "MISTAKES and MUST_FAIL must name the same mistakes."
    assert len(mistakes) >= MIN_MISTAKES, f"{len(mistakes)} mistakes in the catalogue; at least {MIN_MISTAKES} are needed."
    assert set(loaded.KIND) == set(mistakes), (
        f"KIND must give every mistake a kind; missing {sorted(set(mistakes) - set(loaded.KIND))}, "
        f"unknown {sorted(set(loaded.KIND) - set(mistakes))}.")
    bad = {m: k for m, k in loaded.KIND.items() if k not in KINDS}
    assert not bad, f"Unknown kinds {bad}: use one of {sorted(KINDS)}."
    for name, replacements in mistakes.items():
        assert replacements and set(replacements) <= answer_cells, f"{name}: unknown answer cells {set(replacements) - answer_cells}."
        assert must_fail[name] and set(must_fail[name]) <= test_cells, f"{name}: unknown test cells {set(must_fail[name]) - test_cells}."
        for source in replacements.values():
            assert not any(m in source for m in SOLUTION_MARKERS), f"{name}: leave out the BEGIN/END SOLUTION markers."
    assert loaded.ALTERNATIVE and set(loaded.ALTERNATIVE) <= answer_cells, (
        f"ALTERNATIVE must hold a correct answer in another style for at least one answer cell of {sorted(answer_cells)}.")
    reference = {nbgrader_meta(c)["grade_id"]: strip_solution_markers(c.source) for c in nb.cells
                 if nbgrader_meta(c).get("solution")}
    same = [g for g, src in loaded.ALTERNATIVE.items() if src.strip() == reference[g].strip()]
    assert not same, f"ALTERNATIVE repeats the reference in {same}: write it in another style."


@by_assignment()
def test_assignment_is_worth_ten_points(course):
    nb = nbformat.read(course.source, as_version=4)
    points = {nbgrader_meta(c)["grade_id"]: nbgrader_meta(c).get("points", 0) for c in nb.cells
              if nbgrader_meta(c).get("grade")}
    assert sum(points.values()) == POINTS_PER_ASSIGNMENT, (
        f"{course.assignment_id} is worth {sum(points.values())} points, not {POINTS_PER_ASSIGNMENT}: {points}.")


@by_assignment()
def test_alternative_answer_scores_full_marks(graded):
    if "alternative" not in graded.results:
        pytest.skip(f"no ALTERNATIVE in tests/mistakes/{graded.course.assignment_id}.py "
                    "(test_assignment_has_known_mistakes fails)")
    result = graded.results["alternative"]
    assert result["success"], f"autograde of the alternative answer failed:\n{result.get('error')}"
    lost = {k: v for k, v in graded.cells["alternative"].items() if v[0] < v[1]}
    assert not lost and graded.score["alternative"] == graded.max_score["alternative"], (
        f"A correct answer in another style scores {graded.score['alternative']:g}/{graded.max_score['alternative']:g}; "
        f"cells losing points: {lost}")


@by_assignment()
def test_known_mistakes_lose_points(graded):
    loaded = load_mistakes(graded.course.assignment_id)
    if not loaded:
        pytest.skip(f"no tests/mistakes/{graded.course.assignment_id}.py (test_assignment_has_known_mistakes fails)")
    problems = []
    for mistake in loaded.MISTAKES:
        student = graded.student_of[mistake]
        result = graded.results[student]
        if not result["success"]:
            problems.append(f"{mistake}: autograde crashed:\n{result.get('error')}")
            continue
        cells = graded.cells[student]
        if graded.score[student] >= graded.max_score[student]:
            problems.append(f"{mistake}: scores full marks {graded.score[student]:g}/{graded.max_score[student]:g}")
        survived = [g for g in loaded.MUST_FAIL.get(mistake, []) if cells[g][0] >= cells[g][1]]
        if survived:
            problems.append(f"{mistake}: keeps full points in {survived} (submission {student}; cells: {cells})")
    assert not problems, f"{len(problems)} known mistake(s) not caught by the tests:\n" + "\n".join(problems)


def test_grouping_keeps_dependent_mistakes_apart():
    """The grouping rule itself, on a toy notebook: f feeds g's test through a global, h is independent."""
    layout = [("answer", "f", "def f():\n    return 1"),
              ("other", None, "x = f()"),
              ("answer", "g", "def g(v):\n    return v + 1"),
              ("test", "test_g", "assert g(x) == 2"),
              ("answer", "h", "def h():\n    return 3"),
              ("test", "test_h", "assert h() == 3"),
              ("test", "test_f", "assert f() == 1")]
    deps = cell_dependencies([(k, g, [s]) for k, g, s in layout])
    assert deps == {"test_g": {"f", "g"}, "test_h": {"h"}, "test_f": {"f"}}
    mistakes = {"f_wrong": {"f": "def f():\n    return 0"}, "g_wrong": {"g": "def g(v):\n    return v"},
                "h_wrong": {"h": "def h():\n    return 0"}}
    must_fail = {"f_wrong": ["test_f"], "g_wrong": ["test_g"], "h_wrong": ["test_h"]}
    groups = group_mistakes(mistakes, must_fail, layout)
    assert ("f_wrong", "h_wrong") in groups and ("g_wrong",) in groups
    # a mistake that rebinds another cell's input through `global` (run before that cell's test) is kept apart
    layout = [layout[0], layout[1], layout[4], layout[2], layout[3], layout[5], layout[6]]  # h's cell before g's
    sneaky = {"h_rebinds_x": {"h": "def h():\n    global x\n    x = 5\n    return 3\nh()"}, "g_wrong": mistakes["g_wrong"]}
    must_fail = {"h_rebinds_x": ["test_h"], **must_fail}
    assert group_mistakes(sneaky, must_fail, layout) == [("h_rebinds_x",), ("g_wrong",)]
    # ... and so is one that mutates a shared object by calling a student function on it
    layout = [("other", None, "data = [1, 2]"), ("answer", "f", "def f(v):\n    return sum(v)"),
              ("other", None, "f(data)"), ("answer", "g", "def g(v):\n    return len(v)"),
              ("test", "test_g", "assert g(data) == 2"), ("test", "test_f", "assert f([1]) == 1")]
    mutating = {"f_pops": {"f": "def f(v):\n    v.pop()\n    return 1"}, "g_wrong": {"g": "def g(v):\n    return 0"}}
    must_fail = {"f_pops": ["test_f"], "g_wrong": ["test_g"]}
    assert group_mistakes(mutating, must_fail, layout) == [("f_pops",), ("g_wrong",)]
    # self-contained test cells let independent mistakes share a submission
    layout[4] = ("test", "test_g", "import math\nd = [1, 2]\nassert g(d) == 2")
    assert group_mistakes(mutating, must_fail, layout) == [("f_pops", "g_wrong")]
