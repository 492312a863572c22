"""Write the federated model as a detection-core artifact whose manifest carries the federated lineage.

The aggregated weights go into an :class:`~trustmesh.detect.MLPDetector` (``model="mlp"``) or a
:class:`~trustmesh.detect.DenseAutoencoderDetector` (``model="autoencoder"``, its log-normal score
mapping fitted on the benign validation rows) with the encoder and scaling the sites encoded their
rows with, so ``trustmesh detect``/``evaluate`` (``trustmesh.detect.load_model``)
score it like any other model. The threshold is calibrated on the server-held validation share of the
TRAINING rows (never test). With a ledger, an ``fl.model`` entry referencing every ``fl.round`` entry
commits to the weights (``weights_sha256``, the same commitment as a round's ``aggregate_sha256``) and
the detector; its index, the ledger origin and the round indices go into the manifest's ``training``.
The artifact's own sha256 cannot be on that entry (the manifest sealed in the artifact names the
entry), so a verifier recomputes ``weights_sha256`` from the loaded detector's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.errors import FederatedError
from trustmesh.federated._data import FederatedData
from trustmesh.federated._record import RoundRecorder
from trustmesh.federated._validate import commit_arrays

__all__ = ["federated_detector", "save_federated_model"]


def federated_detector(weights: list[npt.NDArray[Any]], data: FederatedData, *, hidden: tuple[int, ...],
                       seed: int = 0, target_fpr: float = 0.01, model: str = "mlp") -> tuple[Any, dict[str, Any]]:
    """Return ``(detector, validation metrics)``: ``weights`` with ``data``'s encoding, the threshold
    calibrated on the server-held validation rows to flag at most ``target_fpr`` of their benign rows.

    ``model`` is the federated model the weights belong to: ``mlp`` gives an ``MLPDetector``,
    ``autoencoder`` a ``DenseAutoencoderDetector`` (score mapping fitted on the benign validation rows).
    """
    from trustmesh.detect import DenseAutoencoderDetector, MLPDetector, binary_metrics, calibrate_threshold

    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    if data.encoder is None or data.preprocessor is None or data.X_val is None or data.y_val is None:
        raise FederatedError(f"{data.name}: this data carries no detector encoding/validation rows "
                             "(load it with load_federated_data to save a model)")
    is_attack = data.y_val != 0
    det: Any
    if model == "autoencoder":
        if not (~is_attack).any():
            raise FederatedError(f"{data.name}: no benign validation row to calibrate the autoencoder on")
        det = DenseAutoencoderDetector.from_weights(data.encoder, data.preprocessor, list(weights),
                                                    data.X_val[~is_attack], seed=seed, hidden=hidden)
    elif model == "mlp":
        det = MLPDetector.from_weights(data.encoder, data.preprocessor, data.classes, list(weights), seed=seed,
                                       multiclass=len(data.classes) > 2, hidden=hidden)
    else:
        raise ValueError(f"model must be mlp or autoencoder, got {model!r}")
    scores = det.score_matrix(data.X_val)
    det.threshold = calibrate_threshold(scores[~is_attack], target_fpr)
    flagged = scores >= det.threshold
    det.calibration = {
        "target_fpr": target_fpr, "n_benign": int((~is_attack).sum()), "n_attack": int(is_attack.sum()),
        "validation_fpr": float(flagged[~is_attack].mean()),
        "validation_tpr": float(flagged[is_attack].mean()) if is_attack.any() else None,
        "rows": "server-held validation share of the training split",
    }
    return det, binary_metrics(is_attack, scores, det.threshold)


def save_federated_model(
    path: Path | str, weights: list[npt.NDArray[Any]], data: FederatedData, *, config: dict[str, Any],
    hidden: tuple[int, ...], metrics: dict[str, Any], seed: int = 0, epsilon: float | None = None,
    run_path: str = "in-process", recorder: RoundRecorder | None = None, target_fpr: float = 0.01,
    model: str = "mlp",
) -> Any:
    """Save ``weights`` with ``trustmesh.detect.save_model`` (``path`` + ``path.manifest.json``).

    ``config`` is ``FLConfig.describe()``; ``metrics`` the final in-run test metrics; ``model`` the
    federated model kind (``FLConfig.model``). With a ledger in
    ``recorder`` an ``fl.model`` entry is appended first. Returns the :class:`~trustmesh.detect.Manifest`.
    """
    from trustmesh.detect import save_model

    det, val_metrics = federated_detector(weights, data, hidden=hidden, seed=seed, target_fpr=target_fpr,
                                          model=model)
    weights_sha256 = str(commit_arrays([np.asarray(w, dtype=np.float32) for w in weights]))
    ledger: dict[str, Any] | None = None
    if recorder is not None and recorder.ledger is not None:
        entry = recorder.record_model(weights_sha256, {
            "format": "trustmesh.detector/1", "kind": det.name, "classes": list(det.classes_),
            "threshold": det.threshold, "data_digest": data.provenance.get("data_digest"),
            "path": Path(path).name,
        })
        ledger = {"origin": getattr(recorder.ledger, "origin", None), "round_indices": list(recorder.indices), "model_entry": entry}
    training = {
        **data.provenance,
        "target_fpr": target_fpr,
        "federated": {
            "path": run_path, "config": config, "epsilon": epsilon, "weights_sha256": weights_sha256,
            "rounds": len(recorder.records) if recorder is not None else None,
            "round_aggregates": [] if recorder is None else [r.aggregate_sha256 for r in recorder.records],
            "ledger": ledger,
        },
    }
    return save_model(det, path, data_digest=data.provenance.get("data_digest"),
                      metrics={"validation": val_metrics, "federated_test_in_run": metrics},
                      training=training)
