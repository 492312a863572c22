"""Isolation Forest baseline (Liu, Ting and Zhou, ICDM 2008) fitted with scikit-learn.

Training uses :class:`sklearn.ensemble.IsolationForest`; the fitted trees are then exported as plain
arrays (children, split feature, split threshold, leaf sizes) and scored by a vectorised numpy
traversal. That gives the same anomaly score as scikit-learn's ``-score_samples`` (the paper's
``s(x, n) = 2^{-E[h(x)] / c(n)}``, already in (0, 1]) and lets the model be saved without pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trustmesh.detect._base import BaseDetector, nan_median, npy_bytes, npy_load, register
from trustmesh.errors import ModelError

__all__ = ["IsolationForestDetector", "walk_trees"]

_ARRAYS = ("left", "right", "feature", "split", "leaf_depth_bonus", "roots")
_CHUNK = 20_000  # rows traversed at once: (rows x trees) int64 node arrays stay a few tens of MB


def walk_trees(trees: Mapping[str, np.ndarray], chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Route every row of ``chunk`` down every tree of a flat forest; return ``(leaf node, depth)``.

    ``trees`` holds flat per-node arrays over all trees: ``left``/``right`` child indices (a leaf points
    to itself), split ``feature`` and ``split`` threshold (go left iff ``x <= split``, as scikit-learn
    does on float32 inputs), ``roots`` (one root index per tree) and optionally ``missing_left``
    (where a NaN goes: left if true, right otherwise; scikit-learn's ``missing_go_to_left``). Both
    results have shape ``(rows, trees)``; depth counts the internal nodes passed.
    """
    left, right, feature, split = trees["left"], trees["right"], trees["feature"], trees["split"]
    missing_left = trees.get("missing_left")
    n_trees = trees["roots"].size
    node = np.tile(trees["roots"].astype(np.int64), chunk.shape[0])  # row-major (row, tree) pairs
    depth = np.zeros(node.size, dtype=np.float64)
    active = np.arange(node.size)
    while active.size:
        here = node[active]
        internal = left[here] != here
        active, here = active[internal], here[internal]  # pairs at a leaf are done: deep trees stay cheap
        if not active.size:
            break
        x = chunk[active // n_trees, feature[here]]
        go_left = x <= split[here]
        if missing_left is not None:
            go_left |= np.isnan(x) & missing_left[here]
        node[active] = np.where(go_left, left[here], right[here])
        depth[active] += 1.0
    shape = (chunk.shape[0], n_trees)
    return node.reshape(shape), depth.reshape(shape)
    return node, depth


def _average_path_length(n: np.ndarray) -> np.ndarray:
    # c(n): average path length of an unsuccessful BST search (Liu et al. 2008, eq. 1).
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@register
class IsolationForestDetector(BaseDetector):
    """Isolation Forest on benign rows (``benign_only=True``) or on all rows (contamination)."""

    name = "iforest"
    supervised = False

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        n_estimators: int = 100,
        max_samples: int = 256,
        benign_only: bool = True,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=False)
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {n_estimators}")
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        self.n_estimators = int(n_estimators)
        self.max_samples = int(max_samples)
        self.benign_only = bool(benign_only)
        self._trees: dict[str, np.ndarray] = {}
        self._fill: np.ndarray | None = None
        self._norm = 1.0

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            "seed": self.seed,
            "n_estimators": self.n_estimators,
            "max_samples": self.max_samples,
            "benign_only": self.benign_only,
        }

    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest

        rows = X[~is_attack] if self.benign_only else X
        self._fill = nan_median(rows)
        data = np.where(np.isnan(rows), self._fill, rows)
        forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, data.shape[0]),
            random_state=self.seed,
            n_jobs=1,
        ).fit(data)
        lefts, rights, feats, splits, bonus, roots = [], [], [], [], [], []
        offset = 0
        for est, cols in zip(forest.estimators_, forest.estimators_features_, strict=True):
            tree = est.tree_
            left = tree.children_left.astype(np.int64)
            right = tree.children_right.astype(np.int64)
            leaf = left == -1
            # Re-base child indices into the flat arrays; leaves point to themselves.
            idx = np.arange(tree.node_count, dtype=np.int64) + offset
            lefts.append(np.where(leaf, idx, left + offset))
            rights.append(np.where(leaf, idx, right + offset))
            feats.append(np.where(leaf, 0, np.asarray(cols)[np.maximum(tree.feature, 0)]).astype(np.int64))
            splits.append(np.where(leaf, np.inf, tree.threshold))
            bonus.append(np.where(leaf, _average_path_length(tree.n_node_samples), 0.0))
            roots.append(offset)
            offset += tree.node_count
        self._trees = {
            "left": np.concatenate(lefts),
            "right": np.concatenate(rights),
            "feature": np.concatenate(feats),
            "split": np.concatenate(splits).astype(np.float64),
            "leaf_depth_bonus": np.concatenate(bonus),
            "roots": np.asarray(roots, dtype=np.int64),
        }
        self._norm = float(_average_path_length(np.asarray([forest.max_samples_]))[0]) or 1.0

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        if not self._trees or self._fill is None:
            raise ModelError("iforest detector is not fitted; call fit() first")
        t = self._trees
        data = np.where(np.isnan(X), self._fill, X).astype(np.float32)
        n_trees = t["roots"].size
        total = np.zeros(X.shape[0], dtype=np.float64)
        for start in range(0, X.shape[0], _CHUNK):
            chunk = data[start:start + _CHUNK]
            node, depth = walk_trees(t, chunk)
            total[start:start + chunk.shape[0]] = (depth + t["leaf_depth_bonus"][node]).sum(axis=1)
        return np.power(2.0, -total / (n_trees * self._norm))

    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        assert self._fill is not None
        blobs = {f"{k}.npy": npy_bytes(v) for k, v in self._trees.items()}
        return {"fill": self._fill.tolist(), "norm": self._norm}, blobs

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        trees = {k: npy_load(blobs[f"{k}.npy"], k) for k in _ARRAYS}
        n_nodes = trees["left"].shape[0]
        if any(trees[k].shape != (n_nodes,) for k in ("right", "feature", "split", "leaf_depth_bonus")):
            raise ModelError("iforest arrays have inconsistent lengths")
        for k in ("left", "right", "roots"):
            if trees[k].dtype.kind != "i" or (trees[k].size and (trees[k].min() < 0 or trees[k].max() >= n_nodes)):
                raise ModelError(f"iforest {k} indices are out of range")
        if trees["feature"].size and (trees["feature"].min() < 0 or trees["feature"].max() >= len(self.feature_names)):
            raise ModelError("iforest split features are out of range")
        # Children must point strictly forward (or to themselves at leaves): rules out cycles.
        idx = np.arange(n_nodes)
        for k in ("left", "right"):
            if np.any((trees[k] != idx) & (trees[k] <= idx)):
                raise ModelError("iforest tree structure is not a forest")
        fill = np.asarray(state["fill"], dtype=np.float32)
        if fill.shape != (len(self.feature_names),):
            raise ModelError("iforest fill values do not match the feature list")
        self._trees = trees
        self._fill = fill
        self._norm = float(state["norm"])
