"""``trustmesh demo``: the whole trust loop on the real datasets, in a few minutes, without root.

Trains (or reuses the cached) default detector, replays every registered attack capture through the
pipeline with dry-run actions, writes everything to a fresh ledger, signs checkpoints, proves one
action's inclusion and the consistency of two checkpoints, shows that a tampered copy of the ledger
fails its audit, anchors the last checkpoint on the embedded chain (when the chain extra is
installed), and writes ``report.html`` and ``summary.json``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import shutil
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustmesh.config import DATA_HINT, find_data_dir
from trustmesh.errors import DatasetError, TrustmeshError, VerificationError
from trustmesh.flows import DATASETS, dataset_path, open_source, verify_dataset
from trustmesh.ledger import Ledger, audit, verify_consistency, verify_inclusion
from trustmesh.pipeline import BatchOutcome, Pipeline, PipelineConfig

__all__ = ["DemoResult", "PcapOutcome", "run_demo"]

log = logging.getLogger(__name__)

ORIGIN = "trustmesh.demo/log"


@dataclass(slots=True)
class PcapOutcome:
    """What the demo saw in one capture, against its documented ground truth."""

    name: str
    description: str
    flows: int = 0
    alerts: int = 0
    attackers: tuple[str, ...] = ()
    in_ip_flows: bool = True
    flagged_hosts: Counter[str] = field(default_factory=Counter)
    scores: list[float] = field(default_factory=list)
    malicious_flows: int = 0  # flows the documented ground truth calls malicious
    true_alerts: int = 0  # alerts on those flows
    incidents: dict[str, tuple[float, float, str]] = field(default_factory=dict)  # id -> (first, last, label)
    start: float | None = None
    error: str | None = None

    @property
    def attackers_flagged(self) -> list[str]:
        """Documented attackers that appear as the source or destination of an alert."""
        return [a for a in self.attackers if a in self.flagged_hosts]

    @property
    def other_hosts_flagged(self) -> list[str]:
        """Hosts flagged that are not documented attackers (victims of scans count here too)."""
        return sorted(h for h in self.flagged_hosts if h not in self.attackers)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "name": self.name, "flows": self.flows, "alerts": self.alerts,
            "attackers": list(self.attackers), "attackers_flagged": self.attackers_flagged,
            "in_ip_flows": self.in_ip_flows, "other_sources_flagged": self.other_hosts_flagged[:50],
            "n_other_sources_flagged": len(self.other_hosts_flagged), "malicious_flows": self.malicious_flows,
            "alerts_on_malicious_flows": self.true_alerts, "alerts_on_other_flows": self.alerts - self.true_alerts,
            "error": self.error,
        }


@dataclass(slots=True)
class DemoResult:
    """Where the demo wrote its outputs and what each step found."""

    out_dir: Path
    ledger_dir: Path
    report: Path
    summary: dict[str, Any]
    checks: dict[str, str]


Step = Callable[[str], None]


def _port(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _require_data(data_dir: Path | None) -> Path:
    root = find_data_dir(data_dir)
    if root is None or not root.is_dir():
        raise DatasetError(f"no dataset folder found; {DATA_HINT}")
    return root


def run_demo(out_dir: Path, data_dir: Path | None = None, *, step: Step | None = None,
             on_batch: Callable[[str, BatchOutcome], None] | None = None, anchor: bool = True) -> DemoResult:
    """Run the demo end to end and return what it found; raise a TrustmeshError on missing data."""
    say: Step = step or (lambda msg: log.info("%s", msg))
    root = _require_data(data_dir)
    pcaps = sorted(n for n, spec in DATASETS.items() if spec.kind == "pcap")
    problems: dict[str, str] = {}  # capture -> why it cannot be used (checked once, up front)
    for name in pcaps:
        try:
            verify_dataset(name, root)
        except DatasetError as exc:
            problems[name] = str(exc)
    missing = list(problems.values())
    if len(problems) == len(pcaps):
        raise DatasetError(f"none of the demo captures is usable in {root}: {missing[0]}; {DATA_HINT}")

    out_dir = Path(out_dir)
    ledger_dir = out_dir / "ledger"
    state_dir = out_dir / "state"
    for d in (ledger_dir, state_dir):
        if d.exists():
            shutil.rmtree(d)  # each demo run starts a fresh log; the model cache is kept elsewhere
    out_dir.mkdir(parents=True, exist_ok=True)

    say("loading the default detector (trained on TON_IoT flows; cached after the first run)")
    # every action is dry-run: the webhook and MQTT endpoints below are configured so the playbooks'
    # steps can be decided and recorded, but nothing is ever sent to them
    config = PipelineConfig(ledger_dir=ledger_dir, state_dir=state_dir, origin=ORIGIN, data_dir=root,
                            batch_size=2048, checkpoint_every=1_000_000, enforce=False,
                            webhook_url="http://127.0.0.1:9/trustmesh-demo", mqtt_broker="127.0.0.1")
    pipeline = Pipeline.from_config(config)
    outcomes: list[PcapOutcome] = []
    action_indices: list[int] = []
    checkpoints = []
    t0 = time.perf_counter()
    try:
        for name in pcaps:
            spec = DATASETS[name]
            gt = spec.ground_truth
            outcome = PcapOutcome(name=name, description=spec.description,
                                  attackers=tuple(gt.attackers) if gt else (),
                                  in_ip_flows=gt.in_ip_flows if gt else True)
            outcomes.append(outcome)
            if name in problems:
                outcome.error = problems[name]
                continue
            path = dataset_path(name, root)
            say(f"replaying {path.name}")

            def seen(src: str, batch: BatchOutcome, outcome: PcapOutcome = outcome) -> None:
                outcome.flows += batch.flows
                outcome.alerts += len(batch.alerts)
                outcome.scores.extend(float(s) for s in batch.scores)
                if gt is not None and batch.flows:
                    flows = batch.frame
                    bad = [gt.is_malicious_flow(str(r.src_ip), str(r.dst_ip), _port(r.src_port), _port(r.dst_port))
                           for r in flows[["src_ip", "dst_ip", "src_port", "dst_port"]].itertuples(index=False)]
                    outcome.malicious_flows += sum(bad)
                    first = float(flows["ts"].min())
                    outcome.start = first if outcome.start is None else min(outcome.start, first)
                for _, alert in batch.alerts:
                    if alert.source_ip:
                        outcome.flagged_hosts[alert.source_ip] += 1
                    if gt is not None and gt.is_malicious_flow(alert.source_ip or "", alert.destination_ip or "",
                                                               alert.source_port or -1,
                                                               alert.destination_port or -1):
                        outcome.true_alerts += 1
                for _, inc in batch.incidents:
                    label = f"{name.removeprefix('pcap-')}: {inc.technique_id or '-'} {inc.source_ips[0] if inc.source_ips else ''}"
                    outcome.incidents[inc.incident_id] = (inc.first_seen, inc.last_seen, label)
                for index, rec in batch.records:
                    if rec.get("kind") == "action_result":
                        action_indices.append(index)
                if on_batch is not None:
                    on_batch(src, batch)

            pipeline.run([open_source(path)], on_batch=seen)
            checkpoints.append(pipeline.summary.checkpoints[-1] if pipeline.summary.checkpoints else None)
        summary = pipeline.close()
    except BaseException:
        pipeline.ledger.close()
        raise
    elapsed = time.perf_counter() - t0

    checks: dict[str, str] = {}
    say("verifying: inclusion proof of one action, consistency of two checkpoints, full audit")
    proofs = _prove(ledger_dir, action_indices, checks)
    say("tampering with a copy of the ledger and auditing it")
    checks["tamper"] = _tamper_check(ledger_dir)
    anchor_doc: dict[str, Any] | None = None
    if anchor:
        say("anchoring the last checkpoint on the embedded chain")
        anchor_doc = _anchor(ledger_dir, checks)

    with Ledger.open(ledger_dir, read_only=True) as ledger:
        kinds = Counter(ledger.entry(i).kind for i in range(ledger.size))
        latest = ledger.latest_checkpoint()
        note = latest.to_bytes().decode() if latest is not None else ""
        incidents = _latest_incidents(ledger)
        actions = _actions(ledger)
    doc = {
        "seconds": round(elapsed, 2),
        "data_dir": str(root),
        "model_id": pipeline.model_id,
        "threshold": float(pipeline.detector.threshold),
        "pipeline": summary.to_dict(),
        "pcaps": [o.to_dict() for o in outcomes],
        "ledger": {"dir": str(ledger_dir), "entries": sum(kinds.values()), "kinds": dict(kinds),
                   "checkpoint": note},
        "proofs": proofs,
        "checks": checks,
        "anchor": anchor_doc,
        "incidents": incidents[:200],
        "actions": actions[:200],
        "missing": missing,
    }
    (out_dir / "summary.json").write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    report = out_dir / "report.html"
    report.write_text(render_report(doc, outcomes, kinds), encoding="utf-8")
    return DemoResult(out_dir=out_dir, ledger_dir=ledger_dir, report=report, summary=doc, checks=checks)


# --------------------------------------------------------------------------------------------------
# verification steps


def _prove(ledger_dir: Path, action_indices: list[int], checks: dict[str, str]) -> dict[str, Any]:
    with Ledger.open(ledger_dir, read_only=True) as ledger:
        cps = ledger.checkpoints()
        latest = cps[-1]
        index = action_indices[0] if action_indices else ledger.size - 1
        proof = ledger.prove_inclusion(index, latest.size)
        verify_inclusion(proof, latest, ledger.entry_bytes(index))
        checks["inclusion"] = f"ok: leaf {index} ({ledger.entry(index).kind}) is in the tree of size {latest.size}"
        first = next((c for c in cps if c.size < latest.size), cps[0])
        cons = ledger.prove_consistency(first.size, latest.size)
        verify_consistency(cons, first, latest)
        checks["consistency"] = f"ok: checkpoint {first.size} -> {latest.size} ({len(cons.path)} hashes)"
    report = audit(ledger_dir, trusted_checkpoint=first)
    checks["audit"] = f"ok: {report.size} entries, {report.checkpoints_verified} checkpoints recomputed"
    return {"inclusion": {"index": index, "tree_size": latest.size, "path_length": len(proof.audit_path)},
            "consistency": {"from": first.size, "to": latest.size, "path_length": len(cons.path)}}


def _tamper_check(ledger_dir: Path) -> str:
    """Edit one alert's score inside a copy of the log's entry bundles; the audit must reject it."""
    with tempfile.TemporaryDirectory(prefix="trustmesh-tamper-") as tmp:
        copy = Path(tmp) / "ledger"
        shutil.copytree(ledger_dir, copy)
        db = sqlite3.connect(copy / "ledger.sqlite")
        try:
            rows = db.execute("SELECT idx, data FROM bundles ORDER BY idx").fetchall()
            for idx, data in rows:
                pos = bytes(data).find(b'"score":0.')
                if pos >= 0:
                    raw = bytearray(data)
                    digit = pos + len(b'"score":0.')
                    raw[digit] = ord("1") if raw[digit] != ord("1") else ord("2")
                    db.execute("UPDATE bundles SET data = ? WHERE idx = ?", (bytes(raw), idx))
                    db.commit()
                    break
            else:
                return "skipped: no alert entry to tamper with"
        finally:
            db.close()
        try:
            audit(copy)
        except VerificationError as exc:
            return f"ok: tampered copy rejected with {type(exc).__name__}: {exc}"
        return "FAILED: the tampered copy passed its audit"


def _anchor(ledger_dir: Path, checks: dict[str, str]) -> dict[str, Any] | None:
    try:
        from trustmesh.ledger.anchor import anchor_ledger, verify_anchor
    except ImportError as exc:  # the chain extra is optional
        checks["anchor"] = f"skipped: {exc}"
        return None
    try:
        result = anchor_ledger(ledger_dir, "embedded")
        verified = verify_anchor(ledger_dir, "embedded")
    except ImportError as exc:
        checks["anchor"] = f"skipped: install the chain extra ({exc})"
        return None
    except TrustmeshError as exc:
        checks["anchor"] = f"FAILED: {exc}"
        return None
    checks["anchor"] = f"ok: size {result.size} anchored in block {result.block_number} ({result.gas_used} gas)"
    return {"anchor": result.to_dict(), "verify": verified}


def _latest_incidents(ledger: Ledger) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for i in range(ledger.size):
        e = ledger.entry(i)
        if e.kind == "incident":
            latest[str(e.payload["incident_id"])] = {"index": i, **e.payload}
    return sorted(latest.values(), key=lambda d: (-int(d["severity"]), -float(d["confidence"])))


def _actions(ledger: Ledger) -> list[dict[str, Any]]:
    out = []
    for i in range(ledger.size):
        e = ledger.entry(i)
        if e.kind in {"decision", "action_result"}:
            out.append({"index": i, "kind": e.kind, **e.payload})
    return out


# --------------------------------------------------------------------------------------------------
# report


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(doc: dict[str, Any], outcomes: list[PcapOutcome], kinds: Counter[str]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    used = [o for o in outcomes if o.scores]
    fig, axes = plt.subplots(max(1, (len(used) + 2) // 3), 3, figsize=(12, 2.6 * max(1, (len(used) + 2) // 3)),
                             squeeze=False)
    for ax, o in zip(axes.flat, used, strict=False):
        ax.hist(o.scores, bins=np.linspace(0, 1, 41), color="#4a78b5")
        ax.axvline(doc["threshold"], color="#c0392b", linestyle="--", linewidth=1)
        ax.set_title(o.name.removeprefix("pcap-"), fontsize=9)
        ax.set_yscale("log")
    for ax in list(axes.flat)[len(used):]:
        ax.axis("off")
    fig.suptitle("Flow scores per capture (dashed: alert threshold)")
    fig.tight_layout()
    plots["scores"] = _png(fig)
    plt.close(fig)

    bars = [(first - o.start, last - first, label, o.name)
            for o in outcomes if o.start is not None for first, last, label in o.incidents.values()]
    fig, ax = plt.subplots(figsize=(12, 0.6 + 0.32 * max(len(bars), 1)))
    for y, (offset, width, label, _capture) in enumerate(sorted(bars, key=lambda b: (b[3], b[0]))):
        ax.barh(y, max(width, 0.3), left=offset, height=0.6, color="#c0392b" if " T1" in label else "#e67e22")
        ax.text(offset + max(width, 0.3) + 0.5, y, label, va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("seconds since the capture's first flow")
    ax.set_title("Incidents per capture (red: mapped to an ATT&CK technique)")
    plots["timeline"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3))
    labels = sorted(kinds, key=lambda k: -kinds[k])
    ax.barh(labels, [kinds[k] for k in labels], color="#27ae60")
    ax.set_xscale("log")
    ax.set_title("Ledger entries by kind")
    plots["ledger"] = _png(fig)
    plt.close(fig)
    return plots


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(doc: dict[str, Any], outcomes: list[PcapOutcome], kinds: Counter[str]) -> str:
    """Render the self-contained HTML report (plots inline as PNG data URIs)."""
    plots = _plots(doc, outcomes, kinds)
    pcap_rows: list[list[Any]] = []
    for o in outcomes:
        if o.error:
            pcap_rows.append([o.name, "-", "-", "-", "-", "-", ", ".join(o.attackers), "missing", "-", o.error])
            continue
        found = o.attackers_flagged
        verdict = ("yes" if found else "no") if o.in_ip_flows else "n/a (link-layer attack, no IP flows)"
        pcap_rows.append([o.name, o.flows, o.malicious_flows, o.alerts, o.true_alerts, o.alerts - o.true_alerts,
                          ", ".join(o.attackers) or "-", verdict, len(o.other_hosts_flagged), o.description])
    by_action: dict[tuple[str, str], int] = defaultdict(int)
    for a in doc["actions"]:
        by_action[(str(a.get("action") or "-"), str(a.get("status")))] += 1
    inc_rows = [[i["index"], i["incident_id"], i.get("technique_id") or "-", i.get("predicted_class") or "-",
                 i["severity"], f"{float(i['confidence']):.3f}", ", ".join(i.get("source_ips", [])[:3]),
                 len(i.get("alert_ids", []))] for i in doc["incidents"][:40]]
    act_rows = [[a["index"], a["kind"], a.get("action") or "-", a.get("status"), ", ".join(a.get("targets", [])[:3]),
                 (a.get("reason") or a.get("detail") or "")[:120]] for a in doc["actions"][:60]]
    check_rows = [[k, v] for k, v in doc["checks"].items()]
    p = doc["pipeline"]
    summary = _table(["flows", "alerts", "incidents", "decisions", "action results", "ledger entries", "seconds"],
                     [[p["flows"], p["alerts"], p["incidents"], p["decisions"], p["action_results"],
                       doc["ledger"]["entries"], doc["seconds"]]])
    css = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
           "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
           "text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;"
           "overflow-x:auto}img{max-width:100%}.ok{color:#1e7e34}.bad{color:#b02a37}")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>trustmesh demo report</title><style>{css}</style></head><body>
<h1>trustmesh demo report</h1>
<p>Model <code>{html.escape(doc['model_id'])}</code>, alert threshold {doc['threshold']:.4f}, data from
<code>{html.escape(doc['data_dir'])}</code>. Every response ran in <b>dry-run</b>.</p>
<section id="summary"><h2>Summary</h2>{summary}</section>
<section id="detections"><h2>Detections against documented ground truth</h2>
<p>"Malicious flows" are the flows the capture's documented ground truth attributes to the attack
(between a documented attacker and victim, on the documented ports); alerts on any other flow are
counted as false alerts, even where the ground truth is incomplete (an infected host's other traffic).</p>
{_table(["capture", "flows", "malicious flows", "alerts", "on malicious flows", "on other flows",
         "documented attackers", "attacker flagged", "other sources flagged", "what it is"], pcap_rows)}
<img alt="score histograms" src="{plots['scores']}"></section>
<section id="incidents"><h2>Incidents</h2><img alt="incident timeline" src="{plots['timeline']}">
{_table(["leaf", "incident", "ATT&CK", "class", "severity", "confidence", "sources", "alerts"], inc_rows)}</section>
<section id="actions"><h2>Actions it would take (dry-run)</h2>
{_table(["action", "status", "count"], [[k[0], k[1], v] for k, v in sorted(by_action.items())])}
{_table(["leaf", "record", "action", "status", "targets", "why"], act_rows)}</section>
<section id="ledger"><h2>Ledger</h2><img alt="ledger entries" src="{plots['ledger']}">
<p>Latest signed checkpoint (C2SP signed note):</p><pre>{html.escape(doc['ledger']['checkpoint'])}</pre>
{_table(["check", "result"], check_rows)}</section>
</body></html>
"""
