"""Conformance checks every detector must pass (in the spirit of river's ``checks`` module).

``check_detector(factory, X, y)`` fits two detectors from ``factory`` (same seed) and raises
``AssertionError`` naming the first property that fails:

* same seed -> same scores;
* save/load round trip -> identical scores, threshold and classes;
* the input DataFrame is not mutated by fit, score or predict;
* reordered columns -> same scores; extra columns are ignored;
* a missing column is refused with an InputError that names it;
* scores are float64 in [0, 1]; ``predict`` equals ``score >= threshold``;
* calibrate returns a threshold in [0, 1] that flags at most the target share of benign rows
  (up to ties).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from trustmesh.detect._base import BaseDetector
from trustmesh.errors import InputError

__all__ = ["CHECKS", "check_detector"]


def _require(condition: object, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` holds.

    An explicit raise, not ``assert``: ``python -O`` strips assert statements, and a conformance
    check that vanishes under -O would pass every detector.
    """
    if not condition:
        raise AssertionError(message)


def _fit(factory: Callable[[], BaseDetector], X: pd.DataFrame, y: np.ndarray) -> BaseDetector:
    det = factory()
    det.fit(X, None if not det.supervised else y)
    return det


def check_deterministic(factory: Callable[[], BaseDetector], X: pd.DataFrame, y: np.ndarray) -> None:
    """Same seed and data give identical scores."""
    a = _fit(factory, X, y).score(X)
    b = _fit(factory, X, y).score(X)
    _require(np.array_equal(a, b), "same seed gave different scores")


def check_roundtrip(det: BaseDetector, X: pd.DataFrame) -> None:
    """Save then load gives identical scores, threshold and classes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tm"
        det.save(path)
        again = type(det).load(path)
        also = BaseDetector.load(path)
    _require(np.array_equal(det.score(X), again.score(X)), "scores changed after save/load")
    _require(np.array_equal(det.score(X), also.score(X)), "BaseDetector.load gave different scores")
    _require(again.threshold == det.threshold, "threshold changed after save/load")
    _require(again.classes_ == det.classes_, "classes changed after save/load")
    _require(type(also) is type(det), "BaseDetector.load returned the wrong class")


def check_columns(det: BaseDetector, X: pd.DataFrame) -> None:
    """Column order does not matter, extra columns are ignored, a missing one is named."""
    base = det.score(X)
    reordered = X[list(reversed(X.columns))]
    _require(np.array_equal(base, det.score(reordered)), "reordered columns changed the scores")
    extra = X.assign(zz_extra_column=np.arange(len(X)), aa_extra_text="x")
    _require(np.array_equal(base, det.score(extra)), "extra columns changed the scores")
    victim = str(X.columns[len(X.columns) // 2])
    try:
        det.score(X.drop(columns=[victim]))
    except InputError as exc:
        _require(victim in str(exc), f"InputError for a missing column does not name it: {exc}")
    else:
        raise AssertionError("a missing feature column was not refused")


def check_scores(det: BaseDetector, X: pd.DataFrame, y: np.ndarray) -> None:
    """Scores are float64 in [0, 1]; predict agrees with the threshold; calibrate honours the FPR."""
    s = det.score(X)
    _require(s.dtype == np.float64 and s.shape == (len(X),), "scores must be float64, one per row")
    _require(np.all((s >= 0.0) & (s <= 1.0)), "scores outside [0, 1]")
    _require(np.array_equal(det.predict(X), s >= det.threshold), "predict disagrees with score >= threshold")
    names = det.predict_class(X)
    _require(np.array_equal(names != "benign", s >= det.threshold), "predict_class disagrees with predict")
    is_attack = np.asarray(y) != "benign" if np.asarray(y).dtype.kind in "OUS" else np.asarray(y, dtype=bool)
    t = det.calibrate(X, is_attack, target_fpr=0.05)
    _require(0.0 <= t <= 1.0 and det.threshold == t, "calibrate must set and return a threshold in [0, 1]")
    benign = s[~is_attack]
    ties = np.sum(benign == 1.0)
    _require(np.mean(benign >= t) <= 0.05 + ties / max(benign.size, 1) + 1e-12, "calibrated FPR above target")


def check_not_mutated(factory: Callable[[], BaseDetector], X: pd.DataFrame, y: np.ndarray) -> None:
    """fit/score/predict leave the caller's DataFrame unchanged."""
    copy = X.copy(deep=True)
    det = _fit(factory, X, y)
    det.score(X)
    det.predict(X)
    pd.testing.assert_frame_equal(X, copy)


CHECKS = (check_deterministic, check_not_mutated, check_roundtrip, check_columns, check_scores)


def check_detector(factory: Callable[[], BaseDetector], X: pd.DataFrame, y: np.ndarray) -> None:
    """Run every conformance check on detectors built by ``factory``; raise AssertionError on failure."""
    check_deterministic(factory, X, y)
    check_not_mutated(factory, X, y)
    det = _fit(factory, X, y)
    check_roundtrip(det, X)
    check_columns(det, X)
    check_scores(det, X, y)
    check_roundtrip(det, X)  # again, now with a calibrated threshold
