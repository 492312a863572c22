"""Classification metrics for federated rounds: macro-F1, accuracy, per-class recall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["classification_metrics"]


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
