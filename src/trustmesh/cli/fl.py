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
    lr: float = typer.Option(3e-3, "--lr", help="Local Adam learning rate."),
    batch_size: int = typer.Option(64, "--batch-size", help="Local batch size."),
    max_rows: int | None = typer.Option(20000, "--max-rows", help="Subsample the training split (0 = all)."),
    max_test: int | None = typer.Option(5000, "--max-test", help="Subsample the test split (0 = all)."),
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
        run_inprocess,
        save_federated_model,
        simulate,
        train_centralized,
    )

    cfg = _config(sites=sites, rounds=rounds, partition=partition, aggregator=aggregator, secagg=secagg,
                  secagg_shares=secagg_shares, secagg_threshold=secagg_threshold, dp=dp, he=he, attack=attack,
                  seed=seed, local_epochs=local_epochs, dp_sgd=dp_sgd, lr=lr, batch_size=batch_size)
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
        manifest = save_federated_model(out, result.final_weights, data, config=cfg.describe(),
                                        hidden=cfg.train.hidden, metrics=result.metrics, seed=cfg.train.model_seed,
                                        epsilon=result.epsilon, run_path=result.path, recorder=recorder)
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
    local_epochs: int = typer.Option(1, "--local-epochs"),
    dataset: str = typer.Option("ton-iot-network", "--dataset"),
    in_process: bool = typer.Option(False, "--in-process", help="Time the in-process loop instead of Flower."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Time federated rounds for several site counts, with and without SecAgg+, DP and CKKS."""
    from trustmesh.errors import ConfigError
    from trustmesh.federated import FLConfig, TrainConfig, load_federated_data, run_inprocess, simulate
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
            cfg = FLConfig(n_sites=n, rounds=rounds, seed=seed, train=TrainConfig(local_epochs=local_epochs), **kw)
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
           "local_epochs": local_epochs,
           "results": rows}
    if json_out:
        print_json(doc)
    else:
        console.print(json.dumps(doc, indent=2))


def _venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower's processes: this interpreter's bin first on PATH (SuperLink spawns
    ``flwr-serverapp``, SuperNodes spawn ``flwr-clientapp`` by name)."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    env.update(extra or {})
    return env


def _wait_port(host: str, port: int, timeout: float, proc: Any) -> None:
    import socket

    from trustmesh.errors import FederatedError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederatedError(f"flower-superlink exited with code {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
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
                           "clientapp": "trustmesh.federated._deploy:client_app"},
            "config": {"spec": json.dumps(spec, sort_keys=True)},
        }}},
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")


@fl_app.command("serve")
@guarded
def serve_cmd(
    dataset: str = typer.Option("ton-iot-network", "--dataset"),
    sites: int = typer.Option(3, "--sites", help="Sites to wait for (each runs `trustmesh fl site`)."),
    rounds: int = typer.Option(3, "--rounds"),
    partition: str = typer.Option("iid", "--partition"),
    aggregator: str = typer.Option("fedavg", "--aggregator"),
    secagg: bool = typer.Option(False, "--secagg"),
    dp: str | None = typer.Option(None, "--dp"),
    attack: str | None = typer.Option(None, "--attack"),
    seed: int = typer.Option(0, "--seed"),
    local_epochs: int = typer.Option(1, "--local-epochs"),
    max_rows: int = typer.Option(20000, "--max-rows"),
    max_test: int = typer.Option(5000, "--max-test"),
    ledger: Path | None = typer.Option(None, "--ledger"),
    out: Path | None = typer.Option(None, "--out"),
    host: str = typer.Option("127.0.0.1", "--host", help="SuperLink address (loopback by default)."),
    port: int = typer.Option(9092, "--port", help="SuperLink HTTP port (Fleet + Control API)."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Where the app, FLWR_HOME and logs go."),
    timeout: float = typer.Option(900.0, "--timeout", help="Give up after this many seconds."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Run the coordinator as a real Flower SuperLink and submit the run; sites join with `fl site`."""
    import subprocess
    import sys
    import tempfile

    from trustmesh.errors import FederatedError

    options = {"dataset": dataset, "sites": sites, "rounds": rounds, "partition": partition,
               "aggregator": aggregator, "secagg": secagg, "dp": dp, "attack": attack, "seed": seed,
               "local_epochs": local_epochs, "max_rows": max_rows, "max_test": max_test}
    _config(**options)  # validate before starting any process
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="trustmesh-fl-"))
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "result.json"
    spec = {**options, "ledger": str(ledger.resolve()) if ledger else None, "out": str(out.resolve()) if out else None,
            "result_path": str(result_path.resolve())}
    from trustmesh.config import find_data_dir

    found = find_data_dir()
    spec["data_dir"] = str(found) if found else None
    _write_app(work / "app", spec)
    home = work / "flwr-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "trustmesh"\n\n[superlink.trustmesh]\naddress = "{host}:{port}"\ninsecure = true\n',
        encoding="utf-8")
    env = _venv_env({"FLWR_HOME": str(home)})
    bindir = Path(sys.executable).parent
    link_log = (work / "superlink.log").open("wb")
    link = subprocess.Popen(
        [str(bindir / "flower-superlink"), "--insecure", "--host", host, "--port", str(port),
         "--disable-runtime-dependency-installation", "--database", str(work / "superlink.db")],
        env=env, stdout=link_log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True,
    )
    try:
        _wait_port(host, port, 60.0, link)
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
    if json_out:
        print_json(doc)
    else:
        console.print(f"flower-deployment: macro_f1={doc['metrics'].get('macro_f1')} rounds={len(doc['rounds'])} "
                      f"(logs in {work})")


@fl_app.command("site")
@guarded
def site_cmd(
    partition_id: int = typer.Option(..., "--partition-id", help="This site's partition (0-based)."),
    superlink: str = typer.Option("127.0.0.1:9092", "--superlink", help="SuperLink host:port."),
    port: int = typer.Option(9094, "--port", help="Local port of this SuperNode's ClientApp runtime API."),
    sites: int | None = typer.Option(None, "--sites", help="Total sites (informational, sent as num-partitions)."),
) -> None:
    """Run one site as a Flower SuperNode until interrupted; the run's spec comes from the coordinator."""
    import subprocess
    import sys

    if partition_id < 0:
        from trustmesh.errors import ConfigError

        raise ConfigError(f"--partition-id must be >= 0, got {partition_id}")
    import signal
    import tempfile

    node_config = f"partition-id={partition_id}" + (f" num-partitions={sites}" if sites else "")
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "flower-supernode"), "--insecure", "--superlink", superlink, "--node-config", node_config,
           "--port", str(port)]
    home = tempfile.mkdtemp(prefix=f"trustmesh-site{partition_id}-")  # installed apps stay out of ~/.flwr

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    # own session: the SuperNode's helpers (superexec, clientapp) are stopped with it as one group
    proc = subprocess.Popen(cmd, env=_venv_env({"FLWR_HOME": home}), start_new_session=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        from trustmesh._procs import stop_group

        stop_group(proc, timeout=10)
        import shutil

        shutil.rmtree(home, ignore_errors=True)
