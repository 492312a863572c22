"""The submit endpoint under attack: streamed oversize bodies, replays across restarts and logs,
identity entries from plain writers, and retries with an Idempotency-Key."""

from __future__ import annotations

import json
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    warnings.filterwarnings("ignore", message="The anyio.abc.BlockingPortal alias is deprecated")
    from fastapi.testclient import TestClient

from trustmesh.api import RequestAuth, create_ledger_app, sign_request
from trustmesh.identity import ENROLL, REVOKE, DeviceKeys, IdentityRegistry, add_admin, enroll
from trustmesh.identity._registry import _device_statement, _make_pop
from trustmesh.ledger import Ledger, NoteSigner

TOKEN = "t0ken-" + "z" * 20
WRITER = {"Authorization": f"Bearer {TOKEN}"}


def _body(n: int = 2, tag: str = "a") -> bytes:
    return json.dumps({"entries": [{"kind": "alert", "payload": {"i": i, "tag": tag}} for i in range(n)]}).encode()


def _sign(key: NoteSigner, body: bytes, *, origin: str = ORIGIN, host: str = "testserver", nonce: str | None = None,
          idempotency_key: str | None = None) -> dict[str, str]:
    return sign_request(key, "POST", "/add-entries", body, nonce=nonce or secrets.token_urlsafe(16), origin=origin,
                        host=host, idempotency_key=idempotency_key)


@pytest.fixture
def setup(ledger_dir: Path, tmp_path: Path) -> Iterator[tuple[Path, NoteSigner, NoteSigner, NoteSigner]]:
    with Ledger.create(ledger_dir, ORIGIN) as led:
        led.sequence(make_entries(10))
        admin, _ = add_admin(led, "admin.test/ops", tmp_path / "admin.key")
    yield ledger_dir, NoteSigner.generate("client.test/c1"), NoteSigner.generate("idwriter.test/w1"), admin


def _app(ledger_dir: Path, client: NoteSigner, writer: NoteSigner, **kw: object):  # type: ignore[no-untyped-def]
    auth = RequestAuth.from_config([TOKEN], [client.verifier.to_vkey()], identity_keys=[writer.verifier.to_vkey()],
                                   **kw)  # type: ignore[arg-type]
    return create_ledger_app(ledger_dir, auth=auth, max_body_bytes=64 * 1024)


def test_chunked_oversize_body_is_refused_while_streaming_before_auth(setup) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: a chunked body without Content-Length was read whole before the size check and auth.

    Driven at the ASGI level, as uvicorn does: each receive() hands the app one chunk of a chunked
    upload (TestClient would buffer the whole body first and hide the bug).
    """
    import asyncio

    ledger_dir, client_key, writer, _ = setup
    app = _app(ledger_dir, client_key, writer)
    received = []
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        received.append(1)
        more = len(received) < 10_000  # 10_000 x 16 KiB = 160 MiB if it were all read
        return {"type": "http.request", "body": b"x" * 16384, "more_body": more}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/add-entries", "raw_path": b"/add-entries", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"testserver"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))  # no credentials at all
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert len(received) <= 5  # stopped just past 64 KiB, before authentication or parsing
    assert app.state.ledger.size == 11
    app.state.ledger.close()


def test_signed_request_cannot_be_replayed_after_a_restart(setup) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: nonces lived only in memory, so a captured request was accepted again after a restart."""
    ledger_dir, client_key, writer, _ = setup
    body = _body()
    headers = _sign(client_key, body)
    app = _app(ledger_dir, client_key, writer)
    with TestClient(app) as client:
        assert client.post("/add-entries", content=body, headers=headers).status_code == 200
    app.state.ledger.close()
    app2 = _app(ledger_dir, client_key, writer)  # a restarted server on the same folder
    with TestClient(app2) as client:
        r = client.post("/add-entries", content=body, headers=headers)
        assert r.status_code == 401 and "replayed" in r.json()["error"]
        assert app2.state.ledger.size == 13
    app2.state.ledger.close()


