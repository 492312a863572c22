"""The ECS 8.x alert/incident document: field names and types against the pinned ECS reference,
timestamps, severity, and Community ID v1 against the spec's published vectors."""

from __future__ import annotations

import csv
import datetime as dt
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from trustmesh import _ecs
from trustmesh.records import Alert, FlowId, Incident, IncidentId, ModelId

DATA = Path(__file__).parent / "data"
with (DATA / "ecs" / "fields_subset.csv").open(encoding="utf-8", newline="") as _fh:
    ECS_FIELDS = {row["Field"]: row for row in csv.DictReader(_fh)}
ALLOWED = json.loads((DATA / "ecs" / "allowed_values.json").read_text())


def _alert(**kw: Any) -> Alert:
    base: dict[str, Any] = dict(alert_id="alr-1", timestamp=1622987986.457984, flow_id=FlowId("f1"),
                                model_id=ModelId("m1"), score=0.97, threshold=0.5, source_ip="78.36.196.213",
                                source_port=51698, destination_ip="192.168.1.129", destination_port=445,
                                transport="tcp", application="smb", severity=3, source_name="eve.json")
    base.update(kw)
    return Alert(**base)


def _incident(**kw: Any) -> Incident:
    base: dict[str, Any] = dict(incident_id=IncidentId("inc-1"), version=2, first_seen=1622987986.0,
                                last_seen=1622988000.0, severity=2, confidence=0.9, alert_ids=("a", "b"),
                                source_ips=("1.2.3.4",), destination_ips=("192.168.1.129", "192.168.1.132"),
                                destination_ports=(1433,), technique_id="T1046")
    base.update(kw)
    return Incident(**base)


def _is_iso_utc(value: Any) -> bool:
    if not isinstance(value, str) or not value.endswith("Z"):
        return False
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.tzinfo is not None and parsed.year >= 1990


def _type_ok(ecs_type: str, value: Any) -> bool:
    if ecs_type in {"keyword", "match_only_text", "wildcard", "constant_keyword"}:
        return isinstance(value, str)
    if ecs_type == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if ecs_type in {"float", "scaled_float", "double"}:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ecs_type == "date":
        return _is_iso_utc(value)
    if ecs_type == "ip":
        try:
            ipaddress.ip_address(value)
        except (TypeError, ValueError):
            return False
        return True
    if ecs_type == "boolean":
        return isinstance(value, bool)
    if ecs_type in {"object", "flattened"}:
        return isinstance(value, dict)
    raise AssertionError(f"type {ecs_type} not handled by this test")


def check_ecs(doc: dict[str, Any]) -> None:
    """Every non-``trustmesh.*`` field is an ECS field of the right type; arrays where ECS says array."""
    for name, value in _ecs.flatten(doc).items():
        if name.startswith("trustmesh."):
            continue
        assert name in ECS_FIELDS, f"{name} is not an ECS 8.12 field"
        spec = ECS_FIELDS[name]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list):
            assert spec["Normalization"] == "array" or spec["Type"] == "ip", f"{name}: ECS does not make it an array"
        else:
            assert spec["Normalization"] != "array", f"{name} must be an array"
        for v in values:
            assert _type_ok(spec["Type"], v), f"{name}: {v!r} is not ECS type {spec['Type']}"
    event = doc["event"]
    assert event["kind"] in ALLOWED["event.kind"] and event["outcome"] in ALLOWED["event.outcome"]
    for category in event["category"]:
        assert category in ALLOWED["event.category"]
        assert set(event["type"]) & set(ALLOWED["expected_types"][category]), f"no expected type for {category}"
    assert set(event["type"]) <= set(ALLOWED["event.type"])
    assert doc["network"].get("direction", "unknown") in ALLOWED["network.direction"] if "network" in doc else True


@pytest.mark.parametrize("alert", [
    _alert(),
    _alert(technique_id="T1110.001", predicted_class="brute-force", detector="behaviour"),
    _alert(timestamp=18.8, source_ip="fe80::1", destination_ip="fe80::2", transport="icmp", source_port=128,
           destination_port=0, application=None),
    _alert(source_ip="not-an-ip", destination_ip=None, transport=None, source_port=None, destination_port=None,
           extra={"suricata": {"signature_id": 2010935, "signature": "ET SCAN MSSQL", "category": "Potentially Bad Traffic",
                               "rev": 3, "action": "allowed"}}, detector="suricata"),
])
def test_alert_document_fields_are_ecs(alert: Alert) -> None:
    doc = alert.to_ecs(created=1.7e9)
    check_ecs(doc)
    assert doc["ecs"]["version"].startswith("8.") and doc["ecs"]["version"] == _ecs.ECS_VERSION
    assert doc["event"]["created"] == "2023-11-14T22:13:20.000000Z"
    assert doc["trustmesh"]["alert_id"] == alert.alert_id == doc["event"]["id"]
    json.dumps(doc, allow_nan=False)  # plain JSON


def test_incident_document_fields_are_ecs() -> None:
    for inc in (_incident(), _incident(first_seen=3.0, last_seen=9.5, technique_id=None, source_ips=())):
        doc = inc.to_ecs(created=1.7e9)
        check_ecs(doc)
        assert doc["event"]["id"] == f"{inc.incident_id}:v{inc.version}"
        assert doc["trustmesh"]["incident"]["alert_count"] == inc.alert_count


