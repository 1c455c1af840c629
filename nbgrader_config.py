"""nbgrader configuration of the course: instructor notebooks in solutions/, student notebooks in notebooks/."""

c = get_config()  # noqa: F821 - provided by nbgrader

c.CourseDirectory.root = "."
c.CourseDirectory.course_id = "transfer-learning-cv"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
# The gradebook: SQLite by default; any SQLAlchemy URL works, e.g. PostgreSQL:
# c.CourseDirectory.db_url = "postgresql://user:password@localhost/gradebook"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# Model loading and feature caching take longer than nbgrader's default 30 s only in the *non-graded*
# cells; graded test cells are kept well under 30 s on a CPU with TL_COURSE_PROFILE=ci.
c.ExecutePreprocessor.timeout = 300
