"""Shared machinery of every detector: feature encoding, labels, thresholds and the artifact container.

A saved detector is one zip file holding ``detector.json`` (kind, hyper-parameters, seed, threshold,
classes, the feature encoder and model-specific JSON state) plus model-specific binary members (a
LightGBM model string, a torch ``state_dict`` read back with ``weights_only=True``, numpy ``.npy``
arrays read with ``allow_pickle=False``). Nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
import pandas as pd

from trustmesh.detect._protocol import BENIGN
from trustmesh.errors import InputError, ModelError
from trustmesh.flows._features import FeatureEncoder

__all__ = [
    "ATTACK",
    "BaseDetector",
    "Preprocessor",
    "calibrate_threshold",
    "detector_class",
    "guarded_threshold",
    "prepare_labels",
    "read_container",
    "register",
    "write_container",
]

log = logging.getLogger(__name__)

ATTACK = "attack"
_FORMAT = "trustmesh.detector/1"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same model -> same bytes
_MAX_MEMBER = 512 * 1024 * 1024

_REGISTRY: dict[str, type[BaseDetector]] = {}


def register(cls: type[BaseDetector]) -> type[BaseDetector]:
    """Class decorator: make a detector loadable by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def detector_class(kind: str) -> type[BaseDetector]:
    """Return the detector class registered under ``kind``."""
    # Import every implementation so the registry is complete whatever was imported first.
    from trustmesh.detect import _autoencoder, _baseline, _ensemble, _forest, _gbdt, _iforest, _mlp, snn  # noqa: F401

    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ModelError(f"unknown detector kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def calibrate_threshold(benign_scores: np.ndarray, target_fpr: float) -> float:
    """Return the lowest threshold flagging at most ``target_fpr`` of ``benign_scores``.

    A row is flagged when ``score >= threshold``; the threshold is placed just above the
    ``floor(target_fpr * n) + 1``-th highest benign score. Ties at 1.0 cannot be separated, so the
    threshold is capped at 1.0 (the realised rate can then exceed the target; callers report it).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    scores = np.asarray(benign_scores, dtype=np.float64)
    if scores.size == 0:
        raise InputError("cannot calibrate a threshold: the validation data has no benign rows")
    ordered = np.sort(scores)[::-1]
    k = int(np.floor(target_fpr * ordered.size))
    return float(min(np.nextafter(ordered[k], np.inf), 1.0))


def guarded_threshold(
    scores: np.ndarray, labels: np.ndarray, best_attack: np.ndarray, fpr_threshold: float, max_f1_loss: float
) -> tuple[float, dict[str, Any]]:
    """Return the threshold the multi-class (and binary) decision rule uses, and a record of why.

    The decision rule: a row is an attack iff ``score >= threshold``, and its class is then its most
    probable attack class (``best_attack``); below the threshold it is benign. Macro-F1 (over the
    classes present in ``labels``) is computed for every distinct cut of the validation scores. The
    FPR-calibrated threshold is kept when its macro-F1 is within ``max_f1_loss`` of the best cut;
    otherwise the threshold becomes the **largest** cut within ``max_f1_loss`` of the best (the fewest
    alerts that still decide classes well). So a threshold that ties at 1.0, or sits above most
    attacks, can never swallow them: it costs at most ``max_f1_loss`` of validation macro-F1.
    """
    if max_f1_loss < 0:
        raise ValueError(f"max_f1_loss must be >= 0, got {max_f1_loss}")
    s = np.asarray(scores, dtype=np.float64)
    true = np.asarray(labels).astype(str)
    attack = np.asarray(best_attack).astype(str)
    n = s.size
    if n == 0:
        raise InputError("cannot calibrate a threshold on an empty validation set")
    names = sorted(set(true) | set(attack) | {BENIGN}, key=lambda c: (c != BENIGN, c))
    index = {c: i for i, c in enumerate(names)}
    t_idx = np.fromiter((index[c] for c in true), dtype=np.int64, count=n)
    a_idx = np.fromiter((index[c] for c in attack), dtype=np.int64, count=n)
    order = np.argsort(-s, kind="stable")
    s_sorted, t_sorted, a_sorted = s[order], t_idx[order], a_idx[order]
    k = len(names)
    # Flagging the top i rows: cumulative per-class predicted counts and true positives.
    pred_hits = np.zeros((n + 1, k), dtype=np.int64)
    np.add.at(pred_hits[1:], (np.arange(n), a_sorted), 1)
    pred_hits = np.cumsum(pred_hits, axis=0)
    tp_hits = np.zeros((n + 1, k), dtype=np.int64)
    hit = a_sorted == t_sorted
    np.add.at(tp_hits[1:], (np.flatnonzero(hit), a_sorted[hit]), 1)
    tp_hits = np.cumsum(tp_hits, axis=0)
    support = np.bincount(t_idx, minlength=k).astype(np.float64)
    benign_top = np.concatenate([[0], np.cumsum(t_sorted == 0)])
    cut = np.arange(n + 1)
    tp = tp_hits.astype(np.float64)
    pred = pred_hits.astype(np.float64)
    tp[:, 0] = support[0] - benign_top  # unflagged benign rows are true benign predictions
    pred[:, 0] = n - cut
    present = support > 0
    denom = support[present] + pred[:, present]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp[:, present] / denom, 0.0)
    macro = f1.mean(axis=1)
    # Valid cuts: between distinct scores (ties flag together); cut i flags rows with score >= s_sorted[i-1].
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s_sorted[1:] < s_sorted[:-1]
    thresholds = np.empty(n + 1, dtype=np.float64)
    thresholds[0] = min(float(np.nextafter(s_sorted[0], np.inf)), 1.0)
    thresholds[1:] = s_sorted
    if s_sorted[0] >= 1.0:
        valid[0] = False  # "flag nothing" cannot be expressed by a threshold in [0, 1]
    best = float(macro[valid].max())
    at_fpr = int(np.sum(s >= fpr_threshold))
    fpr_macro = float(macro[at_fpr])
    record: dict[str, Any] = {"fpr_macro_f1": fpr_macro, "best_macro_f1": best, "max_f1_loss": max_f1_loss}
    if fpr_macro >= best - max_f1_loss:
        record["validation_macro_f1"] = fpr_macro
        return float(fpr_threshold), record
    ok = np.flatnonzero(valid & (macro >= best - max_f1_loss))
    i = int(ok[0])  # fewest flagged rows = largest threshold
    record["validation_macro_f1"] = float(macro[i])
    return float(thresholds[i]), record


def prepare_labels(
    y: np.ndarray | pd.Series | None, n_rows: int, *, multiclass: bool
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Normalise labels to ``(is_attack, class_index, classes)``.

    ``y`` may be None (every row benign), booleans / 0-1 integers (1 = attack), or class names where
    ``"benign"`` is the benign class. Binary models get ``classes = ("benign", "attack")``.
    """
    if y is None:
        is_attack = np.zeros(n_rows, dtype=bool)
        return is_attack, is_attack.astype(np.int64), (BENIGN, ATTACK)
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise InputError(f"labels must be one value per row ({n_rows}), got shape {arr.shape}")
    if arr.dtype == bool or (np.issubdtype(arr.dtype, np.integer) and set(np.unique(arr)) <= {0, 1}):
        is_attack = arr.astype(bool)
        return is_attack, is_attack.astype(np.int64), (BENIGN, ATTACK)
    if pd.isna(pd.Series(arr)).any():
        raise InputError("labels contain missing values")
    names = pd.Series(arr).astype(str).to_numpy()
    is_attack = names != BENIGN
    if not multiclass:
        return is_attack, is_attack.astype(np.int64), (BENIGN, ATTACK)
    uniques = sorted(set(names) - {BENIGN})
    classes = (BENIGN, *uniques)
    index = pd.Index(classes).get_indexer(names).astype(np.int64)
    return is_attack, index, classes


def nan_median(X: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN; all-NaN (or empty) columns give 0."""
    if X.shape[0] == 0:
        return np.zeros(X.shape[1], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are expected (absent fields)
        med = np.nanmedian(X, axis=0)
    return np.where(np.isfinite(med), med, 0.0).astype(np.float32)


def _signed_log(x: np.ndarray) -> np.ndarray:
    # Byte and packet counts span many orders of magnitude; a signed log keeps neural nets stable.
    return cast(np.ndarray, np.sign(x) * np.log1p(np.abs(x)))


class Preprocessor:
    """Fill NaN with training medians, apply a signed log, then scale (min-max or z-score)."""

    def __init__(self, fill: np.ndarray, lo: np.ndarray, scale: np.ndarray) -> None:
        self.fill = np.asarray(fill, dtype=np.float32)
        self.lo = np.asarray(lo, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)

    @classmethod
    def fit(cls, X: np.ndarray, *, mode: str = "zscore") -> Preprocessor:
        """Learn fill values and scaling from an encoded training matrix."""
        if mode not in {"zscore", "minmax"}:
            raise ValueError(f"mode must be 'zscore' or 'minmax', got {mode!r}")
        fill = nan_median(X)
        Z = _signed_log(np.where(np.isnan(X), fill, X))
        if mode == "zscore":
            lo = Z.mean(axis=0)
            scale = Z.std(axis=0)
        else:
            lo = Z.min(axis=0)
            scale = Z.max(axis=0) - lo
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(fill, lo, scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the learned transform (float32)."""
        Z = _signed_log(np.where(np.isnan(X), self.fill, X))
        return ((Z - self.lo) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready state."""
        return {"fill": self.fill.tolist(), "lo": self.lo.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], n_features: int) -> Preprocessor:
        """Rebuild from :meth:`to_dict`, checking lengths."""
        try:
            arrays = [np.asarray(doc[k], dtype=np.float32) for k in ("fill", "lo", "scale")]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"preprocessor state is malformed: {exc}") from exc
        if any(a.shape != (n_features,) for a in arrays):
            raise ModelError("preprocessor state does not match the number of features")
        return cls(*arrays)


def write_container(path: Path | str, meta: Mapping[str, Any], blobs: Mapping[str, bytes]) -> None:
    """Write ``detector.json`` and the binary members into one zip file (deterministic bytes)."""
    target = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        members = {"detector.json": json.dumps(meta, sort_keys=True).encode("utf-8"), **blobs}
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    target.write_bytes(buf.getvalue())


def read_container(path: Path | str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read a detector zip, checking it is well formed; return ``(meta, blobs)``."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except IsADirectoryError:
        raise InputError(f"{source}: is a directory, not a model file") from None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            blobs: dict[str, bytes] = {}
            for info in zf.infolist():
                if info.file_size > _MAX_MEMBER or "/" in info.filename or info.filename.startswith("."):
                    raise ModelError(f"{source}: unexpected member {info.filename!r} in model file")
                blobs[info.filename] = zf.read(info)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ModelError(f"{source}: not a trustmesh model file ({exc})") from None
    try:
        meta = json.loads(blobs.pop("detector.json").decode("utf-8"))
    except KeyError:
        raise ModelError(f"{source}: model file has no detector.json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{source}: detector.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ModelError(f"{source}: not a {_FORMAT} model file")
    return meta, blobs


def npy_bytes(array: np.ndarray) -> bytes:
    """Serialise an array to ``.npy`` bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes, name: str) -> np.ndarray:
    """Read ``.npy`` bytes with pickle disabled."""
    try:
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise ModelError(f"model member {name!r} is not a valid array ({exc})") from None


class BaseDetector:
    """Common behaviour: encoding, label handling, thresholds, (de)serialisation.

    Subclasses implement ``_fit_matrix``, ``_score_matrix`` and the ``_state``/``_restore`` pair.
    """

    name: ClassVar[str] = "base"
    supervised: ClassVar[bool] = True

    def __init__(self, *, seed: int = 0, threshold: float = 0.5, multiclass: bool = False) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.seed = seed
        self.threshold = float(threshold)
        self.multiclass = bool(multiclass)
        self.encoder: FeatureEncoder | None = None
        self._classes: tuple[str, ...] = (BENIGN, ATTACK)
        self.calibration: dict[str, Any] = {}

    # -- hyper-parameters --------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-ready) that rebuild an unfitted twin."""
        return {"seed": self.seed, "multiclass": self.multiclass}

    @property
    def classes_(self) -> tuple[str, ...]:
        """Class names, benign first."""
        return self._classes

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Columns the fitted detector reads, in encoder order."""
        return self._require_fitted().columns

    def _require_fitted(self) -> FeatureEncoder:
        if self.encoder is None:
            raise ModelError(f"{self.name} detector is not fitted; call fit() first")
        return self.encoder

    # -- fit / score -------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: np.ndarray | pd.Series | None = None) -> Self:
        """Fit on ``X`` (features) and ``y`` (class names, booleans, or None = all benign)."""
        if not isinstance(X, pd.DataFrame):
            raise InputError(f"X must be a pandas DataFrame, got {type(X).__name__}")
        if len(X) == 0:
            raise InputError("cannot fit on an empty table")
        is_attack, index, classes = prepare_labels(y, len(X), multiclass=self.multiclass)
        if self.supervised and (is_attack.all() or not is_attack.any()):
            raise InputError(f"{self.name} needs both benign and attack rows to fit")
        if not self.supervised and not (~is_attack).any():
            raise InputError(f"{self.name} is trained on benign rows and the training data has none")
        self.encoder = FeatureEncoder.fit(X)
        matrix = self.encoder.transform(X)
        self._classes = classes
        self._fit_matrix(matrix, is_attack, index)
        return self

    def encode(self, X: pd.DataFrame, *, fill_missing: bool = False) -> np.ndarray:
        """Encode ``X`` with the fitted feature encoder."""
        return self._require_fitted().transform(X, fill_missing=fill_missing)

    def score(self, X: pd.DataFrame, *, fill_missing: bool = False) -> np.ndarray:
        """Return float64 scores in [0, 1] (higher = more likely an attack)."""
        return self.score_matrix(self.encode(X, fill_missing=fill_missing))

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Score an already encoded float32 matrix (the fast path used by benchmarks)."""
        self._require_fitted()
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise InputError(f"expected a matrix with {len(self.feature_names)} columns, got {matrix.shape}")
        if matrix.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        scores = np.asarray(self._score_matrix(matrix), dtype=np.float64)
        return np.clip(np.nan_to_num(scores, nan=1.0), 0.0, 1.0)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Return ``score(X) >= threshold``."""
        return self.score(X) >= self.threshold

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Per-class probabilities; binary and anomaly models give ``[1 - score, score]``."""
        s = self.score_matrix(matrix)
        return np.column_stack([1.0 - s, s])

    def predict_class(self, X: pd.DataFrame) -> np.ndarray:
        """Return the predicted class name of each row.

        Multi-class models take the most probable attack class for rows at or above the threshold
        and ``benign`` below it, so ``predict_class(X) != "benign"`` equals ``predict(X)``.
        """
        matrix = self.encode(X)
        scores = self.score_matrix(matrix)
        flagged = scores >= self.threshold
        classes = np.asarray(self._classes, dtype=object)
        if len(self._classes) <= 2:
            return cast(np.ndarray, np.where(flagged, classes[-1], classes[0]))
        return np.where(flagged, self.best_attack_class(matrix), classes[0])

    def calibrate(
        self,
        X_val: pd.DataFrame,
        y_val_is_attack: np.ndarray,
        target_fpr: float = 0.01,
        *,
        labels: np.ndarray | pd.Series | None = None,
        max_f1_loss: float | None = None,
    ) -> float:
        """Set the threshold to flag at most ``target_fpr`` of the benign validation rows.

        With ``max_f1_loss`` (the guard ``trustmesh train`` uses) the FPR-calibrated threshold is kept
        only if its validation macro-F1 is within ``max_f1_loss`` of the best macro-F1 any threshold
        reaches; otherwise it is lowered to the largest threshold that is (see
        :func:`guarded_threshold`). ``labels`` are the validation class names for multi-class models
        (default: the attack/benign view). The calibration record says which rule set the threshold.
        """
        y = np.asarray(y_val_is_attack, dtype=bool)
        if y.shape != (len(X_val),):
            raise InputError(f"y_val_is_attack must have one value per row ({len(X_val)}), got {y.shape}")
        scores = self.score(X_val)
        fpr_threshold = calibrate_threshold(scores[~y], target_fpr)
        self.threshold = fpr_threshold
        rule = "fpr"
        guard: dict[str, Any] = {}
        if max_f1_loss is not None and len(self._classes) > 2:
            # Multi-class: the class probabilities decide, not a binary FPR threshold. score >= 0.5 is
            # P(benign) <= 0.5: every row whose most probable class is an attack, plus the few where benign
            # is only the plurality. Measured: FPR thresholds below 0.5 added false alerts and above it
            # dropped attacks, both costing macro-F1 that validation rows were too few to show.
            self.threshold = fpr_threshold = 0.5
            rule = "multiclass-probability"
        if max_f1_loss is not None:
            names = np.where(y, ATTACK, BENIGN) if labels is None else np.asarray(labels).astype(str)
            if len(self._classes) > 2:
                best_attack = self.best_attack_class(self.encode(X_val))
            else:
                best_attack = np.full(len(y), ATTACK, dtype=object)
            chosen, guard = guarded_threshold(scores, names, best_attack, fpr_threshold, max_f1_loss)
            if chosen < fpr_threshold:
                rule = f"{rule}-relaxed-for-macro-f1"
                log.info(
                    "%s: the threshold for FPR %.4f (%.6f) costs %.3f validation macro-F1; lowered to %.6f",
                    self.name, target_fpr, fpr_threshold, guard["best_macro_f1"] - guard["fpr_macro_f1"], chosen,
                )
            self.threshold = chosen
        flagged = scores >= self.threshold
        self.calibration = {
            "target_fpr": target_fpr,
            "rule": rule,
            "fpr_threshold": calibrate_threshold(scores[~y], target_fpr),
            "saturated": bool(fpr_threshold >= 1.0),
            "n_benign": int((~y).sum()),
            "n_attack": int(y.sum()),
            "validation_fpr": float(flagged[~y].mean()) if (~y).any() else None,
            "validation_tpr": float(flagged[y].mean()) if y.any() else None,
            **guard,
        }
        log.info("%s threshold %.6f at target FPR %.4f (%s)", self.name, self.threshold, target_fpr, rule)
        return self.threshold

    def best_attack_class(self, matrix: np.ndarray) -> np.ndarray:
        """Return the most probable attack class of each encoded row (multi-class models)."""
        classes = np.asarray(self._classes, dtype=object)
        proba = self.predict_proba_matrix(matrix)
        return cast(np.ndarray, classes[1 + np.argmax(proba[:, 1:], axis=1)])

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Write the fitted detector to one zip file (see module docstring)."""
        meta, blobs = self.container()
        write_container(path, meta, blobs)

    def container(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Return ``(detector.json content, binary members)`` of the saved form."""
        encoder = self._require_fitted()
        state, blobs = self._state()
        meta = {
            "format": _FORMAT,
            "kind": self.name,
            "params": self.get_params(),
            "threshold": self.threshold,
            "classes": list(self._classes),
            "calibration": self.calibration,
            "encoder": encoder.to_dict(),
            "state": state,
        }
        return meta, blobs

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read a detector file written by :meth:`save` (any kind when called on the base class)."""
        meta, blobs = read_container(path)
        return cls._from_parts(meta, blobs, str(path))

    @classmethod
    def _from_parts(cls, meta: Mapping[str, Any], blobs: Mapping[str, bytes], where: str) -> Self:
        kind = meta.get("kind")
        target = detector_class(str(kind))
        if not issubclass(target, cls):
            raise ModelError(f"{where}: holds a {kind!r} detector, not {cls.name!r}")
        params = meta.get("params")
        if not isinstance(params, dict):
            raise ModelError(f"{where}: 'params' must be an object")
        try:
            det = target(**params)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{where}: invalid hyper-parameters ({exc})") from None
        threshold = meta.get("threshold")
        classes = meta.get("classes")
        if not isinstance(threshold, int | float) or not 0.0 <= float(threshold) <= 1.0:
            raise ModelError(f"{where}: threshold must be a number in [0, 1]")
        if not isinstance(classes, list) or len(classes) < 2 or classes[0] != BENIGN:
            raise ModelError(f"{where}: classes must list 'benign' first and at least one attack class")
        det.threshold = float(threshold)
        det._classes = tuple(str(c) for c in classes)
        calibration = meta.get("calibration", {})
        det.calibration = dict(calibration) if isinstance(calibration, dict) else {}
        det.encoder = FeatureEncoder.from_dict(meta.get("encoder", {}))
        state = meta.get("state")
        if not isinstance(state, dict):
            raise ModelError(f"{where}: 'state' must be an object")
        try:
            det._restore(state, dict(blobs))
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{where}: model state is malformed ({type(exc).__name__}: {exc})") from None
        return det

    # -- subclass hooks ----------------------------------------------------------------------------
    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        raise NotImplementedError

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        raise NotImplementedError

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def benign_holdout(is_attack: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split benign row indices into (train, hold-out) deterministically; hold-out may be empty."""
    benign = np.flatnonzero(~is_attack)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(benign)
    n_hold = int(round(fraction * perm.size)) if perm.size >= 20 else 0
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


Factory = Callable[[], BaseDetector]
