"""``trustmesh detect``: the model and the behaviour detectors over one input (docs/detectors.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from trustmesh.cli._common import console, err_console, print_json
from trustmesh.errors import InputError

__all__ = ["run_detect"]


def run_detect(input_path: Path, out: Path, model: Path | None, fmt: str, data_dir: Path | None, json_out: bool,
               *, read_table: Any, stix_bundle: Any) -> None:
    """Score every flow with the model and the behaviour engine; write alerts; print the host table."""
    import numpy as np
    import pandas as pd

    from trustmesh.detect import default_pcap_model, host_summary, load_model
    from trustmesh.flows import CANONICAL_COLUMNS, detect_kind, open_source
    from trustmesh.pipeline import detect_flows

    if fmt not in ("jsonl", "stix"):
        raise InputError(f"--format must be jsonl or stix, got {fmt!r}")
    det, manifest = load_model(model) if model is not None else default_pcap_model(data_dir)
    needed = set(det.feature_names)
    kind = detect_kind(input_path)
    canonical = needed <= set(CANONICAL_COLUMNS)
    started = time.perf_counter()
    if kind == "table" and not canonical:
        batches = [read_table(input_path)]
    else:
        batches = list(open_source(input_path).iter_batches(50_000))
    frames, all_scores, all_classes = [], [], []
    multi = len(det.classes_) > 2
    for batch in batches:
        if len(batch) == 0:
            continue
        present = needed & {str(c) for c in batch.columns}
        if len(present) < max(1, len(needed) // 2):
            raise InputError(f"{input_path}: provides only {len(present)} of the {len(needed)} features model "
                             f"{manifest.model_id} needs")  # fmt: skip
        all_scores.append(det.score(batch, fill_missing=True))
        if multi:
            all_classes += list(det.predict_class(batch.assign(**{c: np.nan for c in needed - present})))
        frames.append(batch)
    flows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CANONICAL_COLUMNS))
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    found = detect_flows(flows, det, manifest, source_name=input_path.name, scores=scores,
                         classes=all_classes if multi and len(flows) else None)
    alerts = found.alerts
    signatures: list[Any] = []
    if kind == "suricata":  # the EVE file's own signature alerts, fused with the model's verdicts (docs/soc.md)
        from trustmesh.flows import fused_eve_alerts

        signatures = fused_eve_alerts(input_path, flows["uid"] if "uid" in flows.columns else [], scores,
                                      det.threshold, manifest.model_id, source_name=input_path.name)
        alerts = list(alerts) + signatures
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8") as fh:
            for a in alerts:
                fh.write(json.dumps(a.to_ecs(), sort_keys=True) + "\n")
    else:
        out.write_text(stix_bundle(alerts, manifest.model_id) + "\n", encoding="utf-8")
    hosts = host_table(flows, np.where(found.allowed, scores, -1.0), det.threshold, found.verdicts, host_summary)
    doc = {
        "input": str(input_path),
        "kind": kind,
        "model_id": manifest.model_id,
        "threshold": det.threshold,
        "flows": int(len(flows)),
        "alerts": len(alerts),
        "model_alerts": len(found.ml_alerts),
        "behaviour_alerts": len(found.behaviour_alerts),
        "signature_alerts": len(signatures),
        "verdicts": [{k: v for k, v in x.to_dict().items() if k != "flow_uids"} | {"flows": len(x.flow_uids)}
                     for x in found.verdicts],
        "out": str(out),
        "format": fmt,
        "seconds": round(time.perf_counter() - started, 3),
        "hosts": hosts,
    }
    from trustmesh.detect._drift import model_drift  # site baselines: has the score distribution moved?

    drift = model_drift(det, scores)
    if drift is not None:
        doc["drift"] = drift
        if drift["drifted"]:
            err_console.print(f"[bold yellow]warning:[/] score drift against the baseline of {manifest.model_id}: "
                              f"PSI {drift['psi']:.3f}, KS {drift['ks']:.3f} (re-learn the baseline)", highlight=False)
    if json_out:
        print_json(doc)
        return
    from rich.table import Table

    table = Table(title=f"{input_path.name}: {len(alerts)} alert(s) in {len(flows)} flow(s), model {manifest.model_id}")
    for col in ("host", "flows", "alerts", "max score", "dst hosts", "dst ports", "behaviour", "flagged"):
        table.add_column(col, justify="left" if col in ("host", "behaviour") else "right")
    for row in hosts[:50]:
        table.add_row(str(row["host"]), str(row["flows"]), str(row["alerts"]), f"{row['max_score']:.3f}",
                      str(row["dst_hosts"]), str(row["dst_ports"]), ", ".join(row["behaviour"]) or "-",
                      "[bold red]yes[/]" if row["flagged"] else "no")  # fmt: skip
    console.print(table)
    err_console.print(f"wrote {len(alerts)} alert(s) to {out}", highlight=False)


def host_table(flows: Any, scores: Any, threshold: float, verdicts: list[Any], summary: Any) -> list[dict[str, Any]]:
    """Per-source-host rows: model alerts (after the alert policy) plus the behaviour verdicts' classes."""
    if "src_ip" not in flows.columns or not len(flows):
        return []
    rows: list[dict[str, Any]] = json.loads(summary(flows, scores, threshold).to_json(orient="records"))
    by_host: dict[str, list[str]] = {}
    for v in verdicts:
        by_host.setdefault(v.host, []).append(f"{v.kind} {v.technique_id}")
    for row in rows:
        row["behaviour"] = sorted(set(by_host.get(row["host"], [])))
        row["flagged"] = bool(row["flagged"] or row["behaviour"])
    return sorted(rows, key=lambda r: (not r["flagged"], -len(r["behaviour"]), -r["alerts"]))


def run_lab_bench(runs: list[Path], model: Path | None, data_dir: Path | None, json_out: bool) -> None:
    """``trustmesh bench detect --lab DIR...``: print the lab detection report (JSON or a table)."""
    from trustmesh.evaluate._lab import bench_lab_runs

    doc = bench_lab_runs(runs, model=model, data_dir=data_dir)
    if json_out:
        print_json(doc)
        return
    from rich.table import Table

    table = Table(title=f"lab detection, model {doc['model_id']}")
    for col in ("run", "flows", "benign FPR", "attacks flagged", "technique ok", "blocks", "incidents", "false inc."):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in doc["runs"]:
        atk = r["attacks"]
        scan_like = [a for a in atk if a["kind"] not in ("web-enumeration", "lateral-movement")]
        table.add_row(r["run"], str(r["flows"]), "-" if r["benign_fpr"] is None else f"{r['benign_fpr']:.4f}",
                      f"{sum(a['flagged'] for a in atk)}/{len(atk)}", f"{sum(a['technique_ok'] for a in atk)}/{len(atk)}",
                      f"{sum(a['blocked'] for a in scan_like)}/{len(scan_like)}", str(r["incidents"]),
                      str(r["false_incidents"]))  # fmt: skip
    console.print(table)
    for r in doc["runs"]:
        for a in r["attacks"]:
            if not (a["flagged"] and a["technique_ok"]):
                err_console.print(f"{r['run']}: {a['id']} {a['kind']}/{a['variant']} from {a['attacker']}: "
                                  f"flagged={a['flagged']} verdicts={a['verdicts'] or '-'}", highlight=False)
