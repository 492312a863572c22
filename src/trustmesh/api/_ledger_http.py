"""The HTTP/1.1 server of ``trustmesh ledger serve``: the submit path answered in one write, the rest via ASGI.

At a few thousand single-entry appends a second on two cores, a general ASGI server's work per
request (a task, header callbacks, two socket writes per response) cost more CPU than checking the
request's signature. This server parses a request itself (request line, headers, a body framed by
``Content-Length``), hands ``POST /add-entries`` straight to the ledger app's ``submit`` and writes
the answer in one ``write``; every other request (tiles, checkpoint, proofs) goes through the
FastAPI app as an ordinary ASGI call.

Limits: request line and headers at most 16 KiB (431), a body at most the app's ``max_body_bytes``
(413, refused before it is read; a chunked body as soon as its chunks pass the limit), no other
``Transfer-Encoding`` (501),
one request at a time per connection (pipelined requests wait their turn, answered in order), a
request must arrive whole within ``request_timeout_s`` of the connection opening or of the previous
answer (slow senders are cut off), and SIGINT/SIGTERM stop accepting, let the requests in flight
finish (at most 10 s), then return.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote

__all__ = ["serve_ledger"]

log = logging.getLogger(__name__)

MAX_HEAD: Final = 16 << 10
_PHRASES = {s.value: s.phrase for s in http.HTTPStatus}


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes, close: bool) -> bytes:
    out = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}\r\n".encode()]
    for k, v in headers:
        out += [k, b": ", v, b"\r\n"]
    if close:
        out.append(b"connection: close\r\n")
    out += [b"\r\n", body]
    return b"".join(out)


def _json(status: int, doc: dict[str, Any], extra: dict[str, str] | None = None, close: bool = False) -> bytes:
    return _json_bytes(status, json.dumps(doc, separators=(",", ":")).encode(), extra, close)


_OK_JSON: Final = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "


def _json_bytes(status: int, data: bytes, extra: dict[str, str] | None = None, close: bool = False) -> bytes:
    if status == 200 and not extra and not close:  # the answer to nearly every add-entries request
        return b"".join((_OK_JSON, str(len(data)).encode(), b"\r\n\r\n", data))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()]
    return _response(status, headers, data, close)


class _Connection(asyncio.Protocol):
    """One client connection: parse a request, answer it, then the next."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a request is being answered
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = server.loop.create_future()
        self.chunk_state: tuple[int, int, list[bytes]] | None = None  # a chunked body being decoded

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)
        self.server.connections.add(self)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_HEAD + self.server.max_body + 2 * MAX_HEAD:  # a flood of pipelined requests
            self._fail(413, "too much request data at once")
            return
        if not self.busy:
            self._next()

    # ---------------------------------------------------------------- requests
    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(self.server.request_timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        if not self.busy and self.transport is not None:
            self.transport.close()  # idle or too slow to send a whole request

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, then close (what follows it cannot be framed)."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.write(_json(status, {"error": message}, close=True))
            self.transport.close()

    def _next(self) -> None:
        """Start answering the next complete request in the buffer, if there is one."""
        if self.closing or self.transport is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._fail(431, f"request line and headers must be at most {MAX_HEAD} bytes")
            return
        if end > MAX_HEAD:
            self._fail(431, f"request line and headers must be at most {MAX_HEAD} bytes")
            return
        try:
            head = bytes(self.buf[:end]).decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            self._fail(400, "undecodable request head")
            return
        first, *lines = head.split("\r\n")
        parts = first.split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[0].isalpha() \
                or not parts[1].startswith("/"):
            self._fail(400, "malformed request line")
            return
        method, target, version = parts
        submit = method == "POST" and target == "/add-entries"  # answered here; the rest goes to ASGI
        headers: dict[str, str] = {}
        raw: list[tuple[bytes, bytes]] = []
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or " " in name or "\t" in name:
                self._fail(400, "malformed request header")
                return
            key, value = name.lower(), value.strip()
            if key in headers:
                if key in ("content-length", "host") and headers[key] != value:
                    self._fail(400, f"conflicting {name} headers")
                    return
            else:
                headers[key] = value
            if not submit:
                raw.append((key.encode("latin-1"), value.encode("latin-1")))
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower() != "chunked" or "content-length" in headers:
                self._fail(501 if "content-length" not in headers else 400,
                           "only Transfer-Encoding: chunked (and without Content-Length) is supported")
                return
            got = self._chunked(end + 4)
            if got is None:
                return  # refused, or still arriving
            body, used = got
        else:
            declared = headers.get("content-length", "0")
            if not declared.isdigit():
                self._fail(400, "Content-Length must be a number")
                return
            length = int(declared)
            if length > self.server.max_body:
                self._fail(413, f"request body must be at most {self.server.max_body} bytes")
                return
            if len(self.buf) < end + 4 + length:
                return  # the body is still arriving
            body, used = bytes(self.buf[end + 4:end + 4 + length]), end + 4 + length
        del self.buf[:used]
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self.busy = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if submit:
            self._submit(headers, body, keep)
            return
        task = self.server.loop.create_task(self._asgi(method, target, raw, body, keep))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def _chunked(self, start: int) -> tuple[bytes, int] | None:
        """Decode a chunked body from ``start``, resuming where the last call stopped; refuse it (413) as
        soon as it passes the limit. Return (body, bytes used) once complete, else None."""
        if self.chunk_state is None:
            self.chunk_state = (start, 0, [])
        pos, total, parts = self.chunk_state
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > 1024:
                    self._fail(400, "malformed chunk size line")
                return None
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                self._fail(400, "malformed chunk size line")
                return None
            size = int(size_text, 16)
            if size == 0:
                if buf[eol + 2:eol + 4] == b"\r\n":
                    done = eol + 4
                else:
                    trailer_end = buf.find(b"\r\n\r\n", eol + 2)
                    if trailer_end < 0:
                        if len(buf) - eol > MAX_HEAD:
                            self._fail(431, "chunk trailers too long")
                        return None
                    done = trailer_end + 4
                self.chunk_state = None
                return b"".join(parts), done
            if total + size > self.server.max_body:
                self._fail(413, f"request body must be at most {self.server.max_body} bytes")
                return None
            if len(buf) < eol + 2 + size + 2:
                return None  # this chunk is still arriving (resumes at its size line)
            if buf[eol + 2 + size:eol + 4 + size] != b"\r\n":
                self._fail(400, "chunk data not followed by CRLF")
                return None
            parts.append(bytes(buf[eol + 2:eol + 2 + size]))
            total += size
            pos = eol + 4 + size
            self.chunk_state = (pos, total, parts)

    def _done(self, data: bytes, keep: bool) -> None:
        self.server.answered()
        if self.transport is None or self.closing:
            return
        self.transport.write(data)
        if not keep or self.server.stopping:
            self.closing = True
            self.transport.close()
            return
        self.busy = False
        self._arm()
        if self.buf:  # a pipelined request: its turn comes in the next loop pass (no recursion)
            self.server.loop.call_soon(self._next)

    def _submit(self, headers: dict[str, str], body: bytes, keep: bool) -> None:
        """Check and queue an add-entries request; the writer's answer (or a refusal now) is written by _done."""
        def reply(answer: tuple[int, bytes, dict[str, str]]) -> None:
            self._done(_json_bytes(answer[0], answer[1], answer[2], close=not keep), keep)

        self.server.pending += 1
        try:
            now = self.server.begin("/add-entries", headers, body, reply, self.server.checker)
        except Exception:  # noqa: BLE001 - one broken request must not take the server down
            log.exception("add-entries failed")
            self._done(_json(500, {"error": "internal error"}, close=True), False)
            return
        if now is not None:
            reply(now)

    async def _asgi(self, method: str, target: str, raw: list[tuple[bytes, bytes]], body: bytes, keep: bool) -> None:
        path, _, query = target.partition("?")
        transport = self.transport
        assert transport is not None
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method.upper(), "scheme": "http", "path": unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "root_path": "", "headers": raw,
            "client": transport.get_extra_info("peername"), "server": transport.get_extra_info("sockname"),
        }
        delivered = False
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.lost
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        self.server.pending += 1
        try:
            await self.server.app(scope, receive, send)
            if not start:
                raise RuntimeError("the app sent no response")
        except Exception:  # noqa: BLE001
            log.exception("%s %s failed", method, path[:200])
            self._done(_json(500, {"error": "internal error"}, close=True), False)
            return
        data = b"".join(chunks)
        headers = [(bytes(k).lower(), bytes(v)) for k, v in start.get("headers", [])
                   if bytes(k).lower() not in (b"content-length", b"transfer-encoding", b"connection")]
        headers.append((b"content-length", str(len(data)).encode()))
        self._done(_response(int(start["status"]), headers, b"" if method == "HEAD" else data, not keep), keep)


