"""Frozen record types shared across packages.

Records are immutable and carry explicit schemas. ``to_dict`` gives the JSON-ready form used for
ledger entries (hashed as RFC 8785 canonical JSON by the ledger) and exports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, NewType

__all__ = [
    "ActionResult",
    "Alert",
    "Decision",
    "FlowId",
    "Incident",
    "IncidentId",
    "ModelId",
    "Severity",
    "TriageProposal",
    "severity_from_score",
]

FlowId = NewType("FlowId", str)
ModelId = NewType("ModelId", str)
IncidentId = NewType("IncidentId", str)

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
    technique_id: str | None = None  # MITRE ATT&CK id (e.g. T1046) when the verdict names one
    technique_name: str | None = None
    detector: str | None = None  # what produced the verdict: "ml" (model_id), "behaviour", "suricata", ...

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")
        if not 1 <= self.severity <= 4:
            raise ValueError(f"severity must be in 1..4, got {self.severity}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def to_ecs(self, *, created: float | None = None) -> dict[str, Any]:
        """Return the alert as a nested ECS 8.x document (docs/soc.md; built by ``trustmesh._ecs``).

        ``created`` (epoch seconds, default now) becomes ``event.created``.
        """
        from trustmesh._ecs import alert_document  # stdlib-only module; kept out of import time

        return alert_document(self, created=created)


def _check_severity(severity: int) -> None:
    if not 1 <= severity <= 4:
        raise ValueError(f"severity must be in 1..4, got {severity}")


@dataclass(frozen=True, slots=True)
class Incident:
    """Alerts correlated by attacker, victim and technique within a time window.

    ``version`` grows by one with every alert added; ``alert_ids`` are what the incident is based on
    (the ledger entry of each alert is found by its id). A long-running incident lists its first
    ``Correlator(max_alert_ids=...)`` ids and counts all of them in ``alert_count``.
    ``technique_id`` is a MITRE ATT&CK technique
    (e.g. ``T1046``) when one fits, else None.
    """

    record_type: ClassVar[str] = "incident"

    incident_id: IncidentId
    version: int
    first_seen: float
    last_seen: float
    severity: int
    confidence: float  # the highest alert score
    alert_ids: tuple[str, ...]
    source_ips: tuple[str, ...] = ()
    destination_ips: tuple[str, ...] = ()
    destination_ports: tuple[int, ...] = ()
    flows: tuple[tuple[str, str, str, int], ...] = ()  # (source_ip, destination_ip, transport, dport)
    predicted_class: str | None = None
    technique_id: str | None = None
    technique_name: str | None = None
    model_ids: tuple[str, ...] = ()
    alert_count: int = 0  # every alert correlated so far; 0 means len(alert_ids)

    def __post_init__(self) -> None:
        if self.alert_count == 0:
            object.__setattr__(self, "alert_count", len(self.alert_ids))
        if self.alert_count < len(self.alert_ids):
            raise ValueError(
                f"alert_count ({self.alert_count}) must be >= len(alert_ids) ({len(self.alert_ids)})"
            )
        _check_severity(self.severity)
        if self.version < 1:
            raise ValueError(f"version must be >= 1, got {self.version}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
        if not self.alert_ids:
            raise ValueError("alert_ids must not be empty: an incident is based on at least one alert")
        if self.last_seen < self.first_seen:
            raise ValueError(f"last_seen ({self.last_seen}) must be >= first_seen ({self.first_seen})")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field (tuples become lists)."""
        return _fields(self)

    def to_ecs(self, *, created: float | None = None) -> dict[str, Any]:
        """Return this incident version as a nested ECS 8.x document (docs/soc.md)."""
        from trustmesh._ecs import incident_document

        return incident_document(self, created=created)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Incident:
        """Rebuild an incident from ``to_dict`` output (checks every invariant)."""
        try:
            return cls(
                incident_id=IncidentId(str(doc["incident_id"])),
                version=int(doc["version"]),
                first_seen=float(doc["first_seen"]),
                last_seen=float(doc["last_seen"]),
                severity=int(doc["severity"]),
                confidence=float(doc["confidence"]),
                alert_ids=tuple(str(a) for a in doc["alert_ids"]),
                source_ips=tuple(str(a) for a in doc.get("source_ips", ())),
                destination_ips=tuple(str(a) for a in doc.get("destination_ips", ())),
                destination_ports=tuple(int(p) for p in doc.get("destination_ports", ())),
                flows=tuple((str(f[0]), str(f[1]), str(f[2]), int(f[3])) for f in doc.get("flows", ())),
                predicted_class=doc.get("predicted_class"),
                technique_id=doc.get("technique_id"),
                technique_name=doc.get("technique_name"),
                model_ids=tuple(str(m) for m in doc.get("model_ids", ())),
                alert_count=int(doc.get("alert_count", 0)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not an incident document: {exc}") from exc


@dataclass(frozen=True, slots=True)
class TriageProposal:
    """What an LLM proposed for an incident, and whether the proposal was accepted.

    ``status`` is ``accepted`` or ``rejected``; ``reason`` says why a proposal was rejected (not JSON,
    schema mismatch, forbidden action, timeout, unreachable). ``response_sha256`` hashes the raw answer
    so the ledger commits to it without storing free text from an untrusted model.
    """

    record_type: ClassVar[str] = "triage_proposal"

    proposal_id: str
    incident_id: IncidentId
    incident_version: int
    model: str
    status: str
    reason: str
    allowed_actions: tuple[str, ...]
    proposed_actions: tuple[str, ...] = ()
    rationale: str = ""
    response_sha256: str | None = None
    timestamp: float = 0.0
    # replay (docs/response.md "Auditing a triage decision"): the request body's sha256 (its bytes are
    # stored as a ledger blob under that digest), the model file's sha256 and the answer's confidence
    prompt_sha256: str | None = None
    model_sha256: str | None = None
    confidence: float | None = None

    def __post_init__(self) -> None:
        if self.status not in {"accepted", "rejected"}:
            raise ValueError(f"status must be accepted/rejected, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field (tuples become lists)."""
        return _fields(self)


DECISION_STATUSES = frozenset(
    {"taken", "skipped", "denied", "pending_approval", "approved", "rejected", "failed"}
)


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision about one playbook step for one incident: taken, skipped, denied (and why).

    ``decided_by`` is ``playbook``, ``llm`` or ``operator``; ``proposal_id`` links the LLM proposal the
    decision followed or overrode. ``alert_ids`` repeats what the incident was based on.
    """

    record_type: ClassVar[str] = "decision"

    decision_id: str
    incident_id: IncidentId
    incident_version: int
    status: str
    reason: str
    decided_by: str
    timestamp: float
    alert_ids: tuple[str, ...] = ()
    playbook: str | None = None
    step: int | None = None
    action: str | None = None
    targets: tuple[str, ...] = ()
    ttl_s: int | None = None
    enforce: bool = False
    proposal_id: str | None = None
    approval_id: str | None = None

    def __post_init__(self) -> None:
        if self.status not in DECISION_STATUSES:
            raise ValueError(f"status must be one of {sorted(DECISION_STATUSES)}, got {self.status!r}")
        if self.decided_by not in {"playbook", "llm", "operator"}:
            raise ValueError(f"decided_by must be playbook/llm/operator, got {self.decided_by!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field (tuples become lists)."""
        return _fields(self)


ACTION_RESULT_STATUSES = frozenset({"applied", "dry_run", "failed", "rolled_back", "expired", "noop"})


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did (or would do, in dry-run) when applied, rolled back or expired.

    ``operation`` is ``apply``, ``rollback`` or ``expire``; ``commands`` are the exact commands run (or
    that would run in dry-run); ``decision_id`` is the decision it carries out.
    """

    record_type: ClassVar[str] = "action_result"

    result_id: str
    decision_id: str
    incident_id: IncidentId
    action: str
    operation: str
    status: str
    detail: str
    timestamp: float
    targets: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    enforce: bool = False
    expires_at: float | None = None

    def __post_init__(self) -> None:
        if self.operation not in {"apply", "rollback", "expire"}:
            raise ValueError(f"operation must be apply/rollback/expire, got {self.operation!r}")
        if self.status not in ACTION_RESULT_STATUSES:
            raise ValueError(f"status must be one of {sorted(ACTION_RESULT_STATUSES)}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field (tuples become lists)."""
        return _fields(self)


def _fields(record: Any) -> dict[str, Any]:
    # dataclasses.asdict deep-copies (slow for incidents with many alert ids) and keeps tuples;
    # JSON (and RFC 8785 hashing) wants lists. These records hold only scalars and (nested) tuples.
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[f.name] = value
    return out
