"""Run one untrusted submission through nbgrader's autograde, walled off from everything else.

A *job* is one student's notebook for one assignment, self-contained (a JSON-able dict, made by
``tl_course.classroom.grade.make_job``), so it runs the same in a local thread pool or on a remote Dask worker:

    result = run_job(job, stop)   # job: tl_course.classroom.jobs.make_job; stop: the run's threading.Event
    result["status"], result["reason"]   # ("graded", ""), or ("failed", "one sentence why")

What the wall is made of (see book/instructors.md, "Untrusted notebooks"):

- a **working copy** of its own: a private nbgrader course folder with a private SQLite gradebook holding
  only this assignment (made by ``nbgrader generate_assignment`` in the grader). The real gradebook, its
  URL and credentials never reach this process or the student kernel: the grader records the scores
  afterwards from the executed notebook (:func:`tl_course.classroom.recording.record`);
- a **scrubbed environment**: only the variables the course needs (``TL_COURSE_*``, ``PATH``, thread
  counts) pass; ``HOME``, ``TMPDIR`` and Jupyter's folders point inside the working copy;
- **limits** on the whole process tree: wall-clock time (the process group is killed), memory (address
  space), CPU seconds, file size, and nbgrader's per-cell timeout;
- where the grader runs as root, **namespaces** (:func:`isolated_command`): the whole file system
  read-only except the job's own folder (so the shared caches, the photos and the course package cannot
  be changed), the course folder and credential files hidden, the grader's processes invisible, and
  every capability dropped;
- the **verdict outside the kernel** (:mod:`tl_course.classroom.verdict`): every graded test cell is rewritten
  to send its checks out as plain data, and judged here;
- an **integrity check** around every graded test cell (:class:`GuardedExecute`): if ``tl_course`` was
  replaced or monkey-patched by the notebook, or the interpreter's machinery differs from its snapshot before
  the first cell (:data:`WATCH`), that cell scores 0 with the reason;
- afterwards every process the job started is killed, found by a per-job marker in its environment.

This file has no package-relative imports: the grader runs it as a script (``python -P sandbox.py``), so a
job starts without importing the grader. Its child side reads nbgrader cells through
:mod:`tl_course.classroom.notebooks` (torch-free, like every module of ``tl_course.classroom``).
"""
from __future__ import annotations

import ast
import base64
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: environment variables a student kernel may see (plus the ones the sandbox sets itself)
PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "TL_COURSE_PROFILE", "TL_COURSE_DATA",
            "TL_COURSE_CACHE", "TL_COURSE_CACHE_MAX_GB", "MPLBACKEND", "TORCH_HOME", "HF_HOME",
            "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MARKER = "TL_COURSE_GRADE_JOB"
#: the user the student kernel runs as, behind the namespaces wall (its own PID, mount and network
#: namespaces keep two kernels of the same user apart)
KERNEL_USER = "nobody"
#: size of each of the kernel's writable file systems (its HOME and its TMPDIR), MiB
SCRATCH_MB = 1024
#: an executed notebook larger than this (outputs already trimmed in the child) is not read by the grader
MAX_EXECUTED_BYTES = 64 * 2**20
SCRIPT = Path(__file__).resolve()
#: the course package (this file lives in its ``classroom`` subpackage)
PACKAGE_DIR = SCRIPT.parents[1]


# ---------------------------------------------------------------------------------------------
# The grader's side: one job in a child process with limits
# ---------------------------------------------------------------------------------------------
def run_job(job: dict, stop: threading.Event | None = None) -> dict:
    """Execute one submission (``job``, made by :func:`tl_course.classroom.jobs.make_job`) and return what
    happened: ``status`` ("graded" or "failed"), ``reason`` (one sentence when failed), ``grader_side``
    (True when it failed for the grader's reason, not the notebook's: stopped, could not start),
    ``executed`` (the executed notebook, JSON text, when graded), ``seconds`` and ``timings`` (kernel
    start, imports, model load, tests). ``stop``: the event of the grading run this job belongs to; once
    set, the job kills its notebook and returns at once (a job on a Dask worker has none). Never raises for
    anything the notebook does."""
    start = time.perf_counter()
    token = secrets.token_hex(8)
    # jobs live in a folder only the grader can list (0711), under unguessable names: another job's kernel
    # cannot find this one's working copy
    base = jobs_base(job.get("work_dir"))
    remove_leftovers(base)  # the job folders of a killed run (hidden tests in their gradebooks)
    lock = _hold_job_lock(base, token)
    jobdir = Path(tempfile.mkdtemp(prefix=f"job-{token}-", dir=base))
    os.chmod(jobdir, 0o711)
    try:
        _write_working_copy(job, jobdir)
        status, reason, grader_side = _run_child(job, jobdir, token, stop or threading.Event())
        out = {"status": status, "reason": reason, "grader_side": grader_side, "executed": None, "timings": {},
               "phase1": {}}
        _kill_job_processes(token)  # before reading anything the kernel might still write
        result_file = jobdir / "course" / "result.json"
        if status == "graded":
            try:
                info = json.loads(result_file.read_text())
                out["timings"], out["phase1"] = info.get("timings", {}), info.get("scores", {})
                # the executed notebook is where nbgrader writes it, never where result.json points
                executed = (jobdir / "course" / "autograded" / job["student"] / job["assignment"]
                            / f"{job['assignment']}.ipynb")
                if not info.get("success"):
                    out.update(status="failed", reason=info.get("reason") or "nbgrader could not autograde it.")
                elif executed.stat().st_size > MAX_EXECUTED_BYTES:
                    out.update(status="failed", reason=(
                        f"the executed notebook is {executed.stat().st_size / 2**20:.0f} MiB, over the "
                        f"{MAX_EXECUTED_BYTES // 2**20} MiB a notebook may take once its outputs are trimmed; "
                        "every test cell scores 0."))
                else:
                    out["executed"] = executed.read_text(encoding="utf-8", errors="replace")
            except (OSError, ValueError, KeyError) as err:
                out.update(status="failed",
                           reason=f"the grading process left no readable result ({type(err).__name__}); "
                                  "the notebook may have deleted or changed its working copy.")
        out["seconds"] = time.perf_counter() - start
        return out
    finally:
        _kill_job_processes(token)
        shutil.rmtree(jobdir, ignore_errors=True)
        (base / f"job-{token}.lock").unlink(missing_ok=True)
        os.close(lock)


