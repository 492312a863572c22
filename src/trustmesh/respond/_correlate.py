"""Correlate alerts into incidents and map them to MITRE ATT&CK techniques.

Correlation key: alerts with the same technique and the same attacker (``source_ip``) join one
incident while they arrive within ``window_s`` of its last alert. Denial-of-service techniques are keyed
by the victim instead (many sources, one target). Alerts without a known technique are keyed by
attacker alone; an incident whose attacker touched ``scan_ports`` or more distinct destination ports
is then classed as a port scan (T1046).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import TypeVar

from trustmesh.records import Alert, Incident, IncidentId

__all__ = ["TECHNIQUES", "Correlator", "technique_for"]

# MITRE ATT&CK Enterprise technique ids and names (attack.mitre.org, v15).
TECHNIQUES: dict[str, str] = {
    "T1046": "Network Service Discovery",
    "T1110": "Brute Force",
    "T1498": "Network Denial of Service",
    "T1499": "Endpoint Denial of Service",
    "T1071": "Application Layer Protocol",
    "T1190": "Exploit Public-Facing Application",
    "T1041": "Exfiltration Over C2 Channel",
    "T1557": "Adversary-in-the-Middle",
    "T1486": "Data Encrypted for Impact",
}

# Order matters: the first pattern that matches the lower-cased predicted_class wins. "ddos" must be
# tested before "dos" (distributed floods are network DoS, single-source floods endpoint DoS).
_CLASS_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), t)
    for p, t in (
        (r"port.?scan|portsweep|service.?scan|os.?scan|\bscan|recon|nmap|probe", "T1046"),
        (r"brute|patator|password|dictionary|credential|login", "T1110"),
        (r"ddos|flood|mirai.*(udp|syn|ack)|botnet.?attack", "T1498"),
        (r"\bdos\b|dos[ _-]|slowloris|slowhttp|hulk|goldeneye", "T1499"),
        (r"\bbot\b|botnet|c2|c&c|command.?and.?control|beacon|backdoor|mirai|gafgyt", "T1071"),
        (r"sql|xss|injection|web.?attack|exploit|heartbleed|rce", "T1190"),
        (r"exfil|theft", "T1041"),
        (r"mitm|arp.?spoof|spoof", "T1557"),
        (r"ransom", "T1486"),
    )
)
_DOS = {"T1498", "T1499"}
_T = TypeVar("_T")
_GENERIC = {"", "attack", "anomaly", "malicious", "unknown", "suspicious", "1", "true"}


def technique_for(predicted_class: str | None) -> str | None:
    """Return the ATT&CK technique id for a detector's class label, or None when none fits."""
    if predicted_class is None:
        return None
    label = predicted_class.strip().lower()
    if label in _GENERIC:
        return None
    for pattern, technique in _CLASS_PATTERNS:
        if pattern.search(label):
            return technique
    return None


@dataclass
class _Open:
    incident: Incident
    base_severity: int
    ports: set[int] = field(default_factory=set)


