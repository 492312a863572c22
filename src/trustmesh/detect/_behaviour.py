"""Behaviour detectors: scans, sweeps, floods, brute force, web enumeration and lateral movement.

The engine keeps, per actor (the flow originator ``src_ip``), the canonical flows of the last
``slow_window_s`` seconds as compact records and slides windows over them (``slow_window_s`` for very
slow port scans; ``long_window_s`` for port scans, host sweeps and slow brute force; ``short_window_s``
for brute force, web enumeration and lateral logins; ``flood_window_s`` for floods; ``burst_window_s``
for parallel login attempts). A detector fires when a monotone count in one window
crosses its threshold; every record of the firing group inside that window becomes evidence, and
verdicts of one actor, class and technique are merged into one episode while evidence keeps coming.

Nothing here knows an address plan or a site's ports: a flow's role is read from its shape (TCP
handshake state, packets, payload bytes both ways) and from the well-known meaning of ``service``
(as nDPI/Zeek name it) or, when the meter gave none, of the destination port (login and web
services only). Multicast and broadcast destinations are ignored (they are not host probes).

Order does not matter: records are kept sorted by flow start, and an update re-evaluates every
window whose right end is at or after the earliest new record, so streaming ``update`` over batches in
any order equals one ``detect`` over the whole table while the records are retained (see
docs/detectors.md). Memory is bounded by ``max_hosts`` actors x ``max_records_per_host`` records and by
evicting actors idle for longer than ``slow_window_s + max_lateness_s``.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from trustmesh.errors import InputError

__all__ = [
    "BEHAVIOUR_KINDS",
    "BehaviourConfig",
    "BehaviourEngine",
    "BehaviourVerdict",
    "FlowRef",
    "TECHNIQUE_NAMES",
    "severity_for",
]

#: The behaviour classes (lab truth ``kind``, verdict ``kind``, ``Alert.predicted_class``).
BEHAVIOUR_KINDS = (
    "port-scan", "host-sweep", "syn-flood", "udp-flood", "icmp-flood", "brute-force", "web-enumeration",
    "lateral-movement",
)  # fmt: skip

#: MITRE ATT&CK Enterprise names of the techniques the engine reports (attack.mitre.org).
TECHNIQUE_NAMES: Mapping[str, str] = {
    "T1046": "Network Service Discovery",
    "T1018": "Remote System Discovery",
    "T1498": "Network Denial of Service",
    "T1499": "Endpoint Denial of Service",
    "T1110": "Brute Force",
    "T1110.001": "Brute Force: Password Guessing",
    "T1595.003": "Active Scanning: Wordlist Scanning",
    "T1021": "Remote Services",
}

# Login services by the names nDPI (nfstream) and Zeek give them.
_LOGIN_SERVICES = frozenset({
    "ssh", "telnet", "ftp", "rdp", "vnc", "mysql", "postgresql", "pgsql", "mssql", "tds", "smb", "smbv1",
    "smbv23", "ldap", "imap", "imaps", "pop3", "pop3s", "rlogin", "rsh", "rfb", "kerberos", "radius", "sip",
    "mqtt", "redis", "mongodb", "oracle", "snmp-auth",
})  # fmt: skip
# Well-known login ports (IANA), used only when the meter named no service. Port 25 is left out on
# purpose: mail relays legitimately open many short SMTP sessions.
_LOGIN_PORTS = frozenset({21, 22, 23, 110, 143, 445, 465, 587, 993, 995, 1433, 1883, 2222, 2323, 3306,
                          3389, 5432, 5900, 5901, 6379, 8883})  # fmt: skip
# Remote-access services (ATT&CK T1021 sub-techniques: SSH, RDP, SMB, VNC, WinRM, telnet) for lateral logins.
_REMOTE_SERVICES = frozenset({"ssh", "telnet", "rdp", "vnc", "rfb", "smb", "smbv1", "smbv23", "winrm"})
_REMOTE_PORTS = frozenset({22, 23, 445, 2222, 3389, 5900, 5901, 5985, 5986})
_WEB_SERVICES = frozenset({"http", "http_proxy", "http_connect", "ssl", "tls", "https", "quic"})
_WEB_PORTS = frozenset({80, 443, 8000, 8008, 8080, 8081, 8443, 8888})
_NO_HANDSHAKE = frozenset({"S0", "REJ", "RSTOS0", "SH", "SHR", "RSTRH"})  # the responder never sent SYN/ACK
_HANDSHAKE = frozenset({"S1", "SF", "RSTO", "RSTR", "S2", "S3"})  # both sides sent SYN
_PROBE_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "RSTO", "RSTR", "OTH", "S1"})

# record categories (bit mask)
_PROBE_TCP, _PROBE_UDP, _PROBE_ICMP, _LOGIN, _WEB, _UDP, _ICMP, _ESTABLISHED, _REMOTE = (1 << i for i in range(9))
_PROBES = _PROBE_TCP | _PROBE_UDP | _PROBE_ICMP


@dataclass(frozen=True, slots=True)
class BehaviourConfig:
    """Thresholds and window lengths of the behaviour detectors (storable in a site baseline).

    Counts are per actor within the named window; see docs/detectors.md for the signal each one reads.
    """

    short_window_s: float = 60.0
    long_window_s: float = 900.0
    flood_window_s: float = 10.0
    slow_window_s: float = 3600.0  # very slow scans (a few ports an hour, e.g. internet background scanners)
    scan_ports: int = 8  # distinct probed (proto, port) on one victim within long_window_s
    slow_scan_ports: int = 20  # ... within slow_window_s
    sweep_hosts: int = 10  # distinct probed victims within long_window_s
    sweep_pairs: int = 20  # ... or this many distinct probed (victim, port) pairs over >= 3 victims
    brute_force_attempts: int = 10  # similar login sessions to one victim service within short_window_s
    slow_brute_force_attempts: int = 30  # ... within long_window_s
    brute_force_similar_share: float = 0.9  # share of those sessions of (nearly) the same size
    brute_force_parallel: int = 3  # similar login sessions to one victim service opened within burst_window_s
    burst_window_s: float = 1.0
    sweep_max_probes_per_victim: int = 20  # a victim (port) probed more often is scanned (flooded): not sweep (scan) evidence
    web_requests: int = 30  # HTTP(S) connections to one victim service within short_window_s
    web_distinct_requests: int = 6  # distinct request sizes among them (many different paths)
    web_error_share: float = 0.4  # share of responses with the modal (error page) size
    flood_packets: float = 250.0  # packets to one victim within flood_window_s (long flows pro rata)
    udp_flood_max_reply_ratio: float = 0.2  # victim packets / actor packets for a UDP flood
    udp_flood_min_flows: int = 20  # UDP flood: many source ports, or ...
    udp_flood_max_payload: float = 100.0  # ... small packets (bytes of payload per packet)
    lateral_min_prior_sessions: int = 3  # established same-LAN sessions before the episode: inside host
    lateral_logins_hosts: int = 2  # login sessions to this many LAN hosts within short_window_s
    max_hosts: int = 50_000
    max_records_per_host: int = 20_000
    max_evidence: int = 20_000  # flow uids kept per verdict (counts keep growing)
    max_lateness_s: float = 300.0  # how late (by flow start) a flow may arrive and still be evaluated

    def __post_init__(self) -> None:
        for name in ("short_window_s", "long_window_s", "slow_window_s", "flood_window_s", "burst_window_s",
                     "flood_packets",
                     "web_error_share", "brute_force_similar_share",
                     "udp_flood_max_payload", "udp_flood_max_reply_ratio"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("scan_ports", "slow_scan_ports", "sweep_hosts", "sweep_pairs", "brute_force_attempts", "slow_brute_force_attempts",
                     "web_requests", "web_distinct_requests", "udp_flood_min_flows", "lateral_logins_hosts",
                     "brute_force_parallel", "sweep_max_probes_per_victim"):
            if int(getattr(self, name)) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        for name in ("max_hosts", "max_records_per_host", "max_evidence"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lateral_min_prior_sessions < 0 or self.max_lateness_s < 0:
            raise ValueError("lateral_min_prior_sessions and max_lateness_s must be >= 0")
        if not (self.burst_window_s <= self.flood_window_s <= self.short_window_s <= self.long_window_s
                <= self.slow_window_s):
            raise ValueError("windows must satisfy burst_window_s <= flood_window_s <= short_window_s <= "
                             "long_window_s <= slow_window_s")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> BehaviourConfig:
        """Rebuild a config from ``to_dict`` output; unknown keys and bad values raise ``InputError``."""
        if not isinstance(doc, Mapping):
            raise InputError(f"behaviour config must be a mapping, got {type(doc).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - set(names))
        if unknown:
            raise InputError(f"behaviour config: unknown key(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, raw in doc.items():
            want = int if names[key].type in ("int", int) else float
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                raise InputError(f"behaviour config: {key} must be a number, got {raw!r}")
            if want is int and float(raw) != int(raw):
                raise InputError(f"behaviour config: {key} must be an integer, got {raw!r}")
            values[key] = want(raw)
        try:
            return cls(**values)
        except ValueError as exc:
            raise InputError(f"behaviour config: {exc}") from None


@dataclass(frozen=True, slots=True)
class BehaviourVerdict:
    """One behaviour detected for one actor: class, ATT&CK technique, confidence and evidence."""

    kind: str
    host: str
    technique_id: str
    technique_name: str
    confidence: float
    first_seen: float
    last_seen: float
    victims: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    flow_uids: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in BEHAVIOUR_KINDS:
            raise ValueError(f"kind must be one of {', '.join(BEHAVIOUR_KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
        if self.last_seen < self.first_seen:
            raise ValueError(f"last_seen ({self.last_seen}) must be >= first_seen ({self.first_seen})")

    @property
    def severity(self) -> int:
        """ECS-style severity 1..4 from class and confidence (:func:`severity_for`)."""
        return severity_for(self.kind, self.confidence)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists)."""
        doc = dataclasses.asdict(self)
        for key in ("victims", "ports", "flow_uids"):
            doc[key] = list(doc[key])
        doc["severity"] = self.severity
        return doc


