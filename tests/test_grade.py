"""``python -m tl_course.classroom grade`` / ``import-zip`` as an instructor uses them, on a tiny course (one assignment, the cheapest
notebook), and the pieces it is made of.

- the LMS zip import (nbgrader ``zip_collect``): which files land in ``submitted/``, which are reported;
- the SQLite laptop flow through the command line, exactly as ``book/instructors.md`` shows it: the
  reference solution scores 10/10, the untouched notebook 0/10, feedback and reports are written, a
  re-run grades nothing, a changed notebook is regraded;
- the same class on a Dask ``LocalCluster``: the same scores;
- phase 2 (:func:`tl_course.classroom.recording.record`) on its own: replayed outputs score as executed, a failed or
  mismatching execution scores 0 with its reason in the feedback;
- one run's state is its own: an interrupted run, then another in the same process, grades the reference
  to full marks; a job the grader could not run is graded by the next run; the summary names a submission
  run with another ``TL_COURSE_PROFILE``;
- without notebooks: the gradebook URL's precedence, the submission digest, the submission finder, the
  sandbox's environment, the integrity probe;
- the namespaces wall (as root): the job's folder writable, the rest read-only, the course and credential
  files hidden, no capabilities, no other processes; every mount read-only, other jobs hidden, no instructor
  notebook in a job, a student's duplicate notebooks in a zip named;
- the docs: every ``python -m tl_course.classroom`` command in ``book/instructors.md`` and the README uses
  a subcommand and options that exist.

The course lives in a world-readable temporary folder (pytest's ``tmp_path`` is 0700): the grader hides
the course folder from the student kernel and gives each job its own folder, which must stay reachable.
Tests that run notebooks are marked ``slow`` (about 6 minutes together on 2 cores).
"""
from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

import tl_course
from tl_course.classroom import grade, gradebook, jobs, lms, recording, reports, sandbox, submissions
from tl_course.classroom.__main__ import parser as command_line
from tl_course.classroom.notebooks import grade_id, is_test

ROOT = Path(tl_course.__file__).resolve().parents[1]
ASSIGNMENT = "ch02_cat_detector"          # the cheapest notebook: a few seconds per run
REFERENCE = ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
BLANK = ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
DATA = Path(os.environ.get("TL_COURSE_DATA", ROOT.parent / "shared" / "data"))
PETS = DATA / "oxford-iiit-pet" / "images"
needs_pets = pytest.mark.skipif(not PETS.is_dir(), reason=f"no Oxford-IIIT Pet photos in {PETS} (set TL_COURSE_DATA)")
slow = pytest.mark.slow
DOCS = [ROOT / "book" / "instructors.md", ROOT / "README.md"]


