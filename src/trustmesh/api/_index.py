"""An in-memory index over the ledger, caught up incrementally (the pipeline keeps appending).

Alerts live only in the ledger (the state database holds incidents, approvals and actions), so the
API reads them from there: each refresh parses the entries appended since the last one, bundle by
bundle, and keeps a compact row per alert plus, per kind, the leaf indices. Full documents are read
back from the ledger only for the page being returned. An entry that no longer parses (a damaged or
tampered bundle) is indexed as kind ``"?"`` and counted; the API still serves its bytes so that a
verifier can show why it fails.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from trustmesh.errors import InputError, LogIntegrityError
from trustmesh.ledger import Entry, Ledger
from trustmesh.ledger._query import field_values
from trustmesh.ledger._query import value_matches as matches

__all__ = ["AlertRow", "LedgerIndex"]

log = logging.getLogger(__name__)

_BUNDLE: Final = 256
MAX_SEARCH_SCAN: Final = 200_000  # entries one search request may read


@dataclass(frozen=True, slots=True)
class AlertRow:
    """What alert filters need, without the full document."""

    leaf: int
    timestamp: float
    source_ip: str | None
    destination_ip: str | None
    severity: int
    predicted_class: str | None
    technique_id: str | None
    model_id: str | None
    score: float


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def field_value(payload: Mapping[str, Any], dotted: str) -> Any:
    """Return ``payload[a][b]...`` for ``a.b...`` (None when absent); for the alert filter fields."""
    node: Any = payload
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else (None if isinstance(value, list) else value)


def _epoch(p: Mapping[str, Any]) -> float:
    flow_ts = field_value(p, "trustmesh.flow.ts")
    if isinstance(flow_ts, int | float) and field_value(p, "trustmesh.flow.ts_kind") != "relative":
        return float(flow_ts)
    stamp = p.get("@timestamp")
    if isinstance(stamp, str):
        try:
            return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return _num(stamp)


def alert_row(leaf: int, p: Mapping[str, Any]) -> tuple[AlertRow, str | None]:
    """Return the filter row of an alert payload: the ECS document, or the older flat ``Alert.to_dict``."""
    if "ecs" in p or "event" in p:
        f = functools.partial(field_value, p)
        row = AlertRow(leaf, _epoch(p), _str(f("source.ip")), _str(f("destination.ip")),
                       int(_num(f("event.severity"), 1)),
                       _str(f("trustmesh.predicted_class") or f("rule.category")),
                       _str(_first(f("threat.technique.id"))), _str(f("trustmesh.model_id")),
                       _num(f("trustmesh.score")))
        return row, _str(f("trustmesh.alert_id") or f("event.id"))
    row = AlertRow(leaf, _num(p.get("timestamp")), _str(p.get("source_ip")), _str(p.get("destination_ip")),
                   int(_num(p.get("severity"), 1)), _str(p.get("predicted_class")), _str(p.get("technique_id")),
                   _str(p.get("model_id")), _num(p.get("score")))
    return row, _str(p.get("alert_id"))


class LedgerIndex:
    """Kinds, alerts and the latest leaf of each incident, decision, model and alert id."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.size = 0
        self.kinds: dict[str, list[int]] = {}
        self.alerts: list[AlertRow] = []
        self.incident_leaf: dict[str, int] = {}
        self.decision_leaf: dict[str, int] = {}
        self.alert_leaf: dict[str, int] = {}
        self.model_leaf: dict[str, int] = {}
        self.damaged: list[int] = []
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Index the entries appended since the last call; return the ledger size."""
        with self._lock:
            target = self.ledger.size
            while self.size < target:
                bundle = self.size // _BUNDLE
                try:
                    raws = self.ledger.store.bundle_entries(bundle)
                except LogIntegrityError as exc:  # a bundle that no longer unpacks: index its leaves as damaged
                    log.error("ledger bundle %d: %s", bundle, exc)
                    raws = []
                end = min(target, (bundle + 1) * _BUNDLE)
                for leaf in range(self.size, end):
                    offset = leaf - bundle * _BUNDLE
                    self._add(leaf, raws[offset] if offset < len(raws) else None)
                self.size = end
            return target

    def _add(self, leaf: int, raw: bytes | None) -> None:
        # json.loads only, not Entry.from_bytes: the RFC 8785 re-encoding that checks canonical form
        # costs ~10x more, and the index is no verifier (entries/{index} and the browser check bytes)
        try:
            if raw is None:
                raise ValueError("missing from its bundle")
            doc = json.loads(raw)
            kind, p = doc["kind"], doc["payload"]
            if not isinstance(kind, str) or not isinstance(p, dict):
                raise ValueError("not an entry")
        except (ValueError, KeyError, TypeError, RecursionError):
            self.damaged.append(leaf)
            self.kinds.setdefault("?", []).append(leaf)
            return
        self.kinds.setdefault(kind, []).append(leaf)
        if kind == "alert":
            row, alert_id = alert_row(leaf, p)
            self.alerts.append(row)
            if alert_id is not None:
                self.alert_leaf[alert_id] = leaf
        elif kind == "incident" and "incident_id" in p:
            self.incident_leaf[str(p["incident_id"])] = leaf
        elif kind == "decision" and "decision_id" in p:
            self.decision_leaf[str(p["decision_id"])] = leaf
        elif kind in {"model", "fl.model"}:
            mid = p.get("model_id") or p.get("model_sha256")
            if mid is not None:
                self.model_leaf[str(mid)] = leaf

    def entries(self, leaves: list[int]) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """Yield ``(leaf, {kind, payload, refs, time})`` per leaf, None when the stored bytes do not parse.

        Plain ``json.loads`` of the stored bytes (what a page shows); verification is the job of
        ``/ledger/entries/{index}`` and of whoever checks its proof.
        """
        for leaf in leaves:
            try:
                doc = json.loads(self.ledger.entry_bytes(leaf))
            except (LogIntegrityError, InputError, ValueError, RecursionError):
                yield leaf, None
                continue
            ok = isinstance(doc, dict) and isinstance(doc.get("payload"), dict) and isinstance(doc.get("kind"), str)
            yield leaf, doc if ok else None

    def search(self, kind: str | None, fields: Mapping[str, str], *, limit: int,
               before: int | None = None) -> tuple[list[tuple[int, Entry]], int | None]:
        """Return up to ``limit`` entries (newest first) of ``kind`` whose payload fields match.

        Returns ``(hits, next_before)``; ``next_before`` continues the scan (None when it reached the
        start). At most ``MAX_SEARCH_SCAN`` entries are read per call.
        """
        self.refresh()
        if kind is not None:
            pool = self.kinds.get(kind, [])
        else:
            pool = range(self.size)  # type: ignore[assignment]
        hits: list[tuple[int, Entry]] = []
        scanned = 0
        start = len(pool)
        if before is not None:
            # pool is sorted ascending: find the first position >= before
            lo, hi = 0, len(pool)
            while lo < hi:
                mid = (lo + hi) // 2
                if pool[mid] < before:
                    lo = mid + 1
                else:
                    hi = mid
            start = lo
        pos = start
        while pos > 0 and len(hits) < limit and scanned < MAX_SEARCH_SCAN:
            pos -= 1
            scanned += 1
            leaf = pool[pos]
            try:
                entry = self.ledger.entry(leaf)
            except (LogIntegrityError, InputError):
                continue
            if all(any(matches(x, v) for x in field_values(entry.payload, f)) for f, v in fields.items()):
                hits.append((leaf, entry))
        return hits, (pool[pos] if pos > 0 else None)