class _Server:
    def __init__(self, app: Any, begin: Any, max_body: int, loop: asyncio.AbstractEventLoop,
                 request_timeout_s: float) -> None:
        self.app, self.begin, self.max_body, self.loop = app, begin, max_body, loop
        self.request_timeout_s = request_timeout_s
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.pending = 0  # requests being answered (an add-entries one waits for its group commit)
        self.checker: Any = None  # api._verifier.SignatureChecker, when signatures are checked in a child
        self.idle: asyncio.Event | None = None  # set when pending drops to 0 while stopping

    def answered(self) -> None:
        self.pending -= 1
        if self.pending <= 0 and self.idle is not None:
            self.idle.set()


def _check_in_child(app: Any) -> bool:
    """Whether request signatures are checked in a second process (see api/_verifier.py).

    Yes when signatures are the only credential and the machine has two cores or more (one core: the
    hand-over would only add work); ``TRUSTMESH_LEDGER_VERIFY_PROCESS=0`` or ``1`` decides otherwise.
    """
    auth = getattr(app.state, "auth", None)
    if auth is None or not auth.signatures_only:
        return False
    chosen = os.environ.get("TRUSTMESH_LEDGER_VERIFY_PROCESS", "")
    if chosen in ("0", "1"):
        return chosen == "1"
    return (os.cpu_count() or 1) >= 2


