"""Make what a student wrote safe to show and bounded in size: text, notebook outputs, feedback HTML, zips.

A student controls every character of their notebook, its outputs and (in an LMS download) its file
name. What the grader writes from them (feedback HTML, ``summary.md``, lines on the instructor's
terminal) must not run the student's script, move the instructor's terminal cursor, or take gigabytes:

- :func:`escape_control`: control characters (ANSI escapes, BEL, NUL, ...) and bidirectional overrides
  become visible escapes (``\\x1b``); :func:`one_line` also escapes line breaks (a list item, a name);
- :func:`trim_text` / :func:`neutralise_outputs`: one huge line or one huge output is cut, with a note
  saying how much;
- :func:`harden_feedback_html`: a Content-Security-Policy that lets no script run (inline, ``onerror=``,
  ``javascript:`` links alike) and loads nothing from elsewhere, and control characters made visible;
- :func:`hide_test_source`: a graded test cell shows its name and its failure message, never the hidden
  tests' source (nor the traceback that quotes it);
- :func:`safe_student_id`, :func:`extract_zip`: an LMS download cannot write outside its folder, and
  cannot expand beyond a size cap (a zip bomb is skipped, the rest imported).

Torch-free and nbgrader-free: the sandbox and the grader both import it.
"""
from __future__ import annotations

import re
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath

#: one line of output longer than this is cut in the middle (characters)
MAX_LINE = 10_000
#: one output's text longer than this is cut (characters)
MAX_OUTPUT = 1_000_000
#: a rich output (an image, base64) larger than this is replaced by a note (characters)
MAX_DATA = 5_000_000

#: Control characters, DEL and C1 controls, bidirectional overrides (Trojan Source), lone surrogates
#: (the undecodable bytes of a file name): everything that changes how the text around it is displayed.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_CONTROL_OR_NEWLINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
#: an ANSI colour sequence (SGR): kept in outputs, the feedback turns it into colours
_SGR = re.compile("\x1b\\[[0-9;]*m")


def _escape(match: re.Match) -> str:
    ch = match.group(0)
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_control(text: str) -> str:
    """``text`` with every control character made visible (line breaks and tabs kept).

    >>> escape_control("ok\\x1b[2J\\x07 done\\nnext")
    'ok\\\\x1b[2J\\\\x07 done\\nnext'
    """
    return _CONTROL.sub(_escape, text)


def one_line(text: str) -> str:
    """``text`` on one line, every control character and line break made visible (names, list items).

    >>> one_line("bob\\n- alice: 10/10")
    'bob\\\\n- alice: 10/10'
    """
    return _CONTROL_OR_NEWLINE.sub(_escape, text)


def _clean_output_text(text: str) -> str:
    """Control characters escaped except ANSI colours (IPython's tracebacks use them) and ``\\r``."""
    parts = _SGR.split(text)
    colours = _SGR.findall(text)
    out = [_CONTROL.sub(lambda m: m.group(0) if m.group(0) == "\r" else _escape(m), p) for p in parts]
    return "".join(a + b for a, b in zip(out, colours + [""]))


