"""Supervised + anomaly ensemble: catch known attacks with a classifier and novel ones with a
benign-only anomaly model.

Each component score is first mapped through its own benign reference distribution (a monotone,
piecewise-linear empirical CDF fitted on benign rows held out from both components' training), so
"0.99" means "higher than 99 % of held-out benign rows" for either component. The ensemble score is
the maximum of the mapped scores (``combine="max"``) or their weighted mean (``combine="mean"``),
and the threshold is then calibrated on validation data like any other detector.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd

from trustmesh.detect._base import (
    BaseDetector,
    benign_holdout,
    detector_class,
    read_container,
    register,
)
from trustmesh.errors import InputError, ModelError

__all__ = ["EnsembleDetector"]

_REF_POINTS = 512


def _reference_knots(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a continuous, monotone ECDF over [0, 1] (ties broken proportionally)."""
    s = np.sort(np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0))
    n = s.size
    q = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
    # Thin to at most _REF_POINTS knots so the saved state stays small.
    if n > _REF_POINTS:
        pick = np.unique(np.linspace(0, n - 1, _REF_POINTS).round().astype(int))
        s, q = s[pick], q[pick]
    xs, idx = np.unique(s, return_index=True)
    last = np.r_[idx[1:] - 1, s.size - 1]
    ys = q[last]
    xs = np.r_[0.0, xs, 1.0] if xs[0] > 0.0 else np.r_[xs, 1.0]
    ys = np.r_[0.0, ys, 1.0] if xs.size == ys.size + 2 else np.r_[ys, 1.0]
    # A final knot at exactly 1.0 must not duplicate an existing one.
    keep = np.r_[np.diff(xs) > 0, True]
    keep[-1] = True
    if xs.size >= 2 and xs[-2] == 1.0:
        keep[-2] = False
    return xs[keep], np.maximum.accumulate(ys[keep])