_BASE_SEVERITY = {
    "port-scan": 2, "host-sweep": 2, "web-enumeration": 2, "brute-force": 3, "syn-flood": 3, "udp-flood": 3,
    "icmp-flood": 3, "lateral-movement": 3,
}  # fmt: skip


def severity_for(kind: str, confidence: float) -> int:
    """Return the severity (1..4) of a behaviour: a base per class, one step up or down by confidence.

    Discovery (scans, sweeps, enumeration) starts at 2, floods, brute force and lateral movement at 3;
    confidence >= 0.9 adds one step, < 0.6 removes one.
    """
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")
    base = _BASE_SEVERITY.get(kind, 2)
    if confidence >= 0.9:
        base += 1
    elif confidence < 0.6:
        base -= 1
    return max(1, min(4, base))


@dataclass(frozen=True, slots=True)
class FlowRef:
    """What the engine remembers of an evidence flow (enough to build an alert after the batch is gone)."""

    uid: str
    ts: float
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    proto: str
    service: str


# ------------------------------------------------------------------------------------------ records


@dataclass(slots=True)
class _Rec:
    ts: float
    uid: str
    cat: int
    victim: str
    port: int
    proto: str
    sport: int
    service: str
    src_bytes: float
    dst_bytes: float
    src_pkts: float
    dst_pkts: float
    duration: float
    active: float  # duration without its longest silence (a meter folds a later burst into an old flow)
    state: str
    lan_peer: bool  # the peer shares the actor's /16 (IPv4) or /64 (IPv6), both private


