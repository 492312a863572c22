"""The HTTP API with FastAPI's TestClient: tlog-tiles reads, proofs, authenticated and replay-safe writes."""

from __future__ import annotations

import json
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries

with warnings.catch_warnings():
    # starlette 1.3 warns that its TestClient prefers `httpx2` (not installed here); httpx works as before
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    # and starlette still names anyio's deprecated `anyio.abc.BlockingPortal` alias at import time
    warnings.filterwarnings("ignore", message="The anyio.abc.BlockingPortal alias is deprecated")
    from fastapi.testclient import TestClient

from trustmesh.api import RequestAuth, create_ledger_app, sign_request
from trustmesh.ledger import (
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    Ledger,
    NoteSigner,
    tile_path,
    verify_consistency,
    verify_inclusion,
)
from trustmesh.ledger._store import unpack_bundle

TOKEN = "t0ken-" + "x" * 20


@pytest.fixture
def served(ledger_dir: Path) -> Iterator[tuple[TestClient, NoteSigner, Ledger]]:
    with Ledger.create(ledger_dir, ORIGIN) as led:
        led.append(make_entries(300))
        led.checkpoint()
    client_key = NoteSigner.generate("client.example/c1")
    auth = RequestAuth.from_config([TOKEN], [client_key.verifier.to_vkey()])
    app = create_ledger_app(ledger_dir, auth=auth)
    with TestClient(app) as client:
        yield client, client_key, app.state.ledger
    app.state.ledger.close()


def _sign(key: NoteSigner, body: bytes, *, nonce: str, origin: str = ORIGIN, host: str = "testserver",
          **kw: object) -> dict[str, str]:
    return sign_request(key, "POST", "/add-entries", body, nonce=nonce, origin=origin, host=host, **kw)  # type: ignore[arg-type]


def _body(n: int = 2) -> bytes:
    return json.dumps({"entries": [{"kind": "alert", "payload": {"i": i}} for i in range(n)]}).encode()


