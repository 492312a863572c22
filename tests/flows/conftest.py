"""Fixtures for the flows tests: an isolated cache directory for hashes and parsed datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="module")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point Settings().cache_dir at a per-module folder so tests never touch ~/.cache (undone after)."""
    path = tmp_path_factory.mktemp("trustmesh-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRUSTMESH_CACHE_DIR", str(path))
        yield path
