"""Responder: incident -> playbook/LLM -> guarded actions -> records, approvals across processes, TTLs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from respond_fakes import ChatServer, HTTPReceiver

from trustmesh.records import ActionResult, Alert, Decision, FlowId, Incident, ModelId, TriageProposal
from trustmesh.respond import (
    DEFAULT_PLAYBOOKS,
    ActionRequest,
    ApprovalQueue,
    Correlator,
    Guards,
    LLMTriage,
    NftablesAction,
    NotifyAction,
    Outcome,
    PlaybookSet,
    Responder,
    WebhookAction,
)

TRUSTMESH = str(Path(sys.executable).with_name("trustmesh"))

BOOKS = """
playbooks:
  - name: scan
    match: {technique: [T1046]}
    actions:
      - {type: nftables, params: {target: source}, ttl_s: 60}
      - {type: notify}
  - name: c2
    match: {technique: [T1071]}
    actions:
      - {type: nftables, params: {target: destination}, ttl_s: 120, approval: true}
      - {type: webhook}
  - name: dos
    match: {technique: [T1498]}
    actions:
      - {type: nftables, params: {target: source}, ttl_s: 30}
"""


def _alert(i: int, src: str = "192.0.2.66", dst: str = "10.0.0.5", cls: str = "PortScan",
           score: float = 0.95) -> Alert:
    return Alert(alert_id=f"a{i}", timestamp=float(i), flow_id=FlowId(f"f{i}"), model_id=ModelId("m"),
                 score=score, threshold=0.5, source_ip=src, destination_ip=dst, destination_port=22,
                 transport="tcp", predicted_class=cls, severity=3)


def _responder(tmp_path: Path, **kw: Any) -> Responder:
    actions = {"nftables": NftablesAction("tm", "bl", netns="tm-unit-never-created"),
               "notify": NotifyAction("log"),
               "webhook": WebhookAction("http://127.0.0.1:9/never-called-in-dry-run")}
    actions.update(kw.pop("actions", {}))
    return Responder(PlaybookSet.from_yaml(BOOKS), actions, kw.pop("guards", Guards(allowlist=("10.0.0.1",))),
                     tmp_path / "state", **kw)


def _statuses(records: list[Any]) -> list[tuple[str, str]]:
    return [(r.record_type, r.to_dict()["status"]) for r in records]


def test_dry_run_decisions_and_results_reference_incident_and_alerts(tmp_path: Path) -> None:
    # Arrange
    responder = _responder(tmp_path)
    inc = Correlator().add(_alert(1))

    # Act
    records = responder.handle(inc)

    # Assert
    assert _statuses(records) == [("decision", "taken"), ("action_result", "dry_run"),
                                  ("decision", "taken"), ("action_result", "dry_run")]
    decision, result = records[0], records[1]
    assert isinstance(decision, Decision) and isinstance(result, ActionResult)
    assert (decision.incident_id, decision.alert_ids, decision.enforce) == (inc.incident_id, ("a1",), False)
    assert result.decision_id == decision.decision_id and result.incident_id == inc.incident_id
    assert result.commands == ("ip netns exec tm-unit-never-created nft add element inet tm bl "
                               "{ 192.0.2.66 timeout 60s }",)
    assert [d for _, _, d in responder.queue.outbox()] == [r.to_dict() for r in records]
    json.dumps([r.to_dict() for r in records])  # ledger-ready: plain JSON


def test_growing_incident_only_acts_on_new_attackers(tmp_path: Path) -> None:
    responder = _responder(tmp_path)
    corr = Correlator()
    first = responder.handle(corr.add(_alert(1, src="192.0.2.1", cls="DDoS")))
    again = responder.handle(corr.add(_alert(2, src="192.0.2.1", cls="DDoS")))
    more = responder.handle(corr.add(_alert(3, src="192.0.2.2", cls="DDoS")))
    assert len(first) == 2 and again == []
    assert more[0].to_dict()["targets"] == ["192.0.2.2"]


def test_no_matching_playbook_is_recorded_once(tmp_path: Path) -> None:
    responder = _responder(tmp_path)
    corr = Correlator()
    first = responder.handle(corr.add(_alert(1, cls="SSH-Patator")))
    second = responder.handle(corr.add(_alert(2, cls="SSH-Patator")))
    assert _statuses(first) == [("decision", "skipped")] and second == []
    assert "no playbook" in first[0].to_dict()["reason"]


def test_guard_denial_is_a_recorded_decision(tmp_path: Path) -> None:
    responder = _responder(tmp_path, guards=Guards(min_confidence=0.99))
    records = responder.handle(Correlator().add(_alert(1, score=0.9)))
    assert _statuses(records)[0] == ("decision", "denied")
    assert "below min_confidence" in records[0].to_dict()["reason"]


def test_missing_action_and_crashing_action_are_recorded_not_raised(tmp_path: Path) -> None:
    class Boom:
        kind, blocks = "notify", False

        def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
            raise RuntimeError("plug-in bug")

        def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
            raise RuntimeError("plug-in bug")

        def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
            raise RuntimeError("plug-in bug")

        def spec(self) -> dict[str, Any]:
            return {"kind": "notify"}

    responder = Responder(PlaybookSet.from_yaml(BOOKS), {"notify": Boom()}, Guards(), tmp_path / "s")
    records = responder.handle(Correlator().add(_alert(1)))
    assert _statuses(records) == [("decision", "failed"), ("decision", "taken"), ("action_result", "failed")]
    assert "no 'nftables' action is configured" in records[0].to_dict()["reason"]
    assert "RuntimeError: plug-in bug" in records[2].to_dict()["detail"]


def test_approval_queue_persists_and_cli_approves_in_another_process(tmp_path: Path) -> None:
    # Arrange: a C2 incident whose block step needs approval
    responder = _responder(tmp_path)
    inc = Correlator().add(_alert(1, src="10.0.0.9", dst="203.0.113.5", cls="Bot"))
    records = responder.handle(inc)
    assert _statuses(records)[0] == ("decision", "pending_approval")
    approval_id = records[0].to_dict()["approval_id"]
    state = str(tmp_path / "state")

    # Act: list and approve from separate processes
    listed = subprocess.run([TRUSTMESH, "incidents", "list", "--state", state, "--json"], capture_output=True,
                            text=True, check=True)
    approved = subprocess.run([TRUSTMESH, "incidents", "approve", approval_id, "--state", state, "--json",
                               "--note", "confirmed C2"], capture_output=True, text=True, check=True)
    twice = subprocess.run([TRUSTMESH, "incidents", "approve", approval_id, "--state", state],
                           capture_output=True, text=True, check=False)

    # Assert
    assert json.loads(listed.stdout)[0]["pending_approvals"] == 1
    out = json.loads(approved.stdout)
    assert [(r["record_type"], r["status"]) for r in out] == [("decision", "taken"), ("action_result",
                                                                                      "dry_run")]
    assert out[0]["decided_by"] == "operator" and "confirmed C2" in out[0]["reason"]
    assert out[1]["targets"] == ["203.0.113.5"]
    assert twice.returncode == 2 and "already approved" in twice.stderr
    assert ApprovalQueue(state).approvals("pending") == []
    kinds = [t for _, t, _ in responder.queue.outbox(incident_id=inc.incident_id)]
    assert kinds.count("decision") == 3 and kinds.count("action_result") == 2


def test_reject_rollback_and_show_via_cli(tmp_path: Path) -> None:
    responder = _responder(tmp_path)
    inc = Correlator().add(_alert(1, src="10.0.0.9", dst="203.0.113.5", cls="Bot"))
    approval_id = responder.handle(inc)[0].to_dict()["approval_id"]
    scan = Correlator().add(_alert(2))
    responder.handle(scan)
    state = str(tmp_path / "state")

    rejected = subprocess.run([TRUSTMESH, "incidents", "reject", approval_id, "--state", state, "--json"],
                              capture_output=True, text=True, check=True)
    rolled = subprocess.run([TRUSTMESH, "incidents", "rollback", scan.incident_id, "--state", state,
                             "--json"],
                            capture_output=True, text=True, check=True)
    shown = subprocess.run([TRUSTMESH, "incidents", "show", scan.incident_id, "--state", state, "--json"],
                           capture_output=True, text=True, check=True)
    missing = subprocess.run([TRUSTMESH, "incidents", "show", "inc-nope", "--state", state],
                             capture_output=True, text=True, check=False)

    assert json.loads(rejected.stdout)[0]["status"] == "rejected"
    assert [(r["operation"], r["status"]) for r in json.loads(rolled.stdout)] == [("rollback", "dry_run"),
                                                                                  ("rollback", "noop")]
    doc = json.loads(shown.stdout)
    assert doc["incident"]["incident_id"] == scan.incident_id
    assert {a["status"] for a in doc["actions"]} == {"rolled_back"}
    assert missing.returncode == 2 and "no incident 'inc-nope'" in missing.stderr


def test_expire_records_ttl_end(tmp_path: Path) -> None:
    now = [1000.0]
    responder = _responder(tmp_path, clock=lambda: now[0])
    responder.handle(Correlator().add(_alert(1)))
    assert responder.expire() == []
    now[0] += 61
    expired = responder.expire()
    assert [(r.operation, r.status, r.action) for r in expired] == [("expire", "expired",
                                                                     "nftables")]  # type: ignore[union-attr]
    assert responder.expire() == []


def test_webhook_failure_is_recorded_and_enforce_posts(tmp_path: Path) -> None:
    with HTTPReceiver() as server:
        responder = _responder(tmp_path, enforce=True, actions={"webhook": WebhookAction(server.url)},
                               guards=Guards(min_confidence=0.99))
        records = responder.handle(Correlator().add(_alert(1, src="10.0.0.9", dst="203.0.113.5", cls="Bot")))
    assert _statuses(records) == [("decision", "pending_approval"), ("decision", "taken"),
                                  ("action_result", "applied")]
    assert server.received[0]["incident"]["predicted_class"] == "Bot"
    dead = _responder(tmp_path / "b", enforce=True,
                      actions={"webhook": WebhookAction("http://127.0.0.1:1/x")})
    failed = dead.handle(Correlator().add(_alert(1, src="10.0.0.9", dst="203.0.113.5", cls="Bot")))
    assert _statuses(failed)[-1] == ("action_result", "failed")


# -- LLM triage ------------------------------------------------------------------------------------
def _llm(server: ChatServer) -> LLMTriage:
    return LLMTriage(server.url, "test-model", timeout=5)


def test_accepted_llm_proposal_selects_steps_and_skips_the_rest(tmp_path: Path) -> None:
    with ChatServer(lambda _r: json.dumps({"rationale": "suspicious", "actions": ["scan#1"],
                                           "confidence": 0.7})) as server:
        responder = _responder(tmp_path, llm=_llm(server))
        records = responder.handle(Correlator().add(_alert(1)))
    proposal = records[0]
    assert isinstance(proposal, TriageProposal) and proposal.status == "accepted"
    assert proposal.allowed_actions == ("scan#0", "scan#1")
    assert _statuses(records[1:]) == [("decision", "skipped"), ("decision", "taken"), ("action_result",
                                                                                       "dry_run")]
    assert records[1].to_dict()["step"] == 0 and records[1].to_dict()["decided_by"] == "llm"
    assert records[2].to_dict()["proposal_id"] == proposal.proposal_id
    assert records[3].to_dict()["action"] == "notify"


def test_forbidden_llm_action_falls_back_to_playbook(tmp_path: Path) -> None:
    with ChatServer(lambda _r: json.dumps({"actions": ["scan#0", "rm -rf /"]})) as server:
        responder = _responder(tmp_path, llm=_llm(server))
        records = responder.handle(Correlator().add(_alert(1)))
    assert records[0].to_dict()["status"] == "rejected"
    assert "outside the allowlist" in records[0].to_dict()["reason"]
    assert _statuses(records[1:]) == [("decision", "taken"), ("action_result", "dry_run")] * 2
    assert {r.to_dict()["decided_by"] for r in records[1:] if r.record_type == "decision"} == {"playbook"}


def test_llm_is_asked_once_per_incident_not_per_alert(tmp_path: Path) -> None:
    with ChatServer(lambda _r: "not json at all") as server:
        responder = _responder(tmp_path, llm=_llm(server))
        corr = Correlator()
        responder.handle(corr.add(_alert(1)))
        responder.handle(corr.add(_alert(2)))
    assert len(server.requests) == 1


def test_unreachable_llm_falls_back(tmp_path: Path) -> None:
    responder = _responder(tmp_path, llm=LLMTriage("http://127.0.0.1:1", "m", timeout=2))
    records = responder.handle(Correlator().add(_alert(1)))
    assert records[0].record_type == "triage_proposal" and "unreachable" in records[0].to_dict()["reason"]
    assert _statuses(records[1:3]) == [("decision", "taken"), ("action_result", "dry_run")]


def test_playbook_validate_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nactions:\n  - type: nftables\n    params: {target: everyone}\n")
    good = subprocess.run([TRUSTMESH, "playbook", "validate", str(DEFAULT_PLAYBOOKS), "--json"],
                          capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    wrong = subprocess.run([TRUSTMESH, "playbook", "validate", str(bad)], capture_output=True, text=True,
                           check=False)
    assert good.returncode == 0 and json.loads(good.stdout)["valid"] is True
    assert wrong.returncode == 2 and f"{bad}:4:" in wrong.stderr and "params.target" in wrong.stderr


@pytest.mark.parametrize("bad", [{"nftables": NotifyAction()}])
def test_action_mapping_checked(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="actions\\['nftables'\\]"):
        Responder(PlaybookSet.from_yaml(BOOKS), bad, Guards(), tmp_path)


def test_incident_records_are_stored_for_cli(tmp_path: Path) -> None:
    responder = _responder(tmp_path)
    inc = Correlator().add(_alert(1))
    responder.handle(inc)
    assert responder.queue.incident(inc.incident_id) == inc
    assert isinstance(responder.queue.incidents()[0], Incident)


def test_low_confidence_denial_is_retried_when_confidence_rises(tmp_path: Path) -> None:
    # Arrange: an incident that starts below the confidence floor
    responder = _responder(tmp_path, guards=Guards(min_confidence=0.9), clock=lambda: 1000.0)
    corr = Correlator()

    # Act
    low = responder.handle(corr.add(_alert(1, score=0.6)))
    same = responder.handle(corr.add(_alert(2, score=0.6)))
    high = responder.handle(corr.add(_alert(3, score=0.95)))

    # Assert: denied once (not on every alert), then blocked once confidence is high enough
    assert [s for s in _statuses(low) if s[0] == "decision"][0] == ("decision", "denied")
    assert not any(r.to_dict()["action"] == "nftables" for r in same if r.record_type == "decision")
    assert _statuses(high)[:2] == [("decision", "taken"), ("action_result", "dry_run")]
