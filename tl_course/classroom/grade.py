"""Grade a whole class: ``python -m tl_course.classroom grade``.

Every ``submitted/<student>/<assignment>/`` of an nbgrader course folder is autograded by nbgrader's own
API, in parallel, into the course's gradebook (SQLite by default, PostgreSQL through ``--db-url`` or
``$TL_COURSE_GRADEBOOK``), then feedback is generated and the grades exported (:mod:`.reports`).

How one submission is graded (two phases, so that student code never touches the gradebook):

1. **execute** (:func:`tl_course.classroom.sandbox.run_job`, on a worker): nbgrader ``autograde`` in a
   private working copy with a private SQLite gradebook (:func:`tl_course.classroom.jobs.make_job`), inside
   time, memory and file-size limits, with a scrubbed environment and an integrity check of ``tl_course``
   around every test cell;
2. **record** (:func:`tl_course.classroom.recording.record`, in this process): nbgrader ``autograde`` of the
   same submission against the real gradebook, with the outputs of phase 1 replayed (or, when phase 1
   failed, an error with the reason in every test cell); ``generate_feedback`` writes the HTML report.

Resumable and idempotent: a ledger table in the gradebook (:mod:`.gradebook`) holds a SHA-256 of every
graded submission (:mod:`.submissions`). A re-run grades what is missing or changed, and what the grader
itself could not grade last time (stopped, a worker lost); nbgrader keeps one submission per student and
assignment, so grading twice never doubles a grade.

One run owns its state: the stop event that tells its running jobs to kill their notebooks (Ctrl-C, an
error) is made by :func:`grade_class` and dies with it, so an interrupted run in a Jupyter session leaves
nothing behind for the next one.

Parallel engines (:func:`tl_course.classroom.jobs.engine_executor`): a local thread pool whose threads
each wait on one sandboxed child process (the default), or Dask distributed (``--scheduler tcp://...``
or ``--dask`` for a ``LocalCluster``), both driven through the same ``concurrent.futures`` interface.
Jobs are self-contained, so remote workers need the course package and the photos, not the course
folder or the database.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from . import guard, recording, sandbox
from .gradebook import (GradingError, course_config, done_digests, ensure_release, open_engine, resolve_db_url,
                        tables, write_ledger)
from .jobs import default_workers, engine_executor, job_template, make_job, shared_cache
from .reports import failing_cells, write_reports
from .submissions import Submission, find_submissions

__all__ = ["Options", "Report", "grade_class"]


@dataclass
class Options:
    """What ``python -m tl_course.classroom grade`` was asked to do (one field per command-line option)."""

    course: Path = Path(".")
    assignments: list[str] = field(default_factory=list)   #: default: every assignment with submissions
    students: list[str] = field(default_factory=list)      #: default: everyone
    db_url: str | None = None          #: default: $TL_COURSE_GRADEBOOK, else nbgrader_config.py's
    workers: int | None = None         #: default: cores // 2 (each worker gets 2 threads)
    threads: int | None = None         #: torch/OpenMP threads per worker (default: cores // workers)
    scheduler: str | None = None       #: None: local threads; "local": Dask LocalCluster; "tcp://...": Dask
    timeout: float = 900.0             #: wall-clock seconds for one submission
    cell_timeout: int | None = None    #: nbgrader's per-cell timeout (default: nbgrader_config.py's)
    memory_gb: float | None = 8.0      #: address-space limit of one submission's processes
    isolation: str = "auto"            #: "namespaces" (read-only system, hidden course; needs root), "none", "auto"
    force: bool = False                #: regrade everything
    retries: int = 1                   #: re-run a failed submission this many times (a neighbour may have hurt it)
    warm: bool = True                  #: run each instructor solution once first, to fill the shared caches
    out: Path | None = None            #: grades.csv and summary.md (default: <course>/grading)
    work_dir: Path | None = None       #: working copies of the jobs (default: the system's temp folder)
    progress: bool = True
    feedback: bool = True
    env: dict = field(default_factory=dict)  #: extra environment for the kernels (e.g. TL_COURSE_PROFILE)


@dataclass
class Report:
    """What one run did: graded (recorded in the gradebook), skipped (already graded, unchanged), failed
    (graded: scored 0 with a reason), errors (not graded because of the grader; the next run tries again), the seconds per notebook (``timings``: the sandbox's split
    and ``record``, the seconds spent recording it), the reports written and their profile warnings."""

    graded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[tuple[str, str], dict] = field(default_factory=dict)
    csv: Path | None = None
    summary: Path | None = None
    profile_warnings: list[str] = field(default_factory=list)


def grade_class(opts: Options) -> Report:
    """Grade every submission that is new or changed (all with ``force``); see the module docstring. On a
    course folder holding one reference and one blank submission of a 10-point assignment it returns a
    report with both in ``graded`` and nothing in ``failed`` (``tests/test_grade.py`` runs it). A second
    grader on the same course or gradebook is refused (:func:`tl_course.classroom.guard.course_lock`); a
    gradebook outage is waited out (:func:`tl_course.classroom.guard.with_retries`)."""
    course = Path(opts.course).resolve()
    db_url = resolve_db_url(course, opts.db_url)
    with guard.course_lock(course, db_url):
        return _grade_class(opts, course, db_url)


def _grade_class(opts: Options, course: Path, db_url: str) -> Report:
    start = time.perf_counter()
    config = course_config(course, db_url)
    if opts.cell_timeout is None:  # a copy: the caller's Options stay as given, for the next run
        opts = dataclasses.replace(opts, cell_timeout=int(config.Execute.get("timeout", 0)
                                                           or config.ExecutePreprocessor.get("timeout", 0) or 300))
    work = course / ".grade"
    work.mkdir(exist_ok=True)
    subs = find_submissions(course, opts.assignments or None, opts.students or None)
    report = Report()
    engine = open_engine(db_url)
    up = lambda: guard.reachable(engine)  # noqa: E731 - is the gradebook there at all (else: wait, retry)
    ledger, sources = guard.with_retries(lambda: tables(engine), up)
    done = guard.with_retries(lambda: done_digests(engine, ledger), up)
    todo = [s for s in subs if opts.force or done.get((s.student, s.assignment)) != s.digest]
    report.skipped = [(s.student, s.assignment) for s in subs if s not in todo]
    workers = max(1, opts.workers or default_workers())
    threads = opts.threads or max(1, (os.cpu_count() or 1) // workers)
    templates = {}
    for assignment in sorted({s.assignment for s in todo}):
        templates[assignment] = job_template(config, assignment, work)
        ensure_release(config, assignment, engine, sources, templates[assignment]["source_digest"])
    if todo:
        if opts.isolation == "namespaces" and not sandbox.namespaces_available():
            raise GradingError("--isolation namespaces needs root and util-linux's unshare and setpriv on this machine.")
        stop = threading.Event()  # this run's: set on Ctrl-C or an error, so its running jobs return at once
        with engine_executor(workers, opts.scheduler) as ex:
            # a local job waits on the run's stop event; a job sent to Dask is plain data and gets none
            run = functools.partial(sandbox.run_job, stop=stop) if isinstance(ex, ThreadPoolExecutor) else sandbox.run_job
            try:
                if opts.warm:
                    _warm(ex, run, config, templates, opts, threads)
                _run_jobs(ex, run, todo, templates, opts, threads, config, engine, ledger, report, work)
            except BaseException:
                stop.set()  # running jobs kill their notebooks and return; nothing of theirs is recorded
                raise
    report.csv, report.summary, report.profile_warnings = guard.with_retries(
        lambda: write_reports(config, engine, ledger, opts.out or course / "grading",
                              isolated=None if not todo or opts.scheduler else
                              opts.isolation != "none" and sandbox.namespaces_available()), up)
    report.seconds = time.perf_counter() - start
    return report


def _warm(ex, run, config, templates: dict, opts: Options, threads: int) -> None:
    """Run each instructor solution once, as yourself, so the activations of the course photos are in the
    shared cache before the students' notebooks (which may not write it) need them."""
    cache = shared_cache(opts)
    cache.mkdir(parents=True, exist_ok=True)
    stamps = cache / ".grade-warm"
    source_root = Path(config.CourseDirectory.root) / config.CourseDirectory.source_directory
    profile = opts.env.get("TL_COURSE_PROFILE") or os.environ.get("TL_COURSE_PROFILE", "default")
    futures = {}
    for assignment, template in templates.items():
        stamp = stamps / f"{assignment}-{template['source_digest'][:16]}-{profile}"
        if stamp.exists():
            continue
        sub = Submission("instructor-warm-up", assignment, source_root / assignment, template["source_digest"])
        futures[ex.submit(run, make_job(template, sub, opts, threads, trusted=True))] = (assignment, stamp)
    for future, (assignment, stamp) in futures.items():
        result = future.result()
        lost = failing_cells(result.get("executed")) if result["status"] == "graded" else ["all"]
        if lost:
            print(f"warning: the instructor solution of {assignment} does not pass its own tests here "
                  f"({result.get('reason') or ', '.join(lost)}); grading goes on.", file=sys.stderr)
            continue
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()


