"""A client of ``trustmesh ledger serve``: workers on many machines append to one ledger.

:class:`RemoteLedger` offers the part of :class:`~trustmesh.ledger.Ledger` a pipeline uses
(``append``, ``checkpoint``, ``latest_checkpoint``, ``size``, ``origin``, ``put_blob``, ``close``).
Every request is an Ed25519-signed ``POST /add-entries`` (the ``trustmesh-submit/v2`` request format
of the server's ``api/_auth.py``: log origin, Host, method, path, timestamp, nonce, Idempotency-Key
and the body's SHA-256, one per line) carrying an ``Idempotency-Key``: a retry after a timeout or a
lost connection sends the same key with a fresh nonce, so the server returns the original indices
and never appends twice. Only the standard library is used (one keep-alive socket per thread, see :class:`_Connection`).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import secrets
import socket
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
_MAX_HEAD = 64 << 10  # bytes of response status line and headers
_MAX_RESPONSE = 64 << 20  # bytes of one response body


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
        self._note: tuple[int, str] | None = None  # (size, note) of the newest answer's checkpoint, not parsed yet
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
            raw = e.to_bytes()  # its canonical JSON is the {"kind", "payload", "refs", "time"} object sent
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
            # kept as text and parsed only when asked for: parsing a note costs a worker more CPU
            # than signing its request, and most answers' checkpoints are never looked at
            size_line = note.split("\n", 2)[1] if note.count("\n") >= 2 else ""
            if size_line.isdigit() and len(size_line) <= 20:
                with self._seq_lock:
                    if self._note is None or int(size_line) >= self._note[0]:
                        self._note = (int(size_line), note)
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
            return self._answered_checkpoint()
        if status != 200:
            raise TrustmeshError(f"{self.url}/checkpoint: HTTP {status}")
        cp = Checkpoint.from_bytes(data)
        if cp.origin != self._origin:
            raise InputError(f"{self.url}: serves the log {cp.origin!r}, the configuration says {self._origin!r}")
        self._size = max(self._size, cp.size)
        with self._seq_lock:
            self._checkpoint = cp
            if self._note is not None and self._note[0] <= cp.size:
                self._note = None
        return cp

    def _answered_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint seen (fetched, or the last append's answer, parsed now)."""
        with self._seq_lock:
            note, self._note = self._note, None
            if note is not None:
                cp = Checkpoint.from_bytes(note[1].encode("utf-8"))
                if self._checkpoint is None or cp.size >= self._checkpoint.size:
                    self._checkpoint = cp
            return self._checkpoint

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
    def _conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connection(self._hostname, self._port, self.timeout_s)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (0, 1):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._conn()
            try:
                return conn.exchange(method, self._prefix + path, body, {"Host": self._host_header, **headers})
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


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request goes out in one write, the answer is read in few.

    ``http.client`` costs a worker more CPU per request than the server's whole check of it (its
    response headers go through the ``email`` parser); the requests here are small and the answers
    come from ``ledger serve``, so the reader needs only the status line, ``Content-Length``,
    ``Transfer-Encoding: chunked`` and ``Connection: close``. Anything else malformed is an
    ``HTTPException`` (the caller retries on a fresh connection).
    """

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._sock: socket.socket | None = None
        self._buf = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def exchange(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request and return (status, body)."""
        lines = [f"{method} {target} HTTP/1.1"]
        for k, v in headers.items():
            if "\r" in v or "\n" in v or "\r" in k or "\n" in k or ":" in k:
                raise InputError(f"HTTP header {k!r} must not contain CR, LF (or a colon in its name)")
            lines.append(f"{k}: {v}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(head + body)
        status, length, chunked, close = self._read_head()
        if status in (204, 304) or 100 <= status < 200:  # no body, whatever the headers say
            data = b""
        elif chunked:
            data = self._read_chunked()
        elif length is not None:
            data = self._read_exactly(length)
        else:  # no framing: the body runs to the end of the connection
            data = self._read_to_eof()
            close = True
        if close:
            self.close()
        return status, data

    def _fill(self) -> None:
        assert self._sock is not None
        more = self._sock.recv(65536)
        if not more:
            raise http.client.RemoteDisconnected(f"{self.host}:{self.port} closed the connection")
        self._buf += more

    def _read_head(self) -> tuple[int, int | None, bool, bool]:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise http.client.HTTPException(f"response headers over {_MAX_HEAD} bytes")
            self._fill()
        if end > _MAX_HEAD:
            raise http.client.HTTPException(f"response headers over {_MAX_HEAD} bytes")
        head, self._buf = self._buf[:end].decode("latin-1"), self._buf[end + 4:]
        first, *fields = head.split("\r\n")
        version, _, rest = first.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise http.client.BadStatusLine(first[:80])
        length: int | None = None
        close = version == "HTTP/1.0"
        chunked = False
        for line in fields:
            name, sep, value = line.partition(":")
            if not sep:
                raise http.client.HTTPException(f"malformed response header {line[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                if not value.isdigit() or int(value) > _MAX_RESPONSE:
                    raise http.client.HTTPException(f"bad response Content-Length {value[:40]!r}")
                length = int(value)
            elif name == "transfer-encoding":
                chunked = value.lower() == "chunked"
            elif name == "connection":
                close = value.lower() == "close"
        return int(code), length, chunked, close

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise http.client.HTTPException("response chunk header too long")
            self._fill()
        line, self._buf = self._buf[:end], self._buf[end + 2:]
        return line

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.HTTPException(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_RESPONSE:
                raise http.client.HTTPException(f"response over {_MAX_RESPONSE} bytes")
            parts.append(self._read_exactly(size))
            if self._read_exactly(2) != b"\r\n":
                raise http.client.HTTPException("chunk not followed by CRLF")

    def _read_to_eof(self) -> bytes:
        assert self._sock is not None
        while len(self._buf) <= _MAX_RESPONSE:
            more = self._sock.recv(65536)
            if not more:
                data, self._buf = self._buf, b""
                return data
            self._buf += more
        raise http.client.HTTPException(f"response over {_MAX_RESPONSE} bytes")


def _reason(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace")
    return str(doc.get("error", doc))[:300] if isinstance(doc, dict) else str(doc)[:300]
