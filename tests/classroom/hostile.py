"""Hostile submissions for the class-grading test: what each does and what it must score.

Each entry: the answer cells it changes (grade id -> source, added to or replacing the reference) and the
points every graded cell must get (cells not named keep full points). The assignment is
ch02_cat_detector, the cheapest notebook to run.
"""
ASSIGNMENT = "ch02_cat_detector"

_CAT_LABEL = '''def cat_label(breed):
    """0 for Bengal (Tigger), 1 for Russian_Blue (Misty), 2 for every other breed (neither)."""
    return {"Bengal": 0, "Russian_Blue": 1}.get(breed, 2)
'''

HOSTILE = {
    # loops forever inside the function a test calls: that test cell hits the cell timeout
    "loop": {"cells": {"cat_label": "def cat_label(breed):\n    while True:\n        pass\n"},
             "expect": {"test_cat_label": 0}, "reason": "CellTimeoutError"},
    # kills its own kernel: nothing after it can run, the whole submission scores 0 with the reason
    "kill": {"cells": {"cat_label": _CAT_LABEL + "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"},
             "expect": "zero", "reason": "kernel died"},
    # asks for 50 GB in the function four tests call: the memory limit turns it into a MemoryError there
    "memory": {"cells": {"split_per_class": "SPLIT_PER_CLASS_WITH_HOG"},
               "expect": {"test_split_counts": 0, "test_split_no_overlap": 0, "test_split_seeded": 0,
                          "test_split_stable_test_set": 0}, "reason": "MemoryError"},
    # prints 200 MB: nbgrader's LimitOutput trims it, nothing else happens
    "flood": {"cells": {"cat_label": _CAT_LABEL + "\nfor _ in range(200):\n    print('x' * 1_000_000)\n"},
              "expect": {}, "reason": ""},
    # deletes what it can reach around it: the shared feature cache, the photos, the course package
    "delete": {"cells": {"cat_label": _CAT_LABEL + '''
import os, shutil, tl_course
for _p in (os.environ.get("TL_COURSE_CACHE"), os.environ.get("TL_COURSE_DATA"),
           os.path.dirname(tl_course.__file__)):
    if _p:
        shutil.rmtree(_p, ignore_errors=True)
'''}, "expect": {}, "reason": ""},
    # monkey-patches the course package the hidden tests import
    "patch": {"cells": {"cat_label": _CAT_LABEL + '''
import tl_course.data
tl_course.data.breed_of = lambda path: "Bengal"
'''}, "expect": "zero", "reason": "CourseCodeModified"},
    # brings its own tl_course module (written to its TMPDIR) and puts it first on sys.path
    "fake_module": {"cells": {"split_per_class": "SPLIT_PER_CLASS_WITH_FAKE"},
                    "expect": {"test_split_counts": 0, "test_split_no_overlap": 0, "test_split_seeded": 0,
                               "test_split_stable_test_set": 0, "test_q_selection": 0},
                    "reason": "CourseCodeModified"},
    # leaves a detached process behind that deletes every error output from the executed notebook once
    # nbgrader writes it (a wrong answer would then pass): it is killed when execution ends
    "rewrite": {"cells": {"cat_label": "REWRITE_DAEMON" + "\ndef cat_label(breed):\n    return 2\n"},
                "expect": {"test_cat_label": 0}, "reason": ""},
    # looks for the gradebook's credentials in its environment and its parents'
    "snoop": {"cells": {"q_selection": '''def answer_selection():
    """Your choice: "a", "b" or "c"."""
    return "b"

import os
print(dict(os.environ))
_pid = os.getpid()
while _pid > 1:
    for _what in ("environ", "cmdline"):
        try:
            print(_pid, _what, open(f"/proc/{_pid}/{_what}", "rb").read())
        except OSError as _err:
            print(_pid, _what, "unreadable:", _err)
    _pid = int(open(f"/proc/{_pid}/stat").read().rsplit(")", 1)[1].split()[1])
'''}, "expect": {}, "reason": ""},
}

_REWRITE = '''
import subprocess, sys
_daemon = """
import json, os, time
p = os.path.join(os.getcwd(), "ch02_cat_detector.ipynb")
for _ in range(100000):
    time.sleep(0.005)
    try:
        nb = json.load(open(p))
    except Exception:
        continue
    if not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"):
        continue
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c["outputs"] = [o for o in c["outputs"] if o.get("output_type") != "error"]
    json.dump(nb, open(p + ".tmp", "w"))
    os.replace(p + ".tmp", p)
    break
"""
subprocess.Popen([sys.executable, "-c", _daemon], start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''

_FAKE = '''
import os, sys, tempfile
_where = tempfile.mkdtemp()  # (behind the wall the notebook's own folder is not writable; its TMPDIR is)
with open(os.path.join(_where, "tl_course.py"), "w") as _f:
    _f.write("def find_pet_images(*a, **k):\\n    return [], []\\n"
             "def get_profile(*a, **k):\\n    raise SystemExit\\n")
