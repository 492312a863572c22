"""Fuzz fixtures: real seed material from ../shared/datasets and per-parser tallies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _fuzz_harness import report_all


@pytest.fixture(scope="session", autouse=True)
def _report_tallies() -> Iterator[None]:
    yield
    report_all()


@pytest.fixture(scope="module", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("fuzz-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRUSTMESH_CACHE_DIR", str(path))
        yield path
