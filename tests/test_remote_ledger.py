"""RemoteLedger's HTTP/1.1 connection: response framing, keep-alive, refusals of malformed answers."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from trustmesh._remote_ledger import RemoteLedger, _Connection
from trustmesh.errors import InputError, TrustmeshError
from trustmesh.ledger import Entry, NoteSigner

Handler = Callable[[bytes, socket.socket], bool]  # (request bytes, socket) -> keep the connection open


def _read_request(conn: socket.socket, buf: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buf:
        more = conn.recv(65536)
        if not more:
            return None
        buf += more
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(buf) < end + length:
        buf += conn.recv(65536)
    request = bytes(buf[:end + length])
    del buf[:end + length]
    return request


@pytest.fixture()
def raw_server() -> Iterator[tuple[int, list[Handler], list[bytes], list[int]]]:
    """A loopback TCP server answering each request with the next handler; records requests, connections."""
    handlers: list[Handler] = []
    seen: list[bytes] = []
    accepted = [0]
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.settimeout(0.1)  # accept() wakes up to see the stop flag
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted[0] += 1
            conn.settimeout(10)
            buf = bytearray()
            with conn:
                while handlers:
                    try:
                        req = _read_request(conn, buf)
                    except OSError:
                        break
                    if req is None:
                        break
                    seen.append(req)
                    if not handlers.pop(0)(req, conn):
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield lsock.getsockname()[1], handlers, seen, accepted
    stop.set()
    lsock.close()
    thread.join(10)


def _answer(raw: bytes, keep: bool = True) -> Handler:
    def handler(_: bytes, conn: socket.socket) -> bool:
        conn.sendall(raw)
        return keep
    return handler


def test_keep_alive_content_length_chunked_and_close(raw_server: tuple[int, list[Handler], list[bytes], list[int]]
                                                     ) -> None:
    port, handlers, seen, accepted = raw_server
    handlers += [
        _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        # headers and body in separate writes, body split across chunks with an extension and a trailer
        _answer(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n"),
        _answer(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
        _answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end", keep=False),
        _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ]
    conn = _Connection("127.0.0.1", port, 10)
    assert conn.exchange("GET", "/a", b"", {"Host": "h"}) == (200, b"hello")
    assert conn.exchange("POST", "/b", b'{"x":1}', {"Host": "h"}) == (201, b"abcde")
    assert conn.exchange("GET", "/c", b"", {"Host": "h"}) == (204, b"")
    assert conn.exchange("GET", "/d", b"", {"Host": "h"}) == (200, b"to the end")
    assert conn.exchange("GET", "/e", b"", {"Host": "h"}) == (200, b"ok")  # reconnected after the close
    conn.close()
    assert accepted[0] == 2, "four requests on the first connection, one on the second"
    assert seen[1].startswith(b"POST /b HTTP/1.1\r\n") and seen[1].endswith(b'\r\n\r\n{"x":1}')
    assert b"Content-Length: 7\r\n" in seen[1] and b"Host: h\r\n" in seen[1]


@pytest.mark.parametrize("raw", [
    b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
    b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",  # status not a number
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",  # bad length
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # malformed header
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed before the body ended
])
def test_malformed_answers_are_protocol_errors(raw_server: tuple[int, list[Handler], list[bytes], list[int]],
                                               raw: bytes) -> None:
    port, handlers, _, _ = raw_server
    handlers.append(_answer(raw, keep=False))
    conn = _Connection("127.0.0.1", port, 10)
    with pytest.raises(http.client.HTTPException):
        conn.exchange("GET", "/", b"", {"Host": "h"})
    conn.close()


def test_oversized_response_head_is_refused(raw_server: tuple[int, list[Handler], list[bytes], list[int]]) -> None:
    port, handlers, _, _ = raw_server
    handlers.append(_answer(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * (70 << 10) + b"\r\n\r\n", keep=False))
    conn = _Connection("127.0.0.1", port, 10)
    with pytest.raises(http.client.HTTPException, match="headers over"):
        conn.exchange("GET", "/", b"", {"Host": "h"})
    conn.close()


def test_header_injection_is_refused_before_sending() -> None:
    conn = _Connection("127.0.0.1", 9, 1)  # never connected: the check comes first
    with pytest.raises(InputError, match="CR, LF"):
        conn.exchange("POST", "/add-entries", b"{}", {"Idempotency-Key": "k\r\nX-Evil: 1"})


def test_remote_append_retries_a_broken_answer_with_the_same_key(
        raw_server: tuple[int, list[Handler], list[bytes], list[int]]) -> None:
    port, handlers, seen, _ = raw_server
    handlers += [_answer(b"garbage\r\n\r\n", keep=False),
                 _answer(b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"indices":[7]}')]
    remote = RemoteLedger(f"http://127.0.0.1:{port}", NoteSigner.generate("w"), "o", retries=2)
    assert remote.append([Entry("alert", {"a": 1}, time=1.0)], idempotency_key="key-1") == [7]
    assert remote.retried == 1 and remote.size == 8
    keys = [line for req in seen for line in req.split(b"\r\n") if line.startswith(b"Idempotency-Key:")]
    nonces = [line for req in seen for line in req.split(b"\r\n") if line.startswith(b"X-Trustmesh-Nonce:")]
    assert keys == [b"Idempotency-Key: key-1"] * 2 and len(set(nonces)) == 2, "same key, fresh nonce"
    remote.close()


def test_remote_append_gives_up_with_one_clear_error(raw_server: tuple[int, list[Handler], list[bytes], list[int]]
                                                     ) -> None:
    port, handlers, _, _ = raw_server
    handlers += [_answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 16\r\n\r\n{\"error\":\"busy\"}")] * 2
    remote = RemoteLedger(f"http://127.0.0.1:{port}", NoteSigner.generate("w"), "o", retries=1)
    with pytest.raises(TrustmeshError, match=r"failed after 2 attempts \(HTTP 503: busy\)"):
        remote.append([Entry("alert", {"a": 1}, time=1.0)])
    remote.close()


def test_importing_the_api_does_not_load_the_operator_server() -> None:
    code = ("import sys; from trustmesh.api import RequestAuth, create_ledger_app; "
            "print(sorted(m for m in ('jsonschema', 'trustmesh.respond', 'trustmesh.api._app') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
