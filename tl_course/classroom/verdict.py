r"""A graded test cell's verdict, decided outside the student's kernel on plain data the cell sends out.

nbgrader scores a test cell by the *absence of an error*, and the student's code shares the kernel with
the hidden tests, so a notebook could make a wrong answer pass by changing what decides it in the kernel:
a value that compares equal to everything, a swallowed exception, a patched builtin. Here the grader
(the sandbox's trusted child, :mod:`tl_course.classroom.sandbox`) decides instead:

1. Before a test cell runs, :func:`instrument` rewrites it: every ``assert`` (and every
   ``grading.check(condition, ...)``) reports its condition as **plain data** (:func:`plain`: exact ``int``,
   ``float``, ``str``, lists, dicts, arrays... converted through the builtin types' own methods, so no
   student object crosses and no student ``__eq__`` runs), and a last line reports that the cell ran to
   its end. Each report carries a nonce made by the grader for this cell only.
2. In the kernel, :func:`check` evaluates the condition *on that plain data* (raising the usual
   ``AssertionError`` when it is false) and publishes the record as a display output of MIME type
   :data:`MIME`; :func:`done` publishes the end.
3. After the cell, the grader re-evaluates every record itself (:func:`judge`): the cell passes only if
   nbgrader saw no error, every record is true *when the grader evaluates it*, every assert the cell
   always runs reported, and the end came. A cell that sends nothing scores 0. The records are then
   removed from the outputs.

What must stay in the kernel (calling the student's code, tracing its calls) is corroborated by the
integrity probe of :mod:`tl_course.classroom.sandbox` (the course package and the interpreter's machinery
against a snapshot taken before the first cell). What is not defended is written in book/instructors.md.

>>> nonce = "n0"
>>> source, sites = instrument("x = 2\nassert x + 1 == 3, 'three'", nonce)
>>> sites
[1]
>>> print(source)   # doctest: +NORMALIZE_WHITESPACE
x = 2
__import__('tl_course.classroom.verdict', fromlist=['check']).check('n0', 1, ('cmp', ('==',), (lambda: x + 1, lambda: 3)), lambda: 'three')
__import__('tl_course.classroom.verdict', fromlist=['check']).done('n0')
>>> outputs = [record_output({"nonce": "n0", "site": 1, "ok": True,
...                           "expr": encode(("cmp", ("==",), (lambda: 3, lambda: 3)))}),
...            record_output({"nonce": "n0", "done": True})]
>>> judge(outputs, "n0", sites)
[]
>>> judge(outputs[:1], "n0", sites)
['the test cell did not run to its end']
"""
from __future__ import annotations

import ast
import math
import operator
import sys
from collections.abc import Callable, Mapping

__all__ = ["MIME", "instrument", "check", "check_call", "done", "plain", "NotPlain", "encode", "truth",
           "judge", "record_output", "is_record"]

#: the MIME type of the records a test cell publishes
MIME = "application/vnd.tl-course.verdict+json"
#: how this module is reached from an instrumented cell (through the import system, which the integrity
#: probe watches, never through a global the student's code could rebind)
_ME = "__import__('tl_course.classroom.verdict', fromlist=['check'])"
#: at most this many elements in one value sent out (a bigger one is a failure, not a silent pass)
MAX_ELEMENTS = 2_000_000
#: passing records kept per assert site (the rest are counted): a loop of thousands of checks stays cheap
KEEP_PER_SITE = 20


