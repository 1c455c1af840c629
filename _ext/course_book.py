"""Sphinx extension of the course's book (``_config.yml``: ``sphinx.local_extensions``).

Two things the theme and the executor get wrong for this course, fixed where they are decided:

- **The header's Colab button** (sphinx-book-theme's launch buttons) would open the page's own source,
  ``book/chXX.md``, which Colab cannot open. :func:`point_colab_at_the_notebook` makes it open the chapter's
  student notebook instead (``notebooks/<id>/<id>.ipynb``, the same link as the badge in the notebook, from
  :func:`tl_course.classroom.release.colab_url`), and removes it from pages that have no student notebook.
- **The kernels that execute the pages** print ``Kernel is running over TCP without encryption`` once per page:
  jupyter_client's kernel manager starts them over TCP without keys unless told to provision CurveZMQ keys.
  :func:`encrypt_kernel_transport` sets the manager's ``transport_encryption`` to ``"auto"``: every kernel whose
  kernel spec declares Curve support (ipykernel's does) gets keys, the traffic is encrypted and the warning has
  nothing left to warn about. Kernel specs without Curve support start as before.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["encrypt_kernel_transport", "point_colab_at_the_notebook", "setup"]


def encrypt_kernel_transport() -> bool:
    """Make jupyter_client's kernel managers provision CurveZMQ keys when the kernel spec supports them.

    Returns False (and changes nothing) where pyzmq has no Curve support or jupyter_client has no
    ``transport_encryption`` setting (before 8.7).

    >>> from jupyter_client.manager import KernelManager
    >>> encrypt_kernel_transport(), KernelManager().transport_encryption
    (True, 'auto')
    """
    import zmq
    from jupyter_client.manager import KernelManager

    trait = KernelManager.class_traits().get("transport_encryption")
    if trait is None or not zmq.has("curve"):
        return False
    trait.default_value = "auto"
    return True


def _assignment_of(pagename: str, root: Path) -> str | None:
    """The assignment id whose student notebook belongs to a book page (``book/ch03_x`` -> ``ch03_x``)."""
    name = Path(pagename).name
    return name if (root / "notebooks" / name / f"{name}.ipynb").is_file() else None


def point_colab_at_the_notebook(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """``html-page-context`` handler run after the theme's launch buttons: the Colab button of a chapter opens
    its student notebook; on a page without one it is removed (and the launch menu with it, if left empty)."""
    from tl_course.classroom.release import colab_url

    root = Path(app.srcdir)  # the book's source folder is the repository: its _config.yml and notebooks/
    assignment = _assignment_of(pagename, root)
    for group in list(context.get("header_buttons", [])):
        if group.get("label") != "launch-buttons":
            continue
        for button in list(group.get("buttons", [])):
            if button.get("text") == "Colab":
                if assignment:
                    button["url"] = colab_url(assignment, root)
                    button["tooltip"] = "Open the student notebook in Colab"
                else:
                    group["buttons"].remove(button)
        if not group.get("buttons"):
            context["header_buttons"].remove(group)


def setup(app: Any) -> dict:
    encrypt_kernel_transport()
    # sphinx-book-theme adds its launch buttons at priority 501: run after it.
    app.connect("html-page-context", point_colab_at_the_notebook, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
