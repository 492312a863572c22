"""Fixtures for the operator API: a small real model and a served state made by a real pipeline run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from apisite import Site, make_site, run_pipeline, shared_model


@pytest.fixture(scope="session")
def api_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small multi-class GBDT trained on real TON_IoT flows mapped to the canonical schema."""
    return shared_model(data_dir, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def replayed_site(api_model: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A site after one pipeline run over synscan (pristine: copy it before changing anything)."""
    site = make_site(tmp_path_factory.mktemp("api-site"), api_model, data_dir)
    run_pipeline(site)
    return site


@pytest.fixture()
def site(replayed_site: Site, tmp_path: Path) -> Iterator[Site]:
    """A private copy of the replayed site."""
    root = tmp_path / "site"
    shutil.copytree(replayed_site.root, root)
    yield Site(root, root / "trustmesh.toml", root / "ledger", root / "state")


