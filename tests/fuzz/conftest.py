"""Fuzz fixtures: real seed material from ../shared/datasets and per-parser tallies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _harness import Tally

_TALLIES: dict[str, Tally] = {}


def tally_for(name: str) -> Tally:
    """Return the session's tally for one parser (reported at the end when TRUSTMESH_FUZZ_REPORT is set)."""
    return _TALLIES.setdefault(name, Tally(name))


@pytest.fixture(scope="session", autouse=True)
def _report_tallies() -> Iterator[None]:
    yield
    for t in _TALLIES.values():
        t.report()


@pytest.fixture(scope="module", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("fuzz-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRUSTMESH_CACHE_DIR", str(path))
        yield path
