"""Webhook sink: HMAC-SHA256 signatures checked by a real receiver, retries with backoff, delivery records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _sink_helpers import make_alert  # type: ignore[import-not-found]

from trustmesh.errors import SignatureError, SinkError
from trustmesh.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, SinkSet, WebhookSink, sign, verify_signature

SECRET = b"test-secret-not-for-production"


def _verifying(fail_first: int = 0, status: int = 503):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def answer(req):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        verify_signature(SECRET, req.body, req.headers[TIMESTAMP_HEADER.lower()], req.headers[SIGNATURE_HEADER.lower()])
        if calls["n"] <= fail_first:
            return status, b"not now", "text/plain"
        return 204, b"", "text/plain"
    return answer


def test_signed_delivery_of_the_ecs_document(http_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    http_server.answer = _verifying()
    doc = make_alert().to_ecs(created=0)
    sink = WebhookSink(http_server.url, secret=SECRET, deliveries_path=tmp_path / "deliveries.jsonl")
    sink.emit([doc])
    req = http_server.requests[0]
    assert json.loads(req.body) == doc  # the body is the ECS document, not internal JSON
    assert req.headers["x-trustmesh-event"] == "alert" and req.headers["content-type"] == "application/json"
    record = json.loads((tmp_path / "deliveries.jsonl").read_text())
    assert record["status"] == "delivered" and record["attempts"] == 1 and record["http_status"] == 204
    assert record["event_id"] == "alr-0000"


def test_retries_with_exponential_backoff(http_server) -> None:  # type: ignore[no-untyped-def]
    http_server.answer = _verifying(fail_first=2)
    waits: list[float] = []
    sink = WebhookSink(http_server.url, secret=SECRET, retries=3, backoff_s=0.5, sleep=waits.append)
    sink.emit([make_alert().to_ecs(created=0)])
    assert waits == [0.5, 1.0] and sink.deliveries[-1]["attempts"] == 3
    ids = {r.headers["x-trustmesh-delivery"] for r in http_server.requests}
    assert len(ids) == 1  # one delivery id across retries


def test_final_failure_is_recorded_and_counted(http_server) -> None:  # type: ignore[no-untyped-def]
    http_server.answer = _verifying(fail_first=99, status=400)  # a 4xx is final: no retry
    sink = WebhookSink(http_server.url, secret=SECRET, retries=3, sleep=lambda s: None)
    sinks = SinkSet([(sink, ["alert"])])
    problems = sinks.publish([make_alert(i).to_ecs(created=0) for i in range(2)])
    assert len(http_server.requests) == 2 and "2 of 2" in problems[0]
    assert sinks.stats()[sink.name]["failed"] == 2
    assert [d["status"] for d in sink.deliveries] == ["failed", "failed"]


def test_circuit_breaker_stops_hammering_a_dead_endpoint() -> None:
    sink = WebhookSink("http://127.0.0.1:9/hook", secret=SECRET, retries=1, timeout_s=1, breaker_after=2,
                       breaker_s=60, sleep=lambda s: None)
    with pytest.raises(SinkError, match="5 of 5"):
        sink.emit([make_alert(i).to_ecs(created=0) for i in range(5)])
    statuses = [d["status"] for d in sink.deliveries]
    assert statuses == ["failed", "failed", "skipped", "skipped", "skipped"]


def test_signature_scheme_and_verifier() -> None:
    body = b'{"a":1}'
    assert sign(SECRET, 1700000000, body) == "sha256=" + __import__("hmac").new(
        SECRET, b"1700000000." + body, "sha256").hexdigest()
    good = sign(SECRET, 1700000000, body)
    verify_signature(SECRET, body, "1700000000", good, now=1700000100)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body + b" ", "1700000000", good, now=1700000100)
    with pytest.raises(SignatureError, match="replay"):
        verify_signature(SECRET, body, "1700000000", good, now=1700009999)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(b"other", body, "1700000000", good, now=1700000000)
