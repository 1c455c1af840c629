"""Phase 2 of grading one submission, in the grader's process: nbgrader ``autograde`` against the real
gradebook with nbgrader's ``Execute`` step replaced by ``ReplayOutputs``, which puts in the outputs of the
notebook executed in the sandbox (phase 1), or, when that failed, an error with the reason in every test
cell; then ``generate_feedback``. Student code never runs here."""
from __future__ import annotations

import copy
import functools
import shutil
import warnings
from pathlib import Path

from . import guard, safety, sandbox
from .gradebook import GradingError, nbgrader_api
from .notebooks import is_test
from .submissions import Submission

__all__ = ["replay_class", "record"]


@functools.lru_cache(maxsize=None)
def replay_class():
    """nbgrader's preprocessor class :class:`ReplayOutputs`, made on first use (nbgrader is imported lazily)."""
    from nbformat.v4 import new_output
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Unicode

    class ReplayOutputs(NbGraderPreprocessor):
        """Stands in for nbgrader's ``Execute``: the outputs come from the notebook executed in the sandbox
        (cell by cell, sources checked equal), or, when that failed, every graded test cell gets an error
        naming the reason. nbgrader's ``SaveAutoGrades`` then scores the cells as usual."""

        executed = Unicode("", help="the notebook executed in the sandbox").tag(config=True)
        failure = Unicode("", help="why the submission could not be executed").tag(config=True)

        def preprocess(self, nb, resources):
            import nbformat

            reason = self.failure
            if not reason:
                ran = nbformat.reads(Path(self.executed).read_text(encoding="utf-8"), as_version=4)
                same = len(ran.cells) == len(nb.cells) and all(
                    a.cell_type == b.cell_type and a.source == b.source for a, b in zip(ran.cells, nb.cells))
                if same:
                    for cell, done in zip(nb.cells, ran.cells):
                        if cell.cell_type == "code":  # bounded and escaped again: the grader trusts no size
                            cell.outputs = nbformat.from_dict(safety.neutralise_outputs(done.get("outputs", [])))
                            cell.execution_count = done.get("execution_count")
                            if "execution" in done.get("metadata", {}):  # nbclient's per-cell timing
                                cell.metadata["execution"] = done.metadata["execution"]
                    return nb, resources
                reason = "the executed notebook does not match the submission (it was changed while it ran)."
            text = f"Not graded: {reason}"
            for cell in nb.cells:
                if is_test(cell):
                    cell.outputs = [new_output("error", ename="NotGraded", evalue=text,
                                               traceback=[f"NotGraded: {text}"])]
            return nb, resources

    return ReplayOutputs


@functools.lru_cache(maxsize=None)
def hide_tests_class():
    """nbgrader's preprocessor class :class:`HideTestSource` for the feedback, made on first use."""
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Bool

    class HideTestSource(NbGraderPreprocessor):
        """In the feedback, a graded test cell shows its name and failure message, not the hidden tests'
        source (:func:`tl_course.classroom.safety.hide_test_source`); ``show_test_source`` keeps it (practice)."""

        show_test_source = Bool(False, help="show the hidden tests in the feedback").tag(config=True)

        def preprocess_cell(self, cell, resources, index):
            if is_test(cell) and not self.show_test_source:
                safety.hide_test_source(cell)
            return cell, resources

    return HideTestSource


def write_feedback(cfg, sub: Submission) -> list[Path]:
    """nbgrader ``generate_feedback`` for one submission, safe to open: student markup sanitised
    (``HTMLExporter.sanitize_html``), hidden tests not shown (:func:`hide_tests_class`), and each page under
    a no-script Content-Security-Policy with control characters made visible
    (:func:`tl_course.classroom.safety.harden_feedback_html`). Returns the pages."""
    from nbgrader.converters import GenerateFeedback

    cfg = copy.deepcopy(cfg)
    before = list(cfg.GenerateFeedback.get("preprocessors", None)
                  or GenerateFeedback.class_traits()["preprocessors"].make_dynamic_default())
    cfg.GenerateFeedback.preprocessors = [*before, hide_tests_class()]
    cfg.HTMLExporter.sanitize_html = True
    nbgrader_api(cfg).generate_feedback(sub.assignment, sub.student, force=True)
    pages = sorted((Path(cfg.CourseDirectory.root) / "feedback" / sub.student / sub.assignment).glob("*.html"))
    for page in pages:
        page.write_text(safety.harden_feedback_html(page.read_text(encoding="utf-8", errors="replace")),
                        encoding="utf-8")
    return pages


