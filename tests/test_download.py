"""The one download helper (tl_course.data.download_dataset) against a small archive served on 127.0.0.1.

A real HTTP server in a thread serves a tiny ``hymenoptera_data.zip``; each test says what the server does (the
right bytes, damaged bytes, a cut connection, an archive escaping its folder) and checks what lands on disk.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from tl_course import data
from tl_course.data import ANTS_AND_BEES, DataSource, DataUnavailableError, find_ants_and_bees

LAYOUT = {"train/ants/a1.jpg": b"ant one", "train/bees/b1.jpg": b"bee one", "val/ants/a2.jpg": b"ant two",
          "val/bees/b2.jpg": b"bee two"}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


ARCHIVE = _zip({f"hymenoptera_data/{name}": content for name, content in LAYOUT.items()})


class _Server:
    """An HTTP server on 127.0.0.1 serving ``body`` at /hymenoptera_data.zip; ``cut`` sends only half of it
    under a full Content-Length (a dropped connection). Counts the requests it answered."""

    def __init__(self, body: bytes, cut: bool = False):
        self.body, self.cut, self.requests = body, cut, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body[: len(server.body) // 2] if server.cut else server.body)

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hymenoptera_data.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _source(url: str, body: bytes = ARCHIVE) -> DataSource:
    return replace(ANTS_AND_BEES, url=url, sha256=hashlib.sha256(body).hexdigest())


def test_a_missing_folder_is_downloaded_checked_and_unpacked_once(tmp_path, capsys):
    with _Server(ARCHIVE) as server:
        source = _source(server.url)
        folder = find_ants_and_bees(tmp_path, source=source)
        assert folder == tmp_path / "hymenoptera_data"
        assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == set(LAYOUT)
        assert (folder / "val" / "bees" / "b2.jpg").read_bytes() == b"bee two"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["hymenoptera_data"]  # no archive, no temp folder
        said = capsys.readouterr().out.strip().splitlines()
        assert said == [f"Downloading the ants / bees photos of the PyTorch transfer-learning tutorial (45 MB) from "
                        f"{server.url} into {folder}, once: later runs read them from disk."]
        assert find_ants_and_bees(tmp_path, source=source) == folder  # second call: on disk
        assert server.requests == 1 and capsys.readouterr().out == ""


def test_data_on_disk_downloads_nothing_even_offline(tmp_path, monkeypatch):
    for name, content in LAYOUT.items():
        (tmp_path / "hymenoptera_data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hymenoptera_data" / name).write_bytes(content)

    def no_network(*args, **kwargs):
        raise AssertionError("urlopen was called although the photos are on disk")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with _Server(ARCHIVE) as server:
        assert find_ants_and_bees(tmp_path, source=_source(server.url)) == tmp_path / "hymenoptera_data"
        assert server.requests == 0


def test_a_corrupt_download_is_refused_and_leaves_nothing(tmp_path):
    damaged = bytearray(ARCHIVE)
    damaged[len(damaged) // 3] ^= 0xFF
    with _Server(bytes(damaged)) as server:
        with pytest.raises(DataUnavailableError) as info:
            data.download_dataset(_source(server.url), tmp_path)  # the expected checksum is the good archive's
    message = str(info.value)
    assert "SHA-256" in message and "refused" in message and "nothing was unpacked" in message
    assert hashlib.sha256(ARCHIVE).hexdigest() in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no archive, no half-unpacked folder, no temp folder


def test_a_cut_connection_is_one_sentence_and_leaves_nothing(tmp_path):
    with _Server(ARCHIVE, cut=True) as server:
        with pytest.raises(DataUnavailableError) as info:
            find_ants_and_bees(tmp_path, source=_source(server.url))
    message = str(info.value)
    assert f"stopped after {len(ARCHIVE) // 2:,} of {len(ARCHIVE):,} bytes" in message
    assert "nothing was unpacked" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_an_archive_escaping_its_folder_is_refused(tmp_path):
    evil = _zip({"hymenoptera_data/train/ants/a.jpg": b"x", "../escaped.txt": b"gotcha"})
    root = tmp_path / "data"
    with _Server(evil) as server:
        with pytest.raises(DataUnavailableError, match="outside"):
            data.download_dataset(_source(server.url, evil), root)
    assert not (tmp_path / "escaped.txt").exists() and list(root.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(tmp_path):
    mine = tmp_path / "hymenoptera_data"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with _Server(ARCHIVE) as server:
        with pytest.raises(DataUnavailableError, match="already exists.*move it away"):
            find_ants_and_bees(tmp_path, source=_source(server.url))
        assert server.requests == 0
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"


def test_download_false_never_touches_the_network(tmp_path):
    with pytest.raises(DataUnavailableError, match=r"download=False.*TL_COURSE_DATA"):
        find_ants_and_bees(tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


def test_every_source_says_what_how_big_and_where():
    for source in (data.PETS, data.EUROSAT, ANTS_AND_BEES):
        sentence = source.announcement("/course/data")
        assert sentence.startswith(f"Downloading {source.title} ({source.size}) from {source.url} into "
                                   f"{Path('/course/data') / source.folder}")
        assert sentence.count(". ") == 0 and sentence.endswith(".")
    assert data.PETS.torchvision == "OxfordIIITPet" and data.EUROSAT.torchvision == "EuroSAT"
    assert len(ANTS_AND_BEES.sha256) == 64 and ANTS_AND_BEES.url.startswith("https://download.pytorch.org/")
