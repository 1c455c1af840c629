"""Grade a whole class: ``python -m tl_course.classroom.grade``.

Every ``submitted/<student>/<assignment>/`` of an nbgrader course folder is autograded by nbgrader's own
API, in parallel, into the course's gradebook (SQLite by default, PostgreSQL through ``--db-url``), then
feedback is generated and the grades exported::

    python -m tl_course.classroom.grade                       # every submission not graded yet, one worker per 2 cores
    python -m tl_course.classroom.grade --import-zip lms.zip --assignment ch03_replace_softmax
    python -m tl_course.classroom.grade --db-url postgresql://grader@db/course --workers 8
    python -m tl_course.classroom.grade --scheduler tcp://10.0.0.5:8786    # on a Dask cluster
    python -m tl_course.classroom.grade --bench               # what it costs on this machine, one table

How one submission is graded (two phases, so that student code never touches the gradebook):

1. **execute** (:func:`tl_course.classroom.sandbox.run_job`, on a worker): nbgrader ``autograde`` in a private working
   copy with a private SQLite gradebook, inside time, memory and file-size limits, with a scrubbed
   environment and an integrity check of ``tl_course`` around every test cell;
2. **record** (:func:`record`, in this process): nbgrader ``autograde`` of the same submission against the
   real gradebook, with nbgrader's ``Execute`` step replaced by :class:`ReplayOutputs`, which puts in the
   outputs of phase 1 (or, when phase 1 failed, an error with the reason in every test cell). nbgrader's
   own ``SaveAutoGrades`` scores them; ``generate_feedback`` writes the HTML report.

Resumable and idempotent: a ledger table in the gradebook (``tl_course_grading``) holds a SHA-256 of every
graded submission. A re-run grades what is missing or changed; nbgrader keeps one submission per
student and assignment, so grading twice never doubles a grade.

Parallel engines: a local thread pool whose threads each wait on one sandboxed child process (the
default: nothing to install or start), or Dask distributed (``--scheduler tcp://...`` or ``--dask`` for
a ``LocalCluster``): both are driven through the same ``concurrent.futures`` interface
(``Client.get_executor``). Jobs are self-contained, so remote workers need the course package and
the photos, not the course folder or the database.
"""
from __future__ import annotations

import argparse
import base64
import copy
import functools
import hashlib
import os
import shutil
import statistics
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import guard, safety, sandbox

__all__ = ["Options", "Submission", "Report", "find_submissions", "import_zip", "grade_class", "record", "main"]

LEDGER_TABLE = "tl_course_grading"
SOURCES_TABLE = "tl_course_sources"
#: LMS downloads name files "<student id>_<anything>.ipynb"; change with --student-regexp
DEFAULT_NAME_REGEXP = r".*/(?P<student_id>[A-Za-z0-9.@-]+)_(?:.*_)?(?P<file_id>ch\d\d_[a-z0-9_]+?)(?:[ _-]*\(?\d+\)?)?\.ipynb$"


class GradingError(RuntimeError):
    """Something the instructor must fix before grading can go on (one sentence)."""


@dataclass
class Options:
    """What ``python -m tl_course.classroom.grade`` was asked to do (one field per command-line option)."""

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


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    folder: Path
    digest: str


@dataclass
class Report:
    """What one run did: graded, skipped (already graded, unchanged), failed (scored 0 with a reason)."""

    graded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[tuple[str, str], dict] = field(default_factory=dict)
    csv: Path | None = None
    summary: Path | None = None


# ---------------------------------------------------------------------------------------------
# The course folder and its gradebook
# ---------------------------------------------------------------------------------------------
def resolve_db_url(course: Path, db_url: str | None = None) -> str:
    """``--db-url``, else ``$TL_COURSE_GRADEBOOK``, else ``nbgrader_config.py``'s (a relative SQLite path is
    taken inside the course folder).

    >>> resolve_db_url(Path("course"))
    'sqlite:////abs/course/gradebook.db'
    """
    url = db_url or os.environ.get("TL_COURSE_GRADEBOOK") or _config_file(course).CourseDirectory.get("db_url")
    url = url or "sqlite:///gradebook.db"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{(course / url[len('sqlite:///'):]).resolve()}"
    return url


def _config_file(course: Path):
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    path = course / "nbgrader_config.py"
    if not path.exists():
        return Config()
    return PyFileConfigLoader("nbgrader_config.py", path=str(course.resolve())).load_config()


