"""Fixtures: small GBDT and MLP models trained on a real TON_IoT sample, saved as artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass
class Trained:
    path: Path
    det: Any
    manifest: Any
    train_matrix: np.ndarray
    test_features: Any
    test_attack: np.ndarray


@pytest.fixture(scope="package")
def ton(data_dir: Path) -> Any:
    from trustmesh.flows import load_dataset

    return load_dataset("ton-iot-network", data_dir=data_dir)


def _train(kind: str, ton: Any, out: Path, **params: Any) -> Trained:
    from trustmesh.detect import load_model, make_detector, save_model

    rng = np.random.default_rng(7)
    idx = rng.permutation(len(ton.features))
    train, test = np.sort(idx[:3000]), np.sort(idx[3000:4000])
    X, y = ton.features.iloc[train], ton.is_attack[train]
    det = make_detector(kind, seed=3, **params).fit(X, y)
    det.calibrate(X, y, 0.05)
    save_model(det, out, data_digest=ton.digest, metrics={"validation": {"accuracy": 0.9}},
               training={"dataset": "ton-iot-network", "rows": [int(train[0]), int(train[-1])]})
    loaded, manifest = load_model(out)
    return Trained(out, loaded, manifest, loaded.encode(X, fill_missing=True), ton.features.iloc[test],
                   np.asarray(ton.is_attack[test], dtype=bool))


@pytest.fixture(scope="package")
def gbdt(ton: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train("gbdt", ton, tmp_path_factory.mktemp("gbdt") / "gbdt.tm", n_estimators=32)


@pytest.fixture(scope="package")
def mlp(ton: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train("mlp", ton, tmp_path_factory.mktemp("mlp") / "mlp.tm", hidden=[32, 16], epochs=5)


@pytest.fixture(scope="package")
def snn(ton: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train("snn", ton, tmp_path_factory.mktemp("snn") / "snn.tm", hidden=[16], steps=4, epochs=1,
                  multiclass=False)
