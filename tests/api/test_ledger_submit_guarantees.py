"""What `ledger serve`'s add-entries path guarantees, over real loopback sockets: a retry never
duplicates, a forged or replayed request gets one clear error and writes nothing, and every
acknowledged entry is in the log (the kill -9 case is tests/ledger/test_ledger_group_commit.py)."""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trustmesh._remote_ledger import RemoteLedger
from trustmesh.api import RequestAuth, create_ledger_app, sign_request
from trustmesh.api._ledger_http import serve_ledger
from trustmesh.errors import InputError
from trustmesh.ledger import Entry, Ledger, NoteSigner, audit

ORIGIN = "test.trustmesh/submit"


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[int, NoteSigner, Path]]:
    Ledger.create(tmp_path / "log", ORIGIN).close()
    signer = NoteSigner.generate("submit-client")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_ledger_app(tmp_path / "log", auth=RequestAuth.from_config(
        [], [signer.verifier.to_vkey()], allowed_hosts=["127.0.0.1", f"127.0.0.1:{port}"]))
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve_ledger, args=(app, "127.0.0.1", port),
                              kwargs={"on_ready": ready.set, "stop": stop}, daemon=True)
    thread.start()
    assert ready.wait(30), "server did not start"
    yield port, signer, tmp_path / "log"
    stop.set()
    thread.join(15)
    assert not thread.is_alive(), "the server did not stop when asked"
    app.state.writer.close()
    app.state.ledger.close()


def _body(payload: dict[str, object]) -> bytes:
    return json.dumps({"entries": [{"kind": "alert", "payload": payload}]}).encode()


def _request(signer: NoteSigner, body: bytes, *, key: str | None = None, host: str = "127.0.0.1",
             nonce: str | None = None, timestamp: int | None = None,
             edit: Callable[[dict[str, str]], None] | None = None, sent_body: bytes | None = None) -> bytes:
    headers = sign_request(signer, "POST", "/add-entries", body, nonce=nonce or secrets.token_urlsafe(16),
                           origin=ORIGIN, host=host, idempotency_key=key, timestamp=timestamp)
    if edit is not None:
        edit(headers)
    data = body if sent_body is None else sent_body
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /add-entries HTTP/1.1\r\n{head}Content-Length: {len(data)}\r\n\r\n".encode() + data


def _exchange(sock: socket.socket, data: bytes) -> tuple[int, dict[str, object]]:
    sock.sendall(data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        assert more, "the server closed the connection without an answer"
        buf += more
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.strip().lower() == "content-length")
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(rest[:length])


