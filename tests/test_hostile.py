"""A hostile class, fast cases (no notebook runs): what a submission or an LMS download can do to the
grader, the instructor and the other students, each a test that failed before its fix (issue 17).

- safe text: control characters (ANSI escapes in a zip entry name, in a failure reason) never reach
  ``summary.md`` or the terminal raw; one huge output line is trimmed with a note; the feedback page
  runs no script and shows no hidden test's source;
- a class run survives: a non-UTF-8 file name, a student id ``..``, a zip bomb each affect only
  themselves; a second grader on one course is refused; a killed run's job folders are removed by the
  next job; a gradebook outage is waited out, a lasting one stops the run with one sentence.

The whole-notebook cases (a class of hostile submissions graded by ``python -m tl_course.classroom grade``)
are in ``tests/test_hostile_class.py`` (``make test-hostile``).
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import tl_course
from tl_course.classroom import gradebook, guard, jobs, lms, reports, safety, sandbox, submissions

ROOT = Path(tl_course.__file__).resolve().parents[1]
ASSIGNMENT = "ch02_cat_detector"
REFERENCE = ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
BLANK = ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
ANSI = "\x1b[2J\x1b[31mPWNED\x1b]0;title\x07"


@pytest.fixture
def nbgrader_on_path(monkeypatch):
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.delenv("TL_COURSE_GRADEBOOK", raising=False)


def make_course(parent: Path) -> Path:
    course = parent / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(REFERENCE.parent, course / "solutions" / ASSIGNMENT)
    return course


# ---------------------------------------------------------------------------------------------
# Safe text
# ---------------------------------------------------------------------------------------------
def test_escape_control_leaves_no_control_character():
    text = safety.one_line(f"bob{ANSI}\x00\x08\x9b\u202e" + "\udcff\n- fake line")
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c == "\u202e" or 0xd800 <= ord(c) <= 0xdfff
                   for c in text), repr(text)
    assert "\\x1b[2J" in text and "\\xff" in text and "\\n- fake line" in text
    assert safety.escape_control("two\nlines\tok") == "two\nlines\tok"


def _empty_gradebook(tmp_path: Path):
    """A fresh SQLite gradebook (nbgrader's tables and the course's ledger): ``(db_url, engine, ledger)``."""
    import sqlalchemy as sa
    from nbgrader.api import Gradebook

    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(db_url):
        pass
    engine = sa.create_engine(db_url)
    ledger, _ = gradebook.tables(engine)
    return db_url, engine, ledger


def test_summary_escapes_the_reason_and_student_id(tmp_path, nbgrader_on_path):
    """A failure reason quotes the notebook's last line of output: an ANSI escape there reached summary.md."""
    db_url, engine, ledger = _empty_gradebook(tmp_path)
    gradebook.write_ledger(engine, ledger, f"mallory{ANSI}", ASSIGNMENT, "0" * 64, "failed",
                           f"it printed {ANSI}\nfake: 10/10", (0.0, 10.0))
    config = gradebook.course_config(tmp_path, db_url)
    _, summary, _ = reports.write_reports(config, engine, ledger, tmp_path / "grading")
    text = summary.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text
    assert "mallory\\x1b[2J" in text
    assert "\nfake: 10/10" not in text, "a reason's line break started a line of its own"


def test_one_huge_line_is_trimmed_with_a_note():
    line = "x" * 100_000_000
    outputs = safety.neutralise_outputs([{"output_type": "stream", "name": "stdout", "text": line + "\n"}])
    del line
    text = outputs[0]["text"]
    assert len(text) < 2 * safety.MAX_LINE
    assert "characters trimmed" in text