def jobs_base(work_dir: str | None = None) -> Path:
    """The folder holding the job folders of whoever runs the grader (0711: nobody else can list it)."""
    base = Path(work_dir or tempfile.gettempdir()) / f"tl_course-grade-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o711)
    return base


def _hold_job_lock(base: Path, token: str) -> int:
    """An open, locked ``job-<token>.lock`` beside the job's folder: while a job runs, its lock is held."""
    import fcntl

    fd = os.open(base / f"job-{token}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def remove_leftovers(base: Path, min_age: float = 60.0) -> list[str]:
    """Delete the job folders (and locks) in ``base`` whose job no longer runs (its lock file is there and
    free: the process that held it is gone) and that are older than ``min_age`` seconds. A folder without a
    lock file is left alone (another version of the grader may be running it). Returns the names removed.

    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> (base / "job-0123abcd-x1").mkdir(); (base / "job-0123abcd.lock").touch(); (base / "job-4567-y2").mkdir()
    >>> remove_leftovers(base, min_age=0), sorted(p.name for p in base.iterdir())
    (['job-0123abcd-x1', 'job-0123abcd.lock'], ['job-4567-y2'])
    """
    import fcntl

    removed = []
    now = time.time()
    for path in sorted(base.glob("job-*")):
        try:
            if now - path.lstat().st_mtime < min_age:
                continue
            token = path.name.split("-")[1].removesuffix(".lock")
            lock = base / f"job-{token}.lock"
            if not lock.exists():
                continue  # not a job of this code (or its lock is gone with it): not ours to judge
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its job still runs
            finally:
                os.close(fd)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
        except (OSError, IndexError):
            continue
    return removed


def _write_working_copy(job: dict, jobdir: Path) -> None:
    course = jobdir / "course"
    files = {"gradebook.db": job["gradebook"]}
    files.update({f"source/{job['assignment']}/{name}": data for name, data in job["source"].items()})
    files.update({f"submitted/{job['student']}/{job['assignment']}/{name}": data
                  for name, data in job["submission"].items()})
    for rel, data in files.items():
        path = course / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
    for sub in ("home", "tmp", "runtime"):
        (jobdir / sub).mkdir()
    (course / "job.json").write_text(json.dumps({k: job[k] for k in (
        "assignment", "student", "cell_timeout", "integrity", "tests") if k in job}))
    # what only the grading process may read (the private gradebook holds the hidden tests): the kernel,
    # another user behind the wall, may pass through the course folder to its working folder, not list it
    for path in (course / "gradebook.db", course / "job.json"):
        os.chmod(path, 0o600)
    for path in (course / "source", course / "submitted", jobdir / "runtime"):
        if path.exists():
            os.chmod(path, 0o700)
    os.chmod(course, 0o711)
    # the kernel spec nbclient finds first (JUPYTER_PATH): this script drops to KERNEL_USER, then ipykernel
    spec = jobdir / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-P", str(SCRIPT), "kernel", "{connection_file}", str(jobdir / "home")],
        "display_name": "Python 3 (sandboxed)", "language": "python"}))



def sandbox_env(job: dict, jobdir: Path, token: str) -> dict:
    """The only environment the child and the student kernel get."""
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(job.get("env", {}))
    bin_dir = str(Path(sys.executable).parent)  # nbgrader runs `alembic` and `jupyter`: the ones beside this Python
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    threads = str(job.get("threads", 1))
    env.update({name: threads for name in THREAD_ENV})
    env.update({"HOME": str(jobdir / "home"), "TMPDIR": str(jobdir / "tmp"),
                "JUPYTER_RUNTIME_DIR": str(jobdir / "runtime"), "JUPYTER_DATA_DIR": str(jobdir / "home"),
                "IPYTHONDIR": str(jobdir / "home" / ".ipython"), "MPLCONFIGDIR": str(jobdir / "tmp"),
                "JUPYTER_PATH": str(jobdir / "jupyter"),
                "PYTHONSAFEPATH": "1",  # the notebook's folder is not on sys.path: no tl_course.py look-alike
                "PYTHONDONTWRITEBYTECODE": "1", MARKER: token})
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _limits(memory_bytes: int | None, cpu_seconds: int | None, file_bytes: int | None):
    def apply() -> None:
        import ctypes
        import resource

        try:  # die with the grader (SIGKILL included): its thread that started us is gone
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

        for what, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_seconds),
                            (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_CORE, 0)):
            if value is not None:
                resource.setrlimit(what, (value, value))
    return apply


