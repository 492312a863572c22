"""CLI commands: ``incidents list|show|approve|reject|rollback`` and ``playbook validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, guarded, print_json
from trustmesh.cli._root import app, bench_app

__all__ = ["incidents_app", "playbook_app"]

incidents_app = typer.Typer(help="Incidents and the response approval queue.", no_args_is_help=True)
playbook_app = typer.Typer(help="Response playbooks.", no_args_is_help=True)
app.add_typer(incidents_app, name="incidents")
app.add_typer(playbook_app, name="playbook")

_STATE_HELP = (
    "Response state directory (default: $TRUSTMESH_STATE_DIR, else trustmesh-state beside the ledger)."
)


def _queue(state: Path | None) -> Any:
    from trustmesh.errors import InputError
    from trustmesh.respond import ApprovalQueue, default_state_dir

    path = state if state is not None else default_state_dir()
    if not (path / "respond.sqlite3").is_file():
        raise InputError(f"{path}: no response state here (pass --state DIR or set TRUSTMESH_STATE_DIR)")
    return ApprovalQueue(path)


def _emit(records: list[Any], as_json: bool) -> None:
    if as_json:
        print_json([{"record_type": r.record_type, **r.to_dict()} for r in records])
        return
    for r in records:
        d = r.to_dict()
        what = d.get("reason") or d.get("detail") or ""
        console.print(f"{r.record_type:<14} {d.get('status', ''):<16} {d.get('action') or '':<11} {what}",
                      highlight=False, soft_wrap=True)


@incidents_app.command("list")
@guarded
def list_incidents(
    state: Path | None = typer.Option(None, "--state", help=_STATE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List incidents with their pending approvals and applied actions."""
    queue = _queue(state)
    pending: dict[str, int] = {}
    for item in queue.approvals("pending"):
        pending[item.incident_id] = pending.get(item.incident_id, 0) + 1
    active: dict[str, int] = {}
    for act in queue.actions(status="applied"):
        active[act.incident_id] = active.get(act.incident_id, 0) + 1
    rows = [{"incident_id": i.incident_id, "version": i.version, "severity": i.severity,
             "technique_id": i.technique_id, "predicted_class": i.predicted_class, "alerts": i.alert_count,
             "sources": list(i.source_ips), "last_seen": i.last_seen,
             "pending_approvals": pending.get(i.incident_id, 0), "active_actions": active.get(i.incident_id,
                                                                                              0)}
            for i in queue.incidents()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no incidents")
    for r in rows:
        console.print(f"{r['incident_id']}  sev {r['severity']}  {r['technique_id'] or '-':<9} "
                      f"{r['alerts']:>5} alerts  src {','.join(r['sources'][:3]) or '-'}  "
                      f"pending {r['pending_approvals']}  active {r['active_actions']}", highlight=False)


@incidents_app.command("show")
@guarded
def show_incident(
    incident_id: str = typer.Argument(..., help="Incident id (inc-...)."),
    state: Path | None = typer.Option(None, "--state", help=_STATE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show an incident, its records (decisions, results), approvals and actions."""
    queue = _queue(state)
    inc = queue.incident(incident_id)
    doc = {"incident": inc.to_dict(),
           "records": [{"seq": s, "record_type": t, **d} for s, t,
                       d in queue.outbox(incident_id=incident_id, include_claimed=True)],
           "approvals": [a.to_dict() for a in queue.approvals(None, incident_id)],
           "actions": [a.to_dict() for a in queue.actions(incident_id=incident_id)]}
    if as_json:
        print_json(doc)
        return
    console.print(f"[bold]{inc.incident_id}[/] v{inc.version} severity {inc.severity} "
                  f"{inc.technique_id or '-'} "
                  f"({inc.technique_name or inc.predicted_class or 'unclassified'})")
    console.print(f"  sources {', '.join(inc.source_ips) or '-'} -> {', '.join(inc.destination_ips) or '-'}; "
                  f"{inc.alert_count} alerts; confidence {inc.confidence:.3f}", highlight=False)
    for a in doc["approvals"]:
        console.print(f"  approval {a['approval_id']} {a['status']}: {a['request']['action']} "
                      f"{','.join(a['request']['targets'])}", highlight=False)
    for a in doc["actions"]:
        console.print(f"  action {a['action_id']} {a['kind']} {a['status']} {','.join(a['targets'])}",
                      highlight=False)
    for r in doc["records"]:
        console.print(f"  #{r['seq']} {r['record_type']} {r.get('status', '')} "
                      f"{r.get('reason') or r.get('detail') or ''}", highlight=False, soft_wrap=True)


_CONFIG_HELP = ("Pipeline TOML: append the decision (with your name) to its ledger now and sign a checkpoint; "
                "without it the pipeline records it at its next batch.")
_OPERATOR_HELP = "Your name, recorded with the decision (default: your login name)."


def _now(config: Path, operator: str | None, call: str, *args: Any) -> dict[str, Any]:
    """Decide through the operator API's code path: on the ledger at once, by name (docs/api.md)."""
    import getpass

    try:
        from trustmesh.api import ServeConfig
        from trustmesh.api._context import open_context
        from trustmesh.api._operator import LocalOperator
    except ImportError as exc:
        from trustmesh.errors import MissingDependencyError

        raise MissingDependencyError(exc.name or "fastapi", "api") from None
    ctx = open_context(ServeConfig.load(config))
    try:
        out: dict[str, Any] = getattr(ctx.operator, call)(LocalOperator(operator or getpass.getuser()), *args)
    finally:
        ctx.close()
    return out


def _receipt(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(out)
        return
    for r in out["records"]:
        console.print(f"#{r['leaf']:<7} {r['record_type']:<14} {r.get('status', ''):<12} "
                      f"{r.get('reason') or r.get('detail') or ''}", highlight=False, soft_wrap=True)
    console.print(f"#{out['operator_entry']:<7} operator.decision; checkpoint {out['tree_size']} signed", highlight=False)


@incidents_app.command("approve")
@guarded
def approve_action(
    approval_id: str = typer.Argument(..., help="Approval id (apr-...) from `incidents show`."),
    note: str | None = typer.Option(None, "--note", help="Why (recorded)."),
    state: Path | None = typer.Option(None, "--state", help=_STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    operator: str | None = typer.Option(None, "--operator", help=_OPERATOR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Approve a queued action and run it now (guards still apply; dry-run unless it was queued enforcing)."""
    from trustmesh.respond import approve

    if config is not None:
        _receipt(_now(config, operator, "approve", approval_id, note), as_json)
        return
    _emit(approve(_queue(state), approval_id, note, operator=operator), as_json)


@incidents_app.command("reject")
@guarded
def reject_action(
    approval_id: str = typer.Argument(..., help="Approval id (apr-...)."),
    note: str | None = typer.Option(None, "--note", help="Why (recorded)."),
    state: Path | None = typer.Option(None, "--state", help=_STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    operator: str | None = typer.Option(None, "--operator", help=_OPERATOR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Reject a queued action."""
    from trustmesh.respond import reject

    if config is not None:
        _receipt(_now(config, operator, "reject", approval_id, note), as_json)
        return
    _emit(reject(_queue(state), approval_id, note, operator=operator), as_json)


@incidents_app.command("rollback")
@guarded
def rollback_incident(
    incident_id: str = typer.Argument(..., help="Incident id (inc-...)."),
    action_id: str | None = typer.Option(None, "--action", help="Roll back only this action (act-...)."),
    state: Path | None = typer.Option(None, "--state", help=_STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    operator: str | None = typer.Option(None, "--operator", help=_OPERATOR_HELP),
    note: str | None = typer.Option(None, "--note", help="Why (recorded, with --config)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Undo an incident's actions (delete nft elements, release quarantined devices)."""
    from trustmesh.respond import rollback

    if config is not None:
        _receipt(_now(config, operator, "rollback", incident_id, action_id, note), as_json)
        return
    _emit(rollback(_queue(state), incident_id, action_id), as_json)


@playbook_app.command("validate")
@guarded
def validate_playbook(
    files: list[Path] = typer.Argument(..., help="Playbook YAML file(s) or directories."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check playbook files; print the first problem as FILE:LINE:COL: field PATH: message."""
    from trustmesh.respond import PlaybookSet

    pbs = PlaybookSet.load(files)
    summary: list[dict[str, Any]] = [{"name": pb.name, "match": pb.match.model_dump(exclude_defaults=True),
                "actions": [{"type": s.type, "ttl_s": s.ttl_s, "approval": s.approval,
                             "params": s.params.model_dump()} for s in pb.actions]} for pb in pbs]
    if as_json:
        print_json({"valid": True, "playbooks": summary})
        return
    for pb in summary:
        steps = ", ".join(f"{s['type']}{' (approval)' if s['approval'] else ''}" for s in pb["actions"])
        console.print(f"ok  {pb['name']}: {steps}", highlight=False)


@bench_app.command("respond")
@guarded
def bench_respond(
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="Datasets folder (default: found like other commands)."),
    limit: int = typer.Option(0, "--limit", help="Use only the first N attack rows (0 = all)."),
    handle_limit: int = typer.Option(
        5000, "--handle-limit", help="Incident updates (an evenly strided sample) passed to the responder."),
    spacing: float = typer.Option(0.01, "--spacing",
                                  help="Seconds between consecutive rows (the file has no time)."),
    window: float = typer.Option(300.0, "--window", help="Correlation window in seconds."),
    playbooks: Path | None = typer.Option(None, "--playbooks",
                                          help="Playbook file (default: the shipped playbooks)."),
    nft_rounds: int = typer.Option(
        0, "--nft-rounds", help="Also time N enforced nft add/delete rounds in a temporary netns (root)."),
    containment_runs: int = typer.Option(
        0, "--containment-runs", help="Also measure time to contain N scans in the netns testbed (root)."),
    load: int = typer.Option(0, "--load", help="With --containment-runs: run K CPU burner processes meanwhile."),
    containment_attack: str = typer.Option(
        "connect", "--containment-attack", help="With --containment-runs: connect (a TCP connect scan, then "
                                                "probes), nmap-syn (nmap -sS of the top 1,000 ports), "
                                                "nmap-udp (nmap -sU of the top 100 UDP ports), syn-flood "
                                                "(hping3 -S, 2,000 SYNs to one port) or filtered (nmap -sS "
                                                "against a device that drops the probes)."),
    pipeline_pcaps: bool = typer.Option(
        False, "--pipeline", help="Also replay the attack pcaps through the whole pipeline (ledger on) "
                                  "and report alerts/s end to end."),
    model: Path | None = typer.Option(None, "--model", help="Model for --containment-runs/--pipeline "
                                      "(default: the built-in pcap model)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Correlate TON_IoT ground-truth attack flows into incidents and time the dry-run responder.

    With --pipeline, also time the whole loop (score, correlate, decide, append, checkpoint) over the
    real attack captures; with --containment-runs, N attackers in sequence against one live gateway:
    the time from each attack's first packet to its drop being active and to its probes failing,
    and every benign host that was ever blocked (needs root, iproute2, nftables).
    """
    import statistics
    import tempfile
    import time

    import pandas as pd

    from trustmesh.config import DATA_HINT, find_data_dir
    from trustmesh.errors import ActionError, DatasetError
    from trustmesh.records import Alert, FlowId, ModelId
    from trustmesh.respond import (
        DEFAULT_PLAYBOOKS,
        Action,
        Correlator,
        Guards,
        NftablesAction,
        NotifyAction,
        PlaybookSet,
        QuarantineAction,
        Responder,
        WebhookAction,
    )

    root = find_data_dir(data_dir)
    path = (root / "ton-iot" / "network" / "train_test_network.csv.gz") if root else None
    if path is None or not path.is_file():
        raise DatasetError(f"TON_IoT network file not found ({path}); {DATA_HINT}")
    usecols = ["src_ip", "src_port", "dst_ip", "dst_port", "proto", "label", "type"]
    frame = pd.read_csv(path, encoding="utf-8-sig", usecols=usecols, low_memory=False)
    attacks = frame[frame["label"] == 1].reset_index(drop=True)
    if limit > 0:
        attacks = attacks.head(limit)
    alerts = [
        Alert(alert_id=f"ton-{i}", timestamp=i * spacing, flow_id=FlowId(f"ton-{i}"),
              model_id=ModelId("ground-truth"),
              score=1.0, threshold=0.5, source_ip=str(r.src_ip), source_port=int(r.src_port),
              destination_ip=str(r.dst_ip), destination_port=int(r.dst_port), transport=str(r.proto),
              predicted_class=str(r.type), severity=3)
        for i, r in enumerate(attacks.itertuples(index=False))
    ]
    corr = Correlator(window_s=window)
    t0 = time.perf_counter()
    updates = [corr.add(a) for a in alerts]
    corr_s = time.perf_counter() - t0
    final = {u.incident_id: u for u in updates}
    by_class: dict[str, dict[str, Any]] = {}
    for inc in final.values():
        row = by_class.setdefault(str(inc.predicted_class), {"incidents": 0, "alerts": 0, "technique": set()})
        row["incidents"] += 1
        row["alerts"] += inc.alert_count
        row["technique"].add(inc.technique_id or "-")
    pbs = PlaybookSet.load(playbooks or DEFAULT_PLAYBOOKS)
    actions: dict[str, Action] = {"nftables": NftablesAction(), "quarantine": QuarantineAction(), "notify": NotifyAction("log"),
               "webhook": WebhookAction("http://127.0.0.1:9/bench")}
    latencies: list[float] = []
    n_records = 0
    record_types: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        responder = Responder(pbs, actions, Guards(max_blocks_per_minute=10**9), tmp, enforce=False)
        stride = max(1, len(updates) // max(handle_limit, 1))
        for inc in updates[::stride][:handle_limit]:  # a strided sample covers every class
            t1 = time.perf_counter()
            made = responder.handle(inc)
            n_records += len(made)
            for rec in made:
                label = f"{rec.record_type}:{rec.to_dict()['status']}"
                record_types[label] = record_types.get(label, 0) + 1
            latencies.append(time.perf_counter() - t1)
    lat_ms = sorted(x * 1000 for x in latencies)
    nft = _bench_nft(nft_rounds) if nft_rounds > 0 else None
    doc = {
        "dataset": str(path), "attack_rows": len(alerts), "window_s": window, "spacing_s": spacing,
        "correlate_alerts_per_s": round(len(alerts) / corr_s) if corr_s else None,
        "incidents": len(final), "alerts_per_incident": round(len(alerts) / max(len(final), 1), 1),
        "per_class": {k: {"incidents": v["incidents"], "alerts": v["alerts"],
                          "technique": sorted(v["technique"])}
                      for k, v in sorted(by_class.items())},
        "handle_calls": len(latencies), "records": n_records, "record_types": record_types,
        "handle_ms_median": round(statistics.median(lat_ms), 3) if lat_ms else None,
        "handle_ms_p95": round(lat_ms[int(0.95 * (len(lat_ms) - 1))], 3) if lat_ms else None,
        "nft": nft,
    }
    if pipeline_pcaps or containment_runs > 0:
        model_path = _bench_model(model, root)
        if pipeline_pcaps:
            doc["pipeline"] = _bench_pipeline(model_path, root)
        if containment_runs > 0:
            from trustmesh.errors import InputError
            from trustmesh.testbed import measure_containment, netns_unavailable

            why = netns_unavailable()
            if why is not None:
                raise ActionError(f"--containment-runs: {why}")
            with tempfile.TemporaryDirectory(prefix="trustmesh-ttc-") as work:
                if not 0 <= load <= 64:
                    raise InputError(f"--load must be in 0..64, got {load}")
                from trustmesh.testbed import ATTACKS

                if containment_attack not in ATTACKS:
                    raise InputError(f"--containment-attack must be one of {', '.join(ATTACKS)}, "
                                     f"got {containment_attack!r}")
                doc["containment"] = measure_containment(str(model_path), containment_runs, work, load=load,
                                                         attack=containment_attack)
    if as_json:
        print_json(doc)
        return
    for key, value in doc.items():
        console.print(f"{key}: {value}", highlight=False)


def _bench_model(model: Path | None, root: Path | None) -> Path:
    """Return a model file: the one given, or the default pcap model saved to a cache file.

    The copy keeps the manifest's training record: its alert policy (model alerts must be
    corroborated by a behaviour verdict) is part of the default model, and a copy without it alerted
    on every flow the model disliked (benign hosts blocked in the containment bench, issue 12).
    """
    if model is not None:
        return model
    from trustmesh.config import load_settings
    from trustmesh.detect import default_pcap_model, save_model

    detector, manifest = default_pcap_model(root)
    path = load_settings().cache_dir / "bench" / f"{manifest.model_id}-with-policy.model"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(detector, path, data_digest=manifest.data_digest, metrics=manifest.metrics,
                   training=manifest.training)
    return path


def _bench_pipeline(model: Path, root: Path | None) -> dict[str, Any]:
    """Replay every registered attack capture through the pipeline (dry-run, ledger on); time it."""
    import tempfile
    import time

    from trustmesh.flows import DATASETS, dataset_path, open_source
    from trustmesh.pipeline import Pipeline, PipelineConfig

    with tempfile.TemporaryDirectory(prefix="trustmesh-e2e-") as tmp:
        cfg = PipelineConfig(ledger_dir=Path(tmp) / "ledger", state_dir=Path(tmp) / "state", model=model)
        pipeline = Pipeline.from_config(cfg)
        sources = [open_source(dataset_path(n, root)) for n, spec in sorted(DATASETS.items()) if spec.kind == "pcap"]
        t0 = time.perf_counter()
        pipeline.run(sources)
        summary = pipeline.close()
        seconds = time.perf_counter() - t0
        entries = summary.last_index + 1
    return {"captures": len(sources), "flows": summary.flows, "alerts": summary.alerts,
            "incidents": summary.incidents, "decisions": summary.decisions, "ledger_entries": entries,
            "seconds": round(seconds, 3), "alerts_per_s": round(summary.alerts / seconds, 1),
            "flows_per_s": round(summary.flows / seconds, 1), "entries_per_s": round(entries / seconds, 1),
            "note": "includes nfstream metering of the pcaps, scoring, correlation, dry-run response and "
                    "durable (fsync) ledger appends with a checkpoint per capture"}


def _bench_nft(rounds: int) -> dict[str, Any]:
    """Time enforced NftablesAction apply/rollback in a namespace made for the purpose (never the host)."""
    import os
    import secrets
    import statistics
    import subprocess
    import time

    from trustmesh.errors import ActionError
    from trustmesh.records import Incident, IncidentId
    from trustmesh.respond import ActionRequest, NftablesAction

    if os.geteuid() != 0:
        raise ActionError("--nft-rounds needs root (it creates a network namespace)")
    ns = f"tmbench-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise ActionError(f"cannot create network namespace {ns}: {made.stderr.strip()}")
    try:
        action = NftablesAction(netns=ns)
        inc = Incident(IncidentId("inc-bench"), 1, 0.0, 0.0, 3, 0.9, ("bench",))
        apply_ms, undo_ms = [], []
        for i in range(rounds + 1):
            addr = f"10.203.{i // 250 % 250}.{i % 250 + 1}"
            req = ActionRequest(f"b{i}", inc, "nftables", (addr,), {"target": "source"}, 60)
            t = time.perf_counter()
            out = action.apply(req, enforce=True)
            apply_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            back = action.rollback(out.state, enforce=True)
            undo_ms.append((time.perf_counter() - t) * 1e3)
            if out.status != "applied" or back.status != "rolled_back":
                raise ActionError(f"nft round {i} failed: {out.detail}; {back.detail}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    steady = sorted(apply_ms[1:])
    return {"rounds": rounds, "first_apply_ms_incl_table": round(apply_ms[0], 1),
            "apply_ms_median": round(statistics.median(steady), 1),
            "apply_ms_p95": round(steady[int(0.95 * (len(steady) - 1))], 1),
            "rollback_ms_median": round(statistics.median(undo_ms), 1)}
