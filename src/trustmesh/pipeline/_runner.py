"""The runner: :class:`Pipeline` pulls batches from sources, scores, correlates, responds and records.

Sources are read on threads (:class:`_Feeder`), streaming ones in micro-batches; checkpoints are signed
by count and by time; SIGINT/SIGTERM stop within a batch (docs/pipeline.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trustmesh.detect import Detector, Manifest, default_pcap_model, load_model
from trustmesh.errors import ConfigError, InputError, TrustmeshError
from trustmesh.flows import FlowSource, LazySource, fuse_signature
from trustmesh.ledger import Checkpoint, Entry, Ledger
from trustmesh.records import Alert, Incident
from trustmesh.sinks import SinkSet, open_sinks
from trustmesh.respond import (
    DEFAULT_PLAYBOOKS,
    Action,
    AlertEvidence,
    Correlator,
    LLMTriage,
    NftablesAction,
    NotifyAction,
    PlaybookSet,
    QuarantineAction,
    Responder,
    WebhookAction,
    expire,
)
from trustmesh.pipeline._config import PipelineConfig, _json_ready
from trustmesh.pipeline._alerts import _BehaviourStage, adopt_techniques, alerts_from_scores, ml_alert_mask

log = logging.getLogger("trustmesh.pipeline")  # one logger name for the whole pipeline

_INLINE_LIMIT = 48_000  # bytes of JSON kept inline in an entry (the ledger refuses entries over 64 KiB)
_APPEND_CHUNK = 5_000  # entries per durable transaction
_MAX_REFS = 1024  # the ledger's limit on the leaf indices one entry may cite
_FLOW_SCORE_MEMORY = 200_000  # flows whose model score is kept for fusing Suricata alerts
# entries whose payloads the pipeline builds itself from plain types and does not change once appended
# (ECS alert documents, incident dicts, response records read back from the queue's JSON): built with
# Entry.owned, the same bytes without a normalising copy of each payload
_OWNED_KINDS = frozenset({"alert", "incident", "decision", "action_result", "triage_proposal"})

# --------------------------------------------------------------------------------------------------
# the pipeline


@dataclass(slots=True)
class BatchOutcome:
    """What one batch produced (for progress displays and tests)."""

    flows: int = 0
    alerts: list[tuple[int, Alert]] = field(default_factory=list)  # (leaf index, alert)
    incidents: list[tuple[int, Incident]] = field(default_factory=list)
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # decisions, results, ...
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)  # the canonical flows of the batch
    suppressed: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # alert.suppressed summaries


@dataclass(slots=True)
class RunSummary:
    """Totals of a run, the leaf indices worth proving, and the checkpoints signed."""

    flows: int = 0
    alerts: int = 0
    incidents: int = 0
    decisions: int = 0
    action_results: int = 0
    errors: list[str] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    first_index: int = 0
    last_index: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-sink sent/failed counters

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary (checkpoints as size/root)."""
        return {
            "flows": self.flows, "alerts": self.alerts, "incidents": self.incidents,
            "decisions": self.decisions, "action_results": self.action_results, "errors": self.errors,
            "checkpoints": [{"size": c.size, "root_hash": c.root_hash.hex()} for c in self.checkpoints],
            "first_index": self.first_index, "last_index": self.last_index,
            "interrupted": self.interrupted, "seconds": round(self.seconds, 3), "sinks": self.sinks,
        }


def _record_kind(record: Any) -> str:
    return str(getattr(record, "record_type", type(record).__name__.lower()))


