"""What the operator API holds open while it serves: ledger, its index, the state queue, tokens, metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trustmesh.api._config import DEFAULT_ORIGIN, ServeConfig
from trustmesh.api._index import LedgerIndex
from trustmesh.api._operator import Operator
from trustmesh.api._tokens import TokenStore
from trustmesh.errors import ConfigError, InputError
from trustmesh.ledger import Ledger

__all__ = ["ApiContext", "open_context"]

log = logging.getLogger(__name__)


@dataclass
class Metrics:
    """Prometheus metrics of one server (own registry: two apps in one process do not collide)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    decisions: Counter
    auth_failures: Counter


class _StateCollector(Collector):
    """Gauges read at scrape time: ledger size and checkpoint, alerts, approvals, damaged entries."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Any:
        ctx = self.ctx
        size = ctx.index.refresh()
        cp = ctx.ledger.latest_checkpoint()
        pending = len(ctx.operator.queue.approvals("pending"))
        for name, doc, value in (
            ("trustmesh_ledger_entries", "Entries in the ledger.", size),
            ("trustmesh_ledger_checkpoint_size", "Tree size of the newest signed checkpoint.",
             cp.size if cp else 0),
            ("trustmesh_alerts", "Alert entries in the ledger.", len(ctx.index.alerts)),
            ("trustmesh_incidents", "Incidents in the state database.", len(ctx.index.incident_leaf)),
            ("trustmesh_pending_approvals", "Steps waiting for an operator.", pending),
            ("trustmesh_ledger_damaged_entries", "Entries whose stored bytes no longer parse.",
             len(ctx.index.damaged)),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g


def _metrics() -> Metrics:
    reg = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=reg,
        requests=Counter("trustmesh_http_requests", "HTTP requests served.", ["method", "route", "status"],
                         registry=reg),
        latency=Histogram("trustmesh_http_request_seconds", "Time to serve a request.", ["route"],
                          registry=reg),
        decisions=Counter("trustmesh_operator_decisions", "Operator decisions appended to the ledger.",
                          ["operation", "role"], registry=reg),
        auth_failures=Counter("trustmesh_auth_failures", "Requests refused for a missing, bad or weak token.",
                              ["status"], registry=reg),
    )


@dataclass
class ApiContext:
    """Everything a request handler needs."""

    config: ServeConfig
    ledger: Ledger
    index: LedgerIndex
    operator: Operator
    tokens: TokenStore
    metrics: Metrics = field(default_factory=_metrics)

    def close(self) -> None:
        """Close the state database and the ledger."""
        self.operator.close()
        self.ledger.close()


def _open_ledger(config: ServeConfig) -> Ledger:
    try:
        ledger = Ledger.open(config.ledger_dir)
    except InputError:
        if (config.ledger_dir / "ledger.sqlite").exists():
            raise
        ledger = Ledger.create(config.ledger_dir, config.origin or DEFAULT_ORIGIN)
        ledger.checkpoint()  # size 0: the console has a signed head to show from the start
        return ledger
    if not (config.ledger_dir / "log.key").is_file():
        ledger.close()
        raise ConfigError(f"{config.ledger_dir}: no log.key; the server signs a checkpoint after each operator "
                          "decision, so it needs the ledger's signing key (run it as the pipeline's user)")
    if config.origin is not None and ledger.origin != config.origin:
        found = ledger.origin
        ledger.close()
        raise ConfigError(f"{config.ledger_dir}: ledger origin is {found!r}, configuration says {config.origin!r}")
    return ledger


def open_context(config: ServeConfig) -> ApiContext:
    """Open (or create) the ledger and state the configuration names; append any unlogged operator records."""
    ledger = _open_ledger(config)
    index = LedgerIndex(ledger)
    operator = Operator(ledger, index, config.state_dir)
    ctx = ApiContext(config, ledger, index, operator, TokenStore(config.token_path))
    ctx.tokens.records()  # a token file with bad permissions or content fails at start, not per request
    ctx.metrics.registry.register(_StateCollector(ctx))
    recovered = operator.recover()
    if recovered:
        log.warning("appended %d operator records a previous server left off the ledger", recovered)
    index.refresh()
    return ctx