@lru_cache(maxsize=65536)
def _addr_info(ip: str) -> tuple[bool, bool, str]:
    """Return (ignored destination, private, LAN prefix) for an address."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False, False, ""
    ignored = a.is_multicast or a.is_unspecified or (a.version == 4 and str(a).endswith(".255"))
    # the LAN prefix is unknown (sites use /23../25 and more): the /16 of a private IPv4 address, the /64 of
    # an IPv6 one; "inside" also needs a history of sessions with such peers (BehaviourEngine._inside)
    prefix = str(ipaddress.ip_network(f"{a}/{16 if a.version == 4 else 64}", strict=False))
    return bool(ignored), bool(a.is_private), prefix


def _same_lan(a: str, b: str) -> bool:
    _, pa, na = _addr_info(a)
    _, pb, nb = _addr_info(b)
    return pa and pb and na == nb and na != ""


def _num(df: pd.DataFrame, col: str, default: float = 0.0) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), default)
    values: np.ndarray = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    out: np.ndarray = np.nan_to_num(values, nan=default)
    return out


def _text(df: pd.DataFrame, col: str, default: str = "-") -> list[str]:
    if col not in df.columns:
        return [default] * len(df)
    return [default if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v).lower() if col in
            ("proto", "service") else str(v) for v in df[col].tolist()]  # fmt: skip


def _orient(src: list[str], sport: np.ndarray, dst: list[str], dport: np.ndarray, state: list[str]) -> np.ndarray:
    """Return a mask of flows whose originator is really the server (a meter that joined mid-stream).

    Such flows (no SYN seen: conn_state OTH) start at a well-known port and go to an ephemeral one.
    """
    return np.array([(s == "OTH" and 0 < sp < 1024 <= dp) for s, sp, dp in zip(state, sport, dport, strict=True)],
                    dtype=bool)


def _records(flows: pd.DataFrame) -> list[tuple[str, _Rec]]:
    """Turn canonical flows into (actor, record) pairs; flows without an actor or time are skipped."""
    n = len(flows)
    if n == 0:
        return []
    if "ts" in flows.columns:
        ts = pd.to_numeric(flows["ts"], errors="coerce").to_numpy(dtype=np.float64)
    else:
        ts = np.full(n, np.nan)
    uid = _text(flows, "uid", "")
    src, dst = _text(flows, "src_ip", ""), _text(flows, "dst_ip", "")
    sport, dport = _num(flows, "src_port").astype(np.int64), _num(flows, "dst_port").astype(np.int64)
    proto, service, state = _text(flows, "proto"), _text(flows, "service"), _text(flows, "conn_state")
    sb, db = _num(flows, "src_bytes"), _num(flows, "dst_bytes")
    sp, dp = _num(flows, "src_pkts"), _num(flows, "dst_pkts")
    dur = _num(flows, "duration")
    gap = _num(flows, "src_iat_max")  # NaN/absent (Zeek, Suricata): no gap known
    swap = _orient(src, sport, dst, dport, state)
    out: list[tuple[str, _Rec]] = []
    for i in range(n):
        t = float(ts[i])
        if not src[i] or not dst[i] or math.isnan(t):
            continue
        a, v, spo, dpo, s_b, d_b, s_p, d_p = src[i], dst[i], int(sport[i]), int(dport[i]), sb[i], db[i], sp[i], dp[i]
        if swap[i]:
            a, v, spo, dpo, s_b, d_b, s_p, d_p = v, a, dpo, spo, d_b, s_b, d_p, s_p
        ignored, _, _ = _addr_info(v)
        if ignored or a == v:
            continue
        out.append((a, _Rec(
            ts=t, uid=uid[i] or f"row{i}", cat=_category(proto[i], service[i], state[i], dpo, s_b, d_b, s_p, d_p),
            victim=v, port=dpo, proto=proto[i], sport=spo, service=service[i], src_bytes=float(s_b),
            dst_bytes=float(d_b), src_pkts=float(s_p), dst_pkts=float(d_p), duration=max(0.0, float(dur[i])),
            active=max(0.0, float(dur[i]) - (float(gap[i]) if not swap[i] else 0.0)), state=state[i], lan_peer=_same_lan(a, v),
        )))  # fmt: skip
    return out


def _category(proto: str, service: str, state: str, port: int, sb: float, db: float, sp: float, dp: float) -> int:
    cat = 0
    if proto == "tcp":
        if sp <= 5 and (state in _NO_HANDSHAKE or (sb == 0 and state in _PROBE_STATES)):
            # no handshake at all (whatever the byte counts: Suricata counts header bytes), or a handshake
            # in which the client said nothing: a probe (a service that speaks first, like SSH, may have
            # sent its banner before the prober reset the connection)
            cat |= _PROBE_TCP
        elif sb > 0 and db > 0 and state not in _NO_HANDSHAKE:
            cat |= _ESTABLISHED
            if service in _LOGIN_SERVICES or (service == "-" and port in _LOGIN_PORTS):
                cat |= _LOGIN
                if service in _REMOTE_SERVICES or (service == "-" and port in _REMOTE_PORTS):
                    cat |= _REMOTE
            elif service in _WEB_SERVICES or (service == "-" and port in _WEB_PORTS):
                cat |= _WEB
    elif proto == "udp":
        cat |= _UDP
        if dp == 0 and sp <= 3:
            cat |= _PROBE_UDP  # unanswered datagram(s)
        elif dp > 0 and sb > 0 and db > 0:
            cat |= _ESTABLISHED
    elif proto == "icmp":
        cat |= _ICMP
        if sp <= 4:
            cat |= _PROBE_ICMP
    return cat


def _eff_pkts(rec: _Rec, window: float) -> float:
    """Packets of a flow that fall in one window on average (long flows spread evenly over their active time)."""
    if rec.active <= window:
        return rec.src_pkts
    return rec.src_pkts * window / rec.active


# -------------------------------------------------------------------------------------- confidence


def _margin(n: float, threshold: float) -> float:
    """Confidence from how far a count is above its threshold: 0.6 at the threshold, 0.95 at 4x."""
    if threshold <= 0 or n <= 0:
        return 0.0
    z = 0.405 + 1.27 * math.log2(max(n, 1e-9) / threshold)
    return 1.0 / (1.0 + math.exp(-z))


# ---------------------------------------------------------------------------------------- detectors


@dataclass(slots=True)
class _Hit:
    kind: str
    technique: str
    confidence: float
    group: tuple[Any, ...]
    evidence: dict[str, Any]
    lan: bool  # every evidence record in the hit went to a LAN peer


class _Detector:
    """One sliding-window rule. Records are added/removed in time order; ``check`` runs after an add."""

    window_attr = "long_window_s"

    def __init__(self, cfg: BehaviourConfig) -> None:
        self.cfg = cfg
        self.members: dict[Any, deque[int]] = {}
        self.recs: list[_Rec] = []  # the actor's records (set by the engine before a pass)
        self.wan: dict[Any, int] = {}  # records of the group whose peer is not on the actor's LAN
        self.marked: dict[Any, int] = {}  # highest record index already reported as evidence, per group

    def fresh(self, key: Any) -> list[int]:
        """Return the group's records in the window not yet reported, and mark them reported."""
        done = self.marked.get(key, -1)
        out: list[int] = []
        for j in reversed(self.members[key]):
            if j <= done:
                break
            out.append(j)
        if out:
            self.marked[key] = out[0]
        return out

    def key(self, rec: _Rec) -> Any:  # group key, or None when the record does not take part
        raise NotImplementedError

    def add(self, i: int, rec: _Rec, key: Any) -> None:
        self.members.setdefault(key, deque()).append(i)
        if not rec.lan_peer:
            self.wan[key] = self.wan.get(key, 0) + 1

    def remove(self, i: int, rec: _Rec, key: Any) -> None:
        q = self.members[key]
        if q and q[0] == i:
            q.popleft()
        if not rec.lan_peer:
            self.wan[key] -= 1
        if not q:
            del self.members[key]
            self.wan.pop(key, None)

    def lan(self, key: Any) -> bool:
        """True when every record of the group in the window went to a LAN peer."""
        return self.wan.get(key, 0) == 0

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        raise NotImplementedError