@register
class EnsembleDetector(BaseDetector):
    """GBDT (or MLP) on labelled rows plus an autoencoder (or iforest) on benign rows."""

    name = "ensemble"
    supervised = True

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        supervised_kind: str = "gbdt",
        anomaly_kind: str = "autoencoder",
        combine: str = "max",
        anomaly_weight: float = 0.5,
        holdout_fraction: float = 0.15,
        supervised_params: dict[str, Any] | None = None,
        anomaly_params: dict[str, Any] | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=multiclass)
        if supervised_kind not in {"gbdt", "mlp"}:
            raise ValueError(f"supervised_kind must be 'gbdt' or 'mlp', got {supervised_kind!r}")
        if anomaly_kind not in {"autoencoder", "iforest"}:
            raise ValueError(f"anomaly_kind must be 'autoencoder' or 'iforest', got {anomaly_kind!r}")
        if combine not in {"max", "mean"}:
            raise ValueError(f"combine must be 'max' or 'mean', got {combine!r}")
        if not 0.0 <= anomaly_weight <= 1.0:
            raise ValueError(f"anomaly_weight must be in [0, 1], got {anomaly_weight}")
        if not 0.0 < holdout_fraction < 0.9:
            raise ValueError(f"holdout_fraction must be in (0, 0.9), got {holdout_fraction}")
        self.supervised_kind = supervised_kind
        self.anomaly_kind = anomaly_kind
        self.combine = combine
        self.anomaly_weight = float(anomaly_weight)
        self.holdout_fraction = float(holdout_fraction)
        self.supervised_params = dict(supervised_params or {})
        self.anomaly_params = dict(anomaly_params or {})
        self.sup: BaseDetector | None = None
        self.anom: BaseDetector | None = None
        self._knots: list[tuple[np.ndarray, np.ndarray]] = []

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            **super().get_params(),
            "supervised_kind": self.supervised_kind,
            "anomaly_kind": self.anomaly_kind,
            "combine": self.combine,
            "anomaly_weight": self.anomaly_weight,
            "holdout_fraction": self.holdout_fraction,
            "supervised_params": self.supervised_params,
            "anomaly_params": self.anomaly_params,
        }

    def _components(self) -> tuple[BaseDetector, BaseDetector]:
        sup = detector_class(self.supervised_kind)(seed=self.seed, multiclass=self.multiclass,
                                                   **self.supervised_params)
        anom = detector_class(self.anomaly_kind)(seed=self.seed, **self.anomaly_params)
        return sup, anom

    def fit(self, X: pd.DataFrame, y: np.ndarray | pd.Series | None = None) -> EnsembleDetector:
        """Fit both components (anomaly part on benign rows only) and the benign reference maps."""
        if not isinstance(X, pd.DataFrame) or len(X) == 0:
            raise InputError("X must be a non-empty pandas DataFrame")
        from trustmesh.detect._base import prepare_labels
        from trustmesh.flows._features import FeatureEncoder

        is_attack, _, classes = prepare_labels(y, len(X), multiclass=self.multiclass)
        if is_attack.all() or not is_attack.any():
            raise InputError("ensemble needs both benign and attack rows to fit")
        train_benign, hold = benign_holdout(is_attack, self.holdout_fraction, self.seed)
        if hold.size == 0:
            raise InputError("ensemble needs at least 20 benign rows (some are held out as reference)")
        train_rows = np.sort(np.r_[train_benign, np.flatnonzero(is_attack)])
        y_arr = np.asarray(y)
        sup, anom = self._components()
        sup.fit(X.iloc[train_rows], y_arr[train_rows])
        anom.fit(X.iloc[train_benign], None)
        self.sup, self.anom = sup, anom
        self.encoder = FeatureEncoder.fit(X)
        self._classes = sup.classes_ if self.multiclass else classes
        held = X.iloc[hold]
        self._knots = [_reference_knots(sup.score(held)), _reference_knots(anom.score(held))]
        return self

    def component_scores(self, matrix_frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return the two mapped component scores (supervised, anomaly)."""
        if self.sup is None or self.anom is None or not self._knots:
            raise ModelError("ensemble detector is not fitted; call fit() first")
        s: np.ndarray = np.interp(self.sup.score(matrix_frame), *self._knots[0])
        a: np.ndarray = np.interp(self.anom.score(matrix_frame), *self._knots[1])
        return s, a

    def _combine(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        if self.combine == "max":
            return cast(np.ndarray, np.maximum(s, a))
        return cast(np.ndarray, (1.0 - self.anomaly_weight) * s + self.anomaly_weight * a)

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Score an encoded matrix (columns in this ensemble's feature order)."""
        enc = self._require_fitted()
        frame = pd.DataFrame(matrix, columns=list(enc.columns))
        # Components re-encode; categorical codes are decoded back to their category strings.
        for col, vocab in enc.vocab.items():
            codes = frame[col].to_numpy()
            names = np.asarray(("",) + tuple(vocab), dtype=object)
            valid = np.isfinite(codes)
            decoded = np.full(codes.shape, None, dtype=object)
            decoded[valid] = names[codes[valid].astype(np.int64)]
            frame[col] = decoded
        return self._score_frame(frame)

    def score(self, X: pd.DataFrame, *, fill_missing: bool = False) -> np.ndarray:
        """Return float64 scores in [0, 1]."""
        enc = self._require_fitted()
        if not isinstance(X, pd.DataFrame):
            raise InputError(f"X must be a pandas DataFrame, got {type(X).__name__}")
        enc.transform(X.iloc[:0], fill_missing=fill_missing)  # same missing-column check as others
        if fill_missing:
            X = X.assign(**{c: np.nan for c in enc.missing(X)})
        return self._score_frame(X)

    def _score_frame(self, X: pd.DataFrame) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0, dtype=np.float64)
        s, a = self.component_scores(X)
        return cast(np.ndarray, np.clip(self._combine(s, a), 0.0, 1.0).astype(np.float64))

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Class probabilities of the supervised component (for multi-class names)."""
        if self.sup is None:
            raise ModelError("ensemble detector is not fitted; call fit() first")
        enc = self._require_fitted()
        sup_cols = [enc.columns.index(c) for c in self.sup.feature_names]
        return self.sup.predict_proba_matrix(matrix[:, sup_cols])

    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        import tempfile
        from pathlib import Path

        assert self.sup is not None and self.anom is not None
        blobs: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for tag, det in (("supervised", self.sup), ("anomaly", self.anom)):
                target = Path(tmp) / tag
                det.save(target)
                blobs[f"{tag}.zip"] = target.read_bytes()
        knots = [{"x": x.tolist(), "y": y.tolist()} for x, y in self._knots]
        return {"knots": knots}, blobs

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        import tempfile
        from pathlib import Path

        parts: dict[str, BaseDetector] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for tag, kind in (("supervised", self.supervised_kind), ("anomaly", self.anomaly_kind)):
                target = Path(tmp) / tag
                target.write_bytes(blobs[f"{tag}.zip"])
                meta, inner = read_container(target)
                if meta.get("kind") != kind:
                    raise ModelError(f"ensemble {tag} component is {meta.get('kind')!r}, expected {kind!r}")
                parts[tag] = BaseDetector._from_parts(meta, inner, f"ensemble {tag} component")
        self.sup, self.anom = parts["supervised"], parts["anomaly"]
        knots = state["knots"]
        if not isinstance(knots, list) or len(knots) != 2:
            raise ModelError("ensemble reference maps are malformed")
        self._knots = []
        for k in knots:
            x = np.asarray(k["x"], dtype=np.float64)
            y = np.asarray(k["y"], dtype=np.float64)
            if x.shape != y.shape or x.size < 2 or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ModelError("ensemble reference maps must be monotone knot lists")
            self._knots.append((x, y))

