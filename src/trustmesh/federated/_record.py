"""Round records and their ledger entries (kind ``fl.round``), plus the final model's lineage."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trustmesh.errors import FederatedError, InputError

__all__ = ["RoundLedger", "RoundRecord", "RoundRecorder", "open_round_ledger"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundRecord:
    """What one round did: who took part, what was received, what was rejected, what it cost.

    ``commitments`` maps site id to the sha256 of its update as received (empty under SecAgg+/CKKS,
    where the server never sees an individual update; ``masked_commitment`` then commits to what it saw).
    """

    round: int
    sites: tuple[str, ...]
    commitments: dict[str, str]
    rejected: dict[str, str]
    aggregate_sha256: str
    strategy: dict[str, Any]
    defence: dict[str, Any]
    secure_aggregation: str
    epsilon: float | None
    delta: float | None
    metrics: dict[str, Any]
    seconds: float
    masked_commitment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """Return the JSON-ready ledger payload (floats kept finite; no secrets)."""
        doc = asdict(self)
        doc["sites"] = list(self.sites)
        return doc


class RoundLedger(Protocol):
    """The part of ``trustmesh.ledger.Ledger`` the coordinator uses."""

    def append_one(self, kind: str, payload: dict[str, Any], refs: Any = ()) -> int:
        """Append one entry and return its index."""
        ...


def open_round_ledger(directory: Path | str, origin: str = "trustmesh.fl") -> Any:
    """Open the trustmesh ledger in ``directory``, creating it (named ``origin``) when there is none."""
    try:
        from trustmesh.ledger import Ledger
    except ImportError as exc:  # pragma: no cover - the ledger ships with the core package
        raise FederatedError("--ledger: trustmesh.ledger is not available in this build") from exc
    path = Path(directory)
    try:
        return Ledger.open(path)
    except InputError:
        return Ledger.create(path, origin)


class RoundRecorder:
    """Append each round to a ledger (when given) and keep the indices for the model's lineage."""

    def __init__(self, ledger: RoundLedger | None = None) -> None:
        self.ledger = ledger
        self.indices: list[int] = []
        self.records: list[RoundRecord] = []

    def record(self, rec: RoundRecord) -> int | None:
        """Keep ``rec``; append it to the ledger and return its index (None without a ledger)."""
        self.records.append(rec)
        if self.ledger is None:
            return None
        refs = tuple(self.indices[-1:])
        index = int(self.ledger.append_one("fl.round", rec.to_payload(), refs))
        self.indices.append(index)
        return index

    def record_model(self, model_sha256: str, meta: dict[str, Any]) -> int | None:
        """Append the final model entry referencing every round; returns its index."""
        if self.ledger is None:
            return None
        payload = {"model_sha256": model_sha256, "rounds": list(self.indices), **meta}
        return int(self.ledger.append_one("fl.model", payload, tuple(self.indices)))
