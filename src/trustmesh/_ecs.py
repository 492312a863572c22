"""The one alert and incident document: Elastic Common Schema (ECS) 8.x, shared by every output.

``detect --format jsonl``, the ledger's ``alert``/``incident`` entries, every sink (JSON lines,
syslog/CEF, Redis, bulk NDJSON, webhooks) and the REST API all carry the document built here, so a
SOC sees one shape wherever it reads trustmesh. docs/soc.md describes it field by field.

Choices (ECS leaves them to the producer):

* ``@timestamp`` is ISO 8601 in UTC with microseconds and a ``Z``. It is the flow's start when the
  source gave epoch time. Sources with *relative* times (some Zeek logs count seconds from the start
  of the capture) would otherwise read as 1970: a time before :data:`RELATIVE_BEFORE` (1990-01-01) is
  treated as relative, ``@timestamp`` is then when trustmesh made the document (ECS: "if the event
  source has no original timestamp, this value is typically populated by the first time the event
  was received by the pipeline"), and the source's own value is kept as ``trustmesh.flow.ts`` with
  ``trustmesh.flow.ts_kind: "relative"``. ``event.start``/``event.end`` are only written for epoch times.
* ``event.severity`` is 1 (low), 2 (medium), 3 (high) or 4 (critical): see :func:`alert_severity`.
  ``event.risk_score`` is the detector score times 100; ``event.risk_score_norm`` the same, 0..100.
* ``network.community_id`` is Community ID v1 (github.com/corelight/community-id-spec), seed 0.

This module imports only the standard library, so :mod:`trustmesh.records` can delegate to it.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import ipaddress
import math
import socket
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # records imports this module lazily; only the type checker needs the names
    from trustmesh.records import Alert, Incident

__all__ = [
    "ECS_VERSION",
    "RELATIVE_BEFORE",
    "TECHNIQUES",
    "alert_document",
    "alert_from_document",
    "alert_severity",
    "community_id",
    "flatten",
    "incident_document",
    "iso_utc",
    "technique_info",
]

ECS_VERSION = "8.12.0"
#: Times before this (1990-01-01T00:00:00Z) are taken as relative to the start of a capture.
RELATIVE_BEFORE = 631_152_000.0
_MAX_LISTED = 50  # ids/addresses listed in one incident document (the counts are always complete)

# MITRE ATT&CK Enterprise (attack.mitre.org): technique id -> (name, tactic id, tactic name).
# Sub-techniques ("T1110.001") carry their own name; the tactic is the parent's.
TECHNIQUES: dict[str, tuple[str, str, str]] = {
    "T1018": ("Remote System Discovery", "TA0007", "Discovery"),
    "T1021": ("Remote Services", "TA0008", "Lateral Movement"),
    "T1041": ("Exfiltration Over C2 Channel", "TA0010", "Exfiltration"),
    "T1046": ("Network Service Discovery", "TA0007", "Discovery"),
    "T1071": ("Application Layer Protocol", "TA0011", "Command and Control"),
    "T1110": ("Brute Force", "TA0006", "Credential Access"),
    "T1110.001": ("Password Guessing", "TA0006", "Credential Access"),
    "T1190": ("Exploit Public-Facing Application", "TA0001", "Initial Access"),
    "T1486": ("Data Encrypted for Impact", "TA0040", "Impact"),
    "T1498": ("Network Denial of Service", "TA0040", "Impact"),
    "T1499": ("Endpoint Denial of Service", "TA0040", "Impact"),
    "T1557": ("Adversary-in-the-Middle", "TA0006", "Credential Access"),
    "T1595": ("Active Scanning", "TA0043", "Reconnaissance"),
    "T1595.001": ("Scanning IP Blocks", "TA0043", "Reconnaissance"),
    "T1595.002": ("Vulnerability Scanning", "TA0043", "Reconnaissance"),
    "T1595.003": ("Wordlist Scanning", "TA0043", "Reconnaissance"),
}

# How much harm a verdict's technique means when it is real (before confidence is considered).
# 4: an attacker acting inside or destroying (lateral movement, C2, exploitation, encryption);
# 3: service loss or credential attacks; 2: discovery and scanning, and verdicts with no technique.
_IMPACT: dict[str, int] = {
    "T1021": 4, "T1071": 4, "T1190": 4, "T1486": 4, "T1041": 4, "T1557": 4,
    "T1498": 3, "T1499": 3, "T1110": 3,
    "T1046": 2, "T1018": 2, "T1595": 2,
}  # fmt: skip
_IANA = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ipv6-icmp": 58, "icmpv6": 58,
         "sctp": 132}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# severity


def technique_info(technique_id: str | None) -> tuple[str, str, str] | None:
    """Return (name, tactic id, tactic name) of an ATT&CK technique or sub-technique, or None."""
    if not technique_id:
        return None
    if technique_id in TECHNIQUES:
        return TECHNIQUES[technique_id]
    parent = TECHNIQUES.get(technique_id.split(".")[0])
    return None if parent is None else ("", parent[1], parent[2])


def alert_severity(score: float, threshold: float, technique_id: str | None = None) -> int:
    """Return an ECS ``event.severity`` 1..4 from what a verdict means and how sure it is.

    The technique sets the impact (:data:`_IMPACT`: 4 lateral movement/C2/exploitation, 3 DoS and
    brute force, 2 discovery/scans and verdicts without a technique). The margin above the
    threshold, ``(score - threshold) / (1 - threshold)``, moves it: under 1/3 one step down (a
    borderline call), 0.9 or more one step up for impacts below 3 (a sure scan is worth a look
    soon). A bare anomaly score can therefore reach "high" but never "critical".
    """
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must be in [0, 1], got {score}")
    base = _IMPACT.get((technique_id or "").split(".")[0], 2)
    room = 1.0 - threshold
    margin = 1.0 if room <= 0 else max(0.0, min(1.0, (score - threshold) / room))
    if margin < 1 / 3:
        base -= 1
    elif margin >= 0.9 and base < 3:
        base += 1
    return max(1, min(4, base))


# --------------------------------------------------------------------------------------------------
# time


@functools.lru_cache(maxsize=4096)  # one event.created per batch; repeated flow starts
def iso_utc(ts: float) -> str:
    """Format epoch seconds as ISO 8601 UTC with microseconds: ``2021-06-06T13:59:46.457984Z``."""
    if not math.isfinite(ts):
        raise ValueError(f"timestamp must be finite, got {ts}")
    when = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    if when.year < 1000:  # isoformat pads the year to four digits; keep strftime's form there
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z" (faster than strftime)


def _now() -> float:
    return dt.datetime.now(tz=dt.UTC).timestamp()


def _times(start: float, end: float | None, created: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (top-level/event time fields, trustmesh.flow time fields) for a source time range."""
    if start >= RELATIVE_BEFORE:
        event: dict[str, Any] = {"start": iso_utc(start)}
        if end is not None:
            event["end"] = iso_utc(end)
        return {"@timestamp": iso_utc(start), "event": event}, {"ts": start, "ts_kind": "epoch"}
    flow: dict[str, Any] = {"ts": start, "ts_kind": "relative"}
    if end is not None:
        flow["ts_end"] = end
    return {"@timestamp": iso_utc(created), "event": {}}, flow