class _PortScan(_Detector):
    """Many distinct (proto, port) probed on one victim: TCP SYN/connect scans and UDP scans."""

    def fresh(self, key: Any) -> list[int]:
        # a port hit over and over is being flooded, not scanned: leave those flows to the flood detector
        ports = self.ports.get(key, Counter())
        cap = self.cfg.sweep_max_probes_per_victim
        return [j for j in super().fresh(key) if ports.get((self.recs[j].proto, self.recs[j].port), 0) <= cap]

    def __init__(self, cfg: BehaviourConfig) -> None:
        super().__init__(cfg)
        self.ports: dict[str, Counter[tuple[str, int]]] = {}

    def key(self, rec: _Rec) -> Any:
        return rec.victim if rec.cat & (_PROBE_TCP | _PROBE_UDP) else None

    def add(self, i: int, rec: _Rec, key: Any) -> None:
        super().add(i, rec, key)
        self.ports.setdefault(key, Counter())[(rec.proto, rec.port)] += 1

    def remove(self, i: int, rec: _Rec, key: Any) -> None:
        super().remove(i, rec, key)
        c = self.ports[key]
        c[(rec.proto, rec.port)] -= 1
        if c[(rec.proto, rec.port)] <= 0:
            del c[(rec.proto, rec.port)]
        if not c:
            del self.ports[key]

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        ports = self.ports.get(key)
        if not ports or len(ports) < self.cfg.scan_ports:
            return None
        udp = sum(1 for p, _ in ports if p == "udp")
        members = self.members[key]
        return _Hit("port-scan", "T1046", _margin(len(ports), self.cfg.scan_ports), (key,),
                    {"distinct_ports": len(ports), "udp_ports": udp, "probes": len(members)},
                    self.lan(key))


class _SlowPortScan(_PortScan):
    """The same over ``slow_window_s`` with its own (higher) port count."""

    window_attr = "slow_window_s"

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        ports = self.ports.get(key)
        if not ports or len(ports) < self.cfg.slow_scan_ports:
            return None
        hit = _Hit("port-scan", "T1046", _margin(len(ports), self.cfg.slow_scan_ports) * 0.95, (key,),
                   {"distinct_ports_slow_window": len(ports), "probes": len(self.members[key])}, self.lan(key))
        return hit