def course_config(course: Path, db_url: str):
    """The course's nbgrader configuration with its folders made absolute and the grading's own release
    folder (``generate_assignment --force`` wipes its release folder: never the course's ``notebooks/``)."""
    config = copy.deepcopy(_config_file(course))
    course = course.resolve()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = db_url
    config.CourseDirectory.release_directory = str(course / ".grade" / "release")
    config.CourseDirectory.source_directory = config.CourseDirectory.get("source_directory", "source")
    return config


def _api(config):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    return NbGraderAPI(CourseDirectory(config=config), config=config)


def _engine(db_url: str):
    import sqlalchemy as sa

    return sa.create_engine(db_url, pool_pre_ping=True)  # a connection lost in a server restart is replaced


def _tables(engine):
    import sqlalchemy as sa

    meta = sa.MetaData()
    ledger = sa.Table(LEDGER_TABLE, meta,
                      sa.Column("student_id", sa.String(128), primary_key=True),
                      sa.Column("assignment_id", sa.String(128), primary_key=True),
                      sa.Column("digest", sa.String(64), nullable=False),
                      sa.Column("status", sa.String(16), nullable=False),
                      sa.Column("reason", sa.Text, nullable=False, default=""),
                      sa.Column("score", sa.Float), sa.Column("max_score", sa.Float),
                      sa.Column("seconds", sa.Float), sa.Column("graded_at", sa.DateTime))
    sources = sa.Table(SOURCES_TABLE, meta,
                       sa.Column("assignment_id", sa.String(128), primary_key=True),
                       sa.Column("digest", sa.String(64), nullable=False))
    meta.create_all(engine)
    return ledger, sources