def test_signature_binds_the_log_origin_and_host(setup) -> None:  # type: ignore[no-untyped-def]
    ledger_dir, client_key, writer, _ = setup
    body = _body()
    app = _app(ledger_dir, client_key, writer, allowed_hosts=["ledger.test:8080", "testserver"])
    with TestClient(app) as client:
        for headers in (_sign(client_key, body, origin="other.example/log"),  # captured on another log
                        {**_sign(client_key, body, host="ledger.test:8080"), "Host": "testserver"},
                        _sign(client_key, body, host="evil.test")):  # signed for a host we do not serve
            r = client.post("/add-entries", content=body, headers=headers)
            assert r.status_code == 401, r.text
        assert client.post("/add-entries", content=body, headers=_sign(client_key, body)).status_code == 200
    app.state.ledger.close()


def test_plain_writers_cannot_post_identity_entries(setup) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: a writer token posted identity.revoke + identity.enroll and took over a device."""
    ledger_dir, client_key, writer, admin = setup
    keys, attacker = DeviceKeys.generate(), DeviceKeys.generate()
    with Ledger.open(ledger_dir) as led:
        enroll(led, "plc-7", keys, admin=admin)
    app = _app(ledger_dir, client_key, writer)
    revoke_doc = {"kind": REVOKE, "payload": {"device_id": "plc-7", "reason": "x"}}
    with TestClient(app) as client:
        led = app.state.ledger
        before = led.size
        for kind in (REVOKE, ENROLL, "identity.other"):
            body = json.dumps({"entries": [{"kind": kind, "payload": {"device_id": "plc-7"}}]}).encode()
            assert client.post("/add-entries", content=body, headers=WRITER).status_code == 403
            assert client.post("/add-entries", content=body, headers=_sign(client_key, body)).status_code == 403
        # an identity writer's entries must still verify (this revoke carries no signature)
        body = json.dumps({"entries": [revoke_doc]}).encode()
        r = client.post("/add-entries", content=body, headers=_sign(writer, body))
        assert r.status_code == 400 and "does not verify" in r.json()["error"]
        assert led.size == before
        # a properly admin-signed enrolment from the identity writer is accepted
        stmt = _device_statement("enroll", ORIGIN, "cam-9", 0, role="device", keys=attacker.public.to_dict())
        import base64

        payload = {"device_id": "cam-9", "role": "device", "keys": attacker.public.to_dict(), "seq": 0,
                   "pop": _make_pop(attacker, ORIGIN, "cam-9", stmt), "admin": admin.name,
                   "authorization": base64.b64encode(admin.sign(stmt)).decode()}
        body = json.dumps({"entries": [{"kind": ENROLL, "payload": payload}]}).encode()
        r = client.post("/add-entries", content=body, headers=_sign(writer, body))
        assert r.status_code == 200, r.text
        reg = IdentityRegistry.from_ledger(led)
        assert reg.get("plc-7").current.keys == keys.public and reg.get("cam-9").active and not reg.rejected
    app.state.ledger.close()


def test_idempotency_key_returns_the_original_indices(setup) -> None:  # type: ignore[no-untyped-def]
    ledger_dir, client_key, writer, _ = setup
    app = _app(ledger_dir, client_key, writer)
    with TestClient(app) as client:
        led = app.state.ledger
        h = {**WRITER, "Idempotency-Key": "batch-0001"}
        first = client.post("/add-entries", content=_body(3), headers=h)
        again = client.post("/add-entries", content=_body(3), headers=h)
        assert first.status_code == again.status_code == 200
        assert first.json()["indices"] == again.json()["indices"] == [11, 12, 13] and led.size == 14
        conflict = client.post("/add-entries", content=_body(3, tag="b"), headers=h)
        assert conflict.status_code == 409 and led.size == 14
        signed_body = _body(2, tag="s")
        hs = _sign(client_key, signed_body, idempotency_key="signed-1")
        assert client.post("/add-entries", content=signed_body, headers=hs).json()["indices"] == [14, 15]
        hs2 = _sign(client_key, signed_body, idempotency_key="signed-1")  # a retry is a new signed request
        assert client.post("/add-entries", content=signed_body, headers=hs2).json()["indices"] == [14, 15]
        hs3 = _sign(client_key, signed_body, idempotency_key="signed-1")
        hs3["Idempotency-Key"] = "signed-2"  # the key is inside the signature
        assert client.post("/add-entries", content=signed_body, headers=hs3).status_code == 401
        bad = client.post("/add-entries", content=_body(1), headers={**WRITER, "Idempotency-Key": "a b"})
        assert bad.status_code == 400 and led.size == 16
    app.state.ledger.close()
