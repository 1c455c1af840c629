"""The graded notebooks, checked the way an instructor uses them: through nbgrader's Python API.

For every assignment in ``solutions/`` (``tl_course.course.assignments()``), in a throwaway course
directory with a real SQLite gradebook and the repository's ``nbgrader_config.py``:

- the instructor solution executes and every test cell passes (``nbgrader.validator.Validator``; the
  ``nbgrader validate`` command exits 0 even when tests fail, so it is not used);
- ``generate_assignment`` reproduces the committed student notebook ``notebooks/<id>/`` byte for byte;
- autograde: the reference solution scores 100 %, the untouched student notebook 0, and every known
  mistake in ``tests/mistakes/<id>.py`` loses points in the test cells it names;
- ``generate_feedback`` writes an HTML report with the score; every graded test cell of the reference
  run is silent on stderr (nbgrader scores such a cell 0) and finishes within nbgrader's 30 s default;
- the student notebook opens with the Colab badge and the install-in-Colab setup cell.

All submissions of an assignment are autograded once, in a session fixture; the tests only read the
gradebook. Timings per assignment are printed (``pytest -s``) and visible with ``--durations``.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from tl_course.course import ROOT, assignments, colab_url, repository_url

ASSIGNMENTS = assignments()
MISTAKES_DIR = Path(__file__).resolve().parent / "mistakes"
TEST_CELL_SECONDS = 30  # nbgrader's default per-cell timeout: what a course with default settings would allow
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


# ---------------------------------------------------------------------------------------------
# Known mistakes
# ---------------------------------------------------------------------------------------------
def load_mistakes(assignment_id: str) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]] | None:
    """``(MISTAKES, MUST_FAIL)`` of ``tests/mistakes/<id>.py``, or None if the file does not exist."""
    path = MISTAKES_DIR / f"{assignment_id}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"_course_mistakes_{assignment_id}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MISTAKES, module.MUST_FAIL


def student_id(mistake: str) -> str:
    return f"mistake-{mistake}"


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


@pytest.fixture(scope="session")
def course(request, tmp_path_factory, kernel_env) -> Course:
    """``solutions/<id>`` copied into a fresh course directory, ``generate_assignment`` run."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    assignment_id = request.param
    root = tmp_path_factory.mktemp(assignment_id)
    shutil.copytree(ROOT / "solutions" / assignment_id, root / "solutions" / assignment_id)
    config = nbgrader_config(root)
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    c = Course(assignment_id, root, config, api)
    result = c.timed("generate_assignment", api.generate_assignment, assignment_id, force=True, create=True)
    assert result["success"], f"nbgrader generate_assignment {assignment_id} failed:\n{result.get('error')}"
    yield c
    print(f"\n[{assignment_id}] seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in c.seconds.items())
          + f"; total {sum(c.seconds.values()):.1f}")


@pytest.fixture(scope="session")
def validation(course) -> dict:
    """``Validator().validate`` of the instructor solution (executes it; hidden tests included)."""
    from nbgrader.validator import Validator

    return course.timed("validate", Validator(config=course.config).validate, str(course.source))


@dataclass
class Graded:
    """What the gradebook says after autograding every submission of one assignment."""

    course: Course
    results: dict[str, dict]  #: student -> nbgrader API result (success, log, error)
    score: dict[str, float]
    max_score: dict[str, float]
    cells: dict[str, dict[str, tuple[float, float]]]  #: student -> grade_id -> (score, max_score)


@pytest.fixture(scope="session")
def graded(course) -> Graded:
    """Autograde reference, blank and every known mistake of the assignment; read the gradebook."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    loaded = load_mistakes(course.assignment_id)
    mistakes = loaded[0] if loaded else {}
    submissions = {
        "reference": nbformat.read(course.source, as_version=4),
        "blank": nbformat.read(course.released, as_version=4),
    }
    for name, replacements in mistakes.items():
        submissions[student_id(name)] = filled_submission(course.released, course.source, replacements)

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
    print(f"\n[{course.assignment_id}] scores: {summary}")
    return Graded(course, results, score, max_score, cells)


def by_assignment():
    """Parametrize a test over every assignment, sharing the session fixture ``course`` per assignment."""
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
    assert loaded, f"tests/mistakes/{course.assignment_id}.py is missing (MISTAKES, MUST_FAIL; see tests/mistakes/__init__.py)."
    mistakes, must_fail = loaded
    nb = nbformat.read(course.source, as_version=4)
    answer_cells = {nbgrader_meta(c)["grade_id"] for c in nb.cells if nbgrader_meta(c).get("solution")}
    test_cells = {nbgrader_meta(c)["grade_id"] for c in nb.cells
                  if nbgrader_meta(c).get("grade") and not nbgrader_meta(c).get("solution")}
    assert mistakes and set(mistakes) == set(must_fail), "MISTAKES and MUST_FAIL must name the same mistakes."
    for name, replacements in mistakes.items():
        assert replacements and set(replacements) <= answer_cells, f"{name}: unknown answer cells {set(replacements) - answer_cells}."
        assert must_fail[name] and set(must_fail[name]) <= test_cells, f"{name}: unknown test cells {set(must_fail[name]) - test_cells}."
        for source in replacements.values():
            assert not any(m in source for m in SOLUTION_MARKERS), f"{name}: leave out the BEGIN/END SOLUTION markers."


@by_assignment()
def test_known_mistakes_lose_points(graded):
    loaded = load_mistakes(graded.course.assignment_id)
    if not loaded:
        pytest.skip(f"no tests/mistakes/{graded.course.assignment_id}.py (test_assignment_has_known_mistakes fails)")
    mistakes, must_fail = loaded
    problems = []
    for mistake in mistakes:
        student = student_id(mistake)
        result = graded.results[student]
        if not result["success"]:
            problems.append(f"{mistake}: autograde crashed:\n{result.get('error')}")
            continue
        cells = graded.cells[student]
        if graded.score[student] >= graded.max_score[student]:
            problems.append(f"{mistake}: scores full marks {graded.score[student]:g}/{graded.max_score[student]:g}")
        survived = [g for g in must_fail.get(mistake, []) if cells[g][0] >= cells[g][1]]
        if survived:
            problems.append(f"{mistake}: keeps full points in {survived} (cells: {cells})")
    assert not problems, f"{len(problems)} known mistake(s) not caught by the tests:\n" + "\n".join(problems)