def _run_child(job: dict, jobdir: Path, token: str, stop: threading.Event) -> tuple[str, str, bool]:
    """Run the child to its end, the time limit, or ``stop``: (status, reason, whether the grader's side
    caused the failure)."""
    timeout = float(job.get("timeout", 900))
    memory = int(job["memory_gb"] * 2**30) if job.get("memory_gb") else None
    cpu = int(timeout * max(1, int(job.get("threads", 1)))) + 60
    cmd = [sys.executable, "-P", str(SCRIPT), "execute", str(jobdir / "course")]
    isolated = job.get("isolation", "auto") != "none" and namespaces_available()
    if job.get("isolation") == "namespaces" and not isolated:
        return "failed", ("the grader was asked for --isolation namespaces, but this machine cannot make them "
                          "(it needs root and util-linux unshare)."), True
    if isolated:
        env = job.get("env", {})
        cmd = isolated_command(cmd, jobdir, hide=job.get("hide", []), scratch_mb=int(job.get("scratch_mb") or SCRATCH_MB),
                               expose=[env[k] for k in ("TL_COURSE_DATA", "TL_COURSE_CACHE", "TORCH_HOME", "HF_HOME")
                                       if env.get(k)])
    else:  # no wall: the kernel runs as the grader's user, as it always did (the summary says so)
        shutil.rmtree(jobdir / "jupyter", ignore_errors=True)
    log = open(jobdir / "child.log", "wb")
    try:
        proc = subprocess.Popen(cmd, cwd=jobdir / "course", env=sandbox_env(job, jobdir, token),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_limits(memory, cpu, 2**30))
    except OSError as err:
        log.close()
        return "failed", f"the grading process could not start ({err}).", True
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                code = proc.wait(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    _kill_group(proc)
                    return "failed", "the grader was stopped.", True
                if time.monotonic() >= deadline:
                    _kill_group(proc)
                    return "failed", (f"the notebook ran past the time limit of {timeout:g} s for one "
                                      "submission (an endless loop?); every test cell scores 0."), False
    except BaseException:  # Ctrl-C in the grader: take the job down with it
        _kill_group(proc)
        raise
    finally:
        log.close()
    if code == 0:
        return "graded", "", False
    try:
        tail = (jobdir / "child.log").read_bytes()[-3000:].decode(errors="replace")
    except OSError:
        tail = "its working copy was deleted"
    if code < 0:
        name = signal.Signals(-code).name
        why = {"SIGXCPU": "it used up its CPU-time limit", "SIGKILL": "it was killed (out of memory?)",
               "SIGXFSZ": "it wrote a file larger than the limit"}.get(name, f"it died of {name}")
        return "failed", f"the grading process stopped: {why}; every test cell scores 0.", False
    if "MemoryError" in tail:
        return "failed", ("the grading process ran out of memory (the notebook allocated too much or printed "
                          "too much output); every test cell scores 0."), False
    last = [line for line in tail.splitlines() if line.strip()][-1:] or ["no message"]
    return "failed", (f"the grading process failed (exit {code}: {last[0].strip()[:300]}); "
                      "every test cell scores 0."), False


@functools.lru_cache(maxsize=None)
def namespaces_available() -> bool:
    """Whether this machine can put a job in its own mount, PID and network namespaces and run its kernel
    as :data:`KERNEL_USER` (root, util-linux's unshare and setpriv, iproute2's ip)."""
    import pwd

    if os.geteuid() != 0 or not all(shutil.which(p) for p in ("unshare", "setpriv", "ip")):
        return False
    try:
        pwd.getpwnam(KERNEL_USER)
    except KeyError:
        return False
    probe = subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "--mount-proc", "--kill-child",
                            "sh", "-c", "ip link set lo up"], capture_output=True)
    return probe.returncode == 0


def kernel_ids() -> tuple[int, int]:
    """The uid and gid of :data:`KERNEL_USER`."""
    import pwd

    entry = pwd.getpwnam(KERNEL_USER)
    return entry.pw_uid, entry.pw_gid


