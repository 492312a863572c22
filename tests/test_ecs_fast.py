"""The field-by-field alert document builder gives exactly what the original build-then-prune code gave.

``_reference`` is the earlier implementation of ``_ecs.alert_document`` (a full document with None/""/[]
placeholders, then ``_drop_empty``), kept here as the oracle. Documents are compared as JSON text, so
key order counts as well as values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trustmesh import _ecs
from trustmesh.ledger._canonical import canonical_dumps
from trustmesh.records import Alert, FlowId, ModelId


def _reference(alert: Alert, *, created: float) -> dict[str, Any]:
    times, flow_time = _ecs._times(float(alert.timestamp), None, created)
    src, dst = _ecs._ip(alert.source_ip), _ecs._ip(alert.destination_ip)
    transport = (alert.transport or "").lower() or None
    if transport in {"icmp", "ipv6-icmp", "icmpv6"} and src is not None and src.version == 6:
        transport = "ipv6-icmp"
    iana = _ecs._IANA.get(transport or "")
    cid = None
    if src is not None and dst is not None and transport is not None:
        cid = _ecs.community_id(str(src), str(dst), alert.source_port, alert.destination_port, transport)
    detector = alert.detector or "ml"
    suricata = alert.extra.get("suricata") if isinstance(alert.extra.get("suricata"), Mapping) else None
    known = _ecs.technique_info(alert.technique_id)
    kind = (alert.predicted_class or (suricata or {}).get("category") or alert.technique_name
            or (known[0] if known and known[0] else None) or "anomaly")
    rule: dict[str, Any]
    if suricata is not None:
        rule = {"id": str(suricata.get("signature_id", "")), "name": suricata.get("signature"),
                "category": suricata.get("category"), "version": str(suricata.get("rev", "")) or None,
                "ruleset": "suricata"}
        event_types = ["denied" if suricata.get("action") == "blocked" else "allowed"]
    else:
        rule = {"id": f"{detector}:{alert.model_id}", "name": f"trustmesh {detector}: {kind}",
                "ruleset": f"trustmesh-{detector}", "category": kind}
        event_types = ["info"]
    app = (alert.application or "").lower()
    where = f"{alert.source_ip or '?'}:{alert.source_port if alert.source_port is not None else '-'}"
    to = f"{alert.destination_ip or '?'}:{alert.destination_port if alert.destination_port is not None else '-'}"
    message = (f"{rule['name']} {where} -> {to}"
               f"{' ' + alert.technique_id if alert.technique_id else ''} score {alert.score:.3f}")
    flow = {"id": alert.flow_id, **flow_time}
    trustmesh: dict[str, Any] = {
        "alert_id": alert.alert_id, "score": alert.score, "threshold": alert.threshold,
        "model_id": alert.model_id, "detector": detector, "source": alert.source_name,
        "predicted_class": alert.predicted_class, "flow": flow,
        "extra": _ecs._json_safe(dict(alert.extra)) if alert.extra else None,
    }
    doc: dict[str, Any] = {
        "@timestamp": times["@timestamp"], "message": message, "ecs": {"version": _ecs.ECS_VERSION},
        "event": {
            "kind": "alert", "category": ["network", "intrusion_detection"], "type": ["connection", *event_types],
            "outcome": "unknown", "severity": int(alert.severity), "id": alert.alert_id,
            "dataset": "trustmesh.alert", "module": "trustmesh", "provider": detector,
            "created": _ecs.iso_utc(created), "risk_score": round(alert.score * 100, 3),
            "risk_score_norm": round(alert.score * 100, 3), **times["event"],
        },
        "observer": dict(_ecs._observer()),
        "source": {"ip": None if src is None else str(src), "port": alert.source_port},
        "destination": {"ip": None if dst is None else str(dst), "port": alert.destination_port},
        "network": {
            "transport": transport, "iana_number": None if iana is None else str(iana),
            "protocol": None if app in {"", "-"} else app,
            "type": None if src is None else f"ipv{src.version}", "community_id": cid,
            "direction": _ecs._direction(src, dst),
        },
        "related": {"ip": sorted({str(a) for a in (src, dst) if a is not None})},
        "rule": rule,
        "threat": _ecs._threat(alert.technique_id, alert.technique_name),
        "trustmesh": trustmesh,
    }
    return _ecs._drop_empty(doc)


_ADDRS = st.sampled_from(["10.0.0.5", "192.168.1.129", "78.36.196.213", "8.8.8.8", "::1", "fe80::1",
                          "2001:db8::7", "2001:0db8:0000::0007", "127.0.0.1", "not-an-ip", "", None])
_TEXT = st.one_of(st.none(), st.just(""), st.sampled_from(["scan", "dos", "-", "ssh", "HTTP", "tls", "é"]),
                  st.text(max_size=6))
_PORT = st.one_of(st.none(), st.integers(0, 65535))
_SURICATA = st.fixed_dictionaries(
    {}, optional={"signature_id": st.one_of(st.none(), st.integers(1, 10**7), st.just("")),
                  "signature": st.one_of(_TEXT, st.dictionaries(st.text(max_size=3), _TEXT, max_size=2)),
                  "category": st.one_of(_TEXT, st.just({})), "rev": st.one_of(st.none(), st.integers(0, 9), st.just("")),
                  "action": st.sampled_from(["allowed", "blocked", ""])})
_EXTRA = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"suricata": _SURICATA}),
    st.fixed_dictionaries({"behaviour": st.dictionaries(st.sampled_from(["host", "victims", "x", "empty"]),
                                                        st.one_of(_TEXT, st.integers(-(2**53) + 1, 2**53 - 1), st.floats(), st.just([]),
                                                                  st.just({})), max_size=4)}),
    st.fixed_dictionaries({"suricata": st.just("not an object")}),
)


@st.composite
def _alerts(draw: st.DrawFn) -> Alert:
    score = draw(st.floats(0.0, 1.0))
    return Alert(
        alert_id=draw(st.sampled_from(["alr-1", "", "alr-ab12"])),
        timestamp=draw(st.one_of(st.floats(0, 4e9), st.sampled_from([0.0, 12.5, 631_152_000.0, 1622987986.457984]))),
        flow_id=FlowId(draw(st.sampled_from(["f1", "", "123456789"]))),
        model_id=ModelId(draw(st.sampled_from(["m1", "", "behaviour-v1"]))),
        score=score, threshold=draw(st.floats(0.0, 1.0)),
        source_ip=draw(_ADDRS), source_port=draw(_PORT), destination_ip=draw(_ADDRS), destination_port=draw(_PORT),
        transport=draw(st.one_of(_TEXT, st.sampled_from(["tcp", "UDP", "icmp", "ipv6-icmp", "icmpv6", "sctp"]))),
        application=draw(_TEXT), predicted_class=draw(_TEXT), severity=draw(st.integers(1, 4)),
        source_name=draw(_TEXT), extra=draw(_EXTRA),
        technique_id=draw(st.sampled_from([None, "", "T1046", "T1110.001", "T1595.003", "T9999", "T9999.001"])),
        technique_name=draw(_TEXT), detector=draw(st.sampled_from([None, "", "ml", "behaviour", "suricata"])),
    )


@settings(max_examples=400, deadline=None)
@given(_alerts(), st.floats(1.6e9, 1.8e9))
def test_alert_document_matches_the_reference_builder(alert: Alert, created: float) -> None:
    new = _ecs.alert_document(alert, created=created)
    old = _reference(alert, created=created)
    assert json.dumps(new) == json.dumps(old)
    assert canonical_dumps(new)[0] == canonical_dumps(old)[0]


def test_documents_do_not_share_mutable_parts() -> None:
    """Two documents of one alert are independent objects (a sink may edit its copy)."""
    alert = Alert(alert_id="alr-1", timestamp=1622987986.0, flow_id=FlowId("f1"), model_id=ModelId("m1"),
                  score=0.9, threshold=0.5, source_ip="10.0.0.1", destination_ip="10.0.0.2", transport="tcp",
                  technique_id="T1046", extra={"behaviour": {"host": "10.0.0.1"}})
    a, b = alert.to_ecs(created=1.7e9), alert.to_ecs(created=1.7e9)
    a["event"]["type"].append("x")
    a["observer"]["hostname"] = "edited"
    a["threat"]["technique"]["id"].append("T0")
    a["trustmesh"]["extra"]["behaviour"]["host"] = "edited"
    assert b == alert.to_ecs(created=1.7e9)
    assert alert.extra == {"behaviour": {"host": "10.0.0.1"}}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(-1e9, 2.5e11), st.integers(0, 4 * 10**9).map(float),
                 st.sampled_from([0.0, -0.5, 631_152_000.0, 1622987986.4579845, 253402300799.999])))
def test_iso_utc_matches_strftime(ts: float) -> None:
    import datetime as dt

    _ecs.iso_utc.cache_clear()
    want = dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _ecs.iso_utc(ts) == want
