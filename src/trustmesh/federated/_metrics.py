"""Classification metrics for federated rounds: macro-F1, accuracy, per-class recall, rare-class recall."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["classification_metrics", "rare_class_recall"]


def classification_metrics(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, classes: Sequence[str]
) -> dict[str, Any]:
    """Return macro_f1 (over classes present in ``y_true``), accuracy and per-class recall."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    if len(t) == 0:
        raise ValueError("y_true must not be empty")
    recall: dict[str, float] = {}
    f1s = []
    for i, name in enumerate(classes):
        support = int(np.sum(t == i))
        if support == 0:
            continue
        tp = int(np.sum((t == i) & (p == i)))
        predicted = int(np.sum(p == i))
        rec = tp / support
        prec = tp / predicted if predicted else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        recall[name] = round(rec, 6)
    return {
        "macro_f1": round(float(np.mean(f1s)), 6),
        "accuracy": round(float(np.mean(t == p)), 6),
        "per_class_recall": recall,
    }


def rare_class_recall(
    metrics: Mapping[str, Any], y_train: npt.ArrayLike, classes: Sequence[str], *, k: int = 2
) -> dict[str, Any]:
    """Return the test recall of the ``k`` attack classes with the fewest training rows, and the worst class.

    Macro-F1 hides a class that is never found when the others are good; DP-SGD loses the small
    classes first (their clipped gradients are drowned by the noise), so a private run reports them
    beside macro-F1. ``metrics`` is :func:`classification_metrics`' result on the test split and
    ``y_train`` the training labels (indices into ``classes``; ``classes[0]`` is benign). Classes
    absent from the test split have no recall and are skipped.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    recall = metrics.get("per_class_recall")
    if not isinstance(recall, Mapping):
        raise ValueError("metrics has no per_class_recall (not a classifier's metrics)")
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=len(classes))
    attacks = sorted((int(counts[i]), name) for i, name in enumerate(classes) if i > 0 and name in recall)
    rare = {name: {"train_rows": n, "recall": float(recall[name])} for n, name in attacks[:k]}
    worst = min(recall.items(), key=lambda kv: (float(kv[1]), kv[0])) if recall else None
    return {"classes": rare,
            "worst_class": None if worst is None else {"class": worst[0], "recall": float(worst[1])}}
