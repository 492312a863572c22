"""Detection metrics and the train/test leakage audit (reused by trustmesh.evaluate)."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import pandas as pd

from trustmesh.detect._protocol import BENIGN
from trustmesh.errors import InputError

__all__ = ["binary_metrics", "evaluate_detector", "leakage_audit", "per_class_metrics", "row_hashes"]


def _safe(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def binary_metrics(is_attack: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, FPR, ROC-AUC and PR-AUC (attack = positive class)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(is_attack, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise InputError(f"labels and scores differ in length ({y.shape} vs {s.shape})")
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    n = max(len(y), 1)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = 0 < y.sum() < len(y)
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "roc_auc": _safe(roc_auc_score(y, s)) if both else None,
        "pr_auc": _safe(average_precision_score(y, s)) if both else None,
        "threshold": float(threshold),
        "binary_confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def per_class_metrics(true: np.ndarray, pred: np.ndarray) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Per-class recall/precision/support, the confusion matrix and macro-F1 over the true classes.

    For a binary model ``pred`` is ``benign``/``attack``; then per-class recall of each attack class is
    the detection rate (predicted anything but benign), precision is reported for benign only.
    """
    true = np.asarray(true).astype(str)
    pred = np.asarray(pred).astype(str)
    labels = sorted(set(true) | set(pred), key=lambda c: (c != BENIGN, c))
    index = {c: i for i, c in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (np.vectorize(index.get)(true), np.vectorize(index.get)(pred)), 1)
    binary_pred = set(pred) <= {BENIGN, "attack"} and not set(true) <= {BENIGN, "attack"}
    per_class: dict[str, Any] = {}
    f1s = []
    for c in sorted(set(true), key=lambda c: (c != BENIGN, c)):
        support = int((true == c).sum())
        if binary_pred and c != BENIGN:
            recall = float(((true == c) & (pred != BENIGN)).sum() / support)
            per_class[c] = {"recall": recall, "precision": None, "support": support}
            continue
        tp = int(((true == c) & (pred == c)).sum())
        npred = int((pred == c).sum())
        recall = tp / support if support else 0.0
        precision = tp / npred if npred else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[c] = {"recall": recall, "precision": precision, "support": support, "f1": f1}
    macro = float(np.mean(f1s)) if f1s and not binary_pred else float("nan")
    return per_class, {"labels": labels, "matrix": matrix.tolist()}, macro


def row_hashes(features: pd.DataFrame) -> np.ndarray:
    """One uint64 hash per row over the feature values (column-order independent)."""
    ordered = features.reindex(columns=sorted(map(str, features.columns)))
    return cast(np.ndarray, pd.util.hash_pandas_object(ordered, index=False).to_numpy())


def leakage_audit(
    train_features: pd.DataFrame | None,
    train_labels: np.ndarray | None,
    test_features: pd.DataFrame,
    test_labels: np.ndarray,
) -> dict[str, Any]:
    """Count test rows identical to training rows and duplicates whose labels contradict.

    ``contradictory_test`` counts test rows whose feature vector also occurs in the test set with
    another label; ``contradictory_cross`` counts test rows whose vector occurs in training with a
    different label (no model can get both right).
    """
    test_h = row_hashes(test_features)
    test_y = np.asarray(test_labels).astype(str)
    frame = pd.DataFrame({"h": test_h, "y": test_y})
    labels_per_hash = frame.groupby("h")["y"].nunique()
    out: dict[str, Any] = {
        "test_duplicate_rows": int(frame.duplicated("h").sum()),
        "contradictory_test": int(frame["h"].map(labels_per_hash).gt(1).sum()),
    }
    if train_features is None or train_labels is None:
        out.update(test_in_train=None, contradictory_cross=None)
        return out
    train_h = row_hashes(train_features.reindex(columns=test_features.columns))
    train_y = np.asarray(train_labels).astype(str)
    in_train = np.isin(test_h, train_h)
    pairs = pd.DataFrame({"h": train_h, "y": train_y}).drop_duplicates()
    seen = set(zip(pairs["h"].tolist(), pairs["y"].tolist(), strict=True))
    known = set(pairs["h"].tolist())
    cross = [h in known and (h, y) not in seen for h, y in zip(test_h.tolist(), test_y.tolist(), strict=True)]
    out.update(test_in_train=int(in_train.sum()), contradictory_cross=int(np.sum(cross)))
    return out


def evaluate_detector(detector: Any, table: Any, *, train: Any = None) -> dict[str, Any]:
    """Evaluate ``detector`` on a LabelledTable; ``train`` (a LabelledTable) enables the leakage audit.

    Returns accuracy, precision, recall, f1, macro_f1, roc_auc, pr_auc, fpr (attack = positive, at the
    detector's threshold), per_class {class: recall, precision, support}, confusion_matrix, n_train,
    n_test and leakage.
    """
    features = table.features
    labels = np.asarray(table.labels).astype(str)
    is_attack = np.asarray(table.is_attack, dtype=bool)
    if len(features) == 0:
        raise InputError("cannot evaluate on an empty table")
    scores = detector.score(features)
    result = binary_metrics(is_attack, scores, detector.threshold)
    pred_class = detector.predict_class(features)
    per_class, confusion, macro = per_class_metrics(labels, pred_class)
    if math.isnan(macro):
        # Binary model: macro-F1 over the two classes benign / attack.
        _, _, macro = per_class_metrics(np.where(is_attack, "attack", BENIGN), scores_to_names(scores, detector))
    result.update(
        macro_f1=_safe(macro),
        per_class=per_class,
        confusion_matrix=confusion,
        n_test=int(len(features)),
        n_train=None if train is None else int(len(train.features)),
        leakage=leakage_audit(
            None if train is None else train.features,
            None if train is None else np.asarray(train.labels).astype(str),
            features,
            labels,
        ),
    )
    return result


def scores_to_names(scores: np.ndarray, detector: Any) -> np.ndarray:
    """Binary class names at the detector's threshold."""
    return np.where(np.asarray(scores) >= detector.threshold, "attack", BENIGN)
