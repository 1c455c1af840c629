"""What keeps a class run going and alone: one grader per course, gradebook outages waited out.

- :func:`course_lock`: a second grader started on the same course is refused with one sentence naming
  the first (a lock file in the course's work folder, and, for PostgreSQL, an advisory lock held by the
  run's own connection, so graders on two machines sharing one gradebook exclude each other too);
- :func:`with_retries`: a call that fails while the gradebook cannot be reached is retried with
  back-off; when the gradebook stays away, :class:`GradebookUnreachable` says so and the run stops (what
  was recorded stays: the next run resumes).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

#: seconds between attempts while the gradebook is unreachable (about a minute and a half in all)
BACKOFF = (0.5, 1, 2, 4, 8, 15, 30, 30)
#: PostgreSQL advisory lock key of "a grader runs on this gradebook" (any fixed 64-bit number)
ADVISORY_KEY = 0x7C_C0_5E_6A_D3


class AnotherGrader(RuntimeError):
    """A grader is already running on this course."""


class GradebookUnreachable(RuntimeError):
    """The gradebook stayed unreachable through every retry."""


class GradebookHiccup(RuntimeError):
    """A database error in the middle of recording while the gradebook is down: retried with back-off."""


#: what nbgrader's log says when the database, not the notebook, failed
DATABASE_ERRORS = ("OperationalError", "InterfaceError", "DBAPIError", "DisconnectionError", "PendingRollbackError",
                   "server closed the connection", "could not connect to server", "connection refused",
                   "terminating connection", "database is locked")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextmanager
def course_lock(course: Path, db_url: str | None = None):
    """Hold the course for this grader while the block runs; raise :class:`AnotherGrader` if another holds it.

    >>> import tempfile
    >>> course = Path(tempfile.mkdtemp())
    >>> with course_lock(course):
    ...     try:
    ...         with course_lock(course):
    ...             pass
    ...     except AnotherGrader as err:
    ...         print(str(err)[:47])
    another grader is already grading this course (
    """
    path = course / ".grade" / "grader.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AnotherGrader(f"another grader is already grading this course ({_holder(path)}): wait for "
                                "it to finish, or stop it, then run this command again.") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
        with _advisory_lock(db_url):
            yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def _advisory_lock(db_url: str | None):
    """For a PostgreSQL gradebook: its session-level advisory lock, on a connection held for the run."""
    if not db_url or not db_url.startswith("postgresql"):
        yield
        return
    import sqlalchemy as sa

    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    conn = with_retries(engine.connect, lambda: False, BACKOFF[:4])
    try:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
        conn.commit()
        if not got:
            raise AnotherGrader("another grader is already grading this course's gradebook (from another "
                                "machine or course folder): wait for it to finish, or stop it, then run "
                                "this command again.")
        yield
    finally:
        try:
            conn.close()  # ends the session: PostgreSQL releases the lock
        except Exception:  # noqa: BLE001 - the server may be gone; its lock went with the session
            pass
        engine.dispose()


def reachable(engine) -> bool:
    """Whether the gradebook answers ``SELECT 1`` now."""
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure to connect means "not now"
        return False


def with_retries(call: Callable[[], T], is_reachable: Callable[[], bool], delays=BACKOFF,
                 sleep: Callable[[float], None] = time.sleep, what: str = "the gradebook") -> T:
    """``call()``; when it raises and ``is_reachable()`` says the gradebook is down, wait each of ``delays``
    in turn and call again. A failure while the gradebook answers is the call's own: raised at once.

    >>> tries = []
    >>> def flaky():
    ...     tries.append(1)
    ...     if len(tries) < 3:
    ...         raise ConnectionError("server closed the connection")
    ...     return "recorded"
    >>> with_retries(flaky, lambda: False, delays=(0, 0, 0), sleep=lambda s: None), len(tries)
    ('recorded', 3)
    """
    for delay in (*delays, None):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - decided below: the call's own error or an outage
            if not isinstance(err, GradebookHiccup) and is_reachable():
                raise
            if delay is None:
                raise GradebookUnreachable(
                    f"{what} could not be reached for {sum(delays):g} s ({type(err).__name__}: "
                    f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else 'no message'}); what was "
                    "recorded stays: run the same command again when it is back, to grade the rest.") from err
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
