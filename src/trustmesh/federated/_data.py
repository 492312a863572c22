"""Load a labelled dataset as the float matrices federated training needs, plus the detector's encoding.

Rows come from the flows registry (``trustmesh.flows.load_dataset``: sha256-verified, the same
``LabelledTable`` that ``trustmesh train``/``evaluate`` read), so a federated model is a detection-core
artifact scored like any other. Datasets without an official split are split exactly like
``trustmesh train`` does (stratified ``train_test_split`` with the seed; the held-out rows' index hash
goes into the model manifest so ``trustmesh evaluate`` re-creates them and never scores a training
row). A server-held validation share of the TRAINING rows (never test) calibrates the final threshold.

Features are encoded with the detection core's own pipeline (``FeatureEncoder`` then the z-score
``Preprocessor`` of :class:`~trustmesh.detect.MLPDetector`), fit once on the training rows the sites
share out, so the saved detector reproduces exactly what every site trained on. IPs and ports are not
read (TON_IoT shortcut features).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from trustmesh.errors import DatasetError

__all__ = ["DATASETS", "FederatedData", "load_federated_data"]

_log = logging.getLogger(__name__)

DATASETS = ("nsl-kdd", "ton-iot-network", "ton-iot-telemetry")
_TEST_SIZE = 0.2  # held-out share for datasets without an official split
_VALIDATION_SIZE = 0.1  # server-held share of the training rows that calibrates the threshold
# identifier/shortcut columns the model must not read (flows already drops src_ip, src_port, dst_ip)
_DROP = ("src_ip", "dst_ip", "src_port", "dst_port", "date", "time", "ts")


@dataclass(frozen=True)
class FederatedData:
    """Encoded train/test matrices, integer labels (``classes[0] == "benign"``) and optional row groups.

    ``encoder``/``preprocessor`` are the detection core's feature encoding fitted on the training rows
    (``X_train``/``X_test`` are already scaled by them); ``X_val``/``y_val`` the server-held calibration
    rows, ``X_val`` encoded but NOT scaled (``MLPDetector.score_matrix`` input);
    ``provenance`` the split facts a detector manifest records (``data_digest``, ``split``, ...);
    ``test_rows`` the row positions of ``X_test`` in the source table (nsl-kdd: its ``test`` split).
    Synthetic test data may leave them empty (such a run cannot be saved as a detector).
    """

    name: str
    X_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    X_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    groups_train: npt.NDArray[np.str_] | None
    digest: str
    encoder: Any = None
    preprocessor: Any = None
    X_val: npt.NDArray[np.float32] | None = None
    y_val: npt.NDArray[np.int64] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    test_rows: npt.NDArray[np.int64] | None = None

    @property
    def n_features(self) -> int:
        """Number of encoded features."""
        return int(self.X_train.shape[1])


def _stratify(labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # the same rule as `trustmesh train`: class names when every class has >= 2 rows, else attack/benign
    names = np.asarray(labels).astype(str)
    _, counts = np.unique(names, return_counts=True)
    return names if counts.min() >= 2 else names != "benign"


def _split(n: int, labels: npt.NDArray[Any], test_size: float, seed: int) -> tuple[npt.NDArray[np.int64],
                                                                                    npt.NDArray[np.int64]]:
    """Stratified split identical to ``trustmesh train`` (evaluate re-creates it from the manifest)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    try:
        tr, te = train_test_split(idx, test_size=test_size, stratify=_stratify(labels), random_state=seed)
    except ValueError as exc:
        raise DatasetError(f"cannot split {n} rows with test size {test_size}: {exc}") from None
    return np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)


def _index_digest(idx: npt.NDArray[Any]) -> str:
    return hashlib.sha256(np.asarray(idx, dtype="<i8").tobytes()).hexdigest()


def _labels(table: Any, name: str) -> pd.Series:
    if name == "nsl-kdd":
        # attack names -> the usual four categories (Tavallaee et al. 2009); benign stays benign
        return table.attack_category.astype(str).str.lower().reset_index(drop=True)
    return pd.Series(np.asarray(table.labels).astype(str))


