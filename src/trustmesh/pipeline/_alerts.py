"""Alert building: flows and scores -> model alerts, behaviour verdicts -> behaviour alerts, alert policy."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trustmesh.detect import BehaviourConfig, BehaviourEngine, BehaviourVerdict, Detector, FlowRef, Manifest
from trustmesh._ecs import alert_severity
from trustmesh.records import Alert, FlowId, ModelId
from trustmesh.respond._correlate import technique_for  # class label -> ATT&CK id, for alert severity

# --------------------------------------------------------------------------------------------------
# flows -> alerts


def _opt_int(value: Any) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else int(f)


def _opt_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return None if text in {"", "-", "nan", "<NA>"} else text


def alerts_from_scores(
    flows: pd.DataFrame,
    scores: np.ndarray,
    *,
    threshold: float,
    model_id: str,
    source_name: str,
    classes: Sequence[str | None] | None = None,
) -> list[Alert]:
    """Make one Alert per flow whose score is at or above ``threshold``.

    ``flows`` holds canonical flow columns (ts, uid, src_ip, ...); ``classes`` optionally gives the
    predicted class of each flow. Alert ids are deterministic: the same flow scored by the same model
    from the same source always gets the same id.
    """
    if len(flows) != len(scores):
        raise ValueError(f"flows and scores differ in length: {len(flows)} != {len(scores)}")
    hits = np.flatnonzero(np.asarray(scores) >= threshold)
    if not len(hits):
        return []
    # one column at a time, the hits only (row-by-row .iloc costs ~50 us a row)
    sub = flows.iloc[hits]

    def column(name: str) -> list[Any]:
        return sub[name].tolist() if name in sub.columns else [None] * len(hits)

    uids, tss = column("uid"), column("ts")
    src, sport, dst, dport = column("src_ip"), column("src_port"), column("dst_ip"), column("dst_port")
    proto, service = column("proto"), column("service")
    clipped = np.clip(np.asarray(scores, dtype=np.float64)[hits], 0.0, 1.0).tolist()
    thr = float(threshold)
    techniques: dict[str | None, str | None] = {}
    alerts: list[Alert] = []
    for j, i in enumerate(hits.tolist()):
        uid = _opt_str(uids[j]) or f"row{i}"
        ts = tss[j]
        digest = hashlib.sha256(f"{model_id}\x00{source_name}\x00{uid}".encode()).hexdigest()[:20]
        predicted = None if classes is None else _opt_str(classes[i])
        if predicted not in techniques:
            techniques[predicted] = technique_for(predicted)
        score = clipped[j]
        alerts.append(Alert(
            alert_id=f"alr-{digest}",
            timestamp=float(ts) if ts is not None and not pd.isna(ts) else 0.0,
            flow_id=FlowId(uid),
            model_id=ModelId(model_id),
            score=score,
            threshold=thr,
            source_ip=_opt_str(src[j]),
            source_port=_opt_int(sport[j]),
            destination_ip=_opt_str(dst[j]),
            destination_port=_opt_int(dport[j]),
            transport=_opt_str(proto[j]),
            application=_opt_str(service[j]),
            predicted_class=predicted,
            severity=alert_severity(score, thr, techniques[predicted]),
            source_name=source_name,
            detector="ml",
        ))
    return alerts


#: seconds before a verdict's first and after its last evidence flow in which it vouches for model alerts
CORROBORATION_MARGIN_S = 1.0


def ml_alert_mask(flows: pd.DataFrame, scores: np.ndarray, threshold: float, policy: Mapping[str, Any] | None,
                  actors: Mapping[str, tuple[float, float, frozenset[str]]] | None = None) -> np.ndarray:
    """Return which flows at or above ``threshold`` may alert under a model's alert policy.

    ``policy`` comes from the model manifest (``training.alert_policy``). ``{"mode": "corroborated",
    "standalone": S}`` (the default pcap model, docs/detectors.md) lets a flow alert only when it goes
    from a behaviour verdict's actor to one of its victims within the verdict's span (``actors``: host ->
    (first_seen, last_seen, victims), widened by ``CORROBORATION_MARGIN_S``), or when its score reaches
    ``S`` (None: never alone). The actor's other traffic (a compromised device keeps sending its
    telemetry) stays unalerted. Without a policy every flow at or above the threshold alerts.
    """
    hits = np.asarray(scores, dtype=np.float64) >= threshold
    if not policy or policy.get("mode") != "corroborated" or not hits.any():
        return hits
    standalone = policy.get("standalone")
    strong = hits & (np.asarray(scores) >= float(standalone)) if standalone is not None else np.zeros_like(hits)
    spans = actors or {}
    src = flows["src_ip"].astype(str).to_numpy() if "src_ip" in flows.columns else np.full(len(flows), "")
    dst = flows["dst_ip"].astype(str).to_numpy() if "dst_ip" in flows.columns else np.full(len(flows), "")
    ts = pd.to_numeric(flows["ts"], errors="coerce").to_numpy(dtype=np.float64) if "ts" in flows.columns \
        else np.full(len(flows), np.nan)
    m = CORROBORATION_MARGIN_S
    corroborated = np.fromiter(
        (a in spans and spans[a][0] - m <= t <= spans[a][1] + m and b in spans[a][2]
         for a, b, t in zip(src, dst, ts, strict=True)),
        dtype=bool, count=len(flows))
    out: np.ndarray = hits & (corroborated | strong)
    return out


def adopt_techniques(alerts: list[Alert], vouch: Mapping[tuple[str, str], tuple[str, str]]) -> list[Alert]:
    """Give corroborated model alerts the technique of the verdict that vouches for them.

    ``vouch`` maps (actor, victim) to the (technique id, name) of the latest verdict between them. The
    model's own class stays in ``predicted_class``; with the verdict's technique the alert joins the
    verdict's incident instead of opening one under a class learnt on another network.
    """
    out = []
    for a in alerts:
        hit = vouch.get((a.source_ip or "", a.destination_ip or ""))
        out.append(dataclasses.replace(a, technique_id=hit[0], technique_name=hit[1]) if hit else a)
    return out


def _vouch(verdicts: Iterable[BehaviourVerdict], into: dict[tuple[str, str], tuple[str, str]] | None = None
           ) -> dict[tuple[str, str], tuple[str, str]]:
    out = {} if into is None else into
    for v in verdicts:
        for victim in v.victims:
            out[(v.host, victim)] = (v.technique_id, v.technique_name)
    return out


def _spans(verdicts: Iterable[BehaviourVerdict], into: dict[str, tuple[float, float, frozenset[str]]] | None = None
           ) -> dict[str, tuple[float, float, frozenset[str]]]:
    out = {} if into is None else into
    for v in verdicts:
        lo, hi, victims = out.get(v.host, (v.first_seen, v.last_seen, frozenset()))
        out[v.host] = (min(lo, v.first_seen), max(hi, v.last_seen), victims | frozenset(v.victims))
    return out


#: model id of behaviour alerts (the engine's settings are recorded on the ledger under it)
BEHAVIOUR_MODEL_ID = "behaviour-v1"


def alerts_from_verdicts(
    verdicts: Iterable[BehaviourVerdict],
    flows: pd.DataFrame | None,
    *,
    source_name: str,
    refs: Mapping[str, FlowRef] | None = None,
    seen: set[tuple[str, str]] | None = None,
) -> list[Alert]:
    """Make one Alert per evidence flow of each behaviour verdict (skipping (kind, flow) pairs in ``seen``).

    Flow details come from ``flows`` (the current batch) or, for evidence flows of earlier batches, from
    ``refs`` (``BehaviourEngine.flow_refs``). Alert ids are deterministic (class, source and flow uid).
    Severity follows the verdict's class and confidence (``BehaviourVerdict.severity``).
    """
    rows: dict[str, int] = {}
    if flows is not None and "uid" in flows.columns:
        rows = {str(u): i for i, u in enumerate(flows["uid"].tolist())}
    cols: dict[str, list[Any]] = {}  # the batch's columns as lists, made on first use (no per-row iloc)

    def cell(name: str, i: int) -> Any:
        if name not in cols:
            assert flows is not None
            cols[name] = flows[name].tolist() if name in flows.columns else [None] * len(flows)
        return cols[name][i]
    refs = refs or {}
    alerts: list[Alert] = []
    for v in verdicts:
        extra = {"behaviour": {"host": v.host, "victims": len(v.victims), "first_seen": v.first_seen,
                               "last_seen": v.last_seen, **{k: v.evidence[k] for k in sorted(v.evidence)}}}
        for uid in v.flow_uids:
            if seen is not None:
                if (v.kind, uid) in seen:
                    continue
                seen.add((v.kind, uid))
            key = f"{BEHAVIOUR_MODEL_ID}\x00{v.kind}\x00{source_name}\x00{uid}"
            common: dict[str, Any] = dict(
                alert_id=f"alr-{hashlib.sha256(key.encode()).hexdigest()[:20]}", flow_id=FlowId(uid),
                model_id=ModelId(BEHAVIOUR_MODEL_ID), score=float(v.confidence), threshold=0.5,
                predicted_class=v.kind, severity=v.severity, source_name=source_name, extra=extra,
                technique_id=v.technique_id, technique_name=v.technique_name, detector="behaviour",
            )  # fmt: skip
            if flows is not None and uid in rows:
                i = rows[uid]
                ts = cell("ts", i)
                src, dst = _opt_str(cell("src_ip", i)), _opt_str(cell("dst_ip", i))
                sport, dport = _opt_int(cell("src_port", i)), _opt_int(cell("dst_port", i))
                if dst == v.host and src != v.host:  # a mid-stream flow the engine re-oriented
                    src, dst, sport, dport = dst, src, dport, sport
                alerts.append(Alert(
                    timestamp=float(ts) if ts is not None and not pd.isna(ts) else v.first_seen,
                    source_ip=src, source_port=sport, destination_ip=dst, destination_port=dport,
                    transport=_opt_str(cell("proto", i)), application=_opt_str(cell("service", i)), **common,
                ))  # fmt: skip
            elif uid in refs:
                r = refs[uid]
                alerts.append(Alert(
                    timestamp=r.ts, source_ip=r.src_ip, source_port=r.src_port, destination_ip=r.dst_ip,
                    destination_port=r.dst_port, transport=_opt_str(r.proto), application=_opt_str(r.service),
                    **common,
                ))  # fmt: skip
            else:  # no longer retained: the verdict itself is the evidence
                alerts.append(Alert(timestamp=v.first_seen, source_ip=v.host,
                                    destination_ip=v.victims[0] if len(v.victims) == 1 else None, **common))
    return alerts


@dataclass(slots=True)
class TableDetection:
    """What :func:`detect_flows` found in one flow table: model scores, verdicts and every alert."""

    flows: pd.DataFrame
    scores: np.ndarray
    allowed: np.ndarray  # flows whose model score may alert (threshold and the model's alert policy)
    ml_alerts: list[Alert]
    verdicts: list[BehaviourVerdict]
    behaviour_alerts: list[Alert]

    @property
    def alerts(self) -> list[Alert]:
        """Behaviour alerts, then model alerts."""
        return self.behaviour_alerts + self.ml_alerts

    def flagged_uids(self) -> set[str]:
        """Flow uids that at least one alert is about."""
        return {str(a.flow_id) for a in self.alerts}


def detect_flows(flows: pd.DataFrame, detector: Detector, manifest: Manifest, *, source_name: str,
                 scores: np.ndarray | None = None, classes: Sequence[str | None] | None = None,
                 behaviour: BehaviourConfig | None = None) -> TableDetection:
    """Score a whole canonical flow table with a model and the behaviour engine (``trustmesh detect``).

    ``scores``/``classes`` may be passed when already computed. Model alerts obey the manifest's alert
    policy (:func:`ml_alert_mask`), corroborated by the verdicts' hosts.
    """
    if scores is None:
        scores = np.asarray(detector.score(flows, fill_missing=True), dtype=np.float64)
    cfg = behaviour
    if cfg is None:
        raw = getattr(detector, "behaviour_config", None)
        cfg = BehaviourConfig.from_dict(raw) if isinstance(raw, Mapping) else (
            raw if isinstance(raw, BehaviourConfig) else None)
    canonical = {"ts", "src_ip", "dst_ip", "proto"} <= set(flows.columns)
    verdicts = BehaviourEngine(cfg).detect(flows) if canonical and len(flows) else []
    training = getattr(manifest, "training", None) or {}
    allowed = ml_alert_mask(flows, scores, detector.threshold, training.get("alert_policy"), _spans(verdicts))
    ml_alerts = alerts_from_scores(flows, np.where(allowed, scores, -1.0), threshold=detector.threshold,
                                   model_id=str(manifest.model_id), source_name=source_name, classes=classes)
    if (training.get("alert_policy") or {}).get("mode") == "corroborated":
        ml_alerts = adopt_techniques(ml_alerts, _vouch(verdicts))
    behaviour_alerts = alerts_from_verdicts(verdicts, flows, source_name=source_name, seen=set())
    return TableDetection(flows, scores, allowed, ml_alerts, verdicts, behaviour_alerts)


class _BehaviourStage:
    """A pipeline's behaviour engines, the (kind, flow) pairs already alerted and the model's alert policy.

    One engine per source: sources are read one after the other, and replayed captures carry their own
    clocks (years apart), so one shared clock would throw a later file's older flows away as late.
    """

    _MAX_SEEN = 1_000_000
    _MAX_ENGINES = 16

    def __init__(self, detector: Detector, manifest: Manifest) -> None:
        cfg = getattr(detector, "behaviour_config", None)  # a site baseline may carry tuned settings
        config = BehaviourConfig.from_dict(cfg) if isinstance(cfg, Mapping) else (
            cfg if isinstance(cfg, BehaviourConfig) else None)
        self.config = config or BehaviourConfig()
        self.engines: dict[str, BehaviourEngine] = {}
        self.seen: set[tuple[str, str]] = set()
        self.vouch: dict[tuple[str, str], tuple[str, str]] = {}  # (actor, victim) -> technique of the verdict
        self.actors: dict[str, tuple[float, float, frozenset[str]]] = {}  # verdict hosts -> span (corroborates model alerts)
        training = getattr(manifest, "training", None) or {}
        self.policy: dict[str, Any] = dict(training.get("alert_policy") or {})
        # (host, kind, flow uid) of the last batch's verdict evidence on contained hosts: counted, not alerted
        self.held: list[tuple[str, str, str]] = []

    def payload(self) -> dict[str, Any]:
        return {"model_id": BEHAVIOUR_MODEL_ID, "kind": "behaviour", "config": self.config.to_dict()}

    def alerts(self, flows: pd.DataFrame, source_name: str, contained: Collection[str] = ()) -> list[Alert]:
        """Update the source's engine with ``flows``; return the alerts of its new verdicts.

        The evidence of verdicts on a ``contained`` host (its drop is active) is not made into alerts:
        its (host, kind, flow uid) triples, each once, are left in ``held`` for the runner's summary.
        """
        self.held = []
        engine = self.engines.pop(source_name, None) or BehaviourEngine(self.config)
        self.engines[source_name] = engine  # most recently used last
        while len(self.engines) > self._MAX_ENGINES:
            del self.engines[next(iter(self.engines))]
        verdicts = engine.update(flows)
        if not verdicts:
            return []
        _spans(verdicts, self.actors)
        if len(self.vouch) > self._MAX_SEEN:
            self.vouch.clear()
        _vouch(verdicts, self.vouch)
        if len(self.actors) > self.config.max_hosts:
            recent = sorted(self.actors.items(), key=lambda kv: -kv[1][1])[: self.config.max_hosts]
            self.actors = dict(recent)
        if len(self.seen) > self._MAX_SEEN:
            self.seen.clear()  # bounded; at worst an evidence flow is alerted twice
        if contained:
            keep = []
            for v in verdicts:
                if v.host not in contained:
                    keep.append(v)
                    continue
                for uid in v.flow_uids:
                    if (v.kind, uid) not in self.seen:
                        self.seen.add((v.kind, uid))
                        self.held.append((v.host, v.kind, uid))
            verdicts = keep
            if not verdicts:
                return []
        batch = set(flows["uid"].astype(str)) if "uid" in flows.columns else set()
        missing = [u for v in verdicts for u in v.flow_uids if u not in batch and (v.kind, u) not in self.seen]
        refs = engine.flow_refs(missing) if missing else {}
        return alerts_from_verdicts(verdicts, flows, source_name=source_name, refs=refs, seen=self.seen)