def test_epoch_times_are_iso_utc_and_relative_times_never_1970() -> None:
    doc = _alert().to_ecs(created=1.7e9)
    assert doc["@timestamp"] == "2021-06-06T13:59:46.457984Z" == doc["event"]["start"]
    rel = _alert(timestamp=18.8).to_ecs(created=1.7e9)
    assert rel["@timestamp"] == "2023-11-14T22:13:20.000000Z"  # ingest time, as ECS prescribes
    assert rel["trustmesh"]["flow"] == {"id": "f1", "ts": 18.8, "ts_kind": "relative"}
    assert "start" not in rel["event"]
    inc = _incident(first_seen=3.0, last_seen=9.5).to_ecs(created=1.7e9)
    assert not inc["@timestamp"].startswith("1970") and inc["trustmesh"]["incident"]["ts_kind"] == "relative"


def test_threat_fields_from_technique() -> None:
    doc = _alert(technique_id="T1110.001").to_ecs(created=0)
    tech = doc["threat"]["technique"]
    assert doc["threat"]["framework"] == "MITRE ATT&CK"
    assert tech["id"] == ["T1110"] and tech["name"] == ["Brute Force"]
    assert tech["subtechnique"]["id"] == ["T1110.001"] and doc["threat"]["tactic"]["id"] == ["TA0006"]
    assert "threat" not in _alert().to_ecs(created=0)


def test_network_fields() -> None:
    doc = _alert().to_ecs(created=0)
    assert doc["network"]["direction"] == "inbound" and doc["network"]["iana_number"] == "6"
    assert doc["network"]["community_id"] == _ecs.community_id("78.36.196.213", "192.168.1.129", 51698, 445, 6)
    assert _alert(source_ip="10.0.0.1", destination_ip="10.0.0.2").to_ecs(created=0)["network"]["direction"] == "internal"


def test_severity_means_something() -> None:
    # impact by technique, moved by the margin above the threshold
    assert _ecs.alert_severity(0.99, 0.5, "T1021") == 4
    assert _ecs.alert_severity(0.99, 0.5, "T1498") == 3
    assert _ecs.alert_severity(0.55, 0.5, "T1498") == 2
    assert _ecs.alert_severity(0.99, 0.5, "T1046") == 3
    assert _ecs.alert_severity(0.8, 0.5, "T1046") == 2
    assert _ecs.alert_severity(0.51, 0.5, None) == 1
    assert max(_ecs.alert_severity(s / 100, 0.5, None) for s in range(50, 101)) == 3  # never critical untyped
    with pytest.raises(ValueError, match="score"):
        _ecs.alert_severity(1.5, 0.5)


@pytest.mark.parametrize("name,seed", [("baseline_deflt.json", 0), ("baseline_seed1.json", 1)])
def test_community_id_published_vectors(name: str, seed: int) -> None:
    vectors = json.loads((DATA / "community_id" / name).read_text())
    assert len(vectors) == 23
    for v in vectors:
        got = _ecs.community_id(v["saddr"], v["daddr"], v["sport"], v["dport"], v["proto"], seed=seed)
        assert got == v["communityid"], v


def test_community_id_rejects_what_it_cannot_hash() -> None:
    assert _ecs.community_id("10.0.0.1", "fe80::1", 1, 2, 6) is None
    assert _ecs.community_id("10.0.0.1", "bogus", 1, 2, 6) is None
    assert _ecs.community_id("10.0.0.1", "10.0.0.2", None, 2, "tcp") is None
    assert _ecs.community_id("10.0.0.1", "10.0.0.2", 1, 2, "carrier-pigeon") is None
    # the spec's example: both directions of one TCP flow hash alike
    assert _ecs.community_id("10.0.0.1", "127.0.0.1", 1234, 80, "tcp") == _ecs.community_id(
        "127.0.0.1", "10.0.0.1", 80, 1234, 6)


def test_pinned_reference_is_ecs_8() -> None:
    assert {row["ECS_Version"] for row in ECS_FIELDS.values()} == {"8.12.0-dev"}
    assert ECS_FIELDS["@timestamp"]["Type"] == "date" and ECS_FIELDS["event.severity"]["Type"] == "long"


def test_alert_round_trips_through_its_document() -> None:
    for alert in (_alert(technique_id="T1110.001", technique_name="Password Guessing", detector="behaviour",
                         extra={"k": [1, 2]}), _alert(timestamp=18.8, detector="ml")):
        assert _ecs.alert_from_document(alert.to_ecs(created=1.7e9)) == alert
    with pytest.raises(ValueError, match="trustmesh"):
        _ecs.alert_from_document({"event": {}})


def test_extra_is_plain_json() -> None:
    import numpy as np

    doc = _alert(extra={"behaviour": {"ports": np.int64(1000), "rate": np.float32(0.5), "ok": np.bool_(True)}}).to_ecs(
        created=0)
    assert doc["trustmesh"]["extra"] == {"behaviour": {"ports": 1000, "rate": 0.5, "ok": True}}
    json.dumps(doc, allow_nan=False)