class _HostSweep(_Detector):
    """Many distinct victims probed (ICMP echo, TCP SYN or UDP to a port) by one actor."""

    def fresh(self, key: Any) -> list[int]:
        # a victim probed many times in the window is being scanned or flooded: those flows are the
        # other detectors' evidence, not this sweep's
        cap = self.cfg.sweep_max_probes_per_victim
        return [j for j in super().fresh(key) if self.victims.get(self.recs[j].victim, 0) <= cap]

    def __init__(self, cfg: BehaviourConfig) -> None:
        super().__init__(cfg)
        self.victims: Counter[str] = Counter()
        self.icmp: Counter[str] = Counter()  # ICMP probes per victim
        self.pairs: Counter[tuple[str, str, int]] = Counter()  # (victim, proto, port) probed

    def key(self, rec: _Rec) -> Any:
        return "all" if rec.cat & _PROBES else None

    def add(self, i: int, rec: _Rec, key: Any) -> None:
        super().add(i, rec, key)
        self.victims[rec.victim] += 1
        self.pairs[(rec.victim, rec.proto, rec.port)] += 1
        if rec.cat & _PROBE_ICMP:
            self.icmp[rec.victim] += 1

    def remove(self, i: int, rec: _Rec, key: Any) -> None:
        super().remove(i, rec, key)
        self.victims[rec.victim] -= 1
        if self.victims[rec.victim] <= 0:
            del self.victims[rec.victim]
        pair = (rec.victim, rec.proto, rec.port)
        self.pairs[pair] -= 1
        if self.pairs[pair] <= 0:
            del self.pairs[pair]
        if rec.cat & _PROBE_ICMP:
            self.icmp[rec.victim] -= 1
            if self.icmp[rec.victim] <= 0:
                del self.icmp[rec.victim]

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        n = len(self.victims)
        # a sweep of a few ports over a handful of live hosts (a LAN scan after ARP discovery) counts too
        pairs = sum(1 for (v, _, _), c in self.pairs.items() if self.victims[v] <= self.cfg.sweep_max_probes_per_victim)
        by_pairs = n >= 3 and pairs >= self.cfg.sweep_pairs
        if n < self.cfg.sweep_hosts and not by_pairs:
            return None
        members = self.members[key]
        icmp_share = len(self.icmp) / n  # victims that got an ICMP echo/timestamp request
        # ICMP requests to most victims mean host discovery (nmap -sn also knocks on 80/443): T1018;
        # TCP/UDP probes alone mean the sweep looks for a service: T1046
        technique = "T1018" if icmp_share >= 0.5 else "T1046"
        conf = max(_margin(n, self.cfg.sweep_hosts), _margin(pairs, self.cfg.sweep_pairs) if n >= 3 else 0.0)
        return _Hit("host-sweep", technique, conf, ("all",),
                    {"distinct_victims": n, "probes": len(members), "probed_pairs": pairs,
                     "icmp_share": round(icmp_share, 3)},
                    self.lan(key))


def _similar_share(recs: list[_Rec], members: Iterable[int]) -> tuple[float, float]:
    """Share of sessions whose bytes BOTH ways are within 15 % (+32 bytes) of the medians, and the median size.

    A guesser repeats one exchange (same request, same refusal); telemetry that reconnects often sends
    payloads of varying size, and real logins run different commands.
    """
    idx = list(members)
    if not idx:
        return 0.0, 0.0
    up = np.array([recs[j].src_bytes for j in idx])
    down = np.array([recs[j].dst_bytes for j in idx])
    mu, md = float(np.median(up)), float(np.median(down))
    ok = (np.abs(up - mu) <= 0.15 * mu + 32) & (np.abs(down - md) <= 0.15 * md + 32)
    return float(ok.mean()), mu + md


class _BruteForce(_Detector):
    """Many near-identical login sessions to one victim service (a guesser repeats the same exchange).

    Rate and sameness together: one correct login is one session; telemetry that reconnects often
    varies in size with its payload.
    """

    window_attr = "short_window_s"

    def threshold(self) -> int:
        return self.cfg.brute_force_attempts

    def key(self, rec: _Rec) -> Any:
        return (rec.victim, rec.port) if rec.cat & _LOGIN else None

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        members = self.members.get(key)
        if not members or len(members) < self.threshold():
            return None
        similar, med = _similar_share(recs, list(members)[-200:])
        if similar < self.cfg.brute_force_similar_share:
            return None
        conf = _margin(len(members), self.threshold()) * (0.8 + 0.2 * similar)
        return _Hit("brute-force", "T1110.001", conf, key,
                    {"sessions": len(members), "similar_share": round(similar, 3), "median_bytes": med},
                    self.lan(key))


class _SlowBruteForce(_BruteForce):
    window_attr = "long_window_s"

    def threshold(self) -> int:
        return self.cfg.slow_brute_force_attempts


class _ParallelLogins(_BruteForce):
    """Several near-identical login sessions to one service opened at once (guessers run parallel tasks)."""

    window_attr = "burst_window_s"

    def threshold(self) -> int:
        return self.cfg.brute_force_parallel

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        hit = super().check(key, recs)
        if hit is not None:
            hit.confidence *= 0.9  # a short burst is weaker evidence than a sustained rate
            hit.evidence = {"parallel_sessions": hit.evidence["sessions"], "similar_share": hit.evidence["similar_share"]}
        return hit


class _WebEnum(_Detector):
    """Many HTTP(S) connections to one server with many distinct requests and a repeated (error) answer."""

    window_attr = "short_window_s"

    def __init__(self, cfg: BehaviourConfig) -> None:
        super().__init__(cfg)
        self.req: dict[Any, Counter[float]] = {}
        self.resp: dict[Any, Counter[float]] = {}

    def key(self, rec: _Rec) -> Any:
        return (rec.victim, rec.port) if rec.cat & _WEB else None

    def add(self, i: int, rec: _Rec, key: Any) -> None:
        super().add(i, rec, key)
        self.req.setdefault(key, Counter())[rec.src_bytes] += 1
        self.resp.setdefault(key, Counter())[rec.dst_bytes] += 1

    def remove(self, i: int, rec: _Rec, key: Any) -> None:
        super().remove(i, rec, key)
        for table, value in ((self.req, rec.src_bytes), (self.resp, rec.dst_bytes)):
            c = table[key]
            c[value] -= 1
            if c[value] <= 0:
                del c[value]
            if not c:
                del table[key]

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        members = self.members.get(key)
        cfg = self.cfg
        if not members or len(members) < cfg.web_requests:
            return None
        distinct = len(self.req[key])
        modal = self.resp[key].most_common(1)[0][1] / len(members)
        if distinct < cfg.web_distinct_requests or modal < cfg.web_error_share:
            return None
        conf = _margin(len(members), cfg.web_requests) * min(1.0, 0.7 + 0.3 * modal)
        return _Hit("web-enumeration", "T1595.003", conf, key,
                    {"requests": len(members), "distinct_request_sizes": distinct,
                     "modal_response_share": round(modal, 3)},
                    self.lan(key))  # fmt: skip


