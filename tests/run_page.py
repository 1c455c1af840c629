"""Execute one book page (a MyST Markdown notebook) the way Jupyter Book does, and report its time.

    python tests/run_page.py book/ch01_pretrained_weights.md [--save out.ipynb]

Fails (exit 1) if a cell raises. Used by the book tests and when writing a chapter.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from myst_nb.core.read import read_myst_markdown_notebook
from nbclient import NotebookClient


def run_page(path: str | Path, timeout: int = 1200) -> tuple[nbformat.NotebookNode, float]:
    path = Path(path)
    nb = read_myst_markdown_notebook(path.read_text())
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("page")
    parser.add_argument("--save", help="write the executed notebook here")
    args = parser.parse_args()
    nb, seconds = run_page(args.page)
    if args.save:
        nbformat.write(nb, args.save)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    print(out["text"], end="")
                elif "text/plain" in out.get("data", {}) and "image/png" not in out.get("data", {}):
                    print(out["data"]["text/plain"])
                elif "image/png" in out.get("data", {}):
                    print("[figure]")
    print(f"\n{args.page}: executed in {seconds:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
