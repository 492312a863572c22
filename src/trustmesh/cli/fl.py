"""CLI commands: ``trustmesh fl simulate|serve|site`` and ``trustmesh bench fl``."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, guarded, print_json
from trustmesh.cli._root import app, bench_app

__all__ = ["fl_app"]

fl_app = typer.Typer(help="Federated learning across sites (Flower): simulate, serve, site.", no_args_is_help=True)
app.add_typer(fl_app, name="fl")


def _config(
    *, sites: int, rounds: int, partition: str, aggregator: str, secagg: bool, secagg_shares: int | None,
    secagg_threshold: int | None, dp: str | None, he: str | None, attack: str | None, seed: int,
    local_epochs: int, dp_sgd: str | None,
) -> Any:
    from trustmesh.errors import ConfigError
    from trustmesh.federated import AttackSpec, FLConfig, PartitionSpec, TrainConfig
    from trustmesh.privacy import DPConfig, SecAggConfig

    try:
        sa = None
        if secagg:
            sa = SecAggConfig.for_sites(sites)
            if secagg_shares is not None or secagg_threshold is not None:
                sa = SecAggConfig(num_shares=secagg_shares or sa.num_shares,
                                  reconstruction_threshold=secagg_threshold or sa.reconstruction_threshold)
        sgd = None
        if dp_sgd:
            parsed = dict(kv.split("=", 1) for kv in dp_sgd.split(",") if kv)
            sgd = (float(parsed["noise"]), float(parsed["clip"]))
        dp_cfg = None
        if dp:
            # epsilon=E calibrates the noise so that all rounds together spend at most E
            parts = dict(kv.split("=", 1) for kv in dp.split(",") if "=" in kv)
            if "epsilon" in parts:
                from trustmesh.privacy import noise_multiplier_for_epsilon

                eps = float(parts.pop("epsilon"))
                z = noise_multiplier_for_epsilon(eps, float(parts.get("delta", 1e-5)), rounds)
                parts["noise"] = str(z)
                parts.setdefault("budget", str(eps))
            dp_cfg = DPConfig.parse(",".join(f"{k}={v}" for k, v in parts.items()))
        return FLConfig(
            n_sites=sites, rounds=rounds, partition=PartitionSpec.parse(partition), aggregator=aggregator,
            secagg=sa, dp=dp_cfg, he=he,
            attack=AttackSpec.parse(attack) if attack else None, seed=seed,
            train=TrainConfig(local_epochs=local_epochs, dp_sgd=sgd),
        )
    except (ValueError, KeyError) as exc:
        raise ConfigError(str(exc)) from exc


@fl_app.command("simulate")
@guarded
def simulate_cmd(
    dataset: str = typer.Option("ton-iot-network", "--dataset", help="nsl-kdd | ton-iot-network | ton-iot-telemetry"),
    sites: int = typer.Option(3, "--sites", help="Number of sites (virtual SuperNodes)."),
    rounds: int = typer.Option(3, "--rounds", help="Federated rounds."),
    partition: str = typer.Option("iid", "--partition", help="iid | dirichlet:A | device | attack-family[:K]"),
    aggregator: str = typer.Option("fedavg", "--aggregator",
                                   help="fedavg | fedprox | median | trimmed-mean | multikrum | fltrust"),
    secagg: bool = typer.Option(False, "--secagg", help="Flower SecAgg+ (the server sees only masked updates)."),
    secagg_shares: int | None = typer.Option(None, "--secagg-shares", help="SecAgg+ shares per site."),
    secagg_threshold: int | None = typer.Option(None, "--secagg-threshold", help="SecAgg+ reconstruction threshold."),
    dp: str | None = typer.Option(None, "--dp", help="Central DP: noise=Z,clip=C,delta=D[,budget=EPS][,method=pld]; "
                                  "or epsilon=E,clip=C,delta=D to calibrate the noise to E over all rounds"),
    dp_sgd: str | None = typer.Option(None, "--dp-sgd", help="Local DP-SGD with opacus: noise=Z,clip=C"),
    he: str | None = typer.Option(None, "--he", help="Homomorphic aggregation: ckks"),
    attack: str | None = typer.Option(None, "--attack", help="KIND:FRACTION with KIND in label-flip, sign-flip, "
                                      "scaling, gaussian, backdoor"),
    seed: int = typer.Option(0, "--seed"),
    local_epochs: int = typer.Option(1, "--local-epochs"),
    max_rows: int | None = typer.Option(20000, "--max-rows", help="Subsample the training split (0 = all)."),
    max_test: int | None = typer.Option(5000, "--max-test", help="Subsample the test split (0 = all)."),
    ledger: Path | None = typer.Option(None, "--ledger", help="Ledger directory: each round is appended."),
    out: Path | None = typer.Option(None, "--out", help="Write the final model (.npz + .manifest.json)."),
    in_process: bool = typer.Option(False, "--in-process",
                                    help="Run the same round logic without Flower/Ray (fast sweeps; no SecAgg+)."),
    centralized: bool = typer.Option(False, "--centralized",
                                     help="Also train the same model centrally (rounds x local epochs) as a baseline."),
    data_dir: Path | None = typer.Option(None, "--data-dir"),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Run a federated training as a Flower simulation and report final metrics, epsilon and timings."""
    from trustmesh.errors import ConfigError
    from trustmesh.federated import (
        RoundRecorder,
        load_federated_data,
        open_round_ledger,
        run_inprocess,
        save_federated_model,
        simulate,
        train_centralized,
    )

    cfg = _config(sites=sites, rounds=rounds, partition=partition, aggregator=aggregator, secagg=secagg,
                  secagg_shares=secagg_shares, secagg_threshold=secagg_threshold, dp=dp, he=he, attack=attack,
                  seed=seed, local_epochs=local_epochs, dp_sgd=dp_sgd)
    if in_process and cfg.secagg is not None:
        raise ConfigError("--in-process cannot run SecAgg+ (it is Flower's protocol); drop one of them")
    data = load_federated_data(dataset, data_dir, max_train=max_rows or None, max_test=max_test or None, seed=seed)
    recorder = RoundRecorder(open_round_ledger(ledger) if ledger is not None else None)
    t0 = time.perf_counter()
    if in_process:
        result = run_inprocess(cfg, data, recorder=recorder)
    else:
        result, _ = simulate(cfg, data, recorder=recorder)
    doc = result.to_dict()
    doc["dataset"] = {"name": dataset, "train_rows": int(len(data.y_train)), "test_rows": int(len(data.y_test)),
                      "digest": data.digest}
    doc["wall_seconds"] = round(time.perf_counter() - t0, 3)
    if centralized:
        doc["centralized"] = train_centralized(cfg, data)
    if out is not None:
        manifest = save_federated_model(out, result.final_weights, classes=data.classes,
                                        feature_names=data.feature_names, hidden=cfg.train.hidden,
                                        config=cfg.describe(), metrics=result.metrics, dataset_digest=data.digest,
                                        recorder=recorder)
        doc["model"] = {"path": str(out), "sha256": manifest["sha256"],
                        "ledger_model_entry": manifest.get("ledger_model_entry")}
        doc["model_ledger_index"] = manifest.get("ledger_model_entry")
    if recorder.ledger is not None and hasattr(recorder.ledger, "checkpoint"):
        recorder.ledger.checkpoint()
    if json_out:
        print_json(doc)
        return
    m = result.metrics
    console.print(f"{result.path}: macro_f1={m.get('macro_f1')} accuracy={m.get('accuracy')} "
                  f"epsilon={result.epsilon} rounds={len(result.rounds)}"
                  + (f" stopped: {result.stopped}" if result.stopped else ""))
    for r in result.rounds:
        console.print(f"  round {r.round}: {r.seconds:.2f}s f1={r.metrics.get('macro_f1')} rejected={r.rejected}")


