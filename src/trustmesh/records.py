"""Frozen record types shared across packages.

Records are immutable and carry explicit schemas. ``to_dict`` gives the JSON-ready form used for
ledger entries (hashed as RFC 8785 canonical JSON by the ledger) and exports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NewType

__all__ = ["Alert", "FlowId", "ModelId", "Severity", "severity_from_score"]

FlowId = NewType("FlowId", str)
ModelId = NewType("ModelId", str)

Severity = int  # ECS event.severity: 1 (low) .. 4 (critical); see severity_from_score


def severity_from_score(score: float) -> int:
    """Map a detector score in [0, 1] to an ECS-style severity 1..4."""
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must be in [0, 1], got {score}")
    if score >= 0.95:
        return 4
    if score >= 0.85:
        return 3
    if score >= 0.7:
        return 2
    return 1


@dataclass(frozen=True, slots=True)
class Alert:
    """One flow scored above its detector's threshold.

    Field names follow the Elastic Common Schema where a field exists (``to_ecs``).
    """

    alert_id: str
    timestamp: float  # flow start, seconds since the epoch (or relative, as the source gives it)
    flow_id: FlowId
    model_id: ModelId
    score: float
    threshold: float
    source_ip: str | None = None
    source_port: int | None = None
    destination_ip: str | None = None
    destination_port: int | None = None
    transport: str | None = None
    application: str | None = None
    predicted_class: str | None = None
    severity: int = 1
    source_name: str | None = None  # the input the flow came from (file name / interface)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")
        if not 1 <= self.severity <= 4:
            raise ValueError(f"severity must be in 1..4, got {self.severity}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def to_ecs(self) -> dict[str, Any]:
        """Return the alert as an ECS-shaped document (dotted field names)."""
        doc: dict[str, Any] = {
            "@timestamp": self.timestamp,
            "event.kind": "alert",
            "event.category": "network",
            "event.id": self.alert_id,
            "event.severity": self.severity,
            "event.risk_score": round(self.score * 100, 3),
            "source.ip": self.source_ip,
            "source.port": self.source_port,
            "destination.ip": self.destination_ip,
            "destination.port": self.destination_port,
            "network.transport": self.transport,
            "network.protocol": self.application,
            "rule.name": self.predicted_class,
            "trustmesh.score": self.score,
            "trustmesh.threshold": self.threshold,
            "trustmesh.model_id": self.model_id,
            "trustmesh.flow_id": self.flow_id,
            "trustmesh.source": self.source_name,
        }
        return {k: v for k, v in doc.items() if v is not None}
