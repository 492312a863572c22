"""Judge a freshly trained detector on its validation rows and say loudly when it is poor.

``trustmesh train`` runs :func:`validation_quality` after calibration. It compares the detector's
validation decisions (at its threshold, the same rule ``predict_class`` uses) with

* **chance**: a classifier guessing with the class priors has balanced accuracy ``1/k`` (k classes);
  a detector whose balanced accuracy is below ``1/k + 0.25 (1 - 1/k)`` has learnt next to nothing
  (random labels, a label column that is not the label, features that carry no signal);
* **a quick reference**: scikit-learn ``RandomForestClassifier(50 trees)`` with defaults, fitted on at
  most 20,000 of the same fitting rows, scored on the same validation rows at its own argmax; a
  macro-F1 more than 5 points below it means the detector is failing where a plain model does not;
* **coverage**: a class with at least 5 validation rows that is never predicted.

Each finding is one sentence in ``warnings``; the CLI prints them to stderr, puts them in its JSON
output and in the model manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trustmesh.detect._protocol import BENIGN

__all__ = ["macro_f1_score", "validation_quality"]

_REFERENCE_ROWS = 20_000
_REFERENCE_TREES = 50
_MARGIN_VS_REFERENCE = 0.05
_MIN_SUPPORT = 5


def macro_f1_score(true: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes present in ``true`` (a class never predicted counts 0)."""
    true = np.asarray(true).astype(str)
    pred = np.asarray(pred).astype(str)
    f1s = []
    for c in np.unique(true):
        tp = float(np.sum((true == c) & (pred == c)))
        denom = float(np.sum(true == c) + np.sum(pred == c))
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def _balanced_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[true == c] == c) for c in np.unique(true)]))


def validation_quality(
    detector: Any,
    fit_features: Any,
    fit_labels: np.ndarray,
    val_features: Any,
    val_labels: np.ndarray,
    *,
    seed: int = 0,
    reference: bool = True,
) -> dict[str, Any]:
    """Return validation macro-F1, balanced accuracy, the reference's macro-F1 and any warnings.

    ``*_labels`` are class names (multi-class models) or the attack/benign view (binary models);
    ``benign`` is the benign class.
    """
    multiclass = len(detector.classes_) > 2
    true = np.asarray(val_labels).astype(str)
    if not multiclass:
        true = np.where(true == BENIGN, BENIGN, "attack")
    pred = np.asarray(detector.predict_class(val_features)).astype(str)
    classes, support = np.unique(true, return_counts=True)
    k = len(classes)
    macro = macro_f1_score(true, pred)
    balanced = _balanced_accuracy(true, pred)
    chance = 1.0 / max(k, 1)
    doc: dict[str, Any] = {
        "macro_f1": macro,
        "balanced_accuracy": balanced,
        "chance_balanced_accuracy": chance,
        "classes": int(k),
        "never_predicted": [],
        "reference": None,
        "warnings": [],
    }
    warnings: list[str] = doc["warnings"]
    if k >= 2 and balanced < chance + 0.25 * (1.0 - chance):
        warnings.append(
            f"validation balanced accuracy {balanced:.3f} is close to chance ({chance:.3f} for {k} classes): "
            "the model has learnt little; check the label column and that the features carry signal"
        )
    never = [str(c) for c, n in zip(classes, support, strict=True) if n >= _MIN_SUPPORT and not np.any(pred == c)]
    doc["never_predicted"] = never
    if never:
        warnings.append(f"class(es) never predicted on validation: {', '.join(never[:10])}")
    if reference and k >= 2:
        doc["reference"] = _reference(detector, fit_features, fit_labels, val_features, true, multiclass, seed)
        ref = doc["reference"]["macro_f1"]
        if macro < ref - _MARGIN_VS_REFERENCE:
            warnings.append(
                f"validation macro-F1 {macro:.3f} is {100 * (ref - macro):.1f} points below a quick RandomForest "
                f"reference ({ref:.3f}); see calibration.rule in the manifest and docs/detectors.md"
            )
    return doc


def _reference(
    detector: Any, fit_features: Any, fit_labels: np.ndarray, val_features: Any, val_true: np.ndarray,
    multiclass: bool, seed: int,
) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier

    y = np.asarray(fit_labels).astype(str)
    if not multiclass:
        y = np.where(y == BENIGN, BENIGN, "attack")
    rng = np.random.default_rng(seed)
    rows = np.arange(len(y)) if len(y) <= _REFERENCE_ROWS else np.sort(rng.choice(len(y), _REFERENCE_ROWS, replace=False))
    X = detector.encode(fit_features.iloc[rows])
    rf = RandomForestClassifier(n_estimators=_REFERENCE_TREES, random_state=seed, n_jobs=2)
    rf.fit(X, y[rows])
    pred = rf.predict(detector.encode(val_features)).astype(str)
    return {"model": f"RandomForestClassifier({_REFERENCE_TREES} trees, <= {_REFERENCE_ROWS} rows)",
            "macro_f1": macro_f1_score(val_true, pred), "fit_rows": int(rows.size)}  # fmt: skip
