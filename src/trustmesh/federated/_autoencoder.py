"""The federated anomaly model: one dense autoencoder trained on benign rows only.

:class:`AutoencoderModel` has the interface :class:`~trustmesh.federated.MLPModel` has
(``get_weights``/``set_weights``/``train_epochs``), so sites, the coordinator, the robust aggregators,
SecAgg+, CKKS and update validation treat it like any other list of arrays. Its network is the
detection core's :class:`~trustmesh.detect.DenseAutoencoderDetector` network, so the aggregated weights
load into that detector unchanged (``save_federated_model(..., model="autoencoder")``).

Why one dense autoencoder and not the Kitsune ensemble: KitNET's structure depends on the data (the
feature clustering and the min/max scaling of the members' RMSEs fitted after the members are
trained), which would need extra federated phases that each reveal pooled statistics; a dense
autoencoder is one fixed architecture whose every parameter can be averaged. On TON_IoT network the
dense model also separates far better (docs/federated.md).

Scoring: reconstruction RMSE, mapped to [0, 1] with the detector's log-normal model fitted on the
server-held benign validation rows, thresholded to flag at most ``target_fpr`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.federated._model import TorchWeights, _torch

__all__ = ["AnomalyScorer", "AutoencoderModel", "anomaly_metrics"]


class AutoencoderModel(TorchWeights):
    """Dense autoencoder ``n -> hidden... -> mirror -> n`` trained with Adam on benign rows (label 0).

    ``seed`` fixes the initial weights, so every site and the coordinator start from the same model.
    ``benign_only`` tells :class:`~trustmesh.federated.Site` to keep only its benign rows (its example
    count, which FedAvg weights by, is then its benign row count).
    """

    benign_only = True

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 32), seed: int = 0,
                 input_clip: float = 10.0) -> None:
        from trustmesh.detect import DenseAutoencoderDetector

        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if not input_clip > 0:
            raise ValueError(f"input_clip must be > 0, got {input_clip}")
        self.n_features = n_features
        self.hidden = tuple(int(h) for h in hidden)
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {list(hidden)}")
        self.seed = seed
        self.input_clip = float(input_clip)
        self.net = DenseAutoencoderDetector.network(n_features, self.hidden, seed)

    def train_epochs(
        self, X: npt.ArrayLike, y: npt.ArrayLike | None = None, epochs: int = 1, *, batch_size: int = 64,
        lr: float = 1e-3, seed: int = 0, proximal_mu: float = 0.0, class_weights: npt.ArrayLike | None = None,
        dp_sgd: dict[str, float] | None = None,
    ) -> float:
        """Train in place on the rows with ``y == 0`` (all rows when ``y`` is None); return the last
        epoch's mean squared reconstruction error (0.0 and no training when there is no benign row).

        ``proximal_mu > 0`` adds FedProx's ``mu/2 * ||w - w_start||^2`` (Li et al., MLSys 2020).
        ``class_weights`` is accepted for interface parity and ignored (one class); ``dp_sgd`` is
        refused (local DP-SGD is implemented for the MLP only).
        """
        from trustmesh.detect import DenseAutoencoderDetector

        torch = _torch()
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if dp_sgd:
            raise ValueError("local DP-SGD is not implemented for the autoencoder model")
        rows = np.asarray(X, dtype=np.float32)
        if y is not None:
            labels = np.asarray(y)
            if labels.shape != (rows.shape[0],):
                raise ValueError(f"X has {rows.shape[0]} rows but y has shape {labels.shape}")
            rows = rows[labels == 0]
        if rows.shape[0] == 0:
            return 0.0
        data = torch.from_numpy(np.clip(rows, -self.input_clip, self.input_clip))
        return float(DenseAutoencoderDetector.train_network(self.net, data, epochs=epochs, batch_size=batch_size,
                                                            lr=lr, seed=seed, proximal_mu=proximal_mu))

    def rmse(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Per-row reconstruction RMSE of scaled rows (the raw anomaly measure)."""
        from trustmesh.detect import DenseAutoencoderDetector

        return DenseAutoencoderDetector.reconstruction_rmse(self.net, np.asarray(X, dtype=np.float32),
                                                            self.input_clip)


@dataclass(frozen=True, slots=True)
class AnomalyScorer:
    """The score mapping and threshold fitted on benign calibration rows (``mu``, ``sigma`` of log RMSE)."""

    mu: float
    sigma: float
    threshold: float
    calibration_fpr: float
    n_calibration: int

    @classmethod
    def calibrate(cls, model: AutoencoderModel, benign_rows: npt.ArrayLike,
                  target_fpr: float) -> AnomalyScorer:
        """Fit the log-normal score model on scaled ``benign_rows``; flag at most ``target_fpr`` of them."""
        from trustmesh.detect import DenseAutoencoderDetector, calibrate_threshold

        rmse = model.rmse(benign_rows)
        mu, sigma = DenseAutoencoderDetector.score_map(rmse)
        scores = DenseAutoencoderDetector.map_scores(rmse, mu, sigma)
        threshold = calibrate_threshold(scores, target_fpr)
        return cls(mu, sigma, threshold, float(np.mean(scores >= threshold)), int(len(scores)))

    def scores(self, model: AutoencoderModel, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Anomaly scores in [0, 1] of scaled rows."""
        from trustmesh.detect import DenseAutoencoderDetector

        return DenseAutoencoderDetector.map_scores(model.rmse(X), self.mu, self.sigma)


def anomaly_metrics(
    model: AutoencoderModel, benign_rows: npt.ArrayLike, X_test: npt.ArrayLike, y_test: npt.ArrayLike,
    classes: Sequence[str], *, target_fpr: float = 0.01,
) -> dict[str, Any]:
    """Binary attack-vs-benign metrics of ``model`` on the test rows.

    ROC-AUC and PR-AUC need no threshold; precision, recall, F1, FPR and each attack class's recall
    are at the threshold calibrated on ``benign_rows`` (scaled, never test rows) for ``target_fpr``.
    """
    from trustmesh.detect import binary_metrics

    y = np.asarray(y_test, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("y_test must not be empty")
    scorer = AnomalyScorer.calibrate(model, benign_rows, target_fpr)
    scores = scorer.scores(model, X_test)
    m = binary_metrics(y != 0, scores, scorer.threshold)
    flagged = scores >= scorer.threshold
    recall = {name: round(float(np.mean(flagged[y == i])), 6)
              for i, name in enumerate(classes) if i != 0 and np.any(y == i)}

    def r(v: Any) -> Any:
        return None if v is None else round(float(v), 6)

    out: dict[str, Any] = {k: r(m[k]) for k in ("roc_auc", "pr_auc", "f1", "precision", "recall", "fpr", "accuracy")}
    return {
        **out, "threshold": r(scorer.threshold), "target_fpr": target_fpr,
        "calibration_fpr": r(scorer.calibration_fpr), "n_calibration": scorer.n_calibration,
        "per_class_recall": recall, "binary_confusion": m["binary_confusion"],
    }
