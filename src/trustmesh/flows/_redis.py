"""Redis Streams as a flow source: consumer groups, so many workers share one stream.

A source spec is ``redis://[:PASSWORD@]HOST:PORT[/DB]/STREAM?group=G[&consumer=C][&claim_idle_ms=N]
[&block_ms=N]`` (``rediss://`` for TLS). Records are read with ``XREADGROUP`` as consumer ``C``
(default ``<hostname>-<pid>``) of group ``G`` (created at the stream's start, with ``MKSTREAM``, if
missing), so each record goes to exactly one worker of the group. Entries are in the format
Suricata's EVE redis output writes in ``mode: stream`` (``XADD <key> [MAXLEN ~ N] * eve <json>``):
the ``eve`` field holds one EVE record; ``flow`` events become canonical flows, ``alert`` events
become signature alerts (carried on an empty frame, as the file reader does).

Acknowledgement is the caller's: each frame carries ``attrs["trustmesh_ack"]`` (the stream ids it
holds) and :meth:`RedisStreamSource.acknowledge` sends ``XACK`` for them; the pipeline calls it once
the frame's alerts are on the ledger. Until then the records stay in the group's pending list, so
a worker that crashes loses nothing: at start a worker first re-reads its own pending records, and
every ``claim_idle_ms`` it takes over (``XAUTOCLAIM``) records another consumer left pending that
long. Delivery is at least once; alert ids are deterministic, so a record scored twice after a
crash yields the same alert ids.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

from trustmesh._safeload import json_too_deep
from trustmesh.errors import InputError, MissingDependencyError
from trustmesh.flows._records import MAX_JSON_DEPTH, MAX_LINE_CHARS, BadRecord, BadRecordHandler, BadRecordLog, report
from trustmesh.flows._schema import empty_canonical
from trustmesh.flows._suricata import suricata_flows_to_canonical
from trustmesh.flows._suricata_alerts import eve_alert

__all__ = ["RedisStreamSource", "RedisStreamSpec", "parse_redis_spec"]

log = logging.getLogger(__name__)

_MAX_RECORD_BYTES = MAX_LINE_CHARS  # the limits of the file readers: an EVE record is one line there
_MAX_DEPTH = MAX_JSON_DEPTH


@dataclass(frozen=True, slots=True)
class RedisStreamSpec:
    """A parsed ``redis://HOST:PORT/STREAM?group=G`` source spec (the password is never shown)."""

    scheme: str
    host: str
    port: int
    db: int
    password: str | None
    stream: str
    group: str
    consumer: str
    block_ms: int = 200
    claim_idle_ms: int = 30_000

    @property
    def name(self) -> str:
        """The spec without password and consumer: the same for every worker of the group (alert ids
        depend on it, so a record re-delivered to another worker after a crash gets the same ids)."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.db}/{self.stream}?group={self.group}"


def parse_redis_spec(spec: str) -> RedisStreamSpec:
    """Parse a source spec; InputError naming the part that is wrong."""
    parts = urlsplit(spec)
    if parts.scheme not in {"redis", "rediss"}:
        raise InputError(f"{_redact(spec)}: a stream source must start with redis:// or rediss://")
    if not parts.hostname:
        raise InputError(f"{_redact(spec)}: no host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise InputError(f"{_redact(spec)}: port must be 1..65535") from None
    path = [unquote(p) for p in parts.path.split("/") if p]
    if len(path) == 2 and path[0].isdigit():
        db, stream = int(path[0]), path[1]
    elif len(path) == 1:
        db, stream = 0, path[0]
    else:
        raise InputError(f"{_redact(spec)}: the path must be /STREAM or /DB/STREAM")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"group", "consumer", "block_ms", "claim_idle_ms"})
    if unknown:
        raise InputError(f"{_redact(spec)}: unknown parameter(s) {', '.join(unknown)}; "
                         "known: block_ms, claim_idle_ms, consumer, group")
    group = (query.get("group") or [""])[-1]
    if not group:
        raise InputError(f"{_redact(spec)}: group=NAME is required (workers of one group share the stream)")
    consumer = (query.get("consumer") or [f"{socket.gethostname()}-{os.getpid()}"])[-1]
    ints: dict[str, int] = {}
    for key, low, high in (("block_ms", 10, 60_000), ("claim_idle_ms", 100, 86_400_000)):
        if key in query:
            raw = query[key][-1]
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise InputError(f"{_redact(spec)}: {key} must be an integer in {low}..{high}, got {raw!r}")
            ints[key] = int(raw)
    return RedisStreamSpec(parts.scheme, parts.hostname, port, db, unquote(parts.password) if parts.password else None,
                           stream, group, consumer, **ints)


def _redact(spec: str) -> str:
    parts = urlsplit(spec)
    if parts.password:
        return spec.replace(f":{parts.password}@", ":***@", 1)
    return spec


def _id(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _depth(value: Any, limit: int) -> bool:
    """Whether ``value`` nests no deeper than ``limit`` (iteratively: hostile input cannot recurse)."""
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


class RedisStreamSource:
    """Canonical flow batches from one Redis stream, read as one consumer of a consumer group."""

    streaming = True  # never ends on its own: the pipeline micro-batches it and stops it on a signal

    def __init__(self, spec: str | RedisStreamSpec, *, bad_records: BadRecordLog | None = None,
                 on_bad_record: BadRecordHandler | None = None) -> None:
        self.spec = spec if isinstance(spec, RedisStreamSpec) else parse_redis_spec(spec)
        self.bad_records = bad_records if bad_records is not None else BadRecordLog(on_record=on_bad_record)
        self._client: Any = None
        self.read = 0  # records handed out
        self.acked = 0
        self.claimed = 0  # records taken over from other consumers

    @property
    def name(self) -> str:
        """The spec without its password."""
        return self.spec.name

    def _connect(self) -> Any:
        if self._client is None:
            try:
                import redis
            except ImportError as exc:
                raise MissingDependencyError("redis", "soc") from exc
            s = self.spec
            self._client = redis.Redis(host=s.host, port=s.port, db=s.db, password=s.password,
                                       ssl=s.scheme == "rediss", socket_timeout=max(5.0, s.block_ms / 1000 + 5),
                                       socket_connect_timeout=5.0)
            try:
                self._client.xgroup_create(s.stream, s.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise InputError(f"{self.name}: cannot create the consumer group ({exc})") from None
            except redis.RedisError as exc:
                raise InputError(f"{self.name}: cannot reach redis ({exc})") from None
        return self._client

    def acknowledge(self, token: Any) -> None:
        """``XACK`` the stream ids in ``token`` (what a frame's ``attrs["trustmesh_ack"]`` holds)."""
        import redis

        ids = [str(i) for i in token] if isinstance(token, list | tuple) else []
        if ids:
            try:
                self._connect().xack(self.spec.stream, self.spec.group, *ids)
            except redis.RedisError as exc:  # the records stay pending: this or another worker gets them again
                raise InputError(f"{self.name}: XACK failed ({type(exc).__name__}: {exc})") from None
            self.acked += len(ids)

    def iter_batches(self, batch_size: int = 1024) -> Iterator[pd.DataFrame]:
        """Yield frames of up to ``batch_size`` records: pending ones first, then new ones, forever."""
        import redis

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        client = self._connect()
        s = self.spec
        pending_from: str | None = "0"  # first re-read what this consumer was given and never acknowledged
        last_claim = 0.0
        while True:
            # at most two batches in flight (read, not yet acknowledged): records wait in the stream, not in
            # this worker, so a slow worker does not sit on records others could take
            waited = time.monotonic()
            while self.read - self.acked >= 2 * batch_size and time.monotonic() - waited < s.block_ms / 1000:
                time.sleep(0.005)
            if self.read - self.acked >= 2 * batch_size:
                yield empty_canonical()
                continue
            try:
                entries: list[tuple[bytes, dict[bytes, bytes]]] = []
                if pending_from is not None:
                    got = client.xreadgroup(s.group, s.consumer, {s.stream: pending_from}, count=batch_size)
                    entries = list(got[0][1]) if got else []
                    pending_from = _id(entries[-1][0]) if entries else None
                    entries = [e for e in entries if e[1]]  # deleted entries come back without fields
                if not entries and time.monotonic() - last_claim >= s.claim_idle_ms / 1000:
                    last_claim = time.monotonic()
                    res = client.xautoclaim(s.stream, s.group, s.consumer, s.claim_idle_ms, "0-0", count=batch_size)
                    entries = [e for e in (res[1] if len(res) > 1 else []) if e[1]]
                    self.claimed += len(entries)
                if not entries:
                    got = client.xreadgroup(s.group, s.consumer, {s.stream: ">"}, count=batch_size, block=s.block_ms)
                    entries = list(got[0][1]) if got else []
            except redis.RedisError as exc:
                raise InputError(f"{self.name}: {type(exc).__name__}: {exc}") from None
            if not entries:
                yield empty_canonical()  # an idle tick: lets a batching reader release what it holds
                continue
            yield from self._frames(entries)

    def _frames(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> Iterator[pd.DataFrame]:
        records: list[dict[str, Any]] = []
        lines: list[int] = []
        alerts = []
        ids: list[str] = []
        where = f"{self.name}"
        for n, (raw_id, fields) in enumerate(entries):
            sid = _id(raw_id)
            ids.append(sid)
            self.read += 1
            rec = self._parse(sid, fields, where)
            if rec is None:
                continue
            if rec["event_type"] == "flow":
                records.append(rec)
                lines.append(n + 1)  # position in this read; bad-record messages name the stream
            elif rec["event_type"] == "alert":
                alert = eve_alert(rec, source_name=self.name)
                if alert is not None:
                    alerts.append(alert)
        frame = (suricata_flows_to_canonical(records, source=where, lines=lines, on_bad=self.bad_records)
                 if records else empty_canonical())
        if alerts:
            if len(frame):
                yield frame  # flows first (fusion then finds the model's verdict), acked with the carrier
            carrier = empty_canonical()
            carrier.attrs["suricata_alerts"] = alerts
            carrier.attrs["trustmesh_ack"] = ids
            yield carrier
            return
        frame.attrs["trustmesh_ack"] = ids
        yield frame

    def _parse(self, sid: str, fields: dict[bytes, bytes], where: str) -> dict[str, Any] | None:
        raw = fields.get(b"eve")
        if raw is None:
            report(BadRecord(where, None, "eve", f"stream entry {sid} has no 'eve' field (Suricata's redis "
                                              "stream format: XADD KEY * eve JSON)"), self.bad_records)
            return None
        if len(raw) > _MAX_RECORD_BYTES:
            report(BadRecord(where, None, "eve", f"stream entry {sid}: record over {_MAX_RECORD_BYTES} bytes"),
                   self.bad_records)
            return None
        if json_too_deep(raw.decode("utf-8", "replace"), MAX_JSON_DEPTH):
            report(BadRecord(where, None, "eve", f"stream entry {sid}: JSON nested deeper than {MAX_JSON_DEPTH} "
                                              "levels"), self.bad_records)
            return None
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            report(BadRecord(where, None, "eve", f"stream entry {sid}: not JSON ({str(exc)[:80]})"), self.bad_records)
            return None
        if not isinstance(rec, dict) or not isinstance(rec.get("event_type"), str):
            report(BadRecord(where, None, "event_type", f"stream entry {sid}: not a Suricata EVE record"),
                   self.bad_records)
            return None
        if not _depth(rec, _MAX_DEPTH):
            report(BadRecord(where, None, "eve", f"stream entry {sid}: nested deeper than {_MAX_DEPTH}"),
                   self.bad_records)
            return None
        return rec
