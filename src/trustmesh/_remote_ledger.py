"""A client of ``trustmesh ledger serve``: workers on many machines append to one ledger.

:class:`RemoteLedger` offers the part of :class:`~trustmesh.ledger.Ledger` a pipeline uses
(``append``, ``checkpoint``, ``latest_checkpoint``, ``size``, ``origin``, ``put_blob``, ``close``).
Every request is an Ed25519-signed ``POST /add-entries`` (the ``trustmesh-submit/v2`` request format
of the server's ``api/_auth.py``: log origin, Host, method, path, timestamp, nonce, Idempotency-Key
and the body's SHA-256, one per line) carrying an ``Idempotency-Key``: a retry after a timeout or a
lost connection sends the same key with a fresh nonce, so the server returns the original indices
and never appends twice. Only the standard library is used (``http.client`` with keep-alive).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trustmesh.errors import InputError, TrustmeshError
from trustmesh.ledger import BlobId, Checkpoint, Entry, NoteSigner

__all__ = ["RemoteLedger", "signed_headers"]

log = logging.getLogger(__name__)

_SIGNED_VERSION = "trustmesh-submit/v2"
_MAX_BODY = 6 << 20  # bytes per request (the server refuses more than 8 MiB)
_MAX_ENTRIES = 5_000  # entries per request (the server takes at most 10,000)


def signed_headers(signer: NoteSigner, *, origin: str, host: str, path: str, body: bytes,
                   idempotency_key: str | None) -> dict[str, str]:
    """Return the headers of a signed write request (the server's ``trustmesh-submit/v2`` format)."""
    ts = str(int(time.time()))
    nonce = secrets.token_urlsafe(18)
    fields = (_SIGNED_VERSION, origin, host, "POST", path, ts, nonce, idempotency_key or "",
              hashlib.sha256(body).hexdigest())
    sig = signer.sign("".join(f + "\n" for f in fields).encode())
    headers = {"Host": host, "Content-Type": "application/json", "X-Trustmesh-Key": signer.name,
               "X-Trustmesh-Timestamp": ts, "X-Trustmesh-Nonce": nonce,
               "X-Trustmesh-Signature": base64.b64encode(sig).decode("ascii")}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


class RemoteLedger:
    """Append to a ledger served by ``trustmesh ledger serve`` at ``url`` with the client key ``signer``.

    Thread-safe (one keep-alive connection per thread). ``blob_dir`` keeps payloads too large for an
    entry locally (their sha256 is what the entry records). Failed requests are retried ``retries``
    times with the same idempotency key; a refusal (4xx) is an InputError naming the server's reason.
    """

    def __init__(self, url: str, signer: NoteSigner, origin: str, *, blob_dir: Path | None = None,
                 timeout_s: float = 30.0, retries: int = 5) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise InputError(f"ledger url must be http://HOST:PORT, got {url!r}")
        self.url, self.signer, self._origin = url.rstrip("/"), signer, origin
        self._host_header = parts.netloc
        self._hostname, self._port = parts.hostname, parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.timeout_s, self.retries = timeout_s, retries
        self.blob_dir = blob_dir
        self.directory = Path(url)  # for messages (a Ledger has its folder here)
        self._local = threading.local()
        self._worker = secrets.token_hex(8)  # idempotency keys: unique per client, sequential per append
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._size = 0
        self._checkpoint: Checkpoint | None = None
        self.requests = 0
        self.retried = 0

    # ------------------------------------------------------------------ Ledger-like surface
    @property
    def origin(self) -> str:
        """The log's name (the server refuses requests signed for another origin)."""
        return self._origin

    @property
    def size(self) -> int:
        """The log size this client last saw (one past the highest index it was given)."""
        return self._size

    def append(self, entries: Sequence[Entry], *, idempotency_key: str | None = None) -> list[int]:
        """Append ``entries`` as one request; return their leaf indices once the server has them on disk."""
        if not entries:
            return []
        if idempotency_key is None:
            with self._seq_lock:
                self._seq += 1
                idempotency_key = f"w-{self._worker}-{self._seq}"
        # the server takes at most 8 MiB and 10,000 entries per request: larger appends go as several
        # requests, each with its own derived key (entries refer only to earlier leaves, so order holds)
        chunks: list[list[bytes]] = [[]]
        size = 0
        for e in entries:
            raw = json.dumps(e.to_dict(), separators=(",", ":")).encode()
            if chunks[-1] and (size + len(raw) > _MAX_BODY or len(chunks[-1]) >= _MAX_ENTRIES):
                chunks.append([])
                size = 0
            chunks[-1].append(raw)
            size += len(raw) + 1
        indices: list[int] = []
        for n, chunk in enumerate(chunks):
            body = b'{"entries":[' + b",".join(chunk) + b"]}"
            key = idempotency_key if len(chunks) == 1 else f"{idempotency_key}.{n}"
            doc = self._post("/add-entries", body, key)
            got = [int(i) for i in doc["indices"]]
            if len(got) != len(chunk):
                raise TrustmeshError(f"{self.url}: the server returned {len(got)} indices for {len(chunk)} entries")
            indices += got
        self._size = max(self._size, indices[-1] + 1)
        note = doc.get("checkpoint")
        if isinstance(note, str):
            cp = Checkpoint.from_bytes(note.encode("utf-8"))
            if self._checkpoint is None or cp.size >= self._checkpoint.size:
                self._checkpoint = cp
        return indices

    def checkpoint(self) -> Checkpoint:
        """Return the newest signed checkpoint (the server signs one per group commit)."""
        cp = self.latest_checkpoint()
        if cp is None:
            raise TrustmeshError(f"{self.url}: the server has not signed a checkpoint")
        return cp

    def latest_checkpoint(self) -> Checkpoint | None:
        """Fetch ``GET /checkpoint``; None when the log has none yet."""
        status, data = self._request("GET", "/checkpoint", b"", {})
        if status == 404:
            return self._checkpoint
        if status != 200:
            raise TrustmeshError(f"{self.url}/checkpoint: HTTP {status}")
        cp = Checkpoint.from_bytes(data)
        if cp.origin != self._origin:
            raise InputError(f"{self.url}: serves the log {cp.origin!r}, the configuration says {self._origin!r}")
        self._size = max(self._size, cp.size)
        self._checkpoint = cp
        return cp

    def put_blob(self, data: bytes) -> BlobId:
        """Keep a large document next to this worker (its sha256 goes into the entry)."""
        digest = hashlib.sha256(data).hexdigest()
        if self.blob_dir is not None:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            (self.blob_dir / digest).write_bytes(data)
        return BlobId(digest)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ HTTP
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self._hostname, self._port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (0, 1):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._conn()
            try:
                conn.request(method, self._prefix + path, body=body or None, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                # a kept-alive connection the server closed while idle fails on first use: one fresh try
                # for reads; a write is retried by _post, signed again with a new nonce and the same key
                if not reused or attempt or method != "GET":
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, path: str, body: bytes, key: str) -> dict[str, Any]:
        delay = 0.1
        for attempt in range(self.retries + 1):
            headers = signed_headers(self.signer, origin=self._origin, host=self._host_header,
                                     path=self._prefix + path, body=body, idempotency_key=key)
            self.requests += 1
            try:
                status, data = self._request("POST", path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    out: dict[str, Any] = json.loads(data)
                    return out
                reason = _reason(data)
                if 400 <= status < 500 and status not in (408, 429):
                    raise InputError(f"{self.url}{path}: refused (HTTP {status}): {reason}")
                problem = f"HTTP {status}: {reason}"
            if attempt == self.retries:
                raise TrustmeshError(f"{self.url}{path}: failed after {self.retries + 1} attempts ({problem})")
            self.retried += 1
            log.warning("%s%s: %s; retrying with the same idempotency key", self.url, path, problem)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover


def _reason(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace")
    return str(doc.get("error", doc))[:300] if isinstance(doc, dict) else str(doc)[:300]
