"""A real, throwaway PostgreSQL server for the grading tests: ``initdb`` + ``pg_ctl`` in a temp folder.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the ``postgres``
system user (Debian's package creates it). It listens on 127.0.0.1 only, on a free port, and asks for a
password over TCP (scram-sha-256), so a student kernel without the credentials cannot connect.

>>> with throwaway_postgres() as url:  # doctest: +ELLIPSIS
...     url
'postgresql://grader:...@127.0.0.1:.../gradebook'
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def postgres_bin(name: str) -> str:
    """The path of a PostgreSQL server program (Debian keeps them off PATH, in /usr/lib/postgresql/<v>/bin)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian package postgresql): "
                           "the grading tests need a real server.")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_postgres(user: str = "grader", database: str = "gradebook"):
    """Start a server, create ``user`` (with a random password) owning ``database``, yield its SQLAlchemy
    URL, and stop and delete everything afterwards."""
    run_as = "postgres" if os.geteuid() == 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="tl-pg-"))
    password = secrets.token_urlsafe(16)
    port = _free_port()
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir()
    (tmp / "pw").write_text("admin-" + password + "\n")
    if run_as:
        import pwd

        entry = pwd.getpwnam(run_as)
        for path in (tmp, sock, tmp / "pw"):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def run(*cmd, **kw):
        return subprocess.run(list(cmd), check=True, capture_output=True, text=True, user=run_as, cwd=tmp, **kw)

    try:
        run(postgres_bin("initdb"), "-D", str(data), "-U", "pgadmin", f"--pwfile={tmp / 'pw'}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        run(postgres_bin("pg_ctl"), "-D", str(data), "-l", str(tmp / "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    except subprocess.CalledProcessError as err:
        log = (tmp / "server.log").read_text() if (tmp / "server.log").exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"The throwaway PostgreSQL did not start: {err.stderr or err.stdout}{log[-2000:]}") from err
    try:
        # two -c: CREATE DATABASE cannot run inside the transaction one -c with two statements makes
        run(postgres_bin("psql"), "-h", str(sock), "-p", str(port), "-U", "pgadmin", "-d", "postgres",
            "-v", "ON_ERROR_STOP=1", "-q", "-c", f"CREATE ROLE {user} LOGIN PASSWORD '{password}'",
            "-c", f"CREATE DATABASE {database} OWNER {user}")
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run([postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, user=run_as, cwd=tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def ledger_count(db_url: str) -> int:
    """How many submissions the grader's ledger holds so far (0 while its table does not exist yet)."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM tl_course_grading")).scalar()
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()
