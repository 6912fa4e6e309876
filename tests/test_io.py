"""Shared results-file I/O: strict JSON lines appended atomically, atomic whole-file writes."""

from __future__ import annotations

import json
import os

import pytest

from gradsurrogate import io


def _strict(text: str) -> object:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} token in {text!r}"))


def test_append_jsonl_writes_one_strict_line_per_call(tmp_path, monkeypatch) -> None:
    path = tmp_path / "sub" / "r.jsonl"  # parent folders are created
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    io.append_jsonl(path, {"a": float("nan"), "b": [1.5, float("inf"), -float("inf")],
                           "c": {"d": (2, float("nan"))}})
    io.append_jsonl(path, {"a": 1})
    assert len(writes) == 2 and all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    lines = path.read_text().splitlines()
    assert [_strict(line) for line in lines] == [
        {"a": None, "b": [1.5, None, None], "c": {"d": [2, None]}}, {"a": 1}]
    assert io.read_jsonl(path) == [_strict(line) for line in lines]


def test_read_jsonl_skips_torn_and_bad_lines(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    assert io.read_jsonl(path) == []  # missing file
    io.append_jsonl_many(path, [{"k": 0}, {"k": 1}])
    with path.open("ab") as fh:
        fh.write(b'not json\n{"k": 2}\n{"k": 3, "x"')  # a garbage line, then a torn last one
    assert io.read_jsonl(path) == [{"k": 0}, {"k": 1}, {"k": 2}]
    with pytest.raises(TypeError):  # a record that is not JSON-able: nothing is written
        io.append_jsonl_many(path, [{"k": 4}, {"k": object()}])
    assert io.read_jsonl(path)[-1] == {"k": 2}


def test_atomic_writes_replace_whole_files(tmp_path) -> None:
    path = tmp_path / "out" / "x.json"
    assert io.write_json_atomic(path, {"v": float("nan"), "w": [1, 2]}) == path
    assert _strict(path.read_text()) == {"v": None, "w": [1, 2]}
    io.write_json_atomic(path, [1, {"a": 2}], indent=1)
    assert path.read_text() == json.dumps([1, {"a": 2}], indent=1) + "\n"
    with pytest.raises(TypeError):  # not JSON-able: the old file survives, no temp file left
        io.write_json_atomic(path, {"bad": object()})
    assert _strict(path.read_text()) == [1, {"a": 2}]
    text = tmp_path / "t.md"
    io.write_text_atomic(text, "héllo\n")
    io.write_text_atomic(text, "second\n")
    assert text.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "t.md", "x.json"]
