"""Shared state of one blueprint run: data splits and fitted detectors, built once and reused.

Sections stay independent (each asks the context for what it needs and gets it built on demand),
but within one process a detector trained for the efficacy section is reused by the adversarial and
energy sections instead of being trained again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustmesh.evaluate._config import BlueprintConfig
from trustmesh.evaluate._energy import EnergyMeter

__all__ = ["Context", "Split", "stratified_indices"]

log = logging.getLogger(__name__)


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Return up to ``n`` row positions, sampled per class in proportion (each class keeps >= 1 row)."""
    labels = np.asarray(labels).astype(str)
    if n >= len(labels):
        return np.arange(len(labels))
    picked: list[np.ndarray] = []
    classes, counts = np.unique(labels, return_counts=True)
    for cls, count in zip(classes, counts, strict=True):
        take = max(1, int(round(n * count / len(labels))))
        rows = np.flatnonzero(labels == cls)
        picked.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(picked))


@dataclass
class Split:
    """Train / validation / test tables of one dataset, and where the split came from."""

    dataset: str
    train: Any  # LabelledTable
    val: Any
    test: Any
    provenance: str


@dataclass
class Context:
    """Per-run state handed to every section."""

    config: BlueprintConfig
    data_dir: Path | None
    work_dir: Path
    ledger_dir: Path | None = None
    on_progress: Callable[[str], None] | None = None
    meter: EnergyMeter = field(init=False)
    _splits: dict[str, Split] = field(default_factory=dict, init=False)
    _detectors: dict[tuple[str, str], Any] = field(default_factory=dict, init=False)
    fit_seconds: dict[tuple[str, str], float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.meter = EnergyMeter(watts_per_core=self.config.watts_per_core)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def rng(self, salt: int = 0) -> np.random.Generator:
        """Return a Generator seeded from the config seed and a per-use salt."""
        return np.random.default_rng([self.config.seed, salt])

    def step(self, message: str) -> None:
        """Report progress inside a section."""
        log.info(message)
        if self.on_progress is not None:
            self.on_progress(message)

    # -- data ---------------------------------------------------------------------------------------
    def split(self, dataset: str) -> Split:
        """Return train/val/test of ``dataset`` (official split where one exists), subsampled."""
        if dataset in self._splits:
            return self._splits[dataset]
        from trustmesh.flows import DATASETS, load_dataset

        cfg = self.config
        rng = self.rng(sum(dataset.encode()))
        spec = DATASETS[dataset]
        self.step(f"loading {dataset}")
        if "train" in spec.splits and "test" in spec.splits:
            full_train = load_dataset(dataset, "train", data_dir=self.data_dir)
            full_test = load_dataset(dataset, "test", data_dir=self.data_dir)
            provenance = "official train/test split"
        else:
            table = load_dataset(dataset, data_dir=self.data_dir)
            order = rng.permutation(len(table))
            labels = np.asarray(table.labels).astype(str)[order]
            # stratified 70/30: every class keeps its share on both sides
            test_mask = np.zeros(len(order), dtype=bool)
            for cls in np.unique(labels):
                rows = np.flatnonzero(labels == cls)
                test_mask[rows[: int(round(0.3 * len(rows)))]] = True
            full_train = table.subset(np.sort(order[~test_mask]))
            full_test = table.subset(np.sort(order[test_mask]))
            provenance = "no official split: stratified 70/30 split (seeded)"
        train = full_train.subset(stratified_indices(full_train.labels, int(cfg.max_train_rows * 1.25), rng))
        test = full_test.subset(stratified_indices(full_test.labels, cfg.max_test_rows, rng))
        # hold out 20 % of the training sample to calibrate thresholds at the target FPR
        perm = rng.permutation(len(train))
        n_val = max(1, len(train) // 5)
        val, train = train.subset(np.sort(perm[:n_val])), train.subset(np.sort(perm[n_val:]))
        provenance += (f"; subsampled to {len(train)} train / {len(val)} validation / {len(test)} test rows "
                       f"from {len(full_train)} / {len(full_test)}")
        result = Split(dataset, train, val, test, provenance)
        self._splits[dataset] = result
        return result

    # -- detectors ----------------------------------------------------------------------------------
    def make_detector(self, kind: str) -> Any:
        """Return an unfitted detector of ``kind`` with this run's parameters."""
        cfg = self.config
        if kind == "snn":
            from trustmesh.detect.snn import SpikingDetector

            return SpikingDetector(seed=cfg.seed, hidden=cfg.snn_hidden, steps=cfg.snn_steps,
                                   epochs=cfg.snn_epochs, encoding=cfg.snn_encoding)  # type: ignore[arg-type]
        from trustmesh.detect import make_detector

        params: dict[str, Any] = {"seed": cfg.seed}
        if kind == "mlp":
            # same hidden sizes, epochs, batch size and learning rate as the SNN: a like-for-like comparison
            params.update(hidden=tuple(cfg.snn_hidden), multiclass=True, epochs=cfg.snn_epochs,
                          batch_size=256,
                          learning_rate=2e-3)
        if kind in ("autoencoder",) and cfg.profile == "test":
            params.update(epochs=2)
        return make_detector(kind, **params)

    def detector(self, kind: str, dataset: str) -> Any:
        """Return ``kind`` fitted on ``dataset``'s training split and calibrated on its validation split."""
        key = (kind, dataset)
        if key in self._detectors:
            return self._detectors[key]
        split = self.split(dataset)
        det = self.make_detector(kind)
        self.step(f"training {kind} on {dataset}")
        t0 = time.perf_counter()
        y = split.train.labels if getattr(det, "supervised", True) else None
        features = split.train.features
        if y is None:  # anomaly detectors learn from benign rows only
            features = split.train.features[~split.train.is_attack].reset_index(drop=True)
        det.fit(features, y)
        det.calibrate(split.val.features, split.val.is_attack, target_fpr=self.config.target_fpr)
        self.fit_seconds[key] = time.perf_counter() - t0
        self._detectors[key] = det
        return det
