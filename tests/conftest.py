"""Shared fixtures: the real datasets (skipped with a reason when absent) and the Merkle vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmesh.config import find_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared datasets folder; tests that need it skip (with the reason) when it is absent."""
    found = find_data_dir()
    if found is None or not found.is_dir():
        pytest.skip("datasets not found: set TRUSTMESH_DATA or place them at ../shared/datasets")
    return found


@pytest.fixture(scope="session")
def merkle_vectors() -> Path:
    """The RFC 6962 proof vectors in ../shared/vectors/merkle."""
    path = SHARED / "vectors" / "merkle"
    if not path.is_dir():
        pytest.skip(f"Merkle vectors not found at {path}")
    return path
