"""Detectors: the Detector protocol, models, thresholds, metrics and model artifacts.

Models: :class:`GBDTDetector` (LightGBM), :class:`AutoencoderEnsembleDetector` (Kitsune-style),
:class:`DenseAutoencoderDetector` (the federated anomaly model), :class:`IsolationForestDetector`,
:class:`MLPDetector` (torch, federated hooks), :class:`RandomForestDetector` (scikit-learn, saved as arrays) and
:class:`EnsembleDetector` (supervised + anomaly) and :class:`SiteBaselineDetector` (one site's own
benign behaviour, ``trustmesh baseline``). All score in [0, 1] with a threshold calibrated to a
target false-positive rate; ``save_model``/``load_model`` write and verify an artifact plus manifest.
"""

from trustmesh.detect._artifact import MANIFEST_SUFFIX, Manifest, load_model, manifest_path, save_model
from trustmesh.detect._autoencoder import AutoencoderEnsembleDetector, DenseAutoencoderDetector
from trustmesh.detect._behaviour import (
    BEHAVIOUR_KINDS,
    BehaviourConfig,
    BehaviourEngine,
    BehaviourVerdict,
    FlowRef,
)
from trustmesh.detect._base import BaseDetector, calibrate_threshold, guarded_threshold
from trustmesh.detect._baseline import SiteBaselineDetector, fit_site_baseline
from trustmesh.detect._default import default_pcap_model, host_summary
from trustmesh.detect._drift import ScoreReference, score_drift
from trustmesh.detect._ensemble import EnsembleDetector
from trustmesh.detect._forest import RandomForestDetector
from trustmesh.detect._gbdt import GBDTDetector
from trustmesh.detect._iforest import IsolationForestDetector
from trustmesh.detect._metrics import binary_metrics, evaluate_detector, leakage_audit, per_class_metrics
from trustmesh.detect._mlp import MLPDetector
from trustmesh.detect._protocol import BENIGN, Detector
from trustmesh.detect._registry import ARTIFACT_KINDS, DETECTOR_KINDS, make_detector
from trustmesh.detect._validation import macro_f1_score, validation_quality
from trustmesh.detect.snn import SpikingDetector

__all__ = [
    "ARTIFACT_KINDS",
    "AutoencoderEnsembleDetector",
    "BEHAVIOUR_KINDS",
    "BENIGN",
    "BaseDetector",
    "BehaviourConfig",
    "BehaviourEngine",
    "BehaviourVerdict",
    "DETECTOR_KINDS",
    "DenseAutoencoderDetector",
    "Detector",
    "EnsembleDetector",
    "FlowRef",
    "GBDTDetector",
    "IsolationForestDetector",
    "MANIFEST_SUFFIX",
    "MLPDetector",
    "Manifest",
    "RandomForestDetector",
    "ScoreReference",
    "SiteBaselineDetector",
    "SpikingDetector",
    "binary_metrics",
    "calibrate_threshold",
    "default_pcap_model",
    "evaluate_detector",
    "fit_site_baseline",
    "guarded_threshold",
    "host_summary",
    "leakage_audit",
    "load_model",
    "macro_f1_score",
    "make_detector",
    "manifest_path",
    "per_class_metrics",
    "save_model",
    "score_drift",
    "validation_quality",
]
