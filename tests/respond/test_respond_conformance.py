"""Conformance checks every action passes (river's checks/ pattern), plus correlator properties."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustmesh.records import Alert, FlowId, Incident, IncidentId, ModelId
from trustmesh.respond import (
    Action,
    ActionRequest,
    Correlator,
    Guarded,
    Guards,
    NftablesAction,
    NotifyAction,
    QuarantineAction,
    WebhookAction,
    action_from_spec,
)

INC = Incident(incident_id=IncidentId("inc-c"), version=1, first_seen=0.0, last_seen=0.0, severity=3,
               confidence=0.95, alert_ids=("a",), source_ips=("192.0.2.9",), destination_ips=("10.0.0.5",))

FACTORIES: dict[str, Callable[[], Action]] = {
    "nftables": lambda: NftablesAction("tmconf", "bl", netns="tm-conformance-never-created"),
    "quarantine": lambda: QuarantineAction("127.0.0.1", 1, isolation=NftablesAction("tmconf", "q", netns="x"),
                                           clock=lambda: 1700000000.0),
    "webhook": lambda: WebhookAction("http://127.0.0.1:1/never"),
    "notify": lambda: NotifyAction("stdout"),
}
VALID = {"applied", "dry_run", "failed", "denied", "noop", "rolled_back", "expired"}


def _request(kind: str) -> ActionRequest:
    targets = ("192.0.2.9",) if kind in {"nftables", "quarantine"} else ()
    return ActionRequest("act-c", INC, kind, targets, {"target": "source", "message": "m {incident_id}"}, 30,
                         "pb", 0)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_dry_run_is_default_safe_and_deterministic(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    action = FACTORIES[kind]()
    request = _request(kind)
    before = copy.deepcopy(request.params)
    first = action.apply(request, enforce=False)
    second = action.apply(request, enforce=False)
    assert first.status == "dry_run" and first.status in VALID
    assert first.commands == second.commands and first.commands  # says exactly what it would do
    assert request.params == before  # input not mutated
    assert capsys.readouterr().out == ""  # dry-run writes nothing, not even to stdout


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_protocol_spec_round_trip_and_undo(kind: str) -> None:
    action = FACTORIES[kind]()
    assert isinstance(action, Action) and action.kind == kind
    rebuilt = action_from_spec(action.spec())
    assert rebuilt.spec() == action.spec() and rebuilt.blocks == action.blocks
    state = action.apply(_request(kind), enforce=False).state
    for out in (action.rollback(state, enforce=False), action.expire(state, enforce=False)):
        assert out.status in VALID


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_guarded_wrapper_is_an_action_too(kind: str) -> None:
    wrapped: Any = Guarded(FACTORIES[kind](), Guards())
    assert isinstance(wrapped, Action)
    assert wrapped.apply(_request(kind), enforce=False).status == "dry_run"


_alerts = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(["PortScan", "DDoS", "Bot", None]),
              st.floats(0, 1000, allow_nan=False), st.integers(1, 65535)),
    min_size=1, max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(_alerts)
def test_correlator_properties(rows: list[tuple[int, int, str | None, float, int]]) -> None:
    corr = Correlator(window_s=100, max_alert_ids=10)
    latest: dict[str, Incident] = {}
    owner: dict[str, str] = {}
    for i, (src, dst, cls, ts, port) in enumerate(sorted(rows, key=lambda r: r[3])):
        alert = Alert(alert_id=f"a{i}", timestamp=ts, flow_id=FlowId(f"f{i}"), model_id=ModelId("m"), score=0.9,
                      threshold=0.5, source_ip=f"192.0.2.{src}", destination_ip=f"10.0.0.{dst}",
                      destination_port=port, transport="tcp", predicted_class=cls, severity=2)
        inc = corr.add(alert)
        prev = latest.get(inc.incident_id)
        assert inc.version == (prev.version + 1 if prev else 1)  # versions grow by one
        assert inc.first_seen <= ts <= inc.last_seen
        latest[inc.incident_id] = inc
        owner[alert.alert_id] = inc.incident_id
    assert sum(i.alert_count for i in latest.values()) == len(rows)  # every alert in exactly one incident
    for inc in latest.values():
        assert inc.alert_ids == tuple(a for a, o in owner.items() if o == inc.incident_id)[:10]
        assert Incident.from_dict(inc.to_dict()) == inc
