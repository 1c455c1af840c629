"""A fork changes one line (``repository.url`` in ``_config.yml``), releases, and every Colab link follows it:
each notebook's badge, each setup cell's pinned install, and the book's header Colab button."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from tl_course.classroom.release import (ROOT, assignments, colab_url, install_spec, release, release_version,
                                         repository_url, setup_cells, sync_setup_cells)

FORK = "https://github.com/a-teacher/tl-course-fork"
sys.path.insert(0, str(ROOT / "_ext"))
import course_book  # noqa: E402  (the book's Sphinx extension, a plain module)


def _links(text: str) -> set[str]:
    """Every repository-looking URL in a text: GitHub and Colab links, git+ installs."""
    return set(re.findall(r"https://(?:github\.com|colab\.research\.google\.com)/[^\s\"')\]]+", text))


@pytest.fixture
def fork(tmp_path) -> Path:
    """A copy of the course folder whose _config.yml names FORK: the one-line change of a fork."""
    root = tmp_path / "fork"
    root.mkdir()
    for name in ("_config.yml", "pyproject.toml", "nbgrader_config.py"):
        shutil.copy(ROOT / name, root / name)
    for name in ("solutions", "notebooks"):
        shutil.copytree(ROOT / name, root / name)
    config = (root / "_config.yml").read_text()
    upstream = repository_url()
    assert config.count(upstream) == 1, "the repository URL must live on one line of _config.yml"
    (root / "_config.yml").write_text(config.replace(upstream, FORK))
    return root


def test_the_url_lives_in_one_place():
    """Outside _config.yml and the generated notebooks, no file spells the repository URL."""
    import os

    upstream = repository_url()
    skip = {".git", ".venv", "_build", "notebooks", "solutions", ".tl_course_cache", "__pycache__", ".pytest_cache",
            "submitted", "autograded", "feedback", "grading"}
    spelled = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in skip]
        for name in files:
            path = Path(folder) / name
            if path.suffix in {".py", ".md", ".yml", ".yaml", ".toml", ".cfg", ".txt", ".ipynb", ""}:
                if upstream in path.read_text(errors="replace"):
                    spelled.append(str(path.relative_to(ROOT)))
    assert spelled == ["_config.yml"]


def test_the_setup_cell_pins_the_release_tag():
    spec = install_spec()
    assert spec == f"tl_course @ git+{repository_url()}@v{release_version()}"
    assert release_version() == re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    for assignment in assignments():
        for folder in ("solutions", "notebooks"):
            nb = nbformat.read(ROOT / folder / assignment / f"{assignment}.ipynb", as_version=4)
            setup = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
            installs = re.findall(r'"pip", "install", "-q", "([^"]+)"', setup.source)
            assert installs == [spec], f"{folder}/{assignment}: the setup cell installs {installs}, not [{spec!r}]"
            assert 'print(f"tl_course' in setup.source and "profile {profile.name}" in setup.source


def test_the_package_says_the_version_the_release_pins():
    """The setup cell prints tl_course.__version__ and installs the tag v<pyproject version>: one version."""
    import tl_course

    assert tl_course.__version__ == release_version(), (
        f"tl_course/__init__.py says {tl_course.__version__}, pyproject.toml {release_version()}: make them equal.")


def test_committed_solutions_start_with_the_current_setup_cells():
    """The cells release() would rewrite are already up to date (else `make notebooks` was not run)."""
    for assignment in assignments():
        nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
        assert [c.source for c in nb.cells[:2]] == [c.source for c in setup_cells(assignment)], (
            f"solutions/{assignment}: its badge or setup cell is stale: run `make notebooks` and commit.")


def test_sync_rewrites_only_the_badge_and_setup_cells(fork):
    path = fork / "solutions" / "ch03_replace_softmax" / "ch03_replace_softmax.ipynb"
    before = nbformat.read(path, as_version=4)
    assert sync_setup_cells("ch03_replace_softmax", fork) is True
    after = nbformat.read(path, as_version=4)
    assert [c.source for c in after.cells[2:]] == [c.source for c in before.cells[2:]]
    assert after.cells[0].source.endswith(f"({colab_url('ch03_replace_softmax', fork)})")
    assert "/a-teacher/tl-course-fork/" in after.cells[0].source and f"git+{FORK}@v" in after.cells[1].source
    assert sync_setup_cells("ch03_replace_softmax", fork) is False  # nothing left to change: not written


def test_a_fork_releases_notebooks_that_follow_its_url(fork):
    """Release two chapters in the fork (nbgrader generate_assignment, about 10 s each): every link in the
    student notebooks is the fork's, the install is the fork at the release tag."""
    for assignment in ("ch01_pretrained_weights", "ch09_capstone"):
        release(assignment, root=fork)
        nb_path = fork / "notebooks" / assignment / f"{assignment}.ipynb"
        text = nb_path.read_text()
        assert repository_url() not in text, f"{assignment}: still names the upstream repository"
        badge_url = colab_url(assignment, fork)
        assert badge_url == (f"https://colab.research.google.com/github/a-teacher/tl-course-fork/blob/main/"
                             f"notebooks/{assignment}/{assignment}.ipynb")
        nb = json.loads(text)
        assert f"]({badge_url})" in "".join(nb["cells"][0]["source"])
        assert f'"tl_course @ git+{FORK}@v{release_version(fork)}"' in "".join(nb["cells"][1]["source"])
        sources = "\n".join("".join(cell["source"]) for cell in nb["cells"])
        assert {link for link in _links(sources) if "github" in link} == {badge_url, f"{FORK}@v{release_version(fork)}"}


