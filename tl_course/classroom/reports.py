"""What a grading run leaves for the instructor: ``grades.csv`` (nbgrader's CSV export) and ``summary.md``
(the score distribution per assignment, the test cells that fail most, the submissions not graded, and the
submissions that ran another ``TL_COURSE_PROFILE`` than the one they were graded with)."""
from __future__ import annotations

import json
import re
import statistics
import warnings
from collections.abc import Mapping
from pathlib import Path

from . import safety
from .notebooks import grade_id, is_test

__all__ = ["failing_cells", "printed_profile", "profile_mismatches", "sparkline", "write_reports"]

#: the setup cell of every notebook prints "..., device cpu, profile ci"
_PROFILE = re.compile(r"\bprofile (\w+)")


def failing_cells(executed_json: str | None) -> list[str]:
    """Grade ids of the graded test cells with an error output in an executed notebook (JSON text)."""
    import nbformat

    if not executed_json:
        return []
    nb = nbformat.reads(executed_json, as_version=4)
    return [grade_id(c) for c in nb.cells
            if is_test(c) and any(o.get("output_type") == "error" for o in c.get("outputs", []))]


def printed_profile(nb: Mapping) -> str | None:
    """The ``TL_COURSE_PROFILE`` a notebook ran with, as its setup cell printed it (``... profile ci``);
    None when the setup cell has no such output (never run, or outputs cleared).

    >>> printed_profile({"cells": [{"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "setup"}},
    ...     "outputs": [{"output_type": "stream", "name": "stdout", "text": "tl_course 0.1.0, device cpu, profile cpu\\n"}]}]})
    'cpu'
    """
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or grade_id(cell) != "setup":
            continue
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            match = _PROFILE.search("".join(text) if isinstance(text, list) else text)
            if out.get("output_type") == "stream" and match:
                return match.group(1)
    return None


