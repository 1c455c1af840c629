"""A hostile class, whole notebooks (issue 17): a small class of ``ch02_cat_detector`` graded by
``python -m tl_course.classroom grade`` into a throwaway PostgreSQL that trusts every local connection
(no password over its Unix socket, as peer authentication with the grader as root would), with a
root-only file beside the course, while the gradebook server is restarted for 3 s mid-run.

The students: the reference (10/10), the blank notebook (0/10) and the cases of
``tests/classroom/hostile.py``'s ``HOSTILE_CLASS``, each the reference plus something hostile, so each must
score 10/10 and hurt nobody:

- ``probe``: runs as an unprivileged user; cannot read the job's gradebook (the hidden tests), the job's
  files, a root-only file, other jobs; sees no other kernel nor the gradebook server on loopback nor its
  Unix socket, so cannot rewrite grades; fills at most its own size-limited disk;
- ``markup``: its <script>, onerror, javascript: link, Javascript output and terminal escapes run nowhere
  and reach the feedback escaped; no feedback shows a hidden test's source;
- ``line``: one 100 MB output line is trimmed with a note (feedback and stored notebook stay small);
- ``nonutf8``: a file whose name is not UTF-8 affects only its own submission;
- ``pasted``: a pasted copy of a test cell is graded once (10/10) and listed for review;
- ``tricks``: hooks in the interpreter's machinery (an assert-dropping input transformer, an import hook,
  a global ``str``, a patched grading class) fail the integrity check visibly (0/10) and are listed;
- a resubmission that deletes a test cell and answers it wrong gets 0 for that cell, not its old mark.

By default (``make test``) the cases marked ``sample`` run; ``TL_COURSE_HOSTILE=all`` (``make test-hostile``)
runs every case. Marked slow: a few minutes on 2 cores.
"""
from __future__ import annotations

import copy
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import nbformat
import pytest

import tl_course
from tl_course.classroom import guard, sandbox
from tl_course.classroom.notebooks import fill_submission, reference_answers

sys.path.insert(0, str(Path(__file__).resolve().parent / "classroom"))
import hostile  # noqa: E402
from postgres import ledger_count, postgres_bin, throwaway_postgres  # noqa: E402

ROOT = Path(tl_course.__file__).resolve().parents[1]
A = hostile.ASSIGNMENT
SOURCE = ROOT / "solutions" / A / f"{A}.ipynb"
RELEASED = ROOT / "notebooks" / A / f"{A}.ipynb"
DATA = Path(os.environ.get("TL_COURSE_DATA", ROOT.parent / "shared" / "data"))
ALL = os.environ.get("TL_COURSE_HOSTILE") == "all"
CASES = [name for name, spec in hostile.HOSTILE_CLASS.items() if ALL or spec["sample"]]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DATA / "oxford-iiit-pet" / "images").is_dir(), reason="no Oxford-IIIT Pet photos")]


def _server_files(port: int) -> tuple[Path, Path]:
    """The throwaway server's data folder and socket folder, found by its port (postmaster.pid, line 4)."""
    for pid_file in glob.glob("/tmp/tl-pg-*/data/postmaster.pid"):
        lines = Path(pid_file).read_text().splitlines()
        if len(lines) > 4 and lines[3].strip() == str(port):
            return Path(pid_file).parent, Path(lines[4].strip())
    raise RuntimeError(f"no throwaway PostgreSQL on port {port}")


