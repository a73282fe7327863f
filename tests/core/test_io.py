"""Atomic writes: the target appears whole or not at all, and a failed write leaves nothing behind."""

from __future__ import annotations

import pytest

from trait_interp.core.errors import UserInputError
from trait_interp.core.io import (
    atomic_dir,
    atomic_path,
    read_json,
    write_json,
    write_text,
)


def test_a_failed_file_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("stage failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_failed_folder_write_keeps_the_old_folder_and_a_good_one_replaces_it_whole(tmp_path):
    target = tmp_path / "vectors"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "b.txt").write_text("2")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("stage failed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"] and (target / "a.txt").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced whole, nothing stale kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors"]


def test_json_round_trip_and_one_line_syntax_errors(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"b": [1, 2], "a": "é"})
    assert read_json(path) == {"b": [1, 2], "a": "é"} and list(read_json(path)) == ["b", "a"]
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(UserInputError, match=r"x\.json:2:7: invalid JSON"):
        read_json(path)
    with pytest.raises(UserInputError, match="file not found"):
        read_json(tmp_path / "missing.json")
