"""Fuzz the trusted core's parsers: entries, signed notes/checkpoints, keys, proofs, witness and API bodies."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fuzz_harness import HOSTILE_TEXT, deep, expect_clean, fuzz_settings, mutated_bytes, mutated_json, tally_for
from hypothesis import given
from hypothesis import strategies as st

from trustmesh.ledger import (
    Checkpoint,
    ConsistencyProof,
    Entry,
    InclusionProof,
    Ledger,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    verify_consistency,
    verify_inclusion,
)
from trustmesh.ledger._note import open_note
from trustmesh.ledger._witness import parse_add_checkpoint_body

ORIGIN = "fuzz.example/log"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real ledger with entries from the shared datasets' kinds, its checkpoints and proofs."""
    d = tmp_path_factory.mktemp("fuzz-ledger") / "led"
    led = Ledger.create(d, ORIGIN)
    entries = [Entry(kind="alert", payload={"i": i, "src": f"10.0.0.{i % 250}", "score": i / 100}, time=1.0 + i)
               for i in range(40)]
    led.append(entries[:17])
    old = led.checkpoint()
    led.append(entries[17:])
    new = led.checkpoint()
    out = {"dir": d, "entries": [e.to_bytes() for e in entries], "old": old, "new": new,
           "inclusion": led.prove_inclusion(5).to_json(),
           "consistency": led.prove_consistency(old.size, new.size).to_json(),
           "vkey": (d / "log.pub").read_text(encoding="utf-8").strip(), "skey": (d / "log.key").read_bytes()}
    led.close()
    return out


@given(data=st.data())
@fuzz_settings(80)
def test_entries(data: st.DataObject, signed: dict[str, Any]) -> None:
    raw = data.draw(st.sampled_from(signed["entries"]))
    tally = tally_for("ledger-entry")
    if data.draw(st.booleans()):
        case = data.draw(mutated_bytes(raw))
        expect_clean(tally, lambda: Entry.from_bytes(case), case)
    else:
        doc = data.draw(mutated_json(json.loads(raw)))
        expect_clean(tally, lambda: Entry.from_dict(doc), doc)
        expect_clean(tally, lambda: Entry.from_bytes(json.dumps(doc).encode()), doc)


@given(data=st.data())
@fuzz_settings(100)
def test_notes_and_checkpoints(data: st.DataObject, signed: dict[str, Any]) -> None:
    note = data.draw(st.sampled_from([signed["old"], signed["new"]])).to_bytes()
    text = note.decode()
    op = data.draw(st.integers(0, 3))
    if op == 0:
        case = data.draw(mutated_bytes(note))
    elif op == 1:  # splice hostile characters into a line (origin, size, root, signature)
        lines = text.split("\n")
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:j] + data.draw(st.sampled_from(HOSTILE_TEXT + ["é", "\u00e9", "99999999999999999999"])) \
            + lines[i][j:]
        case = "\n".join(lines).encode("utf-8", "surrogatepass")
    elif op == 2:
        case = text.replace("\n\n", "\n\n" + data.draw(st.sampled_from(["— x AAAA\n", "— \n", "—  AAAA\n",
                                                                         "— a b\n" * 120]))).encode()
    else:
        case = data.draw(st.binary(max_size=300))
    verifier = NoteVerifier.from_vkey(signed["vkey"])
    tally = tally_for("signed-note")
    expect_clean(tally, lambda: SignedNote.from_bytes(case), case)
    expect_clean(tally, lambda: Checkpoint.from_bytes(case), case)
    expect_clean(tally, lambda: open_note(case, [verifier]), case)
    expect_clean(tally, lambda: Checkpoint.from_bytes(case).verify(verifier), case)


