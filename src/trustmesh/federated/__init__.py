"""Federated learning across sites with Flower: partitioners, robust aggregation, attacks, SecAgg+,
central DP and CKKS, with every round recorded on the ledger.

Entry points: :func:`simulate` (a real Flower simulation), :func:`run_inprocess` (same round logic
without Flower's transport, for sweeps), :class:`FLConfig`, :class:`Coordinator`.
"""

from __future__ import annotations

from trustmesh.federated._aggregate import (
    flatten as flatten_weights,
    DEFENCES,
    Aggregation,
    Aggregator,
    Bulyan,
    CenteredClip,
    CoordinateMedian,
    FedAvg,
    FedProx,
    FLTrust,
    MultiKrum,
    NormBound,
    TrimmedMean,
    fltrust_root_set,
    fltrust_root_steps,
    make_aggregator,
    wrap_aggregator,
)
from trustmesh.federated._artifact import federated_detector, save_federated_model
from trustmesh.federated._attacks import ATTACK_KINDS, AttackSpec, apply_trigger, choose_trigger, malicious_sites
from trustmesh.federated._autoencoder import AnomalyScorer, AutoencoderModel, anomaly_metrics
from trustmesh.federated._coordinator import Coordinator, Submission
from trustmesh.federated._data import DATASETS, FederatedData, load_federated_data
from trustmesh.federated._flower import build_client_app, build_server_app, simulate
from trustmesh.federated._metrics import classification_metrics, rare_class_recall
from trustmesh.federated._model import MLPModel
from trustmesh.federated._partition import (
    PartitionSpec,
    partition,
    partition_attack_family,
    partition_dirichlet,
    partition_groups,
    partition_iid,
)
from trustmesh.federated._pretrain import PUBLIC_DATASETS, PublicRows, pretrained_weights, public_rows
from trustmesh.federated._record import RoundRecord, RoundRecorder, open_round_ledger
from trustmesh.federated._run import FLConfig, FLResult, Plan, plan_run, run_inprocess, train_centralized
from trustmesh.federated._site import Site, TrainConfig
from trustmesh.federated._spec import config_from_options
from trustmesh.federated._validate import Commitment, UpdateValidator, commit_arrays

__all__ = [
    "ATTACK_KINDS",
    "Aggregation",
    "Aggregator",
    "AnomalyScorer",
    "AttackSpec",
    "AutoencoderModel",
    "Bulyan",
    "CenteredClip",
    "Commitment",
    "CoordinateMedian",
    "Coordinator",
    "DATASETS",
    "DEFENCES",
    "FLConfig",
    "FLResult",
    "FLTrust",
    "FedAvg",
    "FedProx",
    "FederatedData",
    "MLPModel",
    "MultiKrum",
    "NormBound",
    "PUBLIC_DATASETS",
    "PartitionSpec",
    "Plan",
    "PublicRows",
    "RoundRecord",
    "RoundRecorder",
    "Site",
    "Submission",
    "TrainConfig",
    "TrimmedMean",
    "UpdateValidator",
    "anomaly_metrics",
    "apply_trigger",
    "build_client_app",
    "build_server_app",
    "choose_trigger",
    "classification_metrics",
    "commit_arrays",
    "config_from_options",
    "federated_detector",
    "flatten_weights",
    "fltrust_root_set",
    "fltrust_root_steps",
    "load_federated_data",
    "make_aggregator",
    "malicious_sites",
    "open_round_ledger",
    "partition",
    "partition_attack_family",
    "partition_dirichlet",
    "partition_groups",
    "partition_iid",
    "plan_run",
    "pretrained_weights",
    "public_rows",
    "rare_class_recall",
    "run_inprocess",
    "save_federated_model",
    "simulate",
    "train_centralized",
    "wrap_aggregator",
]
