"""Group commit: several append requests in one transaction, each with its own idempotency key."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh._remote_ledger import RemoteLedger
from trustmesh.api._auth import sign_request
from trustmesh.errors import InputError
from trustmesh.ledger import Entry, Ledger, NoteSigner, audit

ORIGIN = "test.trustmesh/group"


def _e(i: int, refs: tuple[int, ...] = ()) -> Entry:
    return Entry("alert", {"i": i}, time=1.0, refs=refs)


def test_append_group_keeps_requests_apart(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        first = led.append_group([([_e(0)], "k0"), ([_e(1), _e(2)], None)])
        assert first == [[0], [1, 2]]
        out = led.append_group([
            ([_e(0)], "k0"),  # a retry: the original index, nothing appended
            ([_e(9)], "k0"),  # the same key for a different request: refused, the others go on
            ([_e(3, refs=(0,))], "k3"),
            ([_e(3, refs=(0,))], "k3"),  # the same key twice in one group: appended once
            ([_e(4, refs=(99,))], None),  # refers to a later leaf: refused
            ([_e(5)], None),
        ])
        assert out[0] == [0]
        assert isinstance(out[1], InputError) and "already used" in str(out[1])
        assert out[2] == [3] and out[3] == [3]
        assert isinstance(out[4], InputError) and "not earlier" in str(out[4])
        assert out[5] == [4]
        assert led.size == 5
        assert [led.entry(i).payload["i"] for i in range(5)] == [0, 1, 2, 3, 5]
    assert audit(tmp_path / "log").size == 5


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, NoteSigner, object]]:
    import uvicorn

    from trustmesh.api import RequestAuth, create_ledger_app

    Ledger.create(tmp_path / "log", ORIGIN).close()
    signer = NoteSigner.generate("client.example/w1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_ledger_app(tmp_path / "log", auth=RequestAuth.from_config([], [signer.verifier.to_vkey()]))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", signer, app
    srv.should_exit = True
    thread.join(10)
    app.state.writer.close()
    app.state.ledger.close()


def test_concurrent_single_entry_requests_are_group_committed(server: tuple[str, NoteSigner, object],
                                                              tmp_path: Path) -> None:
    url, signer, app = server
    remote = RemoteLedger(url, signer, ORIGIN)
    got: list[list[int]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(15):
            idx = remote.append([Entry("alert", {"client": k, "i": i}, time=1.0)])
            with lock:
                got.append(idx)
        remote.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    indices = sorted(i for x in got for i in x)
    assert indices == list(range(300)), "every acknowledged entry has its own leaf"
    groups = app.state.writer.groups  # type: ignore[attr-defined]
    assert groups < 300, "concurrent requests must share transactions"
    assert app.state.writer.requests == 300  # type: ignore[attr-defined]
    # a retry of an acknowledged request (same key, fresh nonce) returns its indices and appends nothing
    again = remote.append([Entry("alert", {"client": 99}, time=1.0)], idempotency_key="retry-1")
    assert remote.append([Entry("alert", {"client": 99}, time=2.0)], idempotency_key="retry-1") == again
    with pytest.raises(InputError, match="already used"):
        remote.append([Entry("alert", {"client": 100}, time=1.0)], idempotency_key="retry-1")
    cp = remote.checkpoint()
    assert cp.size == 301 and cp.origin == ORIGIN
    cp.verify(app.state.ledger.verifier)  # type: ignore[attr-defined]
    remote.close()
    with Ledger.open(tmp_path / "log", read_only=True) as led:
        assert led.size == 301


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(log_dir: Path, keys: Path, port: int) -> "subprocess.Popen[bytes]":
    exe = Path(sys.executable).with_name("trustmesh")
    proc = subprocess.Popen([str(exe), "ledger", "serve", str(log_dir), "--port", str(port), "--client-keys",
                             str(keys)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TRUSTMESH_LEDGER_TOKENS": ""})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ledger serve exited"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/log.pub")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    raise AssertionError("ledger serve did not come up within 60 s")


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/add-entries", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_sigkill_keeps_each_acknowledged_entry_and_its_nonce_together(tmp_path: Path) -> None:
    """kill -9 of ``ledger serve`` mid-load: every acknowledged entry survives and its request stays a replay."""
    log_dir = tmp_path / "log"
    Ledger.create(log_dir, ORIGIN).close()
    signer = NoteSigner.generate("crash-client")
    keys = tmp_path / "clients.vkeys"
    keys.write_text(signer.verifier.to_vkey() + "\n", encoding="utf-8")
    port = _free_port()
    host = f"127.0.0.1:{port}"
    proc = _serve(log_dir, keys, port)
    acked: list[tuple[bytes, dict[str, str], list[int]]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        for i in range(400):  # bounded; the server is killed well before
            if stop.is_set():
                return
            body = json.dumps({"entries": [{"kind": "alert", "payload": {"client": k, "i": i}}]}).encode()
            headers = sign_request(signer, "POST", "/add-entries", body, nonce=secrets.token_urlsafe(16),
                                   origin=ORIGIN, host=host)
            try:
                status, out = _post(port, body, headers)
            except (OSError, http.client.HTTPException):
                return  # the server is gone (killed before or while it answered)
            if status == 200:
                with lock:
                    acked.append((body, headers, list(out["indices"])))  # type: ignore[call-overload]

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 60 and time.monotonic() < deadline and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        proc.kill()  # SIGKILL while requests are in flight
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(30)
        assert len(acked) >= 60, "the server acknowledged too few requests before the kill"
        with Ledger.open(log_dir, read_only=True) as led:
            for body, _, indices in acked:  # durable: every acknowledged entry is in the log, at its index
                sent = json.loads(body)["entries"][0]["payload"]
                assert [led.entry(i).payload for i in indices] == [sent]
        assert audit(log_dir).size >= len(acked)
        proc = _serve(log_dir, keys, port)  # restarted on the same folder
        for body, headers, _ in acked[:: max(1, len(acked) // 25)] + acked[-5:]:
            status, out = _post(port, body, headers)
            assert status == 401 and "replayed" in str(out["error"]), (status, out)
        size_before = audit(log_dir).size
        fresh = json.dumps({"entries": [{"kind": "alert", "payload": {"after": 1}}]}).encode()
        status, _ = _post(port, fresh, sign_request(signer, "POST", "/add-entries", fresh,
                                                    nonce=secrets.token_urlsafe(16), origin=ORIGIN, host=host))
        assert status == 200, "a fresh request is still accepted after the restart"
        assert audit(log_dir).size == size_before + 1
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
