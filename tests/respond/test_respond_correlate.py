"""Correlator: grouping by attacker/victim/technique within a window, ATT&CK mapping, severity."""

from __future__ import annotations

import pytest

from trustmesh.records import Alert, FlowId, Incident, ModelId
from trustmesh.respond import Correlator, technique_for


def _alert(i: int, *, t: float = 0.0, src: str | None = "10.0.0.66", dst: str | None = "10.0.0.5",
           port: int | None = 22, cls: str | None = "PortScan", score: float = 0.9, sev: int = 2) -> Alert:
    return Alert(alert_id=f"a{i}", timestamp=t, flow_id=FlowId(f"f{i}"), model_id=ModelId("m1"), score=score,
                 threshold=0.5, source_ip=src, source_port=40000, destination_ip=dst, destination_port=port,
                 transport="tcp", predicted_class=cls, severity=sev)


@pytest.mark.parametrize(("label", "technique"), [
    ("PortScan", "T1046"), ("Reconnaissance", "T1046"), ("SSH-Patator", "T1110"), ("FTP-Patator", "T1110"),
    ("BruteForce", "T1110"), ("DDoS", "T1498"), ("DDoS_UDP_Flood", "T1498"), ("DoS Hulk", "T1499"),
    ("DoS slowloris", "T1499"), ("Bot", "T1071"), ("C&C", "T1071"), ("Web Attack - Sql Injection", "T1190"),
    ("benign-looking", None), ("attack", None), (None, None),
])
def test_technique_mapping(label: str | None, technique: str | None) -> None:
    assert technique_for(label) == technique


def test_same_attacker_and_technique_join_one_incident() -> None:
    # Arrange
    corr = Correlator(window_s=60)

    # Act
    first = corr.add(_alert(1, t=0.0, dst="10.0.0.5"))
    second = corr.add(_alert(2, t=30.0, dst="10.0.0.6", sev=3, score=0.95))

    # Assert
    assert first.incident_id == second.incident_id
    assert (first.version, second.version) == (1, 2)
    assert second.alert_ids == ("a1", "a2")
    assert second.destination_ips == ("10.0.0.5", "10.0.0.6")
    assert (second.severity, second.confidence) == (3, 0.95)
    assert (second.technique_id, second.technique_name) == ("T1046", "Network Service Discovery")


def test_window_closes_and_new_incident_starts() -> None:
    corr = Correlator(window_s=60)
    a = corr.add(_alert(1, t=0.0))
    b = corr.add(_alert(2, t=61.0))
    assert a.incident_id != b.incident_id
    assert b.version == 1


def test_different_technique_or_attacker_is_separate() -> None:
    corr = Correlator(window_s=60)
    base = corr.add(_alert(1))
    other_tech = corr.add(_alert(2, cls="SSH-Patator"))
    other_src = corr.add(_alert(3, src="10.0.0.77"))
    assert len({base.incident_id, other_tech.incident_id, other_src.incident_id}) == 3


def test_ddos_is_keyed_by_victim_with_many_sources() -> None:
    corr = Correlator(window_s=60)
    incidents = [corr.add(_alert(i, src=f"192.0.2.{i}", dst="10.0.0.5", cls="DDoS")) for i in range(1, 6)]
    assert len({i.incident_id for i in incidents}) == 1
    assert incidents[-1].source_ips == tuple(f"192.0.2.{i}" for i in range(1, 6))
    assert incidents[-1].technique_id == "T1498"


def test_unlabelled_alerts_to_many_ports_become_a_port_scan() -> None:
    corr = Correlator(window_s=60, scan_ports=5)
    incidents = [corr.add(_alert(i, port=1000 + i, cls="anomaly")) for i in range(5)]
    assert [i.technique_id for i in incidents] == [None, None, None, None, "T1046"]


def test_wide_incident_gains_one_severity_step_once() -> None:
    corr = Correlator(window_s=600)
    incs = [corr.add(_alert(i, dst=f"10.0.0.{i % 3 + 1}", sev=2)) for i in range(12)]
    assert incs[8].severity == 2
    assert incs[9].severity == 3 and incs[11].severity == 3  # +1 once, not once per alert


def test_incident_round_trips_through_dict() -> None:
    inc = Correlator().add(_alert(1))
    assert Incident.from_dict(inc.to_dict()) == inc


def test_bad_arguments_are_rejected_early() -> None:
    with pytest.raises(ValueError, match="window_s must be > 0"):
        Correlator(window_s=0)
    with pytest.raises(ValueError, match="alert_ids must not be empty"):
        Incident(incident_id="x", version=1, first_seen=0, last_seen=0, severity=1,  # type: ignore[arg-type]
                 confidence=0.5, alert_ids=())


def test_expire_closes_idle_incidents() -> None:
    corr = Correlator(window_s=10)
    inc = corr.add(_alert(1, t=0.0))
    assert corr.expire(5.0) == []
    assert corr.expire(11.0) == [inc]
    assert corr.open_incidents == []


