"""Shared fixtures: the offline EfficientNet-Lite0 loaded once, a few real photos, the data path."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

# The offline photos: $TL_COURSE_DATA, else ../shared/data beside the repository.
DATA = Path(os.environ.get("TL_COURSE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PETS = DATA / "oxford-iiit-pet" / "images"
needs_pets = pytest.mark.skipif(not PETS.is_dir(), reason=f"no Oxford-IIIT Pet photos in {PETS} (set TL_COURSE_DATA)")

# Tests that run real notebooks through nbgrader or build the book take minutes: `make test-fast`
# (pytest -m "not slow") leaves them out. Marked here so those files need not change.
_SLOW_FILES = {"test_course.py", "test_book.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in _SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pretrained():
    """``load_pretrained()`` once per session (offline weights, 224 px preprocessing). Do not mutate its
    model: take ``copy.deepcopy(pretrained.model)`` (or the ``lite0`` fixture)."""
    from tl_course.models import load_pretrained

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_pretrained()


@pytest.fixture(scope="session")
def small_preprocess():
    """The Lite0 eval preprocessing at 64 px: enough for the plumbing tests, cheap on a CPU."""
    from tl_course.models import load_pretrained

    return load_pretrained(image_size=64).preprocess


@pytest.fixture
def lite0(pretrained):
    """A private copy of the pretrained Lite0 (1000-way head, eval mode), free to mutate."""
    return copy.deepcopy(pretrained.model)


@pytest.fixture(scope="session")
def few_photos():
    """6 real photos (2 Tigger, 2 Misty, 2 neither) as ``Samples``."""
    if not PETS.is_dir():
        pytest.skip(f"no Oxford-IIIT Pet photos in {PETS} (set TL_COURSE_DATA)")
    from tl_course.data import cat_detector_splits

    return cat_detector_splits(2, 0, 0, seed=0, root=DATA).train


@pytest.fixture
def frozen(lite0):
    """A private pretrained Lite0 with a new 3-way head, only the head trainable."""
    from tl_course.freezing import freeze
    from tl_course.models import replace_head

    return freeze(replace_head(lite0, 3), trainable_stages=1)


@pytest.fixture
def count_extractions(monkeypatch):
    """Counts the calls cached_features makes to extract_features (a call = a cache miss)."""
    from tl_course import features

    calls = []
    real = features.extract_features

    def counting(*args, **kwargs):
        calls.append(kwargs.get("cut"))
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract_features", counting)
    return calls
