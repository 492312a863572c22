"""Guards wrap actions: allowlist, confidence floor, rate limit and host cap (persisted across processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trustmesh.records import Incident, IncidentId
from trustmesh.respond import ActionRequest, ApprovalQueue, Guarded, Guards, Outcome, StoredAction


class Recorder:
    """A blocking action that records what it was asked to do (the guard is what is under test)."""

    kind = "nftables"
    blocks = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
        self.calls.append(request.targets)
        return Outcome("applied", "ok", request.targets)

    def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        return Outcome("rolled_back", "ok")

    def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        return Outcome("expired", "ok")

    def spec(self) -> dict[str, Any]:
        return {"kind": "nftables"}


def _inc(conf: float = 0.95, iid: str = "inc-1") -> Incident:
    return Incident(incident_id=IncidentId(iid), version=1, first_seen=0.0, last_seen=0.0, severity=3,
                    confidence=conf, alert_ids=("a",))


def _req(targets: tuple[str, ...], conf: float = 0.95, iid: str = "inc-1") -> ActionRequest:
    return ActionRequest("act", _inc(conf, iid), "nftables", targets, {"target": "source"}, 60)


def test_allowlisted_targets_are_removed_and_all_allowlisted_is_denied() -> None:
    inner = Recorder()
    guarded = Guarded(inner, Guards(allowlist=("10.0.0.1", "10.53.0.0/24"), protect_controller=False))
    mixed = guarded.apply(_req(("10.0.0.1", "10.53.0.9", "192.0.2.7")), enforce=True)
    only_gw = guarded.apply(_req(("10.0.0.1",)), enforce=True)
    assert inner.calls == [("192.0.2.7",)]
    assert mixed.status == "applied" and "10.0.0.1 is allowlisted" in mixed.detail
    assert only_gw.status == "denied" and "allowlisted (10.0.0.1/32)" in only_gw.detail


def test_controller_itself_is_protected_by_default() -> None:
    out = Guarded(Recorder(), Guards()).apply(_req(("127.0.0.1",)), enforce=True)
    assert out.status == "denied" and "127.0.0.0/8" in out.detail


def test_flow_target_with_allowlisted_endpoint_is_denied() -> None:
    out = Guarded(Recorder(), Guards(allowlist=("10.0.0.53",))).apply(
        _req(("10.0.0.53>192.0.2.1/udp:53",)), enforce=True)
    assert out.status == "denied"


def test_low_confidence_refused_unless_configured() -> None:
    refused = Guarded(Recorder(), Guards(min_confidence=0.9)).apply(_req(("192.0.2.7",), conf=0.6),
                                                                    enforce=True)
    allowed = Guarded(Recorder(), Guards(min_confidence=0.9, allow_low_confidence=True)).apply(
        _req(("192.0.2.7",), conf=0.6), enforce=True)
    assert refused.status == "denied" and "below min_confidence" in refused.detail
    assert allowed.status == "applied"


def test_host_cap_trims_and_then_denies(tmp_path: Path) -> None:
    queue = ApprovalQueue(tmp_path)
    inner = Recorder()
    guarded = Guarded(inner, Guards(max_hosts_per_incident=2), queue)
    first = guarded.apply(_req(("192.0.2.1", "192.0.2.2", "192.0.2.3")), enforce=True)
    queue.record_action(StoredAction("act", "inc-1", "dec", "nftables", True, "applied", {}, {},
                                     first.targets,
                                     True, 0.0, None))
    second = guarded.apply(_req(("192.0.2.4",)), enforce=True)
    assert first.targets == ("192.0.2.1", "192.0.2.2") and "host cap" in first.detail
    assert second.status == "denied" and "max_hosts_per_incident=2" in second.detail


def test_rate_limit_counts_persisted_actions(tmp_path: Path) -> None:
    now = 1000.0
    queue = ApprovalQueue(tmp_path)
    for i in range(3):  # written by "another process": a second queue object on the same state dir
        ApprovalQueue(tmp_path).record_action(StoredAction(f"a{i}", f"inc-{i}", "d", "nftables", True,
                                                           "applied",
                                                           {}, {}, (f"192.0.2.{i}",), True, now - 10, None))
    guarded = Guarded(Recorder(), Guards(max_blocks_per_minute=3), queue, clock=lambda: now)
    out = guarded.apply(_req(("198.51.100.1",), iid="inc-9"), enforce=True)
    later = Guarded(Recorder(), Guards(max_blocks_per_minute=3), queue, clock=lambda: now + 61).apply(
        _req(("198.51.100.1",), iid="inc-9"), enforce=True)
    assert out.status == "denied" and "rate limit" in out.detail
    assert later.status == "applied"


def test_non_blocking_actions_are_not_limited() -> None:
    class Note(Recorder):
        kind, blocks = "notify", False

    out = Guarded(Note(), Guards(min_confidence=0.99)).apply(_req((), conf=0.1), enforce=True)
    assert out.status == "applied"


def test_guard_settings_checked_and_round_trip() -> None:
    with pytest.raises(ValueError, match="allowlist entry 'gateway'"):
        Guards(allowlist=("gateway",))
    with pytest.raises(ValueError, match="max_hosts_per_incident must be >= 1"):
        Guards(max_hosts_per_incident=0)
    g = Guards(allowlist=("10.0.0.1",), max_blocks_per_minute=5)
    assert Guards.from_dict(g.to_dict()) == g
