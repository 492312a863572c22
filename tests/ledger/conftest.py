"""Fixtures for the ledger tests: a fresh log with a few hundred entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries

from trustmesh.ledger import Ledger


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def small_ledger(ledger_dir: Path) -> Iterator[Ledger]:
    """A log of 700 entries in three batches (crosses two tile boundaries), checkpointed at 300 and 700."""
    led = Ledger.create(ledger_dir, ORIGIN)
    led.append(make_entries(300))
    led.checkpoint()
    led.append(make_entries(1, 300))
    led.append(make_entries(399, 301))
    led.checkpoint()
    yield led
    led.close()
