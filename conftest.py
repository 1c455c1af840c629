"""The docstring examples of the package run as tests: ``pytest --doctest-modules tl_course`` (``make test-fast``).

Every example runs in a temporary folder of its own, which is also its activation cache
(``TL_COURSE_CACHE``), and with the environment it found put back afterwards, so an example can write only
there and changes nothing outside it (the repository, the shared cache, the next example's environment).
The folder is ``tmp_path`` in the example's namespace. The test suite's own fixtures are in tests/conftest.py.
"""
from __future__ import annotations

import os

import pytest
from _pytest.doctest import DoctestItem  # exported as pytest.DoctestItem only by recent pytest


@pytest.fixture(autouse=True)
def _doctest_in_a_temporary_folder(request: pytest.FixtureRequest) -> None:
    if not isinstance(request.node, DoctestItem):
        return
    tmp_path = request.getfixturevalue("tmp_path")
    monkeypatch = request.getfixturevalue("monkeypatch")
    saved = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TL_COURSE_CACHE", str(tmp_path / "cache"))
    request.getfixturevalue("doctest_namespace")["tmp_path"] = tmp_path
    request.addfinalizer(lambda: _restore_environment(saved))


def _restore_environment(saved: dict[str, str]) -> None:
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    os.environ.update(saved)