class _Flood(_Detector):
    """Packets to one victim at flood rate: SYN-only TCP to one port, UDP without answers, ICMP."""

    window_attr = "flood_window_s"

    def __init__(self, cfg: BehaviourConfig) -> None:
        super().__init__(cfg)
        self.pkts: dict[Any, float] = {}
        self.reply: dict[Any, float] = {}
        self.payload: dict[Any, float] = {}
        self.answered: dict[Any, int] = {}

    def key(self, rec: _Rec) -> Any:
        if rec.cat & _PROBE_TCP:
            return ("syn-flood", rec.victim, rec.port)
        if rec.cat & _UDP:
            return ("udp-flood", rec.victim, 0)
        if rec.cat & _ICMP:
            return ("icmp-flood", rec.victim, 0)
        return None

    def _bump(self, key: Any, rec: _Rec, sign: float) -> None:
        w = self.cfg.flood_window_s
        share = 1.0 if rec.active <= w else w / rec.active
        self.pkts[key] = self.pkts.get(key, 0.0) + sign * _eff_pkts(rec, w)
        self.reply[key] = self.reply.get(key, 0.0) + sign * rec.dst_pkts * share
        self.payload[key] = self.payload.get(key, 0.0) + sign * rec.src_bytes * share
        self.answered[key] = self.answered.get(key, 0) + int(sign) * (1 if rec.state in _HANDSHAKE else 0)

    def add(self, i: int, rec: _Rec, key: Any) -> None:
        super().add(i, rec, key)
        self._bump(key, rec, 1.0)

    def remove(self, i: int, rec: _Rec, key: Any) -> None:
        super().remove(i, rec, key)
        self._bump(key, rec, -1.0)
        if key not in self.members:
            for table in (self.pkts, self.reply, self.payload, self.answered):
                table.pop(key, None)

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        cfg = self.cfg
        pkts = self.pkts.get(key, 0.0)
        if pkts < cfg.flood_packets:
            return None
        kind, victim, port = key
        members = self.members[key]
        ev: dict[str, Any] = {"packets_in_window": round(pkts, 1), "flows": len(members)}
        technique = "T1498"
        if kind == "udp-flood":
            ratio = self.reply[key] / max(pkts, 1e-9)
            per_pkt = self.payload[key] / max(pkts, 1e-9)
            ev.update(reply_ratio=round(ratio, 3), payload_per_packet=round(per_pkt, 1))
            if ratio > cfg.udp_flood_max_reply_ratio:
                return None
            if len(members) < cfg.udp_flood_min_flows and per_pkt > cfg.udp_flood_max_payload:
                return None  # one big-packet stream (a bulk UDP transfer), not a flood
        elif kind == "syn-flood":
            # the port answered SYN/ACK: a listening service is being exhausted (endpoint DoS)
            technique = "T1499" if self.answered.get(key, 0) > 0 else "T1498"
        return _Hit(kind, technique, _margin(pkts, cfg.flood_packets), (victim, port), ev,
                    self.lan(key))


class _LateralLogins(_Detector):
    """Interactive-size login sessions to several LAN hosts in a burst (remote services, T1021)."""

    window_attr = "short_window_s"

    def __init__(self, cfg: BehaviourConfig) -> None:
        super().__init__(cfg)
        self.victims: Counter[str] = Counter()

    def key(self, rec: _Rec) -> Any:
        small = rec.src_bytes + rec.dst_bytes < 1_000_000  # bulk copies (scp) are not logins
        return "all" if rec.cat & _REMOTE and rec.lan_peer and small else None

    def add(self, i: int, rec: _Rec, key: Any) -> None:
        super().add(i, rec, key)
        self.victims[rec.victim] += 1

    def remove(self, i: int, rec: _Rec, key: Any) -> None:
        super().remove(i, rec, key)
        self.victims[rec.victim] -= 1
        if self.victims[rec.victim] <= 0:
            del self.victims[rec.victim]

    def check(self, key: Any, recs: list[_Rec]) -> _Hit | None:
        n = len(self.victims)
        if n < self.cfg.lateral_logins_hosts:
            return None
        return _Hit("lateral-movement", "T1021", _margin(n, self.cfg.lateral_logins_hosts) * 0.9, ("all",),
                    {"login_victims": n, "sessions": len(self.members[key])}, True)


_DETECTORS: tuple[Callable[[BehaviourConfig], _Detector], ...] = (
    _PortScan, _SlowPortScan, _HostSweep, _BruteForce, _SlowBruteForce, _ParallelLogins, _WebEnum, _Flood, _LateralLogins,
)


# ------------------------------------------------------------------------------------------ episodes