def _notebook_profile(path: Path) -> str | None:
    try:
        return printed_profile(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return None


def profile_mismatches(course: Path, submissions: list[tuple[str, str]], submitted: str = "submitted",
                       autograded: str = "autograded") -> list[str]:
    """One line per submission whose student ran another profile than the grader's run of it: the profile
    printed in the handed-in notebook against the one printed in the autograded notebook. A notebook
    handed in without outputs has nothing to compare and is left out."""
    lines = []
    for student, assignment in submissions:
        name = f"{assignment}.ipynb"
        ran = _notebook_profile(course / submitted / student / assignment / name)
        graded = _notebook_profile(course / autograded / student / assignment / name)
        if ran and graded and ran != graded:
            lines.append(f"{student} / {assignment}: ran with profile {ran}, graded with profile {graded}")
    return lines


def sparkline(scores: list[float], top: float) -> str:
    """Five bars, the count of scores in each fifth of ``0 .. top`` (``·``: none).

    >>> sparkline([0, 10, 10, 10], 10)
    '▃···█'
    """
    bars = " ▁▂▃▄▅▆▇█"
    if not top:
        return ""
    bins = [0] * 5
    for s in scores:
        bins[min(4, int(5 * s / top))] += 1
    return "".join(bars[round(8 * b / max(bins))] if b else "·" for b in bins)


def write_reports(config, engine, ledger, out: Path, isolated: bool | None = None) -> tuple[Path, Path, list[str]]:
    """``grades.csv`` (nbgrader's CSV export: one row per student and assignment) and ``summary.md``: the
    score distribution per assignment, the test cells that fail most, the submissions not graded, the
    submissions run with another profile, what was not isolated (``isolated`` False: the notebooks of this
    run ran without the namespaces wall), the submissions for review. Returns the two paths and the
    profile warnings."""
    import sqlalchemy as sa
    from nbgrader.api import Gradebook
    from nbgrader.plugins import CsvExportPlugin

    out.mkdir(parents=True, exist_ok=True)
    csv_path, summary_path = out / "grades.csv", out / "summary.md"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Gradebook(config.CourseDirectory.db_url) as gb:
            CsvExportPlugin(to=str(csv_path), parent=None).export(gb)
            fails: dict[str, dict[str, int]] = {}
            for assignment in gb.assignments:
                counts = fails.setdefault(assignment.name, {})
                for submission in assignment.submissions:
                    for notebook in submission.notebooks:
                        for grade in notebook.grades:
                            if grade.max_score and (grade.score or 0) < grade.max_score:
                                counts[grade.name] = counts.get(grade.name, 0) + 1
    with engine.connect() as conn:
        every = list(conn.execute(sa.select(ledger).order_by(ledger.c.assignment_id, ledger.c.student_id)))
    rows = [r for r in every if r.status != "error"]
    errors = [r for r in every if r.status == "error"]
    lines = ["# Grading summary", "", f"{len(rows)} submissions graded "
             f"({sum(r.status == 'failed' for r in rows)} could not run and scored 0).", "",
             "| assignment | submissions | mean | median | min | max | distribution (0 → max) | fails most |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for assignment in sorted({r.assignment_id for r in rows}):
        scores = [r.score or 0.0 for r in rows if r.assignment_id == assignment]
        top = max((r.max_score or 0.0 for r in rows if r.assignment_id == assignment), default=0.0)
        worst = sorted(fails.get(assignment, {}).items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"| {assignment} | {len(scores)} | {statistics.mean(scores):.1f} | "
                     f"{statistics.median(scores):g} | {min(scores):g} | {max(scores):g} | "
                     f"{sparkline(scores, top)} | " + ", ".join(f"{g} ({n})" for g, n in worst) + " |")
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        lines += ["", "## Not graded (scored 0, the reason is in their feedback)", ""]
        lines += [f"- {safety.one_line(r.student_id)} / {safety.one_line(r.assignment_id)}: {safety.one_line(r.reason)}"
                  for r in failed]
    if errors:
        lines += ["", "## Not graded because of the grader (nothing recorded: run the same command again)", ""]
        lines += [f"- {safety.one_line(r.student_id)} / {safety.one_line(r.assignment_id)}: {safety.one_line(r.reason)}"
                  for r in errors]
    course = Path(config.CourseDirectory.root)
    mismatched = profile_mismatches(course, [(r.student_id, r.assignment_id) for r in rows if r.status == "graded"],
                                    config.CourseDirectory.get("submitted_directory", "submitted"),
                                    config.CourseDirectory.get("autograded_directory", "autograded"))
    if mismatched:
        lines += ["", "## Ran with another profile (TL_COURSE_PROFILE) than the grader's", "",
                  "A test tuned to one profile's sizes may fail under another: check these before trusting "
                  "their scores.", ""]
        lines += [f"- {line}" for line in mismatched]
    if isolated is False:
        lines += ["", "## Not isolated", "",
                  "This run's notebooks ran without the namespaces wall (the grader is not root, a tool is "
                  "missing, or --isolation none): each kernel ran as the grader's user, could read and change "
                  "what it can (the gradebook file, the shared cache, the other jobs' working copies with their "
                  "hidden tests), reach the network and the other kernels on loopback, and fill the shared disk. "
                  "See book/instructors.md, \"Untrusted notebooks\"."]
    flagged = review_list(course, [(r.student_id, r.assignment_id) for r in rows],
                          config.CourseDirectory.get("submitted_directory", "submitted"),
                          Path(config.CourseDirectory.get("release_directory", "release")))
    if flagged:
        lines += ["", "## For review: cells that touch the interpreter's machinery", "",
                  "Whatever they scored: student code and the tests share one kernel, and these cells change "
                  "what the tests rely on (see book/instructors.md, \"Untrusted notebooks\"). Read them.", ""]
        lines += [f"- {line}" for line in flagged]
    summary_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, summary_path, mismatched


def _repairs(nb: dict, release: Path | None, assignment: str) -> list[str]:
    import copy

    from .repair import repair_cells, test_cells

    path = (release / assignment / f"{assignment}.ipynb") if release else None
    try:
        tests = test_cells(json.loads(path.read_text(encoding="utf-8"))["cells"]) if path else []
    except (OSError, ValueError, KeyError):
        return []
    cells = copy.deepcopy([c for c in nb.get("cells", []) if isinstance(c, dict)])
    return repair_cells(cells, tests) if tests else []


def review_list(course: Path, submissions: list[tuple[str, str]], submitted: str = "submitted",
                release: Path | None = None) -> list[str]:
    """One line per submission whose own cells touch the interpreter's machinery
    (:func:`tl_course.classroom.review.machinery_cells`) or whose test cells were put right (a deleted one
    restored, a pasted copy graded once: :func:`tl_course.classroom.repair.repair_cells`, against the
    release notebooks in ``release``): ``student / assignment: cell (what), ...``, escaped.

    >>> review_list(Path("/nonexistent"), [("alice", "ch02_cat_detector")])
    []
    """
    from .review import machinery_cells

    out = []
    for student, assignment in submissions:
        path = course / submitted / student / assignment / f"{assignment}.ipynb"
        try:
            nb = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError):
            continue
        if not isinstance(nb, dict):
            continue
        items = [f"{safety.one_line(name)} ({', '.join(hits)})" for name, hits in machinery_cells(nb)]
        items += [safety.one_line(note) for note in _repairs(nb, release, assignment)]
        if items:
            out.append(f"{safety.one_line(student)} / {safety.one_line(assignment)}: " + "; ".join(items))
    return out
