"""Real containment: the nftables action drops an attacker inside a gateway namespace.

The network is three namespaces joined by veth pairs (see netns.py); the action runs
``ip netns exec GW nft ...`` so the host's own ruleset is never touched.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from netns import ATK_IP, DEV_IP, GW_ATK_IP, GW_DEV_IP, PEER_IP, Testbed, testbed  # noqa: F401

from trustmesh.records import Alert, FlowId, ModelId
from trustmesh.respond import (
    ActionRequest,
    Correlator,
    Guards,
    NftablesAction,
    PlaybookSet,
    QuarantineAction,
    Responder,
)

pytestmark = pytest.mark.integration

PLAYBOOK = """
name: block-scanner
match: {technique: [T1046], min_confidence: 0.8}
actions:
  - type: nftables
    params: {target: source, verdict: %(verdict)s}
    ttl_s: %(ttl)d
"""


def _scan_alerts(n: int = 3) -> list[Alert]:
    return [Alert(alert_id=f"al-{i}", timestamp=1000.0 + i, flow_id=FlowId(f"f{i}"), model_id=ModelId("gbdt"),
                  score=0.97, threshold=0.5, source_ip=ATK_IP, source_port=40000 + i, destination_ip=DEV_IP,
                  destination_port=20 + i, transport="tcp", predicted_class="PortScan", severity=3)
            for i in range(n)]


def _responder(bed: Testbed, tmp_path: Path, *, verdict: str = "drop", ttl: int = 2) -> tuple[Responder,
                                                                                              NftablesAction]:
    text = PLAYBOOK % {"verdict": verdict, "ttl": ttl}
    action = NftablesAction(table="tmtest", set="blocklist", netns=bed.gw)
    guards = Guards(allowlist=(f"{GW_DEV_IP}/32", f"{GW_ATK_IP}/32"))
    return Responder(PlaybookSet.from_yaml(text), {"nftables": action}, guards, tmp_path / "state",
                     enforce=True), action


def _incident_for(n: int = 3):  # type: ignore[no-untyped-def]
    corr = Correlator(window_s=60)
    inc = None
    for alert in _scan_alerts(n):
        inc = corr.add(alert)
    assert inc is not None
    return inc


def test_drop_attacker_keep_device_and_expire_by_ttl(testbed: Testbed, tmp_path: Path) -> None:
    # Arrange: servers on the device and on a benign peer; both reachable before any block
    bed = testbed
    bed.serve(bed.dev, DEV_IP, 8080)
    bed.serve(bed.gw, GW_ATK_IP, 8081)
    bed.serve(bed.atk, PEER_IP, 8080)
    assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP) == "OK"
    assert bed.connect(bed.dev, PEER_IP, 8080) == "OK"
    ttl = 4  # short, but long enough for the checks below on a loaded 2-core machine
    responder, action = _responder(bed, tmp_path, ttl=ttl)
    incident = _incident_for()
    assert incident.technique_id == "T1046"

    # Act
    records = responder.handle(incident)
    blocked_at = time.monotonic()

    # Assert: the decision and result are recorded and reference the incident/alerts
    kinds = [(r.record_type, r.to_dict()["status"]) for r in records]
    assert kinds == [("decision", "taken"), ("action_result", "applied")], records
    assert records[0].to_dict()["alert_ids"] == ["al-0", "al-1", "al-2"]
    assert any(f"timeout {ttl}s" in c for c in records[1].to_dict()["commands"])
    assert ATK_IP in action.list_elements()
    # the attacker is cut off (forwarded to the device and to the gateway itself) ...
    assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP, timeout=0.5).startswith("FAIL")
    assert bed.connect(bed.atk, GW_ATK_IP, 8081, source=ATK_IP, timeout=0.5).startswith("FAIL")
    # ... while the device's benign traffic still flows through the gateway
    assert bed.connect(bed.dev, PEER_IP, 8080) == "OK"
    assert time.monotonic() - blocked_at < ttl, "checks took longer than the TTL; the test proves nothing"

    # Assert: the kernel removes the element when the TTL ends and traffic flows again
    assert bed.wait_for(lambda: ATK_IP not in action.list_elements(), timeout=ttl + 4.0)
    assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP) == "OK"
    expired = responder.expire()
    assert [(r.operation, r.status) for r in expired] == [("expire", "expired")]  # type: ignore[union-attr]


def test_rollback_removes_block_early_and_reject_refuses(testbed: Testbed, tmp_path: Path) -> None:
    # Arrange
    bed = testbed
    bed.serve(bed.dev, DEV_IP, 8080)
    responder, action = _responder(bed, tmp_path, verdict="reject", ttl=600)
    incident = _incident_for()

    # Act
    applied = responder.handle(incident)

    # Assert: reject answers the attacker with a refusal (TCP RST) instead of silence
    assert applied[-1].to_dict()["status"] == "applied"
    assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP) == "REFUSED"
    undone = responder.rollback(incident.incident_id)
    assert [r.to_dict()["status"] for r in undone] == ["rolled_back"]
    assert ATK_IP not in action.list_elements()
    assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP) == "OK"


def test_allowlisted_gateway_is_never_blocked(testbed: Testbed, tmp_path: Path) -> None:
    # Arrange: an incident whose "attacker" is the gateway address itself
    bed = testbed
    responder, action = _responder(bed, tmp_path)
    alert = Alert(alert_id="gw-1", timestamp=1.0, flow_id=FlowId("g"), model_id=ModelId("m"), score=0.99,
                  threshold=0.5, source_ip=GW_DEV_IP, destination_ip=DEV_IP, destination_port=22,
                  transport="tcp", predicted_class="PortScan", severity=3)

    # Act
    records = responder.handle(Correlator().add(alert))

    # Assert: denied with the reason, and nothing reached the kernel
    assert [r.to_dict()["status"] for r in records] == ["denied"]
    assert "allowlisted" in records[0].to_dict()["reason"]
    assert bed.exec(bed.gw, "nft", "list", "table", "inet", action.table, check=False).returncode != 0


def test_quarantine_isolates_device_even_when_mqtt_is_down(testbed: Testbed, tmp_path: Path) -> None:
    # Arrange: the device talks to a peer through the gateway; no MQTT broker listens on port 1;
    # a blocklist action already made the shared table (the quarantine set must still be created)
    bed = testbed
    bed.serve(bed.atk, PEER_IP, 8080)
    assert bed.connect(bed.dev, PEER_IP, 8080) == "OK"
    blocklist = NftablesAction(table="tmtest", set="blocklist", netns=bed.gw)
    other = Correlator().add(_scan_alerts(1)[0])
    assert blocklist.apply(ActionRequest("act-b", other, "nftables", ("192.0.2.1",), {}, 60),
                           enforce=True).status == "applied"
    isolation = NftablesAction(table="tmtest", set="quarantine", netns=bed.gw)
    action = QuarantineAction("127.0.0.1", 1, isolation=isolation, timeout_s=1)
    inc = Correlator().add(Alert(alert_id="c2-1", timestamp=1.0, flow_id=FlowId("c"), model_id=ModelId("m"),
                                 score=0.99, threshold=0.5, source_ip=DEV_IP, destination_ip=PEER_IP,
                                 destination_port=8080, transport="tcp", predicted_class="Bot", severity=4))

    # Act
    out = action.apply(ActionRequest("act-q", inc, "quarantine", (DEV_IP,), {"target": "source"}, 60),
                       enforce=True)

    # Assert: isolated (kept as applied so it can be rolled back), and the MQTT failure is named
    assert out.status == "applied" and "gateways were not told" in out.detail and "unreachable" in out.detail
    assert DEV_IP in isolation.list_elements()
    assert bed.connect(bed.dev, PEER_IP, 8080, timeout=0.5).startswith("FAIL")
    undone = action.rollback(out.state, enforce=True)
    assert undone.status == "rolled_back" and "gateways were not told" in undone.detail
    assert DEV_IP not in isolation.list_elements()
    assert bed.connect(bed.dev, PEER_IP, 8080) == "OK"


@pytest.fixture(scope="module")
def policy_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pcap model saved with its training record (its corroborated alert policy)."""
    from trustmesh.detect import default_pcap_model, save_model

    detector, manifest = default_pcap_model(data_dir)
    path = tmp_path_factory.mktemp("ttc-model") / "default.model"
    save_model(detector, path, data_digest=manifest.data_digest, training=dict(manifest.training))
    return path