@dataclass(slots=True)
class _Episode:
    kind: str
    host: str
    technique: str
    first_seen: float
    last_seen: float
    confidence: float = 0.0
    victims: dict[str, None] = field(default_factory=dict)
    ports: set[int] = field(default_factory=set)
    uids: dict[str, None] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    flows: int = 0
    dirty: bool = True

    def snapshot(self, cap: int) -> BehaviourVerdict:
        ev = dict(self.evidence)
        ev["evidence_flows"] = self.flows
        return BehaviourVerdict(
            kind=self.kind, host=self.host, technique_id=self.technique,
            technique_name=TECHNIQUE_NAMES.get(self.technique, self.technique),
            confidence=round(min(1.0, max(0.0, self.confidence)), 4), first_seen=self.first_seen,
            last_seen=self.last_seen, victims=tuple(sorted(self.victims)), ports=tuple(sorted(self.ports))[:1024],
            flow_uids=tuple(list(self.uids)[:cap]), evidence=ev,
        )  # fmt: skip


@dataclass(slots=True)
class _Host:
    recs: list[_Rec] = field(default_factory=list)
    keys: list[float] = field(default_factory=list)  # ts of recs (bisect)
    last_seen: float = -math.inf
    lan_sessions: list[float] = field(default_factory=list)  # start times of established LAN sessions (capped)


