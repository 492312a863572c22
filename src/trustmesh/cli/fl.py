"""CLI commands: ``trustmesh fl simulate|serve|site`` and ``trustmesh bench fl|fl-deploy``."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, guarded, print_json
from trustmesh.cli._root import app, bench_app

__all__ = ["fl_app"]

#: flower-superlink's ``--database`` value for its Python in-memory state
#: (``flwr.supercore.constant.FLWR_IN_MEMORY_DB_NAME``; a test keeps them equal)
FLWR_IN_MEMORY_DB = ":flwr-in-memory:"

fl_app = typer.Typer(help="Federated learning across sites (Flower): simulate, serve, site.", no_args_is_help=True)
app.add_typer(fl_app, name="fl")


def _config(**options: Any) -> Any:
    from trustmesh.federated import config_from_options

    return config_from_options(**options)


@fl_app.command("simulate")
@guarded
def simulate_cmd(
    dataset: str = typer.Option("ton-iot-network", "--dataset", help="nsl-kdd | ton-iot-network | ton-iot-telemetry"),
    sites: int = typer.Option(3, "--sites", help="Number of sites (virtual SuperNodes)."),
    rounds: int = typer.Option(3, "--rounds", help="Federated rounds."),
    partition: str = typer.Option("iid", "--partition", help="iid | dirichlet:A | device | attack-family[:K]"),
    model: str = typer.Option("mlp", "--model", help="mlp (classifier) | autoencoder (anomaly model; each site "
                              "trains on its benign rows only)"),
    target_fpr: float = typer.Option(0.01, "--target-fpr", help="Threshold flags at most this share of the "
                                     "server-held benign validation rows (autoencoder metrics and --out)."),
    aggregator: str = typer.Option("fedavg", "--aggregator",
                                   help="fedavg | fedprox | median | trimmed-mean | multikrum | fltrust"),
    defence: str | None = typer.Option(None, "--defence", help="Pre-aggregation defence wrapped around the "
                                       "--aggregator rule: normbound | centered-clip | bulyan"),
    assumed_malicious: int | None = typer.Option(None, "--assumed-malicious", help="f, the malicious sites the "
                                                 "robust rules tolerate (default: the --attack sites, at least 1)."),
    secagg: bool = typer.Option(False, "--secagg", help="Secure aggregation (SecAgg+'s protocol with ChaCha20 "
                                "masks; the server sees only masked updates)."),
    secagg_shares: int | None = typer.Option(None, "--secagg-shares", help="SecAgg+ shares per site."),
    secagg_threshold: int | None = typer.Option(None, "--secagg-threshold", help="SecAgg+ reconstruction threshold."),
    zk_bound: int | None = typer.Option(None, "--zk-bound", help="With --secagg: quantise updates to integers in "
                                        "[-B, B] and have each site prove that L-inf bound in zero knowledge; sites "
                                        "whose proof fails are left out of the sum (and recorded)."),
    zk_clip: float = typer.Option(1.0, "--zk-clip", help="With --zk-bound: clip each update coordinate to "
                                  "[-C, C] before quantising (one level is C/B)."),
    dp: str | None = typer.Option(None, "--dp", help="Central DP: noise=Z,clip=C,delta=D[,budget=EPS][,method=pld]; "
                                  "or epsilon=E,clip=C,delta=D to calibrate the noise to E over all rounds"),
    dp_sgd: str | None = typer.Option(None, "--dp-sgd", help="Record-level local DP-SGD (opacus) with a per-site "
                                      "accountant: noise=Z,clip=C[,delta=D][,budget=EPS][,method=pld]; or "
                                      "epsilon=E,clip=C[,delta=D] to calibrate each site's noise to E over all rounds"),
    he: str | None = typer.Option(None, "--he", help="Homomorphic aggregation: ckks"),
    dp_pretrain: str | None = typer.Option(None, "--dp-pretrain", help="Pre-train the MLP's hidden layers on a "
                                           "public dataset (unsw-nb15; its shared columns only, no epsilon) "
                                           "before the federated rounds; --in-process runs."),
    attack: str | None = typer.Option(None, "--attack", help="KIND:FRACTION with KIND in label-flip, sign-flip, "
                                      "scaling, gaussian, backdoor"),
    server_opt: str | None = typer.Option(None, "--server-opt", help="Server optimiser on each round's aggregate: "
                                          "none | fedavgm | fedadam | fedyogi, with :lr=..,momentum=..,beta1=..,"
                                          "beta2=..,tau=.. (default none:lr=1.5; none, i.e. FedAvg, with --dp-sgd or "
                                          "--model autoencoder; see docs/federated.md)."),
    seed: int = typer.Option(0, "--seed"),
    local_epochs: int | None = typer.Option(None, "--local-epochs", help="Local epochs per round (default 10; "
                                            "1 with --model autoencoder)."),
    lr: float | None = typer.Option(None, "--lr", help="Local Adam learning rate (default 3e-3; 0.01 with "
                                    "--dp-sgd)."),
    lr_decay: float | None = typer.Option(None, "--lr-decay", help="Local learning-rate schedule across rounds: "
                                          "round r trains with LR * LR_DECAY^(r-1), in (0, 1] (default 0.7; 1, "
                                          "i.e. constant, with --dp-sgd or --model autoencoder)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Local batch size (default 32; 64 with "
                                          "--model autoencoder; with --dp-sgd each site's rows / 20, see "
                                          "--batches-per-epoch)."),
    batches_per_epoch: int | None = typer.Option(None, "--batches-per-epoch", help="Instead of --batch-size: each "
                                                 "site's batch is ceil(rows / K), the same DP-SGD sample rate 1/K "
                                                 "at every site (default 20 with --dp-sgd)."),
    class_weight: str | None = typer.Option(None, "--class-weight",
                                            help="Cross-entropy class weights from each party's own label counts: "
                                            "none | balanced | sqrt (default sqrt; none with --dp-sgd or the "
                                            "autoencoder; the --centralized baseline uses the same)."),
    weight_counts: str | None = typer.Option(None, "--weight-counts", help="Whose label counts the class weights "
                                             "come from: local (each site's own) | global (round 0 sums every "
                                             "site's count vector); default local."),
    hidden: str | None = typer.Option(None, "--hidden", help="Hidden widths of the MLP, e.g. 128,64 (default "
                                      "128,64; 64,32 with --dp-sgd or --model autoencoder)."),
    fedrs: float = typer.Option(1.0, "--fedrs", help="FedRS: scale the logits of classes a site has no row of by "
                                "ALPHA in its local loss, in (0, 1] (default 1: plain softmax)."),
    head_weights: str | None = typer.Option(None, "--head-weights", help="How the output layer is averaged: rows "
                                            "(FedAvg's row-count weights) | classes (row c weighted by each "
                                            "site's rows of class c, from round 0's counts); default classes, "
                                            "rows with --dp, --dp-sgd, a robust --aggregator, --defence or "
                                            "--model autoencoder (which refuse classes)."),
    max_rows: int | None = typer.Option(20000, "--max-rows", help="Subsample the training split (0 = all)."),
    max_test: int | None = typer.Option(5000, "--max-test", help="Subsample the test split (0 = all)."),
    holdout: bool = typer.Option(False, "--holdout",
                                 help="nsl-kdd: score on a stratified 20 % hold-out of KDDTrain+ instead of KDDTest+ "
                                 "(an in-distribution view; KDDTest+ stays the official test set)."),
    ledger: Path | None = typer.Option(None, "--ledger", help="Ledger directory: each round is appended."),
    out: Path | None = typer.Option(None, "--out", help="Write the final model as a detector artifact (OUT + OUT.manifest.json)."),
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
        rare_class_recall,
        run_inprocess,
        save_federated_model,
        simulate,
        train_centralized,
    )

    cfg = _config(sites=sites, rounds=rounds, partition=partition, aggregator=aggregator, secagg=secagg,
                  secagg_shares=secagg_shares, secagg_threshold=secagg_threshold, dp=dp, he=he, attack=attack,
                  seed=seed, local_epochs=local_epochs, dp_sgd=dp_sgd, lr=lr, batch_size=batch_size,
                  batches_per_epoch=batches_per_epoch, class_weight=class_weight, model=model, target_fpr=target_fpr, defence=defence,
                  assumed_malicious=assumed_malicious, zk_bound=zk_bound, zk_clip=zk_clip, server_opt=server_opt,
                  lr_decay=lr_decay, weight_counts=weight_counts, hidden=hidden, fedrs=fedrs,
                  head_weights=head_weights)
    if in_process and cfg.secagg is not None:
        raise ConfigError("--in-process cannot run SecAgg+ (it is Flower's protocol); drop one of them")
    if dp_pretrain is not None and cfg.model != "mlp":
        raise ConfigError("--dp-pretrain pre-trains the MLP classifier; it does not apply to --model "
                          f"{cfg.model}")
    if dp_pretrain is not None and not in_process:
        raise ConfigError("--dp-pretrain is implemented for --in-process runs only (the Flower simulation does "
                          "not start from pre-trained weights yet): add --in-process")
    data = load_federated_data(dataset, data_dir, max_train=max_rows or None, max_test=max_test or None, seed=seed,
                               holdout=holdout)
    recorder = RoundRecorder(open_round_ledger(ledger) if ledger is not None else None)
    t0 = time.perf_counter()
    bound_checks: list[dict[str, Any]] = []
    pretrain: dict[str, Any] | None = None
    start = None
    if dp_pretrain is not None:
        from trustmesh.federated import pretrained_weights, public_rows

        public = public_rows(dp_pretrain, data, data_dir)
        start = pretrained_weights(public, data.n_features, len(data.classes), cfg.train.hidden,
                                   seed=cfg.train.model_seed)
        pretrain = public.info
    if in_process:
        result = run_inprocess(cfg, data, recorder=recorder, initial_weights=start)
    else:
        result, flower_run = simulate(cfg, data, recorder=recorder)
        bound_checks = [dataclasses.asdict(s) for s in flower_run.bound_stats if s.prove_s or s.rejected]
    doc = result.to_dict()
    if bound_checks:
        doc["bound_checks"] = bound_checks  # per round: prove/verify seconds per site, rejections
    doc["dataset"] = {"name": dataset, "train_rows": int(len(data.y_train)), "test_rows": int(len(data.y_test)),
                      "digest": data.digest}
    if cfg.model == "mlp" and result.metrics:
        # the smallest classes' recall beside macro-F1 (DP-SGD loses them first; docs/federated.md)
        doc["rare_class_recall"] = rare_class_recall(result.metrics, data.y_train, data.classes)
    if pretrain is not None:
        doc["pretrain"] = pretrain  # the public rows the hidden layers were pre-trained on (no epsilon)
    doc["wall_seconds"] = round(time.perf_counter() - t0, 3)
    if centralized:
        doc["centralized"] = train_centralized(cfg, data)
    if out is not None:
        manifest = save_federated_model(out, result.final_weights, data, config=cfg.describe(),
                                        hidden=cfg.train.hidden, metrics=result.metrics, seed=cfg.train.model_seed,
                                        epsilon=result.epsilon, run_path=result.path, recorder=recorder,
                                        target_fpr=cfg.target_fpr, model=cfg.model)
        ledger_info = manifest.training["federated"]["ledger"] or {}
        doc["model"] = {"path": str(out), "model_id": manifest.model_id, "sha256": manifest.artifact_sha256,
                        "threshold": manifest.threshold, "ledger_model_entry": ledger_info.get("model_entry")}
        doc["model_ledger_index"] = ledger_info.get("model_entry")
    if recorder.ledger is not None and hasattr(recorder.ledger, "checkpoint"):
        recorder.ledger.checkpoint()
    if json_out:
        print_json(doc)
        return
    m = result.metrics
    # the classifier reports macro-F1; the anomaly model binary ROC-AUC and F1/FPR at its threshold
    key = "macro_f1" if cfg.model == "mlp" else "roc_auc"
    head = f"macro_f1={m.get('macro_f1')}" if cfg.model == "mlp" else f"roc_auc={m.get('roc_auc')} f1={m.get('f1')}"
    console.print(f"{result.path}: {head} accuracy={m.get('accuracy')} "
                  f"epsilon={result.epsilon} rounds={len(result.rounds)}"
                  + (f" stopped: {result.stopped}" if result.stopped else ""))
    for r in result.rounds:
        console.print(f"  round {r.round}: {r.seconds:.2f}s {key}={r.metrics.get(key)} rejected={r.rejected}")


@bench_app.command("fl")
@guarded
def bench_fl(
    sites: str = typer.Option("10,50,100", "--sites", help="Comma-separated site counts."),
    modes: str = typer.Option("plain,secagg,dp,ckks", "--modes", help="Subset of plain,secagg,secagg-zk,dp,ckks "
                              "(secagg-zk: --secagg with the ZK L-inf bound of --zk-bound)."),
    zk_bound: int = typer.Option(127, "--zk-bound", help="The bound sites prove in mode secagg-zk."),
    zk_clip: float = typer.Option(1.0, "--zk-clip", help="The update clip in mode secagg-zk."),
    hidden: str = typer.Option("64,32", "--hidden", help="MLP hidden layer sizes (the proof cost grows with them)."),
    rounds: int = typer.Option(3, "--rounds", help="Rounds per run; round 1 (actor start-up) is excluded."),
    rows_per_site: int = typer.Option(200, "--rows-per-site", help="Training rows per site (0 = the whole training split)."),
    local_epochs: int = typer.Option(1, "--local-epochs"),
    dataset: str = typer.Option("ton-iot-network", "--dataset"),
    in_process: bool = typer.Option(False, "--in-process", help="Time the in-process loop instead of Flower."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Time federated rounds for several site counts, with and without SecAgg+, DP and CKKS."""
    import os

    from trustmesh.errors import ConfigError
    from trustmesh.federated import FLConfig, TrainConfig, load_federated_data, run_inprocess, simulate
    from trustmesh.privacy import DPConfig, SecAggConfig

    counts = [int(s) for s in sites.split(",") if s.strip()]
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    for m in wanted:
        if m not in ("plain", "secagg", "secagg-zk", "dp", "ckks"):
            raise ConfigError(f"--modes: unknown mode {m!r}")
    if rounds < 2:
        raise ConfigError("--rounds must be >= 2 (round 1 includes start-up and is excluded)")
    if rows_per_site < 0:
        raise ConfigError(f"--rows-per-site must be >= 0, got {rows_per_site}")
    rows: list[dict[str, Any]] = []
    for n in counts:
        data = load_federated_data(dataset, max_train=n * rows_per_site or None, max_test=2000, seed=seed)
        for mode in wanted:
            if mode.startswith("secagg") and in_process:
                continue
            kw: dict[str, Any] = {}
            if mode == "secagg":
                kw["secagg"] = SecAggConfig.for_sites(n)
            elif mode == "secagg-zk":
                kw["secagg"] = dataclasses.replace(SecAggConfig.for_sites(n), zk_bound=zk_bound, zk_clip=zk_clip)
            elif mode == "dp":
                kw["dp"] = DPConfig(noise_multiplier=1.0, clip_norm=1.0, delta=1e-5)
            elif mode == "ckks":
                kw["he"] = "ckks"
            layers = tuple(int(h) for h in hidden.split(",") if h.strip())
            cfg = FLConfig(n_sites=n, rounds=rounds, seed=seed,
                           train=TrainConfig(local_epochs=local_epochs, hidden=layers), **kw)
            t0 = time.perf_counter()
            zk: dict[str, Any] = {}
            if in_process:
                result = run_inprocess(cfg, data)
            else:
                result, flower_run = simulate(cfg, data)
                proved = [s for s in flower_run.bound_stats if s.prove_s]
                if proved:
                    zk = {"zk_bound": zk_bound, "coordinates": int(sum(w.size for w in result.final_weights)),
                          "prove_s_per_site_median": round(statistics.median(
                              v for s in proved for v in s.prove_s.values()), 4),
                          "verify_s_per_site_median": round(statistics.median(
                              v for s in proved for v in s.verify_s.values()), 4),
                          "verify_s_per_round": [round(sum(s.verify_s.values()), 3) for s in proved],
                          "link_check_s_per_round": [s.link_s for s in proved],
                          "rejected": [s.rejected for s in proved]}
            steady = result.round_times[1:]
            rows.append({"sites": n, "mode": mode, "path": result.path, "train_rows": int(len(data.y_train)),
                         "round_seconds_median": round(statistics.median(steady), 4),
                         "round_seconds": [round(t, 4) for t in result.round_times],
                         "wall_seconds": round(time.perf_counter() - t0, 2),
                         "macro_f1": result.metrics.get("macro_f1"), **zk})
    for row in rows:
        base = next((r for r in rows if r["sites"] == row["sites"] and r["mode"] == "plain"), None)
        if base and base["round_seconds_median"] > 0:
            row["vs_plain"] = round(row["round_seconds_median"] / base["round_seconds_median"], 3)
            row["overhead_seconds"] = round(row["round_seconds_median"] - base["round_seconds_median"], 4)
    doc = {"benchmark": "fl-round-time", "dataset": dataset, "rows_per_site": rows_per_site, "rounds": rounds,
           "local_epochs": local_epochs, "hidden": hidden, "load_average_1m": round(os.getloadavg()[0], 2),
           "results": rows}
    if json_out:
        print_json(doc)
    else:
        console.print(json.dumps(doc, indent=2))


