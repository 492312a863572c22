"""Actions against real endpoints on 127.0.0.1: webhook (http.server), MQTT (a 3.1.1 broker), syslog (UDP)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from respond_fakes import HTTPReceiver, MiniBroker

from trustmesh.records import Incident, IncidentId
from trustmesh.respond import (
    ActionRequest,
    NftablesAction,
    NotifyAction,
    QuarantineAction,
    WebhookAction,
    action_from_spec,
)

INC = Incident(incident_id=IncidentId("inc-1"), version=2, first_seen=0.0, last_seen=1.0, severity=3,
               confidence=0.95, alert_ids=("a1", "a2"), source_ips=("10.203.9.9",),
               destination_ips=("10.0.0.5",),
               flows=(("10.203.9.9", "10.0.0.5", "tcp", 22),), technique_id="T1110")


def _req(action: str, targets: tuple[str, ...] = (), **params: object) -> ActionRequest:
    return ActionRequest(action_id="act-1", incident=INC, action=action, targets=targets, params=dict(params),
                         ttl_s=60, playbook="pb", step=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- webhook -------------------------------------------------------------------------------------
def test_webhook_posts_incident_json() -> None:
    with HTTPReceiver() as server:
        out = WebhookAction(server.url + "/hook", headers={"X-Token": "s3cret"}).apply(_req("webhook"),
                                                                                       enforce=True)
    assert out.status == "applied", out.detail
    assert server.received[0]["incident"]["incident_id"] == "inc-1"
    assert server.received[0]["incident"]["alert_ids"] == ["a1", "a2"]
    assert server.headers[0]["Content-Type"] == "application/json"
    assert server.headers[0]["X-Token"] == "s3cret"
    assert "s3cret" not in json.dumps(WebhookAction(server.url, headers={"X-Token": "s3cret"}).spec())


def test_webhook_dry_run_sends_nothing() -> None:
    with HTTPReceiver() as server:
        out = WebhookAction(server.url).apply(_req("webhook"), enforce=False)
    assert out.status == "dry_run" and server.received == []


def test_webhook_http_error_and_unreachable_are_failures_not_exceptions() -> None:
    with HTTPReceiver(status=500) as server:
        out = WebhookAction(server.url).apply(_req("webhook"), enforce=True)
    assert (out.status, "HTTP 500" in out.detail) == ("failed", True)
    dead = f"http://127.0.0.1:{_free_port()}/x"
    out = WebhookAction(dead, timeout_s=2).apply(_req("webhook"), enforce=True)
    assert out.status == "failed" and "unreachable" in out.detail


def test_webhook_url_checked_early() -> None:
    with pytest.raises(ValueError, match="url must be an http"):
        WebhookAction("file:///etc/passwd")


# -- quarantine over MQTT ------------------------------------------------------------------------
def test_quarantine_publishes_isolate_over_mqtt_311_and_release_on_rollback() -> None:
    with MiniBroker() as broker:
        action = QuarantineAction("127.0.0.1", broker.port, "site/quarantine", client_id="tm-test")
        out = action.apply(_req("quarantine", ("10.0.0.5",)), enforce=True)
        back = action.rollback(out.state, enforce=True)
    assert out.status == "applied", out.detail
    assert back.status == "rolled_back", back.detail
    assert broker.connects[0] == {"protocol": "MQTT", "level": 4, "client_id": "tm-test"}  # 3.1.1
    (topic, payload, qos), (topic2, payload2, _) = broker.published
    assert (topic, qos) == ("site/quarantine/10.0.0.5", 1)
    msg = json.loads(payload)
    assert (msg["command"], msg["device"], msg["incident_id"], msg["ttl_s"]) == ("isolate", "10.0.0.5",
                                                                                 "inc-1", 60)
    assert (topic2, json.loads(payload2)["command"]) == (topic, "release")


@pytest.mark.skipif(shutil.which("mosquitto") is None,
                    reason="mosquitto is not installed (the in-test broker covers MQTT)")
def test_quarantine_against_real_mosquitto(tmp_path: Path) -> None:
    port = _free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = QuarantineAction("127.0.0.1", port).apply(_req("quarantine", ("10.0.0.5",)), enforce=True)
        assert out.status == "applied", out.detail
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_quarantine_unreachable_broker_is_a_clear_failure() -> None:
    out = QuarantineAction("127.0.0.1", _free_port(), timeout_s=1).apply(_req("quarantine", ("10.0.0.5",)),
                                                                        enforce=True)
    assert out.status == "failed"
    assert "MQTT broker 127.0.0.1" in out.detail and "unreachable" in out.detail


def test_quarantine_dry_run_lists_messages_and_isolation_commands() -> None:
    action = QuarantineAction(isolation=NftablesAction("trustmesh", "quarantine", netns="gw1"))
    out = action.apply(_req("quarantine", ("10.0.0.5",)), enforce=False)
    assert out.status == "dry_run"
    assert out.commands[0] == ("ip netns exec gw1 nft add element inet trustmesh quarantine "
                               "{ 10.0.0.5 timeout 60s }")
    assert out.commands[1].startswith("mqtt publish trustmesh/quarantine/10.0.0.5 ")


# -- notify --------------------------------------------------------------------------------------
def test_notify_stdout_formats_incident_fields(capsys: pytest.CaptureFixture[str]) -> None:
    out = NotifyAction("stdout").apply(_req("notify", message="{incident_id} {technique_id} sev {severity}"),
                                       enforce=True)
    assert out.status == "applied"
    assert capsys.readouterr().out == "trustmesh: inc-1 T1110 sev 3\n"


def test_notify_syslog_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        action = NotifyAction("syslog", syslog_address=("127.0.0.1", sock.getsockname()[1]))
        out = action.apply(_req("notify", message="hello {incident_id}"), enforce=True)
        data = sock.recv(4096)
    assert out.status == "applied"
    assert data.startswith(b"<12>") and b"trustmesh: hello inc-1" in data  # facility user(1)*8 + warning(4)


def test_notify_bad_template_fails_cleanly() -> None:
    out = NotifyAction().apply(_req("notify", message="{no_such_field}"), enforce=True)
    assert out.status == "failed" and "no_such_field" in out.detail


# -- nftables without touching the host -----------------------------------------------------------
def test_nftables_dry_run_commands_and_flow_elements() -> None:
    action = NftablesAction("tm", "bl", netns="gw0")
    addr = action.apply(_req("nftables", ("10.203.9.9", "fd00::9"), verdict="reject"), enforce=False)
    flow = action.apply(_req("nftables", ("10.203.9.9>10.0.0.5/tcp:22",), target="flow"), enforce=False)
    assert addr.status == "dry_run"
    assert addr.commands == ("ip netns exec gw0 nft add element inet tm bl_rej { 10.203.9.9 timeout 60s }",
                             "ip netns exec gw0 nft add element inet tm bl6_rej { fd00::9 timeout 60s }")
    assert flow.commands == ("ip netns exec gw0 nft add element inet tm bl_flow "
                             "{ 10.203.9.9 . 10.0.0.5 . tcp . 22 timeout 60s }",)
    assert "flags timeout" in action.ruleset()


def test_nftables_rejects_injection_and_bad_names() -> None:
    action = NftablesAction(netns="gw0")
    out = action.apply(_req("nftables", ("10.0.0.1 } ; flush ruleset ; {",)), enforce=False)
    assert out.status == "failed" and "not an IP address" in out.detail
    with pytest.raises(ValueError, match="table must match"):
        NftablesAction(table="bad name")
    with pytest.raises(ValueError, match="netns must match"):
        NftablesAction(netns="../x")


def test_nftables_missing_binary_is_a_clear_failure() -> None:
    action = NftablesAction(nft="/nonexistent/nft-binary")
    out = action.apply(_req("nftables", ("10.203.9.9",)), enforce=True)
    assert out.status == "failed"
    assert "/nonexistent/nft-binary" in out.detail and "not installed" in out.detail


def test_nftables_failure_in_missing_namespace_is_reported() -> None:
    if shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("ip/nft not installed")
    out = NftablesAction(netns="tm-no-such-ns-7f3a").apply(_req("nftables", ("10.203.9.9",)), enforce=True)
    assert out.status == "failed"
    assert "tm-no-such-ns-7f3a" in out.detail or "nft" in out.detail


def test_specs_round_trip() -> None:
    actions = [NftablesAction("t", "s", netns="n"), QuarantineAction(isolation=NftablesAction("t", "q")),
               WebhookAction("http://127.0.0.1:1/x"), NotifyAction("syslog", syslog_address=("127.0.0.1",
                                                                                             514))]
    for action in actions:
        assert action_from_spec(action.spec()).spec() == action.spec()


def test_notify_syslog_missing_socket_is_a_clear_failure(tmp_path: Path) -> None:
    out = NotifyAction("syslog", syslog_address=str(tmp_path / "no-log-socket")).apply(
        _req("notify", message="x"), enforce=True)
    assert out.status == "failed" and "syslog unavailable" in out.detail
