"""The teaching guide reads the course itself: every chapter states its objectives, every catalogue parses."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tl_course.book.guide import catalogue_mistakes, chapter_objectives, chapter_title

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = [c["file"] for part in yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]
            for c in part["chapters"] if c["file"].startswith("book/ch")]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_states_what_a_student_will_be_able_to_do(chapter):
    page = (ROOT / f"{chapter}.md").read_text()
    assert chapter_title(page)
    goals = chapter_objectives(page)
    assert 2 <= len(goals) <= 5, f"{chapter}: {goals}"


def test_every_catalogue_lists_its_mistakes_with_a_kind():
    catalogues = sorted((ROOT / "tl_course" / "classroom" / "mistakes").glob("ch*.py"))
    assert len(catalogues) >= 9
    for path in catalogues:
        found = catalogue_mistakes(path.read_text())
        assert len(found) >= 8, path.name
        assert all(m.kind in {"leak", "how", "forbidden", "narrow"} for m in found), path.name


def test_a_catalogue_without_mistakes_is_refused():
    with pytest.raises(ValueError, match="MISTAKES"):
        catalogue_mistakes("KIND = {}\n")


def test_a_page_without_objectives_has_none():
    assert chapter_objectives("# Title\n\nJust prose.\n") == []