def _launch_context(pagename: str, root: Path) -> tuple[SimpleNamespace, dict]:
    """What sphinx-book-theme leaves in the page context: a launch group whose Colab button opens the source."""
    repo = re.sub(r"^https://github.com/", "", repository_url(root))
    buttons = [{"type": "link", "text": "Colab", "url": f"https://colab.research.google.com/github/{repo}/blob/main/{pagename}.md"},
               {"type": "link", "text": "Binder", "url": "https://mybinder.org/..."}]
    context = {"header_buttons": [{"type": "group", "label": "launch-buttons", "buttons": buttons},
                                  {"type": "link", "label": "repository-button", "url": repository_url(root)}]}
    return SimpleNamespace(srcdir=str(root)), context


@pytest.mark.parametrize("where", ["upstream", "fork"])
def test_the_header_colab_button_opens_the_student_notebook(where, fork):
    root = ROOT if where == "upstream" else fork
    app, context = _launch_context("book/ch04_freeze", root)
    course_book.point_colab_at_the_notebook(app, "book/ch04_freeze", "page.html", context, None)
    colab = next(b for b in context["header_buttons"][0]["buttons"] if b["text"] == "Colab")
    assert colab["url"] == colab_url("ch04_freeze", root)
    assert colab["url"].endswith("/notebooks/ch04_freeze/ch04_freeze.ipynb")
    assert (repository_url(root).removeprefix("https://github.com/") + "/blob/") in colab["url"]


def test_a_page_without_a_notebook_loses_the_colab_button():
    app, context = _launch_context("book/glossary", ROOT)
    course_book.point_colab_at_the_notebook(app, "book/glossary", "page.html", context, None)
    assert [b["text"] for b in context["header_buttons"][0]["buttons"]] == ["Binder"]
    app, context = _launch_context("book/intro", ROOT)
    context["header_buttons"][0]["buttons"].pop()  # only Colab in the launch menu: the menu goes too
    course_book.point_colab_at_the_notebook(app, "book/intro", "page.html", context, None)
    assert [g.get("label") for g in context["header_buttons"]] == ["repository-button"]


# ---------------------------------------------------------------------------------------------
# The book published by CI (.github/workflows/book.yml): it cannot run here, so check what it says
# ---------------------------------------------------------------------------------------------
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def test_the_publishing_workflow_is_a_valid_github_workflow():
    """Schema check against the GitHub workflow schema check-jsonschema ships (offline)."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in requirements.txt: run make install")
    import subprocess

    run = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                          str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_publishing_workflow_builds_what_make_book_builds_and_publishes_it():
    import yaml

    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers["push"]["branches"] == ["main"]
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    runs = [step["run"] for step in build["steps"] if "run" in step]
    assert runs == ["make book PROFILE=ci"], "the workflow must build the book with make book and nothing else"
    uses = [step["uses"].split("@")[0] for step in build["steps"] if "uses" in step]
    assert uses[0] == "actions/checkout" and uses[-1] == "actions/upload-pages-artifact"
    upload = build["steps"][-1]
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^BOOK_HTML = \$\(if \$\(filter ci,\$\(PROFILE\)\),_build/html,", make, re.M)
    assert upload["with"]["path"] == "_build/html"  # where make book PROFILE=ci writes the site
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]
    for job in (build, deploy):
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), f"pin {step['uses']} to a major version"
