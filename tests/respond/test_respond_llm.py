"""LLM triage against a local server that speaks POST /v1/chat/completions."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from respond_fakes import ChatServer

from trustmesh.records import Incident, IncidentId
from trustmesh.respond import LLMTriage

INC = Incident(incident_id=IncidentId("inc-7"), version=1, first_seen=0.0, last_seen=0.0, severity=3,
               confidence=0.95, alert_ids=("a1",), source_ips=("192.0.2.7",), technique_id="T1046")
ALLOWED = [{"id": "block#0", "type": "nftables"}, {"id": "block#1", "type": "notify"}]


def _answer(doc: Any) -> ChatServer:
    return ChatServer(lambda _req: doc if isinstance(doc, str) else json.dumps(doc))


def test_valid_answer_is_accepted_and_request_follows_the_protocol() -> None:
    with _answer({"actions": ["block#1"], "rationale": "notify only", "confidence": 0.7}) as server:
        proposal = LLMTriage(server.url, "test-model", timeout=5).triage(INC, ALLOWED)
    assert proposal.status == "accepted", proposal.reason
    assert proposal.proposed_actions == ("block#1",) and proposal.rationale == "notify only"
    assert server.paths == ["/v1/chat/completions"]
    request = server.requests[0]
    assert request["model"] == "test-model"
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    user = json.loads(request["messages"][1]["content"])
    assert user["incident"]["incident_id"] == "inc-7"
    assert [a["id"] for a in user["allowed_steps"]] == ["block#0", "block#1"]
    assert proposal.response_sha256 is not None and len(proposal.response_sha256) == 64


@pytest.mark.parametrize(("content", "reason"), [
    ("I think you should block it.", "not JSON"),
    ('```json\n{"actions": []}\n```', "not JSON"),
    (json.dumps({"actions": "block#0"}), "schema"),
    (json.dumps({"actions": ["block#0"], "extra": 1}), "schema"),
    (json.dumps({"actions": ["block#0"], "confidence": 3}), "schema"),
    (json.dumps({"actions": ["shell#0"]}), "outside the allowlist: shell#0"),
    (json.dumps({"actions": ["block#0", "block#0"]}), "repeats"),
])
def test_bad_answers_are_rejected_with_reason(content: str, reason: str) -> None:
    with _answer(content) as server:
        proposal = LLMTriage(server.url + "/v1", "m", timeout=5).triage(INC, ALLOWED)
    assert proposal.status == "rejected"
    assert reason in proposal.reason


def test_broken_envelope_is_rejected() -> None:
    with ChatServer(lambda _r: "", raw=b'{"choices": []}') as server:
        proposal = LLMTriage(server.url, "m").triage(INC, ALLOWED)
    assert proposal.status == "rejected" and "not a chat-completions response" in proposal.reason


def test_timeout_is_rejected() -> None:
    with ChatServer(lambda _r: '{"actions": []}', delay_s=1.5) as server:
        proposal = LLMTriage(server.url, "m", timeout=0.3).triage(INC, ALLOWED)
    assert proposal.status == "rejected" and "timed out" in proposal.reason


def test_unreachable_is_rejected() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proposal = LLMTriage(f"http://127.0.0.1:{port}", "m", timeout=2).triage(INC, ALLOWED)
    assert proposal.status == "rejected" and "unreachable" in proposal.reason


def test_http_error_is_rejected() -> None:
    with _answer("{}") as server:
        proposal = LLMTriage(server.url + "/wrong/chat/completions", "m").triage(INC, ALLOWED)
    assert proposal.status == "rejected" and "HTTP 404" in proposal.reason


def test_arguments_checked_early() -> None:
    with pytest.raises(ValueError, match="url must be an http"):
        LLMTriage("ftp://x", "m")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        LLMTriage("http://x", "m", timeout=0)
