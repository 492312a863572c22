"""Records for the sink tests."""

from __future__ import annotations

from typing import Any

from trustmesh.records import Alert, FlowId, Incident, IncidentId, ModelId


def make_alert(i: int = 0, **kw: Any) -> Alert:
    base: dict[str, Any] = dict(alert_id=f"alr-{i:04d}", timestamp=1622987986.0 + i, flow_id=FlowId(f"f{i}"),
                                model_id=ModelId("m1"), score=0.97, threshold=0.5, source_ip="78.36.196.213",
                                source_port=51000 + i, destination_ip="192.168.1.129", destination_port=1433,
                                transport="tcp", severity=3, technique_id="T1046")
    base.update(kw)
    return Alert(**base)


def make_incident(version: int = 1) -> Incident:
    return Incident(incident_id=IncidentId("inc-1"), version=version, first_seen=1622987986.0,
                    last_seen=1622987990.0, severity=3, confidence=0.97, alert_ids=("alr-0000",),
                    source_ips=("78.36.196.213",), destination_ips=("192.168.1.129",), technique_id="T1046")