def _gradebook_up(cfg) -> bool:
    from .gradebook import open_engine

    engine = open_engine(cfg.CourseDirectory.db_url)
    try:
        return guard.reachable(engine)
    finally:
        engine.dispose()


def _database_failed(done: dict) -> bool:
    """Whether nbgrader's failed autograde failed on the database (its error and log say which)."""
    text = (done.get("error") or "") + "\n" + (done.get("log") or "")
    return any(marker in text for marker in guard.DATABASE_ERRORS)


def record(config, sub: Submission, result: dict, feedback: bool = True, work: Path | None = None) -> tuple[float, float]:
    """Phase 2 for one submission: nbgrader autograde against the real gradebook with the sandbox's
    outputs (:class:`ReplayOutputs`), then feedback. Returns ``(score, max_score)``."""
    from nbgrader.api import Gradebook
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    replay = replay_class()  # the class is made once, on first use: nbgrader is imported lazily
    work = work or Path(config.CourseDirectory.root) / ".grade"
    cfg = copy.deepcopy(config)
    executed = work / "executed" / f"{sub.student}--{sub.assignment}.ipynb"
    if result["status"] == "graded":
        executed.parent.mkdir(parents=True, exist_ok=True)
        executed.write_text(result["executed"], encoding="utf-8")
        cfg.ReplayOutputs.executed, cfg.ReplayOutputs.failure = str(executed), ""
    else:
        cfg.ReplayOutputs.executed, cfg.ReplayOutputs.failure = "", result["reason"]
    release = Path(cfg.CourseDirectory.release_directory) / sub.assignment / f"{sub.assignment}.ipynb"
    if release.is_file():  # the same test cells as the sandbox saw (a deleted one restored, a copy graded once)
        from .jobs import release_tests

        sandbox.with_restore_tests(cfg, release_tests(release))
    cfg.Autograde.autograde_preprocessors = [replay if p is Execute else p
                                             for p in Autograde.class_traits()["autograde_preprocessors"].make_dynamic_default()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy "not in session" notices
        api = nbgrader_api(cfg)
        done = api.autograde(sub.assignment, sub.student, force=True, create=True)
        if not done["success"] and _database_failed(done):
            # the gradebook failed, not the notebook: never record a stand-in 0 for that. Down: the caller
            # waits and retries; back already: once more here (a second failure is the notebook's own)
            if not _gradebook_up(cfg):
                raise guard.GradebookHiccup(f"the gradebook failed while recording {sub.student}/{sub.assignment}")
            done = api.autograde(sub.assignment, sub.student, force=True, create=True)
        if not done["success"]:
            # nbgrader cannot even read the notebook (not JSON, cells deleted or changed in type): record the
            # release notebook in its place, every test cell failing with the reason. The student's own file
            # stays untouched in submitted/.
            reason = result["reason"] if result["status"] == "failed" else sandbox.autograde_failure(done)
            cfg.ReplayOutputs.executed, cfg.ReplayOutputs.failure = "", reason
            standin = work / "standin"
            shutil.rmtree(standin, ignore_errors=True)
            folder = standin / sub.student / sub.assignment
            release = Path(cfg.CourseDirectory.release_directory) / sub.assignment
            shutil.copytree(release, folder)
            if (sub.folder / "timestamp.txt").exists():
                shutil.copy(sub.folder / "timestamp.txt", folder)
            cfg.CourseDirectory.submitted_directory = str(standin)
            api = nbgrader_api(cfg)
            done = api.autograde(sub.assignment, sub.student, force=True, create=True)
            if not done["success"] and _database_failed(done) and not _gradebook_up(cfg):
                raise guard.GradebookHiccup(f"the gradebook failed while recording {sub.student}/{sub.assignment}")
            if not done["success"]:
                raise GradingError(f"nbgrader could not record {sub.student}/{sub.assignment} even as a failure: "
                                   f"{sandbox.autograde_failure(done)}")
        if feedback:
            write_feedback(cfg, sub)
        with Gradebook(cfg.CourseDirectory.db_url) as gb:
            submission = gb.find_submission(sub.assignment, sub.student)
            score = (submission.score, submission.max_score)
    executed.unlink(missing_ok=True)
    return score