def _visible_files(folder: Path) -> list[Path]:
    """A submission's files, sorted: hidden files and folders (``.ipynb_checkpoints``) left out."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def folder_digest(folder: Path) -> str:
    """SHA-256 of a folder's files (names and bytes; hidden files and checkpoints left out)."""
    h = hashlib.sha256()
    for path in _visible_files(folder):
        # os.fsencode: a name that is not UTF-8 (surrogate-escaped) hashes as its bytes, not an error
        h.update(os.fsencode(path.relative_to(folder)) + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def find_submissions(course: Path, assignments: list[str] | None = None,
                     students: list[str] | None = None, submitted: str = "submitted") -> list[Submission]:
    """Every ``submitted/<student>/<assignment>/`` holding ``<assignment>.ipynb``, with its digest.

    >>> [s.student for s in find_submissions(Path("course"), ["ch01_pretrained_weights"])]
    ['alice', 'bob']
    """
    root = course / submitted
    found = []
    if not root.is_dir():
        return found
    for student_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if students and student_dir.name not in students:
            continue
        for folder in sorted(p for p in student_dir.iterdir() if p.is_dir()):
            if assignments and folder.name not in assignments:
                continue
            if (folder / f"{folder.name}.ipynb").is_file():
                found.append(Submission(student_dir.name, folder.name, folder, folder_digest(folder)))
    return found


# ---------------------------------------------------------------------------------------------
# Taking the class in: an LMS download through nbgrader's zip_collect
# ---------------------------------------------------------------------------------------------
def import_zip(course: Path, archive: Path, assignment: str, name_regexp: str = DEFAULT_NAME_REGEXP,
               db_url: str | None = None, max_total: int = safety.MAX_ZIP_TOTAL,
               max_entry: int = safety.MAX_ZIP_ENTRY) -> dict:
    """Put an LMS download (a zip of notebooks named ``<student id>_...<assignment>.ipynb``) into
    ``submitted/`` with nbgrader's ``zip_collect``. Returns ``{"collected": {student: [files]},
    "unmatched": [file names], "refused": [one sentence each]}``; a file whose name gives no student id or
    another notebook is unmatched; a file over ``max_entry`` bytes (or past ``max_total`` in all) once
    extracted, an archive inside the archive, or a student id that could be a path (``..``) is refused.

    >>> import_zip(Path("course"), Path("canvas.zip"), "ch03_replace_softmax")["unmatched"]
    ['README.txt']
    """
    import zipfile

    from nbgrader.apps.zipcollectapp import ZipCollectApp
    from nbgrader.plugins.zipcollect import ExtractorPlugin, FileNameCollectorPlugin

    course = course.resolve()
    if not zipfile.is_zipfile(archive):
        raise GradingError(f"{archive} is not a zip file: download the submissions from your LMS as one zip.")
    config = course_config(course, resolve_db_url(course, db_url))
    _ensure_release(config, assignment)
    unmatched: list[str] = []
    refused: list[str] = []
    duplicates: list[str] = []
    collected: dict[str, list[str]] = {}
    notebook = f"{assignment}.ipynb"

    class ReportingCollector(FileNameCollectorPlugin):
        """nbgrader's file-name collector, remembering which files it could not match."""

        def collect(self, submitted_file):
            # the expression sees the path inside the download ("/<path in the zip>"), not the course's own
            # folders: a course under /tmp/test_x/ must not make "test" the student of "_ch02_....ipynb"
            name = os.path.basename(submitted_file)
            inside = os.path.relpath(submitted_file, course / "downloaded" / assignment / "extracted")
            info = super().collect(submitted_file if inside.startswith("..") else "/" + inside)
            if not info or os.path.splitext(str(info.get("file_id", "")))[0] + ".ipynb" != notebook:
                unmatched.append(name)  # strict zip_collect skips a notebook of another name too
            elif not safe_student_id(info["student_id"]):
                refused.append(f"{safety.one_line(name)}: the student id {safety.one_line(info['student_id'])!r} "
                               "could name a folder outside submitted/; not imported")
                return None
            else:
                if info["student_id"] in collected:
                    duplicates.append(f"{collected[info['student_id']][0]} and {name}")
                collected.setdefault(info["student_id"], []).append(name)
            return info

    config.FileNameCollectorPlugin.named_regexp = name_regexp
    config.ZipCollectApp.strict = True          # a notebook of another assignment is reported, not collected
    config.ZipCollectApp.force = True           # a newer download replaces the student's earlier files
    config.ZipCollectApp.collector_plugin = ReportingCollector

    class CappedExtractor(ExtractorPlugin):
        """Extracts the download as plain files within size caps (:func:`tl_course.classroom.safety.extract_zip`)."""

        def extract(self, archive_path, extracted_path):
            for path in sorted(Path(archive_path).iterdir()):
                refused.extend(safety.extract_zip(path, Path(extracted_path), max_total=max_total, max_entry=max_entry))

    config.ZipCollectApp.extractor_plugin = CappedExtractor
    archive_dir = course / "downloaded" / assignment / "archive"
    if archive_dir.exists():
        shutil.rmtree(archive_dir)
    archive_dir.mkdir(parents=True)
    shutil.copy(archive, archive_dir / Path(archive).name)
    from nbgrader.coursedir import CourseDirectory

    app = ZipCollectApp(config=config)
    # without initialize() (which would parse sys.argv) the app has no CourseDirectory: give it the course's
    app.coursedir = CourseDirectory(config=config, parent=app)
    app.coursedir.assignment_id = assignment
    with _quiet_logs(app):
        app.init_plugins()
        app.extract_archive_files()
        try:
            app.process_extracted_files()
        except SystemExit:  # nbgrader's zip_collect exits on a duplicate (and other errors it logs)
            if duplicates:
                raise GradingError(f"the zip holds two notebooks of one student ({'; '.join(duplicates)}): "
                                   "delete the older one and import again.") from None
            raise GradingError("nbgrader's zip_collect stopped (its message is above); nothing was imported.") from None
    return {"collected": collected, "unmatched": sorted(unmatched), "refused": refused}


safe_student_id = safety.safe_student_id


@contextmanager
def _quiet_logs(app):
    import logging

    level = app.log.level
    app.log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        app.log.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Phase 2: record a result in the real gradebook, through nbgrader's own autograde
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _replay_class():
    from nbformat.v4 import new_output
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Unicode

    class ReplayOutputs(NbGraderPreprocessor):
        """Stands in for nbgrader's ``Execute``: the outputs come from the notebook executed in the sandbox
        (cell by cell, sources checked equal), or, when that failed, every graded test cell gets an error
        naming the reason. nbgrader's ``SaveAutoGrades`` then scores the cells as usual."""

        executed = Unicode("", help="the notebook executed in the sandbox").tag(config=True)
        failure = Unicode("", help="why the submission could not be executed").tag(config=True)

        def preprocess(self, nb, resources):
            import nbformat

            reason = self.failure
            if not reason:
                ran = nbformat.reads(Path(self.executed).read_text(encoding="utf-8"), as_version=4)
                same = len(ran.cells) == len(nb.cells) and all(
                    a.cell_type == b.cell_type and a.source == b.source for a, b in zip(ran.cells, nb.cells))
                if same:
                    for cell, done in zip(nb.cells, ran.cells):
                        if cell.cell_type == "code":  # bounded and escaped again: the grader trusts no size
                            cell.outputs = nbformat.from_dict(safety.neutralise_outputs(done.get("outputs", [])))
                            cell.execution_count = done.get("execution_count")
                            if "execution" in done.get("metadata", {}):  # nbclient's per-cell timing
                                cell.metadata["execution"] = done.metadata["execution"]
                    return nb, resources
                reason = "the executed notebook does not match the submission (it was changed while it ran)."
            text = f"Not graded: {reason}"
            for cell in nb.cells:
                meta = cell.get("metadata", {}).get("nbgrader", {})
                if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
                    cell.outputs = [new_output("error", ename="NotGraded", evalue=text,
                                               traceback=[f"NotGraded: {text}"])]
            return nb, resources

    return ReplayOutputs


def _default_feedback_preprocessors() -> list:
    from nbgrader.converters import GenerateFeedback

    return GenerateFeedback.class_traits()["preprocessors"].make_dynamic_default()


@functools.lru_cache(maxsize=None)
def _hide_tests_class():
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Bool

    class HideTestSource(NbGraderPreprocessor):
        """In the feedback, a graded test cell shows its name and failure message, not the hidden tests'
        source (:func:`tl_course.classroom.safety.hide_test_source`); ``show_test_source`` keeps it (practice)."""

        show_test_source = Bool(False, help="show the hidden tests in the feedback").tag(config=True)

        def preprocess_cell(self, cell, resources, index):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution") \
                    and not self.show_test_source:
                safety.hide_test_source(cell)
            return cell, resources

    return HideTestSource


def record(config, sub: Submission, result: dict, feedback: bool = True, work: Path | None = None) -> tuple[float, float]:
    """Phase 2 for one submission: nbgrader autograde against the real gradebook with the sandbox's
    outputs (:class:`ReplayOutputs`), then feedback. Returns ``(score, max_score)``."""
    from nbgrader.api import Gradebook
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    replay = _replay_class()  # the class is made once, on first use: nbgrader is imported lazily
    work = work or Path(config.CourseDirectory.root) / ".grade"
    cfg = copy.deepcopy(config)
    executed = work / "executed" / f"{sub.student}--{sub.assignment}.ipynb"
    if result["status"] == "graded":
        executed.parent.mkdir(parents=True, exist_ok=True)
        executed.write_text(result["executed"], encoding="utf-8")
        cfg.ReplayOutputs.executed, cfg.ReplayOutputs.failure = str(executed), ""
    else:
        cfg.ReplayOutputs.executed, cfg.ReplayOutputs.failure = "", result["reason"]
    cfg.Autograde.autograde_preprocessors = [replay if p is Execute else p
                                             for p in Autograde.class_traits()["autograde_preprocessors"].make_dynamic_default()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy "not in session" notices
        api = _api(cfg)
        done = api.autograde(sub.assignment, sub.student, force=True, create=True)
        if not done["success"]:
            # nbgrader cannot even read the notebook (not JSON, cells deleted or changed in type): record the
            # release notebook in its place, every test cell failing with the reason. The student's own file
            # stays untouched in submitted/.
            reason = result["reason"] if result["status"] == "failed" else sandbox._autograde_failure(done)
            cfg.ReplayOutputs.executed, cfg.ReplayOutputs.failure = "", reason
            standin = work / "standin"
            shutil.rmtree(standin, ignore_errors=True)
            folder = standin / sub.student / sub.assignment
            release = Path(cfg.CourseDirectory.release_directory) / sub.assignment
            shutil.copytree(release, folder)
            if (sub.folder / "timestamp.txt").exists():
                shutil.copy(sub.folder / "timestamp.txt", folder)
            cfg.CourseDirectory.submitted_directory = str(standin)
            api = _api(cfg)
            done = api.autograde(sub.assignment, sub.student, force=True, create=True)
            if not done["success"]:
                raise GradingError(f"nbgrader could not record {sub.student}/{sub.assignment} even as a failure: "
                                   f"{sandbox._autograde_failure(done)}")
        if feedback:
            before = list(cfg.GenerateFeedback.get("preprocessors", None) or _default_feedback_preprocessors())
            cfg.GenerateFeedback.preprocessors = [*before, _hide_tests_class()]
            cfg.HTMLExporter.sanitize_html = True  # student markup in Markdown cells and outputs
            api = _api(cfg)
            api.generate_feedback(sub.assignment, sub.student, force=True)
            for page in (Path(cfg.CourseDirectory.root) / "feedback" / sub.student / sub.assignment).glob("*.html"):
                page.write_text(safety.harden_feedback_html(page.read_text(encoding="utf-8", errors="replace")),
                                encoding="utf-8")
        with Gradebook(cfg.CourseDirectory.db_url) as gb:
            submission = gb.find_submission(sub.assignment, sub.student)
            score = (submission.score, submission.max_score)
    executed.unlink(missing_ok=True)
    return score


# ---------------------------------------------------------------------------------------------
# Jobs and engines
# ---------------------------------------------------------------------------------------------
def _b64_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): base64.b64encode(p.read_bytes()).decode() for p in _visible_files(folder)}


