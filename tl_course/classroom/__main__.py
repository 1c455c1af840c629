"""``python -m tl_course.classroom {release,grade,import-zip,bench}``: the instructor's one command line.

Each command has its own ``--help``; ``python -m tl_course.classroom --help`` lists them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .lms import DEFAULT_NAME_REGEXP


def _release_parser(sub) -> None:
    p = sub.add_parser("release", help="regenerate notebooks/ from solutions/ (nbgrader generate_assignment)",
                       description="Regenerate the student notebooks notebooks/<id>/ from the instructor "
                                   "solutions solutions/<id>/ with nbgrader generate_assignment.")
    p.add_argument("assignment", nargs="*", help="assignment ids (default: every folder of solutions/)")


def _course_argument(p) -> None:
    p.add_argument("--course", type=Path, default=Path("."), help="the nbgrader course folder (default: .)")
    p.add_argument("--db-url", help="gradebook URL (default: $TL_COURSE_GRADEBOOK, else nbgrader_config.py)")


def _grade_parser(sub) -> None:
    from .jobs import default_workers

    p = sub.add_parser("grade", help="grade every new or changed submission of a course folder",
                       description="Grade every submitted/<student>/<assignment>/ not graded yet (or changed, or "
                                   "not graded last time because of the grader) with nbgrader, each notebook in a "
                                   "sandbox; write feedback, grades.csv and summary.md.")
    _course_argument(p)
    p.add_argument("--assignment", action="append", default=[], help="grade only this assignment (repeatable)")
    p.add_argument("--student", action="append", default=[], help="grade only this student (repeatable)")
    p.add_argument("--workers", type=int, help=f"parallel notebooks (default: cores // 2 = {default_workers()})")
    p.add_argument("--threads", type=int, help="torch threads per notebook (default: cores // workers)")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--scheduler", help="a Dask scheduler address, tcp://host:8786")
    engine.add_argument("--dask", action="store_true", help="run on a Dask LocalCluster on this machine")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one submission may run (default 900)")
    p.add_argument("--cell-timeout", type=int, help="seconds one cell may run (default: nbgrader_config.py)")
    p.add_argument("--memory-gb", type=float, default=8.0, help="memory limit per submission (default 8)")
    p.add_argument("--isolation", choices=["auto", "namespaces", "none"], default="auto",
                   help="namespaces: each notebook sees a read-only system and no course folder (needs root); "
                        "auto: namespaces where possible (default)")
    p.add_argument("--force", action="store_true", help="regrade every submission, changed or not")
    p.add_argument("--retries", type=int, default=1, help="re-runs of a submission that could not run (default 1)")
    p.add_argument("--no-warm", action="store_true", help="do not run the solutions first to fill the caches")
    p.add_argument("--no-feedback", action="store_true", help="do not write feedback HTML")
    p.add_argument("--out", type=Path, help="where grades.csv and summary.md go (default: COURSE/grading)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _import_zip_parser(sub) -> None:
    p = sub.add_parser("import-zip", help="put an LMS download into submitted/ (then run grade)",
                       description="Put an LMS download (one zip of notebooks named <student id>_...<assignment>"
                                   ".ipynb) into submitted/<student>/<assignment>/ with nbgrader zip_collect; "
                                   "then run `grade`.")
    p.add_argument("archive", type=Path, help="the zip downloaded from the LMS")
    p.add_argument("--assignment", required=True, help="the assignment the zip holds, e.g. ch03_replace_softmax")
    _course_argument(p)
    p.add_argument("--student-regexp", default=DEFAULT_NAME_REGEXP,
                   help="how a file's path in the zip gives the student id and the notebook "
                        "(groups student_id and file_id)")


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="grade a synthetic class and print what it costs on this machine",
                       description="Build a synthetic class from the repository's notebooks (reference, blank, "
                                   "known mistakes), grade it with 1 worker and with N, and print one table.")
    p.add_argument("--students", type=int, default=4, help="students per assignment (default 4)")
    p.add_argument("--workers", type=int, help="the N of the second run (default: cores // 2, at least 2)")
    p.add_argument("--assignment", action="append", default=[],
                   help="an assignment of the class (repeatable; default: ch02 and ch03, the cheapest)")


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per instructor task."""
    p = argparse.ArgumentParser(prog="python -m tl_course.classroom",
                                description="What only an instructor runs: release the notebooks, take in an "
                                            "LMS download, grade a class, measure the grading.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{release,grade,import-zip,bench}")
    for add in (_release_parser, _grade_parser, _import_zip_parser, _bench_parser):
        add(sub)
    return p


def _is_course(course: Path) -> bool:
    return (course / "nbgrader_config.py").exists() or (course / "source").is_dir()


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "release":
        from .release import assignments, release

        for assignment_id in args.assignment or assignments():
            print(release(assignment_id))
        return 0
    if args.command == "bench":
        from .bench import bench

        print(bench(students=args.students, workers=args.workers, assignments=args.assignment or None))
        return 0
    from . import guard, safety
    from .gradebook import GradingError

    course = args.course.resolve()
    if not _is_course(course):
        p.error(f"--course {course} is not an nbgrader course folder (it holds neither nbgrader_config.py nor "
                "source/): run in the course folder or pass --course FOLDER.")
    try:
        if args.command == "import-zip":
            from .lms import import_zip

            found = import_zip(course, args.archive, args.assignment, args.student_regexp, args.db_url)
            n = sum(len(v) for v in found["collected"].values())
            print(f"imported {n} notebook(s) of {len(found['collected'])} student(s) into submitted/")
            for name in found["unmatched"]:
                print(f"could not match (no student id, or another notebook): {safety.one_line(name)}")
            for why in found["refused"]:
                print(f"refused: {why}")
            return 0
        from .grade import Options, grade_class

        opts = Options(course=course, assignments=args.assignment, students=args.student, db_url=args.db_url,
                       workers=args.workers, threads=args.threads,
                       scheduler=args.scheduler or ("local" if args.dask else None), timeout=args.timeout,
                       cell_timeout=args.cell_timeout, memory_gb=args.memory_gb, isolation=args.isolation,
                       force=args.force, retries=args.retries, warm=not args.no_warm, out=args.out,
                       progress=not args.quiet, feedback=not args.no_feedback)
        report = grade_class(opts)
    except (GradingError, guard.AnotherGrader, guard.GradebookUnreachable) as err:
        print(f"error: {safety.escape_control(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: what was recorded stays; run the same command again to grade the rest.", file=sys.stderr)
        return 130
    print(f"graded {len(report.graded)}, unchanged {len(report.skipped)}, could not run {len(report.failed)} "
          f"in {report.seconds:.0f} s")
    if report.errors:
        print(f"not graded because of the grader (run the same command again): {len(report.errors)}")
    if report.profile_warnings:
        print(f"warning: {len(report.profile_warnings)} submission(s) ran another TL_COURSE_PROFILE than the "
              f"grader's (listed in the summary), e.g. {report.profile_warnings[0]}")
    print(f"grades: {report.csv}\nsummary: {report.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
