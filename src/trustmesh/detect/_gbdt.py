"""Gradient-boosted decision trees (LightGBM; Ke et al., NeurIPS 2017), binary or multi-class.

The score is P(attack): the binary model's probability, or ``1 - P(benign)`` for multi-class.
Defaults (32 trees of at most 31 leaves, learning rate 0.1) were chosen by measurement so that batch scoring stays
above 1M flows/s on 2 cores while accuracy holds (docs/benchmarks.md, ``## Detection``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trustmesh.detect._base import BaseDetector, register
from trustmesh.errors import MissingDependencyError, ModelError

__all__ = ["GBDTDetector"]


def _lgb() -> Any:
    try:
        import lightgbm
    except ImportError as exc:  # pragma: no cover - lightgbm is a core dependency
        raise MissingDependencyError("lightgbm", "ml") from exc
    return lightgbm


@register
class GBDTDetector(BaseDetector):
    """LightGBM classifier; ``score = P(attack)``; multi-class with ``multiclass=True``."""

    name = "gbdt"
    supervised = True

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        n_estimators: int = 32,
        num_leaves: int = 31,
        learning_rate: float = 0.1,
        min_child_samples: int = 20,
        feature_fraction: float = 0.9,
        num_threads: int = 2,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=multiclass)
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {n_estimators}")
        if num_leaves < 2:
            raise ValueError(f"num_leaves must be >= 2, got {num_leaves}")
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate}")
        if not 0.0 < feature_fraction <= 1.0:
            raise ValueError(f"feature_fraction must be in (0, 1], got {feature_fraction}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.n_estimators = int(n_estimators)
        self.num_leaves = int(num_leaves)
        self.learning_rate = float(learning_rate)
        self.min_child_samples = int(min_child_samples)
        self.feature_fraction = float(feature_fraction)
        self.num_threads = int(num_threads)
        self.booster: Any = None

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            **super().get_params(),
            "n_estimators": self.n_estimators,
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "num_threads": self.num_threads,
        }

    def _lgb_params(self, n_classes: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        if n_classes > 2:
            params.update(objective="multiclass", num_class=n_classes)
        else:
            params.update(objective="binary")
        return params

    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        lgb = _lgb()
        assert self.encoder is not None
        n_classes = len(self._classes)
        categorical = [i for i, c in enumerate(self.encoder.columns) if c in self.encoder.vocab]
        label = class_index if n_classes > 2 else is_attack.astype(np.int64)
        dataset = lgb.Dataset(
            X, label=label, categorical_feature=categorical or "auto", free_raw_data=True,
            params={"verbosity": -1},
        )
        self.booster = lgb.train(self._lgb_params(n_classes), dataset, num_boost_round=self.n_estimators)

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Class probabilities in ``classes_`` order."""
        if self.booster is None:
            raise ModelError("gbdt detector is not fitted; call fit() first")
        raw = np.asarray(self.booster.predict(matrix, num_threads=self.num_threads), dtype=np.float64)
        if raw.ndim == 1:
            return np.column_stack([1.0 - raw, raw])
        return raw

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        if self.booster is None:
            raise ModelError("gbdt detector is not fitted; call fit() first")
        raw = np.asarray(self.booster.predict(X, num_threads=self.num_threads), dtype=np.float64)
        if raw.ndim == 1:
            return raw
        return 1.0 - raw[:, 0]

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature (for explanations in reports)."""
        if self.booster is None:
            raise ModelError("gbdt detector is not fitted; call fit() first")
        gains = self.booster.feature_importance(importance_type="gain")
        return {c: float(g) for c, g in zip(self.feature_names, gains, strict=True)}

    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        text = self.booster.model_to_string(num_iteration=-1)
        return {}, {"booster.txt": text.encode("utf-8")}

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        lgb = _lgb()
        try:
            text = blobs["booster.txt"].decode("utf-8")
            self.booster = lgb.Booster(model_str=text)
        except KeyError:
            raise ModelError("gbdt model file lacks booster.txt") from None
        except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
            raise ModelError(f"gbdt booster is not a valid LightGBM model ({exc})") from None
        expected = 1 if len(self._classes) <= 2 else len(self._classes)
        if self.booster.num_model_per_iteration() != expected:
            raise ModelError("gbdt booster does not match the number of classes in the model file")
        if self.booster.num_feature() != len(self.feature_names):
            raise ModelError("gbdt booster does not match the feature list in the model file")