def trim_text(text: str, max_line: int = MAX_LINE, max_chars: int = MAX_OUTPUT) -> str:
    """``text`` with each line longer than ``max_line`` cut in the middle and the whole cut after
    ``max_chars``, each cut replaced by a note saying how many characters it removed.

    >>> trim_text("a" * 30 + "\\nshort", max_line=10)
    'aaaaa … [20 characters trimmed] … aaaaa\\nshort'
    >>> trim_text("x\\n" * 10, max_chars=6)
    'x\\nx\\nx\\n … [14 more characters trimmed]'
    """
    if len(text) <= max_line and len(text) <= max_chars:
        return text
    note = ""
    if len(text) > max_chars:
        note = f" … [{len(text) - max_chars} more characters trimmed]"
        text = text[:max_chars]
    lines = text.split("\n")
    half = max(1, max_line // 2)
    lines = [line if len(line) <= max_line else
             f"{line[:half]} … [{len(line) - 2 * half} characters trimmed] … {line[-half:]}" for line in lines]
    return "\n".join(lines) + note


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _size(output: dict) -> int:
    return sum(len(_text(v)) for k, v in output.items() if k in ("text", "evalue", "traceback")) + \
        sum(len(_text(v)) for v in output.get("data", {}).values())


def neutralise_outputs(outputs: list, max_line: int = MAX_LINE, max_chars: int = MAX_OUTPUT,
                       max_data: int = MAX_DATA, max_cell: int = 2 * MAX_OUTPUT) -> list:
    """A code cell's outputs (nbformat dicts, changed in place and returned) bounded and made safe to show:
    text trimmed (:func:`trim_text`) with control characters escaped (ANSI colours kept), a rich output
    larger than ``max_data`` replaced by a note, scripts (``application/javascript``) dropped, and the
    outputs after ``max_cell`` characters in all replaced by one note (an error output is always kept).

    >>> out = neutralise_outputs([{"output_type": "stream", "name": "stdout", "text": "\\x07" + "x" * 20}],
    ...                          max_line=8)
    >>> out[0]["text"]
    '\\\\x07xxx … [13 characters trimmed] … xxxx'
    """
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            output["text"] = _clean_output_text(trim_text(_text(output.get("text", "")), max_line, max_chars))
        elif kind == "error":
            output["ename"] = one_line(trim_text(str(output.get("ename", "")), max_line, max_line))
            output["evalue"] = _clean_output_text(trim_text(str(output.get("evalue", "")), max_line, max_chars))
            lines, total = [], 0
            for line in output.get("traceback", []):
                line = _clean_output_text(trim_text(str(line), max_line, max_chars))
                total += len(line)
                if total > max_chars:
                    lines.append(f"… [{len(output['traceback']) - len(lines)} more traceback lines trimmed]")
                    break
                lines.append(line)
            output["traceback"] = lines
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            for mime in list(data):
                value = _text(data[mime])
                if mime == "application/javascript":
                    del data[mime]
                elif mime.startswith("text/") and mime != "text/html":
                    data[mime] = _clean_output_text(trim_text(value, max_line, max_chars))
                elif len(value) > max_data:
                    del data[mime]
                    data.setdefault("text/plain", f"[a {mime} output of {len(value)} characters was removed: "
                                                  f"larger than {max_data}]")
            if not data:
                data["text/plain"] = "[a script output was removed]"
    # nbgrader scores a cell 0 for an error or any stderr: what is dropped keeps that verdict
    kept, total, dropped, stderr = [], 0, 0, False
    for output in outputs:
        total += _size(output)
        if total > max_cell and output.get("output_type") != "error":
            dropped += 1
            stderr = stderr or (output.get("output_type") == "stream" and output.get("name") == "stderr")
            continue
        kept.append(output)
    if dropped:
        kept.append({"output_type": "stream", "name": "stderr" if stderr else "stdout",
                     "text": f"\n… [{dropped} more outputs trimmed: over {max_cell} characters in this cell]\n"})
    outputs[:] = kept
    return outputs


#: no script of any kind, nothing fetched from elsewhere (images must be inline), no forms, no frames
CSP = ("default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
       "object-src 'none'; frame-src 'none'; form-action 'none'; base-uri 'none'")


def harden_feedback_html(html: str) -> str:
    """A feedback page that runs no script whatever the student wrote into it (a Content-Security-Policy as
    the first thing in ``<head>``, so it covers every element after it) and shows control characters as
    visible symbols (U+2400 + code).

    >>> page = harden_feedback_html("<html><head><title>x</title></head><body>\\x1b[2J<img onerror=alert(1)></body></html>")
    >>> page.startswith('<html><head><meta http-equiv="Content-Security-Policy"')
    True
    >>> "\\x1b" in page, "\\u241b[2J" in page
    (False, True)
    """
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    head = re.search(r"<head(\s[^>]*)?>", html, flags=re.IGNORECASE)
    html = (html[:head.end()] + meta + html[head.end():]) if head else meta + html
    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", lambda m: chr(0x2400 + (ord(m.group(0)) & 0x1f)
                                                                   if m.group(0) != "\x7f" else "\u2421"), html)


_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.M | re.S)


