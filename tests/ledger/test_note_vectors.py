"""Signed-note parsing agrees with Go's golang.org/x/mod/sumdb/note.Open on every vector in notes.json."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from trustmesh.errors import CheckpointError, SignatureError
from trustmesh.ledger import NoteVerifier
from trustmesh.ledger._note import open_note

VECTOR_FILE = Path(__file__).with_name("vectors") / "notes.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTOR_FILE.read_text("utf-8"))


def _python_verdict(case: dict[str, Any]) -> tuple[str, list[str]]:
    keys = [NoteVerifier.from_vkey(k) for k in case["keys"]]
    try:
        opened = open_note(base64.b64decode(case["note_b64"]), keys)
    except CheckpointError:
        return "malformed", []
    except SignatureError as exc:
        return ("unverified" if "no verifiable" in str(exc) else "invalid_signature"), []
    return "ok", [s.name for s in opened.verified]


def test_vector_set_covers_each_outcome() -> None:
    outcomes = {c["expect"] for c in VECTORS}
    assert outcomes == {"ok", "malformed", "invalid_signature", "unverified"}
    assert len({c["name"] for c in VECTORS}) == len(VECTORS) >= 40


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_trustmesh_opens_notes_as_go_does(case: dict[str, Any]) -> None:
    assert _python_verdict(case) == (case["expect"], case["verified"])
