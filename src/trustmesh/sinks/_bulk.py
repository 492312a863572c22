"""Elasticsearch / OpenSearch ``_bulk`` NDJSON: to a file, POSTed to a cluster, or both."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trustmesh.errors import MissingDependencyError, SinkError
from trustmesh.sinks._base import doc_kind, redact_url

__all__ = ["BulkSink", "bulk_body"]


def _doc_id(doc: Mapping[str, Any]) -> str:
    if doc_kind(doc) == "incident":  # one record per incident: each new version replaces the last
        return str(doc.get("trustmesh", {}).get("incident", {}).get("id") or doc["event"]["id"])
    return str(doc.get("event", {}).get("id", ""))


def bulk_body(docs: Sequence[Mapping[str, Any]], *, index: str, incident_index: str | None = None,
              op: str = "index") -> bytes:
    """Return the ``_bulk`` request body: an action line and a source line per document, newline-ended.

    ``_id`` is the alert id (re-sending an alert does not duplicate it) or, for incidents, the
    incident id (the index holds each incident's latest version). ``op="create"`` suits data streams.
    """
    lines: list[str] = []
    for doc in docs:
        target = incident_index if incident_index and doc_kind(doc) == "incident" else index
        action: dict[str, Any] = {"_index": target}
        if op == "index":
            action["_id"] = _doc_id(doc)
        lines.append(json.dumps({op: action}, separators=(",", ":")))
        lines.append(json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


class BulkSink:
    """Write bulk NDJSON to ``path`` and/or POST it to ``<url>/_bulk``.

    Credentials come from the environment, never from the config file: ``api_key_env`` names a
    variable holding an Elasticsearch API key (``Authorization: ApiKey ...``); ``username`` with
    ``password_env`` gives basic auth. A response with ``"errors": true`` fails the items it names.
    """

    def __init__(self, *, path: str | Path | None = None, url: str | None = None, index: str = "trustmesh-alerts",
                 incident_index: str | None = "trustmesh-incidents", op: str = "index", timeout_s: float = 10.0,
                 api_key_env: str | None = None, username: str | None = None, password_env: str | None = None,
                 verify_tls: bool = True) -> None:
        if path is None and url is None:
            raise ValueError("bulk sink needs a path, a url or both")
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http:// or https://, got {redact_url(url)!r}")
        if op not in {"index", "create"}:
            raise ValueError(f"op must be index or create, got {op!r}")
        if not index or index != index.lower():
            raise ValueError(f"index must be a non-empty lower-case name, got {index!r}")
        self.path = None if path is None else Path(path)
        self.url = None if url is None else url.rstrip("/")
        self.index, self.incident_index, self.op, self.timeout_s = index, incident_index, op, timeout_s
        self.api_key_env, self.username, self.password_env, self.verify_tls = api_key_env, username, password_env, verify_tls
        self._client: Any = None
        self.last_delivered = 0

    @property
    def name(self) -> str:
        """``bulk <path> <url>``."""
        where = [str(self.path)] if self.path else []
        return "bulk " + " ".join(where + ([redact_url(self.url)] if self.url else []))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/x-ndjson"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise SinkError(f"environment variable {self.api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"ApiKey {key}"
        return headers

    def _auth(self) -> tuple[str, str] | None:
        if not self.username:
            return None
        password = os.environ.get(self.password_env or "", "")
        if not password:
            raise SinkError(f"environment variable {self.password_env} (password_env) is not set")
        return (self.username, password)

    def emit(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Append the batch to the file, then POST it; item failures are counted, not retried."""
        self.last_delivered = 0
        body = bulk_body(docs, index=self.index, incident_index=self.incident_index, op=self.op)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
                with os.fdopen(fd, "ab") as fh:
                    fh.write(body)
            except OSError as exc:
                raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        if self.url is None:
            self.last_delivered = len(docs)
            return
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError("httpx", "soc") from exc
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, verify=self.verify_tls)
        try:
            resp = self._client.post(f"{self.url}/_bulk", content=body, headers=self._headers(), auth=self._auth())
        except httpx.HTTPError as exc:
            raise SinkError(f"POST {redact_url(self.url)}/_bulk failed: {exc}") from exc
        if resp.status_code >= 300:
            raise SinkError(f"POST {redact_url(self.url)}/_bulk answered HTTP {resp.status_code}")
        try:
            answer = resp.json()
            items = answer.get("items", [])
        except (ValueError, AttributeError) as exc:
            raise SinkError(f"{redact_url(self.url)}/_bulk did not answer bulk JSON") from exc
        def result(item: Any) -> dict[str, Any]:
            inner: Any = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
            return inner if isinstance(inner, dict) else {}

        failed = [it for it in items if int(result(it).get("status", 500)) >= 300]
        self.last_delivered = len(docs) - len(failed) if items else 0
        if answer.get("errors") or failed or len(items) != len(docs):
            first = result(failed[0]).get("error") if failed else "item count mismatch"
            raise SinkError(f"{redact_url(self.url)}/_bulk refused {len(docs) - self.last_delivered} of "
                            f"{len(docs)} document(s): {json.dumps(first)[:300]}")  # fmt: skip

    def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            self._client.close()
            self._client = None
