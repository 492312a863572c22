"""Suricata EVE ``alert`` events -> :class:`~trustmesh.records.Alert` (detector ``suricata``), fused with
the model's verdict on the same flow.

Mapping (Suricata EVE format, "Event types: alert"):

* ``alert.signature_id``/``signature``/``category``/``rev``/``gid``/``action`` are kept under
  ``extra["suricata"]`` and become ``rule.id``/``rule.name``/``rule.category``/``rule.version`` in the
  ECS document; ``predicted_class`` is the signature's category.
* ``alert.severity`` (Suricata: 1 high, 2 medium, 3 low) -> ``Alert.severity`` 3/2/1; the ET ruleset's
  ``metadata.signature_severity`` "Critical" raises it to 4 and "Informational" lowers it to 1. The
  score (the alert's confidence) is 0.95/0.8/0.6 for Suricata severities 1/2/3.
* ATT&CK technique: ``metadata.mitre_technique_id`` when the rule carries one; otherwise
  :func:`technique_for_signature` (scan signatures -> T1046, brute force -> T1110, DoS -> T1499,
  web attacks and exploits -> T1190, trojans/C2 -> T1071). Reputation signatures (CINS, DShield,
  "Poor Reputation", "Known Compromised") name no technique: they say who, not what.
* ``timestamp`` (ISO 8601 with offset) -> epoch seconds; ``flow_id`` -> ``flow_id`` (the same value
  the flow event of that flow has as ``uid``), so an alert joins the flow the model scored.

Fusion (:func:`fuse_signature`): when the model scored the alert's flow, ``extra["ml"]`` records that verdict;
a model that agrees (score at or above its threshold) raises the severity by one and the score to
the larger of the two (``extra["fusion"] = "corroborated"``), one that does not leaves both
(``"signature-only"``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from trustmesh.flows._io import open_text
from trustmesh.records import Alert, FlowId, ModelId

__all__ = ["SURICATA_MODEL_ID", "eve_alert", "fuse_signature", "fused_eve_alerts", "iter_eve_alerts",
           "technique_for_signature"]

SURICATA_MODEL_ID = "suricata"
_SEVERITY = {1: 3, 2: 2, 3: 1}
_SCORE = {1: 0.95, 2: 0.8, 3: 0.6}
_APP = {"failed": None, "tls": "ssl", "": None}
_TECHNIQUE_NAMES = {
    "T1046": "Network Service Discovery", "T1110": "Brute Force", "T1499": "Endpoint Denial of Service",
    "T1498": "Network Denial of Service", "T1190": "Exploit Public-Facing Application",
    "T1071": "Application Layer Protocol", "T1595": "Active Scanning",
}  # fmt: skip
# (signature pattern, technique); the first match wins. Reputation lists deliberately map to nothing.
_SIGNATURE_RULES: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(p, re.I), t)
    for p, t in (
        (r"poor reputation|cins active|dshield|block ?listed|known compromised|tor exit|spamhaus", None),
        (r"brute|password|login attempt|auth(entication)? fail|ssh scan outbound", "T1110"),
        (r"\bdos\b|ddos|flood", "T1499"),
        (r"\bscan\b|nmap|masscan|zmap|portscan|sweep|probe", "T1046"),
        (r"sql injection|xss|command injection|web.?attack|exploit|cve-\d{4}", "T1190"),
        (r"trojan|c2|cnc|command and control|beacon|malware", "T1071"),
    )
)
_CATEGORY_RULES = {
    "detection of a network scan": "T1046", "attempted denial of service": "T1499",
    "denial of service": "T1499", "web application attack": "T1190",
    "attempted administrator privilege gain": "T1190", "attempted user privilege gain": "T1190",
    "a network trojan was detected": "T1071", "malware command and control activity detected": "T1071",
}  # fmt: skip
_TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")


def technique_for_signature(signature: str, category: str, metadata: Mapping[str, Any] | None = None) -> str | None:
    """Return the ATT&CK technique a signature alert stands for, or None (see the module docstring)."""
    named = (metadata or {}).get("mitre_technique_id")
    for value in named if isinstance(named, list) else [named]:
        if isinstance(value, str) and _TECHNIQUE_ID.match(value.strip()):
            return value.strip()
    for pattern, technique in _SIGNATURE_RULES:
        if pattern.search(signature):
            return technique
    return _CATEGORY_RULES.get(category.strip().lower())


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", value)  # Suricata writes +0200, older Pythons want +02:00
        try:
            stamp = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _port(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535 else None


def eve_alert(rec: Mapping[str, Any], *, source_name: str) -> Alert | None:
    """Return the Alert of one EVE ``alert`` record, or None when it is not a well-formed alert."""
    if rec.get("event_type") != "alert" or not isinstance(rec.get("alert"), Mapping):
        return None
    a = rec["alert"]
    sid, signature = a.get("signature_id"), a.get("signature")
    if not isinstance(sid, int) or not isinstance(signature, str):
        return None
    ts = _epoch(rec.get("timestamp"))
    if ts is None:
        return None
    category = str(a.get("category") or "")
    raw_sev = a.get("severity") if isinstance(a.get("severity"), int) else 3
    metadata = a.get("metadata") if isinstance(a.get("metadata"), Mapping) else {}
    severity = _SEVERITY.get(raw_sev, 1)
    sig_sev = [str(v).lower() for v in (metadata.get("signature_severity") or [])] if metadata else []
    if "critical" in sig_sev:
        severity = 4
    elif "informational" in sig_sev:
        severity = 1
    technique = technique_for_signature(signature, category, metadata)
    flow_id = str(rec.get("flow_id", "")) or f"{rec.get('src_ip')}-{rec.get('dest_ip')}-{ts}"
    key = f"{SURICATA_MODEL_ID}\x00{source_name}\x00{flow_id}\x00{sid}\x00{ts!r}"
    proto = str(rec.get("proto", "")).lower() or None
    is_icmp = bool(proto and proto.startswith("icmp"))
    app = str(rec.get("app_proto", "")).lower()
    return Alert(
        alert_id=f"alr-{hashlib.sha256(key.encode()).hexdigest()[:20]}",
        timestamp=ts,
        flow_id=FlowId(flow_id),
        model_id=ModelId(SURICATA_MODEL_ID),
        score=_SCORE.get(raw_sev, 0.6),
        threshold=0.5,
        source_ip=str(rec["src_ip"]) if rec.get("src_ip") else None,
        source_port=_port(rec.get("icmp_type") if is_icmp else rec.get("src_port")),
        destination_ip=str(rec["dest_ip"]) if rec.get("dest_ip") else None,
        destination_port=_port(rec.get("icmp_code") if is_icmp else rec.get("dest_port")),
        transport=proto,
        application=_APP.get(app, app) if app else None,
        predicted_class=category or None,
        severity=severity,
        source_name=source_name,
        extra={"suricata": {"signature_id": sid, "signature": signature, "category": category,
                            "severity": raw_sev, "rev": a.get("rev"), "gid": a.get("gid"),
                            "action": a.get("action")}},  # fmt: skip
        technique_id=technique,
        technique_name=_TECHNIQUE_NAMES.get((technique or "").split(".")[0]) if technique else None,
        detector="suricata",
    )


def iter_eve_alerts(path: Path | str, batch_size: int = 1024, *,
                    source_name: str | None = None) -> Iterator[list[Alert]]:
    """Yield the ``alert`` events of an EVE file (plain or gzip) as lists of at most ``batch_size`` Alerts.

    Lines that are not JSON, or alerts without signature id, signature or timestamp, are skipped:
    the flow reader of the same file reports bad lines with their numbers.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p = Path(path)
    name = source_name or str(p)
    batch: list[Alert] = []
    with open_text(p) as fh:
        for line in fh:
            if '"alert"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            alert = eve_alert(rec, source_name=name) if isinstance(rec, dict) else None
            if alert is None:
                continue
            batch.append(alert)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def fuse_signature(alert: Alert, score: float | None, threshold: float | None, model_id: str | None) -> Alert:
    """Return ``alert`` with the model's verdict on its flow (``score`` None: the model did not see it)."""
    if score is None or threshold is None:
        return dataclasses.replace(alert, extra={**alert.extra, "fusion": "signature-only"})
    agrees = score >= threshold
    extra = {**alert.extra, "ml": {"model_id": model_id, "score": round(float(score), 6),
                                   "threshold": float(threshold), "agrees": agrees},
             "fusion": "corroborated" if agrees else "signature-only"}  # fmt: skip
    if not agrees:
        return dataclasses.replace(alert, extra=extra)
    return dataclasses.replace(alert, extra=extra, severity=min(4, alert.severity + 1),
                               score=max(alert.score, min(1.0, float(score))))


def fused_eve_alerts(path: Path | str, uids: Iterable[Any], scores: Iterable[float], threshold: float,
                     model_id: str, *, source_name: str | None = None) -> list[Alert]:
    """Return every alert event of an EVE file, each fused with the model's score of its flow.

    ``uids`` and ``scores`` are the canonical flows' ``uid`` column and the model's scores (a flow
    missing from them leaves its alerts ``signature-only``).
    """
    seen = dict(zip((str(u) for u in uids), (float(s) for s in scores), strict=True))
    out: list[Alert] = []
    for batch in iter_eve_alerts(path, source_name=source_name):
        for a in batch:
            score = seen.get(str(a.flow_id))
            out.append(fuse_signature(a, score, None if score is None else threshold, model_id))
    return out
