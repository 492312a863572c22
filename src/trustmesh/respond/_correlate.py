"""Correlate alerts into incidents and map them to MITRE ATT&CK techniques.

Technique: an alert's own ``technique_id`` (behaviour verdicts and other detectors that name one)
wins; otherwise it is mapped from ``predicted_class`` by :func:`technique_for`.

Correlation key: alerts with the same technique and the same attacker (``source_ip``) join one
incident while they arrive within ``window_s`` of its last alert. Denial-of-service techniques are keyed
by the victim instead (many sources, one target). Alerts without a known technique are keyed by
attacker alone; an incident whose attacker touched ``scan_ports`` or more distinct destination ports
is then classed as a port scan (T1046), and one with ``brute_force_attempts`` or more alerts all to
a single login service port (``AUTH_PORTS``: FTP, SSH, telnet, SMTP, POP3, IMAP, SMB, VMware
authd, MSSQL, MySQL, RDP, PostgreSQL, VNC, ...) as brute force (T1110).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from trustmesh.records import Alert, Incident, IncidentId

__all__ = ["AUTH_PORTS", "TECHNIQUES", "Correlator", "technique_for"]

# MITRE ATT&CK Enterprise technique ids and names (attack.mitre.org, v15).
TECHNIQUES: dict[str, str] = {
    "T1046": "Network Service Discovery",
    "T1018": "Remote System Discovery",
    "T1021": "Remote Services",
    "T1595.003": "Active Scanning: Wordlist Scanning",
    "T1110": "Brute Force",
    "T1110.001": "Brute Force: Password Guessing",
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
        (r"lateral", "T1021"),
        (r"web.?enum|wordlist|dir.?bust|dirb\b|gobuster", "T1595.003"),
        (r"host.?sweep|ping.?sweep|ipsweep", "T1018"),
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
#: Destination ports of login services, for the brute-force rule (IANA service names in comments).
AUTH_PORTS = frozenset({
    21,  # ftp
    22,  # ssh
    23,  # telnet
    25, 587,  # smtp, submission
    110, 995,  # pop3, pop3s
    143, 993,  # imap, imaps
    445,  # microsoft-ds (SMB)
    902,  # VMware authd
    1433,  # ms-sql-s
    2323,  # telnet (alternate, IoT)
    3306,  # mysql
    3389,  # ms-wbt-server (RDP)
    5432,  # postgresql
    5900,  # vnc
})
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
    ports: set[int] = field(default_factory=set)  # every distinct port (for the scan heuristic)
    shown_ports: list[int] = field(default_factory=list)  # the first max_items, sorted, for the record
    alert_ids: list[str] = field(default_factory=list)
    # insertion-ordered lists plus sets for O(1) membership (incidents can reach 10^5 alerts)
    lists: dict[str, list[Any]] = field(default_factory=dict)
    seen: dict[str, set[Any]] = field(default_factory=dict)


class Correlator:
    """Fold a stream of alerts into incidents (``add`` returns the new or updated incident).

    Parameters
    ----------
    window_s:
        An alert joins an open incident when it is at most this many seconds after its last alert.
    scan_ports:
        Distinct destination ports from one attacker that turn an unlabelled incident into T1046.
    max_items:
        Cap on the addresses, ports and flows an incident lists.
    max_alert_ids:
        Cap on the alert ids an incident lists (``alert_count`` keeps counting); bounds the record size.
    """

    def __init__(self, window_s: float = 300.0, *, scan_ports: int = 10, brute_force_attempts: int = 10,
                 max_items: int = 256,
                 max_alert_ids: int = 1000) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if scan_ports < 2:
            raise ValueError(f"scan_ports must be >= 2, got {scan_ports}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_alert_ids < 1:
            raise ValueError(f"max_alert_ids must be >= 1, got {max_alert_ids}")
        self.window_s = float(window_s)
        self.scan_ports = scan_ports
        if brute_force_attempts < 2:
            raise ValueError(f"brute_force_attempts must be >= 2, got {brute_force_attempts}")
        self.brute_force_attempts = brute_force_attempts
        self.max_items = max_items
        self.max_alert_ids = max_alert_ids
        self._open: dict[tuple[str, str, str], _Open] = {}

    def _key(self, alert: Alert, technique: str | None) -> tuple[str, str, str]:
        tech = technique or "-"
        if technique in _DOS and alert.destination_ip:
            return ("victim", alert.destination_ip, tech)
        if alert.source_ip:
            return ("attacker", alert.source_ip, tech)
        return ("victim", alert.destination_ip or "-", tech)

    def _merge(self, state: _Open, name: str, items: tuple[Any, ...]) -> tuple[Any, ...]:
        values = state.lists.setdefault(name, [])
        seen = state.seen.setdefault(name, set())
        for item in items:
            if item not in seen and len(values) < self.max_items:
                seen.add(item)
                values.append(item)
        return tuple(values)

    def add(self, alert: Alert) -> Incident:
        """Add one alert; return the incident it opened or updated (a new version)."""
        technique = alert.technique_id or technique_for(alert.predicted_class)
        key = self._key(alert, technique)
        state = self._open.get(key)
        if state is not None and alert.timestamp - state.incident.last_seen > self.window_s:
            state = None  # window closed: a later alert starts a new incident
        if state is None:
            digest = hashlib.sha256("\x00".join((*key, alert.alert_id)).encode()).hexdigest()[:16]
            first = True
            state = _Open(incident=None, base_severity=alert.severity)  # type: ignore[arg-type]
            incident_id, version = IncidentId(f"inc-{digest}"), 1
            first_seen = last_seen = alert.timestamp
            confidence, predicted_class = alert.score, alert.predicted_class
        else:
            inc = state.incident
            first = False
            incident_id, version = inc.incident_id, inc.version + 1
            first_seen, last_seen = min(inc.first_seen, alert.timestamp), max(inc.last_seen, alert.timestamp)
            confidence, predicted_class = max(inc.confidence,
                                              alert.score), inc.predicted_class or alert.predicted_class
            state.base_severity = max(state.base_severity, alert.severity)
        port = alert.destination_port
        if port is not None and port not in state.ports:
            state.ports.add(port)
            if len(state.shown_ports) < self.max_items:
                bisect.insort(state.shown_ports, port)
        if len(state.alert_ids) < self.max_alert_ids:
            state.alert_ids.append(alert.alert_id)
            alert_ids = tuple(state.alert_ids)
        else:
            alert_ids = state.incident.alert_ids  # capped: reuse the (identical) tuple
        count = 1 if first else state.incident.alert_count + 1
        tech = technique if first else state.incident.technique_id
        if tech is None and len(state.ports) >= self.scan_ports:
            tech = "T1046"
        elif tech is None and count >= self.brute_force_attempts and len(state.ports) == 1 \
                and next(iter(state.ports)) in AUTH_PORTS:
            tech = "T1110"  # repeated connections to one login service: password guessing
        destinations = self._merge(state, "dst", _one(alert.destination_ip))
        severity = state.base_severity
        # wide incidents (many alerts across several victims) are one step more severe
        if count >= 10 and len(destinations) > 1 and severity < 4:
            severity += 1
        incident = Incident(
            incident_id=incident_id,
            version=version,
            first_seen=first_seen,
            last_seen=last_seen,
            severity=severity,
            confidence=confidence,
            alert_ids=alert_ids,
            source_ips=self._merge(state, "src", _one(alert.source_ip)),
            destination_ips=destinations,
            destination_ports=tuple(state.shown_ports),
            flows=self._merge(state, "flows", _flow(alert)),
            predicted_class=predicted_class,
            technique_id=tech,
            technique_name=(alert.technique_name if first and alert.technique_id == tech and alert.technique_name
                            else state.incident.technique_name if not first and state.incident.technique_id == tech
                            and state.incident.technique_name else TECHNIQUES.get(tech or "")),
            model_ids=self._merge(state, "models", (str(alert.model_id),)),
            alert_count=count,
        )
        state.incident = incident
        self._open[key] = state
        return incident

    def expire(self, now: float) -> list[Incident]:
        """Close incidents whose window ended before ``now``; return them (their final version)."""
        closed = [k for k, o in self._open.items() if now - o.incident.last_seen > self.window_s]
        return [self._open.pop(k).incident for k in closed]

    @property
    def open_incidents(self) -> list[Incident]:
        """The incidents still accepting alerts, oldest first."""
        return sorted((o.incident for o in self._open.values()), key=lambda i: i.first_seen)


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _flow(alert: Alert) -> tuple[tuple[str, str, str, int], ...]:
    if alert.source_ip and alert.destination_ip and alert.transport and alert.destination_port is not None:
        return ((alert.source_ip, alert.destination_ip, alert.transport.lower(), alert.destination_port),)
    return ()
