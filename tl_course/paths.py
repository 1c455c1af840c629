"""Where the course keeps things, read from the environment: torch-free, so the classroom can use it.

Every ``TL_COURSE_*`` variable that names a place or a size is read here and nowhere else:

- ``TL_COURSE_DATA``: the photos (default ``~/.cache/tl_course/data``);
- ``TL_COURSE_CACHE``: the activation cache (default ``~/.cache/tl_course/features``);
- ``TL_COURSE_CACHE_MAX_GB``: the cache's size cap in GB (default 5; ``0`` or ``inf``: no cap).

``~`` is expanded in every path, so ``%env TL_COURSE_CACHE=~/tl_cache`` in Jupyter means the home folder.

>>> import os
>>> os.environ["TL_COURSE_CACHE_MAX_GB"] = "inf"
>>> cache_max_bytes() is None
True
>>> del os.environ["TL_COURSE_CACHE_MAX_GB"]
"""
from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["DEFAULT_CACHE_MAX_GB", "data_root", "cache_dir", "cache_max_bytes"]

DEFAULT_CACHE_MAX_GB = 5.0


def _folder(variable: str, default: Path) -> Path:
    value = os.environ.get(variable, "").strip()
    return Path(value).expanduser() if value else default


def data_root() -> Path:
    """The data folder: ``$TL_COURSE_DATA`` if set (``~`` expanded), else ``~/.cache/tl_course/data``.

    >>> data_root().is_absolute() or not os.environ.get("TL_COURSE_DATA")
    True
    """
    return _folder("TL_COURSE_DATA", Path.home() / ".cache" / "tl_course" / "data")


def cache_dir() -> Path:
    """Where feature caches live: ``$TL_COURSE_CACHE`` (``~`` expanded) or ``~/.cache/tl_course/features``.

    >>> os.environ["TL_COURSE_CACHE"] = "~/tl_cache"
    >>> cache_dir() == Path.home() / "tl_cache"
    True
    >>> del os.environ["TL_COURSE_CACHE"]
    >>> cache_dir().name
    'features'
    """
    return _folder("TL_COURSE_CACHE", Path.home() / ".cache" / "tl_course" / "features")


def cache_max_bytes() -> int | None:
    """The cache's size cap in bytes from ``$TL_COURSE_CACHE_MAX_GB``, or None for no cap (``0``, a negative
    number or ``inf``). Anything else that is not a number is refused in one sentence naming the variable.

    >>> os.environ["TL_COURSE_CACHE_MAX_GB"] = "0.5"
    >>> cache_max_bytes()
    500000000
    >>> os.environ["TL_COURSE_CACHE_MAX_GB"] = "lots"
    >>> cache_max_bytes()
    Traceback (most recent call last):
    ...
    ValueError: TL_COURSE_CACHE_MAX_GB='lots' is not a number of GB (use e.g. 5, or 0 or inf for no cap).
    >>> del os.environ["TL_COURSE_CACHE_MAX_GB"]
    """
    raw = os.environ.get("TL_COURSE_CACHE_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_CACHE_MAX_GB
    except ValueError:
        gb = math.nan
    if math.isnan(gb):
        raise ValueError(f"TL_COURSE_CACHE_MAX_GB={raw!r} is not a number of GB (use e.g. 5, or 0 or inf for "
                         "no cap).")
    return None if gb <= 0 or math.isinf(gb) else int(gb * 1e9)