def isolated_command(cmd: list[str], jobdir: Path, hide: list[str] = (), scratch_mb: int = SCRATCH_MB,
                     expose: list[str] = ()) -> list[str]:
    """``cmd`` inside new mount, PID and network namespaces: the whole file system read-only except the
    job's own folder and a private /dev/shm, the course folder and credential files hidden, the grader's
    processes invisible, a network of its own with nothing but loopback (no other job's kernel, no
    database, no internet), and every capability dropped but the three the grading process needs to start
    the kernel as :data:`KERNEL_USER` and to stop it (setuid, setgid, kill). The kernel writes only to its
    own size-limited file systems (HOME and TMPDIR, ``scratch_mb`` MiB each, and /dev/shm): a notebook
    that fills them fills nobody else's. Killing the namespace's first process kills every process the
    notebook started. ``expose``: folders the kernel must read beyond :func:`kernel_needs` (the shared cache
    the job names)."""
    import shlex

    q = shlex.quote
    uid, gid = kernel_ids()
    # the job's folder is moved back onto an empty folder of jobs: other notebooks graded now are not reachable
    job, base = q(str(jobdir)), q(str(jobdir.parent))
    steps = ["mount --make-rprivate /", "mount -t tmpfs -o size=1g,mode=1777 tmpfs /dev/shm",
             f"mkdir /dev/shm/.job && mount --bind {job} /dev/shm/.job",
             f"mount -t tmpfs -o size=1m,mode=0711 tmpfs {base}",
             f"mkdir {job} && mount --move /dev/shm/.job {job} && rmdir /dev/shm/.job",
             "ip link set lo up"]
    steps += _expose_steps(kernel_needs(expose))
    for sub in ("home", "tmp"):
        steps.append(f"mkdir -p {q(str(jobdir / sub))} && mount -t tmpfs -o size={int(scratch_mb)}m,mode=0700,"
                     f"uid={uid},gid={gid},nosuid,nodev tmpfs {q(str(jobdir / sub))}")
    for path in hide:  # (one inside a folder already covered by _expose_steps is gone: nothing to hide)
        if os.path.isdir(path):
            steps.append(f"if [ -d {q(path)} ]; then mount -t tmpfs -o size=1m,mode=0755 tmpfs {q(path)}; fi")
        elif os.path.exists(path):
            steps.append(f"if [ -e {q(path)} ]; then mount --bind /dev/null {q(path)}; fi")
    steps.append("mount -o remount,bind,ro /")
    # `remount,bind,ro /` is not recursive: every other mount (a separate /home or /data, /sys/fs/cgroup, ...)
    # would stay writable to the notebook, which is still user root. Make each one read-only, except the job's.
    keep = " ".join(q(p) for p in (str(jobdir), str(jobdir / "home"), str(jobdir / "tmp"), "/dev/shm", "/proc",
                                   "/dev/pts"))
    steps.append("for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do "
                 f"case \" {keep} \" in *\" $m \"*) continue;; esac; "
                 "mount -o remount,bind,ro \"$m\" 2>/dev/null || true; done")
    steps.append("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys")
    steps.append("exec setpriv --bounding-set=-all,+setuid,+setgid,+kill --inh-caps=-all --no-new-privs -- "
                 + " ".join(q(c) for c in cmd))
    return ["unshare", "--mount", "--pid", "--net", "--fork", "--mount-proc", "--kill-child", "--",
            "sh", "-ec", " && ".join(steps)]


def kernel_needs(extra: list[str] = ()) -> list[str]:
    """What the kernel (:data:`KERNEL_USER`) must reach: the Python it runs, the course package, the photos
    and the shared caches named in the environment, and ``extra``."""
    paths = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)), str(PACKAGE_DIR.parent),
             *extra}
    paths |= {os.environ[k] for k in ("TL_COURSE_DATA", "TL_COURSE_CACHE", "TORCH_HOME", "HF_HOME") if os.environ.get(k)}
    paths |= {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    found = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})
    return [p for p in found if not any(p.startswith(other + os.sep) for other in found)]


def _closed_ancestor(path: str) -> str | None:
    """The highest folder above ``path`` that others may not pass through (no o+x), if any."""
    parts = Path(path).parts
    for i in range(1, len(parts)):
        folder = str(Path(*parts[:i]))
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return None
    return None


def _expose_steps(paths: list[str]) -> list[str]:
    """Shell steps (as root, in the job's mount namespace) that make each of ``paths`` reachable by the
    kernel user when a folder above it is closed (a Python under /root): that folder is covered by an
    empty one others may pass through, and each path is mounted back into it. What else the closed
    folder held stays out of the kernel's reach."""
    import shlex

    q = shlex.quote
    closed: dict[str, list[str]] = {}
    for path in paths:
        top = _closed_ancestor(path)
        if top is not None:
            closed.setdefault(top, []).append(path)
    steps = []
    for n, (top, inside) in enumerate(sorted(closed.items())):
        stage = [f"/dev/shm/.expose-{n}-{i}" for i in range(len(inside))]
        steps += [f"mkdir {st} && mount --bind {q(p)} {st}" for st, p in zip(stage, inside)]
        steps.append(f"mount -t tmpfs -o size=1m,mode=0711 tmpfs {q(top)}")
        steps += [f"mkdir -p {q(p)} && mount --move {st} {q(p)} && rmdir {st}" for st, p in zip(stage, inside)]
    return steps


def _launch_kernel(connection_file: str, home: str, extra: list[str] = ()) -> None:
    """In the grading process, started by nbclient as the kernel: read the connection file (root's), drop to
    :data:`KERNEL_USER` with no capability left, and become ipykernel with a private copy of the file."""
    data = Path(connection_file).read_bytes()
    if os.geteuid() == 0:
        uid, gid = kernel_ids()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # from root to another user: every capability goes with it
    os.umask(0o077)
    mine = Path(home) / ".kernel" / "connection.json"
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_bytes(data)
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", str(mine), *extra])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _kill_job_processes(token: str, spare: int | None = None) -> None:
    """Kill every process started for this job (but ``spare``): the kernel runs in a session of its own
    (jupyter_client) and may have started others; the marker in their environment finds them."""
    import psutil

    needle = f"{MARKER}={token}".encode()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == spare:
            continue
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    proc.kill()
        except (OSError, psutil.Error):
            continue


