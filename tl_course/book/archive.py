"""Archived runs of the book's experiments at a profile's scale, reproducible by one command::

    python -m tl_course.book.archive ch08 --profile cpu                       # the whole sweep of the profile
    python -m tl_course.book.archive ch08 --profile cpu --domains eurosat --seeds 1   # smaller, and says so

writes ``results/ch08-<profile>.json``: the sweep's rows per domain and, as provenance, the git commit, the
profile and every override of it, the seeds, the hardware, the wall time and the protocol's settings
(:func:`tl_course.book.experiments.sweep_plan`). A page shows the archived file next to its live run;
:func:`check_current` refuses a file whose protocol no longer matches the current one, so a stale archive
cannot pass for current (``tests/test_archive.py`` checks every file in ``results/``).

>>> stale = {"chapter": "ch08", "profile": "ci", "protocol": {**protocol_settings("ch08", "ci"), "lrs": [0.5]}}
>>> check_current(stale)
["protocol setting 'lrs' is [0.5] in the archive but [0.001] now"]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["RESULTS", "archive_path", "protocol_settings", "check_current", "load_archive", "run_ch08", "main"]

#: Where archived runs live: ``results/`` at the repository root.
RESULTS = Path(__file__).resolve().parents[2] / "results"
CHAPTERS = ("ch08",)


def archive_path(chapter: str, profile: str, directory: str | Path | None = None) -> Path:
    """The archive file of a chapter and profile.

    >>> archive_path("ch08", "cpu", "/tmp/r").as_posix()
    '/tmp/r/ch08-cpu.json'
    """
    if chapter not in CHAPTERS:
        raise ValueError(f"No archived experiment for {chapter!r}: use one of {', '.join(CHAPTERS)}.")
    return Path(directory or RESULTS) / f"{chapter}-{profile}.json"


def protocol_settings(chapter: str, profile: str) -> dict:
    """The current protocol of a chapter at a profile, as the JSON an archive stores (lists, not tuples).

    >>> protocol_settings("ch08", "cpu")["lrs"]
    [0.0003, 0.001, 0.003]
    """
    from ..profiles import get_profile
    from .experiments import sweep_plan

    if chapter not in CHAPTERS:
        raise ValueError(f"No archived experiment for {chapter!r}: use one of {', '.join(CHAPTERS)}.")
    return json.loads(json.dumps(sweep_plan(get_profile(profile)).settings()))


def check_current(archive: dict) -> list[str]:
    """Every way an archive's protocol differs from the current one (empty: it is current).

    >>> check_current({"chapter": "ch08", "profile": "cpu", "protocol": protocol_settings("ch08", "cpu")})
    []
    """
    now = protocol_settings(archive["chapter"], archive["profile"])
    then = archive.get("protocol", {})
    out = []
    for key in sorted(set(now) | set(then)):
        if now.get(key) != then.get(key):
            out.append(f"protocol setting {key!r} is {then.get(key)!r} in the archive but {now.get(key)!r} now")
    return out


def load_archive(chapter: str, profile: str, directory: str | Path | None = None) -> dict | None:
    """The archived run of a chapter and profile, or None if there is none; a ``ValueError`` naming the
    differences if its protocol is not the current one (rerun the archive command).

    >>> load_archive("ch08", "no-such-profile") is None
    True
    """
    path = archive_path(chapter, profile, directory)
    if not path.exists():
        return None
    archive = json.loads(path.read_text())
    stale = check_current(archive)
    if stale:
        raise ValueError(f"{path.name} was made with another protocol ({'; '.join(stale)}): rerun "
                         f"`python -m tl_course.book.archive {chapter} --profile {profile}`.")
    return archive


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _hardware() -> dict:
    import torch

    return {"machine": platform.machine(), "processor": platform.processor() or "unknown",
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)


def run_ch08(profile_name: str, domains: Sequence[str] = ("eurosat", "pets"), seeds: int | None = None,
             sizes: dict[str, tuple[int, ...]] | None = None, directory: str | Path | None = None,
             log=print) -> Path:
    """Run chapter 8's sweep at a profile's scale and archive it (the file is rewritten after every size of
    every domain, with ``"complete": false`` until the last one is done). ``seeds`` and ``sizes`` shrink the run; they are
    recorded in ``"overrides"`` so the page can say so."""
    import torch

    from ..profiles import get_device, get_profile
    from .experiments import domain_setup, split_features, sweep, sweep_cuts, sweep_plan

    overrides: dict = {}
    if seeds is not None:
        overrides["sweep_seeds"] = int(seeds)
    for d, chosen in (sizes or {}).items():
        overrides[f"{d}_sizes"] = tuple(int(n) for n in chosen)
    profile = get_profile(profile_name, **overrides)
    plan = sweep_plan(profile)
    device = get_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    path = archive_path("ch08", profile.name, directory)
    data = {"chapter": "ch08", "profile": profile.name, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                                      for k, v in overrides.items()},
            "protocol": json.loads(json.dumps(plan.settings())), "ks": list(profile.sweep_ks),
            "seeds": list(range(profile.sweep_seeds)), "domains": [], "sizes": {}, "n_val": {}, "n_test": {},
            "results": {}, "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain")),
            "hardware": _hardware(), "device": str(device),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m tl_course.book.archive " + " ".join(sys.argv[1:]) if sys.argv[1:] else "",
            "wall_seconds": 0.0, "complete": False}
    start = time.perf_counter()
    for i, d in enumerate(domains):
        setup = domain_setup(d, profile)
        feats = split_features(setup, cuts=sweep_cuts(setup.model, profile.sweep_ks), device=device)
        data["domains"].append(d)
        data["sizes"][d], data["results"][d] = [], []
        data["n_val"][d], data["n_test"][d] = len(setup.splits.val), len(setup.splits.test)
        for j, size in enumerate(setup.sizes):  # one size at a time: an interrupted run keeps what it finished
            rows = sweep(setup.model, feats, (size,), profile.sweep_ks, range(profile.sweep_seeds), plan=plan,
                         device=device, on_row=lambda r: log(f"{d} size {r['size']} k {r['k']} seed {r['seed']}: "
                                                             f"val {r['val_acc']:.3f} test {r['test_acc']:.3f}"))
            data["sizes"][d].append(size)
            data["results"][d].extend(rows)
            data["wall_seconds"] = time.perf_counter() - start
            data["complete"] = i == len(domains) - 1 and j == len(setup.sizes) - 1
            _write(path, data)
            log(f"{d} size {size} done, {data['wall_seconds']:.0f} s so far -> {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_course.book.archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", choices=CHAPTERS)
    parser.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    parser.add_argument("--domains", default="eurosat,pets", help="comma-separated: eurosat, pets")
    parser.add_argument("--seeds", type=int, help="fewer seeds than the profile's (recorded as an override)")
    parser.add_argument("--eurosat-sizes", help="comma-separated tiles per class (recorded as an override)")
    parser.add_argument("--pets-sizes", help="comma-separated photos per class (recorded as an override)")
    parser.add_argument("--out", help="folder for the results file (default: results/ at the repository root)")
    args = parser.parse_args(argv)
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    bad = [d for d in domains if d not in ("eurosat", "pets")]
    if bad or not domains:
        parser.error(f"--domains takes eurosat and/or pets, got {args.domains!r}.")
    sizes = {}
    for d, text in (("eurosat", args.eurosat_sizes), ("pets", args.pets_sizes)):
        if text:
            try:
                sizes[d] = tuple(sorted(int(n) for n in text.split(",")))
            except ValueError:
                parser.error(f"--{d}-sizes takes whole numbers separated by commas, got {text!r}.")
    path = run_ch08(args.profile, domains, args.seeds, sizes, args.out)
    print(f"archived: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
