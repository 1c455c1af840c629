"""Book pages read well in the book's column: visible code lines are short, plumbing is hidden.

Fast (no execution): each `book/*.md` page is read with myst-nb's own reader, the one Jupyter Book uses.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from myst_nb.core.read import read_myst_markdown_notebook

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "book").glob("*.md"))
MAX_LINE = 88
HIDDEN = {"remove-cell", "remove-input"}


def visible_code_cells(text: str) -> list[tuple[int, list[str]]]:
    """(cell number, source lines) of the code cells whose source the built page shows.

    >>> page = "---\\njupytext: {text_representation: {format_name: myst}}\\n---\\n```{code-cell}\\nx = 1\\n```\\n"
    >>> visible_code_cells(page)
    [(0, ['x = 1'])]
    """
    nb = read_myst_markdown_notebook(text)
    cells = []
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if HIDDEN & set(cell.metadata.get("tags", [])):
            continue
        cells.append((number, cell.source.splitlines()))
    return cells


def long_lines(text: str, limit: int = MAX_LINE) -> list[str]:
    """The visible code lines of a page longer than `limit` characters, as "cell N: <line>"."""
    return [f"cell {number}: {line}" for number, lines in visible_code_cells(text)
            for line in lines if len(line) > limit]


def test_the_pages_are_found():
    assert len(PAGES) >= 10, [p.name for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_visible_code_lines_fit_the_column(page):
    too_long = long_lines(page.read_text())
    assert not too_long, (f"{page.name}: {len(too_long)} visible code line(s) longer than {MAX_LINE} "
                          "characters (wrap them, or hide plumbing with `:tags: [remove-cell]`):\n"
                          + "\n".join(too_long))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_glue_plumbing_is_hidden(page):
    """`glue(...)` only feeds numbers to the prose: it belongs in a `remove-cell` cell."""
    shown = [f"cell {number}: {line.strip()}" for number, lines in visible_code_cells(page.read_text())
             for line in lines if line.lstrip().startswith("glue(")]
    assert not shown, f"{page.name}: glue(...) in a visible cell:\n" + "\n".join(shown)


def test_the_check_sees_long_lines_and_skips_hidden_cells():
    long = "y = " + "1 + " * 30 + "1"
    page = ("---\njupytext: {text_representation: {format_name: myst}}\n---\n"
            f"```{{code-cell}} ipython3\n{long}\n```\n\n"
            f"```{{code-cell}} ipython3\n:tags: [remove-cell]\n{long}\n```\n")
    assert long_lines(page) == [f"cell 0: {long}"]


def inline_backend_first(text: str) -> bool:
    """Whether the page's first code cell selects the inline backend (``%matplotlib inline``).

    Without it a kernel started with ``MPLBACKEND=Agg`` (as CI and the Makefile do) shows a returned figure as
    its text form, ``<Figure size 1000x400 with 2 Axes>``, instead of the picture.

    >>> inline_backend_first("---\\njupytext: {text_representation: {format_name: myst}}\\n---\\n"
    ...                      "```{code-cell}\\n%matplotlib inline\\nx = 1\\n```\\n")
    True
    """
    nb = read_myst_markdown_notebook(text)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    return bool(code) and "%matplotlib inline" in code[0].source.splitlines()


@pytest.mark.parametrize("page", [p for p in PAGES if "{code-cell}" in p.read_text()],
                         ids=lambda p: p.stem)
def test_every_executed_page_draws_inline(page):
    assert inline_backend_first(page.read_text()), (
        f"{page.name}: its first code cell must say `%matplotlib inline`, or a figure renders as "
        "'<Figure size ...>' text when the kernel runs with MPLBACKEND=Agg")