@bench_app.command("fl")
@guarded
def bench_fl(
    sites: str = typer.Option("10,50,100", "--sites", help="Comma-separated site counts."),
    modes: str = typer.Option("plain,secagg,dp,ckks", "--modes", help="Subset of plain,secagg,dp,ckks."),
    rounds: int = typer.Option(3, "--rounds", help="Rounds per run; round 1 (actor start-up) is excluded."),
    rows_per_site: int = typer.Option(200, "--rows-per-site"),
    dataset: str = typer.Option("ton-iot-network", "--dataset"),
    in_process: bool = typer.Option(False, "--in-process", help="Time the in-process loop instead of Flower."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Time federated rounds for several site counts, with and without SecAgg+, DP and CKKS."""
    from trustmesh.errors import ConfigError
    from trustmesh.federated import FLConfig, load_federated_data, run_inprocess, simulate
    from trustmesh.privacy import DPConfig, SecAggConfig

    counts = [int(s) for s in sites.split(",") if s.strip()]
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    for m in wanted:
        if m not in ("plain", "secagg", "dp", "ckks"):
            raise ConfigError(f"--modes: unknown mode {m!r}")
    if rounds < 2:
        raise ConfigError("--rounds must be >= 2 (round 1 includes start-up and is excluded)")
    rows: list[dict[str, Any]] = []
    for n in counts:
        data = load_federated_data(dataset, max_train=n * rows_per_site, max_test=2000, seed=seed)
        for mode in wanted:
            if mode == "secagg" and in_process:
                continue
            kw: dict[str, Any] = {}
            if mode == "secagg":
                kw["secagg"] = SecAggConfig.for_sites(n)
            elif mode == "dp":
                kw["dp"] = DPConfig(noise_multiplier=1.0, clip_norm=1.0, delta=1e-5)
            elif mode == "ckks":
                kw["he"] = "ckks"
            cfg = FLConfig(n_sites=n, rounds=rounds, seed=seed, **kw)
            t0 = time.perf_counter()
            result = run_inprocess(cfg, data) if in_process else simulate(cfg, data)[0]
            steady = result.round_times[1:]
            rows.append({"sites": n, "mode": mode, "path": result.path,
                         "round_seconds_median": round(statistics.median(steady), 4),
                         "round_seconds": [round(t, 4) for t in result.round_times],
                         "wall_seconds": round(time.perf_counter() - t0, 2),
                         "macro_f1": result.metrics.get("macro_f1")})
    for row in rows:
        base = next((r for r in rows if r["sites"] == row["sites"] and r["mode"] == "plain"), None)
        if base and base["round_seconds_median"] > 0:
            row["vs_plain"] = round(row["round_seconds_median"] / base["round_seconds_median"], 3)
    doc = {"benchmark": "fl-round-time", "dataset": dataset, "rows_per_site": rows_per_site, "rounds": rounds,
           "results": rows}
    if json_out:
        print_json(doc)
    else:
        console.print(json.dumps(doc, indent=2))
