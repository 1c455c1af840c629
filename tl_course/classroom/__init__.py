"""What only an instructor runs: releasing the student notebooks, grading a class in a sandbox, importing an
LMS download, the grading bench. One command line::

    python -m tl_course.classroom release [ASSIGNMENT ...]
    python -m tl_course.classroom grade [--workers N] [--db-url URL] ...
    python -m tl_course.classroom import-zip FILE --assignment ID
    python -m tl_course.classroom bench [--students N]

Torch-free: importing any module of this subpackage leaves torch out of ``sys.modules`` (the student
kernels the grader starts import it, the grader itself never does).
"""