def make_job(template: dict, sub: Submission, opts: Options, threads: int, trusted: bool = False) -> dict:
    """One self-contained job for :func:`tl_course.classroom.sandbox.run_job` (JSON-able, so it travels to Dask)."""
    return {**template, "student": sub.student, "submission": _b64_files(sub.folder),
            "timeout": opts.timeout, "cell_timeout": opts.cell_timeout, "memory_gb": opts.memory_gb,
            # the instructor's own solution (warm-up) runs unwalled: it is what fills the shared cache
            "threads": threads, "isolation": "none" if trusted else opts.isolation, "integrity": True,
            "hide": [] if trusted else _hidden_paths(Path(opts.course).resolve()),
            # the sandbox moves HOME into the job: name the shared cache, or each kernel gets a private one
            "env": {"TL_COURSE_CACHE": str(shared_cache(opts)), **opts.env},
            "work_dir": str(opts.work_dir) if opts.work_dir else None}


def shared_cache(opts: Options) -> Path:
    """The feature cache every kernel reads: the kernels' ``TL_COURSE_CACHE``, else the grader's, else
    ``tl_course.features.cache_dir()``'s default for whoever runs the grader (not the sandbox's HOME)."""
    root = opts.env.get("TL_COURSE_CACHE") or os.environ.get("TL_COURSE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "tl_course" / "features"


def _hidden_paths(course: Path) -> list[str]:
    """What a student notebook must not read: the course folder (gradebook, configuration, other
    students' work) and the usual credential files of whoever runs the grader."""
    home = Path.home()
    return [str(course)] + [str(home / p) for p in (".pgpass", ".ssh", ".aws", ".netrc", ".config/gcloud",
                                                     ".dask", ".jupyter")]


def _template(config, assignment: str, work: Path) -> dict:
    """The private gradebook a job grades against: ``generate_assignment`` of this assignment alone into an
    SQLite file (kept while the solution is unchanged)."""
    source = Path(config.CourseDirectory.root) / config.CourseDirectory.source_directory / assignment
    if not source.is_dir():
        raise GradingError(f"There is no {source}: the assignment {assignment!r} has no source notebook.")
    digest = folder_digest(source)
    folder = work / "templates" / assignment
    db = folder / "gradebook.db"
    stamp = folder / "digest"
    if not (db.exists() and stamp.exists() and stamp.read_text() == digest):
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "source").mkdir(parents=True)
        shutil.copytree(source, folder / "source" / assignment)
        cfg = copy.deepcopy(config)
        cfg.CourseDirectory.root = str(folder)
        cfg.CourseDirectory.source_directory = "source"
        cfg.CourseDirectory.release_directory = str(folder / "release")
        cfg.CourseDirectory.db_url = f"sqlite:///{db}"
        result = _api(cfg).generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise GradingError(f"nbgrader generate_assignment {assignment} failed: "
                               f"{(result.get('error') or '').strip().splitlines()[-1:]}")
        stamp.write_text(digest)
    return {"assignment": assignment, "gradebook": base64.b64encode(db.read_bytes()).decode(),
            # autograde copies only the non-notebook files of source/ into the student's folder: the instructor
            # notebook (solutions, hidden tests) must not travel into a working copy the student kernel can read
            "source": {k: v for k, v in _b64_files(source).items() if not k.endswith(".ipynb")},
            "source_digest": digest}


