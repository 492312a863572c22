"""Bulk NDJSON sink: the _bulk format checked by a real HTTP server on 127.0.0.1, and the file form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _sink_helpers import make_alert, make_incident  # type: ignore[import-not-found]

from trustmesh.errors import SinkError
from trustmesh.sinks import BulkSink, SinkSet, bulk_body


def _parse_bulk(body: bytes) -> list[tuple[dict, dict]]:
    """What an Elasticsearch node checks: NDJSON, newline-terminated, action line then source line."""
    assert body.endswith(b"\n"), "bulk body must end with a newline"
    lines = body.decode("utf-8").split("\n")[:-1]
    assert len(lines) % 2 == 0
    pairs = []
    for action_line, source_line in zip(lines[::2], lines[1::2], strict=True):
        action = json.loads(action_line)
        assert len(action) == 1 and next(iter(action)) in {"index", "create"}
        assert "_index" in next(iter(action.values()))
        pairs.append((action, json.loads(source_line)))
    return pairs


def _es_answer(fail_ids: set[str]):  # type: ignore[no-untyped-def]
    def answer(req):  # type: ignore[no-untyped-def]
        assert req.path == "/_bulk"
        assert req.headers["content-type"] == "application/x-ndjson"
        items = []
        for action, _source in _parse_bulk(req.body):
            op, meta = next(iter(action.items()))
            bad = meta.get("_id") in fail_ids
            items.append({op: {"_index": meta["_index"], "_id": meta.get("_id"), "status": 400 if bad else 201,
                               **({"error": {"type": "mapper_parsing_exception", "reason": "boom"}} if bad else {})}})
        doc = {"took": 1, "errors": any(next(iter(i.values()))["status"] >= 300 for i in items), "items": items}
        return 200, json.dumps(doc).encode(), "application/json"
    return answer


def test_post_to_bulk_endpoint(http_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    http_server.answer = _es_answer(set())
    docs = [make_alert(i).to_ecs(created=0) for i in range(3)] + [make_incident(2).to_ecs(created=0)]
    sink = BulkSink(url=http_server.url, path=tmp_path / "bulk.ndjson", index="tm-alerts", incident_index="tm-inc")
    sink.emit(docs)
    sink.close()
    pairs = _parse_bulk(http_server.requests[0].body)
    assert [a["index"]["_index"] for a, _ in pairs] == ["tm-alerts"] * 3 + ["tm-inc"]
    assert [a["index"]["_id"] for a, _ in pairs] == ["alr-0000", "alr-0001", "alr-0002", "inc-1"]
    assert [s for _, s in pairs] == docs
    assert (tmp_path / "bulk.ndjson").read_bytes() == http_server.requests[0].body


def test_item_errors_are_counted(http_server) -> None:  # type: ignore[no-untyped-def]
    http_server.answer = _es_answer({"alr-0001"})
    sinks = SinkSet([(BulkSink(url=http_server.url), ["alert"])])
    problems = sinks.publish([make_alert(i).to_ecs(created=0) for i in range(3)])
    stats = sinks.stats()[f"bulk {http_server.url}"]
    assert stats["sent"] == 2 and stats["failed"] == 1 and "mapper_parsing_exception" in problems[0]


def test_http_error_and_unreachable(http_server) -> None:  # type: ignore[no-untyped-def]
    http_server.answer = lambda r: (503, b"busy", "text/plain")
    with pytest.raises(SinkError, match="HTTP 503"):
        BulkSink(url=http_server.url).emit([make_alert().to_ecs(created=0)])
    with pytest.raises(SinkError, match="failed"):
        BulkSink(url="http://127.0.0.1:9", timeout_s=2).emit([make_alert().to_ecs(created=0)])


def test_create_op_for_data_streams() -> None:
    pairs = _parse_bulk(bulk_body([make_alert().to_ecs(created=0)], index="logs-trustmesh-default", op="create"))
    assert pairs[0][0] == {"create": {"_index": "logs-trustmesh-default"}}


def test_api_key_comes_from_the_environment(http_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    http_server.answer = _es_answer(set())
    sink = BulkSink(url=http_server.url, api_key_env="TM_TEST_ES_KEY")
    with pytest.raises(SinkError, match="TM_TEST_ES_KEY"):
        sink.emit([make_alert().to_ecs(created=0)])
    monkeypatch.setenv("TM_TEST_ES_KEY", "c2VjcmV0")
    sink.emit([make_alert().to_ecs(created=0)])
    assert http_server.requests[-1].headers["authorization"] == "ApiKey c2VjcmV0"
    assert "c2VjcmV0" not in sink.name