# --------------------------------------------------------------------------------------------------
# Community ID v1

# ICMP types that have a counterpart (request <-> reply), from Zeek as the spec prescribes.
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                139: 140, 140: 139, 144: 145, 145: 144}  # fmt: skip


@functools.lru_cache(maxsize=65_536)  # flows of one scan or session share their tuple
def community_id(saddr: str, daddr: str, sport: int | None, dport: int | None, proto: int | str,
                 *, seed: int = 0) -> str | None:
    """Return the Community ID v1 flow hash (``"1:" + base64(sha1(...))``), or None if not computable.

    For ICMP (1) and ICMPv6 (58) ``sport``/``dport`` are the ICMP type and code; they are mapped to
    Zeek's (type, counter-type) pair, and one-way messages keep their direction, as the spec says.
    Protocols other than TCP, UDP, SCTP and ICMP hash the addresses and protocol only.
    """
    if isinstance(proto, str):
        number = _IANA.get(proto.strip().lower())
        if number is None:
            return None
        proto = number
    try:
        src, dst = ipaddress.ip_address(saddr), ipaddress.ip_address(daddr)
    except ValueError:
        return None
    if src.version != dst.version or not 0 <= proto <= 255 or not 0 <= seed <= 0xFFFF:
        return None
    if proto == 58 and src.version == 4:
        proto = 1  # ICMPv6 cannot run over IPv4; nfstream-style "icmp" labels on v6 are handled below
    if proto == 1 and src.version == 6:
        proto = 58
    one_way = False
    ports: tuple[int, int] | None = None
    if proto in (1, 58):
        if sport is None or dport is None:
            return None
        pairs = _ICMP4_PAIRS if proto == 1 else _ICMP6_PAIRS
        if sport in pairs:
            ports = (sport, pairs[sport])
        else:
            ports, one_way = (sport, dport), True
    elif proto in (6, 17, 132):
        if sport is None or dport is None:
            return None
        ports = (sport, dport)
    if ports is not None and not all(0 <= p <= 0xFFFF for p in ports):
        return None
    a, b = src.packed, dst.packed
    pa, pb = ports if ports is not None else (0, 0)
    if not one_way and (b, pb) < (a, pa):
        a, b, pa, pb = b, a, pb, pa
    data = struct.pack("!H", seed) + a + b + struct.pack("!BB", proto, 0)
    if ports is not None:
        data += struct.pack("!HH", pa, pb)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")  # noqa: S324 (the spec's hash)