def _ensure_release(config, assignment: str, engine=None, sources=None, digest: str | None = None) -> None:
    """``generate_assignment`` into the real gradebook when the solution changed since the last run."""
    if engine is not None and digest is not None:
        import sqlalchemy as sa

        with engine.connect() as conn:
            row = conn.execute(sa.select(sources.c.digest).where(sources.c.assignment_id == assignment)).first()
        release = Path(config.CourseDirectory.release_directory) / assignment
        if row and row[0] == digest and release.is_dir():
            return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _api(config).generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise GradingError(f"nbgrader generate_assignment {assignment} failed: "
                           f"{(result.get('error') or result.get('log') or '').strip().splitlines()[-3:]}")
    if engine is not None and digest is not None:
        with engine.begin() as conn:
            conn.execute(sources.delete().where(sources.c.assignment_id == assignment))
            conn.execute(sources.insert().values(assignment_id=assignment, digest=digest))


@contextmanager
def engine_executor(workers: int, scheduler: str | None):
    """A ``concurrent.futures`` executor: local threads (each waits on one sandboxed child process), or a
    Dask distributed cluster (``"local"`` starts a ``LocalCluster``, else the scheduler's address)."""
    if not scheduler:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grade") as ex:
            yield ex
        return
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        yield client.get_executor(pure=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------------------------------------
# The whole class
# ---------------------------------------------------------------------------------------------
def default_workers() -> int:
    """One worker per two cores (each notebook kernel gets two threads), at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


def grade_class(opts: Options) -> Report:
    """Grade every submission that is new or changed (all with ``force``); see the module docstring.
    A second grader on the same course (or gradebook) is refused (:func:`tl_course.classroom.guard.course_lock`).

    >>> report = grade_class(Options(course=Path("."), workers=4))  # doctest: +SKIP
    >>> len(report.graded), report.failed  # doctest: +SKIP
    (180, {})
    """
    course = Path(opts.course).resolve()
    db_url = resolve_db_url(course, opts.db_url)
    with guard.course_lock(course, db_url):
        return _grade_class(opts, course, db_url)


def _grade_class(opts: Options, course: Path, db_url: str) -> Report:
    start = time.perf_counter()
    config = course_config(course, db_url)
    if opts.cell_timeout is None:
        opts.cell_timeout = int(config.Execute.get("timeout", 0) or config.ExecutePreprocessor.get("timeout", 0) or 300)
    work = course / ".grade"
    work.mkdir(exist_ok=True)
    subs = find_submissions(course, opts.assignments or None, opts.students or None)
    report = Report()
    engine = _engine(db_url)
    ledger, sources = guard.with_retries(lambda: _tables(engine), lambda: guard.reachable(engine))
    done = guard.with_retries(lambda: _ledger_rows(engine, ledger), lambda: guard.reachable(engine))
    todo = [s for s in subs if opts.force or done.get((s.student, s.assignment)) != s.digest]
    report.skipped = [(s.student, s.assignment) for s in subs if s not in todo]
    workers = max(1, opts.workers or default_workers())
    threads = opts.threads or max(1, (os.cpu_count() or 1) // workers)
    templates = {}
    for assignment in sorted({s.assignment for s in todo}):
        templates[assignment] = _template(config, assignment, work)
        _ensure_release(config, assignment, engine, sources, templates[assignment]["source_digest"])
    if not todo:
        report.csv, report.summary = write_reports(config, engine, ledger, opts.out or course / "grading")
        report.seconds = time.perf_counter() - start
        return report
    if opts.isolation == "namespaces" and not sandbox.namespaces_available():
        raise GradingError("--isolation namespaces needs root and util-linux's unshare and setpriv on this machine.")
    with engine_executor(workers, opts.scheduler) as ex:
        if opts.warm:
            _warm(ex, config, templates, opts, threads, work)
        _run_jobs(ex, todo, templates, opts, threads, config, engine, ledger, report, work)
    report.csv, report.summary = guard.with_retries(
        lambda: write_reports(config, engine, ledger, opts.out or course / "grading"), lambda: guard.reachable(engine))
    report.seconds = time.perf_counter() - start
    return report


def _ledger_rows(engine, ledger) -> dict[tuple[str, str], str]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return {(r.student_id, r.assignment_id): r.digest for r in conn.execute(sa.select(ledger))}


def _warm(ex, config, templates: dict, opts: Options, threads: int, work: Path) -> None:
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
        futures[ex.submit(sandbox.run_job, make_job(template, sub, opts, threads, trusted=True))] = (assignment, stamp)
    for future, (assignment, stamp) in futures.items():
        result = future.result()
        lost = failing_cells(result.get("executed")) if result["status"] == "graded" else ["all"]
        if lost:
            print(f"warning: the instructor solution of {assignment} does not pass its own tests here "
                  f"({result.get('reason') or ', '.join(lost)}); grading goes on.", file=sys.stderr)
            continue
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()


def failing_cells(executed_json: str | None) -> list[str]:
    """Grade ids of the graded test cells with an error output in an executed notebook."""
    import nbformat

    if not executed_json:
        return []
    nb = nbformat.reads(executed_json, as_version=4)
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.cell_type == "code" and c.get("metadata", {}).get("nbgrader", {}).get("grade")
            and not c.metadata["nbgrader"].get("solution")
            and any(o.get("output_type") == "error" for o in c.get("outputs", []))]


def _run_jobs(ex, todo, templates, opts, threads, config, engine, ledger, report, work) -> None:
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
        pending[ex.submit(sandbox.run_job, job)] = sub

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
                              "seconds": 0.0, "timings": {}}
                if result["status"] == "failed" and attempts[sub] <= opts.retries:
                    submit(sub)  # a neighbour can take a kernel down (same sandbox user): try once more
                    continue
                up = lambda: guard.reachable(engine)  # noqa: E731 - a gradebook outage is waited out, then resumed
                score = guard.with_retries(lambda: record(config, sub, result, feedback=opts.feedback, work=work), up)
                guard.with_retries(lambda: _write_ledger(engine, ledger, sub, result, score), up)
                key = (sub.student, sub.assignment)
                report.graded.append(key)
                report.timings[key] = {"seconds": result.get("seconds", 0.0), **result.get("timings", {})}
                if result["status"] == "failed":
                    report.failed[key] = result["reason"]
                bar.update(1)
                bar.set_postfix(failed=len(report.failed))
    except BaseException:
        sandbox.STOP.set()  # running jobs kill their notebooks and return
        for future in pending:
            future.cancel()
        raise
    finally:
        bar.close()


def _write_ledger(engine, ledger, sub: Submission, result: dict, score: tuple[float, float]) -> None:
    with engine.begin() as conn:
        conn.execute(ledger.delete().where((ledger.c.student_id == sub.student)
                                           & (ledger.c.assignment_id == sub.assignment)))
        conn.execute(ledger.insert().values(
            student_id=sub.student, assignment_id=sub.assignment, digest=sub.digest, status=result["status"],
            reason=result.get("reason", ""), score=score[0], max_score=score[1],
            seconds=result.get("seconds", 0.0), graded_at=datetime.now(timezone.utc).replace(tzinfo=None)))


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------
def write_reports(config, engine, ledger, out: Path) -> tuple[Path, Path]:
    """``grades.csv`` (nbgrader's CSV export: one row per student and assignment) and ``summary.md``: the
    score distribution per assignment, the test cells that fail most, and the submissions not graded."""
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
        rows = list(conn.execute(sa.select(ledger).order_by(ledger.c.assignment_id, ledger.c.student_id)))
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
                     f"{_sparkline(scores, top)} | " + ", ".join(f"{g} ({n})" for g, n in worst) + " |")
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        lines += ["", "## Not graded (scored 0, the reason is in their feedback)", ""]
        lines += [f"- {safety.one_line(r.student_id)} / {safety.one_line(r.assignment_id)}: "
                  f"{safety.one_line(r.reason)}" for r in failed]
    summary_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, summary_path


def _sparkline(scores: list[float], top: float) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    if not top:
        return ""
    bins = [0] * 5
    for s in scores:
        bins[min(4, int(5 * s / top))] += 1
    return "".join(bars[round(8 * b / max(bins))] if b else "·" for b in bins)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    p = argparse.ArgumentParser(prog="python -m tl_course.classroom.grade", description=__doc__.split("\n\n")[0])
    p.add_argument("--course", type=Path, default=Path("."), help="the nbgrader course folder (default: .)")
    p.add_argument("--assignment", action="append", default=[], help="grade only this assignment (repeatable)")
    p.add_argument("--student", action="append", default=[], help="grade only this student (repeatable)")
    p.add_argument("--db-url", help="gradebook URL (default: $TL_COURSE_GRADEBOOK, else nbgrader_config.py)")
    p.add_argument("--workers", type=int, help=f"parallel notebooks (default: cores // 2 = {default_workers()})")
    p.add_argument("--threads", type=int, help="torch threads per notebook (default: cores // workers)")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--scheduler", help="a Dask scheduler address, tcp://host:8786")
    engine.add_argument("--dask", action="store_true", help="run on a Dask LocalCluster on this machine")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one submission may run (default 900)")
    p.add_argument("--cell-timeout", type=int, help="seconds one cell may run (default: nbgrader_config.py)")
    p.add_argument("--memory-gb", type=float, default=8.0, help="memory limit per submission (default 8)")
    p.add_argument("--isolation", choices=["auto", "namespaces", "none"], default="auto",
                   help="namespaces: each notebook sees a read-only system and no course folder (needs root); "
                        "auto: namespaces where possible (default)")
    p.add_argument("--force", action="store_true", help="regrade every submission, changed or not")
    p.add_argument("--retries", type=int, default=1, help="re-runs of a submission that could not run (default 1)")
    p.add_argument("--no-warm", action="store_true", help="do not run the solutions first to fill the caches")
    p.add_argument("--no-feedback", action="store_true", help="do not write feedback HTML")
    p.add_argument("--out", type=Path, help="where grades.csv and summary.md go (default: COURSE/grading)")
    p.add_argument("--import-zip", type=Path, help="first put this LMS zip into submitted/ (needs --assignment)")
    p.add_argument("--student-regexp", default=DEFAULT_NAME_REGEXP,
                   help="how a file name in the zip gives the student id and the notebook")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--bench", action="store_true", help="grade a synthetic class and print what it costs")
    p.add_argument("--bench-students", type=int, default=4, help="students per assignment in the benchmark")
    return p.parse_args(argv), p


def main(argv: list[str] | None = None) -> int:
    args, parser = parse_args(argv)
    if args.bench:
        from .bench import bench

        print(bench(students=args.bench_students, workers=args.workers))
        return 0
    course = args.course.resolve()
    if not (course / "nbgrader_config.py").exists() and not (course / "source").is_dir():
        parser.error(f"{course} is not an nbgrader course folder (no nbgrader_config.py): pass --course.")
    try:
        if args.import_zip:
            if len(args.assignment) != 1:
                parser.error("--import-zip needs exactly one --assignment: the assignment the zip holds.")
            found = import_zip(course, args.import_zip, args.assignment[0], args.student_regexp, args.db_url)
            n = sum(len(v) for v in found["collected"].values())
            print(f"imported {n} notebook(s) of {len(found['collected'])} student(s) into submitted/")
            for name in found["unmatched"]:
                print(f"could not match (no student id, or another notebook): {safety.one_line(name)}")
            for why in found["refused"]:
                print(f"refused: {why}")
        opts = Options(course=course, assignments=args.assignment, students=args.student, db_url=args.db_url,
                       workers=args.workers, threads=args.threads,
                       scheduler=args.scheduler or ("local" if args.dask else None), timeout=args.timeout,
                       cell_timeout=args.cell_timeout, memory_gb=args.memory_gb, isolation=args.isolation,
                       force=args.force, retries=args.retries, warm=not args.no_warm, out=args.out,
                       progress=not args.quiet, feedback=not args.no_feedback)
        report = grade_class(opts)
    except (GradingError, guard.AnotherGrader, guard.GradebookUnreachable) as err:
        print(f"error: {safety.escape_control(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: what was recorded stays; run the same command again to grade the rest.", file=sys.stderr)
        return 130
    print(f"graded {len(report.graded)}, unchanged {len(report.skipped)}, could not run {len(report.failed)} "
          f"in {report.seconds:.0f} s")
    print(f"grades: {report.csv}\nsummary: {report.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