def test_concurrent_retries_with_one_key_append_each_request_once(served: tuple[int, NoteSigner, Path]) -> None:
    port, signer, log = served
    keys, senders = 40, 6
    got: dict[str, set[int]] = {f"k-{i}": set() for i in range(keys)}
    lock = threading.Lock()
    problems: list[str] = []

    def sender(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            order = list(range(keys)) if n % 2 == 0 else list(reversed(range(keys)))  # races both ways
            for i in order:
                status, doc = _exchange(c, _request(signer, _body({"i": i}), key=f"k-{i}"))
                if status != 200:
                    problems.append(f"{status} {doc}")
                    continue
                with lock:
                    got[f"k-{i}"].update(doc["indices"])  # type: ignore[arg-type]

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not problems
    assert all(len(v) == 1 for v in got.values()), "a retry with the same key got other indices"
    with Ledger.open(log, read_only=True) as led:
        assert led.size == keys
        assert sorted(led.entry(i).payload["i"] for i in range(keys)) == list(range(keys))
        for k, (index,) in got.items():
            assert led.entry(index).payload["i"] == int(k[2:])
    assert audit(log).size == keys


def test_a_key_reused_for_other_entries_is_refused_and_writes_nothing(served: tuple[int, NoteSigner, Path]) -> None:
    port, signer, log = served
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        assert _exchange(c, _request(signer, _body({"i": 1}), key="once"))[0] == 200
        status, doc = _exchange(c, _request(signer, _body({"i": 2}), key="once"))
    assert status == 409 and "already used" in str(doc["error"])
    with Ledger.open(log, read_only=True) as led:
        assert led.size == 1


FORGERIES: dict[str, tuple[dict[str, object], str]] = {
    "signature of another body": ({"sent_body": _body({"i": 666})}, "does not verify"),
    "flipped signature": ({"edit": lambda h: h.__setitem__(
        "X-Trustmesh-Signature", ("B" if h["X-Trustmesh-Signature"][0] == "A" else "A") + h["X-Trustmesh-Signature"][1:])},
        "does not verify"),
    "another host": ({"host": "ledger.example"}, "does not answer for"),
    "an old timestamp": ({"timestamp": 1_000_000}, "from the server clock"),
    "an unknown key": ({"edit": lambda h: h.__setitem__("X-Trustmesh-Key", "someone-else")}, "unknown client key"),
    "unsigned": ({"edit": lambda h: h.pop("X-Trustmesh-Signature")}, "unsigned request"),
    "signed for another key header": ({"edit": lambda h: h.__setitem__("Idempotency-Key", "other")}, "does not verify"),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_a_forged_request_gets_one_clear_error_and_no_write(served: tuple[int, NoteSigner, Path], case: str) -> None:
    port, signer, log = served
    options, reason = FORGERIES[case]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        status, doc = _exchange(c, _request(signer, _body({"i": 1}), key="k", **options))  # type: ignore[arg-type]
        assert status == 401
        assert reason in str(doc["error"]) and "\n" not in str(doc["error"])
        assert set(doc) == {"error"}
        # the connection stays usable, and the key was not taken by the refused request
        ok, done = _exchange(c, _request(signer, _body({"i": 2}), key="k"))
    assert ok == 200 and done["indices"] == [0]
    with Ledger.open(log, read_only=True) as led:
        assert led.size == 1 and led.entry(0).payload == {"i": 2}


def test_a_replayed_request_is_refused_and_writes_nothing(served: tuple[int, NoteSigner, Path]) -> None:
    port, signer, log = served
    request = _request(signer, _body({"i": 1}))  # no idempotency key: only the nonce stops a replay
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        assert _exchange(c, request)[0] == 200
        status, doc = _exchange(c, request)
    assert status == 401 and "replayed" in str(doc["error"])
    with Ledger.open(log, read_only=True) as led:
        assert led.size == 1


def test_every_acknowledged_remote_append_is_in_the_log_once(served: tuple[int, NoteSigner, Path]) -> None:
    port, signer, log = served
    remote = RemoteLedger(f"http://127.0.0.1:{port}", signer, ORIGIN)
    indices: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            for i in range(25):
                got = remote.append([Entry("alert", {"w": k, "i": i}, time=1.0)])
                with lock:
                    indices.extend(got)
        finally:
            remote.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(indices) == list(range(200))
    # the answers' checkpoint is kept unparsed until asked for, then parsed and verifiable
    answered = remote._answered_checkpoint()
    assert answered is not None and answered.size <= 200
    with Ledger.open(log, read_only=True) as led:
        answered.verify(led.verifier)
        assert answered.root_hash == led.root(answered.size)
        assert led.size == 200
    fetched = remote.checkpoint()
    assert fetched.size == 200
    with pytest.raises(InputError, match="refused"):
        remote.append([Entry("identity.bogus", {"x": 1}, time=1.0)])
    remote.close()


def test_group_lookups_of_many_keys_hold_retries_and_refs(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        first = led.append_group([([Entry("alert", {"i": i}, time=1.0)], f"k{i}") for i in range(700)])
        assert first == [[i] for i in range(700)]
        again = led.append_group([([Entry("alert", {"i": i}, time=2.0)], f"k{i}") for i in range(700)]
                                 + [([Entry("alert", {"i": 700}, time=1.0)], "k700")])
        assert again == [[i] for i in range(701)]  # 700 retries (keys looked up 500 at a time), one new
        # retries ahead of a request with refs: the new entry's index is the next one, so a ref to it is refused
        mixed = led.append_group([([Entry("alert", {"i": i}, time=1.0)], f"k{i}") for i in range(600)]
                                 + [([Entry("alert", {"i": 701}, time=1.0, refs=(701,))], "self-ref"),
                                    ([Entry("alert", {"i": 702}, time=1.0, refs=(700,))], "ok-ref")])
        assert mixed[:600] == [[i] for i in range(600)]
        assert isinstance(mixed[600], InputError) and "not earlier" in str(mixed[600])
        assert mixed[601] == [701]
        assert led.size == 702
    assert audit(tmp_path / "log").size == 702


def test_signature_checker_process_answers_in_order_and_survives_its_child_dying() -> None:
    import asyncio

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from trustmesh.api._verifier import SignatureChecker

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    messages = [f"request {i}".encode() for i in range(40)]
    sigs = [key.sign(m) for m in messages]
    sigs[7] = sigs[8]  # another message's signature
    sigs[9] = bytes(64)

    async def run() -> tuple[list[tuple[int, bool]], list[tuple[int, bool]], bool]:
        loop = asyncio.get_running_loop()
        checker = SignatureChecker(loop)
        got: list[tuple[int, bool]] = []
        done = asyncio.Event()
        for i, (m, s) in enumerate(zip(messages, sigs, strict=True)):
            checker.check(public, s, m, lambda ok, i=i: (got.append((i, ok)), len(got) == 40 and done.set()))
        await asyncio.wait_for(done.wait(), 30)
        assert checker.proc is not None
        checker.proc.kill()  # the child dies: what follows is checked in this process, still refusing forgeries
        checker.proc.wait()
        after: list[tuple[int, bool]] = []
        more = asyncio.Event()
        for i in (0, 7):
            checker.check(public, sigs[i], messages[i], lambda ok, i=i: (after.append((i, ok)), len(after) == 2 and more.set()))
        await asyncio.wait_for(more.wait(), 30)
        alive = checker.alive
        checker.close()
        return got, after, alive

    got, after, alive = asyncio.run(run())
    assert [i for i, _ in got] == list(range(40))  # in order
    assert [i for i, ok in got if not ok] == [7, 9]
    assert sorted(after) == [(0, True), (7, False)]
    assert not alive
