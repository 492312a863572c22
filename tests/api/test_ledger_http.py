"""The ledger server's own HTTP/1.1 layer (api/_ledger_http.py) over real loopback sockets."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh.api import RequestAuth, create_ledger_app, sign_request
from trustmesh.api._ledger_http import serve_ledger
from trustmesh.ledger import Ledger, NoteSigner

ORIGIN = "test.trustmesh/http"


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[int, NoteSigner]]:
    Ledger.create(tmp_path / "log", ORIGIN).close()
    signer = NoteSigner.generate("http-client")
    app = create_ledger_app(tmp_path / "log", auth=RequestAuth.from_config([], [signer.verifier.to_vkey()]),
                            max_body_bytes=4096)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve_ledger, args=(app, "127.0.0.1", port),
                              kwargs={"on_ready": ready.set, "stop": stop, "request_timeout_s": 1.0}, daemon=True)
    thread.start()
    assert ready.wait(30), "server did not start"
    yield port, signer
    stop.set()
    thread.join(15)
    assert not thread.is_alive(), "the server did not stop when asked"
    app.state.writer.close()
    app.state.ledger.close()


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        assert more, f"connection closed mid-response: {bytes(buf)[:200]!r}"
        buf += more
    end = buf.index(b"\r\n\r\n")
    first, *lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    length = int(headers["content-length"])
    while len(buf) < end + 4 + length:
        buf += sock.recv(65536)
    body = bytes(buf[end + 4:end + 4 + length])
    del buf[:end + 4 + length]
    return int(first.split()[1]), headers, body


def _signed_post(port: int, signer: NoteSigner, payload: dict[str, object]) -> bytes:
    body = json.dumps({"entries": [{"kind": "alert", "payload": payload}]}).encode()
    headers = sign_request(signer, "POST", "/add-entries", body, nonce=secrets.token_urlsafe(16), origin=ORIGIN,
                           host=f"127.0.0.1:{port}")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /add-entries HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_pipelined_requests_are_answered_in_order(served: tuple[int, NoteSigner]) -> None:
    port, signer = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        # three requests in one write: a read through the app, two appends through the submit path
        c.sendall(b"GET /log.pub HTTP/1.1\r\nHost: x\r\n\r\n" + _signed_post(port, signer, {"i": 0})
                  + _signed_post(port, signer, {"i": 1}))
        buf = bytearray()
        status, _, key = _read_response(c, buf)
        assert status == 200 and key.decode().startswith(ORIGIN)
        answers = [_read_response(c, buf) for _ in range(2)]
        assert [(s, json.loads(b)["indices"]) for s, _, b in answers] == [(200, [0]), (200, [1])]
        assert "checkpoint" in json.loads(answers[1][2])
        c.sendall(b"GET /proof/inclusion?index=1&size=2 HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection
        status, headers, body = _read_response(c, buf)
        assert status == 200 and headers["content-type"] == "application/json" and json.loads(body)["leafIdx"] == 1


def test_chunked_body_is_decoded(served: tuple[int, NoteSigner]) -> None:
    port, signer = served
    raw = _signed_post(port, signer, {"chunked": True})
    head, _, body = raw.partition(b"\r\n\r\n")
    head = b"\r\n".join(ln for ln in head.split(b"\r\n") if not ln.startswith(b"Content-Length"))
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\nX-T: 1\r\n\r\n")
        status, _, answer = _read_response(c, bytearray())
    assert status == 200 and json.loads(answer)["indices"] == [0]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /log.pub HTTP/2.0\r\n\r\n", 400),
    (b"GET /log.pub HTTP/1.1\r\nbad header line\r\n\r\n", 400),
    (b"POST /add-entries HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400),
    (b"POST /add-entries HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", 413),  # refused before the body
    (b"POST /add-entries HTTP/1.1\r\nContent-Length: x1\r\n\r\n", 400),
    (b"POST /add-entries HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST /add-entries HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /add-entries HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"800\r\n" + b"a" * 2048 + b"\r\n"
     + b"800\r\n" + b"a" * 2048 + b"\r\n" + b"800\r\n", 413),  # chunks past the 4096-byte limit
    (b"GET /log.pub HTTP/1.1\r\nX-Pad: " + b"a" * (17 << 10) + b"\r\n\r\n", 431),
])
def test_malformed_requests_get_one_error_and_a_closed_connection(served: tuple[int, NoteSigner],
                                                                  request_bytes: bytes, status: int) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(request_bytes)
        got, headers, body = _read_response(c, bytearray())
        assert got == status, body
        assert headers.get("connection") == "close" and json.loads(body)["error"]
        assert _closed(c)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:  # the server is still serving
        c.sendall(b"GET /log.pub HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(c, bytearray())[0] == 200


def test_a_slow_or_idle_client_is_cut_off(served: tuple[int, NoteSigner]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /log.pub HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        started = time.monotonic()
        for _ in range(5):  # dribbling more header bytes does not keep it open
            time.sleep(0.3)
            try:
                c.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert _closed(c)
        assert time.monotonic() - started < 9


def test_connection_close_is_honoured(served: tuple[int, NoteSigner]) -> None:
    port, signer = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(_signed_post(port, signer, {"x": 1}).replace(b"Host:", b"Connection: close\r\nHost:", 1))
        status, headers, _ = _read_response(c, bytearray())
        assert status == 200 and headers.get("connection") == "close"
        assert _closed(c)