# ---------------------------------------------------------------------------------------------
# Inside the child: nbgrader autograde in the working copy
# ---------------------------------------------------------------------------------------------
def integrity_spec(package_dir: Path = PACKAGE_DIR) -> dict:
    """What the course package looks like on disk, from its source (no import): for every module, the
    functions and classes it defines (file and line) and the names it re-exports from its siblings."""
    spec: dict = {"package": str(package_dir), "defs": {}, "aliases": {}}
    for path in sorted(package_dir.rglob("*.py")):  # subpackages too (book/, classroom/)
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(["tl_course", *parts])
        package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defs, aliases = {}, {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs[node.name] = ["class" if isinstance(node, ast.ClassDef) else "function", str(path)]
            elif (isinstance(node, ast.Assign) and path.stem == "__init__" and len(node.targets) == 1
                  and getattr(node.targets[0], "id", "") == "_MODULES"):  # a lazy package face (PEP 562)
                for sub, names in ast.literal_eval(node.value).items():
                    for name in names:
                        aliases[name] = [f"{module}.{sub}", name]
            elif isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                for alias in node.names:
                    aliases[alias.asname or alias.name] = [f"{base}.{node.module}", alias.name]
        spec["defs"][module], spec["aliases"][module] = defs, aliases
    return spec


#: run in the student kernel (in a namespace of its own) before and after every graded test cell; its verdict
#: comes back through ``user_expressions``. It only reads. Besides the course package, it checks the
#: interpreter's machinery the tests rely on (profiler, tracer, display hook, import hook, ``random``, a few
#: builtins, IPython's events and input/AST transformers, ``tl_course.grading``'s classes, globals shadowing
#: builtins): a hook defined in the notebook (``__module__ == "__main__"``) fails the check.
PROBE = r'''
import os, sys

def _problems(spec):
    out = []
    for name, mod in list(sys.modules.items()):
        if (name == "tl_course" or name.startswith("tl_course.")) and mod is not None:
            where = os.path.realpath(str(getattr(mod, "__file__", "") or ""))
            if not where.startswith(spec["package"] + os.sep):
                out.append(f"{name} is loaded from {where or 'nowhere'}, not from the course package")
    for name, defs in spec["defs"].items():
        mod = sys.modules.get(name)
        if mod is None:
            continue
        for attr, (kind, path) in defs.items():
            obj = mod.__dict__.get(attr)
            if kind == "class":
                ok = isinstance(obj, type) and obj.__module__ == name
            else:
                code = getattr(getattr(obj, "__wrapped__", obj), "__code__", None)
                ok = code is not None and os.path.realpath(code.co_filename) == os.path.realpath(path)
            if not ok:
                out.append(f"{name}.{attr} was deleted or replaced (the course defines it in {os.path.basename(path)})")
    for name, aliases in spec["aliases"].items():
        mod = sys.modules.get(name)
        for attr, (src, orig) in aliases.items():
            # a lazy package face binds a name on first use: compare only what is bound
            if mod is not None and sys.modules.get(src) is not None and attr in mod.__dict__ and \
                    mod.__dict__[attr] is not sys.modules[src].__dict__.get(orig):
                out.append(f"{name}.{attr} is no longer {src}.{orig}")
    return out

def _from_notebook(obj):
    """Whether obj (a function, a bound method, a callable object) was defined in the notebook."""
    for candidate in (obj, getattr(obj, "__func__", None), getattr(obj, "__self__", None),
                      type(obj) if not isinstance(obj, type) else None):
        if candidate is not None and getattr(candidate, "__module__", None) == "__main__":
            return True
    return False


def _machinery():
    """The interpreter's machinery the tests rely on, replaced or hooked by code from the notebook."""
    import builtins, random
    out = []
    hooks = {"sys.setprofile": sys.getprofile(), "sys.settrace": sys.gettrace(), "sys.displayhook": sys.displayhook,
             "sys.excepthook": sys.excepthook, "builtins.__import__": builtins.__import__}
    hooks.update({f"random.{n}": getattr(random, n, None) for n in ("getstate", "setstate", "seed", "random")})
    hooks.update({f"builtins.{n}": getattr(builtins, n, None) for n in ("str", "int", "float", "len", "isinstance",
                                                                       "abs", "round", "sum", "print", "repr")})
    try:
        shell = get_ipython()  # noqa: F821 - in the kernel
    except NameError:
        shell = None
    if shell is not None:
        for event, callbacks in getattr(shell.events, "callbacks", {}).items():
            hooks.update({f"IPython event {event}": cb for cb in callbacks})
        for kind in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
            hooks.update({f"IPython {kind}": t for t in getattr(shell, kind, [])})
        for name in ("str", "int", "float", "len", "isinstance", "abs", "round", "sum", "print", "repr", "sorted",
                     "set", "list", "dict", "tuple", "range", "min", "max", "any", "all"):
            value = shell.user_ns.get(name)
            if callable(value):
                hooks[f"the global {name} (shadows the builtin)"] = value
    out += [f"{what} was replaced by code from the notebook" for what, obj in hooks.items()
            if obj is not None and _from_notebook(obj)]
    grading = sys.modules.get("tl_course.grading")
    for cls in [v for v in vars(grading).values() if isinstance(v, type)] if grading else []:
        for attr, value in list(vars(cls).items()):
            if callable(value) and _from_notebook(value):
                out.append(f"tl_course.grading.{cls.__name__}.{attr} was replaced by code from the notebook")
    return out

result = _problems(SPEC) + _machinery()
'''


#: run in the student kernel (in a namespace of its own) once before the first cell and again after every
#: graded test cell: the identity of every piece of the interpreter's machinery the verdict relies on (builtins,
#: ``sys`` hooks, the import system, ``random``, ``math``, ``operator``, comparison and conversion functions of
#: NumPy and torch, ``torch.Tensor``'s methods, IPython's shell methods, display publisher, transformers and
#: exception handlers). An identity is ``object.__repr__`` of the object (its type and address), which no notebook
#: can redefine. The grader keeps the first answer (:func:`machinery_changes`); the kernel never sees it. ``READS``:
#: the builtin names the test cell reads, so a notebook global shadowing one of them is reported too.
WATCH = r"""
import sys

def _watched(reads):
    rep = ().__class__.__mro__[-1].__repr__
    out, shadows = {}, []

    def put(name, x):
        f = getattr(x, "__func__", None)
        out[name] = rep(x if f is None else f)

    caches = ("__slotnames__", "__doc__", "__annotations__", "_abc_impl")  # set by copyreg, typing, abc on use

    def put_all(prefix, mapping, skip=()):
        for k, v in list(mapping.items()):
            if k not in skip and k not in caches:
                put(prefix + k, v)

    import builtins, math, operator, random
    import importlib
    for name in ("numpy", "torch", "torchvision", "tl_course.grading", "IPython.display"):
        try:  # what the course's notebooks import anyway, imported first (importing torchvision rebinds
            importlib.import_module(name)  # torch.manual_seed, for one): the snapshot holds them as imported
        except ImportError:
            pass
    put_all("builtins.", vars(builtins), skip=("_",))
    for mod in (math, operator, random):
        put_all(mod.__name__ + ".", vars(mod))
    put_all("random.Random.", vars(random.Random))
    for name in ("getprofile", "gettrace", "displayhook", "excepthook", "breakpointhook", "unraisablehook"):
        put("sys." + name, getattr(sys, name))
    put("sys.profile", sys.getprofile())
    put("sys.trace", sys.gettrace())
    for i, finder in enumerate(sys.meta_path):
        put(f"sys.meta_path[{i}]", finder)
    for i, hook in enumerate(sys.path_hooks):
        put(f"sys.path_hooks[{i}]", hook)
    for name in ("builtins", "sys", "random", "math", "operator", "numpy", "torch", "IPython.display",
                 "IPython.core.display_functions", "json", "importlib"):
        if name in sys.modules:
            put(f"sys.modules[{name}]", sys.modules[name])
    try:
        import numpy
        for name in ("array_equal", "allclose", "isclose", "asarray", "array", "all", "any", "unique", "argsort",
                     "sort", "isfinite", "isnan", "abs", "sum", "mean", "max", "min", "argmax", "equal", "testing"):
            put("numpy." + name, getattr(numpy, name, None))
        for name in ("get_state", "set_state", "seed", "default_rng", "RandomState"):
            put("numpy.random." + name, getattr(numpy.random, name, None))
    except ImportError:
        pass
    try:
        import torch
        put_all("torch.Tensor.", vars(torch.Tensor))
        for name in ("equal", "allclose", "isclose", "is_grad_enabled", "manual_seed", "get_rng_state", "set_rng_state",
                     "initial_seed", "seed", "is_tensor", "as_tensor", "tensor", "no_grad", "enable_grad",
                     "set_grad_enabled", "inference_mode", "argmax", "unique", "isfinite", "Size"):
            put("torch." + name, getattr(torch, name, None))
        put_all("torch.nn.Module.", vars(torch.nn.Module))
    except ImportError:
        pass
    try:
        import IPython.display
        put("IPython.display.publish_display_data", IPython.display.publish_display_data)
        shell = get_ipython()  # noqa: F821 - in the kernel
    except (ImportError, NameError):
        shell = None
    if shell is not None:
        for name in ("run_cell", "run_cell_async", "run_ast_nodes", "run_code", "showtraceback", "_showtraceback",
                     "showsyntaxerror", "showindentationerror", "get_exception_only", "transform_cell",
                     "transform_ast", "should_run_async", "set_custom_exc", "CustomTB", "excepthook",
                     "displayhook", "display_pub", "compile", "input_transformer_manager", "InteractiveTB",
                     "SyntaxTB", "_get_exc_info", "ex", "ev", "user_ns"):
            put("shell." + name, getattr(shell, name, None))
        put("shell.display_pub.publish", getattr(shell.display_pub, "publish", None))
        put("shell.displayhook.__call__", getattr(type(shell.displayhook), "__call__", None))
        put("shell.custom_exceptions", shell.custom_exceptions)
        for kind in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
            for i, t in enumerate(getattr(shell, kind, [])):
                put(f"shell.{kind}[{i}]", t)
        put("user_ns.__builtins__", shell.user_ns.get("__builtins__"))
        kernel = getattr(shell, "kernel", None)
        for name in ("do_execute", "execute_request", "send_response"):
            put("kernel." + name, getattr(kernel, name, None))
        for name in reads:
            if name in shell.user_ns and shell.user_ns[name] is not builtins.__dict__.get(name):
                shadows.append(name)
    return {"watched": out, "shadows": shadows}

result = _watched(READS)
"""


def machinery_changes(snapshot: dict, now: dict) -> list[str]:
    """What changed in the interpreter's machinery between the snapshot taken before the first cell and now
    (both answers of :data:`WATCH`), in sentences.

    >>> before = {"watched": {"builtins.len": "<f at 0x1>", "shell.showtraceback": "<f at 0x2>"}, "shadows": []}
    >>> machinery_changes(before, before)
    []
    >>> now = {"watched": {"builtins.len": "<f at 0x9>", "shell.showtraceback": "<f at 0x2>",
    ...                    "sys.meta_path[3]": "<h at 0x5>"}, "shadows": ["str"]}
    >>> machinery_changes(before, now)   # doctest: +NORMALIZE_WHITESPACE
    ['the notebook replaced or added builtins.len, sys.meta_path[3] since it started',
     'the notebook defines a global named str, which the test uses as the builtin']
    """
    old, new = snapshot.get("watched", {}), now.get("watched", {})
    changed = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
    out = []
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        out.append(f"the notebook replaced or added {shown} since it started")
    out += [f"the notebook defines a global named {n}, which the test uses as the builtin" for n in now.get("shadows", [])]
    return out


def builtin_reads(source: str) -> list[str]:
    r"""The builtin names a test cell reads without binding them itself (a notebook global of that name would
    change what the test does).

    >>> builtin_reads("x = str(f())\nassert len(x) == 3")
    ['len', 'str']
    >>> builtin_reads("def g(list):\n    return list\nlen = 3")
    []
    """
    import builtins
    import symtable

    try:
        table = symtable.symtable(source, "<test>", "exec")
    except SyntaxError:
        return []
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    reads: set[str] = set()

    def walk(t):
        for s in t.get_symbols():
            if (s.is_global() or (t.get_type() == "module" and s.is_referenced())) and not s.is_assigned():
                reads.add(s.get_name())
        for child in t.get_children():
            walk(child)

    walk(table)
    return sorted(n for n in reads - bound if n in vars(builtins) and not n.startswith("_"))


def _guarded_execute_class():
    from nbclient.util import run_sync
    from nbgrader.preprocessors import Execute

    from tl_course.classroom.notebooks import is_test

    class GuardedExecute(Execute):
        """nbgrader's Execute, where the grader decides each graded test cell (:mod:`.verdict`): the cell is
        instrumented to send its checks out as plain data and judged here; and the integrity probes around it
        (the course package, the interpreter's machinery against a snapshot taken before the first cell). A
        failed verdict or probe gives the cell an error output (nbgrader then scores it 0)."""

        probe_source = ""
        watch_source = ""
        snapshot: dict | None = None

        async def _ask(self, source: str):
            expression = f"(lambda ns: (exec({source!r}, ns), ns['result'])[1])({{}})"
            msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"answer": expression})
            reply = await self.async_wait_for_reply(msg_id)
            value = reply["content"]["user_expressions"]["answer"]
            if value.get("status") != "ok":
                raise RuntimeError(value.get("ename"))
            return ast.literal_eval(value["data"]["text/plain"])

        async def _probe(self) -> list[str]:
            try:
                return list(await self._ask(self.probe_source))
            except Exception as err:  # noqa: BLE001 - a dead or hijacked kernel is a failed check
                return [f"the course's integrity check could not run ({type(err).__name__}: {err})"]

        async def _watch(self, reads: list[str]) -> dict | None:
            if not self.watch_source:
                return {"watched": {}, "shadows": []}
            try:
                return await self._ask(self.watch_source.replace("READS", repr(reads)))
            except Exception:  # noqa: BLE001
                return None

        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            if cell.cell_type == "code" and self.snapshot is None:  # before the notebook's first cell runs
                self.snapshot = await self._watch([]) or {"failed": True}
            graded = is_test(cell) and cell.cell_type == "code"
            original, nonce, sites = cell.source, "", []
            if graded:
                before = await self._probe()
                nonce = secrets.token_hex(16)
                cell.source, sites = _verdict().instrument(original, nonce)
                self.nonces = [*getattr(self, "nonces", []), nonce]
            try:
                cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            finally:
                cell.source = original
            verdict: list[str] = []
            if graded:
                verdict = _verdict().judge(cell.outputs, nonce, sites, earlier=set(self.nonces[:-1]))
                cell.outputs = [o for o in cell.outputs if not _verdict().is_record(o)]
            if cell.cell_type == "code":  # one huge line or output is cut here, before it is written anywhere
                import nbformat

                cell.outputs = nbformat.from_dict(_safety().neutralise_outputs(cell.outputs))
            if graded:
                from nbformat.v4 import new_output

                now = await self._watch(builtin_reads(original))
                problems = before + [p for p in await self._probe() if p not in before]
                if now is None or self.snapshot.get("failed"):
                    problems.append("the check of the interpreter's machinery could not run")
                else:
                    problems += machinery_changes(self.snapshot, now)
                errored = any(o.get("output_type") == "error" for o in cell.outputs)
                if problems:
                    text = ("The notebook changed the course package or the interpreter's machinery, so this "
                            "test cannot be trusted: " + "; ".join(problems[:3]) + ".")
                    cell.outputs.append(new_output("error", ename="CourseCodeModified", evalue=text,
                                                   traceback=[f"CourseCodeModified: {text}"]))
                elif verdict and not errored:
                    text = ("The grader's own check of this test's results failed: " + "; ".join(verdict[:3]) + ".")
                    cell.outputs.append(new_output("error", ename="TestNotPassed", evalue=text,
                                                   traceback=[f"TestNotPassed: {text}"]))
            return cell

        # nbclient binds its synchronous wrapper to the base class's coroutine: bind it to ours
        execute_cell = run_sync(async_execute_cell)

        def preprocess(self, *args, **kwargs):
            self.snapshot, self.nonces = None, []
            try:
                return super().preprocess(*args, **kwargs)
            finally:
                _kill_notebook_processes()

    return GuardedExecute