def serve_ledger(app: Any, host: str, port: int, *, request_timeout_s: float = 30.0,
                 on_ready: Callable[[], None] | None = None, stop: threading.Event | None = None) -> None:
    """Serve ``app`` (from ``create_ledger_app``) on ``host:port`` until SIGINT or SIGTERM.

    Run from another thread than the main one (tests, embedding), it stops when ``stop`` is set instead.
    """
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop comes with the api extra's uvicorn
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(app, host, port, request_timeout_s, on_ready, stop))


async def _serve(app: Any, host: str, port: int, request_timeout_s: float,
                 on_ready: Callable[[], None] | None, external: threading.Event | None) -> None:
    loop = asyncio.get_running_loop()
    state = _Server(app, app.state.begin_submit, app.state.max_body_bytes, loop, request_timeout_s)
    if _check_in_child(app):
        from trustmesh.api._verifier import SignatureChecker

        state.checker = SignatureChecker(loop)
    stop = asyncio.Event()
    signals = threading.current_thread() is threading.main_thread()
    if signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    watcher = None
    if external is not None:
        async def watch() -> None:
            while not external.is_set():
                await asyncio.sleep(0.05)
            stop.set()
        watcher = loop.create_task(watch())
    server = await loop.create_server(lambda: _Connection(state), host, port, reuse_address=True, backlog=1024)
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        state.stopping = True
        server.close()
        for conn in list(state.connections):  # idle connections close now; busy ones after their answer
            if not conn.busy and conn.transport is not None:
                conn.transport.close()
        if state.pending > 0:  # requests in flight get their answers (at most 10 s)
            state.idle = asyncio.Event()
            try:
                await asyncio.wait_for(state.idle.wait(), timeout=10)
            except TimeoutError:
                log.warning("stopping with %d requests unanswered after 10 s", state.pending)
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=1)
        for conn in list(state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await server.wait_closed()
        if state.checker is not None:
            state.checker.close()
        if watcher is not None:
            watcher.cancel()
        if signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
