"""Operator decisions from the API: approve, reject, roll back, each on the ledger at once, by name.

The approval queue's semantics are those of ``trustmesh incidents approve|reject|rollback``
(``trustmesh.respond``); what differs is where the records go. The CLI leaves them in the state
database's outbox for the pipeline's next batch. Here, before the HTTP response is sent:

1. an ``operator.decision`` entry (who: name, role, token id; what; the note) citing the incident;
2. the decision record(s), citing the incident's latest leaf and the ``operator.decision`` entry;
3. the action result(s), citing their decision;
4. a freshly signed checkpoint covering all of them.

The records are *claimed* in the outbox in the same transaction that stores them, so a pipeline
running at the same time never appends them a second time. A crash between the outbox and the ledger
leaves claimed records without a leaf; :meth:`Operator.recover` appends them when the server starts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from trustmesh.api._index import LedgerIndex
from trustmesh.api._tokens import check_name
from trustmesh.errors import InputError
from trustmesh.ledger import Entry, Ledger
from trustmesh.respond import ApprovalQueue, ResponseRecord, approve, reject, rollback

__all__ = ["LocalOperator", "Operator", "OperatorOutcome", "Who"]

_INLINE_LIMIT: Final = 48_000  # as the pipeline: larger payloads go to a blob, the entry keeps its sha256

OperatorOutcome = dict[str, Any]


class Who(Protocol):
    """Who decides: an API token's record, or a person at the server's shell."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def token_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class LocalOperator:
    """A named operator using the CLI on the server itself (shell access is the credential)."""

    name: str
    role: str = "local"
    token_id: str = "none"

    def __post_init__(self) -> None:
        check_name(self.name)


class _ClaimingQueue(ApprovalQueue):
    """The approval queue, but every record it stores is claimed for the API's own ledger append."""

    def __init__(self, state_dir: Any) -> None:
        super().__init__(state_dir)
        self.claimed: list[tuple[int, ResponseRecord]] = []

    def add_records(self, records: Sequence[Any], *, claimed: bool = False) -> list[int]:
        seqs = super().add_records(records, claimed=True)
        self.claimed.extend(zip(seqs, records, strict=True))
        return seqs


def fit_payload(ledger: Ledger, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``payload`` small enough for one entry (the pipeline's rule: big lists go to a blob)."""
    doc = dict(payload)
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    if len(raw) <= _INLINE_LIMIT:
        return doc
    digest = ledger.put_blob(raw)
    slim = {k: v for k, v in doc.items() if not isinstance(v, list | dict) or len(json.dumps(v)) < 512}
    slim["full_document_sha256"] = str(digest)
    slim["omitted_fields"] = sorted(set(doc) - set(slim))
    return slim


class Operator:
    """Carry out operator requests and append what they produced to the ledger before returning."""

    def __init__(self, ledger: Ledger, index: LedgerIndex, state_dir: Any, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger, self.index, self.clock = ledger, index, clock
        self.queue = _ClaimingQueue(state_dir)
        self._lock = threading.Lock()
        self.decisions = 0

    def close(self) -> None:
        """Close the state database."""
        self.queue.close()

    # -- requests ------------------------------------------------------------------------------
    def approve(self, who: Who, approval_id: str, note: str | None) -> OperatorOutcome:
        """Approve a pending step and run it (guards apply; dry-run unless it was queued enforcing)."""
        item = self.queue.approval(approval_id)
        return self._decide(who, "approve", item.incident_id, {"approval_id": approval_id}, note,
                            lambda: approve(self.queue, approval_id, note, clock=self.clock,
                                            operator=who.name))

    def reject(self, who: Who, approval_id: str, note: str | None) -> OperatorOutcome:
        """Reject a pending step."""
        item = self.queue.approval(approval_id)
        return self._decide(who, "reject", item.incident_id, {"approval_id": approval_id}, note,
                            lambda: reject(self.queue, approval_id, note, clock=self.clock, operator=who.name))

    def rollback(self, who: Who, incident_id: str, action_id: str | None,
                 note: str | None) -> OperatorOutcome:
        """Undo an incident's applied (or dry-run) actions, or one of them."""
        self.queue.incident(incident_id)  # unknown incident -> InputError (404)
        return self._decide(who, "rollback", incident_id, {"action_id": action_id}, note,
                            lambda: rollback(self.queue, incident_id, action_id, clock=self.clock))

    def _decide(self, who: Who, operation: str, incident_id: str, what: dict[str, Any],
                note: str | None, run: Callable[[], list[ResponseRecord]]) -> OperatorOutcome:
        if note is not None and len(note) > 2000:
            raise InputError("note must be at most 2000 characters")
        with self._lock:
            self.queue.claimed.clear()
            run()
            claimed = list(self.queue.claimed)
            self.queue.claimed.clear()
            self.index.refresh()
            refs = [self.index.incident_leaf[incident_id]] if incident_id in self.index.incident_leaf else []
            op_doc = {"operator": who.name, "role": who.role, "token_id": who.token_id, "operation": operation,
                      "incident_id": incident_id, **{k: v for k, v in what.items() if v is not None},
                      "note": note, "time": self.clock(),
                      "records": [{"record_type": r.record_type, **_record_id(r.to_dict())} for _, r in claimed]}
            op_leaf = self._append("operator.decision", op_doc, refs)
            appended = self._append_records([(s, r.record_type, r.to_dict()) for s, r in claimed], op_leaf)
            checkpoint = self.ledger.checkpoint()
            self.decisions += 1
        return {"operator_entry": op_leaf, "records": appended, "checkpoint": checkpoint.to_bytes().decode(),
                "tree_size": checkpoint.size}

    def recover(self) -> int:
        """Append claimed records a crash left off the ledger; return how many."""
        with self._lock:
            pending = self.queue.unlogged_claims()
            if not pending:
                return 0
            self._append_records(pending, None)
            self.ledger.checkpoint()
            return len(pending)

    # -- ledger --------------------------------------------------------------------------------
    def _append(self, kind: str, payload: Mapping[str, Any], refs: Sequence[int]) -> int:
        entry = Entry(kind=kind, payload=fit_payload(self.ledger, payload), time=self.clock(),
                      refs=tuple(sorted(set(refs))))
        return self.ledger.append([entry])[0]

    def _append_records(self, items: Sequence[tuple[int, str, dict[str, Any]]],
                        op_leaf: int | None) -> list[dict[str, Any]]:
        """Append decisions first, then results (which cite their decision); mark each seq logged."""
        out: list[dict[str, Any]] = []
        for phase in ("decision", "result"):
            for seq, kind, doc in items:
                if (kind == "action_result") != (phase == "result"):
                    continue
                refs = [] if op_leaf is None else [op_leaf]
                inc = doc.get("incident_id")
                if inc in self.index.incident_leaf:
                    refs.append(self.index.incident_leaf[str(inc)])
                if kind == "action_result" and doc.get("decision_id") in self.index.decision_leaf:
                    refs.append(self.index.decision_leaf[str(doc["decision_id"])])
                leaf = self._append(kind, doc, refs)
                if kind == "decision":
                    self.index.decision_leaf[str(doc["decision_id"])] = leaf
                self.queue.mark_logged(seq, leaf)
                out.append({"leaf": leaf, "record_type": kind, **doc})
        return out


def _record_id(doc: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("decision_id", "result_id", "status", "action", "operation")
    return {k: doc[k] for k in keys if doc.get(k) is not None}

