"""Small GBDT models trained on real TON_IoT flows, for the pipeline tests' module fixtures.

The TON_IoT table is read once per test process; each fixture draws its own sample from it, so the
models are the same as when every test file read and sampled the file itself.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from trustmesh.detect import GBDTDetector, save_model
from trustmesh.flows import CANONICAL_FEATURES, ton_iot_to_canonical


@functools.lru_cache(maxsize=2)
def _ton_network(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, encoding="utf-8-sig", low_memory=False)


def ton_gbdt(data_dir: Path, folder: Path, rows: int, random_state: int, *, multiclass: bool = False) -> Path:
    """Train a GBDT (binary on ``label``, or multi-class on ``attack_type``) on ``rows`` sampled TON_IoT
    flows and save it as ``folder/gbdt.model``."""
    raw = _ton_network(data_dir / "ton-iot/network/train_test_network.csv.gz").sample(rows, random_state=random_state)
    flows = ton_iot_to_canonical(raw)
    target = flows["attack_type" if multiclass else "label"].to_numpy()
    detector = GBDTDetector(seed=0, multiclass=True) if multiclass else GBDTDetector(seed=0)
    path = folder / "gbdt.model"
    save_model(detector.fit(flows[list(CANONICAL_FEATURES)], target), path)
    return path
