"""Gradient-boosted decision trees (LightGBM; Ke et al., NeurIPS 2017), binary or multi-class.

The score is P(attack): the binary model's probability, or ``1 - P(benign)`` for multi-class.

**Auto mode** (the default, ``n_estimators=None``) is what ``trustmesh train`` uses on tables it has
never seen (docs/detectors.md, "GBDT defaults"):

* classes are weighted by ``(n / (k * n_c)) ** 0.5`` (``class_weight="sqrt"``; ``"balanced"`` drops
  the square root, ``"none"`` weights every row 1), so a 1 % class still pulls on the splits;
* rows per leaf: ``min(min_child_samples, max(5, smallest class / 4))`` so a class of a dozen rows
  can own leaves (LightGBM's 20 forbids it);
* an L2 penalty on leaf values (``lambda_l2=1``) and a floor on the hessian mass per leaf keep
  multi-class Newton steps bounded; without them pure leaves get values of ``1/p`` and the softmax
  saturates to exact 0/1 (the "one-hot probabilities" divergence once measured on TON_IoT at
  learning rate 0.15), which then ties every benign score at 1.0 during calibration;
* 10 % of the fitting rows (stratified, seeded) are held out; boosting runs up to
  ``max_estimators`` rounds with LightGBM's ``early_stopping`` callback on the held-out (class-weighted)
  log-loss; if the best round comes too early (``< 16``: the step is too large for this table) the
  learning rate is divided by 3 and boosting restarts; if it is still improving at ``max_estimators``
  the learning rate is multiplied by 3 (at most 1); at most two restarts, one direction, and the try
  with the lowest hold-out loss wins (a larger rate only with >= 1,000 hold-out rows and a >= 5 %
  lower loss);
* the model size is the **smallest** round count whose held-out macro-F1 is within ``size_tolerance``
  of the best one seen up to the early-stopping point (fewer trees = faster scoring), but never below
  ``min(best round, min_estimators)`` (32: the size whose scoring speed was measured, so a noisy small
  hold-out cannot shrink a model below it); then the model is refitted on all fitting rows with that
  many rounds.

Fixed mode (``n_estimators=N``) trains exactly N rounds with no hold-out (the recipe of the default
pcap model and of models saved before auto mode existed).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from trustmesh.detect._base import BaseDetector, register
from trustmesh.errors import MissingDependencyError, ModelError

__all__ = ["GBDTDetector", "class_weights"]

log = logging.getLogger(__name__)

_CLASS_WEIGHTS = ("none", "sqrt", "balanced")
_MIN_BEST_ROUND = 16  # an earlier best round means the learning rate is too large for the table
_LR_RETRIES = 2
_MIN_HOLDOUT_FOR_FASTER = 1000  # hold-out rows needed before a larger learning rate may replace the default
_FASTER_GAIN = 0.05  # ... and it must lower the hold-out loss by at least this share
_MIN_LEAF_FLOOR = 5  # smallest rows-per-leaf auto mode goes down to for tiny classes
_MAX_CATEGORIES = 1024  # text columns with more distinct values are split as ordinal codes, not categories


def _lgb() -> Any:
    # LightGBM's OpenMP threads spin while they wait for work by default. On a shared, oversubscribed
    # machine that made a 32-round fit on 2,000 rows take 56 s with 2 threads instead of 2-4 s
    # (measured here, load average 9 on 2 cores). libgomp reads the policy once, when LightGBM loads it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import lightgbm
    except ImportError as exc:  # pragma: no cover - lightgbm is a core dependency
        raise MissingDependencyError("lightgbm", "ml") from exc
    return lightgbm


def class_weights(class_index: np.ndarray, n_classes: int, mode: str) -> np.ndarray:
    """Return one weight per row: ``(n / (k * n_c)) ** p`` with p = 0 (none), 0.5 (sqrt) or 1 (balanced).

    ``k`` counts the classes present; weights are normalised to mean 1 so learning rates keep their
    meaning.
    """
    if mode not in _CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {', '.join(_CLASS_WEIGHTS)}, got {mode!r}")
    idx = np.asarray(class_index, dtype=np.int64)
    if mode == "none" or idx.size == 0:
        return np.ones(idx.size, dtype=np.float64)
    counts = np.bincount(idx, minlength=n_classes).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(n_classes, dtype=np.float64)
    per_class[present] = idx.size / (present.sum() * counts[present])
    if mode == "sqrt":
        per_class = np.sqrt(per_class)
    w = per_class[idx]
    return np.asarray(w / w.mean(), dtype=np.float64)


def _stratified_holdout(label: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions into (fit, hold-out); each class with >= 2 rows gives at least one hold-out row."""
    rng = np.random.default_rng(seed)
    fit, hold = [], []
    for c in np.unique(label):
        rows = rng.permutation(np.flatnonzero(label == c))
        n_hold = 0 if rows.size < 2 else max(1, int(round(fraction * rows.size)))
        hold.append(rows[:n_hold])
        fit.append(rows[n_hold:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(hold))


def _macro_f1(label: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes present in ``label`` (vectorised; used once per boosting round)."""
    k = max(n_classes, 2)
    tp = np.bincount(label[label == pred], minlength=k).astype(np.float64)
    support = np.bincount(label, minlength=k).astype(np.float64)
    predicted = np.bincount(pred, minlength=k).astype(np.float64)
    present = support > 0
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean())


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
        n_estimators: int | None = None,
        max_estimators: int = 300,
        min_estimators: int = 32,
        num_leaves: int = 31,
        learning_rate: float = 0.1,
        min_child_samples: int = 20,
        feature_fraction: float = 0.9,
        lambda_l2: float = 1.0,
        class_weight: str = "sqrt",
        validation_fraction: float = 0.1,
        patience: int = 20,
        size_tolerance: float = 0.002,
        num_threads: int = 2,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=multiclass)
        if n_estimators is not None and n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1 (or None for early stopping), got {n_estimators}")
        if max_estimators < 1:
            raise ValueError(f"max_estimators must be >= 1, got {max_estimators}")
        if min_estimators < 1:
            raise ValueError(f"min_estimators must be >= 1, got {min_estimators}")
        if num_leaves < 2:
            raise ValueError(f"num_leaves must be >= 2, got {num_leaves}")
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate}")
        if not 0.0 < feature_fraction <= 1.0:
            raise ValueError(f"feature_fraction must be in (0, 1], got {feature_fraction}")
        if lambda_l2 < 0.0:
            raise ValueError(f"lambda_l2 must be >= 0, got {lambda_l2}")
        if class_weight not in _CLASS_WEIGHTS:
            raise ValueError(f"class_weight must be one of {', '.join(_CLASS_WEIGHTS)}, got {class_weight!r}")
        if not 0.0 < validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in (0, 0.5), got {validation_fraction}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not 0.0 <= size_tolerance < 1.0:
            raise ValueError(f"size_tolerance must be in [0, 1), got {size_tolerance}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.n_estimators = None if n_estimators is None else int(n_estimators)
        self.max_estimators = int(max_estimators)
        self.min_estimators = int(min_estimators)
        self.num_leaves = int(num_leaves)
        self.learning_rate = float(learning_rate)
        self.min_child_samples = int(min_child_samples)
        self.feature_fraction = float(feature_fraction)
        self.lambda_l2 = float(lambda_l2)
        self.class_weight = class_weight
        self.validation_fraction = float(validation_fraction)
        self.patience = int(patience)
        self.size_tolerance = float(size_tolerance)
        self.num_threads = int(num_threads)
        self.booster: Any = None
        self.fit_report: dict[str, Any] = {}

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            **super().get_params(),
            "n_estimators": self.n_estimators,
            "max_estimators": self.max_estimators,
            "min_estimators": self.min_estimators,
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "class_weight": self.class_weight,
            "validation_fraction": self.validation_fraction,
            "patience": self.patience,
            "size_tolerance": self.size_tolerance,
            "num_threads": self.num_threads,
        }

    @property
    def trees(self) -> int:
        """Boosting rounds of the fitted model (one tree per class per round for multi-class)."""
        if self.booster is None:
            raise ModelError("gbdt detector is not fitted; call fit() first")
        return int(self.booster.current_iteration())

    def _lgb_params(self, n_classes: int, learning_rate: float, min_child: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "learning_rate": learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples if min_child is None else min_child,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        if self.n_estimators is None:  # auto mode: bounded leaf values (see module docstring)
            params.update(lambda_l2=self.lambda_l2, min_sum_hessian_in_leaf=1e-2, max_cat_to_onehot=8,
                          cat_smooth=10.0, min_data_per_group=50)  # fmt: skip
        if n_classes > 2:
            params.update(objective="multiclass", num_class=n_classes)
        else:
            params.update(objective="binary")
        return params

    def _categorical(self) -> list[int]:
        assert self.encoder is not None
        return [
            i for i, c in enumerate(self.encoder.columns)
            if c in self.encoder.vocab and (self.n_estimators is not None or len(self.encoder.vocab[c]) <= _MAX_CATEGORIES)
        ]  # fmt: skip

    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        lgb = _lgb()
        n_classes = len(self._classes)
        label = class_index if n_classes > 2 else is_attack.astype(np.int64)
        categorical = self._categorical() or "auto"
        if self.n_estimators is not None:
            dataset = lgb.Dataset(X, label=label, categorical_feature=categorical, free_raw_data=True,
                                  params={"verbosity": -1})  # fmt: skip
            self.booster = lgb.train(self._lgb_params(n_classes, self.learning_rate), dataset,
                                     num_boost_round=self.n_estimators)  # fmt: skip
            self.fit_report = {"mode": "fixed", "rounds": self.n_estimators, "learning_rate": self.learning_rate}
            return
        weights = class_weights(label, max(n_classes, 2), self.class_weight)
        # A leaf needs min_child_samples rows: with LightGBM's 20, a class of 9 rows can never own a leaf.
        smallest = int(np.bincount(label)[np.bincount(label) > 0].min())
        min_child = min(self.min_child_samples, max(_MIN_LEAF_FLOOR, smallest // 4))
        fit_rows, hold_rows = _stratified_holdout(label, self.validation_fraction, self.seed)
        if hold_rows.size < 20 or np.unique(label[fit_rows]).size < 2:
            # Too little data to hold any out: a fixed, conservative size.
            rounds, lr, curve = min(100, self.max_estimators), self.learning_rate, None
            report: dict[str, Any] = {"mode": "auto", "early_stopping": False, "reason": "fewer than 200 rows"}
        else:
            rounds, lr, curve, report = self._select_size(X, label, weights, fit_rows, hold_rows, categorical,
                                                          min_child)
        dataset = lgb.Dataset(X, label=label, weight=weights, categorical_feature=categorical,
                              free_raw_data=True, params={"verbosity": -1})  # fmt: skip
        self.booster = lgb.train(self._lgb_params(n_classes, lr, min_child), dataset, num_boost_round=rounds)
        self.fit_report = {**report, "rounds": rounds, "learning_rate": lr, "class_weight": self.class_weight,
                           "min_child_samples": min_child}
        if curve is not None:
            self.fit_report["holdout_macro_f1"] = round(curve, 6)
        log.info("gbdt: %d rounds at learning rate %g (%s)", rounds, lr, report)

    def _select_size(
        self, X: np.ndarray, label: np.ndarray, weights: np.ndarray, fit_rows: np.ndarray, hold_rows: np.ndarray,
        categorical: list[int] | str, min_child: int,
    ) -> tuple[int, float, float, dict[str, Any]]:
        """Early stopping on the hold-out; return (rounds, learning rate, hold-out macro-F1, report)."""
        lgb = _lgb()
        n_classes = len(self._classes)
        k = max(n_classes, 2)
        hold_label = label[hold_rows]

        def macro_f1(preds: np.ndarray, _data: Any) -> tuple[str, float, bool]:
            p = np.asarray(preds)
            pred = (p > 0.5).astype(np.int64) if p.ndim == 1 else np.argmax(p, axis=1)
            return "macro_f1", _macro_f1(hold_label, pred, k), True

        lr = self.learning_rate
        tries: list[dict[str, Any]] = []
        results: list[tuple[float, float, int, np.ndarray]] = []  # (hold-out loss, lr, best round, macro-F1 curve)
        direction = 0
        for attempt in range(_LR_RETRIES + 1):
            train_set = lgb.Dataset(X[fit_rows], label=label[fit_rows], weight=weights[fit_rows],
                                    categorical_feature=categorical, free_raw_data=True,
                                    params={"verbosity": -1})  # fmt: skip
            hold_set = lgb.Dataset(X[hold_rows], label=hold_label, weight=weights[hold_rows],
                                   reference=train_set, params={"verbosity": -1})  # fmt: skip
            record: dict[str, Any] = {}
            booster = lgb.train(
                self._lgb_params(n_classes, lr, min_child), train_set, num_boost_round=self.max_estimators,
                valid_sets=[hold_set], valid_names=["holdout"], feval=macro_f1,
                callbacks=[lgb.early_stopping(self.patience, first_metric_only=True, verbose=False),
                           lgb.record_evaluation(record)],
            )  # fmt: skip
            best = int(booster.best_iteration) or booster.current_iteration()
            loss_name = next(m for m in record["holdout"] if m != "macro_f1")
            loss = float(record["holdout"][loss_name][best - 1])
            tries.append({"learning_rate": lr, "best_round": best, "holdout_loss": round(loss, 6)})
            results.append((loss, lr, best, np.asarray(record["holdout"]["macro_f1"][:best], dtype=np.float64)))
            # Too early: the step is too large. Still improving at the cap: too small (or the table needs
            # memorising, as TON_IoT's Modbus registers do). Move once per direction, never back.
            if best < _MIN_BEST_ROUND and self.max_estimators >= _MIN_BEST_ROUND and direction <= 0:
                direction, lr = -1, lr / 3.0
            elif best >= self.max_estimators and direction >= 0 and lr < 1.0:
                direction, lr = 1, min(1.0, lr * 3.0)
            else:
                break
        if direction > 0 and (hold_rows.size < _MIN_HOLDOUT_FOR_FASTER or
                              min(r[0] for r in results[1:]) > (1.0 - _FASTER_GAIN) * results[0][0]):
            # A larger step must win clearly on enough rows: on a 192-row hold-out a lower loss at
            # learning rate 0.9 was noise and cost 17 points of test macro-F1 (cic-shared table).
            results = results[:1]
        _, lr, best, curve = min(results, key=lambda r: r[0])
        target = float(curve.max()) - self.size_tolerance
        smallest = int(np.flatnonzero(curve >= target)[0]) + 1
        rounds = max(smallest, min(best, self.min_estimators))
        report = {"mode": "auto", "early_stopping": True, "tries": tries, "holdout_rows": int(hold_rows.size),
                  "best_round": best, "hit_max": best >= self.max_estimators}  # fmt: skip
        return rounds, lr, float(curve[rounds - 1]), report

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
        return {"fit": self.fit_report}, {"booster.txt": text.encode("utf-8")}

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
        fit = state.get("fit", {})
        self.fit_report = dict(fit) if isinstance(fit, dict) else {}
