"""Shared fixtures: the real datasets (skipped with a reason when absent) and the Merkle vectors."""

from __future__ import annotations

import os
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



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI (TRUSTMESH_CI_REQUIRE_SYSTEM=1) a skip is a failure: .ci/run installed every tool.

    A skip whose reason starts with ``optional:`` (something CI deliberately does not provide) stays a
    skip; every other reason (a missing tool, not root, no datasets) fails the test, so root, nftables,
    lab and browser tests can never vanish from a green run.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("TRUSTMESH_CI_REQUIRE_SYSTEM") != "1" or not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if "optional:" in reason:
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, which must provide what this test needs: {reason}"
