"""Webhooks: one signed POST per document, retried with exponential backoff, every delivery recorded.

Signature (document it to receivers as is)::

    X-Trustmesh-Timestamp: 1700000000
    X-Trustmesh-Signature: sha256=<hex HMAC-SHA256(secret, b"1700000000." + body)>

The signed bytes are the decimal timestamp, one ``.``, then the exact request body (the ECS document
as compact JSON with sorted keys, UTF-8). Receivers recompute the HMAC, compare in constant time and
refuse timestamps older than a few minutes (replays): :func:`verify_signature` does exactly that.
``X-Trustmesh-Delivery`` is one id per document, the same on every retry, so receivers can drop
duplicates; ``X-Trustmesh-Event`` is ``alert`` or ``incident``.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trustmesh.errors import MissingDependencyError, SignatureError, SinkError
from trustmesh.sinks._base import doc_kind, redact_url

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookSink", "sign", "verify_signature"]

SIGNATURE_HEADER = "X-Trustmesh-Signature"
TIMESTAMP_HEADER = "X-Trustmesh-Timestamp"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """Return the ``X-Trustmesh-Signature`` value: ``sha256=`` + hex HMAC-SHA256 over ``b"<ts>." + body``."""
    mac = hmac.new(secret, str(int(timestamp)).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: bytes, body: bytes, timestamp: str, signature: str, *, tolerance_s: float = 300.0,
                     now: float | None = None) -> None:
    """Check a delivery's signature and age; raise :class:`SignatureError` unless both are good."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer: {timestamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError(f"{TIMESTAMP_HEADER} {ts} is more than {tolerance_s:.0f} s from now (replay?)")
    if not hmac.compare_digest(sign(secret, ts, body), str(signature)):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body")


class WebhookSink:
    """POST each ECS document to ``url`` with an HMAC-SHA256 signature; retry, back off, record.

    ``retries`` extra attempts follow a failed one (connection errors, timeouts, HTTP 408/425/429/5xx)
    after ``backoff_s * 2**n`` seconds (capped at ``max_backoff_s``); other HTTP 4xx answers are final.
    After ``breaker_after`` documents in a row failed, deliveries are skipped (recorded as
    ``skipped``) for ``breaker_s`` seconds, so a dead endpoint cannot stall the pipeline.
    Every delivery is appended to ``deliveries_path`` (JSON lines) when given and kept in
    :attr:`deliveries` (the last 1,000).
    """

    def __init__(self, url: str, *, secret: bytes | None, retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, timeout_s: float = 5.0, breaker_after: int = 5,
                 breaker_s: float = 60.0, deliveries_path: str | Path | None = None, verify_tls: bool = True,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http:// or https://, got {redact_url(url, keep_path=False)!r}")
        if retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("retries, backoff_s and max_backoff_s must be >= 0")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if breaker_after < 1:
            raise ValueError(f"breaker_after must be >= 1, got {breaker_after}")
        self.url, self.secret, self.retries, self.backoff_s = url, secret, retries, backoff_s
        self.max_backoff_s, self.timeout_s, self.verify_tls = max_backoff_s, timeout_s, verify_tls
        self.breaker_after, self.breaker_s = breaker_after, breaker_s
        self.deliveries_path = None if deliveries_path is None else Path(deliveries_path)
        self.deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._sleep, self._clock = sleep, clock
        self._client: Any = None
        self._failures_in_row = 0
        self._open_until = 0.0
        self.last_delivered = 0

    @property
    def shown_url(self) -> str:
        """The URL as counters, records and errors show it: no password, no path (tokens live there)."""
        return redact_url(self.url, keep_path=False)

    @property
    def name(self) -> str:
        """``webhook <scheme://host/…>``."""
        return f"webhook {self.shown_url}"

    def _record(self, record: dict[str, Any]) -> None:
        self.deliveries.append(record)
        if self.deliveries_path is None:
            return
        try:
            self.deliveries_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.deliveries_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            raise SinkError(f"cannot record deliveries in {self.deliveries_path}: {exc.strerror or exc}") from exc

    def _deliver(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        import httpx

        body = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
        delivery = str(uuid.uuid4())
        record: dict[str, Any] = {"delivery_id": delivery, "event_id": doc.get("event", {}).get("id"),
                                  "kind": doc_kind(doc), "url": self.shown_url, "attempts": 0,
                                  "status": "failed", "http_status": None, "error": None}  # fmt: skip
        started = self._clock()
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            ts = int(self._clock())
            headers = {"Content-Type": "application/json", "User-Agent": "trustmesh-webhook/1",
                       "X-Trustmesh-Delivery": delivery, "X-Trustmesh-Event": record["kind"],
                       TIMESTAMP_HEADER: str(ts)}  # fmt: skip
            if self.secret is not None:
                headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
            record["attempts"] = attempt + 1
            try:
                resp = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                record["error"], record["http_status"] = f"{type(exc).__name__}: {exc}", None
                continue
            record["http_status"] = resp.status_code
            if 200 <= resp.status_code < 300:
                record["status"], record["error"] = "delivered", None
                break
            record["error"] = f"HTTP {resp.status_code}"
            if resp.status_code not in _RETRY_STATUS:
                break
        record["time"] = started
        record["seconds"] = round(self._clock() - started, 3)
        return record

    def emit(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Deliver every document; raise SinkError at the end if any was not delivered."""
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError("httpx", "soc") from exc
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, verify=self.verify_tls)
        self.last_delivered = 0
        failed, last_error = 0, ""
        for doc in docs:
            if self._clock() < self._open_until:
                record = {"delivery_id": None, "event_id": doc.get("event", {}).get("id"), "kind": doc_kind(doc),
                          "url": self.shown_url, "attempts": 0, "status": "skipped", "http_status": None,
                          "error": "circuit open after repeated failures", "time": self._clock(), "seconds": 0.0}
            else:
                record = self._deliver(doc)
            self._record(record)
            if record["status"] == "delivered":
                self.last_delivered += 1
                self._failures_in_row = 0
                continue
            failed += 1
            last_error = str(record["error"])
            if record["status"] == "failed":
                self._failures_in_row += 1
                if self._failures_in_row >= self.breaker_after:
                    self._open_until = self._clock() + self.breaker_s
                    self._failures_in_row = 0
        if failed:
            raise SinkError(f"{failed} of {len(docs)} delivery(ies) to {self.shown_url} failed; last: {last_error}")

    def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            self._client.close()
            self._client = None