# ---------------------------------------------------------------------------------------------
# The grader's side: rewrite a test cell
# ---------------------------------------------------------------------------------------------
class _Rewrite(ast.NodeTransformer):
    """Every assert (and grading.check call) becomes a report of plain data; sites are numbered from 1."""

    def __init__(self, nonce: str, check_names: set[str], grading_names: set[str]):
        self.nonce, self.check_names, self.grading_names = nonce, check_names, grading_names
        self.sites: list[int] = []      # sites the cell always runs (at its top level)
        self.count = 0
        self.depth = 0                  # inside a conditional, a loop, a try or a function body

    # statements whose bodies may not run (or run any number of times)
    def _nested(self, node):
        self.depth += 1
        try:
            return self.generic_visit(node)
        finally:
            self.depth -= 1

    visit_If = visit_For = visit_AsyncFor = visit_While = visit_Try = visit_With = visit_AsyncWith = _nested
    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_Match = _nested
    if sys.version_info >= (3, 11):
        visit_TryStar = _nested

    def visit_ClassDef(self, node):  # a lambda in a class body cannot see the class's names: left alone
        return node

    def _site(self) -> int:
        self.count += 1
        if self.depth == 0:
            self.sites.append(self.count)
        return self.count

    def visit_Assert(self, node: ast.Assert):
        site = self._site()
        message = node.msg if node.msg is not None else ast.Constant(None)
        call = ast.parse(f"{_ME}.check({self.nonce!r}, {site}, SPEC, lambda: MSG)", mode="eval").body
        call.args[2] = _spec(node.test)
        call.args[3].body = message
        return ast.copy_location(ast.Expr(call), node)

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        func = node.func
        is_check = ((isinstance(func, ast.Attribute) and func.attr == "check" and isinstance(func.value, ast.Name)
                     and func.value.id in self.grading_names)
                    or (isinstance(func, ast.Name) and func.id in self.check_names))
        if not is_check or not node.args or isinstance(node.args[0], ast.Starred) or \
                any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return node
        site = self._site()
        call = ast.parse(f"{_ME}.check_call({self.nonce!r}, {site}, SPEC, lambda: FN, lambda: (ARGS, KW))",
                         mode="eval").body
        call.args[2] = _spec(node.args[0])
        call.args[3].body = func
        call.args[4].body.elts[0] = ast.Tuple(elts=list(node.args[1:]), ctx=ast.Load())
        call.args[4].body.elts[1] = ast.Dict(keys=[ast.Constant(k.arg) for k in node.keywords],
                                             values=[k.value for k in node.keywords])
        return ast.copy_location(call, node)


def _thunk(node: ast.expr) -> ast.Lambda:
    return ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
                      body=node)


def _spec(node: ast.expr) -> ast.expr:
    """The condition as a tree of lazily evaluated parts: ("cmp", ops, operands), ("and"/"or", parts),
    ("not", part) or ("value", thunk)."""
    def tup(*elts):
        return ast.Tuple(elts=list(elts), ctx=ast.Load())

    if isinstance(node, ast.Compare):
        ops = tup(*[ast.Constant(_OP_NAMES[type(op)]) for op in node.ops])
        return tup(ast.Constant("cmp"), ops, tup(*[_thunk(x) for x in [node.left, *node.comparators]]))
    if isinstance(node, ast.BoolOp):
        return tup(ast.Constant("and" if isinstance(node.op, ast.And) else "or"), tup(*[_spec(v) for v in node.values]))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return tup(ast.Constant("not"), _spec(node.operand))
    return tup(ast.Constant("value"), _thunk(node))


_OP_NAMES = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
             ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}


