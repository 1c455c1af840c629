"""``python -m tl_course.classroom {release,grade,import-zip,bench}``: the instructor's one command line."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"release": "notebooks from solutions/ (nbgrader generate_assignment)",
                "grade": "grade every submission of a course folder",
                "import-zip": "put an LMS download into submitted/ (then grade)",
                "bench": "grade a synthetic class and print what it costs"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: python -m tl_course.classroom {" + ",".join(commands) + "} [options]\n")
        for name, what in commands.items():
            print(f"  {name:<11} {what}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "release":
        from .release import main as release_main
        release_main(rest)
        return 0
    from .grade import main as grade_main
    if command == "bench":
        return grade_main(["--bench", *rest])
    if command == "import-zip":
        return grade_main(["--import-zip", *rest])
    return grade_main(rest)


if __name__ == "__main__":
    sys.exit(main())
