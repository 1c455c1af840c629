"""What only an instructor runs: releasing the student notebooks, importing an LMS download, grading a
class in a sandbox, the grading bench. One command line (each command has its own ``--help``)::

    python -m tl_course.classroom release [ASSIGNMENT ...]
    python -m tl_course.classroom import-zip FILE --assignment ID
    python -m tl_course.classroom grade [--workers N] [--scheduler tcp://HOST:8786] ...
    python -m tl_course.classroom bench [--students N] [--workers N]

One module per job: :mod:`.release` (notebooks/ from solutions/), :mod:`.lms` (the LMS zip),
:mod:`.grade` (one grading run: :func:`~.grade.grade_class`) with :mod:`.submissions` (what was handed
in), :mod:`.jobs` (self-contained jobs, the executors), :mod:`.sandbox` (one job, walled off),
:mod:`.recording` (the results into the gradebook), :mod:`.gradebook` (configuration, gradebook, ledger)
and :mod:`.reports` (grades.csv, summary.md); :mod:`.notebooks` (the one reader of nbgrader's cell
metadata), :mod:`.grouping` and :mod:`.mistakes` (the known-mistake catalogue), :mod:`.bench`.
Nothing imports :mod:`.bench` but the command line, and no module imports itself back through another.

Torch-free: importing any module of this subpackage leaves torch out of ``sys.modules`` (the student
kernels the grader starts import it, the grader itself never does).
"""
