"""Sections 4 and 5: cost and scalability per stage with fitted growth, and energy."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from trustmesh.evaluate._context import Context
from trustmesh.evaluate._energy import OPS_CITATIONS, op_energy
from trustmesh.evaluate._growth import fit_growth
from trustmesh.evaluate._report import Plot, SectionResult, Table, figure_png

__all__ = ["ledger_scaling", "run_cost", "run_energy", "scoring_scaling"]

# the largest staged capture: gives the ingest stage a few thousand flows to meter
_INGEST_DATASET = "pcap-ftp-crack"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def scoring_scaling(det: Any, features: Any, batch_sizes: tuple[int, ...],
                    repeats: int) -> list[dict[str, float]]:
    """Return latency per batch and flows/s for each batch size (rows repeated when the sample is short)."""
    out = []
    for b in batch_sizes:
        reps = int(np.ceil(b / max(len(features), 1)))
        batch = features if reps <= 1 else features.iloc[np.tile(np.arange(len(features)), reps)]
        batch = batch.iloc[:b]
        det.score(batch)  # warm-up (lazy imports, allocator)
        lat = _median_time(lambda batch=batch: det.score(batch), repeats)
        out.append({"batch": b, "latency_s": lat, "flows_per_s": b / lat if lat > 0 else float("inf")})
    return out


def ledger_scaling(work: Path, sizes: tuple[int, ...], repeats: int,
                   on_step: Any = None) -> list[dict[str, Any]]:
    """Grow one ledger through ``sizes``; at each size time appends, proofs and verification."""
    from trustmesh.ledger import Entry, Ledger, verify_inclusion

    root = work / "ledger-scaling"
    shutil.rmtree(root, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    with Ledger.create(root, "trustmesh.local/blueprint-scaling", synchronous="NORMAL") as ledger:
        for target in sorted(sizes):
            if on_step:
                on_step(f"ledger to {target} entries")
            while ledger.size < target - 1:
                n = min(20000, target - 1 - ledger.size)
                base = ledger.size
                ledger.append([Entry("bench", {"i": base + i}, time=0.0) for i in range(n)])
            # one durable single-entry append at this size (what the pipeline does per record)
            t0 = time.perf_counter()
            ledger.append_one("bench", {"i": ledger.size, "probe": True}, time=0.0)
            append_s = time.perf_counter() - t0
            cp = ledger.checkpoint()
            idx = [int(i) for i in rng.integers(0, ledger.size, size=max(1, repeats))]
            proofs = []
            t0 = time.perf_counter()
            for i in idx:
                proofs.append(ledger.prove_inclusion(i))
            prove_s = (time.perf_counter() - t0) / len(idx)
            blobs = [ledger.entry_bytes(i) for i in idx]
            t0 = time.perf_counter()
            for p, b in zip(proofs, blobs, strict=True):
                verify_inclusion(p, cp, b)
            verify_s = (time.perf_counter() - t0) / len(idx)
            t0 = time.perf_counter()
            cons = ledger.prove_consistency(max(1, ledger.size // 2))
            cons_s = time.perf_counter() - t0
            rows.append({
                "size": ledger.size, "append_s": append_s, "prove_s": prove_s, "verify_s": verify_s,
                "proof_bytes": 32 * float(np.mean([len(p.audit_path) for p in proofs])),
                "consistency_s": cons_s, "consistency_bytes": 32 * len(cons.path),
            })
    shutil.rmtree(root, ignore_errors=True)
    return rows


def _fit(xs: list[float], ys: list[float]) -> dict[str, Any] | None:
    try:
        return fit_growth(xs, ys).to_dict()
    except ValueError:
        return None


def _ingest(ctx: Context) -> dict[str, Any]:
    from trustmesh.flows import dataset_path, open_source

    path = dataset_path(_INGEST_DATASET, ctx.data_dir)
    t0 = time.perf_counter()
    n = sum(len(batch) for batch in open_source(path).iter_batches())
    wall = time.perf_counter() - t0
    return {"source": _INGEST_DATASET, "flows": n, "seconds": wall,
            "flows_per_s": n / wall if wall > 0 else None,
            "bytes": path.stat().st_size}


def _fl_round_times(ctx: Context) -> list[dict[str, Any]]:
    from trustmesh.evaluate._sec_poisoning import federated_round_time

    return [federated_round_time(ctx, n) for n in ctx.config.fl_site_counts]


def run_cost(ctx: Context) -> SectionResult:
    """Throughput and latency per stage, and how they grow with batch size, log size and sites."""
    plt = _plt()
    cfg = ctx.config
    dataset = cfg.datasets[0]
    split = ctx.split(dataset)
    metrics: dict[str, Any] = {}
    rows: list[tuple[Any, ...]] = []
    notes: list[str] = []
    plots: list[Plot] = []
    headline: dict[str, Any] = {}
    # ingest ------------------------------------------------------------------------------------
    try:
        ingest = _ingest(ctx)
        metrics["ingest"] = ingest
        rows.append(("ingest (pcap -> flows, nfstream)", ingest["flows_per_s"],
                     ingest["seconds"] / max(ingest["flows"], 1),
                     f"{ingest['flows']} flows from {ingest['source']}"))
    except Exception as exc:  # a missing capture or meter is reported in place, other stages still run
        notes.append(f"ingest stage skipped: {type(exc).__name__}: {exc}")
    # score -------------------------------------------------------------------------------------
    fig, ax = plt.subplots(figsize=(5.5, 4))
    metrics["score"] = {}
    for kind in cfg.detectors:
        det = ctx.detector(kind, dataset)
        ctx.step(f"scoring throughput of {kind}")
        res = scoring_scaling(det, split.test.features, cfg.batch_sizes, cfg.latency_repeats)
        fit = _fit([r["batch"] for r in res], [r["latency_s"] for r in res])
        metrics["score"][kind] = {"points": res, "latency_growth": fit}
        ax.loglog([r["batch"] for r in res], [r["flows_per_s"] for r in res], marker="o",
                  label=f"{kind} (latency ∝ n^{fit['power_law']['b']:.2f})" if fit else kind)
        big = res[-1]
        rows.append((f"score ({kind})", big["flows_per_s"], big["latency_s"] / big["batch"],
                     f"batch {big['batch']}"))
        headline[f"score {kind} flows/s @batch {big['batch']}"] = round(big["flows_per_s"], 1)
    ax.set(xlabel="batch size (flows)", ylabel="flows / s", title=f"Scoring throughput vs batch — {dataset}")
    ax.legend(fontsize=6)
    plots.append(Plot("cost-score-batch", "Scoring throughput vs batch size (fitted latency exponent)",
                      figure_png(fig)))
    # respond -----------------------------------------------------------------------------------
    try:
        from trustmesh.evaluate._sec_integrity import pipeline_run

        run = pipeline_run(ctx, ledger_dir=ctx.work_dir / "cost-pipeline")
        metrics["respond"] = run
        for stage in ("score", "respond", "append"):
            if run.get(f"{stage}_s") is not None and run.get(f"{stage}_items"):
                rows.append((f"{stage} (pipeline)", run[f"{stage}_items"] / max(run[f"{stage}_s"], 1e-9),
                             run[f"{stage}_s"] / run[f"{stage}_items"], f"{run[f'{stage}_items']} items"))
    except Exception as exc:
        notes.append(f"respond stage (pipeline) skipped: {type(exc).__name__}: {exc}")
    # ledger scaling ----------------------------------------------------------------------------
    lrows = ledger_scaling(ctx.work_dir, cfg.ledger_sizes, cfg.latency_repeats * 4, ctx.step)
    sizes = [r["size"] for r in lrows]
    growth = {k: _fit(sizes, [max(r[k], 1e-9) for r in lrows]) for k in ("append_s", "prove_s", "verify_s",
                                                                         "proof_bytes")}
    metrics["ledger"] = {"points": lrows, "growth": growth}
    last = lrows[-1]
    rows.append(("append (ledger, durable single entry)", 1.0 / max(last["append_s"], 1e-9), last["append_s"],
                 f"log size {last['size']}"))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, label in (("append_s", "append"), ("prove_s", "prove inclusion"),
                     ("verify_s", "verify inclusion")):
        g = growth[k]
        ax.loglog(sizes, [r[k] for r in lrows], marker="o",
                  label=f"{label} (∝ n^{g['power_law']['b']:.2f}, best fit: {g['model']})" if g else label)
    ax.set(xlabel="log size (entries)", ylabel="seconds", title="Ledger time vs log size")
    ax.legend(fontsize=6)
    plots.append(Plot("cost-ledger-size", "Ledger append / proof / verify time vs log size (fitted)",
                      figure_png(fig)))
    headline["proof bytes at largest log"] = last["proof_bytes"]
    if growth["prove_s"]:
        headline["proof time growth"] = f"{growth['prove_s']['model']} (power exponent {growth['prove_s']['power_law']['b']:.2f})"
    # federated round time vs sites ---------------------------------------------------------------
    try:
        fl = _fl_round_times(ctx)
        gfl = _fit([r["sites"] for r in fl], [r["round_s"] for r in fl])
        metrics["federated"] = {"points": fl, "growth": gfl}
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot([r["sites"] for r in fl], [r["round_s"] for r in fl], marker="o",
                label=f"∝ n^{gfl['power_law']['b']:.2f}" if gfl else "round time")
        ax.set(xlabel="sites", ylabel="seconds per round", title="Federated round time vs sites")
        ax.legend(fontsize=7)
        plots.append(Plot("cost-fl-sites", "Federated round time vs number of sites (fitted)",
                          figure_png(fig)))
        if gfl:
            headline["FL round time exponent"] = round(gfl["power_law"]["b"], 3)
    except Exception as exc:
        notes.append(f"federated round-time scaling skipped: {type(exc).__name__}: {exc}")
    table = Table("Throughput and latency per stage", ("stage", "items / s", "seconds / item", "condition"),
                  tuple(rows))
    ltable = Table("Ledger cost vs log size", ("size", "append s", "prove s", "verify s", "proof bytes"),
                   tuple((r["size"], r["append_s"], r["prove_s"], r["verify_s"],
                          r["proof_bytes"]) for r in lrows))
    return SectionResult("cost", "", "ok", headline=headline, metrics=metrics, tables=(table, ltable),
                         plots=tuple(plots), notes=tuple(notes))


def _torch_macs(det: Any) -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    nets = [v for v in vars(det).values() if isinstance(v, torch.nn.Module)]
    for v in vars(det).values():
        if isinstance(v, (list, tuple)):
            nets.extend(x for x in v if isinstance(x, torch.nn.Module))
    if not nets:
        return None
    linear = [m for n in nets for m in n.modules() if isinstance(m, torch.nn.Linear)]
    return int(sum(m.in_features * m.out_features for m in linear))


def run_energy(ctx: Context) -> SectionResult:
    """Energy per inference, per ledger transaction and per incident; op-count estimates for neural models."""
    plt = _plt()
    from trustmesh.ledger import Ledger

    cfg = ctx.config
    dataset = cfg.datasets[0]
    split = ctx.split(dataset)
    meter = ctx.meter
    sample = split.test.features.iloc[: min(len(split.test), cfg.energy_flows)]
    rows: list[tuple[Any, ...]] = []
    metrics: dict[str, Any] = {"method": meter.describe(), "citations": OPS_CITATIONS, "inference": {}}
    for kind in cfg.detectors:
        det = ctx.detector(kind, dataset)
        def infer(d: Any = det) -> Any:
            return d.score(sample)

        r = meter.run(infer, min_wall_s=0.3, max_repeats=20)
        per = r.joules / len(sample)
        entry: dict[str, Any] = {"joules_per_inference": per, "reading": r.to_dict(), "flows": len(sample)}
        ops = ""
        if kind == "snn":
            det.score(sample)
            st = det.last_spike_stats
            entry["sops"] = st.sops
            entry["op_energy_j"] = op_energy(sops=st.sops)
            ops = f"{st.sops:.0f} SOPs -> {entry['op_energy_j']['sop_45nm_j'] * 1e9:.2f} nJ (45 nm), " \
                  f"{entry['op_energy_j']['sop_loihi_j'] * 1e9:.1f} nJ (Loihi), " \
                  f"{entry['op_energy_j']['sop_truenorth_j'] * 1e9:.1f} nJ (TrueNorth)"
        else:
            macs = _torch_macs(det)
            if macs:
                entry["macs"] = macs
                entry["op_energy_j"] = op_energy(macs=macs)
                ops = f"{macs} MACs -> {entry['op_energy_j']['mac_45nm_j'] * 1e9:.2f} nJ (45 nm)"
        metrics["inference"][kind] = entry
        rows.append(("inference", kind, per, r.method, ops or "n/a (not a neural network)"))
    # ledger transaction -------------------------------------------------------------------------
    root = ctx.work_dir / "energy-ledger"
    shutil.rmtree(root, ignore_errors=True)
    with Ledger.create(root, "trustmesh.local/blueprint-energy") as ledger:
        counter = [0]

        def one() -> None:
            counter[0] += 1
            ledger.append_one("alert", {"n": counter[0], "score": 0.97, "flow": "f" * 40})

        tx = meter.run(one, min_wall_s=0.3, max_repeats=2000)
        cp = meter.run(lambda: ledger.checkpoint(), min_wall_s=0.2, max_repeats=200)
    shutil.rmtree(root, ignore_errors=True)
    metrics["ledger_transaction"] = {"append": tx.to_dict(), "checkpoint": cp.to_dict()}
    rows.append(("ledger transaction (durable append)", "ledger", tx.joules, tx.method, ""))
    rows.append(("ledger checkpoint (signed)", "ledger", cp.joules, cp.method, ""))
    # incident -------------------------------------------------------------------------------------
    notes: list[str] = [metrics["method"]["note"]]
    try:
        from trustmesh.evaluate._sec_integrity import pipeline_model, pipeline_run

        pipeline_model(ctx)  # train/load the model first: its cost is not part of handling an incident
        with meter.measure() as box:
            run = pipeline_run(ctx, ledger_dir=ctx.work_dir / "energy-pipeline")
        incidents = run.get("incidents") or 0
        if incidents:
            per_incident = box[0].joules / incidents
            metrics["incident"] = {"joules_per_incident": per_incident, "incidents": incidents, "run": run,
                                   "reading": box[0].to_dict()}
            rows.append(("incident (pcap -> detect -> respond -> ledger)", "pipeline", per_incident,
                         box[0].method,
                         f"whole run (metering, scoring, response, ledger) / {incidents} incident(s) from {run.get('source')}"))
        else:
            notes.append("per-incident energy: the pipeline run raised no incidents")
    except Exception as exc:
        notes.append(f"per-incident energy skipped: {type(exc).__name__}: {exc}")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = [f"{r[0].split(' (')[0]}\n{r[1]}" for r in rows]
    ax.bar(np.arange(len(rows)), [max(float(r[2]), 1e-12) for r in rows], color="#8172b2")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(rows)), labels, fontsize=6, rotation=30)
    ax.set(ylabel="joules", title=f"Energy per unit of work ({meter.method})")
    plot = Plot("energy-per-unit", "Energy per inference, ledger transaction and incident", figure_png(fig))
    table = Table(f"Energy per unit of work — method: {meter.method}"
                  + (" (ESTIMATE from CPU time)" if meter.method != "rapl" else " (measured)"),
                  ("unit", "component", "joules", "method", "operation-count estimate"), tuple(rows))
    headline = {"method": meter.method, "ledger J/transaction": tx.joules}
    for kind, e in metrics["inference"].items():
        headline[f"{kind} J/inference"] = e["joules_per_inference"]
    if "incident" in metrics:
        headline["J/incident"] = metrics["incident"]["joules_per_incident"]
    notes.append("Operation-count figures are estimates of arithmetic energy only: " + "; ".join(OPS_CITATIONS.values()))
    return SectionResult("energy", "", "ok", headline=headline, metrics=metrics, tables=(table,),
                         plots=(plot,),
                         notes=tuple(notes))
