"""The one place that wires flows -> detect -> respond -> ledger.

A :class:`Pipeline` pulls batches of canonical flows from sources (pcap replay, live interface, Zeek
or Suricata logs, flow tables), scores them with one detector, turns flows above the threshold into
:class:`~trustmesh.records.Alert` records, correlates alerts into incidents, lets the responder decide
(dry-run unless ``enforce``) and appends every alert, incident, proposal, decision and action result
to the ledger. Each ledger entry references the leaf indices it was based on, so an auditor can walk
from a block back to the packets' flow records with inclusion proofs.

Memory stays bounded: sources are iterated batch by batch (pull-based, so a slow scorer slows the
reader — that is the back-pressure), and only per-incident bookkeeping is kept.

The package is split by job: ``_config`` (:class:`PipelineConfig`), ``_alerts`` (flows, scores and
behaviour verdicts -> alerts, the alert policy) and ``_runner`` (:class:`Pipeline`, source threads,
micro-batches, checkpoints, shutdown). Import from ``trustmesh.pipeline``.
"""

from trustmesh.pipeline._alerts import (
    BEHAVIOUR_MODEL_ID,
    CORROBORATION_MARGIN_S,
    TableDetection,
    adopt_techniques,
    alerts_from_scores,
    alerts_from_verdicts,
    detect_flows,
    ml_alert_mask,
)
from trustmesh.pipeline._config import PipelineConfig
from trustmesh.pipeline._runner import BatchOutcome, Pipeline, RunSummary, open_sources

__all__ = [
    "BEHAVIOUR_MODEL_ID",
    "BatchOutcome",
    "CORROBORATION_MARGIN_S",
    "Pipeline",
    "PipelineConfig",
    "RunSummary",
    "TableDetection",
    "adopt_techniques",
    "alerts_from_scores",
    "alerts_from_verdicts",
    "detect_flows",
    "ml_alert_mask",
    "open_sources",
]
