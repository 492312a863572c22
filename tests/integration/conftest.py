"""Fixtures shared by the namespace integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def policy_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pcap model saved with its training record (its corroborated alert policy)."""
    from trustmesh.detect import default_pcap_model, save_model

    detector, manifest = default_pcap_model(data_dir)
    path = tmp_path_factory.mktemp("ttc-model") / "default.model"
    save_model(detector, path, data_digest=manifest.data_digest, training=dict(manifest.training))
    return path
