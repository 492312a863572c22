"""Every detector passes the same conformance checks on a small real TON_IoT sample."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect import BaseDetector, make_detector
from trustmesh.detect.checks import check_detector

FACTORIES: dict[str, Callable[[], BaseDetector]] = {
    "gbdt": lambda: make_detector("gbdt", seed=3, n_estimators=20),
    "gbdt-multiclass": lambda: make_detector("gbdt", seed=3, n_estimators=20, multiclass=True),
    "iforest": lambda: make_detector("iforest", seed=3, n_estimators=50),
    "autoencoder": lambda: make_detector("autoencoder", seed=3, epochs=2),
    "mlp": lambda: make_detector("mlp", seed=3, epochs=2, hidden=(16,)),
    "mlp-multiclass": lambda: make_detector("mlp", seed=3, epochs=2, hidden=(16, 8), multiclass=True),
    "ensemble": lambda: make_detector(
        "ensemble", seed=3, supervised_params={"n_estimators": 20}, anomaly_params={"epochs": 2}
    ),
    "ensemble-iforest": lambda: make_detector(
        "ensemble", seed=3, anomaly_kind="iforest", multiclass=True,
        supervised_params={"n_estimators": 20}, anomaly_params={"n_estimators": 30},
    ),
}


@pytest.fixture(scope="module")
def sample(data_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    from trustmesh.flows import load_dataset

    table = load_dataset("ton-iot-network", data_dir=data_dir)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(table), 3000, replace=False))
    sub = table.subset(idx)
    return sub.features, sub.labels.to_numpy()


@pytest.mark.needs_data
@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_detector_conforms(kind: str, sample: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = sample
    check_detector(FACTORIES[kind], X, y)