@given(data=st.data())
@fuzz_settings(60)
def test_keys(data: st.DataObject, signed: dict[str, Any], tmp_path: Path) -> None:
    vkey = signed["vkey"]
    tally = tally_for("note-keys")
    case = data.draw(mutated_bytes(vkey.encode()))
    expect_clean(tally, lambda: NoteVerifier.from_vkey(case.decode("utf-8", "surrogateescape")), case)
    path = tmp_path / "log.key"
    path.write_bytes(data.draw(mutated_bytes(signed["skey"])))
    path.chmod(0o600)
    expect_clean(tally, lambda: NoteSigner.load(path), path.read_bytes()[:120])


def _proof_docs(signed: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in (signed["inclusion"], signed["consistency"]) if d]


@given(data=st.data())
@fuzz_settings(80)
def test_proofs(data: st.DataObject, signed: dict[str, Any]) -> None:
    docs = _proof_docs(signed)
    doc = data.draw(mutated_json(data.draw(st.sampled_from(docs))))
    tally = tally_for("proofs")

    def check() -> None:
        if isinstance(doc, dict) and "leafIdx" in doc:
            verify_inclusion(InclusionProof.from_json(doc), signed["new"])
        else:
            verify_consistency(ConsistencyProof.from_json(doc), signed["old"], signed["new"])

    expect_clean(tally, check, doc)


@given(data=st.data())
@fuzz_settings(60)
def test_witness_add_checkpoint_bodies(data: st.DataObject, signed: dict[str, Any]) -> None:
    proof = base64.b64encode(b"\x01" * 32).decode()
    body = f"old {signed['old'].size}\n{proof}\n\n".encode() + signed["new"].to_bytes()
    case = data.draw(mutated_bytes(body)) if data.draw(st.booleans()) else data.draw(
        st.sampled_from([b"", b"old -1\n\n", b"old 99999999999999999999999\n\n", b"old 1\n" + b"A" * 70 + b"\n\n",
                         b"old 0\n\n" + "é\n\n— x y\n".encode(), b"\xff\xfe"]))
    from trustmesh.errors import TrustmeshError

    def check() -> None:
        try:
            parse_add_checkpoint_body(case)
        except TrustmeshError:
            raise
        except Exception as exc:
            # the witness server maps its own request error to an HTTP status; anything else is a bug
            if type(exc).__name__ != "WitnessRequestError":
                raise

    expect_clean(tally_for("witness-body"), check, case)


@pytest.fixture()
def api(signed: dict[str, Any]) -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        warnings.filterwarnings("ignore", message="The anyio.abc.BlockingPortal alias is deprecated")
        from fastapi.testclient import TestClient
    from trustmesh.api import RequestAuth, create_ledger_app

    token = "fuzz-token-" + "z" * 20
    app = create_ledger_app(signed["dir"], auth=RequestAuth.from_config([token], []))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, token
    app.state.ledger.close()


@given(data=st.data())
@fuzz_settings(60)
def test_api_request_bodies(data: st.DataObject, api: Any) -> None:
    client, token = api
    good = {"entries": [{"kind": "alert", "payload": {"i": 1}}]}
    op = data.draw(st.integers(0, 2))
    if op == 0:
        body = json.dumps(data.draw(mutated_json(good))).encode()
    elif op == 1:
        body = data.draw(mutated_bytes(json.dumps(good).encode()))
    else:
        body = data.draw(st.sampled_from([deep(5000).encode(), b'{"entries": ' + deep(900).encode() + b"}",
                                          b'{"entries": [{"kind": "alert", "payload": {"x": 1e400}}]}',
                                          b'{"entries": [{"kind": "alert", "payload": {"x": NaN}}]}', b"\xff" * 10,
                                          b'{"entries": [{"kind": "alert", "payload": {}, "time": 1e400}]}']))
    path = data.draw(st.sampled_from(["/add-entries", "/add-entries?x=" + "%" * 3]))
    tally = tally_for("api-body")

    def post() -> int:
        r = client.post(path, content=body, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"})
        if r.status_code >= 500:
            raise RuntimeError(f"server error {r.status_code}: {r.text[:300]}")
        return int(r.status_code)

    expect_clean(tally, post, body[:300])