def hide_test_source(cell: dict) -> dict:
    """A graded test cell as its feedback shows it: the hidden tests' lines replaced by one comment, and
    each error reduced to its name and message (a traceback quotes the failing line of the test).

    >>> cell = {"cell_type": "code", "source": "assert f(1) == 1\\n### BEGIN HIDDEN TESTS\\nassert f(2) == 4\\n"
    ...         "### END HIDDEN TESTS\\n", "outputs": [{"output_type": "error", "ename": "AssertionError",
    ...         "evalue": "f(2) is wrong", "traceback": ["assert f(2) == 4"]}]}
    >>> hide_test_source(cell)["source"]
    'assert f(1) == 1\\n# (hidden tests, not shown)\\n'
    >>> cell["outputs"][0]["traceback"]
    ['AssertionError: f(2) is wrong']
    """
    cell["source"] = _HIDDEN.sub("# (hidden tests, not shown)\n", _text(cell.get("source", "")))
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
    return cell


# ---------------------------------------------------------------------------------------------
# LMS downloads
# ---------------------------------------------------------------------------------------------
def safe_student_id(student_id: str) -> bool:
    """Whether ``student_id`` can name a folder of ``submitted/``: not empty, no path separator, not
    ``.``/``..`` nor hidden, no control characters.

    >>> [safe_student_id(s) for s in ("alice", "s1234567", "a.smith@uni.edu", "..", ".", ".hidden", "a/b", "a\\x1b")]
    [True, True, True, False, False, False, False, False]
    """
    return bool(student_id) and not student_id.startswith(".") and "/" not in student_id \
        and "\\" not in student_id and not _CONTROL_OR_NEWLINE.search(student_id) \
        and unicodedata.normalize("NFKC", student_id) == student_id


#: the most one LMS zip may expand to, and one file in it (bytes)
MAX_ZIP_TOTAL = 2 * 2**30
MAX_ZIP_ENTRY = 100 * 2**20
_ARCHIVES = (".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z", ".rar")


def extract_zip(archive: Path, dest: Path, max_total: int = MAX_ZIP_TOTAL,
                max_entry: int = MAX_ZIP_ENTRY) -> list[str]:
    """Extract ``archive`` into ``dest`` as plain files, counting the bytes as they decompress (the sizes
    a zip declares can lie): a file larger than ``max_entry``, the files after ``max_total`` bytes, archives
    inside the archive, links and unreadable entries are skipped. Paths stay inside ``dest`` (``..``
    and leading ``/`` dropped). Returns one sentence per skipped entry (names escaped).

    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(tmp / "lms.zip", "w", zipfile.ZIP_DEFLATED) as zf:
    ...     zf.writestr("../alice_ch02.ipynb", "{}")
    ...     zf.writestr("bob_ch02.ipynb", "0" * 2**21)
    >>> extract_zip(tmp / "lms.zip", tmp / "out", max_entry=2**20)
    ['bob_ch02.ipynb: larger than 1048576 bytes once extracted (a zip bomb?); not imported']
    >>> sorted(p.name for p in (tmp / "out").iterdir())
    ['alice_ch02.ipynb']
    """
    skipped: list[str] = []
    total = 0
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{archive} cannot be read as a zip ({err})") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = one_line(info.filename)
            parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
            if not parts:
                skipped.append(f"{name}: no usable file name; not imported")
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                skipped.append(f"{name}: a symbolic link; not imported")
                continue
            if parts[-1].lower().endswith(_ARCHIVES):
                skipped.append(f"{name}: an archive inside the archive; not imported (extract it yourself)")
                continue
            target = dest.joinpath(*parts)
            budget = min(max_entry, max_total - total)
            written = 0
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > budget:
                            break
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as err:
                target.unlink(missing_ok=True)
                skipped.append(f"{name}: unreadable ({one_line(str(err))[:200]}); not imported")
                continue
            if written > budget:
                target.unlink(missing_ok=True)
                why = (f"larger than {max_entry} bytes once extracted (a zip bomb?)" if budget == max_entry
                       else f"the zip expands to more than {max_total} bytes in all")
                skipped.append(f"{name}: {why}; not imported")
                continue
            total += written
    return skipped
