"""`trustmesh witness serve` speaks C2SP tlog-witness over HTTP on 127.0.0.1 (real server processes):
status codes and bodies as the spec defines them, state that survives a restart, rollbacks and forks
refused, the log side collecting a quorum, and the cosigned note checked by Go's note verifier."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _go import run_notecheck

from trustmesh.ledger import Checkpoint, Entry, Ledger, NoteSigner, Witness, verify_cosignatures
from trustmesh.ledger._witness import parse_add_checkpoint_body

ORIGIN = "test.example/witnessed-log"
EXE = Path(sys.executable).with_name("trustmesh")

# The example request and response bodies of c2sp.org/tlog-witness (add-checkpoint).
SPEC_REQUEST = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: bytes) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _body(old: int, proof: list[bytes], note: bytes) -> bytes:
    return (f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n").encode() + note


class Server:
    def __init__(self, wdir: Path) -> None:
        self.wdir, self.port = wdir, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = wdir.parent / f"{wdir.name}-server.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(EXE), "witness", "serve", str(self.wdir), "--port", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"witness server exited: {self.log.read_text(errors='replace')}")
                time.sleep(0.1)
        raise AssertionError("witness server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Ledger, Witness, Server]]:
    led = Ledger.create(tmp_path / "log", ORIGIN)
    led.append([Entry("alert", {"i": i}, time=1.7e9 + i) for i in range(300)])
    w = Witness.create(tmp_path / "w", "witness.test/w1")
    w.trust_log(led.verifier_key)
    server = Server(tmp_path / "w")
    server.start()
    yield led, w, server
    server.stop()
    led.close()


SPEC_RESPONSE = (
    "\u2014 witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n"
    "\u2014 witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n"
    "\u2014 witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
).encode()


def test_spec_example_request_and_response_parse() -> None:
    old, proof, note = parse_add_checkpoint_body(SPEC_REQUEST)
    assert old == 20852014 and len(proof) == 4 and all(len(h) == 32 for h in proof)
    cp = Checkpoint.from_bytes(note)
    assert (cp.origin, cp.size, len(cp.signatures)) == ("example.com/behind-the-sofa", 20852163, 2)
    # the client concatenates the response to the checkpoint and parses it as one note
    both = Checkpoint.from_bytes(note + SPEC_RESPONSE)
    assert [s.name for s in both.signatures[2:]] == ["witness.example/w1", "witness.example/w1", "witness.example/w2"]
    assert all(len(s.signature) == 8 + 64 for s in both.signatures[2:])  # timestamped Ed25519 cosignatures


@pytest.mark.integration
def test_add_checkpoint_status_codes_follow_the_spec(world: tuple[Ledger, Witness, Server]) -> None:
    led, w, server = world
    url = server.url + "/add-checkpoint"
    cp100 = Checkpoint.signed(ORIGIN, 100, led.root(100), _log_signer(led))
    # unknown origin: 404; the spec's own example is from a log this witness does not know
    assert _post(url, SPEC_REQUEST)[0] == 404
    # not signed by the trusted key: 403
    forged = Checkpoint.signed(ORIGIN, 100, led.root(100), NoteSigner.generate(ORIGIN))
    assert _post(url, _body(0, [], forged.to_bytes()))[0] == 403
    # malformed body, a proof with old size 0, old size above the checkpoint size: 400
    assert _post(url, b"old 01\n\n" + cp100.to_bytes())[0] == 400
    assert _post(url, b"nonsense")[0] == 400
    assert _post(url, _body(0, [b"\0" * 32], cp100.to_bytes()))[0] == 400
    assert _post(url, _body(101, [], cp100.to_bytes()))[0] == 400
    # first cosignature: 200 with one signature line that verifies on the checkpoint
    status, ctype, answer = _post(url, _body(0, [], cp100.to_bytes()))
    assert status == 200 and answer.startswith("\u2014 witness.test/w1 ".encode()) and answer.endswith(b"\n")
    signed = Checkpoint.from_bytes(cp100.to_bytes() + answer)
    assert len(verify_cosignatures(signed, [w.verifier_key], 1)) == 1
    # a wrong old size: 409, text/x.tlog.size, body = the size the witness cosigned
    assert _post(url, _body(0, [], cp100.to_bytes())) == (409, "text/x.tlog.size", b"100\n")
    # a bad consistency proof: 422 (and the evidence is kept)
    cp300 = led.checkpoint()
    good = list(led.prove_consistency(100, 300).path)
    assert _post(url, _body(100, [b"\1" * 32] * len(good), cp300.to_bytes()))[0] == 422
    # same size, another root: 409
    other = Checkpoint.signed(ORIGIN, 100, led.root(99), _log_signer(led))
    assert _post(url, _body(100, [], other.to_bytes()))[0] == 409
    # restart: the state persisted; a rollback to the older checkpoint is refused
    server.stop()
    server.start()
    assert _post(url, _body(0, [], cp100.to_bytes()))[2] == b"100\n"
    assert _post(url, _body(100, good, cp300.to_bytes()))[0] == 200
    assert _post(url, _body(100, [], cp100.to_bytes())) == (409, "text/x.tlog.size", b"300\n")
    assert _post(url, _body(300, [], cp100.to_bytes()))[0] == 400  # old size above the checkpoint size
    assert len(Witness.open(w.directory).forks) == 2
    assert _post(server.url + "/other", b"x")[0] == 404


@pytest.mark.integration
def test_log_collects_a_quorum_and_go_verifies_the_cosigned_note(world: tuple[Ledger, Witness, Server],
                                                                 tmp_path: Path) -> None:
    led, w, server = world
    w2 = Witness.create(tmp_path / "w2", "witness.test/w2")
    w2.trust_log(led.verifier_key)
    second = Server(tmp_path / "w2")
    second.start()
    try:
        led.checkpoint()
        base = [str(EXE), "ledger", "witness", "collect", str(led.directory)]
        pairs = ["--witness-url", server.url, "--witness-key", w.verifier_key,
                 "--witness-url", second.url, "--witness-key", f"@{tmp_path / 'w2' / 'witness.pub'}"]
        r = subprocess.run([*base, *pairs, "--quorum", "2"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        stored = led.latest_checkpoint()
        assert stored is not None and stored.to_bytes().decode() == r.stdout
        assert len(verify_cosignatures(stored, [w.verifier_key, w2.verifier_key], 2)) == 2
        # the log grows; the witnesses answer 409 with their size and the log retries with a proof
        led.append([Entry("alert", {"i": i}, time=1.8e9) for i in range(77)])
        led.checkpoint()
        r = subprocess.run([*base, *pairs, "--quorum", "2"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        grown = led.latest_checkpoint()
        assert grown is not None and grown.size == 377
        # Go's note.Open accepts the note with the log key and both cosignature keys
        verdict = run_notecheck([{"name": "cosigned", "note_b64": base64.b64encode(grown.to_bytes()).decode(),
                                  "keys": [led.verifier_key, w.verifier_key, w2.verifier_key]}], tmp_path)
        assert verdict[0]["result"] == "ok"
        assert verdict[0]["verified"] == [ORIGIN, "witness.test/w1", "witness.test/w2"]
        # a quorum that cannot be met is exit 1 (does not verify), after storing what it got
        second.stop()
        led.append([Entry("alert", {"i": 1}, time=1.9e9)])
        led.checkpoint()
        r = subprocess.run([*base, *pairs, "--quorum", "2", "--timeout", "5"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "only 1 of the required 2" in r.stderr
        last = led.latest_checkpoint()
        assert last is not None and len(verify_cosignatures(last, [w.verifier_key], 1)) == 1
    finally:
        second.stop()


def _log_signer(led: Ledger) -> NoteSigner:
    return NoteSigner.load(led.directory / "log.key")