def _grading_aliases(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names the cell binds to ``tl_course.grading`` (plus the course's usual ``grading`` / ``_grading``) and
    to its ``check`` function."""
    module, check_fn = {"grading", "_grading"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "tl_course":
            module |= {a.asname or a.name for a in node.names if a.name == "grading"}
        elif isinstance(node, ast.ImportFrom) and node.module == "tl_course.grading":
            check_fn |= {a.asname or a.name for a in node.names if a.name == "check"}
        elif isinstance(node, ast.Import):
            module |= {a.asname for a in node.names if a.name == "tl_course.grading" and a.asname}
    return module, check_fn


def instrument(source: str, nonce: str) -> tuple[str, list[int]]:
    r"""The test cell ``source`` rewritten to report its checks (see the module's docstring), and the sites
    it always runs. A cell that does not parse is returned as it is (it fails on its own).

    >>> src, sites = instrument("for v in (1, 2):\n    assert v > 0\nif False:\n    assert 0", "n")
    >>> sites, src.count(".check("), src.splitlines()[-1].endswith(".done('n')")
    ([], 2, True)
    >>> instrument("from tl_course import grading as g\ng.check(1 < 2, 'what')", "n")[0].count("check_call")
    1
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source, []
    if not tree.body:
        return source, []
    module, check_fn = _grading_aliases(tree)
    rewrite = _Rewrite(nonce, check_fn, module)
    tree = ast.fix_missing_locations(rewrite.visit(tree))
    return ast.unparse(tree) + f"\n{_ME}.done({nonce!r})", rewrite.sites


# ---------------------------------------------------------------------------------------------
# Plain data: what a record may carry
# ---------------------------------------------------------------------------------------------
class NotPlain(TypeError):
    """A value that is not plain data (numbers, strings, containers of them, arrays, paths, types)."""


def plain(value, _budget: list | None = None):
    """``value`` as JSON-able plain data, through the builtin types' own methods: a subclass of ``int``,
    ``str``, ``tuple``... gives its underlying value (its own ``__eq__`` never runs), NumPy arrays and
    scalars and torch tensors (of torch's own classes) give their numbers. Anything else raises
    :class:`NotPlain`.

    >>> class Any(int):
    ...     def __eq__(self, other):
    ...         return True
    >>> plain(Any(0)), plain((1, "a", [2.5])), plain({"k": float("nan")})
    (0, {'t': [1, 'a', {'l': [2.5]}]}, {'d': [['k', {'f': 'nan'}]]})
    >>> plain(print)
    Traceback (most recent call last):
    tl_course.classroom.verdict.NotPlain: a builtin_function_or_method is not plain data
    """
    budget = _budget if _budget is not None else [MAX_ELEMENTS]
    budget[0] -= 1
    if budget[0] < 0:
        raise NotPlain(f"a value of more than {MAX_ELEMENTS} elements is too large to send out")
    t = type(value)
    if value is None or t is bool or t is str or t is int:
        return value
    if t is float:
        return value if math.isfinite(value) else {"f": repr(value)}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        return _plain_numpy(numpy, value, budget)
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(value, torch.Tensor):
            return _plain_tensor(torch, value, budget)
        if t in (torch.dtype, torch.device):
            return {"tok": f"torch.{value}" if t is torch.dtype and not str(value).startswith("torch.")
                    else str(value)}
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return plain(float.__float__(value), budget)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, tuple):
        return {"t": [plain(v, budget) for v in tuple.__iter__(value)]}
    if isinstance(value, list):
        return {"l": [plain(v, budget) for v in list.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[plain(k, budget), plain(v, budget)] for k, v in list(dict.items(value))]}
    if isinstance(value, frozenset):
        return {"fs": [plain(v, budget) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [plain(v, budget) for v in set.__iter__(value)]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [plain(complex.__getattribute__(value, "real")), plain(complex.__getattribute__(value, "imag"))]}
    if t is range:
        return {"range": [value.start, value.stop, value.step]}
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(value, pathlib.PurePath):
        windows = isinstance(value, pathlib.PureWindowsPath)
        return {"path": pathlib.PurePath.__str__(value), "windows": windows}
    if isinstance(value, type):
        return {"cls": f"{type.__getattribute__(value, '__module__')}.{type.__getattribute__(value, '__qualname__')}",
                "id": id(value)}
    raise NotPlain(f"a {t.__name__} is not plain data")


def _plain_numpy(np, value, budget):
    if isinstance(value, np.ndarray):
        size = int(np.ndarray.size.__get__(value))
        budget[0] -= size
        if budget[0] < 0:
            raise NotPlain(f"an array of {size} elements is too large to send out")
        dtype = np.ndarray.dtype.__get__(value)
        data = np.ndarray.tolist(value)
        if dtype.kind == "O":
            data = plain(data, budget)
        return {"nd": data, "dtype": str(dtype) if dtype.kind != "O" else "object",
                "shape": list(np.ndarray.shape.__get__(value))}
    dtype = np.generic.dtype.__get__(value) if hasattr(np.generic, "dtype") else value.dtype
    if dtype.kind in "biufc":
        item = np.generic.item(value)
        return {"np": plain(item, budget), "dtype": str(dtype)}
    raise NotPlain(f"a NumPy {dtype} value is not plain data")


_TORCH_TO_NUMPY = {"bfloat16": "float32", "float16": "float16", "float32": "float32", "float64": "float64",
                   "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
                   "bool": "bool", "complex64": "complex64", "complex128": "complex128"}


def _plain_tensor(torch, value, budget):
    with torch._C.DisableTorchFunctionSubclass():   # a tensor subclass's __torch_function__ does not run
        size = int(torch.Tensor.numel(value))
        budget[0] -= size
        if budget[0] < 0:
            raise NotPlain(f"a tensor of {size} elements is too large to send out")
        dtype = str(torch.Tensor.dtype.__get__(value)).replace("torch.", "")
        if dtype not in _TORCH_TO_NUMPY:
            raise NotPlain(f"a tensor of dtype {dtype} is not plain data")
        base = torch.Tensor.cpu(torch.Tensor.detach(value))
        data = torch.Tensor.tolist(base.float() if dtype == "bfloat16" else base)
        shape = list(torch.Tensor.size(value))
    return {"nd": data, "dtype": _TORCH_TO_NUMPY[dtype], "shape": shape, "tensor": True}


class _Token:
    """A decoded value compared by identity key only (a class, a torch dtype or device)."""

    __slots__ = ("key", "text")

    def __init__(self, key, text: str):
        self.key, self.text = key, text

    def __eq__(self, other):
        return isinstance(other, _Token) and other.key == self.key

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return self.text


def decode(data):
    """Plain data back into Python values, in the grader (NumPy arrays for arrays and tensors)."""
    if not isinstance(data, dict):
        return data
    if "t" in data:
        return tuple(decode(v) for v in data["t"])
    if "l" in data:
        return [decode(v) for v in data["l"]]
    if "d" in data:
        return {decode(k): decode(v) for k, v in data["d"]}
    if "s" in data:
        return {decode(v) for v in data["s"]}
    if "fs" in data:
        return frozenset(decode(v) for v in data["fs"])
    if "f" in data:
        return float(data["f"])
    if "nd" in data:
        import numpy as np

        values = decode(data["nd"]) if data["dtype"] == "object" else data["nd"]
        array = np.array(values, dtype=data["dtype"])
        return array.reshape(data["shape"])
    if "np" in data:
        import numpy as np

        return np.dtype(data["dtype"]).type(decode(data["np"]))
    if "tok" in data:
        return _Token(("tok", data["tok"]), data["tok"])
    if "cls" in data:
        return _Token(("cls", data["id"]), f"<class '{data['cls']}'>")
    if "path" in data:
        import pathlib

        return (pathlib.PureWindowsPath if data.get("windows") else pathlib.PurePosixPath)(data["path"])
    if "bytes" in data:
        return bytes.fromhex(data["bytes"])
    if "complex" in data:
        return complex(*(decode(v) for v in data["complex"]))
    if "range" in data:
        return range(*data["range"])
    if "len" in data:
        return range(int(data["len"]))   # a container of that length (only its truth is ever asked)
    raise NotPlain(f"unknown plain data {sorted(data)}")


# ---------------------------------------------------------------------------------------------
# Conditions: evaluated in the kernel into plain data, judged on that data (in the kernel and the grader)
# ---------------------------------------------------------------------------------------------
_COMPARE: dict[str, Callable] = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                                 ">": operator.gt, ">=": operator.ge, "in": lambda a, b: a in b,
                                 "not in": lambda a, b: a not in b}


def _identity(value):
    if value is None or value is True or value is False or value is Ellipsis:
        return {"single": repr(value)}
    return {"id": id(value)}


def _as_bool(result) -> bool:
    """A comparison's result as a bool, as ``if`` would take it (an array of several elements raises)."""
    if type(result) is bool:
        return result
    return bool(result)


def _compare(op: str, a, b) -> bool:
    if op in ("is", "is not"):
        same = a == b  # both are identity records
        return same if op == "is" else not same
    return _as_bool(_COMPARE[op](decode(a), decode(b)))


def encode(spec) -> dict:
    """Evaluate a condition's parts (see :func:`instrument`) in the kernel, into plain data.

    >>> encode(("cmp", ("<", "<"), (lambda: 1, lambda: 2, lambda: 3)))
    {'cmp': ['<', '<'], 'pairs': [[1, 2], [2, 3]]}
    >>> encode(("and", (("value", lambda: False), ("value", lambda: 1 / 0))))   # short-circuits as `and` does
    {'and': [{'value': False}], 'n': 2}
    """
    kind = spec[0]
    if kind == "cmp":
        ops, thunks = spec[1], spec[2]
        pairs = []
        left = thunks[0]()
        for i, op in enumerate(ops):   # a chain stops at its first false link, as Python's does
            right = thunks[i + 1]()
            if op in ("is", "is not"):
                pair = [_identity(left), _identity(right)]
            elif op in ("in", "not in"):
                pair = [plain(left), _plain_keys(right)]
            else:
                pair = [plain(left), plain(right)]
            pairs.append(pair)
            if not _compare(op, *pair):
                break
            left = right
        return {"cmp": list(ops), "pairs": pairs}
    if kind in ("and", "or"):
        parts = []
        for sub in spec[1]:
            parts.append(encode(sub))
            if truth(parts[-1]) != (kind == "and"):
                break
        return {kind: parts, "n": len(spec[1])}
    if kind == "not":
        return {"not": encode(spec[1])}
    return {"value": _plain_truth(spec[1]())}


def _plain_keys(container):
    """The right side of ``in``: a dict (of any values) is sent as its keys only, since ``in`` looks at them."""
    if isinstance(container, dict):
        return {"d": [[plain(k), None] for k in list(dict.keys(container))]}
    return plain(container)


def _plain_truth(value):
    """A value whose truth is tested: plain data, or, for a builtin container of objects, its length (what
    ``bool`` looks at), taken with the builtin type's own ``__len__``."""
    try:
        return plain(value)
    except NotPlain:
        for base in (list, tuple, dict, set, frozenset):
            if isinstance(value, base):
                return {"len": base.__len__(value)}
        raise


def truth(data: Mapping) -> bool:
    """Whether an encoded condition holds, judged on its plain data only.

    >>> truth({"cmp": ["=="], "pairs": [[0, 1]]}), truth({"not": {"value": {"l": []}}})
    (False, True)
    >>> truth({"and": [{"value": True}], "n": 2})            # a part that never arrived is not true
    False
    """
    if "cmp" in data:
        ops, pairs = list(data["cmp"]), list(data["pairs"])
        if len(pairs) != len(ops) or not ops:   # a link that never arrived is not true
            return False
        return all(_compare(op, *pair) for op, pair in zip(ops, pairs))
    if "and" in data:
        parts = list(data["and"])
        return len(parts) == data.get("n") and all(truth(p) for p in parts)
    if "or" in data:
        return any(truth(p) for p in data["or"])
    if "not" in data:
        return not truth(data["not"])
    if "value" in data:
        return _as_bool(decode(data["value"]))
    return False


# ---------------------------------------------------------------------------------------------
# The kernel's side: what an instrumented cell calls
# ---------------------------------------------------------------------------------------------
def _publish(record: dict) -> None:
    from IPython.display import publish_display_data

    publish_display_data({MIME: record}, metadata={})


def _judged(spec) -> tuple[dict | None, bool, str]:
    try:
        data = encode(spec)
        return data, truth(data), ""
    except NotPlain as err:
        return None, False, f"the test could not send its value out ({err})"


def check(nonce: str, site: int, spec, message: Callable[[], object]) -> None:
    """An instrumented ``assert``: evaluate, publish the record, raise ``AssertionError`` when false."""
    data, ok, why = _judged(spec)
    record = {"nonce": nonce, "site": site, "ok": ok, "expr": data}
    if not ok:
        text = message()
        record["message"] = why or ("" if text is None else str.__str__(str(text)))
    _publish(record)
    if not ok:
        if why:
            raise AssertionError(why)
        raise AssertionError(text) if text is not None else AssertionError()


def check_call(nonce: str, site: int, spec, fn: Callable[[], Callable], rest: Callable[[], tuple]):
    """An instrumented ``grading.check(condition, what, where)``: the record, then the call itself with
    the judged condition (so the failure reads as ``grading.fail`` writes it)."""
    data, ok, why = _judged(spec)
    record = {"nonce": nonce, "site": site, "ok": ok, "expr": data}
    if not ok:
        record["message"] = why or "grading.check failed"
    _publish(record)
    if why:
        raise AssertionError(why)
    function = fn()
    args, kwargs = rest()
    return function(ok, *args, **kwargs)


def done(nonce: str) -> None:
    """The last line of an instrumented cell: it ran to its end."""
    _publish({"nonce": nonce, "done": True})


# ---------------------------------------------------------------------------------------------
# The grader's side: the verdict
# ---------------------------------------------------------------------------------------------
def record_output(record: dict) -> dict:
    """A record as the display output it arrives in."""
    return {"output_type": "display_data", "data": {MIME: record}, "metadata": {}}


def is_record(output: Mapping) -> bool:
    """Whether a cell output is a verdict record (it is removed from the notebook once judged)."""
    return output.get("output_type") == "display_data" and MIME in (output.get("data") or {})


def judge(outputs: list, nonce: str, sites: list[int], earlier: frozenset | set = frozenset()) -> list[str]:
    """Why a test cell fails, judged here on the plain data it sent (empty when it passes). ``earlier``: the
    nonces of the test cells run before it (their helper functions report with them).

    >>> ok = {"nonce": "n", "site": 1, "ok": True, "expr": {"cmp": ["=="], "pairs": [[1, 1]]}}
    >>> lie = {"nonce": "n", "site": 1, "ok": True, "expr": {"cmp": ["=="], "pairs": [[1, 2]]}}
    >>> end = {"nonce": "n", "done": True}
    >>> judge([record_output(r) for r in (ok, end)], "n", [1])
    []
    >>> judge([record_output(r) for r in (lie, end)], "n", [1])
    ['a check is false when the grader evaluates it (1 == 2)']
    >>> judge([record_output(end)], "n", [1])
    ['an assert the test always runs did not report (1 of 1)']
    >>> judge([record_output(dict(end, nonce="x")), record_output(end)], "n", [])
    ['the cell sent a check record that this test did not make']
    """
    problems: list[str] = []
    records = [o["data"][MIME] for o in outputs if is_record(o)]
    seen: set[int] = set()
    ended = False
    for record in records:
        mine = isinstance(record, Mapping) and record.get("nonce") == nonce
        if not mine and not (isinstance(record, Mapping) and record.get("nonce") in earlier
                             and record.get("done") is not True):
            problems.append("the cell sent a check record that this test did not make")
            continue
        if record.get("done") is True:
            ended = True
            continue
        if mine:  # (a helper function an earlier test cell defined reports with that cell's nonce)
            seen.add(record.get("site"))
        data = record.get("expr")
        try:
            holds = data is not None and truth(data)
        except Exception as err:  # noqa: BLE001 - a record that cannot be judged is a failed check
            holds, data = False, {"error": f"{type(err).__name__}: {err}"}
        if not holds:
            problems.append(record.get("message") or f"a check is false when the grader evaluates it ({_show(data)})")
    missing = [s for s in sites if s not in seen]
    if missing:
        problems.append(f"an assert the test always runs did not report ({len(missing)} of {len(sites)})")
    if not ended:
        problems.append("the test cell did not run to its end")
    return list(dict.fromkeys(problems))


def _show(data) -> str:
    if isinstance(data, Mapping) and "cmp" in data:
        links = [f"{decode(a)!r} {op} {decode(b)!r}" if op not in ("is", "is not") else f"... {op} ..."
                 for op, (a, b) in zip(data["cmp"], data["pairs"])]
        return " and ".join(links)[:200]
    return str(data)[:200]