class Correlator:
    """Fold a stream of alerts into incidents (``add`` returns the new or updated incident).

    Parameters
    ----------
    window_s:
        An alert joins an open incident when it is at most this many seconds after its last alert.
    scan_ports:
        Distinct destination ports from one attacker that turn an unlabelled incident into T1046.
    max_items:
        Cap on the addresses, ports and flows an incident lists (alert ids are never capped).
    """

    def __init__(self, window_s: float = 300.0, *, scan_ports: int = 10, max_items: int = 256) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if scan_ports < 2:
            raise ValueError(f"scan_ports must be >= 2, got {scan_ports}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.window_s = float(window_s)
        self.scan_ports = scan_ports
        self.max_items = max_items
        self._open: dict[tuple[str, str, str], _Open] = {}

    def _key(self, alert: Alert, technique: str | None) -> tuple[str, str, str]:
        tech = technique or "-"
        if technique in _DOS and alert.destination_ip:
            return ("victim", alert.destination_ip, tech)
        if alert.source_ip:
            return ("attacker", alert.source_ip, tech)
        return ("victim", alert.destination_ip or "-", tech)

    def add(self, alert: Alert) -> Incident:
        """Add one alert; return the incident it opened or updated (a new version)."""
        technique = technique_for(alert.predicted_class)
        key = self._key(alert, technique)
        current = self._open.get(key)
        if current is not None and alert.timestamp - current.incident.last_seen > self.window_s:
            current = None  # window closed: a later alert starts a new incident
        if current is None:
            digest = hashlib.sha256("\x00".join((*key, alert.alert_id)).encode()).hexdigest()[:16]
            ports = {alert.destination_port} if alert.destination_port is not None else set()
            incident = Incident(
                incident_id=IncidentId(f"inc-{digest}"),
                version=1,
                first_seen=alert.timestamp,
                last_seen=alert.timestamp,
                severity=alert.severity,
                confidence=alert.score,
                alert_ids=(alert.alert_id,),
                source_ips=_one(alert.source_ip),
                destination_ips=_one(alert.destination_ip),
                destination_ports=tuple(sorted(ports)),
                flows=_flow(alert),
                predicted_class=alert.predicted_class,
                technique_id=technique,
                technique_name=TECHNIQUES.get(technique or ""),
                model_ids=(str(alert.model_id),),
            )
            current = _Open(incident, alert.severity, ports)
        else:
            inc = current.incident
            if alert.destination_port is not None:
                current.ports.add(alert.destination_port)
            current.base_severity = max(current.base_severity, alert.severity)
            incident = Incident(
                incident_id=inc.incident_id,
                version=inc.version + 1,
                first_seen=min(inc.first_seen, alert.timestamp),
                last_seen=max(inc.last_seen, alert.timestamp),
                severity=current.base_severity,
                confidence=max(inc.confidence, alert.score),
                alert_ids=(*inc.alert_ids, alert.alert_id),
                source_ips=self._merge(inc.source_ips, _one(alert.source_ip)),
                destination_ips=self._merge(inc.destination_ips, _one(alert.destination_ip)),
                destination_ports=tuple(sorted(current.ports))[: self.max_items],
                flows=self._merge(inc.flows, _flow(alert)),
                predicted_class=inc.predicted_class or alert.predicted_class,
                technique_id=inc.technique_id,
                technique_name=inc.technique_name,
                model_ids=self._merge(inc.model_ids, (str(alert.model_id),)),
            )
        if incident.technique_id is None and len(current.ports) >= self.scan_ports:
            incident = _replace_technique(incident, "T1046")
        # wide incidents (many alerts across several victims) are one step more severe
        if len(incident.alert_ids) >= 10 and len(incident.destination_ips) > 1 and incident.severity < 4:
            incident = _replace_severity(incident, incident.severity + 1)
        current.incident = incident
        self._open[key] = current
        return incident

    def expire(self, now: float) -> list[Incident]:
        """Close incidents whose window ended before ``now``; return them (their final version)."""
        closed = [k for k, o in self._open.items() if now - o.incident.last_seen > self.window_s]
        return [self._open.pop(k).incident for k in closed]

    @property
    def open_incidents(self) -> list[Incident]:
        """The incidents still accepting alerts, oldest first."""
        return sorted((o.incident for o in self._open.values()), key=lambda i: i.first_seen)

    def _merge(self, old: tuple[_T, ...], new: tuple[_T, ...]) -> tuple[_T, ...]:
        out = list(old)
        for item in new:
            if item not in out and len(out) < self.max_items:
                out.append(item)
        return tuple(out)


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _flow(alert: Alert) -> tuple[tuple[str, str, str, int], ...]:
    if alert.source_ip and alert.destination_ip and alert.transport and alert.destination_port is not None:
        return ((alert.source_ip, alert.destination_ip, alert.transport.lower(), alert.destination_port),)
    return ()


def _replace_technique(incident: Incident, technique: str) -> Incident:
    return dataclasses.replace(incident, technique_id=technique, technique_name=TECHNIQUES[technique])


def _replace_severity(incident: Incident, severity: int) -> Incident:
    return dataclasses.replace(incident, severity=severity)