# --------------------------------------------------------------------------------------------------
# documents


@functools.cache
def _observer() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("trustmesh")
    except PackageNotFoundError:
        ver = "0.0.0"
    out = {"vendor": "trustmesh", "product": "trustmesh", "type": "ids", "version": ver,
           "hostname": socket.gethostname()}  # fmt: skip
    return {k: v for k, v in out.items() if v}  # no empty fields (an unnamed host)


@functools.lru_cache(maxsize=65_536)  # the same hosts recur in every batch
def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


@functools.lru_cache(maxsize=65_536)
def _direction(src: Any, dst: Any) -> str:
    if src is None or dst is None:
        return "unknown"
    inside_src, inside_dst = src.is_private or src.is_loopback, dst.is_private or dst.is_loopback
    if inside_src and inside_dst:
        return "internal"
    if inside_src:
        return "outbound"
    if inside_dst:
        return "inbound"
    return "external"


def _threat(technique_id: str | None, technique_name: str | None) -> dict[str, Any] | None:
    if not technique_id:
        return None
    info = technique_info(technique_id)
    parent_id = technique_id.split(".")[0]
    parent = TECHNIQUES.get(parent_id)
    name = technique_name or (info[0] if info else "")
    url = "https://attack.mitre.org/techniques/" + technique_id.replace(".", "/") + "/"
    threat: dict[str, Any] = {"framework": "MITRE ATT&CK"}
    if "." in technique_id:
        threat["technique"] = {
            "id": [parent_id], "reference": [f"https://attack.mitre.org/techniques/{parent_id}/"],
            "subtechnique": {"id": [technique_id], "reference": [url], **({"name": [name]} if name else {})},
            **({"name": [parent[0]]} if parent else {}),
        }  # fmt: skip
    else:
        threat["technique"] = {"id": [technique_id], "reference": [url], **({"name": [name]} if name else {})}
    if info is not None:
        threat["tactic"] = {"id": [info[1]], "name": [info[2]],
                            "reference": [f"https://attack.mitre.org/tactics/{info[1]}/"]}  # fmt: skip
    return threat


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)  # numpy scalars (behaviour evidence counts) -> Python numbers
    if callable(item):
        try:
            return _json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _drop_empty(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            value = _drop_empty(value)
            if not value:
                continue
        elif value is None or value == [] or value == "":
            continue
        out[key] = value
    return out


@functools.lru_cache(maxsize=65_536)  # the same hosts recur in every batch
def _addr(value: str | None) -> tuple[str, int, bool] | None:
    """Return (canonical text, IP version, private or loopback) of an address, or None if it is not one."""
    ip = _ip(value)
    if ip is None:
        return None
    return str(ip), ip.version, ip.is_private or ip.is_loopback


def _side(a: tuple[str, int, bool] | None, port: int | None) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if a is not None:
        out["ip"] = a[0]
    if port is not None:
        out["port"] = port
    return out or None


_INSIDE = {(True, True): "internal", (True, False): "outbound", (False, True): "inbound", (False, False): "external"}


def alert_document(alert: Alert, *, created: float | None = None) -> dict[str, Any]:
    """Return ``alert`` as a nested ECS 8.x document (see the module docstring for the choices).

    ``created`` (epoch seconds, default now) is ``event.created``: when trustmesh made the alert.
    Pass it to make the document reproducible (the pipeline passes its clock's time).

    Empty values (None, ``""``, ``[]``) and objects left empty are not written. The document is
    built field by field with only what is present (no second pass over it); per-address work
    (parsing, canonical text, direction) is cached per distinct address.
    """
    created = _now() if created is None else float(created)
    start = float(alert.timestamp)
    created_text = iso_utc(created)
    event: dict[str, Any] = {}
    flow: dict[str, Any] = {}
    if alert.flow_id is not None and alert.flow_id != "":
        flow["id"] = alert.flow_id
    flow["ts"] = start
    if start >= RELATIVE_BEFORE:
        stamp = iso_utc(start)
        flow["ts_kind"] = "epoch"
    else:
        stamp = created_text
        flow["ts_kind"] = "relative"
    src, dst = _addr(alert.source_ip), _addr(alert.destination_ip)
    transport = (alert.transport or "").lower() or None
    if transport in {"icmp", "ipv6-icmp", "icmpv6"} and src is not None and src[1] == 6:
        transport = "ipv6-icmp"
    iana = _IANA.get(transport or "")
    cid = None
    if src is not None and dst is not None and transport is not None:
        cid = community_id(src[0], dst[0], alert.source_port, alert.destination_port, transport)
    detector = alert.detector or "ml"
    extra = alert.extra
    suricata = extra.get("suricata") if extra and isinstance(extra.get("suricata"), Mapping) else None
    kind = alert.predicted_class or (suricata or {}).get("category") or alert.technique_name
    if not kind:
        known = technique_info(alert.technique_id)
        kind = (known[0] if known and known[0] else None) or "anomaly"
    rule: dict[str, Any]
    if suricata is not None:
        rule = {}
        for key, value in (("id", str(suricata.get("signature_id", ""))), ("name", suricata.get("signature")),
                           ("category", suricata.get("category")), ("version", str(suricata.get("rev", "")) or None),
                           ("ruleset", "suricata")):
            if value is not None and value != "" and value != []:
                rule[key] = value
        if isinstance(rule.get("name"), dict) or isinstance(rule.get("category"), dict):
            rule = _drop_empty(rule)  # hostile EVE: an object where a string belongs
        event_types = ["connection", "denied" if suricata.get("action") == "blocked" else "allowed"]
        rule_name = suricata.get("signature")
    else:
        rule_name = f"trustmesh {detector}: {kind}"
        rule = {"id": f"{detector}:{alert.model_id}", "name": rule_name, "ruleset": f"trustmesh-{detector}",
                "category": kind}  # fmt: skip
        event_types = ["connection", "info"]
    sport, dport = alert.source_port, alert.destination_port
    where = f"{alert.source_ip or '?'}:{sport if sport is not None else '-'}"
    to = f"{alert.destination_ip or '?'}:{dport if dport is not None else '-'}"
    message = (f"{rule_name} {where} -> {to}"
               f"{' ' + alert.technique_id if alert.technique_id else ''} score {alert.score:.3f}")  # fmt: skip
    risk = round(alert.score * 100, 3)
    event = {
        "kind": "alert", "category": ["network", "intrusion_detection"], "type": event_types,
        "outcome": "unknown", "severity": int(alert.severity), "id": alert.alert_id,
        "dataset": "trustmesh.alert", "module": "trustmesh", "provider": detector,
        "created": created_text, "risk_score": risk, "risk_score_norm": risk,
    }  # fmt: skip
    if not alert.alert_id:
        del event["id"]
    if start >= RELATIVE_BEFORE:
        event["start"] = stamp
    doc: dict[str, Any] = {"@timestamp": stamp, "message": message, "ecs": {"version": ECS_VERSION},
                           "event": event, "observer": dict(_observer())}  # fmt: skip
    side = _side(src, sport)
    if side is not None:
        doc["source"] = side
    side = _side(dst, dport)
    if side is not None:
        doc["destination"] = side
    network: dict[str, Any] = {}
    if transport is not None:
        network["transport"] = transport
    if iana is not None:
        network["iana_number"] = str(iana)
    app = (alert.application or "").lower()
    if app not in {"", "-"}:
        network["protocol"] = app
    if src is not None:
        network["type"] = "ipv4" if src[1] == 4 else "ipv6"
    if cid is not None:
        network["community_id"] = cid
    network["direction"] = "unknown" if src is None or dst is None else _INSIDE[(src[2], dst[2])]
    doc["network"] = network
    if src is not None or dst is not None:
        doc["related"] = {"ip": sorted({a[0] for a in (src, dst) if a is not None})}
    if rule:
        doc["rule"] = rule
    threat = _threat(alert.technique_id, alert.technique_name)
    if threat is not None:
        doc["threat"] = threat
    trustmesh: dict[str, Any] = {"alert_id": alert.alert_id, "score": alert.score, "threshold": alert.threshold,
                                 "model_id": alert.model_id, "detector": detector, "source": alert.source_name,
                                 "predicted_class": alert.predicted_class}  # fmt: skip
    for key in ("alert_id", "score", "threshold", "model_id", "source", "predicted_class"):
        value = trustmesh[key]
        if value is None or value == "":
            del trustmesh[key]
    trustmesh["flow"] = flow
    if extra:
        safe = _drop_empty(_json_safe(dict(extra)))
        if safe:
            trustmesh["extra"] = safe
    doc["trustmesh"] = trustmesh
    return doc


def alert_from_document(doc: Mapping[str, Any]) -> Alert:
    """Rebuild the :class:`~trustmesh.records.Alert` an :func:`alert_document` was made from.

    Raises ``ValueError`` naming the missing or wrong field (ledger entries, sink lines and API
    bodies are untrusted input).
    """
    from trustmesh.records import Alert, FlowId, ModelId

    try:
        tm = doc["trustmesh"]
        flow = tm["flow"]
        threat = doc.get("threat", {}).get("technique", {})
        sub = threat.get("subtechnique", {})
        technique = (sub.get("id") or threat.get("id") or [None])[0]
        names = sub.get("name") or threat.get("name") or [None]
        return Alert(
            alert_id=str(tm["alert_id"]), timestamp=float(flow["ts"]), flow_id=FlowId(str(flow["id"])),
            model_id=ModelId(str(tm["model_id"])), score=float(tm["score"]), threshold=float(tm["threshold"]),
            source_ip=doc.get("source", {}).get("ip"), source_port=doc.get("source", {}).get("port"),
            destination_ip=doc.get("destination", {}).get("ip"),
            destination_port=doc.get("destination", {}).get("port"),
            transport=doc.get("network", {}).get("transport"), application=doc.get("network", {}).get("protocol"),
            predicted_class=tm.get("predicted_class"), severity=int(doc["event"]["severity"]),
            source_name=tm.get("source"), extra=dict(tm.get("extra") or {}), technique_id=technique,
            technique_name=names[0] if technique else None, detector=tm.get("detector"),
        )  # fmt: skip
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a trustmesh ECS alert document: missing or wrong field {exc}") from None


def incident_document(incident: Incident, *, created: float | None = None) -> dict[str, Any]:
    """Return one version of ``incident`` as a nested ECS 8.x document.

    ``event.id`` is ``<incident_id>:v<version>`` (each version is its own event); sinks that keep one
    record per incident use ``trustmesh.incident.id``. Lists of alert ids and addresses are capped at
    50 entries; ``trustmesh.incident.alert_count`` counts every alert.
    """
    created = _now() if created is None else float(created)
    times, flow_time = _times(float(incident.first_seen), float(incident.last_seen), created)
    if flow_time["ts_kind"] == "epoch":
        times["@timestamp"] = iso_utc(float(incident.last_seen))  # the time of this version's latest activity
    sources = [str(a) for a in map(_ip, incident.source_ips) if a is not None]
    targets = [str(a) for a in map(_ip, incident.destination_ips) if a is not None]
    one_src = _ip(sources[0]) if len(sources) == 1 else None
    one_dst = _ip(targets[0]) if len(targets) == 1 else None
    kind = incident.predicted_class or (incident.technique_name or "anomaly")
    message = (f"trustmesh incident {incident.incident_id} v{incident.version}: {kind}"
               f"{' ' + incident.technique_id if incident.technique_id else ''}, {incident.alert_count} alert(s) "
               f"from {', '.join(sources[:3]) or '?'} to {len(set(targets))} host(s)")  # fmt: skip
    doc: dict[str, Any] = {
        "@timestamp": times["@timestamp"],
        "message": message,
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "alert", "category": ["intrusion_detection", "network"], "type": ["info"],
            "outcome": "unknown", "severity": int(incident.severity),
            "id": f"{incident.incident_id}:v{incident.version}", "dataset": "trustmesh.incident",
            "module": "trustmesh", "created": iso_utc(created),
            "risk_score": round(incident.confidence * 100, 3), "risk_score_norm": round(incident.confidence * 100, 3),
            **times["event"],
        },  # fmt: skip
        "observer": dict(_observer()),
        "source": {"ip": None if one_src is None else str(one_src)},
        "destination": {"ip": None if one_dst is None else str(one_dst),
                        "port": incident.destination_ports[0] if len(incident.destination_ports) == 1 else None},
        "network": {"direction": _direction(one_src, one_dst) if one_src and one_dst else None},
        "related": {"ip": sorted(set(sources) | set(targets))[:_MAX_LISTED]},
        "rule": {"id": f"incident:{incident.technique_id or 'untyped'}", "name": f"trustmesh incident: {kind}",
                 "ruleset": "trustmesh-correlation", "category": kind},  # fmt: skip
        "threat": _threat(incident.technique_id, incident.technique_name),
        "trustmesh": {
            "incident": {
                "id": incident.incident_id, "version": incident.version, "alert_count": incident.alert_count,
                "alert_ids": list(incident.alert_ids[:_MAX_LISTED]), "confidence": incident.confidence,
                "source_ips": sources[:_MAX_LISTED], "destination_ips": targets[:_MAX_LISTED],
                "destination_ports": list(incident.destination_ports[:_MAX_LISTED]),
                "model_ids": list(incident.model_ids), "predicted_class": incident.predicted_class,
                "first_seen": incident.first_seen, "last_seen": incident.last_seen, "ts_kind": flow_time["ts_kind"],
            },
        },  # fmt: skip
    }
    return _drop_empty(doc)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return a nested document with dotted keys (``{"event": {"kind": x}}`` -> ``{"event.kind": x}``).

    Objects inside lists are kept as they are; ``trustmesh.extra`` is kept whole (free-form data).
    """
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name != "trustmesh.extra":
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
