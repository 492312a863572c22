"""Helpers shared by the anchor tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

from trustmesh.ledger import Ledger


def make_ledger(directory: Path, origin: str, entries: list[dict[str, int]]) -> None:
    """Create a ledger with ``entries`` and a signed checkpoint of all of them."""
    with Ledger.create(directory, origin) as ledger:
        for payload in entries:
            ledger.append_one("test", payload, time=0.0)
        ledger.checkpoint()


def extend_ledger(directory: Path, entries: list[dict[str, int]]) -> None:
    """Append entries and sign a new checkpoint."""
    with Ledger.open(directory) as ledger:
        for payload in entries:
            ledger.append_one("test", payload, time=0.0)
        ledger.checkpoint()
