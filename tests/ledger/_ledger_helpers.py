"""Helpers shared by the ledger tests (a uniquely named module, imported from the test folder)."""

from __future__ import annotations

from trustmesh.ledger import Entry

ORIGIN = "test.example/log"


def make_entries(n: int, start: int = 0) -> list[Entry]:
    """Return n small deterministic entries."""
    return [Entry("alert", {"flow": f"f{i}", "score": (i % 100) / 100}, time=1.7e9 + i) for i in range(start, start + n)]
