"""The verdict outside the kernel (issue 17, item 1): :mod:`tl_course.classroom.verdict` and the grader's
use of it in :mod:`tl_course.classroom.sandbox`.

- without notebooks: the rewrite keeps every test cell of the course valid Python that reports each assert;
  :func:`~tl_course.classroom.verdict.plain` lets no student object cross (a subclass's ``__eq__``, a
  tensor subclass's ``__torch_function__``); :func:`~tl_course.classroom.verdict.judge` fails a cell that
  lies, forges a record, skips an assert it always runs, or does not run to its end; an instrumented cell
  behaves as the original (same failures, same messages);
- with notebooks (``slow``): a tiny assignment graded by ``python -m tl_course.classroom grade``: the
  reference scores full marks, the blank 0, a correct answer in another style full marks, and a wrong
  answer hidden behind each kind of kernel trick (a value equal to everything, a swallowed exception, a
  replaced traceback printer or display publisher, an input transformer, forged records, a global shadowing
  a builtin, a hook disguised as IPython's own) scores 0 on the cells it would otherwise pass.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

import tl_course
from tl_course.classroom import sandbox, verdict
from tl_course.classroom.notebooks import is_test

ROOT = Path(tl_course.__file__).resolve().parents[1]
SOLUTIONS = sorted(ROOT.glob("solutions/*/*.ipynb"))


# ---------------------------------------------------------------------------------------------
# The rewrite
# ---------------------------------------------------------------------------------------------
def _test_cells():
    for path in SOLUTIONS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and is_test(cell):
                yield path.stem, cell.metadata["nbgrader"]["grade_id"], cell.source


def test_every_course_test_cell_is_rewritten_into_valid_python():
    cells = list(_test_cells())
    assert len(cells) >= 60, len(cells)
    reported = 0
    for assignment, gid, source in cells:
        new, sites = verdict.instrument(source, "nonce")
        tree = ast.parse(new)  # valid Python
        asserts = sum(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(source)))
        left = sum(isinstance(n, ast.Assert) for n in ast.walk(tree))
        in_classes = sum(isinstance(n, ast.Assert) for c in ast.walk(ast.parse(source)) if isinstance(c, ast.ClassDef)
                         for n in ast.walk(c))
        assert left == in_classes, f"{assignment}/{gid}: {left} asserts left outside class bodies"
        assert new.rstrip().endswith(".done('nonce')"), f"{assignment}/{gid} does not report its end"
        assert new.count(".check(") + new.count(".check_call(") >= asserts - in_classes
        reported += new.count(".check(") + new.count(".check_call(")
    assert reported >= 330, reported


def _run(source: str, nonce: str = "N") -> tuple[list[dict], BaseException | None]:
    """Run an instrumented cell in this process; the records it publishes, and the exception it raised."""
    records: list[dict] = []
    real = verdict._publish
    verdict._publish = records.append
    try:
        new, _ = verdict.instrument(source, nonce)
        exec(compile(new, "<cell>", "exec"), {"__name__": "__main__"})
        return records, None
    except BaseException as err:  # noqa: BLE001
        return records, err
    finally:
        verdict._publish = real


def _verdict(source: str, nonce: str = "N") -> list[str]:
    records, _ = _run(source, nonce)
    _, sites = verdict.instrument(source, nonce)
    return verdict.judge([verdict.record_output(r) for r in records], nonce, sites)


@pytest.mark.parametrize("source, ok", [
    ("assert 1 + 1 == 2", True),
    ("assert [1, (2, 'a')] == [1, (2, 'a')] and {1: {2}} == {1: {2}}", True),
    ("x = None\nassert x is None and not x", True),
    ("assert 1 < 2 < 3 and 3 > 2 >= 2", True),
    ("assert 'b' in ('a', 'b') and 'c' not in {'a': 1}", True),
    ("assert 0 or 1", True),
    ("import math\nassert math.isclose(0.1 + 0.2, 0.3)", True),
    ("for i in range(3):\n    assert i < 3", True),
    ("def f(v):\n    assert v > 0, 'positive'\n    return v\nassert f(2) == 2", True),
    ("from pathlib import Path\nassert Path('a') / 'b' == Path('a/b')", True),
    ("from collections import Counter\nassert Counter('aab') == {'a': 2, 'b': 1}", True),
    ("import numpy as np\nassert np.int64(3) == 3 and np.arange(3).tolist() == [0, 1, 2]", True),
    ("import numpy as np\nassert (np.arange(3) == np.arange(3)).all()", True),
    ("import torch\nassert torch.tensor(2.0) > 1 and torch.zeros(2, 3).shape == (2, 3)", True),
    ("import torch\nassert torch.zeros(2).dtype == torch.float32", True),
    ("assert type(3) == int", True),
    ("x = []\nassert x == []", True),
    ("assert 1 == 2", False),
    ("assert 1 < 2 < 1", False),
    ("assert 1 and 0", False),
    ("assert float('nan') == float('nan')", False),
    ("for i in range(3):\n    assert i < 2", False),
    ("assert print", False),                     # a value that is not plain data cannot be judged: fails
])
def test_instrumented_cell_judged(source, ok):
    records, err = _run(source)
    problems = _verdict(source)
    assert (problems == []) is ok, problems
    assert (err is None) is ok, err   # the kernel fails exactly when the grader does


def test_instrumented_cell_keeps_its_messages():
    _, err = _run("x = 3\nassert x == 4, f'x should be 4, got {x}'")
    assert isinstance(err, AssertionError) and str(err) == "x should be 4, got 3"
    _, err = _run("from tl_course import grading\ngrading.check(1 > 2, 'one is not above two', 'count again')")
    assert isinstance(err, AssertionError) and str(err) == "one is not above two: count again."
    _, err = _run("assert 1 == 1\nraise ValueError('boom')")
    assert isinstance(err, ValueError)


def test_check_call_is_only_the_grading_modules():
    new, _ = verdict.instrument("class S:\n    def check(self, x):\n        return x\nS().check('a')", "N")
    assert "check_call" not in new
    new, _ = verdict.instrument("from tl_course.grading import check as c\nc(1 == 1, 'fine')", "N")
    assert "check_call" in new


class _AnyInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class _AnyStr(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


class _AnyTuple(tuple):
    def __eq__(self, other):
        return True

    __hash__ = tuple.__hash__

    def __iter__(self):
        return iter(("lie",))


class _AnyList(list):
    def __eq__(self, other):
        return True

    def __iter__(self):
        return iter([99])


class _AnyDict(dict):
    def __eq__(self, other):
        return True

    def items(self):
        return [("k", 1)]


class _AnyFloat(float):
    def __eq__(self, other):
        return True

    def __lt__(self, other):
        return True

    __hash__ = float.__hash__


@pytest.mark.parametrize("liar, truth", [
    (_AnyInt(0), 0), (_AnyStr("a"), "a"), (_AnyTuple((1, 2)), {"t": [1, 2]}), (_AnyList([1]), {"l": [1]}),
    (_AnyDict({"a": 1}), {"d": [["a", 1]]}), (_AnyFloat(2.0), 2.0)])
def test_plain_drops_the_students_dunders(liar, truth):
    assert verdict.plain(liar) == truth
    assert liar == "anything"  # (what the kernel alone would believe)
    assert verdict.truth(verdict.encode(("cmp", ("==",), (lambda: liar, lambda: "anything")))) is False


def test_plain_ignores_a_tensor_subclass_that_lies():
    import torch

    class Liar(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func is torch.Tensor.tolist:
                return [1.0, 2.0, 3.0]
            return super().__torch_function__(func, types, args, kwargs or {})

    liar = torch.zeros(3).as_subclass(Liar)
    assert liar.tolist() == [1.0, 2.0, 3.0]
    assert verdict.plain(liar)["nd"] == [0.0, 0.0, 0.0]
    assert verdict.plain(torch.nn.Parameter(torch.ones(1)))["nd"] == [1.0]


def test_plain_refuses_objects_and_huge_values():
    with pytest.raises(verdict.NotPlain):
        verdict.plain(object())
    with pytest.raises(verdict.NotPlain):
        verdict.plain(lambda: 1)
    import numpy as np

    with pytest.raises(verdict.NotPlain):
        verdict.plain(np.zeros(verdict.MAX_ELEMENTS + 1))


def test_plain_round_trips_through_json():
    import numpy as np
    import torch

    values = [1, 2.5, float("inf"), "x", None, True, (1, [2, {3: "a"}]), {1, 2}, frozenset({"a"}), b"\x00\xff",
              np.float32(1.5), np.arange(6).reshape(2, 3), torch.arange(4.0), torch.zeros(2, dtype=torch.bool),
              Path("a/b"), range(3), 1 + 2j, torch.float16, int]
    for v in values:
        back = verdict.decode(json.loads(json.dumps(verdict.plain(v), allow_nan=False)))
        if isinstance(back, np.ndarray):
            assert back.tolist() == (v.tolist() if hasattr(v, "tolist") else v)
        elif isinstance(v, (type, torch.dtype)):
            assert back == verdict.decode(verdict.plain(v))
        else:
            assert back == v, (v, back)


def test_judge_refuses_lies_forgeries_and_silence():
    end = {"nonce": "N", "done": True}
    true_record = {"nonce": "N", "site": 1, "ok": True, "expr": {"cmp": ["=="], "pairs": [[1, 1]]}}
    out = verdict.record_output
    assert verdict.judge([out(true_record), out(end)], "N", [1]) == []
    # a record claiming ok whose data says otherwise
    lie = dict(true_record, expr={"cmp": ["=="], "pairs": [[1, 2]]})
    assert verdict.judge([out(lie), out(end)], "N", [1])
    # a record or an end with another nonce (made by the student's code, not this test)
    assert verdict.judge([out(dict(true_record, nonce="X")), out(end)], "N", [1])
    assert verdict.judge([out(true_record), out(dict(end, nonce="X"))], "N", [1])
    # an assert the cell always runs that never reported; no end; nothing at all
    assert verdict.judge([out(end)], "N", [1])
    assert verdict.judge([out(true_record)], "N", [1])
    assert verdict.judge([], "N", [])
    # a short-circuited `and` that claims to be complete, a chain with a missing link
    assert verdict.judge([out(dict(true_record, expr={"and": [{"value": True}], "n": 2})), out(end)], "N", [1])
    assert verdict.judge([out(dict(true_record, expr={"cmp": ["<", "<"], "pairs": [[1, 2]]})), out(end)], "N", [1])
    # garbage in a record is a failure, not a crash
    assert verdict.judge([out(dict(true_record, expr={"cmp": "x"})), out(end)], "N", [1])
    assert verdict.judge([out(dict(true_record, expr={"value": {"nd": [1], "dtype": "nope", "shape": [1]}})),
                          out(end)], "N", [1])


def test_builtin_reads_and_machinery_changes():
    assert sandbox.builtin_reads("_c = str(answer()).strip()\nassert _c in ('a', 'b')") == ["str"]
    snap = {"watched": {"builtins.len": "a", "shell.showtraceback": "b"}, "shadows": []}
    assert sandbox.machinery_changes(snap, snap) == []
    assert sandbox.machinery_changes(snap, {"watched": {"builtins.len": "a", "shell.showtraceback": "c"},
                                            "shadows": []})
    assert sandbox.machinery_changes(snap, {"watched": snap["watched"], "shadows": ["str"]})


# ---------------------------------------------------------------------------------------------
# With notebooks: a tiny assignment, graded by the course's grader
# ---------------------------------------------------------------------------------------------
ANSWER = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION
'''
TESTS = {
    "test_double": ("assert double(2) == 4, 'double(2) should be 4'\n"
                    "### BEGIN HIDDEN TESTS\nassert double(-3) == -6\n### END HIDDEN TESTS\n"),
    "test_double_many": ("from tl_course import grading\n"
                         "for _v in range(5):\n"
                         "    grading.check(double(_v) == 2 * _v, f'double({_v}) is wrong')\n"
                         "_name = str(double(1))\n"
                         "assert _name == '2', f'str(double(1)) should be 2, got {_name}'\n"),
}
#: a wrong answer (or no answer) behind each kind of trick: every test cell must score 0
WRONG = "def double(x):\n    return 0\n"
TRICKS = {
    # values that compare equal to everything
    "any_int": "class Any(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
               "def double(x):\n    return Any(0)\nstr = lambda v: '2'\n",
    # every exception swallowed by IPython's custom exception handler
    "custom_exc": WRONG + "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n",
    # the traceback printer replaced: errors leave no error output
    "showtraceback": WRONG + "_ip = get_ipython()\n_ip.showtraceback = lambda *a, **k: None\n"
                             "_ip._showtraceback = lambda *a, **k: None\n",
    # the same, disguised as IPython's own code (a function whose __module__ and file are IPython's)
    "disguised": WRONG + ("_ns = {'__name__': 'IPython.core.interactiveshell'}\n"
                          "exec(compile('def showtraceback(*a, **k):\\n    return None\\n',"
                          " __import__('IPython').core.interactiveshell.__file__, 'exec'), _ns)\n"
                          "get_ipython().showtraceback = _ns['showtraceback']\n"
                          "get_ipython()._showtraceback = _ns['showtraceback']\n"),
    # an input transformer that empties every cell (nothing runs, nothing fails)
    "transformer": WRONG + "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])\n",
    # the answer forges passing records and the end, with the nonce read from the running cell, then stops the
    # cell without an error (exceptions swallowed)
    "forge": ('''import sys
def double(x):
    import re
    from IPython.display import publish_display_data
    src = get_ipython().user_ns["In"][-1]
    nonce = re.findall(r"check\\('([0-9a-f]+)'", src) or re.findall(r"done\\('([0-9a-f]+)'", src)
    mime = "application/vnd.tl-course.verdict+json"
    for n in set(nonce):
        for site in range(1, 20):
            publish_display_data({mime: {"nonce": n, "site": site, "ok": True,
                                         "expr": {"cmp": ["=="], "pairs": [[4, 4]]}}})
        publish_display_data({mime: {"nonce": n, "done": True}})
    raise KeyboardInterrupt
get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)
'''),
    # the display publisher replaced: failing records dropped; exceptions swallowed
    "display_pub": WRONG + ('''_ip = get_ipython()
_real = _ip.display_pub.publish
def _filter(data, *a, **k):
    rec = data.get("application/vnd.tl-course.verdict+json")
    if rec is not None and rec.get("ok") is False:
        return None
    return _real(data, *a, **k)
_ip.display_pub.publish = _filter
_ip.set_custom_exc((BaseException,), lambda *a, **k: None)
'''),
    # a global that shadows the builtin the test uses
    "global_str": "def double(x):\n    return 1\nstr = lambda v: '2'\n",
    # builtins.len and an import hook replaced (module-level machinery)
    "builtins": WRONG + "import builtins\nbuiltins.isinstance = lambda *a: True\n",
}
#: the cases ``make test`` runs (one of each way in: an always-equal value, a swallowed exception, forged
#: records, a hook disguised as IPython's own); ``TL_COURSE_HOSTILE=all`` (``make test-hostile``) runs them all
SAMPLE = ("any_int", "custom_exc", "forge", "disguised")
CASES = sorted(TRICKS) if os.environ.get("TL_COURSE_HOSTILE") == "all" else list(SAMPLE)
#: correct answers in other styles: full marks
ALTERNATIVES = {
    "numpy": "import numpy as np\ndef double(x):\n    return np.int64(x) * 2\n",
    "add": "def double(x):\n    return x + x\n",
}


def _tiny_course(parent: Path) -> Path:
    course = parent / "course"
    src = course / "solutions" / "tiny"
    src.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}

    def meta(gid, **kw):
        return {"nbgrader": {"grade_id": gid, "schema_version": 3, "locked": False, "solution": False,
                             "grade": False, "task": False, **kw}}

    answer = nbformat.v4.new_code_cell(ANSWER, metadata=meta("double", solution=True))
    cells = [answer]
    for gid, test in TESTS.items():
        cells.append(nbformat.v4.new_code_cell(test, metadata=meta(gid, grade=True, locked=True, points=1)))
    nb.cells = cells
    nbformat.write(nb, src / "tiny.ipynb")
    for root, dirs, _files in os.walk(parent):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    os.chmod(parent, 0o755)
    return course


def _hand_in(course: Path, student: str, answer_source: str) -> None:
    nb = nbformat.read(course / "solutions" / "tiny" / "tiny.ipynb", as_version=4)
    nb.cells[0].source = answer_source
    folder = course / "submitted" / student / "tiny"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "tiny.ipynb")


@pytest.fixture(scope="module")
def tiny_class():
    parent = Path(tempfile.mkdtemp(prefix="tl_course-test-verdict-"))
    try:
        course = _tiny_course(parent)
        _hand_in(course, "reference", ANSWER.replace("    ### BEGIN SOLUTION\n", "").replace("    ### END SOLUTION\n", ""))
        _hand_in(course, "blank", "def double(x):\n    raise NotImplementedError()\n")
        for name, source in {**{k: TRICKS[k] for k in CASES}, **{f"alt-{k}": v for k, v in ALTERNATIVES.items()}}.items():
            _hand_in(course, name.replace("_", "-"), source)
        for root, dirs, _files in os.walk(parent):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        env = dict(os.environ)
        env.pop("TL_COURSE_GRADEBOOK", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        proc = subprocess.run([sys.executable, "-m", "tl_course.classroom", "grade", "--course", str(course),
                               "--quiet", "--no-warm", "--workers", "2", "--cell-timeout", "60"],
                              cwd=parent, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        scores = {}
        for folder in (course / "autograded").glob("*/tiny"):
            nb = nbformat.read(folder / "tiny.ipynb", as_version=4)
            scores[folder.parent.name] = {c.metadata["nbgrader"]["grade_id"]: [o for o in c.outputs
                                                                               if o.get("output_type") == "error"]
                                          for c in nb.cells if c.cell_type == "code" and is_test(c)}
        yield scores
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
def test_tiny_reference_and_alternatives_pass_blank_fails(tiny_class):
    for student in ["reference", *[f"alt-{k}" for k in ALTERNATIVES]]:
        assert all(not errors for errors in tiny_class[student].values()), (student, tiny_class[student])
    assert all(tiny_class["blank"].values()), tiny_class["blank"]


@pytest.mark.slow
@pytest.mark.parametrize("trick", CASES)
def test_tiny_wrong_answer_behind_a_trick_scores_zero(tiny_class, trick):
    cells = tiny_class[trick.replace("_", "-")]
    assert set(cells) == set(TESTS)
    passed = [gid for gid, errors in cells.items() if not errors]
    assert passed == [], f"{trick}: {passed} passed with a wrong answer"


def test_truth_of_a_container_of_objects_and_membership_in_a_dict():
    objects = [{"model": object()}]
    assert _verdict_of(lambda: objects) == []
    assert _verdict_of(lambda: []) != []
    lines = {"a": object()}
    assert verdict.truth(verdict.encode(("cmp", ("in",), (lambda: "a", lambda: lines))))
    assert not verdict.truth(verdict.encode(("cmp", ("not in",), (lambda: "a", lambda: lines))))


def _verdict_of(thunk) -> list[str]:
    data = verdict.encode(("value", thunk))
    record = {"nonce": "N", "site": 1, "ok": True, "expr": data}
    return verdict.judge([verdict.record_output(record), verdict.record_output({"nonce": "N", "done": True})],
                         "N", [1])


def test_records_of_an_earlier_test_cells_helper_are_judged():
    true_record = {"nonce": "OLD", "site": 3, "ok": True, "expr": {"cmp": ["=="], "pairs": [[1, 1]]}}
    end = verdict.record_output({"nonce": "N", "done": True})
    assert verdict.judge([verdict.record_output(true_record), end], "N", [], earlier={"OLD"}) == []
    false_record = dict(true_record, expr={"cmp": ["=="], "pairs": [[1, 2]]})
    assert verdict.judge([verdict.record_output(false_record), end], "N", [], earlier={"OLD"})
    # an earlier cell's end does not end this one
    assert verdict.judge([verdict.record_output({"nonce": "OLD", "done": True})], "N", [], earlier={"OLD"})


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_every_trick_is_listed_for_review(trick):
    from tl_course.classroom.review import machinery_cells

    nb = {"cells": [{"cell_type": "code", "source": TRICKS[trick],
                     "metadata": {"nbgrader": {"grade_id": "double", "solution": True}}}]}
    assert machinery_cells(nb), f"{trick} is not listed for review"
