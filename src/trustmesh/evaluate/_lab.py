"""Detection on labelled lab captures: what ``trustmesh bench detect --lab DIR...`` reports.

For each run folder (``trustmesh lab run`` output: ``capture.pcap`` + ``truth.json``) the capture is
metered exactly as ``trustmesh detect`` meters it, scored by a model (the default pcap model unless one is
given) plus the behaviour engine, and compared with the ground truth (``trustmesh.lab.label_flows``):

* ``benign_fpr``: benign flows that at least one alert is about / benign flows;
* per attack: ``flagged`` (some alert is about one of its flows, or a verdict names its attacker),
  ``technique_ok`` (a verdict for the attacker whose evidence contains the attack's flows names the
  truth's technique, compared by parent id, e.g. T1110.001 = T1110), ``blocked`` (the incident holding
  those alerts makes the default playbooks propose an nftables block of the attacker);
* ``incidents`` (alerts correlated as ``trustmesh run`` does) and, per capture, those with no attacker
  among their sources (false incidents; on a benign-only capture that is every incident).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trustmesh.errors import InputError

__all__ = ["LAB_BENCH_SCHEMA", "bench_lab_runs"]

LAB_BENCH_SCHEMA = "trustmesh-lab-bench/1"


def _parent(technique: str | None) -> str:
    return (technique or "").split(".")[0]


def _flows(run: Path) -> pd.DataFrame:
    from trustmesh.flows import read_pcap

    pcap = run / "capture.pcap"
    if not pcap.exists():
        raise InputError(f"{run}: no capture.pcap (not a `trustmesh lab run` folder)")
    return read_pcap(pcap)


def bench_lab_run(run: Path, detector: Any, manifest: Any, playbooks: Any) -> dict[str, Any]:
    """Measure one lab run folder (see the module docstring for every field)."""
    from trustmesh.lab import load_truth, match_attacks
    from trustmesh.pipeline import detect_flows
    from trustmesh.respond import Correlator

    truth = load_truth(run / "truth.json")
    started = time.perf_counter()
    flows = _flows(run)
    found = detect_flows(flows, detector, manifest, source_name=run.name)
    seconds = time.perf_counter() - started
    attack_ids = match_attacks(flows, truth).astype(str).to_numpy()  # the rule label_flows applies
    uid = flows["uid"].astype(str).to_numpy()
    benign = attack_ids == ""
    flagged = found.flagged_uids()
    is_flagged = np.fromiter((u in flagged for u in uid), dtype=bool, count=len(uid))
    ml_flagged = {str(a.flow_id) for a in found.ml_alerts}
    attack_of = dict(zip(uid, attack_ids.tolist(), strict=True))

    correlator = Correlator()
    incidents: dict[str, Any] = {}
    alert_incident: dict[str, str] = {}
    for alert in sorted(found.alerts, key=lambda a: a.timestamp):
        inc = correlator.add(alert)
        incidents[inc.incident_id] = inc
        alert_incident[alert.alert_id] = inc.incident_id
    proposals: dict[str, list[str]] = {}
    for inc_id, inc in incidents.items():
        chosen = playbooks.matching(inc)
        book = chosen[0] if chosen else None
        blocks = book is not None and any(step.type == "nftables" for step in book.actions)
        proposals[inc_id] = [book.name if book else "-", "block" if blocks else "no-block"]
    attackers = {a.attacker for a in truth.attacks}

    attacks = []
    for a in truth.attacks:
        mine = {u for u, aid in attack_of.items() if aid == a.id}
        hit_alerts = [al for al in found.alerts if str(al.flow_id) in mine]
        verdicts = [v for v in found.verdicts if v.host == a.attacker and mine & set(v.flow_uids)]
        inc_ids = {alert_incident[al.alert_id] for al in hit_alerts}
        blocked = any(proposals[i][1] == "block" and a.attacker in incidents[i].source_ips for i in inc_ids)
        attacks.append({
            "id": a.id, "kind": a.kind, "variant": a.variant, "attacker": a.attacker,
            "technique": a.technique_id, "flows": len(mine),
            "flows_flagged": sum(1 for u in mine if u in flagged),
            "flagged": bool(hit_alerts) or any(v.host == a.attacker for v in found.verdicts),
            "verdicts": sorted({f"{v.kind} {v.technique_id}" for v in verdicts}),
            "technique_ok": any(_parent(v.technique_id) == _parent(a.technique_id) for v in verdicts),
            "kind_ok": any(v.kind == a.kind for v in verdicts),
            "blocked": blocked,
            "playbooks": sorted({proposals[i][0] for i in inc_ids}),
        })  # fmt: skip
    false_incidents = [i for i in incidents.values() if not attackers & set(i.source_ips)]
    n_benign = int(benign.sum())
    return {
        "run": run.name,
        "scenario": truth.scenario,
        "seed": truth.seed,
        "flows": int(len(flows)),
        "benign_flows": n_benign,
        "benign_flagged": int((is_flagged & benign).sum()),
        "benign_fpr": float((is_flagged & benign).sum() / n_benign) if n_benign else None,
        "benign_fpr_model": float(sum(1 for u, b in zip(uid, benign, strict=True) if b and u in ml_flagged)
                                  / n_benign) if n_benign else None,
        "benign_hosts_flagged": sorted({str(h) for h, b, f in zip(flows["src_ip"], benign, is_flagged,
                                                                   strict=True) if b and f} - attackers),
        "model_alerts": len(found.ml_alerts),
        "behaviour_alerts": len(found.behaviour_alerts),
        "verdicts": [{"kind": v.kind, "host": v.host, "technique": v.technique_id, "confidence": v.confidence,
                      "severity": v.severity, "flows": len(v.flow_uids)} for v in found.verdicts],
        "incidents": len(incidents),
        "false_incidents": len(false_incidents),
        "false_incident_severities": sorted(i.severity for i in false_incidents),
        "attacks": attacks,
        "seconds": round(seconds, 2),
    }  # fmt: skip


def bench_lab_runs(runs: Sequence[Path], *, model: Path | None = None, data_dir: Path | None = None) -> dict[str, Any]:
    """Measure every lab run folder with one model; return a JSON-ready report (``LAB_BENCH_SCHEMA``)."""
    from trustmesh.detect import default_pcap_model, load_model
    from trustmesh.respond import DEFAULT_PLAYBOOKS, PlaybookSet

    expanded: list[Path] = []
    for run in map(Path, runs):
        if (run / "truth.json").exists():
            expanded.append(run)
        elif run.is_dir() and (inner := sorted(p.parent for p in run.glob("*/truth.json"))):
            expanded += inner  # a folder of runs
        else:
            raise InputError(f"{run}: no truth.json (not a `trustmesh lab run` folder or a folder of them)")
    if not expanded:
        raise InputError("give at least one lab run folder (trustmesh lab run ... --out DIR)")
    runs = expanded
    det, manifest = load_model(model) if model is not None else default_pcap_model(data_dir)
    playbooks = PlaybookSet.load([DEFAULT_PLAYBOOKS])
    results = [bench_lab_run(Path(r), det, manifest, playbooks) for r in runs]
    attacks = [a for r in results for a in r["attacks"]]
    fprs = [r["benign_fpr"] for r in results if r["benign_fpr"] is not None]
    scan_like = [a for a in attacks if a["kind"] in ("port-scan", "host-sweep", "syn-flood", "udp-flood",
                                                     "icmp-flood", "brute-force")]  # fmt: skip
    import os

    return {
        "schema": LAB_BENCH_SCHEMA,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "model_id": manifest.model_id,
        "alert_policy": (manifest.training or {}).get("alert_policy"),
        "runs": results,
        "summary": {
            "captures": len(results),
            "benign_fpr_max": max(fprs) if fprs else None,
            "benign_fpr_mean": float(np.mean(fprs)) if fprs else None,
            "attacks": len(attacks),
            "attacks_flagged": sum(a["flagged"] for a in attacks),
            "technique_ok": sum(a["technique_ok"] for a in attacks),
            "kind_ok": sum(a["kind_ok"] for a in attacks),
            "scans_floods_brute_force": len(scan_like),
            "blocks_proposed": sum(a["blocked"] for a in scan_like),
            "false_incidents": sum(r["false_incidents"] for r in results),
            "benign_only_incidents": sum(r["incidents"] for r in results if not r["attacks"]),
        },
    }