def test_many_outputs_are_bounded_and_keep_their_verdict():
    """200 outputs of 1 MB: the cell keeps a bounded amount, and a dropped stderr output still fails the cell."""
    outputs = [{"output_type": "stream", "name": "stdout", "text": "y" * 1_000_000} for _ in range(200)]
    outputs.append({"output_type": "stream", "name": "stderr", "text": "warning\n"})
    outputs = safety.neutralise_outputs(outputs)
    assert sum(len(o["text"]) for o in outputs) < 3 * safety.MAX_OUTPUT
    assert outputs[-1]["name"] == "stderr" and "more outputs trimmed" in outputs[-1]["text"]


def test_outputs_keep_ansi_colours_and_errors():
    tb = "\x1b[0;31mAssertionError\x1b[0m: wrong\x07"
    out = safety.neutralise_outputs([{"output_type": "error", "ename": "AssertionError", "evalue": "wrong",
                                      "traceback": [tb]},
                                     {"output_type": "display_data", "data": {"application/javascript": "alert(1)"},
                                      "metadata": {}}])
    assert out[0]["traceback"] == ["\x1b[0;31mAssertionError\x1b[0m: wrong\\x07"]
    assert out[1]["data"] == {"text/plain": "[a script output was removed]"}


def test_feedback_html_runs_no_script():
    page = ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset='utf-8' />\n</head><body>"
            "<script>alert(1)</script><img src=x onerror=alert(2)><a href='javascript:alert(3)'>x</a>"
            f"<pre>{ANSI}</pre></body></html>")
    hardened = safety.harden_feedback_html(page)
    head = hardened.split("<head>", 1)[1]
    assert head.startswith('<meta http-equiv="Content-Security-Policy"'), "the policy must come first"
    policy = head.split('content="', 1)[1].split('"', 1)[0]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'none'" and directives["default-src"] == "'none'"
    assert "unsafe-inline" not in directives["script-src"]
    assert not any(ord(c) < 0x20 and c not in "\n\t" for c in hardened)


def test_feedback_hides_hidden_tests():
    import nbformat

    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")
             and not c.metadata["nbgrader"].get("solution") and "BEGIN HIDDEN TESTS" in c.source]
    assert tests
    for cell in tests:
        hidden = cell.source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]
        shown = safety.hide_test_source(dict(cell, outputs=[]))["source"]
        assert "BEGIN HIDDEN TESTS" not in shown and "(hidden tests, not shown)" in shown
        assert not any(line.strip() and line in shown for line in hidden.splitlines() if len(line.strip()) > 12)


# ---------------------------------------------------------------------------------------------
# A class run survives one bad submission
# ---------------------------------------------------------------------------------------------
def test_non_utf8_file_name_is_digested(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / f"{ASSIGNMENT}.ipynb").write_text("{}")
    first = submissions.folder_digest(folder)
    (folder / os.fsdecode(b"notes-\xff\xfe.txt")).write_bytes(b"x")
    assert submissions.folder_digest(folder) != first
    job = jobs.b64_files(folder)
    assert os.fsdecode(b"notes-\xff\xfe.txt") in job


def test_import_zip_refuses_path_like_student_ids(tmp_path, nbgrader_on_path):
    course = make_course(tmp_path)
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"../_{ASSIGNMENT}.ipynb", BLANK.read_bytes())       # student id ".."
        zf.writestr(f"x/.._{ASSIGNMENT}.ipynb", BLANK.read_bytes())
        zf.writestr(f"alice_{ASSIGNMENT}.ipynb", REFERENCE.read_bytes())
        zf.writestr(f"b\x1b[2Job_{ASSIGNMENT}.ipynb", BLANK.read_bytes())  # not matched: reported escaped
    found = lms.import_zip(course, archive, ASSIGNMENT)
    assert found["collected"] == {"alice": [f"alice_{ASSIGNMENT}.ipynb"]}
    assert found["refused"] == [f".._{ASSIGNMENT}.ipynb: the student id '..' could name a folder outside "
                                "submitted/; not imported"], found
    # "../" is dropped on extraction (no student id left); the escape sequence is reported, escaped, by main()
    assert found["unmatched"] == [f"_{ASSIGNMENT}.ipynb", f"b\x1b[2Job_{ASSIGNMENT}.ipynb"]
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["alice"]
    assert not (course / ASSIGNMENT).exists(), "a notebook landed outside submitted/"


