"""Write the federated model with a manifest that references the ledger rounds that produced it."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.federated._record import RoundRecorder

__all__ = ["save_federated_model"]


def save_federated_model(
    path: Path | str, weights: list[npt.NDArray[Any]], *, classes: tuple[str, ...], feature_names: tuple[str, ...],
    hidden: tuple[int, ...], config: dict[str, Any], metrics: dict[str, Any], dataset_digest: str,
    recorder: RoundRecorder | None = None,
) -> dict[str, Any]:
    """Save weights as ``.npz`` plus ``<path>.manifest.json``; log an ``fl.model`` entry referencing the rounds.

    Returns the manifest. The manifest's ``ledger_rounds`` lists the round entries; with their inclusion
    proofs the model's lineage can be checked against a checkpoint.
    """
    out = Path(path)
    buf = io.BytesIO()
    np.savez(buf, *[np.asarray(w, dtype=np.float32) for w in weights])
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    manifest: dict[str, Any] = {
        "format": "trustmesh.fl.mlp.v1", "sha256": digest, "classes": list(classes),
        "feature_names": list(feature_names), "hidden": list(hidden), "config": config, "metrics": metrics,
        "dataset_digest": dataset_digest,
        "ledger_rounds": [] if recorder is None else list(recorder.indices),
    }
    if recorder is not None and recorder.ledger is not None:
        manifest["ledger_model_entry"] = recorder.record_model(digest, {"path": out.name, "format": manifest["format"]})
    Path(str(out) + ".manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest
