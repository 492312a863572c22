"""Real loopback servers for the sink tests: an HTTP server whose answers a test scripts."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest



@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    # answer(request) -> (status, body bytes, content type)
    answer: Callable[[Recorded], tuple[int, bytes, str]] = lambda r: (200, b"{}", "application/json")


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server_state = HttpServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            length = int(self.headers.get("Content-Length", "0"))
            rec = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
            server_state.requests.append(rec)
            status, body, ctype = server_state.answer(rec)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
