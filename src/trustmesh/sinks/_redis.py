"""A Redis stream: one ``XADD`` per document (``MAXLEN ~`` keeps the stream bounded)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from trustmesh.errors import MissingDependencyError, SinkError
from trustmesh.sinks._base import doc_kind, redact_url

__all__ = ["RedisStreamSink"]


class RedisStreamSink:
    """``XADD <stream> MAXLEN ~ <maxlen> * kind <alert|incident> id <event.id> doc <ECS JSON>``.

    Consumers read with ``XREAD``/``XREADGROUP``; the ``doc`` field is the whole ECS document. A
    password belongs in the URL (``redis://:pw@host:6379/0``) and never appears in counters or logs.
    Each batch goes in one pipeline (one round trip).
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, stream: str = "trustmesh:alerts",
                 maxlen: int | None = 100_000, timeout_s: float = 5.0) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"url must start with redis://, rediss:// or unix://, got {redact_url(url)!r}")
        if not stream:
            raise ValueError("stream must not be empty")
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        self.url, self.stream, self.maxlen, self.timeout_s = url, stream, maxlen, timeout_s
        self._client: Any = None

    @property
    def name(self) -> str:
        """``redis <url without password> <stream>``."""
        return f"redis {redact_url(self.url)} {self.stream}"

    def _connect(self) -> Any:
        if self._client is None:
            try:
                import redis
            except ImportError as exc:
                raise MissingDependencyError("redis", "soc") from exc
            self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                socket_connect_timeout=self.timeout_s)  # fmt: skip
        return self._client

    def emit(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Append every document to the stream in one round trip."""
        import redis

        client = self._connect()
        pipe = client.pipeline(transaction=False)
        for doc in docs:
            fields = {"kind": doc_kind(doc), "id": str(doc.get("event", {}).get("id", "")),
                      "doc": json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)}  # fmt: skip
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self.close()
            raise SinkError(f"XADD to {self.stream} failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None
