"""Group commit: several append requests in one transaction, each with its own idempotency key."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh._remote_ledger import RemoteLedger
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