@functools.lru_cache(maxsize=None)
def _sibling(name: str):
    """``tl_course.classroom.<name>``, loaded from beside this file (it runs as a script: no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tl_course_classroom_{name}", SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _safety():
    return _sibling("safety")


def _verdict():
    return _sibling("verdict")


@functools.lru_cache(maxsize=None)
def restore_tests_class():
    """nbgrader's preprocessor class :class:`RestoreTestCells`, made on first use: the first of nbgrader's
    sanitising steps, in the sandbox and in the grader alike (:mod:`tl_course.classroom.repair`)."""
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import List

    class RestoreTestCells(NbGraderPreprocessor):
        """A deleted test cell restored, a pasted copy of one graded once (:func:`repair_cells`)."""

        tests = List([], help="the release notebook's test cells (nbformat dicts)").tag(config=True)

        def preprocess(self, nb, resources):
            import nbformat

            cells = [dict(c) for c in nb.cells]
            _sibling("repair").repair_cells(cells, [dict(t) for t in self.tests])
            nb.cells = [nbformat.from_dict(c) for c in cells]
            return nb, resources

    return RestoreTestCells


def with_restore_tests(config, tests: list) -> None:
    """``config`` (nbgrader's) with :func:`restore_tests_class` first among autograde's sanitising steps."""
    from nbgrader.converters import Autograde

    config.RestoreTestCells.tests = list(tests)
    config.Autograde.sanitize_preprocessors = [
        restore_tests_class(), *Autograde.class_traits()["sanitize_preprocessors"].make_dynamic_default()]


def _kill_notebook_processes() -> None:
    """In the child, once the kernel is shut down: kill whatever the notebook left running. A process it
    started (detached, in a session of its own) could otherwise rewrite the executed notebook between
    nbgrader writing it and the grader reading it, e.g. drop every error output: full marks for a blank
    notebook."""
    if os.getpid() == 1:  # isolated_command: this PID namespace holds nothing but this job
        try:
            os.kill(-1, signal.SIGKILL)  # from PID 1: every other process of the namespace
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # orphans are re-parented to us: reap them, so they are gone
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    time.sleep(0.01)
            except ChildProcessError:
                break
    elif os.environ.get(MARKER):
        _kill_job_processes(os.environ[MARKER], spare=os.getpid())


def _execute(course: Path) -> int:
    """In the child: autograde ``submitted/<student>/<assignment>`` against the private gradebook."""
    job = json.loads((course / "job.json").read_text())
    assignment, student = job["assignment"], job["student"]
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import Execute
    from nbgrader.converters import Autograde
    from traitlets.config import Config

    guarded = _guarded_execute_class()
    guarded.probe_source = (PROBE.replace("SPEC", repr(integrity_spec())) if job.get("integrity", True)
                            else "result = []")
    guarded.watch_source = WATCH if job.get("integrity", True) else ""
    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.course_id = "transfer-learning-cv"
    config.Execute.timeout = int(job.get("cell_timeout") or 300)
    config.Execute.shutdown_kernel = "immediate"  # a graceful shutdown costs seconds per notebook, for nothing
    with_restore_tests(config, job.get("tests", []))
    config.Autograde.autograde_preprocessors = [guarded if p is Execute else p
                                                for p in Autograde.class_traits()["autograde_preprocessors"].make_dynamic_default()]
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    t0 = time.time()
    result = api.autograde(assignment, student, force=True, create=True)
    executed = course / "autograded" / student / assignment / f"{assignment}.ipynb"
    info = {"success": bool(result.get("success")) and executed.exists(), "executed": str(executed),
            "reason": autograde_failure(result) if not result.get("success") else "",
            "timings": _timings(executed, t0) if executed.exists() else {}, "scores": {}}
    (course / "result.json").write_text(json.dumps(info))
    return 0


_EXCEPTION_LINE = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.+)$")


def autograde_failure(result: dict) -> str:
    """nbgrader's failure, in one sentence: its log says "see the above traceback"; the cause is above."""
    text = (result.get("error") or "") + "\n" + (result.get("log") or "")
    if "DeadKernelError" in text or "Kernel died" in text:
        return "the notebook's kernel died (os._exit, a crash or the memory limit); every test cell scores 0."
    if "CellTimeoutError" in text:
        return "a cell ran past the time limit and could not be interrupted; every test cell scores 0."
    causes = [f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}" for m in map(_EXCEPTION_LINE.match, text.splitlines())
              if m and "NbGraderException" not in m.group(1)]
    cause = causes[0] if causes else (text.strip().splitlines() or ["no message"])[-1]
    return f"nbgrader could not grade this notebook ({cause[:300]}); every test cell scores 0."


