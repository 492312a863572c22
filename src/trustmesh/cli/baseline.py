"""``trustmesh baseline``: learn a site's own benign behaviour into a ``site-baseline`` model (docs/baseline.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app, bench_app
from trustmesh.errors import InputError

__all__ = ["baseline"]

_MAX_FLOWS = 2_000_000  # rows kept from one input (memory bound); the baseline window is the first part


def _capture_live(interface: str, duration: float) -> list[Any]:
    """Meter ``interface`` for ``duration`` seconds; return the flow batches seen (bounded in time).

    The capture runs on a reader thread (nfstream blocks until a flow expires); the reader stops at
    the first batch after the deadline, and a silent interface cannot hold the command past it.
    """
    import queue
    import threading

    from trustmesh.flows import InterfaceSource

    # whole flows, as an offline capture gives them: no fan-out cut (a failing source's flows exported
    # at their first packet serve containment, not a baseline of normal traffic)
    source = InterfaceSource(interface, idle_timeout=1, active_timeout=max(1, int(duration)), early_fanout=None)
    q: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        batches = source.iter_batches(1_000)
        try:
            for batch in batches:
                q.put(batch)
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the command's thread
            q.put(exc)
        finally:
            close = getattr(batches, "close", None)
            if callable(close):
                close()
            q.put(None)

    threading.Thread(target=reader, name="trustmesh-baseline-capture", daemon=True).start()
    deadline = time.monotonic() + duration
    frames: list[Any] = []
    rows = 0
    while (left := deadline - time.monotonic()) > 0 and rows < _MAX_FLOWS:
        try:
            item = q.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        frames.append(item)
        rows += len(item)  # type: ignore[arg-type]
    stop.set()
    return frames


def _read_window(spec: str, duration: float | None) -> tuple[Any, str]:
    """Read canonical flows from a file/folder or ``iface:NAME`` (for ``duration`` seconds)."""
    import pandas as pd

    from trustmesh.flows import empty_canonical, open_source
    from trustmesh.flows._hashing import sha256_file

    frames: list[Any] = []
    rows = 0
    if spec.startswith("iface:"):
        if duration is None:
            raise InputError("--duration is required with iface:NAME (how long to learn for)")
        frames = _capture_live(spec[len("iface:"):], duration)
        rows = sum(len(f) for f in frames)
        input_digest = "live:" + spec
    else:
        path = Path(spec)
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
        for batch in open_source(path).iter_batches(50_000):
            frames.append(batch)
            rows += len(batch)
            if rows >= _MAX_FLOWS:
                break
        input_digest = sha256_file(path) if path.is_file() else "dir:" + str(path)
    flows = pd.concat(frames, ignore_index=True) if frames else empty_canonical()
    return flows, input_digest


def _base_model(spec: str, data_dir: Path | None) -> tuple[Any, Any]:
    from trustmesh.detect import default_pcap_model, load_model

    if spec == "none":
        return None, None
    if spec == "default":
        return default_pcap_model(data_dir)
    return load_model(Path(spec))


def record_model(ledger_dir: Path, manifest: Any, origin: str = "trustmesh.local/log") -> int:
    """Append the model's manifest to a ledger (created when absent) as a ``model`` entry; checkpoint."""
    import json

    from trustmesh.ledger import Ledger

    try:
        ledger = Ledger.open(ledger_dir)
    except InputError:
        ledger = Ledger.create(ledger_dir, origin)
    try:
        payload = json.loads(json.dumps(manifest.to_dict(), default=str))
        index = ledger.append_one("model", payload)
        ledger.checkpoint()
    finally:
        ledger.close()
    return index


