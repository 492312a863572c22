"""Pre-train the federated MLP on a public dataset before private (DP-SGD) fine-tuning.

The public rows come from another capture than the private one (UNSW-NB15 for TON_IoT), so they
cost no privacy budget. The two datasets are different feature families; only the facts both record
are mapped (protocol, service, duration, bytes and packets per direction), through the private run's
own encoder and scaling, and every other input is 0 (the private training mean after z-scoring).
The pre-trained hidden layers initialise the federated model; its output layer keeps the run's
seeded initialisation, because the public labels are other classes. Measured in docs/benchmarks.md,
"Usable DP (issue 16 item 3)".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from trustmesh.errors import ConfigError, DatasetError
from trustmesh.federated._data import FederatedData
from trustmesh.federated._model import MLPModel

__all__ = ["PUBLIC_DATASETS", "PublicRows", "pretrained_weights", "public_rows"]

# public dataset -> {private (TON_IoT/Zeek) column: public column}
_SHARED: dict[str, dict[str, str]] = {
    "unsw-nb15": {"proto": "proto", "service": "service", "duration": "dur", "src_bytes": "sbytes",
                  "dst_bytes": "dbytes", "src_pkts": "spkts", "dst_pkts": "dpkts"},
}
PUBLIC_DATASETS = tuple(sorted(_SHARED))
_EPOCHS, _BATCH, _LR = 5, 128, 3e-3  # the measured pre-training (no DP: the rows are public)


@dataclass(frozen=True)
class PublicRows:
    """Public rows encoded like the private run's inputs, their own labels, and where they came from."""

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    info: dict[str, Any]


def public_rows(name: str, private: FederatedData, data_dir: Path | str | None = None) -> PublicRows:
    """Load public dataset ``name`` (sha256-verified) and encode its shared columns as ``private``'s inputs."""
    from trustmesh.config import DATA_HINT, find_data_dir
    from trustmesh.flows import load_dataset

    if name == private.name:
        raise ConfigError(f"--dp-pretrain {name}: the public data must be another dataset than the private one")
    if name not in _SHARED:
        raise ConfigError(f"--dp-pretrain must be one of {', '.join(PUBLIC_DATASETS)}, got {name!r}")
    if private.encoder is None or private.preprocessor is None:
        raise ConfigError(f"--dp-pretrain: {private.name} carries no encoder (load it with load_federated_data)")
    columns = list(private.encoder.columns)
    shared = {mine: theirs for mine, theirs in _SHARED[name].items() if mine in columns}
    if not shared:
        raise ConfigError(f"--dp-pretrain {name}: {private.name} has none of the shared columns "
                          f"{', '.join(_SHARED[name])}")
    root = find_data_dir(data_dir)
    if root is None or not root.is_dir():
        raise DatasetError(f"no dataset folder found: {DATA_HINT}")
    table = load_dataset(name, data_dir=root)
    feats = table.features
    frame = pd.DataFrame({c: (feats[shared[c]].to_numpy() if c in shared else np.full(len(feats), np.nan))
                          for c in columns})
    X = np.asarray(private.preprocessor.transform(private.encoder.transform(frame)), dtype=np.float32)
    keep = np.zeros(len(columns), dtype=bool)
    keep[[columns.index(c) for c in shared]] = True
    X[:, ~keep] = 0.0  # what the public data does not record: the private training mean
    labels = np.asarray(table.labels).astype(str)
    classes = tuple(sorted(set(labels)))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    info = {"dataset": name, "data_digest": table.digest, "rows": int(len(y)), "classes": list(classes),
            "shared_columns": sorted(shared), "epochs": _EPOCHS, "batch_size": _BATCH, "lr": _LR}
    return PublicRows(X, y, classes, info)


def pretrained_weights(
    public: PublicRows, n_features: int, n_classes: int, hidden: tuple[int, ...], *, seed: int = 0,
) -> list[npt.NDArray[np.float32]]:
    """Return initial weights: hidden layers trained on ``public``, the output layer as ``MLPModel(seed)``."""
    if public.X.shape[1] != n_features:
        raise ValueError(f"public rows have {public.X.shape[1]} features, the model {n_features}")
    if not hidden:
        raise ConfigError("--dp-pretrain needs a hidden layer to transfer (the output layer is not transferred)")
    body = MLPModel(n_features, len(public.classes), hidden, seed=seed)
    for epoch in range(_EPOCHS):
        body.train_epochs(public.X, public.y, 1, batch_size=_BATCH, lr=_LR, seed=seed * 1_000 + epoch)
    fresh = MLPModel(n_features, n_classes, hidden, seed=seed).get_weights()
    return body.get_weights()[:-2] + fresh[-2:]