def test_import_zip_bomb_is_capped(tmp_path, nbgrader_on_path):
    """A 150 MiB file of zeros compresses to a fraction of a MiB: it is not extracted past the cap."""
    course = make_course(tmp_path)
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"alice_{ASSIGNMENT}.ipynb", REFERENCE.read_bytes())
        with zf.open(f"bomb_{ASSIGNMENT}.ipynb", "w", force_zip64=True) as bomb:
            block = b"\0" * 2**20
            for _ in range(150):
                bomb.write(block)
    assert archive.stat().st_size < 2**20
    found = lms.import_zip(course, archive, ASSIGNMENT)
    assert found["collected"] == {"alice": [f"alice_{ASSIGNMENT}.ipynb"]}
    assert any(r.startswith(f"bomb_{ASSIGNMENT}.ipynb: larger than") for r in found["refused"]), found
    extracted = sum(p.stat().st_size for p in (course / "downloaded").rglob("*") if p.is_file())
    assert extracted < safety.MAX_ZIP_ENTRY + 2 * archive.stat().st_size + 2**20


def test_zip_entries_stay_inside(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escape.ipynb", "{}")
        zf.writestr("/abs/escape2.ipynb", "{}")
        zf.writestr("inner.zip", b"PK")
    skipped = safety.extract_zip(archive, tmp_path / "out")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.ipynb")) == [
        "out/abs/escape2.ipynb", "out/escape.ipynb"]
    assert skipped == ["inner.zip: an archive inside the archive; not imported (extract it yourself)"]