def _timings(executed: Path, t0: float) -> dict:
    """Where the time went, from nbclient's per-cell timestamps: kernel start, imports (the setup cell),
    model load (cells calling load_pretrained outside tests), tests (graded cells), the rest."""
    import nbformat
    from datetime import datetime

    from tl_course.classroom.notebooks import grade_id, is_test

    nb = nbformat.read(executed, as_version=4)
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()  # noqa: E731
    out = {"kernel_start": 0.0, "imports": 0.0, "model_load": 0.0, "tests": 0.0, "other": 0.0}
    first = None
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
            continue
        begin, end = parse(timing["iopub.execute_input"]), parse(timing["shell.execute_reply"])
        first = begin if first is None else first
        if grade_id(cell) == "setup":
            key = "imports"
        elif is_test(cell):
            key = "tests"
        elif "load_pretrained(" in cell.source:
            key = "model_load"
        else:
            key = "other"
        out[key] += end - begin
    if first is not None:
        out["kernel_start"] = max(0.0, first - t0)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "execute":
        sys.exit(_execute(Path(sys.argv[2])))
    if len(sys.argv) >= 4 and sys.argv[1] == "kernel":  # nbclient may add arguments for ipykernel
        _launch_kernel(sys.argv[2], sys.argv[3], sys.argv[4:])
    sys.exit("usage: python -P sandbox.py execute COURSE_DIR (run by python -m tl_course.classroom grade, not by hand)")
