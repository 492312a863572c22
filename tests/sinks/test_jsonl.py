"""JSON lines sink: one ECS document per line, size rotation, stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _sink_helpers import make_alert, make_incident  # type: ignore[import-not-found]

from trustmesh.errors import SinkError
from trustmesh.sinks import JsonLinesSink


def test_lines_are_the_ecs_documents(tmp_path: Path) -> None:
    docs = [make_alert(i).to_ecs(created=1.7e9) for i in range(3)] + [make_incident().to_ecs(created=1.7e9)]
    sink = JsonLinesSink(tmp_path / "out" / "alerts.jsonl")
    sink.emit(docs)
    sink.close()
    lines = (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == docs
    assert (tmp_path / "out" / "alerts.jsonl").stat().st_mode & 0o077 == 0o040  # 0640


def test_rotation_by_size_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    one = len(json.dumps(make_alert(0).to_ecs(created=0), sort_keys=True, separators=(",", ":"))) + 1
    sink = JsonLinesSink(path, max_bytes=one * 3, backups=2)
    for i in range(10):
        sink.emit([make_alert(i).to_ecs(created=0)])
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]  # the oldest beyond 2 backups were dropped
    assert all(p.stat().st_size <= one * 3 + 10 for p in tmp_path.iterdir())
    newest = [json.loads(x)["event"]["id"] for x in path.read_text().splitlines()]
    assert newest[-1] == "alr-0009"
    older = [json.loads(x)["event"]["id"] for x in (tmp_path / "a.jsonl.1").read_text().splitlines()]
    assert older and older[-1] < newest[0]


def test_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonLinesSink("-")
    sink.emit([make_alert(1).to_ecs(created=0)])
    assert json.loads(capsys.readouterr().out)["event"]["id"] == "alr-0001"
    assert sink.name == "jsonl stdout"


def test_unwritable_path_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(SinkError, match="cannot write"):
        JsonLinesSink(tmp_path / "f" / "alerts.jsonl").emit([make_alert().to_ecs(created=0)])