def _restart(data: Path, sock: Path, port: int, pause: float) -> None:
    """Stop the server (fast: every connection is cut), wait ``pause`` seconds, start it again."""
    user = "postgres" if os.geteuid() == 0 else None
    ctl = postgres_bin("pg_ctl")
    subprocess.run([ctl, "-D", str(data), "-m", "fast", "-w", "stop"], check=True, capture_output=True, user=user)
    time.sleep(pause)
    subprocess.run([ctl, "-D", str(data), "-l", str(data.parent / "server.log"), "-w", "-t", "60", "-o",
                    f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True, user=user)


@pytest.fixture(scope="module")
def hostile_class():
    with throwaway_postgres() as db_url:
        port = int(db_url.rsplit(":", 1)[1].split("/")[0])
        data, sock = _server_files(port)
        parent = Path(tempfile.mkdtemp(prefix="tl-hostile-"))
        os.chmod(parent, 0o755)
        try:
            root = parent / "course"
            (root / "solutions").mkdir(parents=True)
            os.chmod(root, 0o755)
            shutil.copy(ROOT / "nbgrader_config.py", root)
            shutil.copytree(SOURCE.parent, root / "solutions" / A)
            secret = parent / "root-only.txt"
            secret.write_text("the instructor's private notes")
            os.chmod(secret, 0o600)
            fill = {"__SECRET__": str(secret), "__PG_PORT__": str(port), "__PG_SOCKET__": str(sock)}
            cases = hostile.class_sources(reference_answers(SOURCE), fill)
            students = {"reference": {}, "blank": None, **{f"h-{name}": cases[name] for name in CASES}}
            for sid, changed in students.items():
                folder = root / "submitted" / sid / A
                folder.mkdir(parents=True)
                nb = nbformat.read(RELEASED, as_version=4) if changed is None else fill_submission(RELEASED, SOURCE, changed)
                paste = hostile.HOSTILE_CLASS.get(sid[2:], {}).get("paste")
                if paste:  # a copy right below the original, metadata and all, with a cell id of its own
                    i = next(k for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == paste)
                    copied = copy.deepcopy(nb.cells[i])
                    copied["id"] = "pasted-copy"
                    nb.cells.insert(i + 1, copied)
                nbformat.write(nb, folder / f"{A}.ipynb")
                extra = hostile.HOSTILE_CLASS.get(sid[2:], {}).get("file")
                if extra:
                    (folder / os.fsdecode(extra)).write_bytes(b"notes\n")
            env = dict(os.environ, TL_COURSE_GRADEBOOK=db_url, PYTHONPATH=str(ROOT),
                       PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
            cmd = [sys.executable, "-m", "tl_course.classroom", "grade", "--course", str(root), "--workers", "2",
                   "--threads", "1", "--cell-timeout", "60", "--quiet"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            restarted = False
            deadline = time.monotonic() + 1200
            while proc.poll() is None and time.monotonic() < deadline:  # the gradebook goes away for 3 s mid-run
                if not restarted and ledger_count(db_url) >= 1:
                    _restart(data, sock, port, 3.0)
                    restarted = True
                time.sleep(0.5)
            out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            with open(root / "grading" / "grades.csv", newline="") as fh:
                grades = {r["student_id"]: float(r["score"]) for r in csv.DictReader(fh)}
            yield types.SimpleNamespace(root=root, students=students, returncode=proc.returncode, out=out, err=err,
                                        grades=grades, restarted=restarted, db_url=db_url)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def _outputs(root: Path, sid: str) -> str:
    nb = nbformat.read(root / "autograded" / sid / A / f"{A}.ipynb", as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_class_run_survives_and_scores(hostile_class):
    """Reference 10, blank 0, every hostile case 10: each cost nobody anything, itself included; the run
    rode out the gradebook restart and exited 0."""
    assert hostile_class.restarted, "the gradebook was never restarted: the run finished before any record"
    assert hostile_class.returncode == 0, hostile_class.out + hostile_class.err[-3000:]
    expected = {sid: (0.0 if changed is None else hostile.HOSTILE_CLASS.get(sid[2:], {}).get("score", 10.0))
                for sid, changed in hostile_class.students.items()}
    assert hostile_class.grades == expected, (hostile_class.grades, hostile_class.out)
    assert f"graded {len(expected)}, unchanged 0, could not run 0" in hostile_class.out


@pytest.mark.skipif(not sandbox.namespaces_available(), reason="the wall needs root, unshare, setpriv and ip")
def test_kernel_is_walled_off(hostile_class):
    line = next(l for l in _outputs(hostile_class.root, "h-probe").splitlines() if l.startswith("PROBE "))
    seen = json.loads(line[len("PROBE "):])
    assert seen["uid"] != 0, seen
    for what in ("gradebook", "secret", "job_json"):
        assert seen[what] != "READ", f"the kernel read the {what}: {seen}"
    assert seen["other_jobs"] == "PermissionError" or len(seen["other_jobs"]) <= 1, seen
    # its own network: the gradebook server's port is not there, and besides the kernel's own five ports
    # at most the grading process's one (no other kernel's five)
    port = int(hostile_class.db_url.rsplit(":", 1)[1].split("/")[0])
    assert port not in seen["listeners"] and len(seen["foreign_listeners"]) <= 1, seen
    assert seen["pg_tcp"] != "CONNECTED" and seen["pg_socket"] != "CONNECTED" and seen["pg_update"] != "UPDATED", seen
    assert seen["disk_written"] <= sandbox.SCRATCH_MB * 2**20 and seen["disk_stop"] == "OSError28", seen


def test_feedback_runs_no_student_markup(hostile_class):
    html = (hostile_class.root / "feedback" / "h-markup" / A / f"{A}.html").read_text(encoding="utf-8")
    head = html.split("<head>", 1)[1]
    assert head.startswith('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; script-src \'none\'')
    # (the student's source is shown, highlighted: the markup must not be live as elements)
    assert not re.search(r"<script[^>]*>[^<]*xss", html), "a student script is in the page"
    assert not re.search(r"<img[^>]*onerror", html), "an onerror handler is live"
    assert not re.search(r"href=\"javascript:", html), "a javascript: link is live"
    assert not any(c in html for c in "\x1b\x07\x00"), "raw control characters in the feedback"


def test_feedback_shows_no_hidden_test_source(hostile_class):
    hidden = [line.strip() for cell in nbformat.read(SOURCE, as_version=4).cells if "BEGIN HIDDEN TESTS" in cell.source
              for line in cell.source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS")[0].splitlines()
              if len(line.strip()) > 15]
    assert hidden
    for page in (hostile_class.root / "feedback").rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        import html as html_lib

        text = html_lib.unescape(re.sub(r"<[^>]+>", "", text))
        shown = [line for line in hidden if line in text]
        assert not shown, f"{page}: hidden test source shown: {shown[:3]}"


@pytest.mark.skipif("line" not in CASES, reason="TL_COURSE_HOSTILE=all only")
def test_one_huge_line_is_trimmed(hostile_class):
    page = hostile_class.root / "feedback" / "h-line" / A / f"{A}.html"
    stored = hostile_class.root / "autograded" / "h-line" / A / f"{A}.ipynb"
    assert page.stat().st_size < 5 * 2**20 and stored.stat().st_size < 5 * 2**20
    assert "characters trimmed" in _outputs(hostile_class.root, "h-line")


@pytest.mark.skipif("nonutf8" not in CASES, reason="TL_COURSE_HOSTILE=all only")
def test_non_utf8_name_affects_only_itself(hostile_class):
    assert hostile_class.grades["h-nonutf8"] == 10.0


@pytest.mark.skipif("pasted" not in CASES, reason="a sample case")
def test_pasted_test_cell_is_graded_once_and_listed(hostile_class):
    assert hostile_class.grades["h-pasted"] == 10.0
    summary = (hostile_class.root / "grading" / "summary.md").read_text(encoding="utf-8")
    assert (f"- h-pasted / {A}: a pasted copy of test cell test_cat_label is graded once") in summary


@pytest.mark.skipif("tricks" not in CASES, reason="TL_COURSE_HOSTILE=all only")
def test_machinery_tricks_fail_visibly_and_are_listed(hostile_class):
    html = (hostile_class.root / "feedback" / "h-tricks" / A / f"{A}.html").read_text(encoding="utf-8")
    assert "CourseCodeModified" in html and "replaced by code from the notebook" in html
    summary = (hostile_class.root / "grading" / "summary.md").read_text(encoding="utf-8")
    line = next(l for l in summary.splitlines() if l.startswith(f"- h-tricks / {A}:"))
    for what in ("IPython internals", "import system", "the course's grading module", "shadows a builtin"):
        assert what in line, line


@pytest.mark.skipif(not ALL, reason="TL_COURSE_HOSTILE=all only")
def test_resubmission_cannot_keep_a_deleted_cells_mark(hostile_class):
    """The reference (10/10) resubmits with test_cat_label deleted and cat_label wrong: that cell is restored
    and scores 0; nothing else changes. Runs last: it regrades one submission of the class."""
    from nbgrader.api import Gradebook

    answers = reference_answers(SOURCE)
    answers["cat_label"] = "def cat_label(breed):\n    return 2\n"
    nb = fill_submission(RELEASED, SOURCE, answers)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_cat_label"]
    nbformat.write(nb, hostile_class.root / "submitted" / "reference" / A / f"{A}.ipynb")
    env = dict(os.environ, TL_COURSE_GRADEBOOK=hostile_class.db_url, PYTHONPATH=str(ROOT),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "tl_course.classroom", "grade", "--course", str(hostile_class.root),
                           "--quiet", "--no-warm"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "graded 1," in proc.stdout, proc.stdout + proc.stderr[-2000:]
    with Gradebook(hostile_class.db_url) as gb:
        cells = {g.name: g.score for nb_ in gb.find_submission(A, "reference").notebooks for g in nb_.grades}
    assert cells["test_cat_label"] == 0.0 and sum(cells.values()) == 9.0, cells
    summary = (hostile_class.root / "grading" / "summary.md").read_text(encoding="utf-8")
    assert f"- reference / {A}: the deleted test cell test_cat_label was restored at the end and graded" in summary


def test_second_grader_on_the_gradebook_is_refused(tmp_path):
    """Two course folders, one PostgreSQL gradebook: the advisory lock refuses the second grader."""
    with throwaway_postgres() as db_url:
        with guard.course_lock(tmp_path / "one", db_url):
            with pytest.raises(guard.AnotherGrader, match="already grading this course's gradebook"):
                with guard.course_lock(tmp_path / "two", db_url):
                    pass
        with guard.course_lock(tmp_path / "two", db_url):   # released with the first grader
            pass
