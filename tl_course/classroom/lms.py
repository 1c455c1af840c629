"""Taking a class in from an LMS: a download (one zip of notebooks named ``<student id>_...<assignment>.ipynb``)
put into ``submitted/`` by nbgrader's ``zip_collect``: ``python -m tl_course.classroom import-zip``."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import safety
from .gradebook import GradingError, course_config, ensure_release, resolve_db_url

__all__ = ["DEFAULT_NAME_REGEXP", "import_zip"]

#: LMS downloads name files "<student id>_<anything>.ipynb"; change with --student-regexp
DEFAULT_NAME_REGEXP = r".*/(?P<student_id>[A-Za-z0-9.@-]+)_(?:.*_)?(?P<file_id>ch\d\d_[a-z0-9_]+?)(?:[ _-]*\(?\d+\)?)?\.ipynb$"


def import_zip(course: Path, archive: Path, assignment: str, name_regexp: str = DEFAULT_NAME_REGEXP,
               db_url: str | None = None, max_total: int = safety.MAX_ZIP_TOTAL,
               max_entry: int = safety.MAX_ZIP_ENTRY) -> dict:
    """Put an LMS download (a zip of notebooks named ``<student id>_...<assignment>.ipynb``) into
    ``submitted/`` with nbgrader's ``zip_collect``. Returns ``{"collected": {student: [files]},
    "unmatched": [file names], "refused": [one sentence each]}``; a file whose name gives no student id or
    another notebook is unmatched; a file over ``max_entry`` bytes (or past ``max_total`` in all) once
    extracted, an archive inside the archive, or a student id that could be a path (``..``) is refused.
    For a zip holding ``alice_ch03_replace_softmax.ipynb`` and ``README.txt`` that is
    ``{"collected": {"alice": ["alice_ch03_replace_softmax.ipynb"]}, "unmatched": ["README.txt"], "refused": []}``
    (``tests/test_grade.py`` runs it).
    """
    import zipfile

    from nbgrader.coursedir import CourseDirectory
    from nbgrader.apps.zipcollectapp import ZipCollectApp
    from nbgrader.plugins.zipcollect import ExtractorPlugin, FileNameCollectorPlugin

    course = course.resolve()
    if not zipfile.is_zipfile(archive):
        raise GradingError(f"{archive} is not a zip file: download the submissions from your LMS as one zip.")
    config = course_config(course, resolve_db_url(course, db_url))
    ensure_release(config, assignment)
    unmatched: list[str] = []
    refused: list[str] = []
    duplicates: list[str] = []
    collected: dict[str, list[str]] = {}
    notebook = f"{assignment}.ipynb"

    class ReportingCollector(FileNameCollectorPlugin):
        """nbgrader's file-name collector, remembering which files it could not match."""

        def collect(self, submitted_file):
            # the expression sees the path inside the download ("/<path in the zip>"), not the course's own
            # folders: a course under /tmp/test_x/ must not make "test" the student of "_ch02_....ipynb"
            name = os.path.basename(submitted_file)
            inside = os.path.relpath(submitted_file, work / "extracted")
            info = super().collect(submitted_file if inside.startswith("..") else "/" + inside)
            if not info or os.path.splitext(str(info.get("file_id", "")))[0] + ".ipynb" != notebook:
                unmatched.append(name)  # strict zip_collect skips a notebook of another name too
            elif not safety.safe_student_id(info["student_id"]):
                refused.append(f"{safety.one_line(name)}: the student id {safety.one_line(info['student_id'])!r} "
                               "could name a folder outside submitted/; not imported")
                return None
            else:
                if info["student_id"] in collected:
                    duplicates.append(f"{collected[info['student_id']][0]} and {name}")
                collected.setdefault(info["student_id"], []).append(name)
            return info

    config.FileNameCollectorPlugin.named_regexp = name_regexp
    config.ZipCollectApp.strict = True          # a notebook of another assignment is reported, not collected
    config.ZipCollectApp.force = True           # a newer download replaces the student's earlier files
    config.ZipCollectApp.collector_plugin = ReportingCollector

    class CappedExtractor(ExtractorPlugin):
        """Extracts the download as plain files within size caps (:func:`tl_course.classroom.safety.extract_zip`)."""

        def extract(self, archive_path, extracted_path):
            for path in sorted(Path(archive_path).iterdir()):
                refused.extend(safety.extract_zip(path, Path(extracted_path), max_total=max_total, max_entry=max_entry))

    config.ZipCollectApp.extractor_plugin = CappedExtractor
    # a folder of this import's own under downloaded/<assignment>/: nbgrader's archive/ and extracted/ there
    # (an instructor's own downloads, nbgrader's manual workflow) are neither read nor cleared
    (course / "downloaded" / assignment).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=course / "downloaded" / assignment))
    config.ZipCollectApp.archive_directory = f"{work.name}/archive"
    config.ZipCollectApp.extracted_directory = f"{work.name}/extracted"
    (work / "archive").mkdir()
    shutil.copy(archive, work / "archive" / Path(archive).name)
    app = ZipCollectApp(config=config)
    # without initialize() (which would parse sys.argv) the app has no CourseDirectory: give it the course's
    app.coursedir = CourseDirectory(config=config, parent=app)
    app.coursedir.assignment_id = assignment
    try:
        with quiet_logs(app):
            app.init_plugins()
            app.extract_archive_files()
            app.process_extracted_files()
    except SystemExit:  # nbgrader's zip_collect exits on a duplicate (and other errors it logs)
        if duplicates:
            raise GradingError(f"the zip holds two notebooks of one student ({'; '.join(duplicates)}): "
                               "delete the older one and import again.") from None
        raise GradingError("nbgrader's zip_collect stopped (its message is above); nothing was imported.") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # this import's own copy and extraction only
    return {"collected": collected, "unmatched": sorted(unmatched), "refused": refused}


@contextmanager
def quiet_logs(app):
    """Only an nbgrader app's errors reach the log while it runs."""
    import logging

    level = app.log.level
    app.log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        app.log.setLevel(level)