def test_alert_ids_are_capped_but_counted() -> None:
    corr = Correlator(window_s=600, max_alert_ids=3)
    incs = [corr.add(_alert(i)) for i in range(5)]
    assert incs[-1].alert_ids == ("a0", "a1", "a2")
    assert (incs[-1].alert_count, incs[-1].version) == (5, 5)
    assert Incident.from_dict(incs[-1].to_dict()) == incs[-1]


def test_unlabelled_alerts_hammering_one_login_port_become_brute_force() -> None:
    corr = Correlator(brute_force_attempts=10)
    incs = [corr.add(_alert(i, t=float(i), port=21, cls=None)) for i in range(10)]
    assert [i.technique_id for i in incs[:9]] == [None] * 9
    assert incs[-1].technique_id == "T1110" and incs[-1].technique_name == "Brute Force"
    web = Correlator(brute_force_attempts=10)
    many_web = [web.add(_alert(i, t=float(i), port=80, cls=None)) for i in range(30)]
    assert many_web[-1].technique_id is None, "port 80 is not a login service"
    with pytest.raises(ValueError, match="brute_force_attempts must be >= 2"):
        Correlator(brute_force_attempts=1)


# ---------------------------------------------------------------------------------------- techniques


def _verdict_alert(i: int, technique: str, name: str, cls: str, *, score: float = 0.6, sev: int = 2,
                   dst: str = "10.0.0.5") -> Alert:
    return Alert(alert_id=f"b{i}", timestamp=float(i), flow_id=FlowId(f"f{i}"), model_id=ModelId("behaviour-v1"),
                 score=score, threshold=0.5, source_ip="10.0.0.66", destination_ip=dst, destination_port=22,
                 transport="tcp", predicted_class=cls, severity=sev, technique_id=technique, technique_name=name,
                 detector="behaviour")


def test_alert_technique_wins_over_the_class_mapping() -> None:
    corr = Correlator(window_s=60)
    # "port-scan" alone would map to T1046; the verdict says lateral movement by a scan is T1046 too,
    # but a brute force named as its sub-technique must keep it
    inc = corr.add(_verdict_alert(1, "T1110.001", "Brute Force: Password Guessing", "brute-force"))
    assert (inc.technique_id, inc.technique_name) == ("T1110.001", "Brute Force: Password Guessing")
    inc2 = corr.add(_verdict_alert(2, "T1021", "Remote Services", "lateral-movement"))
    assert inc2.incident_id != inc.incident_id and inc2.technique_id == "T1021"
    unnamed = corr.add(_alert(3, cls="lateral-movement"))  # a model alert with only a class
    assert unnamed.technique_id == "T1021" and unnamed.technique_name == "Remote Services"


@pytest.mark.parametrize(("label", "technique"), [
    ("host-sweep", "T1018"), ("web-enumeration", "T1595.003"), ("lateral-movement", "T1021"),
    ("port-scan", "T1046"), ("syn-flood", "T1498"), ("brute-force", "T1110"), ("ipsweep", "T1018"),
])
def test_behaviour_classes_map_to_techniques(label: str, technique: str) -> None:
    assert technique_for(label) == technique


@pytest.mark.parametrize(("technique", "name", "cls", "playbook", "blocks"), [
    ("T1046", "Network Service Discovery", "port-scan", "block-port-scanner", True),
    ("T1018", "Remote System Discovery", "host-sweep", "block-port-scanner", True),
    ("T1595.003", "Active Scanning: Wordlist Scanning", "web-enumeration", "block-port-scanner", True),
    ("T1110.001", "Brute Force: Password Guessing", "brute-force", "block-brute-force", True),
    ("T1498", "Network Denial of Service", "udp-flood", "dos-flood", True),
    ("T1499", "Endpoint Denial of Service", "syn-flood", "dos-flood", True),
    ("T1021", "Remote Services", "lateral-movement", "quarantine-lateral-movement", False),
])
def test_default_playbooks_follow_the_technique(technique: str, name: str, cls: str, playbook: str,
                                                blocks: bool) -> None:
    from trustmesh.respond import DEFAULT_PLAYBOOKS, PlaybookSet

    books = PlaybookSet.load([DEFAULT_PLAYBOOKS])
    # a verdict just above its detector's threshold (confidence 0.6, low severity) still gets its playbook
    inc = Correlator().add(_verdict_alert(1, technique, name, cls, score=0.6, sev=1))
    first = books.matching(inc)[0]
    assert first.name == playbook
    assert any(step.type == "nftables" for step in first.actions) is blocks
    if not blocks:
        assert all(step.approval for step in first.actions if step.type == "quarantine")
    weak = Correlator().add(_verdict_alert(2, technique, name, cls, score=0.3, sev=1))
    assert books.matching(weak)[0].name == "log-everything-else"