@bench_app.command("fl-deploy")
@guarded
def bench_fl_deploy(
    sites: int = typer.Option(3, "--sites"),
    rounds: int = typer.Option(4, "--rounds", help="Round 1 includes each site's data load and is reported apart."),
    max_rows: int = typer.Option(6000, "--max-rows"),
    max_test: int = typer.Option(500, "--max-test"),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Certificates, keys and logs (default: a temp dir)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Time a deployed run on loopback (`fl serve` + N × `fl site`, TLS, enrolled keys): round time,
    slowest fit and their difference, the per-round overhead."""
    import os

    from trustmesh.federated._deploy_bench import run_deployed

    load = os.getloadavg()[0]
    t0 = time.process_time()
    doc = run_deployed(sites=sites, rounds=rounds, max_rows=max_rows, max_test=max_test, work=work_dir)
    steady = [o for o in doc.get("round_overhead", [])[1:] if o is not None]
    out = {"sites": sites, "rounds": rounds, "max_rows": max_rows, "round_times": doc["round_times"],
           "fit_seconds": doc.get("fit_seconds"), "round_overhead": doc.get("round_overhead"),
           "steady_overhead_median": statistics.median(steady) if steady else None,
           "macro_f1": doc["metrics"].get("macro_f1"), "load_start": load, "load_end": os.getloadavg()[0],
           "driver_cpu_seconds": time.process_time() - t0, "logs": doc.get("bench_dir")}
    if json_out:
        print_json(out)
        return
    for k, (t, f, o) in enumerate(zip(out["round_times"], out["fit_seconds"] or [], out["round_overhead"] or [],
                                      strict=False), start=1):
        fit = "n/a" if f is None else f"{f:.2f}s"
        extra = "n/a" if o is None else f"{o:.2f}s"
        console.print(f"round {k}: {t:.2f}s  slowest fit {fit}  overhead {extra}")
    console.print(f"steady overhead (median of rounds 2..): {out['steady_overhead_median']}  "
                  f"load {load:.1f} -> {out['load_end']:.1f}")


def _venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower's processes: this interpreter's bin first on PATH (SuperLink spawns
    ``flwr-serverapp``, SuperNodes spawn ``flwr-clientapp`` by name)."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # SuperExec (which starts flwr-serverapp / flwr-clientapp) polls for tasks every 1 s by default
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    # no calls home: Flower's update check and telemetry would dial flower.ai from every process
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.update(extra or {})
    return env


def _wait_port(host: str, port: int, timeout: float, proc: Any) -> None:
    import socket

    from trustmesh.errors import FederatedError
    from trustmesh.federated._tls import connect_host

    dial = connect_host(host)  # a bind-all address is reached over loopback
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederatedError(f"flower-superlink exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((dial, port), timeout=0.5):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise FederatedError(f"flower-superlink did not listen on {host}:{port} within {timeout:.0f}s")


def _write_app(app_dir: Path, spec: dict[str, Any]) -> None:
    import tomli_w

    app_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "trustmesh-fl", "version": "1.0.0", "description": "trustmesh federated run",
                    "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {
            "publisher": "trustmesh",
            "components": {"serverapp": "trustmesh.federated._deploy:server_app",
                           "clientapp": "trustmesh._fl_worker:client_app"},
            "config": {"spec": json.dumps(spec, sort_keys=True)},
        }}},
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_superlink(address: str) -> str:
    """Return the host part of ``host:port`` / ``[v6]:port`` (ConfigError when malformed)."""
    from trustmesh.errors import ConfigError

    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--superlink must be HOST:PORT, got {address!r}")
    return host.strip("[]")


def _write_flwr_config(home: Path, address: str, root_cert: Path | None) -> None:
    """Write the ``FLWR_HOME/config.toml`` SuperLink connection that ``flwr run``/``flwr supernode`` use."""
    import tomli_w

    conn: dict[str, Any] = {"address": address}
    if root_cert is None:
        conn["insecure"] = True
    else:
        conn["root-certificates"] = str(root_cert.resolve())
    doc = {"superlink": {"default": "trustmesh", "trustmesh": conn}}
    (home / "config.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")


def _enroll_sites(bindir: Path, env: dict[str, str], work: Path, keys: list[Path]) -> list[dict[str, Any]]:
    """Register each site's public key with the SuperLink (``flwr supernode register``) before the run."""
    import subprocess

    from trustmesh.errors import FederatedError
    from trustmesh.federated._tls import load_site_public_key

    enrolled = []
    with (work / "enroll.log").open("ab") as log:
        for key in keys:
            proc = subprocess.run([str(bindir / "flwr"), "supernode", "register", str(key.resolve()),
                                   "trustmesh", "--format", "json"],
                                  env=env, cwd=work, capture_output=True, timeout=60, check=False)
            log.write(proc.stdout + proc.stderr)
            doc: dict[str, Any] = {}
            start = proc.stdout.find(b"{")
            if start >= 0:
                try:
                    doc = json.loads(proc.stdout[start:])
                except ValueError:
                    doc = {}
            if proc.returncode != 0 or not doc.get("success"):
                tail = (proc.stdout + proc.stderr).decode(errors="replace")[-600:]
                raise FederatedError(f"could not enroll site key {key} "
                                     f"(flwr exit {proc.returncode}):\n{tail}")
            enrolled.append({"public_key": str(key), "sha256": load_site_public_key(key),
                             "node_id": doc.get("node-id")})
    return enrolled


@fl_app.command("certs")
@guarded
def certs_cmd(
    directory: Path = typer.Argument(..., help="Output directory (created 0700): ca.pem, ca.key, server.pem, "
                                     "server.key."),
    host: list[str] = typer.Option(..., "--host", help="A name or address the sites dial (repeat); "
                                   "localhost/127.0.0.1/::1 are always added."),
    days: int = typer.Option(365, "--days", help="Server certificate validity."),
    renew: bool = typer.Option(False, "--renew", help="Replace an existing server certificate (rotation); "
                               "an existing CA is kept, so sites keep their ca.pem."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Create a private CA and a SuperLink server certificate for `fl serve --tls-dir` (keys 0600)."""
    from trustmesh.federated._tls import create_tls

    if days <= 0:
        from trustmesh.errors import ConfigError

        raise ConfigError(f"--days must be > 0, got {days}")
    doc = create_tls(directory, list(host), days=days, renew=renew).describe()
    doc["give_to_sites"] = doc["ca"]
    if json_out:
        print_json(doc)
        return
    console.print(f"server certificate {doc['cert']} for {', '.join(map(str, doc['hosts']))} "
                  f"(valid until {doc['not_after']})")
    console.print(f"give every site {doc['ca']} (sha256 {doc['ca_sha256']}); keep {directory}/ca.key offline")


@fl_app.command("site-key")
@guarded
def site_key_cmd(
    path: Path = typer.Argument(..., help="Private key file to write (0600); the public key goes to "
                                "PATH.pub."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Create this site's enrolment key; send PATH.pub to the coordinator (`fl serve --enroll PATH.pub`)."""
    from trustmesh.federated._tls import create_site_key

    key = create_site_key(path, overwrite=force)
    doc = {"private_key": str(key.private), "public_key": str(key.public), "sha256": key.fingerprint}
    if json_out:
        print_json(doc)
        return
    console.print(f"send {key.public} to the coordinator (sha256 {key.fingerprint}); "
                  f"{key.private} stays here")


@fl_app.command("serve")
@guarded
def serve_cmd(
    dataset: str = typer.Option("ton-iot-network", "--dataset"),
    sites: int = typer.Option(3, "--sites", help="Sites to wait for (each runs `trustmesh fl site`)."),
    rounds: int = typer.Option(3, "--rounds"),
    partition: str = typer.Option("iid", "--partition"),
    model: str = typer.Option("mlp", "--model", help="mlp | autoencoder (sites train on benign rows only)"),
    aggregator: str = typer.Option("fedavg", "--aggregator"),
    defence: str | None = typer.Option(None, "--defence", help="Wrap the aggregator, as for `fl simulate`."),
    assumed_malicious: int | None = typer.Option(None, "--assumed-malicious",
                                                 help="Sites the robust rules assume malicious (f)."),
    secagg: bool = typer.Option(False, "--secagg"),
    secagg_shares: int | None = typer.Option(None, "--secagg-shares", help="SecAgg+ shares per site."),
    secagg_threshold: int | None = typer.Option(None, "--secagg-threshold",
                                                help="SecAgg+ reconstruction threshold."),
    dp: str | None = typer.Option(None, "--dp", help="Central DP, as for `fl simulate`."),
    dp_sgd: str | None = typer.Option(None, "--dp-sgd", help="Record-level DP-SGD on the sites, as for `fl simulate`."),
    attack: str | None = typer.Option(None, "--attack"),
    server_opt: str | None = typer.Option(None, "--server-opt", help="As for `fl simulate`."),
    seed: int = typer.Option(0, "--seed"),
    local_epochs: int | None = typer.Option(None, "--local-epochs", help="As for `fl simulate` (default 10; 1 "
                                            "with --dp-sgd or --model autoencoder)."),
    max_rows: int = typer.Option(20000, "--max-rows"),
    max_test: int = typer.Option(5000, "--max-test"),
    ledger: Path | None = typer.Option(None, "--ledger"),
    out: Path | None = typer.Option(None, "--out"),
    host: str = typer.Option("127.0.0.1", "--host", help="SuperLink bind address (loopback by default)."),
    port: int = typer.Option(9092, "--port", help="SuperLink HTTPS port (Fleet + Control API)."),
    tls_dir: Path | None = typer.Option(None, "--tls-dir", help="Directory from `trustmesh fl certs` "
                                        "(ca.pem, server.pem, server.key)."),
    ssl_ca: Path | None = typer.Option(None, "--ssl-ca", help="CA certificate (or --tls-dir)."),
    ssl_cert: Path | None = typer.Option(None, "--ssl-cert", help="Server certificate (or --tls-dir)."),
    ssl_key: Path | None = typer.Option(None, "--ssl-key", help="Server key, mode 0600 (or --tls-dir)."),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP; allowed only on a loopback --host."),
    enroll: list[Path] | None = typer.Option(None, "--enroll", help="A site's public key from `trustmesh fl "
                                             "site-key` (repeat per site): only enrolled sites may join."),
    allow_unenrolled: bool = typer.Option(False, "--allow-unenrolled",
                                          help="On a non-loopback --host, accept any site trusting the CA."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Where the app, FLWR_HOME and logs go."),
    timeout: float = typer.Option(900.0, "--timeout", help="Give up after this many seconds."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Run the coordinator as a real Flower SuperLink (TLS) and submit the run; sites join with `fl site`."""
    import subprocess
    import sys
    import tempfile

    from trustmesh.cli._common import err_console
    from trustmesh.errors import ConfigError, FederatedError
    from trustmesh.federated._tls import connect_host, is_loopback, load_site_public_key, server_tls

    options = {"dataset": dataset, "sites": sites, "rounds": rounds, "partition": partition,
               "aggregator": aggregator, "secagg": secagg, "secagg_shares": secagg_shares,
               "secagg_threshold": secagg_threshold, "dp": dp, "dp_sgd": dp_sgd, "attack": attack, "seed": seed,
               "local_epochs": local_epochs, "max_rows": max_rows, "max_test": max_test, "model": model,
               "defence": defence, "assumed_malicious": assumed_malicious, "server_opt": server_opt}
    _config(**options)  # validate before starting any process
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    tls = server_tls(host, tls_dir=tls_dir, ssl_ca=ssl_ca, ssl_cert=ssl_cert, ssl_key=ssl_key,
                     insecure=insecure)
    keys = list(enroll or [])
    for key in keys:
        load_site_public_key(key)
    if keys and tls is None:
        raise ConfigError("--enroll needs TLS (Flower signs site requests only over HTTPS); drop --insecure")
    if keys and len(keys) < sites:
        raise ConfigError(f"--enroll: {len(keys)} site keys for --sites {sites}; the run could never start")
    if not keys and not is_loopback(host) and not allow_unenrolled:
        raise ConfigError(f"non-loopback --host {host} without --enroll would let any machine that has "
                          "ca.pem join as a site; enroll each site's key (`trustmesh fl site-key`, then "
                          "--enroll SITE.pub) or pass --allow-unenrolled")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="trustmesh-fl-"))
    work.mkdir(mode=0o700, parents=True, exist_ok=True)  # SuperLink state holds every site's updates
    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)  # a stale result must not pass for this run's
    # a fresh SuperLink state per run: registrations from an earlier serve must not outlive --enroll
    for suffix in ("", "-wal", "-shm"):
        (work / f"superlink.db{suffix}").unlink(missing_ok=True)
    spec = {**options, "ledger": str(ledger.resolve()) if ledger else None, "out": str(out.resolve()) if out else None,
            "result_path": str(result_path.resolve())}
    from trustmesh.config import find_data_dir

    found = find_data_dir()
    spec["data_dir"] = str(found) if found else None
    _write_app(work / "app", spec)
    home = work / "flwr-home"
    home.mkdir(exist_ok=True)
    _write_flwr_config(home, _hostport(connect_host(host), port), None if tls is None else tls.ca)
    env = _venv_env({"FLWR_HOME": str(home)})
    bindir = Path(sys.executable).parent
    # Flower's in-memory state: a fresh one per run, nothing of the sites' updates on disk, and no
    # SQLite commit per object (a file database cost ~20 ms per object pushed or pulled; docs/federated.md)
    link_cmd = [str(bindir / "flower-superlink"), "--host", host, "--port", str(port),
                "--disable-runtime-dependency-installation", "--database", FLWR_IN_MEMORY_DB]
    if tls is None:
        link_cmd.append("--insecure")
    else:
        link_cmd += ["--ssl-ca-certfile", str(tls.ca.resolve()), "--ssl-certfile", str(tls.cert.resolve()),
                     "--ssl-keyfile", str(tls.key.resolve())]
    if keys:
        link_cmd.append("--enable-supernode-auth")
    link_log = (work / "superlink.log").open("wb")
    link = subprocess.Popen(link_cmd, env=env, stdout=link_log, stderr=subprocess.STDOUT, cwd=work,
                            start_new_session=True)
    enrolled: list[dict[str, Any]] = []
    try:
        _wait_port(host, port, 60.0, link)
        if keys:
            enrolled = _enroll_sites(bindir, env, work, keys)
            (work / "enrolled.json").write_text(json.dumps(enrolled, indent=2) + "\n", encoding="utf-8")
            err_console.print(f"enrolled {len(enrolled)} site keys; sites may join {host}:{port} now")
        run_log = (work / "flwr-run.log").open("wb")
        proc = subprocess.run(
            [str(bindir / "flwr"), "run", str(work / "app"), "trustmesh", "--stream"],
            env=env, stdout=run_log, stderr=subprocess.STDOUT, cwd=work, timeout=timeout, check=False,
        )
        if not result_path.exists():
            tail = (work / "flwr-run.log").read_text(errors="replace")[-1500:]
            raise FederatedError(f"the run ended (flwr exit {proc.returncode}) without a result; log tail:\n{tail}")
    except subprocess.TimeoutExpired as exc:
        raise FederatedError(f"the federated run did not finish within {timeout:.0f}s (logs in {work})") from exc
    finally:
        from trustmesh._procs import stop_group

        # the SuperLink runs flwr-serverapp/superexec children in its own session: stop the group
        stop_group(link, timeout=15)
        link_log.close()
    doc = json.loads(result_path.read_text(encoding="utf-8"))
    doc["work_dir"] = str(work)
    doc["transport"] = {"tls": tls is not None,
                        "ca_sha256": None if tls is None else tls.describe()["ca_sha256"],
                        "supernode_auth": bool(keys), "enrolled": enrolled}
    if json_out:
        print_json(doc)
    else:
        console.print(f"flower-deployment: macro_f1={doc['metrics'].get('macro_f1')} rounds={len(doc['rounds'])} "
                      f"tls={tls is not None} enrolled={len(enrolled)} (logs in {work})")


@fl_app.command("site")
@guarded
def site_cmd(
    partition_id: int = typer.Option(..., "--partition-id", help="This site's partition (0-based)."),
    superlink: str = typer.Option("127.0.0.1:9092", "--superlink", help="SuperLink host:port."),
    port: int = typer.Option(9094, "--port", help="Local port of this SuperNode's ClientApp runtime API."),
    sites: int | None = typer.Option(None, "--sites", help="Total sites (informational, sent as num-partitions)."),
    root_cert: Path | None = typer.Option(None, "--root-cert", help="The coordinator's ca.pem: verify the "
                                          "SuperLink's certificate (TLS)."),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP; only to a loopback --superlink."),
    auth_key: Path | None = typer.Option(None, "--auth-key", help="This site's private key from "
                                         "`trustmesh fl site-key` (when the coordinator enrolls sites)."),
) -> None:
    """Run one site as a Flower SuperNode until interrupted; the run's spec comes from the coordinator."""
    import subprocess
    import sys

    from trustmesh.errors import ConfigError, FederatedError
    from trustmesh.federated._tls import ca_fingerprint, check_site_transport

    if partition_id < 0:
        raise ConfigError(f"--partition-id must be >= 0, got {partition_id}")
    check_site_transport(superlink, _split_superlink(superlink), root_cert=root_cert, insecure=insecure,
                         auth_key=auth_key)
    import os
    import secrets
    import signal
    import tempfile

    node_config = f"partition-id={partition_id}" + (f" num-partitions={sites}" if sites else "")
    home = tempfile.mkdtemp(prefix=f"trustmesh-site{partition_id}-")  # 0700; installed apps stay out of ~/.flwr
    # The ClientApp runs in this site's long-running executor (`trustmesh._fl_worker`: torch, data and
    # model loaded once), which the SuperNode in `process` isolation hands its tasks to; only holders
    # of this 0600 secret may take them. `trustmesh._supernode` is flower-supernode with its fixed
    # 3 s idle pull shortened (version-checked).
    secret = Path(home) / "superexec.secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    cmd = [sys.executable, "-m", "trustmesh._supernode", "--superlink", superlink, "--node-config", node_config,
           "--isolation", "process", "--host", "127.0.0.1", "--port", str(port),
           "--superexec-auth-secret-file", str(secret)]
    if root_cert is None:
        cmd.append("--insecure")
    else:
        ca_fingerprint(root_cert)  # a readable CA certificate, not a server cert or a key
        cmd += ["--root-certificates", str(root_cert.resolve())]
    if auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(auth_key.resolve())]
    stopped = False

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    worker = subprocess.Popen([sys.executable, "-m", "trustmesh._fl_worker", f"127.0.0.1:{port}", str(secret)],
                              env=_venv_env({"FLWR_HOME": home}), start_new_session=True)
    proc = None
    try:
        # own session: the SuperNode and any helper it starts are stopped with it as one group
        proc = subprocess.Popen(cmd, env=_venv_env({"FLWR_HOME": home}), start_new_session=True)
        proc.wait()
    except KeyboardInterrupt:
        stopped = True
    finally:
        from trustmesh._procs import stop_group

        stop_group(worker, timeout=10)
        if proc is not None:
            stop_group(proc, timeout=10)
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    if not stopped and proc is not None and proc.returncode != 0:
        # Flower's exit code 305: the SuperLink was unreachable, its certificate did not verify
        # against --root-cert, or this site's key is not enrolled.
        raise FederatedError(f"site {partition_id}: flower-supernode exited with code {proc.returncode} "
                             f"(could not join {superlink}; see its output above)")
