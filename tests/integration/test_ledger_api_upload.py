"""A real `trustmesh ledger serve` (uvicorn on 127.0.0.1) refuses an unauthenticated chunked upload with
no Content-Length as soon as it passes the size limit, without growing its memory (issue 14: a
400 MiB upload grew the server from 73 MB to 798 MB)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trustmesh.ledger import Entry, Ledger

EXE = Path(sys.executable).with_name("trustmesh")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.integration
def test_chunked_upload_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    d = tmp_path / "log"
    with Ledger.create(d, "test.example/upload") as led:
        led.sequence([Entry("alert", {"i": 1}, time=1.7e9)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TRUSTMESH_LEDGER_TOKENS": "tok-" + "q" * 20}
    with (tmp_path / "server.log").open("wb") as out:
        proc = subprocess.Popen([str(EXE), "ledger", "serve", str(d), "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        before = _rss_kib(proc.pid)
        chunk = b"x" * (1 << 20)
        sent = 0
        answer = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(f"POST /add-entries HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n".encode())
            try:
                while sent < 200 and not answer:  # up to 200 MiB, stopping once the server answers
                    c.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    sent += 1
                    if select.select([c], [], [], 0)[0]:
                        answer = c.recv(4096)
            except (BrokenPipeError, ConnectionResetError):
                pass
            if not answer:
                try:
                    answer = c.recv(4096)
                except OSError:
                    pass
        peak = _rss_kib(proc.pid)
        print(f"uploaded {sent} MiB before the answer; server RSS {before} KiB -> {peak} KiB")
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert sent < 200  # the server stopped the upload long before it ended
        assert peak - before < 64 * 1024, (before, peak)  # far below the 8 MiB limit plus buffers, not 200 MiB
        with Ledger.open(d, read_only=True) as led:
            assert led.size == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