def _sample(n: int, size: int | None, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    if size is None or n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def load_federated_data(
    name: str, data_dir: Path | str | None = None, *, max_train: int | None = None, max_test: int | None = None,
    seed: int = 0, holdout: bool = False,
) -> FederatedData:
    """Load ``name`` (nsl-kdd | ton-iot-network | ton-iot-telemetry), optionally subsampled with ``seed``,
    encoded with the detection core's encoder and z-score scaling fitted on the training rows used.

    ``holdout`` (nsl-kdd only) scores on a stratified held-out share of KDDTrain+ instead of KDDTest+:
    an in-distribution view that separates the optimisation gap from KDDTest+'s novel attacks. It is
    an additional view; KDDTest+ stays the official NSL-KDD test set. The other datasets always use
    such a held-out split.
    """
    from trustmesh.config import DATA_HINT, find_data_dir
    from trustmesh.detect import MLPDetector
    from trustmesh.flows import load_dataset

    root = find_data_dir(data_dir)
    if root is None or not root.is_dir():
        raise DatasetError(f"no dataset folder found: {DATA_HINT}")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; federated learning supports {', '.join(DATASETS)}")
    if max_train is not None and max_train < 10:
        raise DatasetError(f"max_train must be >= 10, got {max_train}")
    if holdout and name != "nsl-kdd":
        raise DatasetError(f"holdout applies to nsl-kdd only; {name} is always split stratified")
    split: dict[str, Any]
    if name == "nsl-kdd" and holdout:
        train_table = test_table = load_dataset(name, split="train", data_dir=root)
        ytr_all = yte_all = _labels(train_table, name)
        # stratified on the categories (attack names leave singletons, which would drop u2r stratification)
        tr_idx, te_idx = _split(len(train_table), ytr_all.to_numpy(), _TEST_SIZE, seed)
        split = {"kind": "holdout", "of": "KDDTrain+", "test_size": _TEST_SIZE, "seed": seed,
                 "n_rows": len(train_table), "n_test": int(te_idx.size), "test_index_sha256": _index_digest(te_idx)}
        data_digest = train_table.digest
    elif name == "nsl-kdd":
        train_table = load_dataset(name, split="train", data_dir=root)
        test_table = load_dataset(name, split="test", data_dir=root)
        ytr_all, yte_all = _labels(train_table, name), _labels(test_table, name)
        split = {"kind": "official", "train": "KDDTrain+", "evaluate_with": ["test", "test-21"]}
        data_digest = train_table.digest
        tr_idx = np.arange(len(train_table), dtype=np.int64)
        te_idx = np.arange(len(test_table), dtype=np.int64)
    else:
        table = load_dataset(name, data_dir=root)
        train_table = test_table = table
        ytr_all = yte_all = _labels(table, name)
        tr_idx, te_idx = _split(len(table), table.labels.to_numpy(), _TEST_SIZE, seed)
        split = {"kind": "stratified", "test_size": _TEST_SIZE, "seed": seed, "n_rows": len(table),
                 "n_test": int(te_idx.size), "test_index_sha256": _index_digest(te_idx)}
        data_digest = table.digest
    # the server keeps a stratified share of the training rows to calibrate the threshold
    fit_pos, val_pos = _split(len(tr_idx), ytr_all.to_numpy()[tr_idx], _VALIDATION_SIZE, seed + 7)
    rng = np.random.default_rng(seed + 1)
    fit_idx = tr_idx[fit_pos][_sample(len(fit_pos), max_train, rng)]
    val_idx = tr_idx[val_pos][_sample(len(val_pos), None if max_train is None else max(200, max_train // 8), rng)]
    te_idx = te_idx[_sample(len(te_idx), max_test, rng)]
    y_fit = ytr_all.iloc[fit_idx].reset_index(drop=True)
    classes = ("benign", *sorted(set(y_fit.unique()) - {"benign"}))
    if "benign" not in set(y_fit):
        raise DatasetError(f"{name}: the sampled training rows hold no benign row")
    index = {c: i for i, c in enumerate(classes)}
    y_te = yte_all.iloc[te_idx].reset_index(drop=True)
    known = y_te.isin(classes).to_numpy()
    if not known.all():
        _log.info("%s: dropping %d test rows of classes unseen in training", name, int((~known).sum()))
        te_idx, y_te = te_idx[known], y_te[known].reset_index(drop=True)
    y_val = ytr_all.iloc[val_idx].reset_index(drop=True)
    vknown = y_val.isin(classes).to_numpy()
    val_idx, y_val = val_idx[vknown], y_val[vknown].reset_index(drop=True)

    def frame(tbl: Any, idx: npt.NDArray[np.int64]) -> pd.DataFrame:
        f = tbl.features.iloc[idx].reset_index(drop=True)
        return f.drop(columns=[c for c in _DROP if c in f.columns])

    f_fit = frame(train_table, fit_idx)
    # the detector's own encoder and z-score scaling, fitted on the rows the sites train on
    template = MLPDetector(seed=seed, multiclass=len(classes) > 2).prepare(f_fit, classes=classes)
    encoder, pre = template.encoder, template.pre
    assert encoder is not None and pre is not None
    X_tr = pre.transform(encoder.transform(f_fit))
    M_val = encoder.transform(frame(train_table, val_idx))  # encoded, unscaled: the detector's input
    X_te = pre.transform(encoder.transform(frame(test_table, te_idx)))
    y_tr = y_fit.map(index).to_numpy(np.int64)
    y_te_i = y_te.map(index).to_numpy(np.int64)
    y_val_i = y_val.map(index).to_numpy(np.int64)
    groups = None
    if name == "ton-iot-telemetry":
        groups = train_table.features["device"].iloc[fit_idx].astype(str).to_numpy(dtype=str)
    digest = hashlib.sha256(X_tr.tobytes() + y_tr.tobytes() + X_te.tobytes() + y_te_i.tobytes()).hexdigest()
    provenance = {
        "dataset": name, "data_digest": data_digest, "split": split, "validation_size": _VALIDATION_SIZE,
        "n_train": int(len(fit_idx)), "n_validation": int(len(val_idx)), "n_test_in_run": int(len(te_idx)),
        "train_index_sha256": _index_digest(fit_idx), "validation_index_sha256": _index_digest(val_idx),
        "dropped_columns": [c for c in _DROP if c in train_table.features.columns],
    }
    if name == "nsl-kdd":
        provenance["label_view"] = "attack_category"  # `trustmesh evaluate` scores per category, not attack name
    return FederatedData(name, X_tr, y_tr, X_te, y_te_i, classes, tuple(encoder.columns), groups, digest,
                         encoder=encoder, preprocessor=pre, X_val=M_val, y_val=y_val_i, provenance=provenance,
                         test_rows=te_idx)
