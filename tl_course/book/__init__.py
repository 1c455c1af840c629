"""What only the book's pages run: the experiments (``tl_course.book.experiments``), the figures
(``tl_course.book.plots``) and the speed bench (``python -m tl_course.book.bench``).

A student's notebook never needs this subpackage; the book's pages import its modules by name.
"""