def test_second_grader_is_refused(tmp_path, nbgrader_on_path):
    course = make_course(tmp_path)
    with guard.course_lock(course):
        proc = subprocess.run([sys.executable, "-m", "tl_course.classroom", "grade", "--course", str(course), "--quiet"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "another grader is already grading this course (process" in proc.stderr
    assert not (course / "submitted").exists() and not (course / "grading").exists()


def test_killed_runs_job_folders_are_removed(tmp_path):
    """A job folder whose job is gone (its lock free) is deleted by the next job; a running one is kept."""
    base = sandbox.jobs_base(str(tmp_path))
    stale = base / "job-deadbeef00000000-abc"
    (stale / "course").mkdir(parents=True)
    (stale / "course" / "gradebook.db").write_text("hidden tests")
    (base / "job-deadbeef00000000.lock").touch()
    running = base / "job-feedface00000000-abc"
    running.mkdir()
    held = sandbox._hold_job_lock(base, "feedface00000000")
    old = time.time() - 3600
    for path in (stale, base / "job-deadbeef00000000.lock", running, base / "job-feedface00000000.lock"):
        os.utime(path, (old, old))
    try:
        job = {"work_dir": str(tmp_path), "assignment": ASSIGNMENT, "student": "s", "isolation": "none",
               "timeout": 60, "gradebook": base64.b64encode(b"").decode(), "source": {}, "submission": {}}
        result = sandbox.run_job(job)
        assert result["status"] == "failed"
        assert not stale.exists() and not (base / "job-deadbeef00000000.lock").exists()
        assert running.exists()
        assert sorted(p.name for p in base.iterdir()) == ["job-feedface00000000-abc", "job-feedface00000000.lock"]
    finally:
        os.close(held)


def test_gradebook_outage_is_retried_then_stops_cleanly():
    calls, waits = [], []

    def record():
        calls.append(1)
        raise ConnectionError("could not connect to server")

    with pytest.raises(guard.GradebookUnreachable, match="could not be reached for 7 s.*run the same command again"):
        guard.with_retries(record, lambda: False, delays=(1, 2, 4), sleep=waits.append)
    assert len(calls) == 4 and waits == [1, 2, 4]
    # a failure while the gradebook answers is the call's own: no retry
    calls.clear()
    with pytest.raises(ConnectionError):
        guard.with_retries(record, lambda: True, delays=(1, 2, 4), sleep=waits.append)
    assert len(calls) == 1


def test_reachable_sees_a_missing_server():
    import sqlalchemy as sa

    assert guard.reachable(sa.create_engine("sqlite://"))
    assert not guard.reachable(sa.create_engine("postgresql://nobody@127.0.0.1:1/none",
                                                connect_args={"connect_timeout": 2}))


# ---------------------------------------------------------------------------------------------
# The review list: submissions that touch the interpreter's machinery, whatever they scored
# ---------------------------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent / "classroom"))
import hostile  # noqa: E402


@pytest.mark.parametrize("name", sorted(hostile.VERDICT_TRICKS))
def test_verdict_tricks_are_listed_for_review(name):
    from tl_course.classroom.notebooks import fill_submission, reference_answers
    from tl_course.classroom.review import machinery_cells

    answers = reference_answers(REFERENCE)
    answers["cat_label"] += "\n" + hostile.VERDICT_TRICKS[name]
    nb = fill_submission(BLANK, REFERENCE, answers)
    found = machinery_cells(nb)
    assert [cell for cell, _ in found] == ["cat_label"], found


def test_reference_and_blank_are_not_listed():
    import nbformat

    from tl_course.classroom.review import machinery_cells

    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")) + sorted((ROOT / "notebooks").glob("*/*.ipynb")):
        assert machinery_cells(nbformat.read(path, as_version=4)) == [], path


def test_summary_lists_submissions_for_review(tmp_path, nbgrader_on_path):
    import nbformat

    from tl_course.classroom.notebooks import fill_submission, reference_answers

    answers = reference_answers(REFERENCE)
    answers["cat_label"] += "\n" + hostile.VERDICT_TRICKS["setprofile"]
    for student, nb in (("mallory", fill_submission(BLANK, REFERENCE, answers)),
                        ("alice", fill_submission(BLANK, REFERENCE))):
        folder = tmp_path / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{ASSIGNMENT}.ipynb")
    db_url, engine, ledger = _empty_gradebook(tmp_path)
    for student in ("mallory", "alice"):
        gradebook.write_ledger(engine, ledger, student, ASSIGNMENT, "0" * 64, "graded", "", (10.0, 10.0))
    _, summary, _ = reports.write_reports(gradebook.course_config(tmp_path, db_url), engine, ledger, tmp_path / "out")
    text = summary.read_text(encoding="utf-8")
    assert "## For review: cells that touch the interpreter's machinery" in text
    assert f"- mallory / {ASSIGNMENT}: cat_label (profiler/tracer)" in text
    assert "alice /" not in text.split("## For review", 1)[1]


# ---------------------------------------------------------------------------------------------
# Grade integrity: a submission's grade comes from that submission only
# ---------------------------------------------------------------------------------------------
def _test_cells_of(path: Path) -> list:
    import json

    from tl_course.classroom.repair import test_cells

    return test_cells(json.loads(path.read_text(encoding="utf-8"))["cells"])


def test_deleted_test_cell_is_restored():
    import json

    from tl_course.classroom.repair import repair_cells

    cells = json.loads(BLANK.read_text(encoding="utf-8"))["cells"]
    kept = [c for c in cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") != "test_cat_label"]
    assert len(kept) == len(cells) - 1
    notes = repair_cells(kept, _test_cells_of(BLANK))
    assert notes == ["the deleted test cell test_cat_label was restored at the end and graded"]
    assert kept[-1]["metadata"]["nbgrader"]["grade_id"] == "test_cat_label" and kept[-1]["outputs"] == []
    assert len({c.get("id") for c in kept}) == len(kept), "cell ids must stay unique"


def test_pasted_test_cell_is_graded_once():
    import copy
    import json

    from tl_course.classroom.repair import repair_cells

    cells = json.loads(BLANK.read_text(encoding="utf-8"))["cells"]
    i = next(k for k, c in enumerate(cells) if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "test_cat_label")
    cells.insert(i + 1, dict(copy.deepcopy(cells[i]), id="pasted"))
    notes = repair_cells(cells, _test_cells_of(BLANK))
    assert notes == ["a pasted copy of test cell test_cat_label is graded once (the copy runs as an ordinary cell)"]
    assert cells[i]["metadata"]["nbgrader"]["grade_id"] == "test_cat_label"
    assert "nbgrader" not in cells[i + 1]["metadata"]
    assert repair_cells(copy.deepcopy(cells), _test_cells_of(BLANK)) == []   # an untouched notebook: no change


def test_summary_says_what_was_not_isolated(tmp_path, nbgrader_on_path):
    db_url, engine, ledger = _empty_gradebook(tmp_path)
    config = gradebook.course_config(tmp_path, db_url)
    _, summary, _ = reports.write_reports(config, engine, ledger, tmp_path / "a", isolated=False)
    assert "## Not isolated" in summary.read_text(encoding="utf-8")
    _, summary, _ = reports.write_reports(config, engine, ledger, tmp_path / "b", isolated=True)
    assert "Not isolated" not in summary.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The kernel's machinery: a hook defined in the notebook fails the integrity check around test cells
# ---------------------------------------------------------------------------------------------
def _probe() -> list[str]:
    ns: dict = {}
    exec(sandbox.PROBE.replace("SPEC", repr(sandbox.integrity_spec())), ns)
    return ns["result"]


def _notebook_function(source: str, name: str):
    """A function as a notebook cell defines it (``__module__ == "__main__"``)."""
    ns = {"__name__": "__main__"}
    exec(source, ns)
    return ns[name]


def test_machinery_clean():
    assert [p for p in _probe() if "machinery" in p or "replaced by code from the notebook" in p] == []


@pytest.mark.parametrize("target, what", [
    ("sys.displayhook", "sys.displayhook"), ("builtins.__import__", "builtins.__import__"),
    ("random.getstate", "random.getstate"), ("builtins.len", "builtins.len")])
def test_machinery_hook_from_the_notebook_is_flagged(monkeypatch, target, what):
    import builtins
    import random

    module = {"sys": sys, "builtins": builtins, "random": random}[target.split(".")[0]]
    real = getattr(module, target.split(".")[1])
    hook = _notebook_function("def hook(*args, **kwargs):\n    return REAL(*args, **kwargs)\n", "hook")
    hook.__globals__["REAL"] = real
    monkeypatch.setattr(module, target.split(".")[1], hook)
    try:
        problems = _probe()
    finally:
        monkeypatch.undo()
    assert f"{what} was replaced by code from the notebook" in problems, problems


def test_machinery_profiler_and_grading_class(monkeypatch):
    import tl_course.grading as grading

    cls = next(v for v in vars(grading).values() if isinstance(v, type) and v.__module__ == grading.__name__
               and any(callable(f) for f in vars(v).values()))
    attr = next(k for k, f in vars(cls).items() if callable(f) and not k.startswith("__"))
    monkeypatch.setattr(cls, attr, _notebook_function("def fake(self, *a, **k):\n    return False\n", "fake"))
    profiler = _notebook_function("def prof(frame, event, arg):\n    pass\n", "prof")
    old = sys.getprofile()
    sys.setprofile(profiler)
    try:
        problems = _probe()
    finally:
        sys.setprofile(old)
    assert "sys.setprofile was replaced by code from the notebook" in problems, problems
    assert f"tl_course.grading.{cls.__name__}.{attr} was replaced by code from the notebook" in problems, problems