sys.path.insert(0, _where)
for _m in [m for m in sys.modules if m == "tl_course" or m.startswith("tl_course.")]:
    del sys.modules[_m]
'''


def sources(reference: dict[str, str]) -> dict[str, dict[str, str]]:
    """Every hostile submission's answer cells, given the reference answer cells (grade id -> source)."""
    hog = _insert_first_line(reference["split_per_class"], "def split_per_class", "    _hog = bytearray(50 * 2**30)")
    out = {}
    for name, spec in HOSTILE.items():
        cells = {}
        for gid, src in spec["cells"].items():
            if src == "SPLIT_PER_CLASS_WITH_HOG":
                src = hog
            elif src.startswith("REWRITE_DAEMON"):
                src = _REWRITE + src[len("REWRITE_DAEMON"):]
            elif src == "SPLIT_PER_CLASS_WITH_FAKE":
                src = reference["split_per_class"] + "\n" + _FAKE
            cells[gid] = src
        out[name] = cells
    return out


def _insert_first_line(source: str, signature: str, line: str) -> str:
    """``line`` as the first statement of the function starting with ``signature`` (after its docstring)."""
    import ast

    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and source.splitlines()[node.lineno - 1].startswith(signature):
            lines = source.splitlines()
            lines.insert(node.body[0].lineno - 1, line)
            return "\n".join(lines) + "\n"
    raise ValueError(f"no function {signature!r} in the reference")


# ---------------------------------------------------------------------------------------------
# Issue 17: the hostile class of tests/test_hostile_class.py (its own small class, a PostgreSQL gradebook
# with password-less local connections, a root-only file beside the course). Each case keeps the
# reference answers, so it must score full marks; what it tried is checked from its outputs and feedback.
# "sample": in the normal suite; the others only with TL_COURSE_HOSTILE=all (make test-hostile).
# ---------------------------------------------------------------------------------------------
#: what the kernel can reach: prints one line "PROBE {json}" (placeholders filled in by the test)
PROBE = r'''
import glob, json, os, socket
_r = {"uid": os.getuid()}
_course = os.path.abspath(os.path.join(os.getcwd(), "..", "..", ".."))
for _name, _path in (("gradebook", os.path.join(_course, "gradebook.db")), ("secret", "__SECRET__"),
                     ("job_json", os.path.join(_course, "job.json"))):
    try:
        open(_path, "rb").read(16)
        _r[_name] = "READ"
    except OSError as _e:
        _r[_name] = type(_e).__name__
try:
    _r["other_jobs"] = sorted(os.listdir(os.path.dirname(os.path.dirname(_course))))
except OSError as _e:
    _r["other_jobs"] = type(_e).__name__
_own = set()
try:
    from ipykernel.kernelapp import IPKernelApp
    _app = IPKernelApp.instance()
    _own = {_app.shell_port, _app.iopub_port, _app.stdin_port, _app.control_port, _app.hb_port}
except Exception:
    pass
_listen = set()
for _f in ("/proc/net/tcp", "/proc/net/tcp6"):
    for _line in open(_f).read().splitlines()[1:]:
        _parts = _line.split()
        if _parts[3] == "0A":
            _listen.add(int(_parts[1].rsplit(":", 1)[1], 16))
_r["foreign_listeners"] = sorted(_listen - _own)
_r["listeners"] = sorted(_listen)
try:
    socket.create_connection(("127.0.0.1", __PG_PORT__), timeout=3).close()
    _r["pg_tcp"] = "CONNECTED"
except OSError as _e:
    _r["pg_tcp"] = type(_e).__name__
try:
    _s = socket.socket(socket.AF_UNIX)
    _s.connect(os.path.join("__PG_SOCKET__", ".s.PGSQL.__PG_PORT__"))
    _s.close()
    _r["pg_socket"] = "CONNECTED"
except OSError as _e:
    _r["pg_socket"] = type(_e).__name__
