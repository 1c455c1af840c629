"""Jobs and the engines that run them: one self-contained, JSON-able job per submission (what
:func:`tl_course.classroom.sandbox.run_job` executes, locally or on a Dask worker), the private gradebook
template a job grades against, the shared feature cache, and the ``concurrent.futures`` executors."""
from __future__ import annotations

import base64
import copy
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .gradebook import GradingError, nbgrader_api
from .submissions import Submission, folder_digest, visible_files

if TYPE_CHECKING:  # only for the annotations: grade imports this module
    from .grade import Options

__all__ = ["default_workers", "make_job", "shared_cache", "hidden_paths", "job_template", "engine_executor"]


def default_workers() -> int:
    """One worker per two cores (each notebook kernel gets two threads), at least one.

    >>> default_workers() >= 1
    True
    """
    return max(1, (os.cpu_count() or 2) // 2)


def b64_files(folder: Path) -> dict[str, str]:
    """A folder's visible files, relative name -> base64 of the bytes (a job carries them as JSON)."""
    return {str(p.relative_to(folder)): base64.b64encode(p.read_bytes()).decode() for p in visible_files(folder)}


def make_job(template: dict, sub: Submission, opts: Options, threads: int, trusted: bool = False) -> dict:
    """One self-contained job for :func:`tl_course.classroom.sandbox.run_job` (JSON-able, so it travels to Dask)."""
    return {**template, "student": sub.student, "submission": b64_files(sub.folder),
            "timeout": opts.timeout, "cell_timeout": opts.cell_timeout, "memory_gb": opts.memory_gb,
            # the instructor's own solution (warm-up) runs unwalled: it is what fills the shared cache
            "threads": threads, "isolation": "none" if trusted else opts.isolation, "integrity": True,
            "hide": [] if trusted else hidden_paths(Path(opts.course).resolve()),
            # the sandbox moves HOME into the job: name the shared cache, or each kernel gets a private one
            "env": {"TL_COURSE_CACHE": str(shared_cache(opts)), **opts.env},
            "work_dir": str(opts.work_dir) if opts.work_dir else None}


def shared_cache(opts: Options) -> Path:
    """The feature cache every kernel reads: the kernels' ``TL_COURSE_CACHE``, else the grader's, else
    ``tl_course.paths.cache_dir()``'s default for whoever runs the grader (not the sandbox's HOME); ``~`` is
    expanded here, on the grader's side, because the sandbox moves HOME."""
    root = (opts.env.get("TL_COURSE_CACHE") or os.environ.get("TL_COURSE_CACHE") or "").strip()
    return Path(root).expanduser() if root else Path.home() / ".cache" / "tl_course" / "features"


def hidden_paths(course: Path) -> list[str]:
    """What a student notebook must not read: the course folder (gradebook, configuration, other
    students' work) and the usual credential files of whoever runs the grader.

    >>> hidden_paths(Path("/srv/course"))[0]
    '/srv/course'
    """
    home = Path.home()
    return [str(course)] + [str(home / p) for p in (".pgpass", ".ssh", ".aws", ".netrc", ".config/gcloud",
                                                     ".dask", ".jupyter")]


def job_template(config, assignment: str, work: Path) -> dict:
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
        result = nbgrader_api(cfg).generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise GradingError(f"nbgrader generate_assignment {assignment} failed: "
                               f"{(result.get('error') or '').strip().splitlines()[-1:]}")
        stamp.write_text(digest)
    return {"assignment": assignment, "gradebook": base64.b64encode(db.read_bytes()).decode(),
            # autograde copies only the non-notebook files of source/ into the student's folder: the instructor
            # notebook (solutions, hidden tests) must not travel into a working copy the student kernel can read
            "source": {k: v for k, v in b64_files(source).items() if not k.endswith(".ipynb")},
            "source_digest": digest,
            # the release notebook's test cells (hidden tests already cleared): a deleted one is restored
            "tests": release_tests(folder / "release" / assignment / f"{assignment}.ipynb")}


def release_tests(release_notebook: Path) -> list:
    """The test cells of a release notebook, as nbformat dicts (:func:`tl_course.classroom.repair.test_cells`)."""
    import json

    from .repair import test_cells

    return test_cells(json.loads(release_notebook.read_text(encoding="utf-8"))["cells"])


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
