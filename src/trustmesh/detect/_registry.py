"""Build detectors by kind name."""

from __future__ import annotations

from typing import Any

from trustmesh.detect._base import BaseDetector, detector_class

__all__ = ["ARTIFACT_KINDS", "DETECTOR_KINDS", "make_detector"]

DETECTOR_KINDS = ("autoencoder", "ensemble", "forest", "gbdt", "iforest", "mlp", "snn")
#: Kinds a model artifact may hold: the trainable ones plus those built by their own command
#: (``site-baseline``: ``trustmesh baseline``, docs/baseline.md).
ARTIFACT_KINDS = (*DETECTOR_KINDS, "site-baseline")


def make_detector(kind: str, **params: Any) -> BaseDetector:
    """Return an unfitted detector of ``kind`` (one of DETECTOR_KINDS) built with ``params``."""
    if kind not in DETECTOR_KINDS:
        raise ValueError(f"kind must be one of {', '.join(DETECTOR_KINDS)}, got {kind!r}")
    return detector_class(kind)(**params)