try:
    import psycopg
    with psycopg.connect(host="__PG_SOCKET__", port=__PG_PORT__, user="pgadmin", dbname="gradebook",
                         connect_timeout=3) as _c:
        _c.execute("UPDATE grade SET auto_score = 0")
    _r["pg_update"] = "UPDATED"
except Exception as _e:
    _r["pg_update"] = type(_e).__name__
_written, _why, _files = 0, "cap", []
try:  # files of 256 MiB (under the per-file limit) until the disk is full or 3 GiB are written
    while _written < 3 * 2**30:
        _files.append(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fill{len(_files)}"))
        with open(_files[-1], "wb") as _fh:
            for _ in range(4):
                _fh.write(b"\0" * 2**26)
                _fh.flush()
                _written += 2**26
except OSError as _e:
    _why = type(_e).__name__ + str(_e.errno)
finally:
    for _p in _files:
        try:
            os.remove(_p)
        except OSError:
            pass
_r["disk_written"], _r["disk_stop"] = _written, _why
print("PROBE " + json.dumps(_r))
'''

#: student markup and terminal escapes in outputs: the feedback must run none of it and show them escaped
_MARKUP = r'''
from IPython.display import HTML, Markdown, Javascript, display
display(HTML("<script>alert('xss-script')</script><img src=x onerror=\"alert('xss-onerror')\">"))
display(Markdown("[click](javascript:alert('xss-link'))"))
display(Javascript("alert('xss-js')"))
print("\x1b[2J\x1b]0;pwned\x07\x00 terminal escapes")
'''

HOSTILE_CLASS = {
    # reads the job's gradebook (hidden tests), a root-only file, other jobs; looks for other kernels and
    # the gradebook server on loopback and its Unix socket; rewrites every grade; fills its disk
    "probe": {"sample": True, "extra": PROBE},
    # <script>, onerror, javascript: links, a Javascript output, ANSI and other control characters
    "markup": {"sample": True, "extra": _MARKUP},
    # one 100 MB output line
    "line": {"sample": False, "extra": "print('x' * 100_000_000)\n"},
    # a file whose name is not UTF-8 beside the notebook
    "nonutf8": {"sample": False, "extra": "", "file": b"notes-\xff\xfe.txt"},
    # an honest copy-and-paste of a test cell (Jupyter copies its metadata): graded once, not zeroed
    "pasted": {"sample": True, "extra": "", "paste": "test_cat_label"},
    # verdict tricks that hook the machinery (an assert-dropping transformer, an import hook, a global str,
    # a patched grading class): the integrity check around every test cell fails them all, visibly
    "tricks": {"sample": False, "score": 0.0, "extra": "TRICKS"},
}


def class_sources(reference: dict[str, str], fill: dict[str, str]) -> dict[str, dict[str, str]]:
    """Every case of :data:`HOSTILE_CLASS` as answer cells: the reference's, with the case's code after
    the ``cat_label`` answer (placeholders of ``fill`` replaced)."""
    out = {}
    for name, spec in HOSTILE_CLASS.items():
        extra = spec["extra"]
        if extra == "TRICKS":  # (VERDICT_TRICKS is defined below)
            extra = "".join(VERDICT_TRICKS[k] for k in ("transformer", "import_hook", "forbidden_called", "global_str"))
        for key, value in fill.items():
            extra = extra.replace(key, value)
        out[name] = {"cat_label": reference["cat_label"] + "\n" + extra}
    return out


#: the nine ways of issue 17 to make a blank or wrong notebook pass while student code and tests share one
#: kernel (as the student would write them in an answer cell); each is listed for review in summary.md
#: (tl_course.classroom.review), and the verdict outside the kernel defeats them (tests/test_verdict.py)
VERDICT_TRICKS = {
    "displayhook": "import sys\nsys.displayhook('ok')\n",
    "transformer": "ip = get_ipython()\nip.input_transformers_post.append(lambda lines: [] if any('assert' in l for l in lines) else lines)\n",
    "equal_to_all": "class Any(int):\n    def __eq__(self, other):\n        return True\n",
    "setprofile": "import sys\nsys.setprofile(None)\n",
    "forbidden_called": "import tl_course.grading\ntl_course.grading.Trace.forbidden_called = lambda self, *a: False\n",
    "run_cell_events": "get_ipython().events.register('pre_run_cell', lambda info: None)\n",
    "import_hook": "import builtins\n_real = builtins.__import__\nbuiltins.__import__ = lambda name, *a, **k: _real(name, *a, **k)\n",
    "random_state": "import random\nrandom.getstate = lambda: None\n",
    "global_str": "str = lambda x: 'ok'\n",
}