@app.command("baseline")
@guarded
def baseline(
    input_spec: str = typer.Option(..., "--input", help="PCAP, Zeek dir/conn.log, Suricata EVE file or iface:NAME."),
    out: Path = typer.Option(..., "--out", help="Model file to write (plus OUT.manifest.json)."),
    duration: float | None = typer.Option(None, "--duration", help="Learn from the first S seconds of traffic "
                                          "(required for iface:NAME)."),
    target_fpr: float = typer.Option(0.01, "--target-fpr", help="False-positive rate to hold on the site's traffic."),
    base_model: str = typer.Option("default", "--base-model", help="default (the built-in pcap model), none, "
                                   "or a model file to combine with."),
    ledger_dir: Path | None = typer.Option(None, "--ledger", help="Record the model on this ledger."),
    seed: int = typer.Option(0, "--seed", help="Seed of the anomaly model."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Dataset folder for the default model."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Learn the site's benign behaviour and recalibrate thresholds on it (a ``site-baseline`` model)."""
    from trustmesh.detect import save_model
    from trustmesh.detect._baseline import fit_site_baseline

    if duration is not None and not duration > 0:
        raise InputError(f"--duration must be > 0 seconds, got {duration}")
    if not 0.0 < target_fpr < 0.5:
        raise InputError(f"--target-fpr must be in (0, 0.5), got {target_fpr}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    started = time.perf_counter()
    base, base_manifest = _base_model(base_model, data_dir)
    flows, input_digest = _read_window(input_spec, duration)
    if len(flows) == 0:
        raise InputError(f"{input_spec}: no flows in the input (empty or unreadable traffic)")
    det, report = fit_site_baseline(flows, base=base, base_model_id=None if base_manifest is None
                                    else base_manifest.model_id, duration_s=duration, target_fpr=target_fpr,
                                    seed=seed)  # fmt: skip
    for line in report.warnings:
        err_console.print(f"[bold yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    info = report.to_dict()
    if len(info["hosts"]) > 256:  # the manifest stays small; the artifact holds the full profiles
        info["hosts"] = info["hosts"][:256]
        info["hosts_truncated"] = True
    manifest = save_model(
        det,
        out,
        data_digest=report.data_digest,
        metrics={"site_holdout": {"fpr": report.holdout_fpr, "n": report.n_holdout, "target_fpr": target_fpr}},
        training={
            "recipe": "site-baseline/1",
            "input": input_spec,
            "input_sha256": input_digest,
            "base_model": base_model,
            "base_model_id": det.base_model_id,
            "requested_duration_s": duration,
            "fit_seconds": round(time.perf_counter() - started, 2),
            **info,
        },
    )
    index = record_model(ledger_dir, manifest) if ledger_dir is not None else None
    doc = {"model": str(out), "model_id": manifest.model_id, "kind": manifest.kind, "threshold": manifest.threshold,
           "ledger_index": index, **{k: v for k, v in info.items() if k != "hosts"}}  # fmt: skip
    if json_out:
        print_json(doc)
        return
    console.print(f"[bold]{manifest.model_id}[/] site-baseline -> {out}  threshold {manifest.threshold:.6f}")
    console.print(f"{report.n_used} flows from {len(report.hosts)} hosts over {report.duration_s:.1f} s "
                  f"({report.n_excluded} left out); held-out FPR {report.holdout_fpr:.4f} "
                  f"(target {target_fpr}) on {report.n_holdout} flows"
                  + ("" if index is None else f"; ledger entry {index}"), highlight=False)  # fmt: skip
    if not report.behaviour_checked:
        print("note: behaviour detectors unavailable; the window was not checked for attacks", file=sys.stderr)


# ----------------------------------------------------------------------------------------------- bench


def _bench_one(run: Path, duration: float, target_fpr: float, base: Any, base_manifest: Any, tmp: Path,
               compare: Any) -> dict[str, Any]:
    """Baseline on the first ``duration`` s of one lab run, detect on the rest, score against the truth."""
    import numpy as np

    from trustmesh.detect import load_model, save_model
    from trustmesh.detect._baseline import fit_site_baseline
    from trustmesh.flows import read_flows
    from trustmesh.lab import label_flows, load_truth, match_attacks
    from trustmesh.pipeline import detect_flows

    truth = load_truth(run / "truth.json")
    raw = read_flows(run / "capture.pcap")
    flows = label_flows(raw, truth).assign(attack_id=match_attacks(raw, truth).to_numpy())
    cut = truth.start + duration
    window, test = flows[flows["ts"] < cut], flows[flows["ts"] >= cut].reset_index(drop=True)
    det, report = fit_site_baseline(window.drop(columns=["label", "attack_type", "technique_id", "attack_id"],
                                                errors="ignore"), base=base, duration_s=duration,
                                    base_model_id=None if base_manifest is None else base_manifest.model_id,
                                    target_fpr=target_fpr)  # fmt: skip
    path = tmp / f"{run.name}.tm"
    save_model(det, path, data_digest=report.data_digest, training={"recipe": "site-baseline/1"})
    loaded, manifest = load_model(path)

    def score(found: Any) -> dict[str, Any]:
        benign = (test["label"] == "benign").to_numpy()
        uids = test["uid"].astype(str).to_numpy()
        ml = {str(a.flow_id) for a in found.ml_alerts}
        beh = {str(a.flow_id) for a in found.behaviour_alerts}
        hit_ml, hit_beh = np.isin(uids, list(ml)), np.isin(uids, list(beh))
        n_b = int(benign.sum())
        attacks = []
        for a in truth.attacks:
            if a.end < cut:
                continue
            alerted = any(x.source_ip == a.attacker for x in found.alerts)
            techniques = sorted({v.technique_id for v in found.verdicts if v.host == a.attacker})
            attacks.append({"id": a.id, "kind": a.kind, "attacker": a.attacker, "technique_id": a.technique_id,
                            "flows": int((test["attack_id"] == a.id).sum()), "flagged": alerted,
                            "verdict_techniques": techniques,
                            "technique_right": any(t.split(".")[0] == a.technique_id.split(".")[0]
                                                   for t in techniques)})  # fmt: skip
        return {
            "benign_flows": n_b,
            "benign_fpr": float((hit_ml | hit_beh)[benign].mean()) if n_b else None,
            "benign_fpr_model": float(hit_ml[benign].mean()) if n_b else None,
            "benign_fpr_behaviour": float(hit_beh[benign].mean()) if n_b else None,
            "benign_alerted": int((hit_ml | hit_beh)[benign].sum()),
            "attacks": attacks,
            "attackers_flagged": sum(x["flagged"] for x in attacks),
            "attacks_technique_right": sum(x["technique_right"] for x in attacks),
        }

    doc: dict[str, Any] = {
        "run": str(run), "scenario": truth.scenario, "seed": truth.seed, "duration_s": duration,
        "baseline": {"flows": report.n_used, "excluded": report.n_excluded, "holdout_fpr": report.holdout_fpr,
                     "threshold": loaded.threshold, "attacks_in_window": list(report.attacks)},
        "test_flows": int(len(test)),
        "site_baseline": score(detect_flows(test, loaded, manifest, source_name=run.name)),
    }  # fmt: skip
    if compare is not None:
        doc["base_model_alone"] = score(detect_flows(test, compare[0], compare[1], source_name=run.name))
    return doc


@bench_app.command("baseline")
@guarded
def bench_baseline(
    runs: list[Path] = typer.Argument(..., help="Lab run folders (capture.pcap + truth.json) with a benign warm-up."),
    duration: float = typer.Option(75.0, "--duration", help="Seconds from the run's start the baseline learns from."),
    target_fpr: float = typer.Option(0.01, "--target-fpr", help="False-positive rate to hold on the site."),
    base_model: str = typer.Option("default", "--base-model", help="default, none, or a model file."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also score the base model alone."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Dataset folder for the default model."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Site baseline on each lab run's warm-up, then benign FPR and attackers found on the rest (docs/baseline.md)."""
    import os
    import tempfile

    if not duration > 0:
        raise InputError(f"--duration must be > 0 seconds, got {duration}")
    base, base_manifest = _base_model(base_model, data_dir)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            if not (run / "truth.json").is_file() or not (run / "capture.pcap").is_file():
                raise InputError(f"{run}: not a lab run folder (needs capture.pcap and truth.json)")
            pair = (base, base_manifest) if compare and base is not None else None
            results.append(_bench_one(run, duration, target_fpr, base, base_manifest, Path(tmp), pair))
    doc = {"runs": results, "target_fpr": target_fpr, "base_model": base_model, "load": os.getloadavg()}
    if json_out:
        print_json(doc)
        return
    for r in results:
        s = r["site_baseline"]
        console.print(f"{r['scenario']} seed {r['seed']}: benign FPR {s['benign_fpr']:.4f} "
                      f"(model {s['benign_fpr_model']:.4f}, behaviour {s['benign_fpr_behaviour']:.4f}) on "
                      f"{s['benign_flows']} flows; attackers flagged {s['attackers_flagged']}/{len(s['attacks'])}, "
                      f"technique right {s['attacks_technique_right']}/{len(s['attacks'])}", highlight=False)