class Pipeline:
    """Score flows, correlate, respond, and append every step to the ledger.

    Build one with :meth:`from_config`, or pass the parts (tests do). Use as a context manager or
    call :meth:`close`, which checkpoints whatever was appended since the last checkpoint.
    """

    def __init__(self, detector: Detector, manifest: Manifest, ledger: Ledger, responder: Responder,
                 correlator: Correlator, config: PipelineConfig, *,
                 clock: Callable[[], float] = time.time, sinks: SinkSet | None = None) -> None:
        self.detector, self.manifest, self.ledger = detector, manifest, ledger
        self.responder, self.correlator, self.config = responder, correlator, config
        self.clock = clock
        self.sinks = sinks if sinks is not None else SinkSet()
        self._flow_scores: OrderedDict[str, float] = OrderedDict()  # uid -> model score, for Suricata fusion
        self._sink_errors: set[str] = set()
        self.model_id = str(getattr(manifest, "model_id", "model"))
        self._incident_index: dict[str, int] = {}  # incident id -> leaf of its latest version
        self._decision_index: dict[str, int] = {}
        # addresses an applied blocking action contains: address -> (expires_at or None, leaf of that result)
        self._contained: dict[str, tuple[float | None, int]] = {}
        self._outbox_seq = self._load_cursor()
        self._since_checkpoint = 0
        self._checkpointed_at = time.monotonic()
        self.summary = RunSummary(first_index=ledger.size)
        self.model_index = self._append("model", self._model_payload())
        self.start_index = self._append("pipeline.start", {"config": config.summary(), "model_id": self.model_id},
                                        refs=[self.model_index])
        # the behaviour engine is the second detector of every run: its settings are a model entry too
        self._behaviour = _BehaviourStage(detector, manifest)
        self.behaviour_index = self._append("model", self._behaviour.payload(), refs=[self.start_index])
        self._site = _SitePhase(config)

    # ----- construction

    @classmethod
    def from_config(cls, config: PipelineConfig, *, detector: Detector | None = None,
                    manifest: Manifest | None = None) -> Pipeline:
        """Open (or create) the ledger, load the model and build the responder described by ``config``."""
        if detector is None or manifest is None:
            loaded = load_model(config.model) if config.model is not None else default_pcap_model(config.data_dir)
            detector, manifest = loaded[0], loaded[1]
            if config.require_passport:  # refuse a model whose passport does not verify (docs/assurance.md)
                from trustmesh.assurance import require_passport

                require_passport(config.model)
        ledger = _open_or_create(Path(config.ledger_dir), config.origin) if config.ledger_url is None else (
            _remote_ledger(config))
        playbook_files = config.playbooks or (DEFAULT_PLAYBOOKS,)
        playbooks = PlaybookSet.load(list(playbook_files))
        responder = Responder(playbooks, _actions(config), config.guards, config.state_dir,
                              enforce=config.enforce,
                              llm=LLMTriage(config.llm_url, config.llm_model, evidence=AlertEvidence(),
                                            prompt_store=ledger.put_blob)  # prompts become ledger blobs
                              if config.llm_url and config.llm_model else None)
        return cls(detector, manifest, ledger, responder, Correlator(config.correlation_window_s), config,
                   sinks=open_sinks(config.sinks, state_dir=Path(config.state_dir)))

    def _model_payload(self) -> dict[str, Any]:
        return _json_ready(self.manifest.to_dict())

    def _ml_alert_docs(self, flows: pd.DataFrame, masked: np.ndarray, alerts: list[Alert],
                       created: float) -> list[dict[str, Any]]:
        """Return the model alerts' ECS documents, each committing to its flow's encoded features.

        ``trustmesh.features_sha256`` is the row's digest and ``trustmesh.features_blob`` the ledger blob
        holding the batch's rows, so a proof of inference can later be made for any alert (docs/assurance.md).
        """
        docs = [a.to_ecs(created=created) for a in alerts]
        encode = getattr(self.detector, "encode", None)
        if not docs or not callable(encode) or not hasattr(self.ledger, "put_blob"):
            return docs
        from trustmesh.assurance import feature_commitments

        rows = np.flatnonzero(masked >= self.detector.threshold)
        matrix = encode(flows.iloc[rows], fill_missing=True)
        digests, blob = feature_commitments(list(getattr(self.detector, "feature_names", ())), matrix)
        blob_id = str(self.ledger.put_blob(blob))
        for doc, digest in zip(docs, digests, strict=True):
            doc["trustmesh"] = {**doc["trustmesh"], "features_sha256": digest, "features_blob": blob_id}
        return docs

    def _queue_proofs(self, alerts: list[Alert], indices: list[int]) -> None:
        """Queue a deterministic sample of model alerts for proofs of inference (state_dir/prove-queue.jsonl)."""
        rate = self.config.prove_sample_rate
        picked = [(a, i) for a, i in zip(alerts, indices, strict=True)
                  if int(hashlib.sha256(a.alert_id.encode()).hexdigest()[:13], 16) < rate * 16 ** 13]
        if not picked:
            return
        queue = Path(self.config.state_dir) / "prove-queue.jsonl"
        queue.parent.mkdir(parents=True, exist_ok=True)
        with queue.open("a", encoding="utf-8") as fh:
            for a, i in picked:
                fh.write(json.dumps({"alert_id": a.alert_id, "ledger_index": i, "model_id": self.model_id}) + "\n")

    # ----- ledger helpers

    def _fit(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Keep entries small: a payload over the entry limit goes to a blob; the entry keeps its digest.

        Incidents and decisions list every alert id they are based on, which grows with a scan; the
        full document stays provable (the blob's sha256 is in the entry) while the leaf stays small.
        """
        doc = dict(payload)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
        if len(raw) <= _INLINE_LIMIT:
            return doc
        digest = self.ledger.put_blob(raw)
        slim = {k: v for k, v in doc.items() if not isinstance(v, list | dict) or len(json.dumps(v)) < 512}
        slim["full_document_sha256"] = str(digest)
        slim["omitted_fields"] = sorted(set(doc) - set(slim))
        return slim

    def _entry(self, kind: str, payload: Mapping[str, Any], refs: Sequence[int], now: float) -> Entry:
        """Build one entry; a payload over the inline limit is moved to a blob first (:meth:`_fit`).

        The common case encodes the payload once: the entry's own canonical bytes give its size.
        """
        refs_t = tuple(sorted(set(refs)))
        try:
            if kind in _OWNED_KINDS and type(payload) is dict:  # built here, never changed after: no private copy
                entry = Entry.owned(kind, payload, time=now, refs=refs_t)
            else:
                entry = Entry(kind=kind, payload=payload if type(payload) is dict else dict(payload), time=now,
                              refs=refs_t)
        except InputError:  # over the entry size limit (or not JSON): _fit slims it, Entry says what is wrong
            return Entry(kind=kind, payload=self._fit(payload), time=now, refs=refs_t)
        if len(entry.to_bytes()) <= _INLINE_LIMIT:
            return entry
        return Entry(kind=kind, payload=self._fit(payload), time=now, refs=refs_t)

    def _append_many(self, items: Sequence[tuple[str, Mapping[str, Any], Sequence[int]]]) -> list[int]:
        """Append (kind, payload, refs) items in durable transactions; return their leaf indices.

        A batch's items go in one transaction (up to ``_APPEND_CHUNK`` entries each): one fsync for
        the batch, not one per entry.
        """
        indices: list[int] = []
        now = self.clock()
        for start in range(0, len(items), _APPEND_CHUNK):
            chunk = items[start:start + _APPEND_CHUNK]
            entries = [self._entry(k, p, r, now) for k, p, r in chunk]
            indices += self.ledger.append(entries)
        self._since_checkpoint += len(items)
        return indices

    def _append(self, kind: str, payload: Mapping[str, Any], refs: Sequence[int] = ()) -> int:
        return self._append_many([(kind, payload, refs)])[0]

    def checkpoint(self) -> Checkpoint:
        """Sign a checkpoint of everything appended so far."""
        cp = self.ledger.checkpoint()
        self.summary.checkpoints.append(cp)
        self._since_checkpoint = 0
        self._checkpointed_at = time.monotonic()
        return cp

    def maybe_checkpoint(self) -> Checkpoint | None:
        """Sign a checkpoint if entries were appended and ``checkpoint_every`` entries or
        ``checkpoint_interval_s`` seconds have passed since the last one (bounds the unsigned tail)."""
        if not self._since_checkpoint:
            return None
        if (self._since_checkpoint >= self.config.checkpoint_every
                or time.monotonic() - self._checkpointed_at >= self.config.checkpoint_interval_s):
            return self.checkpoint()
        return None

    def _cursor_file(self) -> Path:
        digest = hashlib.sha256(self.ledger.origin.encode()).hexdigest()[:12]
        return Path(self.config.state_dir) / f"ledger-cursor-{digest}"

    def _load_cursor(self) -> int:
        try:
            return int(self._cursor_file().read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return 0

    def _save_cursor(self) -> None:
        path = self._cursor_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(self._outbox_seq), encoding="ascii")
        tmp.replace(path)

    def _drain_responses(self, outcome: BatchOutcome) -> None:
        """Append every response record the responder (or an operator, in another process) produced.

        Decisions and proposals go first (they cite the incident), then action results (they cite
        their decision), so every reference points at an earlier leaf.
        """
        pending = self.responder.queue.outbox(after=self._outbox_seq)
        if not pending:
            return
        for phase in ("decisions", "results"):
            items: list[tuple[str, Mapping[str, Any], Sequence[int]]] = []
            docs: list[tuple[str, dict[str, Any]]] = []
            for _seq, kind, doc in pending:
                if (kind == "action_result") != (phase == "results"):
                    continue
                refs: list[int] = []
                inc = doc.get("incident_id")
                if inc in self._incident_index:
                    refs.append(self._incident_index[inc])
                if doc.get("decision_id") in self._decision_index and kind == "action_result":
                    refs.append(self._decision_index[doc["decision_id"]])
                items.append((kind, doc, refs))
                docs.append((kind, doc))
            for index, (kind, doc) in zip(self._append_many(items), docs, strict=True):
                if kind == "decision":
                    self._decision_index[str(doc["decision_id"])] = index
                elif kind == "action_result":
                    self._note_containment(doc, index)
                    self.summary.decisions += 1
                elif kind == "action_result":
                    self.summary.action_results += 1
                outcome.records.append((index, {"kind": kind, **doc}))
        self._outbox_seq = pending[-1][0]
        self._save_cursor()

    def _note_containment(self, doc: Mapping[str, Any], index: int) -> None:
        """Follow which addresses an applied blocking action (an nftables drop) contains right now."""
        action = self.responder.actions.get(str(doc.get("action")))
        if action is None or not getattr(action, "blocks", False):
            return
        targets = [str(t) for t in doc.get("targets") or ()]
        if doc.get("operation") == "apply" and doc.get("status") == "applied":
            expires = doc.get("expires_at")
            for t in targets:
                self._contained[t] = (float(expires) if isinstance(expires, int | float) else None, index)
        elif doc.get("operation") in {"rollback", "expire"} and doc.get("status") in {"rolled_back", "expired"}:
            for t in targets:
                self._contained.pop(t, None)

    def _contained_now(self) -> dict[str, int]:
        """Addresses contained at this moment (drop applied, TTL not over) -> leaf of the drop's result."""
        if not self._contained:
            return {}
        now = self.clock()
        over = [a for a, (exp, _) in self._contained.items() if exp is not None and exp <= now]
        for a in over:
            del self._contained[a]
        return {a: leaf for a, (_, leaf) in self._contained.items()}

    def _summarise_contained(self, flows: pd.DataFrame, scores: np.ndarray, held: np.ndarray,
                             ml_held: np.ndarray, behaviour_held: Sequence[tuple[str, str, str]],
                             contained: Mapping[str, int],
                             source_name: str) -> list[tuple[str, Mapping[str, Any], Sequence[int]]]:
        """One ``alert.suppressed`` entry per contained actor of the batch, instead of one alert per flow.

        The flows are scored and counted as usual; what would have alerted is summarised: counts (flows,
        model alerts, behaviour alerts by kind), first/last flow time, the highest score and the sha256 of
        the sorted flow uids of the summarised alerts (one uid a line), so the record of what was seen stays
        complete and checkable against the source while a contained scan's tail costs one entry a batch.
        """
        src = flows["src_ip"].astype(str).to_numpy() if "src_ip" in flows.columns else np.full(len(flows), "")
        uids = flows["uid"].astype(str).to_numpy() if "uid" in flows.columns else np.full(len(flows), "")
        ts = pd.to_numeric(flows["ts"], errors="coerce").to_numpy(dtype=np.float64) if "ts" in flows.columns \
            else np.full(len(flows), np.nan)
        items: list[tuple[str, Mapping[str, Any], Sequence[int]]] = []
        for actor in sorted({*src[held].tolist(), *(host for host, _, _ in behaviour_held)}):
            mine = held & (src == actor)
            ml_mine = ml_held & mine
            beh = [(kind, uid) for host, kind, uid in behaviour_held if host == actor]
            if not ml_mine.any() and not beh:
                continue  # nothing of this actor would have alerted in this batch
            alerted = sorted({*uids[ml_mine].tolist(), *(uid for _, uid in beh)})
            kinds: dict[str, int] = {}
            for kind, _ in beh:
                kinds[kind] = kinds.get(kind, 0) + 1
            times = ts[mine]
            times = times[~np.isnan(times)]
            items.append(("alert.suppressed", {
                "actor": actor, "reason": "contained", "source": source_name, "model_id": self.model_id,
                "flows": int(mine.sum()), "model_alerts": int(ml_mine.sum()), "behaviour_alerts": len(beh),
                "behaviour_kinds": dict(sorted(kinds.items())),
                "first_ts": float(times.min()) if times.size else None,
                "last_ts": float(times.max()) if times.size else None,
                "max_score": round(float(scores[mine].max()), 6) if mine.any() else None,
                "flow_uids": len(alerted),
                "flow_uids_sha256": hashlib.sha256("".join(u + "\n" for u in alerted).encode()).hexdigest(),
                "time": self.clock(),
            }, [self.model_index, self.behaviour_index, contained[actor]]))
        return items

    # ----- processing

    def process(self, flows: pd.DataFrame, source_name: str) -> BatchOutcome:
        """Score one batch of canonical flows and carry every alert through response into the ledger."""
        outcome = BatchOutcome(flows=len(flows), frame=flows)
        if flows.empty:
            signatures = list(flows.attrs.get("suricata_alerts", ()))
            if signatures:  # Suricata EVE alert events (see trustmesh.flows.LazySource), fused with the model's verdicts
                self._process_signatures(signatures, outcome)
            return outcome
        scores = np.asarray(self.detector.score(flows, fill_missing=True), dtype=np.float64)
        outcome.scores = scores
        self._remember_scores(flows, scores)
        classes: list[str | None] | None = None
        predict_class = getattr(self.detector, "predict_class", None)
        if callable(predict_class) and len(getattr(self.detector, "classes_", ()) or ()) > 2:
            hits = scores >= self.detector.threshold
            if hits.any():
                predicted = iter(np.asarray(predict_class(flows[hits]), dtype=object).tolist())
                classes = [str(next(predicted)) if hit else None for hit in hits.tolist()]
        # behaviour verdicts first: under a "corroborated" alert policy they vouch for model alerts
        # an actor whose drop is active: its flows are scored and counted, their alerts summarised per batch
        contained = self._contained_now()
        behaviour = self._behaviour.alerts(flows, source_name, contained)
        allowed = ml_alert_mask(flows, scores, self.detector.threshold, self._behaviour.policy,
                                self._behaviour.actors)
        summaries: list[tuple[str, Mapping[str, Any], Sequence[int]]] = []
        if contained:
            held = (flows["src_ip"].astype(str).isin(contained).to_numpy() if "src_ip" in flows.columns
                    else np.zeros(len(flows), dtype=bool))
            behaviour_held = list(self._behaviour.held) + [
                (str(a.source_ip), str(a.predicted_class), str(a.flow_id)) for a in behaviour
                if str(a.source_ip) in contained]
            if held.any() or behaviour_held:
                behaviour = [a for a in behaviour if str(a.source_ip) not in contained]
                ml_held = allowed & held
                summaries = self._summarise_contained(flows, scores, held, ml_held, behaviour_held, contained,
                                                      source_name)
                allowed = allowed & ~held
        ml_alerts = alerts_from_scores(flows, np.where(allowed, scores, -1.0), threshold=self.detector.threshold,
                                       model_id=self.model_id, source_name=source_name, classes=classes)
        if self._behaviour.policy.get("mode") == "corroborated":
            ml_alerts = adopt_techniques(ml_alerts, self._behaviour.vouch)
        alerts = behaviour + ml_alerts  # verdict alerts first: they name the incidents they open
        created = self.clock()  # ledger alert entries are the ECS document every sink and the API see
        ml_docs = self._ml_alert_docs(flows, np.where(allowed, scores, -1.0), ml_alerts, created)
        alert_docs = [a.to_ecs(created=created) for a in behaviour] + list(ml_docs)
        indices = self._append_many(
            [("alert", doc, [self.behaviour_index]) for doc in alert_docs[:len(behaviour)]]
            + [("alert", doc, [self.model_index]) for doc in ml_docs] + summaries)  # one transaction
        if summaries:
            outcome.suppressed += [(i, dict(doc)) for i, (_, doc, _) in
                                   zip(indices[len(alerts):], summaries, strict=True)]
            indices = indices[:len(alerts)]
        if self.config.prove_sample_rate > 0 and ml_alerts:
            self._queue_proofs(ml_alerts, indices[len(behaviour):])
        self.summary.flows += len(flows)
        self._correlate_and_respond(alerts, indices, outcome, created, alert_docs)
        carried = list(flows.attrs.get("suricata_alerts", ()))
        if carried:  # a followed EVE log's alert events read with these flows, fused with the scores just made
            self._process_signatures(carried, outcome)
        self._site.after_batch(self, flows, scores)
        self.maybe_checkpoint()
        return outcome

    def expire_actions(self) -> None:
        """Record (and, for user-space actions, perform) the end of actions whose TTL passed."""
        with self._response_batch():
            expire(self.responder.queue, actions=self.responder.actions, clock=self.clock)
            self._drain_responses(BatchOutcome())

    def _correlate_and_respond(self, alerts: Sequence[Alert], indices: Sequence[int], outcome: BatchOutcome,
                               created: float, alert_docs: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Correlate recorded alerts into incidents, record the incidents, publish, respond.

        ``alert_docs`` are the documents the alerts were recorded as (the sinks get the very same bytes);
        without them each alert's ``to_ecs`` is used.
        """
        touched: dict[str, Incident] = {}
        new_alerts: dict[str, list[int]] = {}
        evidence = getattr(self.responder.llm, "evidence", None)  # LLM triage's flow fields per alert
        for index, alert in zip(indices, alerts, strict=True):
            outcome.alerts.append((index, alert))
            incident = self.correlator.add(alert)
            if isinstance(evidence, AlertEvidence):
                evidence.add(alert)
            touched[incident.incident_id] = incident
            new_alerts.setdefault(incident.incident_id, []).append(index)
        self.summary.alerts += len(alerts)
        # one incident entry per touched incident and batch (its latest version), not one per alert;
        # an entry cites at most _MAX_REFS leaves, so a burst of alerts is cited by a chain of entries
        # the first entry of every touched incident goes in one durable transaction (not one per incident);
        # the rare further entries of an incident with more alerts than one entry may cite follow it
        step = _MAX_REFS - 1
        first_items: list[tuple[str, Mapping[str, Any], Sequence[int]]] = []
        docs: dict[str, dict[str, Any]] = {}
        for incident_id, incident in touched.items():
            if incident_id not in self._incident_index:
                self.summary.incidents += 1
            docs[incident_id] = incident.to_dict()
            refs = list(new_alerts[incident_id][:step])
            if incident_id in self._incident_index:
                refs.append(self._incident_index[incident_id])
            first_items.append(("incident", docs[incident_id], refs))
        for incident_id, index in zip(touched, self._append_many(first_items), strict=True):
            self._incident_index[incident_id] = index
        for incident_id, incident in touched.items():
            alerts_here = new_alerts[incident_id]
            for start in range(step, len(alerts_here), step):
                refs = [*alerts_here[start:start + step], self._incident_index[incident_id]]
                self._incident_index[incident_id] = self._append("incident", docs[incident_id], refs)
            outcome.incidents.append((self._incident_index[incident_id], incident))
        self._publish(outcome, created, alert_docs)
        with self._response_batch():  # the batch's response state in one transaction, not one per call
            for index, incident in outcome.incidents:
                try:
                    self.responder.handle(incident)
                except TrustmeshError as exc:  # a response problem must not lose the alerts already recorded
                    self._record_error(f"response to {incident.incident_id} failed: {exc}", refs=[index])
            self._drain_responses(outcome)

    def _response_batch(self) -> Any:
        """The responder queue's one-transaction block (``ApprovalQueue.batch``), or a no-op without one."""
        batch = getattr(self.responder.queue, "batch", None)
        return batch() if callable(batch) else nullcontext()

    def _remember_scores(self, flows: pd.DataFrame, scores: np.ndarray) -> None:
        """Keep the model's score of recent flows (bounded) so Suricata alerts on them can be fused."""
        if "uid" not in flows.columns:
            return
        self._flow_scores.update(zip(flows["uid"].astype(str).tolist(), scores.tolist(), strict=True))
        while len(self._flow_scores) > _FLOW_SCORE_MEMORY:
            self._flow_scores.popitem(last=False)

    def _process_signatures(self, signatures: Sequence[Alert], outcome: BatchOutcome) -> None:
        """Record Suricata signature alerts, each fused with the model's verdict on its flow, and correlate."""
        created = self.clock()
        fused = []
        for a in signatures:
            seen = self._flow_scores.get(str(a.flow_id))
            fused.append(fuse_signature(a, seen, None if seen is None else self.detector.threshold, self.model_id))
        indices = self._append_many([("alert", a.to_ecs(created=created), [self.start_index]) for a in fused])
        self._correlate_and_respond(fused, indices, outcome, created)

    def _publish(self, outcome: BatchOutcome, created: float,
                 alert_docs: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Hand the batch's alerts and incident versions to the sinks; a failing sink is recorded, never fatal."""
        if not len(self.sinks):
            return
        docs = ([dict(d) for d in alert_docs] if alert_docs is not None
                else [a.to_ecs(created=created) for _, a in outcome.alerts])
        docs += [inc.to_ecs(created=created) for _, inc in outcome.incidents]
        for problem in self.sinks.publish(docs):
            # counted in summary.sinks; each distinct failure is also recorded once (a dead endpoint must not
            # flood the ledger, and it does not fail the run: the alerts are already on the ledger)
            if problem not in self._sink_errors and len(self._sink_errors) < 100:
                self._sink_errors.add(problem)
                self._append("sink.error", {"message": problem, "time": self.clock()})

    def _record_error(self, message: str, refs: Sequence[int] = ()) -> None:
        log.warning("%s", message)
        self.summary.errors.append(message)
        self._append("pipeline.error", {"message": message, "time": self.clock()}, refs)

    def _record_bad_records(self, source: FlowSource) -> None:
        """Append one ``pipeline.error`` per record the source skipped (FILE:LINE, field, problem)."""
        from trustmesh.flows import BadRecordLog

        bad_log = getattr(source, "bad_records", None)
        if not isinstance(bad_log, BadRecordLog):
            return
        bad = bad_log.drain()
        if not bad:
            return
        now = self.clock()
        room = max(0, 100 - len(self.summary.errors))  # the summary shows the first ones; the ledger has all kept
        self.summary.errors.extend(f"source {source.name}: skipped bad record {b}" for b in bad[:room])
        self._append_many([("pipeline.error", {"message": f"source {source.name}: skipped bad record {b}",
                                               "file": b.source, "line": b.line, "field": b.field, "time": now}, ())
                           for b in bad])

    def run(self, sources: Iterable[FlowSource], *, stop: threading.Event | None = None,
            on_batch: Callable[[str, BatchOutcome], None] | None = None) -> RunSummary:
        """Stream every source through :meth:`process`; stop cleanly when ``stop`` is set.

        A source that fails (a truncated capture, a log that disappears) is recorded in the ledger as a
        ``pipeline.error`` and the run goes on with the next one; what was already scored stays.

        Each source is read on its own thread (:class:`_Feeder`), so the run never blocks inside a
        source: a quiet followed log, a dead meter or an empty stream cannot delay a stop (SIGINT/SIGTERM
        or ``stop``) or the time-based checkpoint. Live, follow and stream sources are scored in
        micro-batches cut by size (``batch_size``) or by time (``micro_batch_s``).
        """
        stop = stop or threading.Event()
        started = time.perf_counter()
        with _signals_set(stop):
            for source in sources:
                if stop.is_set():
                    break
                feeder = _Feeder(source, self.config.batch_size,
                                 self.config.micro_batch_s if _is_streaming(source) else None)
                try:
                    for batch in self._paced(feeder.batches(stop, on_idle=self.maybe_checkpoint), stop):
                        self._record_bad_records(source)
                        outcome = self.process(batch, source.name)
                        feeder.acknowledge(batch)  # e.g. XACK stream records: their entries are on the ledger
                        if on_batch is not None:
                            on_batch(source.name, outcome)
                        self.expire_actions()
                        if stop.is_set():
                            break
                except TrustmeshError as exc:
                    self._record_error(f"source {source.name}: {exc}")
                except OSError as exc:
                    self._record_error(f"source {source.name}: {exc.strerror or exc}")
                finally:
                    feeder.close()
                self._record_bad_records(source)
                if self._since_checkpoint:
                    self.checkpoint()
        self.summary.interrupted = stop.is_set()
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _paced(self, batches: Iterator[pd.DataFrame], stop: threading.Event) -> Iterator[pd.DataFrame]:
        if self.config.replay == "fast":
            yield from batches
            return
        wall0: float | None = None
        ts0 = 0.0
        for batch in batches:
            if batch.empty or "ts" not in batch:
                yield batch
                continue
            batch = batch.sort_values("ts", kind="stable")
            for _, chunk in batch.groupby((batch["ts"] // 1.0), sort=True):  # release second by second
                first = float(chunk["ts"].iloc[0])
                if wall0 is None:
                    wall0, ts0 = time.monotonic(), first
                due = wall0 + (first - ts0) / self.config.replay_speed
                while not stop.is_set() and (delay := due - time.monotonic()) > 0:
                    stop.wait(min(delay, 0.5))
                if stop.is_set():
                    return
                yield chunk

    def close(self) -> RunSummary:
        """Record the end of the run, checkpoint, and close the ledger."""
        self._site.finish(self)
        self.summary.sinks = self.sinks.stats()
        self.sinks.close()
        self._append("pipeline.stop", {k: v for k, v in self.summary.to_dict().items() if k != "checkpoints"},
                     refs=[self.start_index])
        self.checkpoint()
        self.summary.last_index = self.ledger.size - 1
        self.ledger.close()
        return self.summary

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# learn-then-detect and drift (docs/baseline.md)


class _SitePhase:
    """Learn a site baseline over the first ``baseline_s`` seconds of flows, then switch to it; check drift.

    While learning, flows are still scored (and alerted) by the configured model, which becomes the
    baseline's base model. The learned model, the switch and every drift found are ledger entries
    (``model``, ``model.switch``, ``model.drift``; ``model.baseline`` while a learning attempt found too
    little traffic or the run ended first) citing the model entries they concern.
    """

    _MAX_ROWS = 500_000  # flows kept for learning (memory bound)

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.learning = config.baseline_s is not None
        self.frames: list[pd.DataFrame] = []
        self.rows = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.retry_at = 0
        self.drift_scores: list[np.ndarray] = []
        self.drift_rows = 0

    def after_batch(self, pipe: Pipeline, flows: pd.DataFrame, scores: np.ndarray) -> None:
        """Feed one scored batch: collect it while learning, else add its scores to the drift window."""
        if self.learning:
            self._collect(pipe, flows)
        elif getattr(pipe.detector, "reference", None) is not None:
            self.drift_scores.append(np.asarray(scores, dtype=np.float64))
            self.drift_rows += len(scores)
            if self.drift_rows >= self.config.drift_window:
                self._check_drift(pipe)

    def _collect(self, pipe: Pipeline, flows: pd.DataFrame) -> None:
        ts = pd.to_numeric(flows["ts"], errors="coerce") if "ts" in flows else pd.Series(dtype=float)
        if ts.notna().any():
            lo, hi = float(ts.min()), float(ts.max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        if self.rows < self._MAX_ROWS:
            self.frames.append(flows)
            self.rows += len(flows)
        assert self.config.baseline_s is not None
        span = 0.0 if self.first_ts is None or self.last_ts is None else self.last_ts - self.first_ts
        if span >= self.config.baseline_s and self.rows >= self.retry_at:
            self._switch(pipe)

    def _switch(self, pipe: Pipeline) -> None:
        from trustmesh.detect import BaseDetector, save_model
        from trustmesh.detect._baseline import fit_site_baseline

        frame = pd.concat(self.frames, ignore_index=True)
        base = pipe.detector if isinstance(pipe.detector, BaseDetector) else None
        try:
            det, report = fit_site_baseline(frame, base=base, base_model_id=pipe.model_id,
                                            duration_s=self.config.baseline_s,
                                            target_fpr=self.config.baseline_target_fpr)
        except TrustmeshError as exc:
            self.retry_at = 2 * self.rows  # try again once twice as much traffic has been seen
            log.warning("baseline not learned yet: %s", exc)
            pipe._append("model.baseline", {"status": "retrying", "message": str(exc), "flows": self.rows,
                                            "time": pipe.clock()}, refs=[pipe.model_index])  # fmt: skip
            return
        out = self.config.baseline_out or Path(self.config.state_dir) / "site-baseline.tm"
        info = report.to_dict()
        info["hosts"] = info["hosts"][:256]
        manifest = save_model(det, out, data_digest=report.data_digest,
                              metrics={"site_holdout": {"fpr": report.holdout_fpr, "n": report.n_holdout,
                                                        "target_fpr": report.target_fpr}},
                              training={"recipe": "site-baseline/1", "learned_in_run": True,
                                        "base_model_id": pipe.model_id, **info})
        old_id, old_index = pipe.model_id, pipe.model_index
        new_index = pipe._append("model", _json_ready(manifest.to_dict()), refs=[old_index])
        pipe._append("model.switch", {
            "from_model_id": old_id, "to_model_id": manifest.model_id, "model_file": str(out),
            "baseline_s": self.config.baseline_s, "flows_learned": report.n_used, "flows_excluded": report.n_excluded,
            "holdout_fpr": report.holdout_fpr, "attacks_in_window": info["attacks"], "time": pipe.clock(),
        }, refs=[old_index, new_index])  # fmt: skip
        for line in report.warnings:
            log.warning("%s", line)
        pipe.detector, pipe.manifest, pipe.model_id, pipe.model_index = det, manifest, manifest.model_id, new_index
        self.learning, self.frames, self.rows = False, [], 0

    def _check_drift(self, pipe: Pipeline) -> None:
        from trustmesh.detect._drift import score_drift

        scores = np.concatenate(self.drift_scores)
        self.drift_scores, self.drift_rows = [], 0
        report = score_drift(pipe.detector.reference, scores,  # type: ignore[attr-defined]
                             threshold=pipe.detector.threshold)
        if report is not None and report.drifted:
            log.warning("model %s: score drift (PSI %.3f, KS %.3f)", pipe.model_id, report.psi, report.ks)
            pipe._append("model.drift", {"model_id": pipe.model_id, "time": pipe.clock(), **report.to_dict()},
                         refs=[pipe.model_index])

    def finish(self, pipe: Pipeline) -> None:
        """At the end of a run: say so on the ledger when the learning period never completed."""
        if self.learning:
            span = 0.0 if self.first_ts is None or self.last_ts is None else self.last_ts - self.first_ts
            message = (f"baseline not learned: the run ended after {span:.1f} s of flows ({self.rows} flows); "
                       f"the learning period is {self.config.baseline_s} s")
            log.warning("%s", message)
            pipe._append("model.baseline", {"status": "incomplete", "message": message, "flows": self.rows,
                                            "time": pipe.clock()}, refs=[pipe.model_index])  # fmt: skip


def _remote_ledger(config: PipelineConfig) -> Ledger:
    """A client of ``trustmesh ledger serve`` (signed requests, idempotency keys) in place of a local log."""
    from trustmesh._remote_ledger import RemoteLedger
    from trustmesh.ledger import NoteSigner

    assert config.ledger_url is not None and config.ledger_key is not None
    if not Path(config.ledger_key).is_file():
        raise ConfigError(f"{config.ledger_key}: ledger_key not found (a client signing key file)")
    remote = RemoteLedger(config.ledger_url, NoteSigner.load(Path(config.ledger_key)), config.origin,
                          blob_dir=Path(config.state_dir) / "blobs")
    remote.latest_checkpoint()  # fails early, naming the URL, when the server is unreachable or serves another log
    # the pipeline uses only append/checkpoint/put_blob/size/origin/close, which RemoteLedger provides
    return remote  # type: ignore[return-value]


def _open_or_create(directory: Path, origin: str) -> Ledger:
    try:
        ledger = Ledger.open(directory)
    except InputError:
        return Ledger.create(directory, origin)
    if ledger.origin != origin:
        ledger.close()
        raise ConfigError(f"{directory}: ledger origin is {ledger.origin!r}, configuration says {origin!r}")
    return ledger


def _actions(config: PipelineConfig) -> dict[str, Action]:
    nft = NftablesAction(config.nft_table, config.nft_set, config.nft_netns)
    actions: dict[str, Action] = {"nftables": nft, "notify": NotifyAction("log")}
    if config.webhook_url:
        actions["webhook"] = WebhookAction(config.webhook_url)
    if config.mqtt_broker:
        isolation = NftablesAction(config.nft_table, "quarantine", config.nft_netns)
        actions["quarantine"] = QuarantineAction(config.mqtt_broker, config.mqtt_port, config.mqtt_topic,
                                                 isolation=isolation)
    return actions


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into ``stop.set()`` while a run is in progress (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            # a forked helper (nfstream's meter) inherited this handler: let it die as it would by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        log.warning("signal %d: finishing the current batch, then checkpointing", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_DONE = object()
_STREAMING_PREFIXES = ("iface:", "follow:", "redis:", "rediss:")


def _is_streaming(source: FlowSource) -> bool:
    """Whether a source never ends on its own (live capture, followed log, stream): micro-batch it."""
    return source.name.startswith(_STREAMING_PREFIXES) or bool(getattr(source, "streaming", False))


def _acks(frame: pd.DataFrame) -> list[Any]:
    """Acknowledgement tokens a frame carries (plain data: pandas deep-copies ``attrs``)."""
    many = frame.attrs.get("trustmesh_acks")
    if many:
        return list(many)
    return [frame.attrs["trustmesh_ack"]] if "trustmesh_ack" in frame.attrs else []


class _Feeder:
    """Read one source on a thread; hand the runner micro-batches cut by size or by time.

    The runner waits on a queue with a short timeout instead of inside the source, so a source that
    blocks (a quiet log, a dead meter, an empty stream) never delays a stop or a time-based checkpoint.
    With ``max_wait_s`` (streaming sources) frames that arrive within that long of the first one are
    merged, up to ``max_rows``: a burst is scored in one batch, a lone flow waits at most ``max_wait_s``.
    Without it, each frame is handed over as read (file sources already come in full batches). The
    queue is bounded, so a reader that gets ahead waits: memory stays bounded and a slow scorer slows
    the reader (back-pressure). Frames may carry ``attrs["trustmesh_ack"]``, a token the runner hands
    back to the source's ``acknowledge(token)`` (:meth:`acknowledge`) once the frame's entries are on
    the ledger (a stream source then XACKs the records).
    """

    _TICK_S = 0.1  # how often the runner wakes while a source is quiet

    def __init__(self, source: FlowSource, max_rows: int, max_wait_s: float | None) -> None:
        import queue

        self.source, self.max_rows, self.max_wait_s = source, max_rows, max_wait_s
        self._q: queue.Queue[object] = queue.Queue(maxsize=64)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"trustmesh-source-{source.name[:40]}", daemon=True)

    def _put(self, item: object) -> bool:
        import queue

        while not self._closed.is_set():
            try:
                self._q.put(item, timeout=self._TICK_S)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        batches = self.source.iter_batches(self.max_rows)
        try:
            for batch in batches:
                if not self._put(batch):
                    break
        except BaseException as exc:  # handed to the runner, which records it in the pipeline's thread
            self._put(exc)
        finally:
            close = getattr(batches, "close", None)
            if callable(close):
                try:
                    close()  # a generator's finally blocks stop meters and close files
                except Exception:  # noqa: BLE001 - closing is best effort once the run is over
                    log.debug("closing source %s failed", self.source.name, exc_info=True)
        self._put(_DONE)

    def batches(self, stop: threading.Event, on_idle: Callable[[], object] | None = None) -> Iterator[pd.DataFrame]:
        """Yield (merged) frames until the source ends or ``stop`` is set; call ``on_idle`` while waiting."""
        import queue

        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()
        held: object | None = None
        while not stop.is_set():
            if held is not None:
                item, held = held, None
            else:
                try:
                    item = self._q.get(timeout=self._TICK_S)
                except queue.Empty:
                    if on_idle is not None:
                        on_idle()
                    continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            if not isinstance(item, pd.DataFrame):
                continue
            parts = [item]
            rows = len(item)
            if self.max_wait_s is not None and not (item.empty and item.attrs):
                deadline = time.monotonic() + self.max_wait_s
                while rows < self.max_rows:
                    wait = deadline - time.monotonic()
                    try:
                        more = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(more, pd.DataFrame) or (more.empty and more.attrs):
                        held = more  # the end, an error or a carrier frame (EVE alert events): after this batch
                        break
                    parts.append(more)
                    rows += len(more)
            yield parts[0] if len(parts) == 1 else _merge(parts)

    def acknowledge(self, batch: pd.DataFrame) -> None:
        """Hand every ack token the frame (or the frames merged into it) carries back to the source."""
        tokens = _acks(batch)
        ack = getattr(self.source, "acknowledge", None)
        if tokens and callable(ack):
            for token in tokens:
                ack(token)

    def close(self) -> None:
        """Tell the reader thread to stop at its next step (a blocked source is left to its own timeouts)."""
        self._closed.set()


def _merge(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate frames, keeping every part's acknowledgement token."""
    frame = pd.concat([p for p in parts if len(p.columns)], ignore_index=True)
    acks = [a for p in parts for a in _acks(p)]
    frame.attrs = {"trustmesh_acks": tuple(acks)} if acks else {}
    carried = [a for p in parts for a in p.attrs.get("suricata_alerts", ())]
    if carried:  # EVE alert events read with these frames (follow mode)
        frame.attrs["suricata_alerts"] = carried
    return frame


def open_sources(specs: Sequence[str], config: PipelineConfig | None = None) -> list[FlowSource]:
    """Wrap each source spec lazily: a path (pcap, Zeek dir/log, EVE file, table), ``iface:NAME`` (live
    capture) or ``follow:PATH`` (tail a growing Zeek conn.log, Zeek log folder or Suricata EVE file)."""
    idle = config.live_idle_timeout if config else 1
    active = config.live_active_timeout if config else 30
    early = config.early_packets if config else 1000
    fanout = config.early_fanout if config else 32
    return [LazySource(spec, idle, active, early, fanout) for spec in specs]
