"""The course folder's nbgrader configuration and its gradebook: where it is (``--db-url``,
``$TL_COURSE_GRADEBOOK``, ``nbgrader_config.py``), nbgrader's API on it, and the grader's two tables beside
nbgrader's own: the ledger (what was graded, from which files) and the digests of the released sources."""
from __future__ import annotations

import copy
import os
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["GradingError", "LEDGER_TABLE", "SOURCES_TABLE", "DONE", "resolve_db_url", "course_config",
           "nbgrader_tools_on_path", "nbgrader_api", "open_engine", "tables", "done_digests", "write_ledger", "ensure_release"]

LEDGER_TABLE = "tl_course_grading"
SOURCES_TABLE = "tl_course_sources"
#: ledger statuses that mean "this submission's files were graded, skip them while they are unchanged":
#: ``graded``, and ``failed`` (the notebook's own doing: it scored 0 with the reason). ``error`` (the
#: grader's side: stopped, a worker lost) is not done: the next run grades it again.
DONE = ("graded", "failed")


class GradingError(RuntimeError):
    """Something the instructor must fix before grading can go on (one sentence)."""


def resolve_db_url(course: Path, db_url: str | None = None) -> str:
    """``--db-url``, else ``$TL_COURSE_GRADEBOOK``, else ``nbgrader_config.py``'s (a relative SQLite path is
    taken inside the course folder).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     resolve_db_url(Path(tmp), "sqlite:///gb.db") == f"sqlite:///{Path(tmp).resolve()}/gb.db"
    True
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


def nbgrader_tools_on_path() -> None:
    """nbgrader creates a gradebook by running the ``alembic`` command: put the one beside this Python on
    ``PATH`` when the virtual environment is not activated (``.venv/bin/python -m tl_course.classroom``)."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def nbgrader_api(config):
    """nbgrader's API on a configuration (a course folder and its gradebook)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    nbgrader_tools_on_path()
    return NbGraderAPI(CourseDirectory(config=config), config=config)


def open_engine(db_url: str):
    """An SQLAlchemy engine on the gradebook."""
    import sqlalchemy as sa

    return sa.create_engine(db_url, pool_pre_ping=True)  # a connection lost in a server restart is replaced


def tables(engine):
    """The grader's ledger and sources tables (created when missing)."""
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


def done_digests(engine, ledger) -> dict[tuple[str, str], str]:
    """(student, assignment) -> digest of the files last graded (statuses in :data:`DONE` only)."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return {(r.student_id, r.assignment_id): r.digest for r in conn.execute(sa.select(ledger))
                if r.status in DONE}


def write_ledger(engine, ledger, student: str, assignment: str, digest: str, status: str, reason: str = "",
                 score: tuple[float | None, float | None] = (None, None), seconds: float = 0.0) -> None:
    """Replace the ledger row of one submission (``status``: graded, failed or error, see :data:`DONE`)."""
    with engine.begin() as conn:
        conn.execute(ledger.delete().where((ledger.c.student_id == student)
                                           & (ledger.c.assignment_id == assignment)))
        conn.execute(ledger.insert().values(
            student_id=student, assignment_id=assignment, digest=digest, status=status, reason=reason,
            score=score[0], max_score=score[1], seconds=seconds,
            graded_at=datetime.now(timezone.utc).replace(tzinfo=None)))


def ensure_release(config, assignment: str, engine=None, sources=None, digest: str | None = None) -> None:
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
        result = nbgrader_api(config).generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise GradingError(f"nbgrader generate_assignment {assignment} failed: "
                           f"{(result.get('error') or result.get('log') or '').strip().splitlines()[-3:]}")
    if engine is not None and digest is not None:
        with engine.begin() as conn:
            conn.execute(sources.delete().where(sources.c.assignment_id == assignment))
            conn.execute(sources.insert().values(assignment_id=assignment, digest=digest))
