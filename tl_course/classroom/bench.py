"""What grading a class costs on this machine: ``python -m tl_course.classroom bench`` prints one table.

A synthetic class is built in a temporary course folder from the repository's own notebooks, so the
expected score of every submission is known in advance:

- ``s01`` hands in the reference solution (``solutions/<id>/<id>.ipynb``, markers removed): full marks;
- ``s02`` hands in the untouched student notebook (``notebooks/<id>/<id>.ipynb``): 0;
- ``s03``, ``s04``, ... hand in one known mistake each from ``tl_course/classroom/mistakes/<id>.py`` (every answer cell
  holds the reference except the mistake's cells): fewer points than full marks.

The class is graded by :func:`tl_course.classroom.grade.grade_class` with one worker and with N, each into a fresh
SQLite gradebook. What the shared feature cache saves: the reference of ``ch05_cache_activations`` (the
cheapest notebook that reads the cache; ch02 and ch03 do not) is graded against an empty cache, then
against the same cache once that run filled it. The cold run executes without namespaces, so that its
kernel may write the cache (inside namespaces everything outside the job's folder is read-only). From
the one-worker seconds per notebook it projects a 300-student class on a 16-core machine (a linear
projection: see :func:`projection`). Timings go into the table as measured: on a machine shared with
other work they are inflated. ``bench(students=4)`` takes 3-8 minutes on 2 cores and returns the table
that README.md shows ("Grading benchmark").
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .gradebook import LEDGER_TABLE
from .grade import Options, grade_class
from .grouping import load_catalogue
from .jobs import default_workers
from .notebooks import fill_submission
from .release import ROOT
from .release import assignments as course_assignments

__all__ = ["DEFAULT_ASSIGNMENTS", "CACHE_ASSIGNMENT", "Planned", "build_class", "check_scores", "projection",
           "bench"]

#: the two cheapest notebooks (about 10 and 20 s here; ch01 and ch04 take 45-90 s, ch05-ch09 longer): the
#: class is graded twice, and the whole bench takes 5-8 minutes on 2 cores
DEFAULT_ASSIGNMENTS = ["ch02_cat_detector", "ch03_replace_softmax"]
#: the cheapest assignment whose notebook reads the shared feature cache (the cold / warm comparison)
CACHE_ASSIGNMENT = "ch05_cache_activations"


@dataclass(frozen=True)
class Planned:
    """One synthetic submission and what it must score: ``expect`` is "max", "zero" or "below max"."""

    student: str
    assignment: str
    kind: str          #: "reference", "blank" or "mistake: <name>"
    expect: str


def build_class(course: Path, assignments: list[str], students: int, repo: Path = ROOT) -> list[Planned]:
    """Fill ``course`` with the repository's ``nbgrader_config.py``, ``solutions/<id>`` and
    ``submitted/<student>/<id>/<id>.ipynb`` for ``students`` students per assignment (reference, blank,
    then one known mistake each, cycling through the catalogue; the reference again if there is none)."""
    course.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "nbgrader_config.py", course / "nbgrader_config.py")
    planned = []
    for assignment in assignments:
        source = repo / "solutions" / assignment / f"{assignment}.ipynb"
        released = repo / "notebooks" / assignment / f"{assignment}.ipynb"
        if not (source.is_file() and released.is_file()):
            raise ValueError(f"{assignment} is not an assignment of this course (no {source} or {released}).")
        shutil.copytree(repo / "solutions" / assignment, course / "solutions" / assignment,
                        ignore=shutil.ignore_patterns(".*", "__pycache__"))
        catalogue = load_catalogue(assignment)
        mistakes = sorted(catalogue.mistakes.items()) if catalogue else []
        for i in range(students):
            student = f"s{i + 1:02d}"
            if i == 1:
                nb, plan = nbformat.read(released, as_version=4), Planned(student, assignment, "blank", "zero")
            elif i >= 2 and mistakes:
                name, cells = mistakes[(i - 2) % len(mistakes)]
                nb = fill_submission(released, source, cells)
                plan = Planned(student, assignment, f"mistake: {name}", "below max")
            else:
                nb, plan = fill_submission(released, source), Planned(student, assignment, "reference", "max")
            folder = course / "submitted" / student / assignment
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / f"{assignment}.ipynb")
            planned.append(plan)
    return planned


# ---------------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------------
def projection(seconds_per_notebook: float, record_seconds: float = 0.0, students: int = 300,
               notebooks: int = 9, cores: int = 16, threads: int = 2) -> dict:
    """Hours to grade ``students`` x ``notebooks`` on ``cores`` cores with ``cores // threads`` workers of
    ``threads`` threads each, if every worker grades a notebook in ``seconds_per_notebook`` (the time one
    worker with ``threads`` threads takes here): a linear projection, no contention for memory, disk or the
    gradebook. Recording (nbgrader's autograde against the gradebook, then feedback) runs in the grader's
    one process, ``record_seconds`` per notebook, so the run can never be shorter than all the recording.

    >>> projection(20.0, 1.0)["hours"]        # 2700 notebooks x 20 s / 8 workers = 1.875 h; recording 0.75 h
    1.875
    """
    workers = max(1, cores // threads)
    total = students * notebooks
    parallel = total * seconds_per_notebook / workers / 3600
    serial = total * record_seconds / 3600
    return {"notebooks": total, "workers": workers, "threads": threads, "parallel_hours": parallel,
            "record_hours": serial, "hours": max(parallel, serial)}


def _mean(values) -> float:
    values = list(values)
    return statistics.mean(values) if values else 0.0


def _fmt_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------
@contextmanager
def _environ(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _scores(db_url: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(student, assignment) -> (score, max score), from the grader's ledger in the gradebook."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        table = sa.Table(LEDGER_TABLE, sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            return {(r.student_id, r.assignment_id): (r.score or 0.0, r.max_score or 0.0)
                    for r in conn.execute(sa.select(table))}
    finally:
        engine.dispose()


def check_scores(planned: list[Planned], scores: dict[tuple[str, str], tuple[float, float]]) -> list[str]:
    """What did not score as expected, one line each (empty: every submission did).

    >>> check_scores([Planned("s02", "ch02_cat_detector", "blank", "zero")], {("s02", "ch02_cat_detector"): (0, 10)})
    []
    """
    wrong = []
    for p in planned:
        got = scores.get((p.student, p.assignment))
        if got is None:
            wrong.append(f"{p.student}/{p.assignment} ({p.kind}): not in the gradebook")
            continue
        score, top = got
        ok = {"max": top > 0 and score == top, "zero": score == 0, "below max": score < top}[p.expect]
        if not ok:
            wrong.append(f"{p.student}/{p.assignment} ({p.kind}): {score:g} of {top:g}, expected {p.expect}")
    return wrong


def _grade(course: Path, db: Path, workers: int, cache: Path, **options):
    """One fresh grading run: (report, scores, seconds spent recording each notebook)."""
    opts = Options(course=course, db_url=f"sqlite:///{db}", workers=workers, force=True, progress=False,
                   warm=False, env={"TL_COURSE_CACHE": str(cache)}, **options)
    report = grade_class(opts)
    return report, _scores(opts.db_url), [t["record"] for t in report.timings.values() if "record" in t]


def bench(students: int = 4, workers: int | None = None, assignments: list[str] | None = None) -> str:
    """Build a synthetic class (``students`` per assignment: reference, blank, known mistakes), grade it with
    one worker and with ``workers`` (default: :func:`tl_course.classroom.jobs.default_workers`, at least 2), grade the reference
    of :data:`CACHE_ASSIGNMENT` against an empty and a filled feature cache, and return one Markdown table
    with two or three lines of context."""
    assignments = list(assignments or DEFAULT_ASSIGNMENTS)
    workers = max(2, workers or default_workers())
    students = max(1, students)
    cores = os.cpu_count() or 1
    profile_note = "" if os.environ.get("TL_COURSE_PROFILE") else " (set by the bench: TL_COURSE_PROFILE was not set)"
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="tl_course-grade-bench-"))
    os.chmod(root, 0o755)  # the sandbox's kernels read the submissions and the cache from here
    try:
        with _environ(TL_COURSE_PROFILE=os.environ.get("TL_COURSE_PROFILE") or "ci"):
            cache = root / "cache"
            cache.mkdir(mode=0o755)
            # 1. the shared feature cache: the same reference notebook against an empty cache, then a full one.
            #    The cold run executes without namespaces so that its kernel can write the cache (under
            #    namespaces the file system outside the job is read-only, see the report of this bench).
            cache_course = root / "cache-class"
            cache_plan = build_class(cache_course, [CACHE_ASSIGNMENT], 1)
            cold, cold_scores, _ = _grade(cache_course, root / "cold.db", 1, cache, isolation="none")
            cached_files = [p for p in cache.rglob("*.pt")]
            warm, warm_scores, _ = _grade(cache_course, root / "warm.db", 1, cache)
            cache_wrong = check_scores(cache_plan, cold_scores) + check_scores(cache_plan, warm_scores)
            # 2. the class, with one worker and with N (each in its own course folder and fresh gradebook)
            runs = {}
            for n in (1, workers):
                course = root / f"class-{n}"
                planned = build_class(course, assignments, students)
                report, scores, recorded = _grade(course, root / f"class-{n}.db", n, cache)
                runs[n] = (report, check_scores(planned, scores), recorded)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _table(runs, workers, cold, warm, cached_files, cache_wrong, assignments, students, cores,
                  os.environ.get("TL_COURSE_PROFILE") or "ci", profile_note, time.perf_counter() - start)


PARTS = [("kernel_start", "kernel start (and nbgrader before the first cell)"), ("imports", "imports (setup cell)"),
         ("model_load", "model load (cells calling load_pretrained)"), ("tests", "tests (graded test cells)"),
         ("other", "other cells")]


def _split(timings: dict) -> dict[str, float]:
    """Mean seconds of each part over the notebooks that ran (a submission that could not run has no split),
    plus ``rest``: the sandbox's start and clean-up and nbgrader after the last cell."""
    ran = [t for t in timings.values() if "tests" in t]
    out = {key: _mean(t[key] for t in ran) for key, _ in PARTS}
    out["seconds"] = _mean(t["seconds"] for t in ran)
    out["rest"] = _mean(t["seconds"] - sum(t[key] for key, _ in PARTS) for t in ran)
    return out


def _table(runs, workers, cold, warm, cached_files, cache_wrong, assignments, students, cores, profile,
           profile_note, total_seconds) -> str:
    one, many = runs[1][0], runs[workers][0]
    n_one, n_many = len(one.graded), len(many.graded)
    rate = {1: 60 * n_one / one.seconds, workers: 60 * n_many / many.seconds}
    split_one, split_many = _split(one.timings), _split(many.timings)
    job_one = _mean(t["seconds"] for t in one.timings.values())
    job_many = _mean(t["seconds"] for t in many.timings.values())
    record_one, record_many = _mean(runs[1][2]), _mean(runs[workers][2])
    setup_one = max(0.0, one.seconds - sum(t["seconds"] for t in one.timings.values()) - sum(runs[1][2]))
    cold_s = _mean(t["seconds"] for t in cold.timings.values())
    warm_s = _mean(t["seconds"] for t in warm.timings.values())
    n_course = len(course_assignments())  # the projection is for a whole course: every assignment it has
    light = projection(job_one, record_one, notebooks=n_course)
    heavy = projection(warm_s, record_one, notebooks=n_course)
    wrong = runs[1][1] + runs[workers][1] + cache_wrong
    failed = {**one.failed, **many.failed, **cold.failed, **warm.failed,
              **one.errors, **many.errors, **cold.errors, **warm.errors}
    speedup = rate[workers] / rate[1] if rate[1] else 0.0

    rows = [("measurement", "1 worker", f"{workers} workers"), ("---", "---", "---"),
            (f"notebooks graded ({len(assignments)} assignments × {students} students)", f"{n_one}", f"{n_many}"),
            ("wall time of the run", _fmt_time(one.seconds), _fmt_time(many.seconds)),
            ("**notebooks per minute**", f"**{rate[1]:.2f}**", f"**{rate[workers]:.2f}** ({speedup:.2f}× speed-up)"),
            ("seconds per notebook in its sandbox", f"{job_one:.1f} s", f"{job_many:.1f} s")]
    for key, label in PARTS + [("rest", "the rest: sandbox start and clean-up, nbgrader after the last cell")]:
        rows.append((f"— {label}", f"{split_one[key]:.1f} s", f"{split_many[key]:.1f} s"))
    rows.append(("recording in the gradebook + feedback, in the grader process (serial), per notebook",
                 f"{record_one:.1f} s", f"{record_many:.1f} s"))
    rows.append(("setup of a run (release into the gradebook, job templates, reports)", _fmt_time(setup_one), "—"))
    saving = 100 * (1 - warm_s / cold_s) if cold_s else 0.0
    rows.append((f"shared feature cache: {CACHE_ASSIGNMENT} reference, empty cache → filled",
                 f"{cold_s:.1f} s → {warm_s:.1f} s", f"saves {cold_s - warm_s:.1f} s per notebook ({saving:.0f} %); "
                 f"{len(cached_files)} cached activation files"))
    rows.append((f"projected: 300 students × {n_course} notebooks on 16 cores ({light['workers']} workers × "
                 f"{light['threads']} threads)", f"{light['hours']:.1f}–{heavy['hours']:.1f} h",
                 f"linear, from {job_one:.1f} s per notebook (the class) to {warm_s:.1f} s ({CACHE_ASSIGNMENT[:4]}, "
                 f"cache filled); {workers}-worker speed-up here: {speedup:.2f}×"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["| " + " | ".join(("-" * width[i]) if r[0] == "---" else r[i].ljust(width[i]) for i in range(3)) + " |"
             for r in rows]
    status = "expected scores: ok" if not wrong else "expected scores: MISMATCH: " + "; ".join(wrong)
    context = [
        f"Grading benchmark: {cores} CPU cores, TL_COURSE_PROFILE={profile}{profile_note}; class: "
        f"{', '.join(assignments)} × {students} students (reference, blank, then one known mistake each); "
        f"bench run {_fmt_time(total_seconds)}.",
        f"{status} (reference = full marks, blank = 0, known mistake < full marks; "
        f"{n_one + n_many + len(cold.graded) + len(warm.graded)} gradings)."
        + (f" Could not run: {failed}." if failed else ""),
        f"Projection: {light['notebooks']} notebooks, {light['workers']} workers × {light['threads']} threads on "
        f"16 cores, each worker as fast as this machine's one worker with {cores} threads: a linear projection "
        f"from this machine's seconds per notebook, from the cheap notebooks above to a heavy one; the grader's "
        f"serial recording ({record_one:.1f} s per notebook) alone takes {light['record_hours']:.1f} h.",
    ]
    return "\n".join(context[:1] + [""] + lines + [""] + context[1:])
