"""Real containment: the nftables action drops an attacker inside a gateway namespace.

The network is three namespaces joined by veth pairs (see netns.py); the action runs
``ip netns exec GW nft ...`` so the host's own ruleset is never touched.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
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


class _Live:
    """A live capture on lo read in a thread until ``want`` flows came or ``stop`` (always bounded).

    The reader closes the capture itself (a generator cannot be closed from another thread while it
    waits); ``stop`` wakes it with a connection to a closed port the filter also matches (its RST is
    exported at once).
    """

    def __init__(self, bpf: str, want: int, **kw: object) -> None:
        import socket
        import threading

        from trustmesh.flows import iter_interface

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self._wake_port = s.getsockname()[1]  # closed once the block ends
        self.got: list[tuple[float, pd.DataFrame]] = []
        self._stop = threading.Event()
        self._flows = iter_interface("lo", 10, bpf_filter=f"({bpf}) or tcp port {self._wake_port}",
                                     idle_timeout=60, active_timeout=120, **kw)  # type: ignore[arg-type]
        self._want = want
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        n = 0
        try:
            for batch in self._flows:
                batch = batch[batch["dst_port"] != self._wake_port]
                if len(batch):
                    self.got.append((time.monotonic(), batch))
                n += len(batch)
                if n >= self._want or self._stop.is_set():
                    return
        finally:
            self._flows.close()

    def finish(self, timeout: float = 20.0) -> None:
        import socket

        self._reader.join(timeout)
        self._stop.set()
        for _ in range(10):
            if not self._reader.is_alive():
                return
            try:
                socket.create_connection(("127.0.0.1", self._wake_port), timeout=1).close()
            except OSError:
                pass
            self._reader.join(1.0)


def _needs_capture() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root (CAP_NET_RAW)")


def test_a_closed_connection_is_exported_at_its_last_ack_not_after_the_idle_timeout() -> None:
    # Arrange: a server on lo that answers and closes; the capture's idle timeout is 60 s
    import socket
    import threading

    _needs_capture()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def answer() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"ok")
        conn.recv(16)  # wait for the client's FIN, then close: a two-sided FIN close
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    live = _Live(f"tcp port {port}", 1)
    time.sleep(3.0)  # the meter is capturing

    # Act
    sent = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
        assert c.recv(2) == b"ok"
        c.shutdown(socket.SHUT_WR)
        c.recv(16)
    live.finish()
    srv.close()
    got = live.got

    # Assert: one whole connection (handshake to close), exported long before the idle timeout
    assert got, "the closed connection was not exported within 20 s (idle timeout is 60 s)"
    at, batch = got[0]
    row = batch.iloc[0]
    assert int(row["dst_port"]) == port and row["conn_state"] == "SF", batch.T
    assert row["src_pkts"] + row["dst_pkts"] >= 7  # SYN, SYN/ACK, ACK, data, ACK, FIN+FIN, last ACK
    assert at - sent < 10


def test_a_long_flow_is_exported_in_parts_of_early_packets_that_add_up() -> None:
    # Arrange: a UDP receiver on lo; 1,200 datagrams of 64 bytes from one socket
    import socket

    _needs_capture()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    live = _Live(f"udp port {port}", 2, early_packets=500)
    time.sleep(3.0)

    # Act
    sent = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for _ in range(1200):
            tx.sendto(b"x" * 64, ("127.0.0.1", port))
    live.finish()
    rx.close()
    got = live.got

    # Assert: two parts of exactly 500 packets each arrived early, same 5-tuple, distinct uids, and
    # their bytes are the datagrams' (nothing counted twice)
    parts = pd.concat([b for _, b in got], ignore_index=True)
    assert len(parts) >= 2, parts
    first, second = parts.iloc[0], parts.iloc[1]
    assert (first["src_pkts"], second["src_pkts"]) == (500, 500)
    assert (first["src_bytes"], second["src_bytes"]) == (500 * 64, 500 * 64)
    assert first["uid"] != second["uid"] and first["ts"] <= second["ts"]
    assert (first["src_port"], first["dst_port"]) == (second["src_port"], second["dst_port"])
    assert got[1][0] - sent < 10
