"""Helpers shared by the anchor tests (not a test module)."""

from __future__ import annotations

import shutil
from pathlib import Path

from trustmesh.ledger import Ledger


def make_ledger(directory: Path, origin: str, entries: list[dict[str, int]]) -> None:
    """Create a ledger with ``entries`` and a signed checkpoint of all of them."""
    while True:
        ledger = Ledger.create(directory, origin)
        # Work around NoteVerifier.from_vkey splitting on every '+' (base64 keys may contain '+'),
        # reported to the ledger owner: recreate until the key reopens.
        if ledger.verifier_key.count("+") == 2:
            break
        ledger.close()
        shutil.rmtree(directory)
    with ledger:
        for payload in entries:
            ledger.append_one("test", payload, time=0.0)
        ledger.checkpoint()


def extend_ledger(directory: Path, entries: list[dict[str, int]]) -> None:
    """Append entries and sign a new checkpoint."""
    with Ledger.open(directory) as ledger:
        for payload in entries:
            ledger.append_one("test", payload, time=0.0)
        ledger.checkpoint()