def test_tiles_checkpoint_and_proofs_verify(served: tuple[TestClient, NoteSigner, Ledger]) -> None:
    client, _, led = served
    r = client.get("/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    cp = Checkpoint.from_bytes(r.content)
    cp.verify(led.verifier)
    full = client.get("/" + tile_path(0, 0))
    assert full.status_code == 200 and len(full.content) == 8192
    part = client.get("/" + tile_path(0, 1, 44))
    assert part.status_code == 200 and len(part.content) == 44 * 32
    bundle = client.get("/" + tile_path("entries", 1, 44), headers={"Accept-Encoding": "gzip"})
    assert bundle.headers["content-encoding"] == "gzip" and len(unpack_bundle(bundle.content)) == 44
    assert client.get("/tile/0/002").status_code == 404
    assert client.get("/tile/0/1").status_code == 404
    proof = InclusionProof.from_json(client.get("/proof/inclusion", params={"index": 7}).json())
    verify_inclusion(proof, cp, led.entry_bytes(7))
    cons = ConsistencyProof.from_json(client.get("/proof/consistency", params={"from": 100, "to": 300}).json())
    verify_consistency(cons, led.root(100), cp)
    assert client.get("/proof/inclusion", params={"index": 300}).status_code == 400
    assert client.get("/proof/inclusion", params={"index": "x"}).status_code == 422


def test_bearer_token_submit_appends_and_checkpoints(served: tuple[TestClient, NoteSigner, Ledger]) -> None:
    client, _, led = served
    r = client.post("/add-entries", content=_body(3), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["indices"] == [300, 301, 302]
    assert Checkpoint.from_bytes(r.json()["checkpoint"].encode()).size == 303
    assert led.size == 303


def test_signed_submit_and_replay_is_refused(served: tuple[TestClient, NoteSigner, Ledger]) -> None:
    client, key, led = served
    body = _body()
    headers = _sign(key, body, nonce=secrets.token_urlsafe(16))
    assert client.post("/add-entries", content=body, headers=headers).status_code == 200
    replay = client.post("/add-entries", content=body, headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"]
    assert led.size == 302


@pytest.mark.parametrize(
    "case",
    ["no_auth", "bad_token", "bad_signature", "old_timestamp", "other_body", "unknown_key"],
)
def test_unauthenticated_writes_change_nothing(served: tuple[TestClient, NoteSigner, Ledger], case: str) -> None:
    client, key, led = served
    body = _body()
    before = (led.size, led.root())
    nonce = secrets.token_urlsafe(16)
    headers: dict[str, str] = {}
    if case == "bad_token":
        headers = {"Authorization": "Bearer " + "y" * 26}
    elif case == "bad_signature":
        headers = _sign(key, body, nonce=nonce)
        headers["X-Trustmesh-Signature"] = headers["X-Trustmesh-Signature"][::-1]
    elif case == "old_timestamp":
        headers = _sign(key, body, nonce=nonce, timestamp=1_000_000)
    elif case == "other_body":
        headers = _sign(key, _body(5), nonce=nonce)
    elif case == "unknown_key":
        headers = _sign(NoteSigner.generate("client.example/c1"), body, nonce=nonce)
    r = client.post("/add-entries", content=body, headers=headers)
    assert r.status_code == 401 and r.json()["error"]
    assert (led.size, led.root()) == before


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"entries": "x"}',
        b'{"entries": []}',
        b'{"entries": [{"kind": "a"}]}',
        b'{"entries": [{"kind": 5, "payload": {}}]}',
        b'{"entries": [{"kind": "a", "payload": {}, "refs": [99999]}]}',
        b'{"entries": [{"kind": "a", "payload": {}, "extra": 1}]}',
        json.dumps({"entries": [{"kind": "a", "payload": {"x": "y" * 70000}}]}).encode(),
    ],
)
def test_bad_submissions_are_400_and_change_nothing(served: tuple[TestClient, NoteSigner, Ledger], body: bytes) -> None:
    client, _, led = served
    before = (led.size, led.root())
    r = client.post("/add-entries", content=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and r.json()["error"]
    assert (led.size, led.root()) == before


def test_huge_body_is_413(ledger_dir: Path) -> None:
    Ledger.create(ledger_dir, ORIGIN).close()
    app = create_ledger_app(ledger_dir, auth=RequestAuth.from_config([TOKEN]), max_body_bytes=1000)
    with TestClient(app) as client:
        r = client.post("/add-entries", content=b"x" * 2000, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 413
    app.state.ledger.close()


def test_writes_refused_without_configured_credentials(ledger_dir: Path) -> None:
    Ledger.create(ledger_dir, ORIGIN).close()
    app = create_ledger_app(ledger_dir)
    with TestClient(app) as client:
        r = client.post("/add-entries", content=_body(), headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 401 and "disabled" in r.json()["error"]
        assert client.get("/checkpoint").status_code == 404
    app.state.ledger.close()


def test_private_key_never_served(served: tuple[TestClient, NoteSigner, Ledger], ledger_dir: Path) -> None:
    client, _, _ = served
    secret = (ledger_dir / "log.key").read_text().strip().split("+", 4)[4]
    for path in ["/log.pub", "/checkpoint", "/log.key", "/tile/../log.key"]:
        assert secret not in client.get(path).text


@pytest.mark.integration
def test_ledger_serve_runs_a_real_server(ledger_dir: Path, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with Ledger.create(ledger_dir, ORIGIN) as led:
        led.sequence(make_entries(10))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TRUSTMESH_LEDGER_TOKENS": TOKEN}
    exe = Path(sys.executable).with_name("trustmesh")
    proc = subprocess.Popen([str(exe), "ledger", "serve", str(ledger_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                r = httpx.get(base + "/checkpoint", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not start")
        assert Checkpoint.from_bytes(r.content).size == 10
        body = json.dumps({"entries": [{"kind": "alert", "payload": {"x": 1}}]})
        ok = httpx.post(base + "/add-entries", content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert ok.status_code == 200 and ok.json()["indices"] == [10]
        assert httpx.post(base + "/add-entries", content=body, timeout=5).status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    secret = (ledger_dir / "log.key").read_text().strip().split("+", 4)[4]
    assert TOKEN not in out and secret not in out
