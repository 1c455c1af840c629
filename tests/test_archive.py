"""Archived runs (issue 18, item 3): every file in results/ carries its provenance and was made with the
current protocol; a file made with another protocol is refused."""
from __future__ import annotations

import json

import pytest

from tl_course.book import archive

FILES = sorted(archive.RESULTS.glob("*.json"))
PROVENANCE = {"chapter", "profile", "overrides", "protocol", "ks", "seeds", "git_commit", "hardware", "device",
              "started", "wall_seconds", "complete", "results", "sizes", "n_val", "n_test"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_archived_file_is_current_and_says_where_it_came_from(path):
    data = json.loads(path.read_text())
    assert PROVENANCE <= set(data), f"{path.name} lacks {sorted(PROVENANCE - set(data))}"
    assert path.name == f"{data['chapter']}-{data['profile']}.json"
    assert archive.check_current(data) == [], f"{path.name} is stale: rerun the archive command"
    for domain in data["domains"]:
        rows = data["results"][domain]
        assert {r["size"] for r in rows} == set(data["sizes"][domain])
        assert {r["k"] for r in rows} == set(data["ks"]) and {r["seed"] for r in rows} == set(data["seeds"])


def test_a_file_from_another_protocol_is_refused(tmp_path):
    current = {"chapter": "ch08", "profile": "cpu", "protocol": archive.protocol_settings("ch08", "cpu")}
    assert archive.check_current(current) == []
    stale = json.loads(json.dumps(current))
    stale["protocol"]["lrs"] = [0.001]  # an archive made before the learning-rate grid
    assert any("'lrs'" in line for line in archive.check_current(stale))
    archive.archive_path("ch08", "cpu", tmp_path).write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="rerun"):
        archive.load_archive("ch08", "cpu", tmp_path)
    assert archive.load_archive("ch08", "gpu", tmp_path) is None


def test_the_command_names_a_bad_option_in_one_sentence(capsys):
    with pytest.raises(SystemExit):
        archive.main(["ch08", "--domains", "mars"])
    assert "--domains takes eurosat and/or pets" in capsys.readouterr().err
