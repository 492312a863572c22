"""Go's golang.org/x/mod/sumdb/note.Open gives every vector in tests/ledger/vectors/notes.json its
recorded verdict (the Python side is tests/ledger/test_note_vectors.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _go import run_notecheck

VECTOR_FILE = Path(__file__).resolve().parents[1] / "ledger" / "vectors" / "notes.json"


@pytest.mark.integration
def test_go_note_open_gives_the_recorded_verdicts(tmp_path: Path) -> None:
    vectors: list[dict[str, Any]] = json.loads(VECTOR_FILE.read_text("utf-8"))
    results = {r["name"]: r for r in run_notecheck(vectors, tmp_path)}
    assert set(results) == {c["name"] for c in vectors}
    wrong = [(c["name"], c["expect"], results[c["name"]]) for c in vectors
             if (results[c["name"]]["result"], results[c["name"]]["verified"]) != (c["expect"], c["verified"])]
    assert not wrong, wrong
