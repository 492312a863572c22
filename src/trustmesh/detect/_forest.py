"""Random forest (Breiman 2001) fitted by scikit-learn, saved and scored without pickle.

Training uses :class:`sklearn.ensemble.RandomForestClassifier` (seeded, ``n_jobs=2``); the fitted
trees are exported as flat numpy arrays (children, split feature, split threshold, where a missing
value goes, per-node class distributions) and scored by the vectorised traversal the isolation
forest uses (:func:`trustmesh.detect._iforest.walk_trees`). The class probabilities equal
scikit-learn's ``predict_proba`` (the mean of each tree's normalised leaf distribution, NaN routed
as scikit-learn routes it); the score is ``1 - P(benign)``, and decisions follow the shared rule
(:meth:`BaseDetector.predict_class`).

Why it exists: on tables of 2-4 raw sensor readings per row (TON_IoT telemetry) bagged full-depth
trees generalise better than boosting, which memorises exact repeated values; ``trustmesh train
--model auto`` fits both and keeps the better one on validation (docs/detectors.md).

Size is bounded by ``n_estimators`` (100) and ``max_leaf_nodes`` (4,096 leaves per tree), so an
artifact stays a few MB and scoring a bounded number of levels per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trustmesh.detect._base import BaseDetector, npy_bytes, npy_load, register
from trustmesh.detect._iforest import walk_trees
from trustmesh.errors import ModelError

__all__ = ["RandomForestDetector", "export_forest", "forest_proba"]

_CLASS_WEIGHTS = ("none", "balanced", "balanced_subsample")
_ARRAYS = ("left", "right", "feature", "split", "missing_left", "leaf", "value", "roots")
_CHUNK = 20_000


def export_forest(forest: Any, n_classes: int) -> dict[str, np.ndarray]:
    """Flatten a fitted scikit-learn forest classifier into plain arrays (see module docstring).

    ``forest.classes_`` must be integers in ``[0, n_classes)``; column ``c`` of ``value`` is class ``c``.
    """
    columns = np.asarray(forest.classes_, dtype=np.int64)
    if columns.size and (columns.min() < 0 or columns.max() >= n_classes):
        raise ModelError(f"forest classes {columns.tolist()} do not fit {n_classes} classes")
    lefts, rights, feats, splits, missing, leaves, values, roots = [], [], [], [], [], [], [], []
    offset = n_leaves = 0
    for est in forest.estimators_:
        tree = est.tree_
        left = tree.children_left.astype(np.int64)
        right = tree.children_right.astype(np.int64)
        leaf = left == -1
        idx = np.arange(tree.node_count, dtype=np.int64) + offset
        lefts.append(np.where(leaf, idx, left + offset).astype(np.int32))
        rights.append(np.where(leaf, idx, right + offset).astype(np.int32))
        feats.append(np.where(leaf, 0, tree.feature).astype(np.int32))
        splits.append(np.where(leaf, np.inf, tree.threshold).astype(np.float64))
        go_left = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=np.uint8))
        missing.append(np.where(leaf, False, np.asarray(go_left).astype(bool)))
        raw = np.asarray(tree.value[:, 0, :], dtype=np.float64)
        norm = raw.sum(axis=1, keepdims=True)
        norm[norm == 0.0] = 1.0
        dist = np.zeros((int(leaf.sum()), n_classes), dtype=np.float64)
        dist[:, columns] = (raw / norm)[leaf]
        values.append(dist)
        rank = np.full(tree.node_count, -1, dtype=np.int64)
        rank[leaf] = np.arange(dist.shape[0]) + n_leaves
        leaves.append(rank.astype(np.int32))
        n_leaves += dist.shape[0]
        roots.append(offset)
        offset += tree.node_count
    if offset >= np.iinfo(np.int32).max:
        raise ModelError("forest has too many nodes to export")
    return {
        "left": np.concatenate(lefts),
        "right": np.concatenate(rights),
        "feature": np.concatenate(feats),
        "split": np.concatenate(splits),
        "missing_left": np.concatenate(missing),
        "leaf": np.concatenate(leaves),
        "value": np.concatenate(values),
        "roots": np.asarray(roots, dtype=np.int64),
    }


def forest_proba(trees: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Mean leaf distribution over the trees for each row of ``X`` (float32 comparisons, as sklearn)."""
    data = np.asarray(X, dtype=np.float32)
    value, leaf = trees["value"], trees["leaf"]
    n_trees = trees["roots"].size
    out = np.zeros((data.shape[0], value.shape[1]), dtype=np.float64)
    for start in range(0, data.shape[0], _CHUNK):
        chunk = data[start:start + _CHUNK]
        node, _ = walk_trees(trees, chunk)
        acc = np.zeros((chunk.shape[0], value.shape[1]), dtype=np.float64)
        for j in range(n_trees):  # tree by tree, in order: the same sums as scikit-learn's
            acc += value[leaf[node[:, j]]]
        out[start:start + chunk.shape[0]] = acc / n_trees
    return out


