"""The book builds offline, strictly (warnings are errors), with every chapter executed."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TL_COURSE_DATA", ROOT.parent / "shared" / "data"))


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
