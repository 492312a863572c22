"""Real-protocol test servers on 127.0.0.1: an MQTT 3.1.1 broker, a webhook receiver, a chat-completions LLM.

They are test doubles only for services that cannot run here (no MQTT broker, no LLM); each speaks
the real wire protocol so the code under test uses its real client path (paho-mqtt, urllib).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatServer", "HTTPReceiver", "MiniBroker"]


def _read_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


def _read_packet(conn: socket.socket) -> tuple[int, int, bytes]:
    first = _read_exact(conn, 1)[0]
    length, shift = 0, 0
    while True:  # MQTT 3.1.1 section 2.2.3: remaining length, 7 bits per byte
        byte = _read_exact(conn, 1)[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return first >> 4, first & 0x0F, _read_exact(conn, length)


class MiniBroker:
    """Accept MQTT 3.1.1 clients: CONNECT->CONNACK, PUBLISH (QoS 0/1)->PUBACK, PINGREQ, DISCONNECT."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.published: list[tuple[str, bytes, int]] = []
        self.connects: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> MiniBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    self._session(conn)
                except (ConnectionError, OSError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        while True:
            kind, flags, body = _read_packet(conn)
            if kind == 1:  # CONNECT: protocol name, level, flags, keepalive, client id
                name_len = struct.unpack(">H", body[:2])[0]
                name = body[2:2 + name_len].decode()
                level = body[2 + name_len]
                off = 2 + name_len + 4
                cid_len = struct.unpack(">H", body[off:off + 2])[0]
                self.connects.append({"protocol": name, "level": level,
                                      "client_id": body[off + 2:off + 2 + cid_len].decode()})
                conn.sendall(bytes([0x20, 0x02, 0x00, 0x00]))
            elif kind == 3:  # PUBLISH
                qos = (flags >> 1) & 0x03
                tlen = struct.unpack(">H", body[:2])[0]
                topic = body[2:2 + tlen].decode()
                off = 2 + tlen
                if qos:
                    pid = body[off:off + 2]
                    off += 2
                    conn.sendall(bytes([0x40, 0x02]) + pid)
                self.published.append((topic, body[off:], qos))
            elif kind == 12:  # PINGREQ
                conn.sendall(bytes([0xD0, 0x00]))
            elif kind == 14:  # DISCONNECT
                return


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class HTTPReceiver(_Server):
    """Record JSON POSTs; answer with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

        class Handler(_Quiet):
            def do_POST(self) -> None:
                owner = self.server.owner  # type: ignore[attr-defined]
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.received.append(json.loads(body))
                owner.headers.append(dict(self.headers))
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler)


class ChatServer(_Server):
    """Speak ``POST /v1/chat/completions``: ``reply(request) -> content string`` builds the answer.

    ``delay_s`` makes it slow (timeouts); ``raw`` replaces the whole HTTP body (broken envelopes).
    """

    def __init__(self, reply: Callable[[dict[str, Any]], str], *, delay_s: float = 0.0,
                 raw: bytes | None = None) -> None:
        self.reply, self.delay_s, self.raw = reply, delay_s, raw
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []

        class Handler(_Quiet):
            def do_POST(self) -> None:
                owner = self.server.owner  # type: ignore[attr-defined]
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                owner.requests.append(body)
                owner.paths.append(self.path)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                time.sleep(owner.delay_s)
                if owner.raw is not None:
                    out = owner.raw
                else:
                    out = json.dumps({
                        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": owner.reply(body)}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        super().__init__(Handler)
