"""The browser check of built pages (tests/browser.py) sees what it must: a page wider than a phone, an image
that did not render, a figure left as text; and passes a page that has none of them."""
from __future__ import annotations

import os

import pytest

from browser import check_pages, chromium

REQUIRED = os.environ.get("TL_COURSE_REQUIRE_BROWSER") == "1"  # .ci/run installs Chromium and sets it
pytestmark = pytest.mark.skipif(chromium() is None and not REQUIRED,
                                reason="no Chromium here (Debian package chromium; .ci/run installs it)")

PAGE = "<!doctype html><html><head><meta name='viewport' content='width=device-width'></head><body>{}</body></html>"


def write(folder, name, body):
    (folder / f"{name}.html").write_text(PAGE.format(f"<article>{body}</article>"))


def test_a_wide_page_a_broken_image_and_a_text_figure_are_reported(tmp_path):
    write(tmp_path, "wide", "<div style='width: 900px'>a table too wide for a phone</div>")
    write(tmp_path, "broken", "<img src='missing.png' alt='lost'>")
    write(tmp_path, "figure", "<pre>&lt;Figure size 1000x400 with 2 Axes&gt;</pre>")
    problems = check_pages(tmp_path, ["wide", "broken", "figure"], shots=tmp_path / "shots", widths=(1400, 400))
    assert any(p.startswith("wide at 400 px: the page is") for p in problems), problems
    assert not any(p.startswith("wide at 1400 px") for p in problems), problems
    assert any(p.startswith("broken at 1400 px: 1 image(s) did not render") for p in problems), problems
    assert any(p.startswith("figure at 400 px: a figure is shown as text") for p in problems), problems
    assert len(list((tmp_path / "shots").glob("*.png"))) == 6


def test_a_page_that_fits_passes(tmp_path):
    write(tmp_path, "fine", "<p>Short text.</p><div style='overflow-x: auto'><div style='width: 900px'>wide, "
                            "but scrolling in its own box</div></div>")
    assert check_pages(tmp_path, ["fine"]) == []