# ---------------------------------------------------------------------------------------------
# A tiny course
# ---------------------------------------------------------------------------------------------
def readable_dir() -> Path:
    """A fresh temporary folder others may enter (0755), unlike pytest's 0700 ``tmp_path``."""
    path = Path(tempfile.mkdtemp(prefix="tl_course-test-grade-"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def tmp_readable():
    path = readable_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_course(parent: Path) -> Path:
    """An nbgrader course folder: the repository's ``nbgrader_config.py`` and one instructor solution."""
    course = parent / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(REFERENCE.parent, course / "solutions" / ASSIGNMENT)
    os.chmod(course, 0o755)
    return course


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    """An LMS download: one zip, one file per student, the student id in the file name."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


LMS_FILES = {
    "alice_ch02_cat_detector.ipynb": REFERENCE.read_bytes(),           # the reference solution
    "bob_ch02_cat_detector (1).ipynb": BLANK.read_bytes(),             # untouched; the LMS's "(1)" suffix
    "README.txt": b"Submissions downloaded from the LMS.\n",          # not a notebook
    "carol_ch03_replace_softmax.ipynb": BLANK.read_bytes(),            # another assignment
    "nounderscore.ipynb": BLANK.read_bytes(),                          # no student id in the name
}


@pytest.fixture
def nbgrader_on_path(monkeypatch):
    """nbgrader creates a gradebook by running ``alembic``: the one beside this Python."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.delenv("TL_COURSE_GRADEBOOK", raising=False)


def grader_env() -> dict:
    """The grader's environment: the ci profile, the photos, the caller's feature cache, this checkout's
    package, and no gradebook URL inherited from whoever runs the tests."""
    env = dict(os.environ)
    env.pop("TL_COURSE_GRADEBOOK", None)
    env.update(TL_COURSE_PROFILE="ci", TL_COURSE_DATA=str(DATA),
               PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_classroom(*args: str, cwd: Path) -> str:
    """``python -m tl_course.classroom ARGS``; its output, after checking it exited 0."""
    proc = subprocess.run([sys.executable, "-m", "tl_course.classroom", *args], cwd=cwd, env=grader_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f"python -m tl_course.classroom {' '.join(args)} exited {proc.returncode}:\n"
                                  f"{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc.stdout


def read_grades(csv_path: Path) -> dict[tuple[str, str], tuple[float, float]]:
    with open(csv_path, newline="") as fh:
        return {(r["student_id"], r["assignment"]): (float(r["score"]), float(r["max_score"]))
                for r in csv.DictReader(fh)}


def copy_course(course: Path, parent: Path) -> Path:
    """A copy of a graded course folder (its SQLite gradebook and its ``.grade`` work folder included)."""
    return Path(shutil.copytree(course, parent / "course"))


# ---------------------------------------------------------------------------------------------
# a. The LMS zip
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, student", [
    ("alice_ch02_cat_detector.ipynb", "alice"),
    ("bob_ch02_cat_detector (1).ipynb", "bob"),
    ("bob_ch02_cat_detector-2.ipynb", "bob"),
    ("s1234567_late_ch02_cat_detector.ipynb", "s1234567"),
    ("alice.smith@uni.edu_ch02_cat_detector.ipynb", "alice.smith@uni.edu"),
    ("README.txt", None),
    ("nounderscore.ipynb", None),
])
def test_default_name_regexp(name, student):
    """zip_collect matches the regular expression against the extracted file's whole path."""
    match = re.match(lms.DEFAULT_NAME_REGEXP, f"/course/downloaded/{ASSIGNMENT}/extracted/{name}")
    if student is None:
        assert match is None, f"{name} should give no student id, got {match and match.groupdict()}"
    else:
        assert match, f"{name} should match DEFAULT_NAME_REGEXP"
        assert match["student_id"] == student
        assert match["file_id"] == ASSIGNMENT


def test_default_name_regexp_names_the_other_assignment():
    """A notebook of another assignment matches, with its own file id: zip_collect (strict) then skips it."""
    match = re.match(lms.DEFAULT_NAME_REGEXP, "/x/carol_ch03_replace_softmax.ipynb")
    assert match and match["student_id"] == "carol" and match["file_id"] == "ch03_replace_softmax"


def test_import_zip_collects_and_reports(tmp_readable, nbgrader_on_path):
    course = make_course(tmp_readable)
    found = lms.import_zip(course, make_zip(tmp_readable / "lms.zip", LMS_FILES), ASSIGNMENT)

    assert found["collected"] == {"alice": ["alice_ch02_cat_detector.ipynb"],
                                  "bob": ["bob_ch02_cat_detector (1).ipynb"]}
    assert found["unmatched"] == sorted(["README.txt", "carol_ch03_replace_softmax.ipynb", "nounderscore.ipynb"])
    submitted = course / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == ["alice", "bob"]
    for student, name in (("alice", "alice_ch02_cat_detector.ipynb"), ("bob", "bob_ch02_cat_detector (1).ipynb")):
        folder = submitted / student / ASSIGNMENT
        assert sorted(p.name for p in folder.iterdir()) == [f"{ASSIGNMENT}.ipynb"]
        assert (folder / f"{ASSIGNMENT}.ipynb").read_bytes() == LMS_FILES[name]
    assert [s.student for s in submissions.find_submissions(course, [ASSIGNMENT])] == ["alice", "bob"]

    # a later download replaces that student's notebook and leaves the others alone
    newer = BLANK.read_bytes().replace(b"raise NotImplementedError()", b"raise NotImplementedError()  # later")
    assert newer != BLANK.read_bytes()
    again = lms.import_zip(course, make_zip(tmp_readable / "late.zip", {"alice_ch02_cat_detector.ipynb": newer}),
                             ASSIGNMENT)
    assert again == {"collected": {"alice": ["alice_ch02_cat_detector.ipynb"]}, "unmatched": [], "refused": []}
    assert (submitted / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes() == newer
    assert (submitted / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes() == BLANK.read_bytes()


def test_import_zip_leaves_the_instructors_own_downloads_alone(tmp_readable, nbgrader_on_path):
    """nbgrader's manual workflow keeps downloads in downloaded/<assignment>/archive/ (and extracts into
    extracted/): an import works in a folder of its own, reads and deletes neither, and leaves nothing behind."""
    course = make_course(tmp_readable)
    mine = course / "downloaded" / ASSIGNMENT
    (mine / "archive").mkdir(parents=True)
    (mine / "extracted").mkdir()
    kept = {mine / "archive" / "week1.zip": b"instructor's own download",
            mine / "extracted" / "notes.txt": b"instructor's notes"}
    for path, data in kept.items():
        path.write_bytes(data)
    found = lms.import_zip(course, make_zip(tmp_readable / "lms.zip", LMS_FILES), ASSIGNMENT)
    assert set(found["collected"]) == {"alice", "bob"}
    assert {path: path.read_bytes() for path in kept} == kept
    assert sorted(p.name for p in mine.iterdir()) == ["archive", "extracted"]


def test_import_zip_refuses_a_file_that_is_not_a_zip(tmp_readable, nbgrader_on_path):
    course = make_course(tmp_readable)
    not_zip = tmp_readable / "grades.zip"
    not_zip.write_text("not a zip")
    with pytest.raises(gradebook.GradingError, match="not a zip file"):
        lms.import_zip(course, not_zip, ASSIGNMENT)
    assert not (course / "submitted").exists()


# ---------------------------------------------------------------------------------------------
# b. The laptop flow (SQLite) through the command line, as documented
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def laptop():
    """The documented SQLite flow: import the LMS zip (which grades it), run again (nothing to do), change
    one notebook and run again (that one is regraded)."""
    if not PETS.is_dir():
        pytest.skip(f"no Oxford-IIIT Pet photos in {PETS} (set TL_COURSE_DATA)")
    parent, snapshot_parent = readable_dir(), readable_dir()
    try:
        course = make_course(parent)
        lms_zip = make_zip(parent / "lms.zip", LMS_FILES)
        out = types.SimpleNamespace(course=course, parent=parent)
        out.first = (run_classroom("import-zip", str(lms_zip), "--course", str(course), "--assignment", ASSIGNMENT,
                                   cwd=parent)
                     + run_classroom("grade", "--course", str(course), "--quiet", cwd=parent))
        out.grades_first = read_grades(course / "grading" / "grades.csv")
        out.second = run_classroom("grade", "--course", str(course), "--quiet", cwd=parent)
        out.grades_second = read_grades(course / "grading" / "grades.csv")
        out.snapshot = copy_course(course, snapshot_parent)   # graded once, for the tests of phase 2
        bob = course / "submitted" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        nb = nbformat.read(bob, as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell("I ran out of time."))
        nbformat.write(nb, bob)
        out.third = run_classroom("grade", "--course", str(course), "--quiet", cwd=parent)
        out.grades_third = read_grades(course / "grading" / "grades.csv")
        yield out
    finally:
        shutil.rmtree(parent, ignore_errors=True)
        shutil.rmtree(snapshot_parent, ignore_errors=True)


@slow
def test_laptop_reference_full_marks_blank_zero(laptop):
    assert "imported 2 notebook(s) of 2 student(s)" in laptop.first
    for name in ("README.txt", "carol_ch03_replace_softmax.ipynb", "nounderscore.ipynb"):
        assert f"could not match (no student id, or another notebook): {name}" in laptop.first
    assert "graded 2, unchanged 0, could not run 0" in laptop.first
    assert laptop.grades_first == {("alice", ASSIGNMENT): (10.0, 10.0), ("bob", ASSIGNMENT): (0.0, 10.0)}


@slow
def test_laptop_writes_feedback_and_summary(laptop):
    for student, score in (("alice", "10.0 / 10.0"), ("bob", "0.0 / 10.0")):
        html = laptop.course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
        assert html.is_file(), f"no feedback for {student}"
        assert f"Score: {score}" in html.read_text(encoding="utf-8")
    assert str(laptop.course / "grading" / "grades.csv") in laptop.first
    summary = (laptop.course / "grading" / "summary.md").read_text(encoding="utf-8")
    assert "2 submissions graded (0 could not run" in summary
    row = next(line for line in summary.splitlines() if line.startswith(f"| {ASSIGNMENT} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["2", "5.0", "5", "0", "10"], row     # submissions, mean, median, min, max
    assert "test_split_counts" in cells[7]                     # bob fails every test cell


@slow
def test_laptop_rerun_grades_nothing(laptop):
    assert "graded 0, unchanged 2, could not run 0" in laptop.second
    assert laptop.grades_second == laptop.grades_first


@slow
def test_laptop_changed_notebook_is_regraded(laptop):
    assert "graded 1, unchanged 1, could not run 0" in laptop.third
    assert laptop.grades_third == laptop.grades_first
    from nbgrader.api import Gradebook

    with Gradebook(gradebook.resolve_db_url(laptop.course)) as gb:   # one submission per student, none doubled
        assert sorted(s.student.id for s in gb.find_assignment(ASSIGNMENT).submissions) == ["alice", "bob"]


# ---------------------------------------------------------------------------------------------
# c. Dask
# ---------------------------------------------------------------------------------------------
@slow
def test_dask_local_cluster_same_scores(laptop):
    pytest.importorskip("distributed")
    course = copy_course(laptop.snapshot, readable_dir())
    try:
        out = run_classroom("grade", "--course", str(course), "--dask", "--workers", "2", "--force", "--quiet",
                        cwd=course.parent)
        assert "graded 2, unchanged 0, could not run 0" in out
        assert read_grades(course / "grading" / "grades.csv") == {("alice", ASSIGNMENT): (10.0, 10.0),
                                                                  ("bob", ASSIGNMENT): (0.0, 10.0)}
    finally:
        shutil.rmtree(course.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# d. Phase 2 on its own: ReplayOutputs
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def graded_copy(laptop, monkeypatch):
    """A private copy of the course graded once (alice 10/10, bob 0/10), its config and alice's submission."""
    monkeypatch.delenv("TL_COURSE_GRADEBOOK", raising=False)
    course = copy_course(laptop.snapshot, readable_dir())
    config = gradebook.course_config(course, gradebook.resolve_db_url(course))
    folder = course / "submitted" / "alice" / ASSIGNMENT
    alice = submissions.Submission("alice", ASSIGNMENT, folder, submissions.folder_digest(folder))
    yield types.SimpleNamespace(course=course, config=config, alice=alice)
    shutil.rmtree(course.parent, ignore_errors=True)


def graded_test_cells(nb) -> list:
    return [c for c in nb.cells if is_test(c)]


def gradebook_score(course: Path, student: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(gradebook.resolve_db_url(course)) as gb:
        return gb.find_submission(ASSIGNMENT, student).score


@slow
def test_record_replays_the_executed_notebook(graded_copy):
    executed = graded_copy.course / "autograded" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    result = {"status": "graded", "reason": "", "executed": executed.read_text(encoding="utf-8")}
    assert recording.record(graded_copy.config, graded_copy.alice, result) == (10.0, 10.0)
    assert gradebook_score(graded_copy.course, "alice") == 10.0


@slow
def test_record_failure_scores_zero_with_the_reason(graded_copy):
    reason = "the grading process stopped: it was killed (out of memory?); every test cell scores 0."
    assert gradebook_score(graded_copy.course, "alice") == 10.0
    score = recording.record(graded_copy.config, graded_copy.alice, {"status": "failed", "reason": reason})
    assert score == (0.0, 10.0)
    assert gradebook_score(graded_copy.course, "alice") == 0.0
    assert gradebook_score(graded_copy.course, "bob") == 0.0          # nobody else touched
    nb = nbformat.read(graded_copy.course / "autograded" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                       as_version=4)
    cells = graded_test_cells(nb)
    assert len(cells) == 6
    for cell in cells:
        assert [o.get("ename") for o in cell.outputs] == ["NotGraded"], grade_id(cell)
        assert reason in cell.outputs[0]["evalue"]
    html = (graded_copy.course / "feedback" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text(encoding="utf-8")
    assert "Score: 0.0 / 10.0" in html
    assert "NotGraded" in html and "it was killed (out of memory?)" in html


@slow
def test_record_refuses_outputs_of_another_notebook(graded_copy):
    """Outputs are replayed only onto the very cells that produced them."""
    executed = graded_copy.course / "autograded" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    nb = nbformat.read(executed, as_version=4)
    answer = next(c for c in nb.cells if grade_id(c) == "cat_label")
    answer.source += "\n# edited after it ran"
    result = {"status": "graded", "reason": "", "executed": nbformat.writes(nb)}
    assert recording.record(graded_copy.config, graded_copy.alice, result) == (0.0, 10.0)
    html = (graded_copy.course / "feedback" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text(encoding="utf-8")
    assert "does not match the submission" in html


def with_setup_output(nb, profile: str):
    """``nb`` as if its setup cell had run under ``profile`` (what the setup cell prints)."""
    for cell in nb.cells:
        if grade_id(cell) == "setup":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                   text=f"tl_course 0.1.0, torch 2.5.1, device cpu, profile {profile}\n")]
    return nb


@slow
def test_summary_warns_about_another_profile(graded_copy):
    """The student ran the gpu profile, the grader ci: the summary names the submission; ci against ci
    and a notebook handed in without outputs are not named."""
    autograded = graded_copy.course / "autograded" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert reports.printed_profile(nbformat.read(autograded, as_version=4)) == "ci"
    engine = gradebook.open_engine(graded_copy.config.CourseDirectory.db_url)
    ledger, _ = gradebook.tables(engine)
    handed_in = graded_copy.alice.folder / f"{ASSIGNMENT}.ipynb"
    nb = nbformat.read(handed_in, as_version=4)
    assert reports.printed_profile(nb) is None
    out = graded_copy.course / "grading"
    assert reports.write_reports(graded_copy.config, engine, ledger, out)[2] == []
    nbformat.write(with_setup_output(nb, "ci"), handed_in)
    assert reports.write_reports(graded_copy.config, engine, ledger, out)[2] == []
    nbformat.write(with_setup_output(nb, "gpu"), handed_in)
    _, summary, warnings = reports.write_reports(graded_copy.config, engine, ledger, out)
    assert warnings == [f"alice / {ASSIGNMENT}: ran with profile gpu, graded with profile ci"]
    text = summary.read_text(encoding="utf-8")
    assert "another profile" in text and f"- alice / {ASSIGNMENT}: ran with profile gpu" in text
    assert "bob /" not in text.split("another profile")[1]


def test_profile_mismatches_reads_both_notebooks(tmp_path):
    blank = nbformat.read(BLANK, as_version=4)
    for folder, student, profile in (("submitted", "ann", "cpu"), ("autograded", "ann", "ci"),
                                     ("submitted", "ben", "ci"), ("autograded", "ben", "ci"),
                                     ("autograded", "cy", "ci")):
        path = tmp_path / folder / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(with_setup_output(nbformat.from_dict(blank), profile), path)
    assert reports.profile_mismatches(tmp_path, [("ann", ASSIGNMENT), ("ben", ASSIGNMENT), ("cy", ASSIGNMENT),
                                                 ("dan", ASSIGNMENT)]) == [
        f"ann / {ASSIGNMENT}: ran with profile cpu, graded with profile ci"]


# ---------------------------------------------------------------------------------------------
# One run's state is its own: an interrupted run, a grader-side failure
# ---------------------------------------------------------------------------------------------
def hand_in(course: Path, student: str, notebook: Path) -> None:
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    shutil.copy(notebook, folder / f"{ASSIGNMENT}.ipynb")


def small_run(course: Path) -> grade.Options:
    return grade.Options(course=course, workers=1, warm=False, progress=False, feedback=False, retries=1,
                         env={"TL_COURSE_PROFILE": "ci", "TL_COURSE_DATA": str(DATA)})


def ledger_rows(course: Path) -> dict[tuple[str, str], tuple[str, float | None]]:
    import sqlalchemy as sa

    engine = gradebook.open_engine(gradebook.resolve_db_url(course))
    ledger, _ = gradebook.tables(engine)
    with engine.connect() as conn:
        return {(r.student_id, r.assignment_id): (r.status, r.score) for r in conn.execute(sa.select(ledger))}


@slow
@needs_pets
def test_interrupted_run_then_a_full_score_in_the_same_process(tmp_readable, nbgrader_on_path, monkeypatch):
    """Ctrl-C in Jupyter (here: raised while the first result is recorded), then grade_class again in the
    same process: the reference scores full marks, nothing of the stopped run was recorded as graded."""
    course = make_course(tmp_readable)
    hand_in(course, "alice", REFERENCE)
    hand_in(course, "bob", BLANK)
    real = recording.record

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recording, "record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        grade.grade_class(small_run(course))
    assert ledger_rows(course) == {}
    monkeypatch.setattr(recording, "record", real)
    report = grade.grade_class(small_run(course))
    assert sorted(report.graded) == [("alice", ASSIGNMENT), ("bob", ASSIGNMENT)]
    assert report.failed == {} and report.errors == {}
    assert ledger_rows(course) == {("alice", ASSIGNMENT): ("graded", 10.0), ("bob", ASSIGNMENT): ("graded", 0.0)}
    assert gradebook_score(course, "alice") == 10.0


@slow
@needs_pets
def test_a_grader_side_failure_is_graded_by_the_next_run(tmp_readable, nbgrader_on_path, monkeypatch):
    """A job the grader could not run (a lost Dask worker) is not recorded as graded: the gradebook keeps
    no score for it, the summary names it, and the next run grades it."""
    course = make_course(tmp_readable)
    hand_in(course, "alice", REFERENCE)
    tries, real = [], sandbox.run_job

    def lost(job, stop=None):
        tries.append(job["student"])
        raise ConnectionError("the worker went away")

    monkeypatch.setattr(sandbox, "run_job", lost)
    report = grade.grade_class(small_run(course))
    assert tries == ["alice", "alice"]                                     # retried once
    assert report.graded == [] and report.failed == {}
    assert "the worker was lost" in report.errors[("alice", ASSIGNMENT)]
    assert ledger_rows(course) == {("alice", ASSIGNMENT): ("error", None)}
    summary = report.summary.read_text(encoding="utf-8")
    assert "0 submissions graded" in summary and "Not graded because of the grader" in summary
    assert f"- alice / {ASSIGNMENT}: the worker was lost" in summary
    monkeypatch.setattr(sandbox, "run_job", real)
    again = grade.grade_class(small_run(course))
    assert again.graded == [("alice", ASSIGNMENT)] and again.skipped == [] and again.errors == {}
    assert ledger_rows(course) == {("alice", ASSIGNMENT): ("graded", 10.0)}
    assert gradebook_score(course, "alice") == 10.0


# ---------------------------------------------------------------------------------------------
# d. Without notebooks
# ---------------------------------------------------------------------------------------------
def test_resolve_db_url_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("TL_COURSE_GRADEBOOK", raising=False)
    (tmp_path / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.db_url = "sqlite:///grades/gb.db"\n')
    # a relative SQLite path is taken inside the course folder, wherever the grader is started
    monkeypatch.chdir("/")
    assert gradebook.resolve_db_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/grades/gb.db"
    # no configuration at all: gradebook.db in the course folder, as nbgrader does
    bare = tmp_path / "bare"
    bare.mkdir()
    assert gradebook.resolve_db_url(bare) == f"sqlite:///{bare.resolve()}/gradebook.db"
    # an absolute SQLite path stays as it is
    assert gradebook.resolve_db_url(tmp_path, "sqlite:////srv/gb.db") == "sqlite:////srv/gb.db"
    # the environment wins over the configuration, the command line over the environment
    monkeypatch.setenv("TL_COURSE_GRADEBOOK", "postgresql://grader@db.example/course")
    assert gradebook.resolve_db_url(tmp_path) == "postgresql://grader@db.example/course"
    assert gradebook.resolve_db_url(tmp_path, "postgresql://other@db2/x") == "postgresql://other@db2/x"


def test_folder_digest(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "ch02_cat_detector.ipynb").write_text('{"cells": []}')
    (folder / "timestamp.txt").write_text("2026-11-29 10:00:00")
    first = submissions.folder_digest(folder)
    assert len(first) == 64 and first == submissions.folder_digest(folder)
    # hidden files and folders (checkpoints, .DS_Store) do not count
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "ch02_cat_detector-checkpoint.ipynb").write_text("old")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    assert submissions.folder_digest(folder) == first
    # a changed byte, a new file or a renamed file does
    (folder / "ch02_cat_detector.ipynb").write_text('{"cells": [ ]}')
    changed = submissions.folder_digest(folder)
    assert changed != first
    (folder / "notes.txt").write_text("")
    assert submissions.folder_digest(folder) not in (first, changed)
    (folder / "notes.txt").rename(folder / "notes2.txt")
    renamed = submissions.folder_digest(folder)
    (folder / "notes2.txt").rename(folder / "notes.txt")
    assert renamed != submissions.folder_digest(folder)


def test_find_submissions(tmp_path):
    def put(rel: str, text: str = "{}") -> None:
        path = tmp_path / "submitted" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    assert submissions.find_submissions(tmp_path) == []                     # no submitted/ yet: nothing, no error
    put("alice/ch02_cat_detector/ch02_cat_detector.ipynb")
    put("alice/ch03_replace_softmax/ch03_replace_softmax.ipynb")
    put("bob/ch02_cat_detector/ch02_cat_detector.ipynb")
    put("carol/ch02_cat_detector/Untitled.ipynb")                     # wrong notebook name: not a submission
    put("dave/ch02_cat_detector/timestamp.txt")                       # no notebook
    put("erin/ch02_cat_detector.ipynb")                               # not in an assignment folder
    put("README.txt")
    found = submissions.find_submissions(tmp_path)
    assert [(s.student, s.assignment) for s in found] == [
        ("alice", "ch02_cat_detector"), ("alice", "ch03_replace_softmax"), ("bob", "ch02_cat_detector")]
    assert all(s.folder == tmp_path / "submitted" / s.student / s.assignment for s in found)
    assert found[0].digest == submissions.folder_digest(found[0].folder)
    assert [(s.student, s.assignment) for s in submissions.find_submissions(tmp_path, ["ch03_replace_softmax"])] == [
        ("alice", "ch03_replace_softmax")]
    assert [(s.student, s.assignment) for s in submissions.find_submissions(tmp_path, None, ["bob", "carol"])] == [
        ("bob", "ch02_cat_detector")]


def test_sandbox_env_passes_only_what_the_course_needs(tmp_path, monkeypatch):
    secrets = {"TL_COURSE_GRADEBOOK": "postgresql://grader:s3cret@db/course", "PGPASSWORD": "s3cret",
               "AWS_SECRET_ACCESS_KEY": "AKIA-x", "MY_API_TOKEN": "tok", "DASK_SCHEDULER_ADDRESS": "tcp://h:8786",
               "JUPYTER_CONFIG_DIR": "/root/.jupyter", "PYTHONSTARTUP": "/root/evil.py"}
    course = {"TL_COURSE_PROFILE": "ci", "TL_COURSE_DATA": "/data", "TL_COURSE_CACHE": "/cache",
              "TL_COURSE_CACHE_MAX_GB": "3"}
    for key, value in {**secrets, **course}.items():
        monkeypatch.setenv(key, value)
    env = sandbox.sandbox_env({"threads": 3}, tmp_path, "abc123")
    for key in secrets:
        assert key not in env, f"{key} reaches the student kernel"
    assert not any("s3cret" in v for v in env.values())
    for key, value in course.items():
        assert env[key] == value
    for key in ("HOME", "TMPDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR", "MPLCONFIGDIR"):
        assert Path(env[key]).is_relative_to(tmp_path), f"{key}={env[key]} is outside the job's folder"
    assert env["HOME"] == str(tmp_path / "home")
    assert all(env[k] == "3" for k in sandbox.THREAD_ENV)
    assert env[sandbox.MARKER] == "abc123"
    assert env["PYTHONSAFEPATH"] == "1"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)   # nbgrader's alembic, jupyter


def test_sandbox_env_job_env_is_added(tmp_path, monkeypatch):
    """The instructor's extra variables (``Options.env``) reach the kernel; HOME cannot be moved out."""
    monkeypatch.setenv("TL_COURSE_PROFILE", "gpu")
    env = sandbox.sandbox_env({"env": {"TL_COURSE_PROFILE": "ci", "HOME": "/root"}}, tmp_path, "t")
    assert env["TL_COURSE_PROFILE"] == "ci"
    assert env["HOME"] == str(tmp_path / "home")


def run_probe() -> list[str]:
    """The integrity probe, evaluated in this process as the kernel evaluates it."""
    src = sandbox.PROBE.replace("SPEC", repr(sandbox.integrity_spec()))
    ns: dict = {}
    exec(src, ns)
    return ns["result"]


def test_integrity_spec_describes_the_package():
    spec = sandbox.integrity_spec()
    assert spec["package"] == str(Path(tl_course.__file__).resolve().parent)
    assert spec["defs"]["tl_course.data"]["breed_of"] == ["function", str(Path(tl_course.data.__file__).resolve())]
    assert spec["defs"]["tl_course.training"]["History"][0] == "class"
    assert spec["aliases"]["tl_course"]["cat_detector_splits"] == ["tl_course.data", "cat_detector_splits"]


def test_integrity_probe_clean_package():
    import tl_course.data  # noqa: F401 - the modules a notebook loads
    import tl_course.features  # noqa: F401

    assert run_probe() == []


def test_integrity_probe_flags_a_patched_function(monkeypatch):
    import tl_course.data

    monkeypatch.setattr(tl_course.data, "breed_of", lambda path: "Bengal")
    problems = run_probe()
    assert any(p.startswith("tl_course.data.breed_of was deleted or replaced") for p in problems), problems
    monkeypatch.undo()
    assert run_probe() == []


def test_integrity_probe_flags_a_wrapper_defined_elsewhere(monkeypatch):
    """A wrapper that calls the real function (functools.wraps and all) is still not the course's code."""
    import functools

    import tl_course.data

    real = tl_course.data.cat_detector_splits

    @functools.wraps(real)
    def spy(*args, **kwargs):
        return real(*args, **kwargs)

    spy.__wrapped__ = types.SimpleNamespace()           # no __code__ to hide behind
    monkeypatch.setattr(tl_course.data, "cat_detector_splits", spy)
    problems = run_probe()
    assert any(p.startswith("tl_course.data.cat_detector_splits was deleted or replaced") for p in problems), problems


def test_integrity_probe_flags_a_rebound_reexport(monkeypatch):
    import tl_course.data

    monkeypatch.setattr(tl_course, "cat_detector_splits", lambda *a, **k: None)
    problems = run_probe()
    assert "tl_course.cat_detector_splits is no longer tl_course.data.cat_detector_splits" in problems, problems


def test_integrity_probe_flags_a_replaced_module(monkeypatch, tmp_path):
    import tl_course.data

    fake = types.ModuleType("tl_course.data")
    fake.__file__ = str(tmp_path / "data.py")
    fake.__dict__.update({k: v for k, v in vars(tl_course.data).items() if not k.startswith("__")})
    monkeypatch.setitem(sys.modules, "tl_course.data", fake)
    problems = run_probe()
    assert f"tl_course.data is loaded from {os.path.realpath(fake.__file__)}, not from the course package" in problems


# ---------------------------------------------------------------------------------------------
# The namespaces wall (root only), and known holes
# ---------------------------------------------------------------------------------------------
needs_namespaces = pytest.mark.skipif(not sandbox.namespaces_available(),
                                      reason="the namespaces wall needs root and util-linux unshare/setpriv")


def inside_wall(script: str, jobdir: Path, hide: list[str] = (), outer: str = "") -> str:
    """Run ``sh -c script`` behind the sandbox's namespaces wall (``outer``: shell run first, as root, in a
    private mount namespace of its own, e.g. to add a mount); its stdout."""
    cmd = sandbox.isolated_command(["sh", "-c", script], jobdir, hide=list(hide))
    if outer:
        cmd = ["unshare", "--mount", "sh", "-ec", f"mount --make-rprivate / && {outer} && {shlex.join(cmd)}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return proc.stdout


@needs_namespaces
def test_namespaces_wall(tmp_readable):
    base = tmp_readable / "jobs"
    jobdir = base / "job-a"
    jobdir.mkdir(parents=True)
    course = tmp_readable / "course"
    course.mkdir()
    (course / "gradebook.db").write_text("grades")
    pgpass = tmp_readable / "pgpass"
    pgpass.write_text("db:5432:course:grader:s3cret")
    probe = Path("/.tl_course-test-grade-probe")
    try:
        out = inside_wall(
            f"touch {jobdir}/mine && echo job-writable; "
            f"touch {probe} 2>/dev/null && echo ROOT-WRITABLE || echo root-read-only; "
            f"ls -A {course} | wc -l; cat {pgpass} | wc -c; "
            "grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'",
            jobdir, hide=[str(course), str(pgpass)])
    finally:
        if probe.exists():
            probe.unlink()
    lines = out.split("\n")
    assert lines[0] == "job-writable", out
    assert lines[1] == "root-read-only", out
    assert lines[2].strip() == "0", f"the course folder is visible: {out}"
    assert lines[3].strip() == "0", f"a hidden credential file is readable: {out}"
    # the grading process keeps setuid, setgid and kill (to start the kernel as another user and stop it)
    assert lines[4].split() == ["CapEff:", "00000000000000e0"], out
    assert int(lines[5]) < 10, f"the grader's processes are visible: {out}"


@needs_namespaces
def test_namespaces_wall_covers_every_mount(tmp_readable):
    jobdir = tmp_readable / "jobs" / "job-a"
    jobdir.mkdir(parents=True)
    data = tmp_readable / "data"
    data.mkdir()
    out = inside_wall(f"touch {data}/x 2>/dev/null && echo WRITABLE || echo read-only", jobdir,
                      outer=f"mount -t tmpfs -o size=1m tmpfs {data}")
    assert out.strip() == "read-only"


@needs_namespaces
def test_namespaces_wall_hides_other_jobs(tmp_readable):
    base = tmp_readable / "jobs"
    for name in ("job-a", "job-b"):
        (base / name).mkdir(parents=True)
    (base / "job-b" / "submission.ipynb").write_text("another student's work")
    out = inside_wall(f"ls {base}; cat {base}/job-b/submission.ipynb 2>/dev/null || echo unreadable",
                      base / "job-a")
    assert out.split() == ["job-a", "unreadable"]


def test_job_does_not_carry_the_instructor_notebook(tmp_readable, nbgrader_on_path):
    course = make_course(tmp_readable)
    (course / "solutions" / ASSIGNMENT / "labels.csv").write_text("breed,label\n")  # a data file: it travels
    config = gradebook.course_config(course, gradebook.resolve_db_url(course))
    template = jobs.job_template(config, ASSIGNMENT, course / ".grade")
    assert "labels.csv" in template["source"]
    assert [name for name in template["source"] if name.endswith(".ipynb")] == []


def test_import_zip_two_notebooks_of_one_student(tmp_readable, nbgrader_on_path):
    course = make_course(tmp_readable)
    archive = make_zip(tmp_readable / "lms.zip", {"bob_ch02_cat_detector.ipynb": BLANK.read_bytes(),
                                                  "bob_ch02_cat_detector (1).ipynb": BLANK.read_bytes()})
    with pytest.raises(gradebook.GradingError, match="two notebooks of one student"):
        lms.import_zip(course, archive, ASSIGNMENT)


# ---------------------------------------------------------------------------------------------
# e. One command line, and the docs show only commands and options that exist
# ---------------------------------------------------------------------------------------------
COMMAND = "python -m tl_course.classroom"


def documented_commands(path: Path) -> list[list[str]]:
    """The arguments of every ``python -m tl_course.classroom ...`` command in the page's code blocks
    (continuation lines joined, ``<placeholders>`` filled in, comments dropped)."""
    commands, in_code, pending = [], False, ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            in_code, pending = not in_code, ""
            continue
        if not in_code:
            continue
        line = pending + line
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if f"{COMMAND} " not in line:
            continue
        rest = line.split(f"{COMMAND} ", 1)[1]
        rest = re.sub(r"<[^<>]*>", "PLACEHOLDER", rest)
        commands.append(shlex.split(rest, comments=True))
    return commands


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_documented_commands_exist(path):
    commands = documented_commands(path)
    grades = [argv for argv in commands if argv and argv[0] == "grade"]
    assert len(grades) >= (5 if path.name == "instructors.md" else 2), \
        f"{path.name} shows only {len(grades)} `{COMMAND} grade` commands"
    assert any(argv[0] == "import-zip" for argv in commands), f"{path.name} shows no `{COMMAND} import-zip`"
    parser = command_line()
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{path.name}: `{COMMAND} {shlex.join(argv)}` is refused by the parser")
        sub = parser._subparsers._group_actions[0].choices[argv[0]]
        for token in argv[1:]:   # spelled out in full (argparse would also take an abbreviation)
            if token.startswith("--"):
                assert token.split("=")[0] in sub._option_string_actions, f"{path.name}: no option {token} of {argv[0]}"
        db_url = getattr(args, "db_url", None)
        assert not (db_url and "@" in db_url and ":" in db_url.split("@")[0].split("//")[-1]), \
            f"{path.name}: a password on the command line is readable by every user: {argv}"


def test_old_command_lines_are_gone():
    """One command line: the grade module is not a program, grade has no --bench or --import-zip."""
    proc = subprocess.run([sys.executable, "-m", "tl_course.classroom.grade", "--help"], env=grader_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 or "usage" not in proc.stdout, proc.stdout
    for flag in ("--bench", "--import-zip"):
        with pytest.raises(SystemExit):
            command_line().parse_args(["grade", flag, "x"])
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for old in ("tl_course.classroom.grade --", "python -m tl_course.grade", " --bench", "--import-zip",
                    "python -m tl_course.classroom.grade", "python -m tl_course.classroom.release"):
            assert old not in text, f"{path.name} still shows {old!r}"


def test_command_line_refuses_a_folder_that_is_not_a_course(tmp_path, capsys):
    from tl_course.classroom.__main__ import main

    for argv in (["grade", "--course", str(tmp_path)], ["import-zip", "x.zip", "--assignment", ASSIGNMENT,
                                                        "--course", str(tmp_path)]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert f"--course {tmp_path.resolve()} is not an nbgrader course folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []                       # nothing written


def test_command_line_import_zip_of_a_file_that_is_not_a_zip(tmp_readable, nbgrader_on_path, capsys):
    from tl_course.classroom.__main__ import main

    course = make_course(tmp_readable)
    (tmp_readable / "grades.zip").write_text("not a zip")
    assert main(["import-zip", str(tmp_readable / "grades.zip"), "--assignment", ASSIGNMENT,
                 "--course", str(course)]) == 2
    assert "not a zip file" in capsys.readouterr().err
    assert not (course / "submitted").exists()


def test_every_subcommand_has_help():
    for command in ("release", "grade", "import-zip", "bench"):
        proc = subprocess.run([sys.executable, "-m", "tl_course.classroom", command, "--help"], env=grader_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {COMMAND} {command}"), proc.stdout + proc.stderr
        assert len(proc.stdout.splitlines()) > 5


def test_documented_dask_commands_exist():
    """The docs' ``dask scheduler`` / ``dask worker`` options exist in the installed Dask."""
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    if not dask:
        pytest.skip("no dask command installed")
    text = (ROOT / "book" / "instructors.md").read_text(encoding="utf-8")
    for sub in ("scheduler", "worker"):
        shown = {opt for line in text.splitlines() if line.strip().startswith(f"dask {sub}")
                 for opt in re.findall(r"(--[a-z][a-z-]*)", line)}
        assert sub == "scheduler" or shown, f"book/instructors.md shows no `dask {sub}` options"
        helptext = subprocess.run([dask, sub, "--help"], capture_output=True, text=True, timeout=120).stdout
        for opt in shown:
            assert opt in helptext, f"`dask {sub}` has no option {opt}"