class BehaviourEngine:
    """Per-actor sliding-window behaviour detection over canonical flows (streaming or batch).

    ``update(flows)`` takes the next batch and returns the verdicts that are new or gained evidence in
    it (one per episode, the episode's state so far); ``detect(flows)`` runs a fresh engine over a whole
    table and returns each episode once, complete.
    """

    _CHUNK = 20_000  # detect(): rows per time-ordered chunk (so memory stays bounded on long tables)

    def __init__(self, config: BehaviourConfig | None = None) -> None:
        self.config = config or BehaviourConfig()
        self._hosts: dict[str, _Host] = {}
        self._episodes: dict[tuple[str, str, str], _Episode] = {}
        self._finished: list[_Episode] = []  # episodes replaced by a later one of the same key
        self._clock = -math.inf  # latest flow start seen

    # ----- public API

    def update(self, flows: pd.DataFrame) -> list[BehaviourVerdict]:
        """Add one batch of canonical flows; return verdicts that are new or changed by it."""
        self._ingest(flows)
        cap = self.config.max_evidence
        eps = [*self._finished, *self._episodes.values()]
        out = [e.snapshot(cap) for e in eps if e.dirty]
        for e in eps:
            e.dirty = False
        self._finished.clear()
        self._evict()
        return sorted(out, key=lambda v: (v.first_seen, v.host, v.kind, v.technique_id))

    def detect(self, flows: pd.DataFrame) -> list[BehaviourVerdict]:
        """Return every verdict over a whole flow table (a fresh engine; this engine is not changed)."""
        if not isinstance(flows, pd.DataFrame):
            raise InputError(f"flows must be a pandas DataFrame, got {type(flows).__name__}")
        engine = BehaviourEngine(self.config)
        ordered = flows.sort_values("ts", kind="stable") if "ts" in flows.columns else flows
        for start in range(0, max(len(ordered), 1), self._CHUNK):
            engine._ingest(ordered.iloc[start:start + self._CHUNK])
            engine._evict(keep_episodes=True)
        cap = self.config.max_evidence
        eps = [*engine._finished, *engine._episodes.values()]
        return sorted((e.snapshot(cap) for e in eps), key=lambda v: (v.first_seen, v.host, v.kind, v.technique_id))

    def flow_refs(self, uids: Iterable[str]) -> dict[str, FlowRef]:
        """Return what is still retained of the given evidence flows (uid -> :class:`FlowRef`)."""
        want = set(uids)
        found: dict[str, FlowRef] = {}
        if not want:
            return found
        for actor, host in self._hosts.items():
            for r in host.recs:
                if r.uid in want and r.uid not in found:
                    found[r.uid] = FlowRef(r.uid, r.ts, actor, r.sport, r.victim, r.port, r.proto, r.service)
        return found

    @property
    def hosts(self) -> int:
        """Actors currently held in memory."""
        return len(self._hosts)

    @property
    def records(self) -> int:
        """Flow records currently held in memory (all actors)."""
        return sum(len(h.recs) for h in self._hosts.values())

    # ----- internals

    def _ingest(self, flows: pd.DataFrame) -> None:
        if not isinstance(flows, pd.DataFrame):
            raise InputError(f"flows must be a pandas DataFrame, got {type(flows).__name__}")
        cfg = self.config
        touched: dict[str, float] = {}
        for actor, rec in _records(flows):
            if rec.ts < self._clock - cfg.slow_window_s - cfg.max_lateness_s:
                continue  # too late: the windows it belongs to were evicted
            host = self._hosts.get(actor)
            if host is None:
                host = self._hosts[actor] = _Host()
            i = bisect.bisect_right(host.keys, rec.ts)
            host.keys.insert(i, rec.ts)
            host.recs.insert(i, rec)
            host.last_seen = max(host.last_seen, rec.ts)
            if rec.cat & _ESTABLISHED and rec.lan_peer and len(host.lan_sessions) < 64:
                host.lan_sessions.append(rec.ts)
            touched[actor] = min(touched.get(actor, math.inf), rec.ts)
            self._clock = max(self._clock, rec.ts)
        for actor, since in touched.items():
            self._evaluate(actor, self._hosts[actor], since)

    def _evaluate(self, actor: str, host: _Host, since: float) -> None:
        cfg = self.config
        if len(host.recs) > cfg.max_records_per_host:  # bounded: drop the oldest
            drop = len(host.recs) - cfg.max_records_per_host
            del host.recs[:drop]
            del host.keys[:drop]
        recs = host.recs
        start = bisect.bisect_left(host.keys, since)
        if start >= len(recs):
            return
        for factory in _DETECTORS:
            det = factory(cfg)
            det.recs = recs
            window = float(getattr(cfg, det.window_attr))
            left = bisect.bisect_left(host.keys, recs[start].ts - window)
            keys: list[Any] = [None] * (len(recs) - left)
            for j in range(left, start):
                k = keys[j - left] = det.key(recs[j])
                if k is not None:
                    det.add(j, recs[j], k)
            lo = left
            for r in range(start, len(recs)):
                rec = recs[r]
                while recs[lo].ts < rec.ts - window:
                    if keys[lo - left] is not None:
                        det.remove(lo, recs[lo], keys[lo - left])
                    lo += 1
                k = keys[r - left] = det.key(rec)
                if k is None:
                    continue
                det.add(r, rec, k)
                hit = det.check(k, recs)
                if hit is not None:
                    fresh = det.fresh(k)
                    if fresh:
                        self._record(actor, host, hit, [recs[j] for j in fresh])

    def _icmp_errors(self, victim: str, actor: str, first: float, last: float) -> bool:
        host = self._hosts.get(victim)
        if host is None:
            return False
        lo = bisect.bisect_left(host.keys, first - 2.0)
        hi = bisect.bisect_right(host.keys, last + 2.0)
        return any(r.proto == "icmp" and r.victim == actor for r in host.recs[lo:hi])

    def _provoked(self, peer: str, actor: str, first: float, last: float) -> bool:
        """True when ``peer`` sent ``actor`` UDP/TCP probes around that time (ICMP then answers them)."""
        host = self._hosts.get(peer)
        if host is None:
            return False
        lo = bisect.bisect_left(host.keys, first - 2.0)
        hi = bisect.bisect_right(host.keys, last + 2.0)
        return sum(1 for r in host.recs[lo:hi] if r.victim == actor and r.cat & (_PROBE_UDP | _PROBE_TCP | _UDP)) >= 10

    def _inside(self, host: _Host, before: float) -> bool:
        need = self.config.lateral_min_prior_sessions
        return need > 0 and sum(1 for t in host.lan_sessions if t < before) >= need

    def _record(self, actor: str, host: _Host, hit: _Hit, evidence: list[_Rec]) -> None:
        cfg = self.config
        kind, technique = hit.kind, hit.technique
        first = min(r.ts for r in evidence)
        last = max(r.ts + r.duration for r in evidence)
        if kind == "udp-flood":
            # a closed UDP port answers with ICMP errors (flows from the victim); silence means a
            # listening (or filtered) service is being flooded: endpoint DoS
            technique = "T1498" if self._icmp_errors(hit.group[0], actor, first, last) else "T1499"
        if kind == "icmp-flood" and self._provoked(hit.group[0], actor, first, last):
            return  # ICMP errors a victim sends back to the host flooding or scanning it
        key0 = (actor, kind, technique)
        ep0 = self._episodes.get(key0)
        start = first if ep0 is None else min(ep0.first_seen, first)
        if kind == "lateral-movement" and not self._inside(host, start):
            return  # logins to several LAN hosts by a host with no history on the LAN: not lateral
        if kind in ("port-scan", "host-sweep", "brute-force") and hit.lan and self._inside(host, start):
            kind, technique = "lateral-movement", ("T1021" if hit.kind == "brute-force" else "T1046")
        # one flood episode per actor and class: its technique may sharpen (closed-port evidence arrives late)
        key = (actor, kind, "" if kind.endswith("-flood") else technique)
        ep = self._episodes.get(key)
        if ep is not None and first > ep.last_seen + cfg.slow_window_s:
            self._finished.append(ep)  # a new episode after a quiet gap
            ep = None
        if ep is None:
            ep = self._episodes[key] = _Episode(kind, actor, technique, first, last)
            if kind == "lateral-movement":
                ep.evidence["behaviour"] = hit.kind
        ep.first_seen, ep.last_seen = min(ep.first_seen, first), max(ep.last_seen, last)
        if ep.technique != technique and technique == "T1498":
            ep.technique = technique
            ep.dirty = True
        if hit.confidence > ep.confidence:
            ep.confidence = hit.confidence
            ep.dirty = True
        for name, value in hit.evidence.items():
            old = ep.evidence.get(name)
            if isinstance(value, (int, float)) and (old is None or value > old):
                ep.evidence[name] = value
        for r in evidence:
            if r.uid in ep.uids:
                continue
            ep.flows += 1
            ep.dirty = True
            if len(ep.uids) < cfg.max_evidence:
                ep.uids[r.uid] = None
            if len(ep.victims) < 4096:
                ep.victims[r.victim] = None
            if len(ep.ports) < 4096 and r.port:
                ep.ports.add(r.port)

    def _evict(self, *, keep_episodes: bool = False) -> None:
        cfg = self.config
        horizon = self._clock - cfg.slow_window_s - cfg.max_lateness_s
        for actor in [a for a, h in self._hosts.items() if h.last_seen < horizon]:
            del self._hosts[actor]
        for host in self._hosts.values():
            cut = bisect.bisect_left(host.keys, horizon)
            if cut:
                del host.recs[:cut]
                del host.keys[:cut]
            if host.lan_sessions and host.lan_sessions[0] < horizon - cfg.long_window_s:
                host.lan_sessions = [t for t in host.lan_sessions if t >= horizon - cfg.long_window_s]
        if len(self._hosts) > cfg.max_hosts:
            idle = sorted(self._hosts.items(), key=lambda kv: kv[1].last_seen)
            for actor, _ in idle[: len(self._hosts) - cfg.max_hosts]:
                del self._hosts[actor]
        stale = [k for k, e in self._episodes.items() if e.last_seen < horizon - cfg.slow_window_s]
        for key in stale:
            ep = self._episodes.pop(key)
            if keep_episodes:
                self._finished.append(ep)
