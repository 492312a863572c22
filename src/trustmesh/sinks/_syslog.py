"""Syslog (RFC 5424) over UDP (RFC 5426) or TCP (RFC 6587 octet counting), carrying JSON or CEF.

Each document becomes one message::

    <PRI>1 2021-06-06T13:59:46.457984Z sensor trustmesh 4242 alert [trustmesh@32473 id="alr-.." severity="3"] BOM{...}

``PRI`` is facility * 8 + a syslog severity derived from ``event.severity`` (4 critical -> 2 crit,
3 high -> 3 err, 2 medium -> 4 warning, 1 low -> 5 notice). The MSG is the ECS document as JSON
(``format = "json"``) or one ArcSight CEF line (``format = "cef"``, :func:`cef_line`), UTF-8 with the
BOM RFC 5424 asks for. 32473 is the private enterprise number RFC 5612 reserves for examples;
set ``enterprise_id`` to your own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from trustmesh._ecs import flatten
from trustmesh.errors import SinkError

__all__ = ["SyslogSink", "cef_line", "syslog_message"]

_SYSLOG_SEVERITY = {4: 2, 3: 3, 2: 4, 1: 5}
_CEF_SEVERITY = {4: 10, 3: 8, 2: 5, 1: 3}
_FACILITIES = {"kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10, "security": 13,
               **{f"local{i}": 16 + i for i in range(8)}}  # fmt: skip
_BOM = "\ufeff"


def _header_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _ext_value(value: Any) -> str:
    return (str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n"))


def _epoch_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def cef_line(doc: Mapping[str, Any]) -> str:
    """Return an ECS document as one CEF:0 line (ArcSight Common Event Format, header and extension escaped).

    Severity 0..10 from ``event.severity`` (1 -> 3, 2 -> 5, 3 -> 8, 4 -> 10). Custom strings:
    ``cs1`` Community ID, ``cs2`` ATT&CK technique, ``cs3`` detector, ``cs4`` model id; ``cfp1`` the score.
    """
    f = flatten(doc)
    sev = _CEF_SEVERITY.get(int(f.get("event.severity", 1)), 3)
    technique = f.get("threat.technique.subtechnique.id") or f.get("threat.technique.id")
    technique = technique[0] if isinstance(technique, list) and technique else technique
    ext: list[tuple[str, Any]] = [
        ("rt", _epoch_ms(f["@timestamp"]) if "@timestamp" in f else None),
        ("src", f.get("source.ip")), ("spt", f.get("source.port")),
        ("dst", f.get("destination.ip")), ("dpt", f.get("destination.port")),
        ("proto", str(f["network.transport"]).upper() if f.get("network.transport") else None),
        ("app", f.get("network.protocol")), ("cat", f.get("rule.category")), ("externalId", f.get("event.id")),
        ("dvchost", f.get("observer.hostname")), ("msg", f.get("message")),
        ("cs1Label", "communityId" if f.get("network.community_id") else None), ("cs1", f.get("network.community_id")),
        ("cs2Label", "mitreTechnique" if technique else None), ("cs2", technique),
        ("cs3Label", "detector"), ("cs3", f.get("trustmesh.detector") or f.get("event.dataset")),
        ("cs4Label", "modelId" if f.get("trustmesh.model_id") else None), ("cs4", f.get("trustmesh.model_id")),
        ("cfp1Label", "score" if f.get("trustmesh.score") is not None else None), ("cfp1", f.get("trustmesh.score")),
    ]  # fmt: skip
    extension = " ".join(f"{k}={_ext_value(v)}" for k, v in ext if v is not None and v != "")
    header = [
        "CEF:0", "trustmesh", "trustmesh", _header_value(f.get("observer.version", "0")),
        _header_value(f.get("rule.id", "trustmesh")), _header_value(f.get("rule.name", "trustmesh alert")), str(sev),
    ]  # fmt: skip
    return "|".join(header) + "|" + extension


def _sd_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _token(value: str, limit: int) -> str:
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def syslog_message(doc: Mapping[str, Any], *, fmt: str = "json", facility: int = 16, hostname: str | None = None,
                   app_name: str = "trustmesh", enterprise_id: int = 32473) -> bytes:
    """Return one RFC 5424 message (bytes, no transport framing) for an ECS document."""
    event = doc.get("event", {})
    severity = _SYSLOG_SEVERITY.get(int(event.get("severity", 1)), 5)
    pri = facility * 8 + severity
    stamp = str(doc.get("@timestamp", "-"))
    host = _token(hostname or str(doc.get("observer", {}).get("hostname", "")) or socket.gethostname(), 255)
    dataset = str(event.get("dataset", "trustmesh.alert"))
    msgid = _token(dataset.removeprefix("trustmesh."), 32)
    params = {"id": event.get("id"), "severity": event.get("severity"),
              "technique": (doc.get("threat", {}).get("technique", {}).get("id") or [None])[0]}  # fmt: skip
    sd = "[" + f"trustmesh@{enterprise_id}" + "".join(
        f' {k}="{_sd_value(v)}"' for k, v in params.items() if v is not None) + "]"
    if fmt == "cef":
        body = cef_line(doc)
    else:
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    line = f"<{pri}>1 {stamp} {host} {_token(app_name, 48)} {os.getpid()} {msgid} {sd} {_BOM}{body}"
    return line.encode("utf-8")


class SyslogSink:
    """Send each document as one RFC 5424 message to ``host:port`` over UDP or TCP."""

    def __init__(self, host: str, port: int = 514, *, protocol: str = "udp", fmt: str = "json",
                 facility: str | int = "local0", app_name: str = "trustmesh", enterprise_id: int = 32473,
                 timeout_s: float = 5.0) -> None:
        if protocol not in {"udp", "tcp"}:
            raise ValueError(f"protocol must be udp or tcp, got {protocol!r}")
        if fmt not in {"json", "cef"}:
            raise ValueError(f"format must be json or cef, got {fmt!r}")
        if not 0 < int(port) < 65536:
            raise ValueError(f"port must be 1..65535, got {port}")
        if isinstance(facility, str):
            if facility not in _FACILITIES:
                raise ValueError(f"facility must be one of {sorted(_FACILITIES)}, got {facility!r}")
            facility = _FACILITIES[facility]
        if not 0 <= facility <= 23:
            raise ValueError(f"facility must be 0..23, got {facility}")
        self.host, self.port, self.protocol, self.fmt = host, int(port), protocol, fmt
        self.facility, self.app_name, self.enterprise_id, self.timeout_s = facility, app_name, enterprise_id, timeout_s
        self._sock: socket.socket | None = None
        self.last_delivered = 0

    @property
    def name(self) -> str:
        """``syslog+cef tcp://host:port`` and the like."""
        return f"syslog{'+cef' if self.fmt == 'cef' else ''} {self.protocol}://{self.host}:{self.port}"

    def _socket(self) -> socket.socket:
        if self._sock is None:
            kind = socket.SOCK_DGRAM if self.protocol == "udp" else socket.SOCK_STREAM
            infos = socket.getaddrinfo(self.host, self.port, type=kind)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, kind)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(addr)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def emit(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Send every document; a TCP connection that broke is reopened once."""
        self.last_delivered = 0
        for doc in docs:
            msg = syslog_message(doc, fmt=self.fmt, facility=self.facility, app_name=self.app_name,
                                 enterprise_id=self.enterprise_id)  # fmt: skip
            frame = msg if self.protocol == "udp" else str(len(msg)).encode("ascii") + b" " + msg
            for attempt in (0, 1):
                try:
                    self._socket().sendall(frame)
                    break
                except OSError as exc:
                    self.close()
                    if attempt or self.protocol == "udp":
                        raise SinkError(f"cannot send to {self.protocol}://{self.host}:{self.port}: "
                                        f"{exc.strerror or exc}") from exc  # fmt: skip
            self.last_delivered += 1

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
