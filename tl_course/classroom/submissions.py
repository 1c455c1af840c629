"""Finding the submissions of a course folder: ``submitted/<student>/<assignment>/<assignment>.ipynb``,
each with a digest of its files (what the grader's ledger compares to decide what to regrade)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Submission", "visible_files", "folder_digest", "find_submissions"]


@dataclass(frozen=True)
class Submission:
    """One student's folder for one assignment, and the SHA-256 of its files when it was found."""

    student: str
    assignment: str
    folder: Path
    digest: str


def visible_files(folder: Path) -> list[Path]:
    """A submission's files, sorted: hidden files and folders (``.ipynb_checkpoints``) left out.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "a.ipynb").write_text("{}"); _ = (Path(tmp) / ".DS_Store").write_text("")
    ...     [p.name for p in visible_files(Path(tmp))]
    ['a.ipynb']
    """
    return [p for p in sorted(folder.rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def folder_digest(folder: Path) -> str:
    """SHA-256 of a folder's files (names and bytes; hidden files and checkpoints left out).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     len(folder_digest(Path(tmp)))
    64
    """
    h = hashlib.sha256()
    for path in visible_files(folder):
        # os.fsencode: a name that is not UTF-8 (surrogate-escaped) hashes as its bytes, not an error
        h.update(os.fsencode(path.relative_to(folder)) + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def find_submissions(course: Path, assignments: list[str] | None = None,
                     students: list[str] | None = None, submitted: str = "submitted") -> list[Submission]:
    """Every ``submitted/<student>/<assignment>/`` holding ``<assignment>.ipynb``, with its digest.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for student in ("bob", "alice"):
    ...         folder = Path(tmp) / "submitted" / student / "ch01_pretrained_weights"
    ...         folder.mkdir(parents=True)
    ...         _ = (folder / "ch01_pretrained_weights.ipynb").write_text("{}")
    ...     [s.student for s in find_submissions(Path(tmp), ["ch01_pretrained_weights"])]
    ['alice', 'bob']
    """
    root = course / submitted
    found: list[Submission] = []
    if not root.is_dir():
        return found
    for student_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if students and student_dir.name not in students:
            continue
        for folder in sorted(p for p in student_dir.iterdir() if p.is_dir()):
            if assignments and folder.name not in assignments:
                continue
            if (folder / f"{folder.name}.ipynb").is_file():
                found.append(Submission(student_dir.name, folder.name, folder, folder_digest(folder)))
    return found
