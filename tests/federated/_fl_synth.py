"""Synthetic, well-separated classification data for fast federated tests (not a test module)."""

from __future__ import annotations

import hashlib

import numpy as np

from trustmesh.federated import FederatedData


def blobs(n_train: int = 1200, n_test: int = 400, n_features: int = 8, n_classes: int = 3, seed: int = 0,
          groups: int | None = None) -> FederatedData:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(n_classes, n_features))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, size=n)
        return (centers[y] + rng.normal(size=(n, n_features))).astype(np.float32), y.astype(np.int64)

    X_tr, y_tr = draw(n_train)
    X_te, y_te = draw(n_test)
    g = None if groups is None else np.array([f"dev{i % groups}" for i in range(n_train)])
    classes = ("benign", *[f"attack{i}" for i in range(1, n_classes)])
    digest = hashlib.sha256(X_tr.tobytes()).hexdigest()
    return FederatedData("blobs", X_tr, y_tr, X_te, y_te, classes, tuple(f"f{i}" for i in range(n_features)), g, digest)


def rare_classes(n_train: int, n_test: int, n_features: int, n_classes: int, common: int, keep_rare: float,
                 seed: int = 0) -> FederatedData:
    """:func:`blobs` with every class from ``common`` on thinned to about ``keep_rare`` of its training rows."""
    data = blobs(n_train=n_train, n_test=n_test, n_features=n_features, n_classes=n_classes, seed=seed)
    rng = np.random.default_rng(seed + 1)
    keep = (data.y_train < common) | (rng.random(len(data.y_train)) < keep_rare)
    return FederatedData(data.name, data.X_train[keep], data.y_train[keep], data.X_test, data.y_test, data.classes,
                         data.feature_names, None, data.digest)