@pytest.mark.slow
def test_live_gateway_blocks_every_attacker_in_sequence_and_no_benign_host(policy_model: Path,
                                                                            tmp_path: Path) -> None:
    # Arrange: the containment bench's set-up: `trustmesh run --enforce` in the gateway namespace on
    # its attacker-facing interface, device telemetry and a benign client on the attackers' segment
    from trustmesh.testbed import BENIGN_IP, measure_containment, netns_unavailable

    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)

    # Act: three attackers, one after another, each scanning the device from a fresh address
    doc = measure_containment(str(policy_model), 3, str(tmp_path / "ttc"), wait_s=20.0)

    # Assert: each one is in the drop set (generous bound: 20 s) and its probes then fail; the benign
    # hosts and the gateway's own addresses never entered the set
    runs = doc["per_run"]
    assert isinstance(runs, list) and [r["attacker"] for r in runs] == ["10.203.2.100", "10.203.2.101",
                                                                       "10.203.2.102"]
    assert all(r["drop_active_s"] is not None for r in runs), (runs, (tmp_path / "ttc" / "gw.log").read_text()[-3000:])
    assert all(r["probes_failing_s"] is not None for r in runs), runs
    assert doc["contained"] == 3
    assert doc["benign_blocked"] == [], doc["blocked_addresses"]
    assert {PEER_IP, BENIGN_IP, DEV_IP}.isdisjoint(doc["blocked_addresses"])  # type: ignore[arg-type]