@register
class RandomForestDetector(BaseDetector):
    """scikit-learn random forest, exported to arrays; ``score = 1 - P(benign)``."""

    name = "forest"
    supervised = True

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        n_estimators: int = 100,
        max_leaf_nodes: int | None = 4096,
        min_samples_leaf: int = 1,
        max_features: str | float = "sqrt",
        class_weight: str = "none",
        n_jobs: int = 2,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=multiclass)
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {n_estimators}")
        if max_leaf_nodes is not None and max_leaf_nodes < 2:
            raise ValueError(f"max_leaf_nodes must be >= 2 (or None), got {max_leaf_nodes}")
        if min_samples_leaf < 1:
            raise ValueError(f"min_samples_leaf must be >= 1, got {min_samples_leaf}")
        if isinstance(max_features, str):
            if max_features not in ("sqrt", "log2"):
                raise ValueError(f"max_features must be 'sqrt', 'log2' or a fraction, got {max_features!r}")
        elif not 0.0 < float(max_features) <= 1.0:
            raise ValueError(f"max_features fraction must be in (0, 1], got {max_features}")
        if class_weight not in _CLASS_WEIGHTS:
            raise ValueError(f"class_weight must be one of {', '.join(_CLASS_WEIGHTS)}, got {class_weight!r}")
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
        self.n_estimators = int(n_estimators)
        self.max_leaf_nodes = None if max_leaf_nodes is None else int(max_leaf_nodes)
        self.min_samples_leaf = int(min_samples_leaf)
        self.max_features = max_features if isinstance(max_features, str) else float(max_features)
        self.class_weight = class_weight
        self.n_jobs = int(n_jobs)
        self._trees: dict[str, np.ndarray] = {}
        self.fit_report: dict[str, Any] = {}

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            **super().get_params(),
            "n_estimators": self.n_estimators,
            "max_leaf_nodes": self.max_leaf_nodes,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": self.max_features,
            "class_weight": self.class_weight,
            "n_jobs": self.n_jobs,
        }

    def sklearn_model(self) -> Any:
        """Return the unfitted scikit-learn estimator this detector trains."""
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight=None if self.class_weight == "none" else self.class_weight,
            random_state=self.seed,
            n_jobs=self.n_jobs,
        )

    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        n_classes = len(self._classes)
        label = class_index if n_classes > 2 else is_attack.astype(np.int64)
        forest = self.sklearn_model().fit(X, label)
        self._trees = export_forest(forest, n_classes)
        leaves = int(self._trees["value"].shape[0])
        self.fit_report = {"trees": self.n_estimators, "nodes": int(self._trees["left"].size), "leaves": leaves,
                           "max_leaf_nodes": self.max_leaf_nodes, "class_weight": self.class_weight}  # fmt: skip

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Class probabilities in ``classes_`` order."""
        if not self._trees:
            raise ModelError("forest detector is not fitted; call fit() first")
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise ModelError(f"expected a matrix with {len(self.feature_names)} columns, got {matrix.shape}")
        return forest_proba(self._trees, matrix)

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        if not self._trees:
            raise ModelError("forest detector is not fitted; call fit() first")
        return 1.0 - forest_proba(self._trees, X)[:, 0]

    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        if not self._trees:
            raise ModelError("forest detector is not fitted; call fit() first")
        return {"fit": self.fit_report}, {f"{k}.npy": npy_bytes(v) for k, v in self._trees.items()}

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        try:
            trees = {k: npy_load(blobs[f"{k}.npy"], k) for k in _ARRAYS}
        except KeyError as exc:
            raise ModelError(f"forest model file lacks {exc.args[0]}.npy") from None
        n = trees["left"].shape[0]
        if trees["left"].ndim != 1 or any(trees[k].shape != (n,) for k in ("right", "feature", "split", "missing_left")):
            raise ModelError("forest arrays have inconsistent lengths")
        if trees["value"].ndim != 2 or trees["value"].shape[1] != len(self._classes) or trees["value"].dtype.kind != "f":
            raise ModelError("forest leaf distributions do not match the classes in the model file")
        for k in ("left", "right", "roots", "feature", "leaf"):
            if trees[k].dtype.kind != "i":
                raise ModelError(f"forest {k} must be integers")
        for k in ("left", "right", "roots"):
            if trees[k].size and (trees[k].min() < 0 or trees[k].max() >= n):
                raise ModelError(f"forest {k} indices are out of range")
        if trees["roots"].size == 0:
            raise ModelError("forest has no trees")
        if trees["feature"].size and (trees["feature"].min() < 0 or trees["feature"].max() >= len(self.feature_names)):
            raise ModelError("forest split features are out of range")
        if trees["missing_left"].dtype != bool or trees["split"].dtype.kind != "f":
            raise ModelError("forest split arrays have the wrong type")
        idx = np.arange(n)
        is_leaf = trees["left"] == idx
        if trees["leaf"].shape != (n,) or np.any(trees["leaf"][is_leaf] < 0) or (
                is_leaf.any() and trees["leaf"][is_leaf].max() >= trees["value"].shape[0]):
            raise ModelError("forest leaf indices are out of range")
        for k in ("left", "right"):  # children point strictly forward (leaves to themselves): no cycles
            if np.any((trees[k] != idx) & (trees[k] <= idx)):
                raise ModelError("forest tree structure is not a forest")
        self._trees = trees
        fit = state.get("fit", {})
        self.fit_report = dict(fit) if isinstance(fit, dict) else {}