def _run_jobs(ex, run, todo, templates, opts, threads, config, engine, ledger, report, work) -> None:
    """Submit every job, record each result as it comes (phase 2), retry what failed, fill ``report``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="nb", desc="grading", disable=not opts.progress, file=sys.stderr)
    attempts: dict[Submission, int] = {}
    pending: dict[Future, Submission] = {}

    def submit(sub: Submission) -> None:
        attempts[sub] = attempts.get(sub, 0) + 1
        try:
            job = make_job(templates[sub.assignment], sub, opts, threads)
        except (OSError, ValueError) as err:  # an unreadable file in one submission fails that one only
            future: Future = Future()
            future.set_result({"status": "failed", "seconds": 0.0, "timings": {}, "reason": (
                f"the submission's files could not be read ({type(err).__name__}: {err}); every test cell scores 0.")})
            attempts[sub] = opts.retries + 1
            pending[future] = sub
            return
        pending[ex.submit(run, job)] = sub

    for sub in todo:
        submit(sub)
    try:
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                sub = pending.pop(future)
                try:
                    result = future.result()
                except Exception as err:  # noqa: BLE001 - a lost Dask worker, not the notebook's doing
                    result = {"status": "failed", "reason": f"the worker was lost ({type(err).__name__}: {err}).",
                              "grader_side": True, "seconds": 0.0, "timings": {}}
                if result["status"] == "failed" and attempts[sub] <= opts.retries:
                    submit(sub)  # a neighbour can take a kernel down (same sandbox user): try once more
                    continue
                _settle(sub, result, opts, config, engine, ledger, report, work)
                bar.update(1)
                bar.set_postfix(failed=len(report.failed) + len(report.errors))
    except BaseException:
        for future in pending:
            future.cancel()
        raise
    finally:
        bar.close()


def _settle(sub: Submission, result: dict, opts: Options, config, engine, ledger, report: Report, work: Path) -> None:
    """One result into the gradebook and the ledger. A failure of the grader's own (stopped, a worker
    lost, no process could start) is not the student's: the gradebook keeps what it had, the ledger marks
    it ``error`` (graded again by the next run), and the report lists it."""
    key = (sub.student, sub.assignment)
    seconds = result.get("seconds", 0.0)
    if result.get("grader_side"):
        write_ledger(engine, ledger, sub.student, sub.assignment, sub.digest, "error", result["reason"],
                     seconds=seconds)
        report.errors[key] = result["reason"]
        return
    t0 = time.perf_counter()
    up = lambda: guard.reachable(engine)  # noqa: E731 - a gradebook outage is waited out, then recorded
    score = guard.with_retries(lambda: recording.record(config, sub, result, feedback=opts.feedback, work=work), up)
    guard.with_retries(lambda: write_ledger(engine, ledger, sub.student, sub.assignment, sub.digest,
                                            result["status"], result.get("reason", ""), score, seconds), up)
    report.graded.append(key)
    report.timings[key] = {"seconds": seconds, **result.get("timings", {}), "record": time.perf_counter() - t0}
    if result["status"] == "failed":
        report.failed[key] = result["reason"]
