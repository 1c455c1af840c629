"""The book builds offline, strictly (warnings are errors), with every chapter executed."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

from browser import check_pages, chromium

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TL_COURSE_DATA", ROOT.parent / "shared" / "data"))


# A markdown table row left as text: "| a | b |" or its rule "|---|---|" ("| — | — |" once
# smartquotes has turned the dashes into em dashes).
RAW_TABLE_ROW = re.compile(r"^\s*\|.*\|.*\|\s*$", re.MULTILINE)


def raw_tables(html: str) -> list[str]:
    """Lines of cell outputs in a built page that are markdown table rows shown as raw text.

    >>> raw_tables('<div class="cell_output"><p>| a | b |</p></div>')
    ['| a | b |']
    >>> raw_tables('<div class="cell_output"><table><tr><td>a</td></tr></table></div>')
    []
    """
    soup = BeautifulSoup(html, "html.parser")
    rows = []
    for output in soup.select("div.cell_output"):
        rows += [m.group(0).strip() for m in RAW_TABLE_ROW.finditer(output.get_text("\n"))]
    return rows


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


@pytest.mark.skipif(not (DATA / "oxford-iiit-pet" / "images").is_dir(),
                    reason=f"no offline photos in {DATA}: set TL_COURSE_DATA to build the book")
def test_book_builds_strictly_with_executed_chapters(tmp_path):
    env = {**os.environ, "TL_COURSE_DATA": str(DATA), "TL_COURSE_PROFILE": os.environ.get("TL_COURSE_PROFILE", "ci"),
           "MPLBACKEND": "Agg"}
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    result = subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(tmp_path), "-W", "-n",
                             "--keep-going"], env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    print(f"book build: {seconds:.0f} s")
    log = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, f"jupyter-book build failed:\n{log}"
    html = tmp_path / "_build" / "html"
    for page in _toc_files():
        assert (html / f"{page}.html").exists(), f"{page} missing from the built book"
    for page in _toc_files():
        if page.startswith("book/ch"):
            text = (html / f"{page}.html").read_text()
            assert "cell_output" in text, f"{page} has no executed outputs"
            assert "Traceback" not in text, f"{page} shows a traceback"
            assert "&lt;Figure size" not in text and "<Figure size" not in text, \
                f"{page} shows a figure as text ('<Figure size ...>'), not as a picture"
            rows = raw_tables(text)
            assert not rows, f"{page} shows a table as raw text: {rows[:3]}"
    # Every page in a real browser at a desktop and a phone width; the screenshots stay in _build/ (CI artefacts).
    if chromium() is None and os.environ.get("TL_COURSE_REQUIRE_BROWSER") != "1":
        pytest.skip("built, but no Chromium to look at the pages (Debian package chromium; .ci/run installs it)")
    problems = check_pages(html, _toc_files(), shots=ROOT / "_build" / "screenshots")
    assert not problems, "the built pages in a browser:\n" + "\n".join(problems)


TABLE_PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# A printed table

```{code-cell} ipython3
from IPython.display import Markdown
Markdown("| split | Tigger | Misty |\\n| --- | --- | --- |\\n| train | 1 | 2 |")
```
"""


def test_a_table_printed_by_a_code_cell_renders_as_a_table(tmp_path):
    """The book's own _config.yml, on a one-page book: a Markdown table printed by a cell is a <table>."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"] = {"execute_notebooks": "force", "timeout": 120}
    config.pop("repository", None)
    config["html"] = {}
    config["launch_buttons"] = {}
    extensions = config["sphinx"].get("local_extensions") or {}  # the book's own, from the repository
    config["sphinx"]["local_extensions"] = {name: str(ROOT / folder) for name, folder in extensions.items()}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    (tmp_path / "page.md").write_text(TABLE_PAGE)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jupyter_book), "build", str(tmp_path), "-W", "-n"],
                            env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (tmp_path / "_build" / "html" / "page.html").read_text()
    output = BeautifulSoup(html, "html.parser").select("div.cell_output")
    assert output and output[0].find("table") is not None, "the printed table is not an HTML <table>"
    assert output[0].find("th").get_text(strip=True) == "split"
    assert raw_tables(html) == []


def test_raw_tables_finds_a_table_left_as_text():
    """The check in the build test can fail: CommonMark's rendering of a table (em dashes) is caught."""
    html = '<div class="cell_output docutils container"><p>| a | b |\n| — | — |\n| 1 | 2 |</p></div>'
    assert raw_tables(html) == ["| a | b |", "| — | — |", "| 1 | 2 |"]
    assert raw_tables('<div class="cell_input">| a | b |</div>') == []
