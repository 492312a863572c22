"""``trustmesh run``: the live pipeline from a TOML configuration."""

from __future__ import annotations

from pathlib import Path

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app, bench_app

__all__ = ["bench_pipeline", "run"]


@app.command()
@guarded
def run(
    config: Path = typer.Option(..., "--config", "-c", help="Pipeline TOML (see examples/trustmesh.toml)."),
    source: list[str] = typer.Option([], "--source", "-s", help="Add a source: a pcap, Zeek dir/log, EVE file, flow "
                                      "table, iface:NAME (live) or follow:PATH (tail a Zeek/EVE log); repeatable, "
                                      "replaces the config's sources."),
    enforce: bool = typer.Option(False, "--enforce", help="Apply actions (default: dry-run)."),
    replay: str | None = typer.Option(None, "--replay", help="fast | recorded (pcap/log timing)."),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Stream sources through detect -> incidents -> playbooks -> actions, recording every step."""
    from trustmesh.pipeline import Pipeline, PipelineConfig, open_sources

    cfg = PipelineConfig.load(config, enforce=enforce or None, replay=replay,
                              sources=tuple(source) if source else None)
    if not cfg.sources:
        raise typer.BadParameter("no sources: give --source or pipeline.sources in the config")
    sources = open_sources(cfg.sources, cfg)
    pipeline = Pipeline.from_config(cfg)
    if not json_out:
        err_console.print(f"[dim]model {pipeline.model_id}, ledger {cfg.ledger_dir}, "
                          f"{'ENFORCING' if cfg.enforce else 'dry-run'}; Ctrl-C stops cleanly[/]")

    def progress(name: str, batch: object) -> None:
        if not json_out:
            s = pipeline.summary
            err_console.print(f"[dim]{name}: {s.flows} flows, {s.alerts} alerts, {s.incidents} incidents[/]",
                              highlight=False)

    try:
        pipeline.run(sources, on_batch=progress)
    finally:
        summary = pipeline.close()
    doc = summary.to_dict()
    if json_out:
        print_json(doc)
    else:
        console.print(f"{doc['flows']} flows, {doc['alerts']} alerts, {doc['incidents']} incidents, "
                      f"{doc['decisions']} decisions; ledger entries {doc['first_index']}..{doc['last_index']}; "
                      f"checkpoint size {doc['checkpoints'][-1]['size']}")
        for name, st in doc.get("sinks", {}).items():  # [[sinks]] outputs (docs/soc.md)
            err_console.print(f"sink {name}: {st['sent']} sent, {st['failed']} failed"
                              + (f" (last error: {st['last_error']})" if st["last_error"] else ""), highlight=False)
        for e in doc["errors"]:
            err_console.print(f"[yellow]warning:[/] {e}")
    if doc["interrupted"]:
        raise typer.Exit(130)
    if doc["errors"]:
        raise typer.Exit(2)


@bench_app.command("pipeline")
@guarded
def bench_pipeline(
    workers: str = typer.Option("1,2", "--workers", help="Comma-separated worker counts to compare."),
    records: int = typer.Option(20_000, "--records", help="EVE records pushed into the stream per run."),
    model: Path | None = typer.Option(None, "--model", help="Model file (default: the built-in pcap model)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Datasets folder (TRUSTMESH_DATA)."),
    source: list[str] = typer.Option([], "--source", help="Instead: time the whole pipeline in this process "
                                      "(ledger on) over these sources (Zeek/EVE/pcap/table); repeatable."),
    batch_size: int = typer.Option(4096, "--batch-size", help="With --source: flows per batch (1 = flow by flow)."),
    scale: int | None = typer.Option(None, "--scale", help="With --source: rewrite each Zeek conn log or EVE file "
                                     "to N records (repeated with fresh flow ids) before timing."),
    vs_nfstream: bool = typer.Option(False, "--vs-nfstream", help="With --source captures: also time nfstream "
                                     "alone over them and report the pipeline's ratio to it."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Scale-out: N `trustmesh run` workers share one Redis stream and append to one `ledger serve`.

    With ``--source``: end-to-end flows/s and alerts/s (score, behaviour, correlate, respond in dry-run,
    durable ledger appends, checkpoints) in one process, with CPU microseconds per alert.

    Each run starts redis-server, a ledger server and the workers, waits until every worker has joined
    the consumer group, then pushes ``--records`` Suricata EVE records (as Suricata's redis output
    writes them) and times until the group has consumed and acknowledged them all.
    """
    from trustmesh.cli._bench_pipeline import bench_in_process, bench_workers
    from trustmesh.config import find_data_dir
    from trustmesh.errors import InputError

    if source:
        if not 1 <= batch_size <= 100_000:
            raise InputError(f"--batch-size must be in 1..100000, got {batch_size}")
        if scale is not None and not 100 <= scale <= 5_000_000:
            raise InputError(f"--scale must be in 100..5000000, got {scale}")
        res = bench_in_process(source, model, data_dir, batch_size, scale, vs_nfstream)
        if json_out:
            print_json(res)
        else:
            console.print(f"{res['flows']} flows, {res['alerts']} alerts in {res['seconds']:.2f} s: "
                          f"{res['alerts_per_s']:,.0f} alerts/s, {res['flows_per_s']:,.0f} flows/s, "
                          f"{res['cpu_us_per_alert']:.0f} CPU us/alert; load {res['load_average'][0]:.2f}",
                          highlight=False)
            if vs_nfstream:
                console.print(f"nfstream alone: {sum(a['seconds'] for a in res['nfstream_alone']):.2f} s; "
                              f"pipeline / nfstream = {res['ratio_to_nfstream']:.2f}", highlight=False)
            steady = res["after_first_batch"]
            if steady:
                console.print(f"after the first batch: {steady['alerts_per_s']:,.0f} alerts/s, "
                              f"{steady['cpu_us_per_alert']:.0f} CPU us/alert", highlight=False)
        return

    try:
        counts = [int(x) for x in workers.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--workers must be comma-separated integers, got {workers!r}") from None
    if not counts or min(counts) < 1 or max(counts) > 16 or not 100 <= records <= 1_000_000:
        raise InputError("--workers must be in 1..16 and --records in 100..1000000")
    found = data_dir or find_data_dir()
    if found is None:
        raise InputError("datasets not found: give --data-dir or set TRUSTMESH_DATA")
    rows = [bench_workers(n, records, model, Path(found)) for n in counts]
    doc = {"runs": rows, "scaling": {str(r["workers"]): r["records_per_s"] / rows[0]["records_per_s"] for r in rows}}
    if json_out:
        print_json(doc)
        return
    for r in rows:
        console.print(f"{r['workers']} worker(s): {r['records_per_s']:,.0f} records/s ({r['flows']} flows, "
                      f"{r['alert_entries']} alerts on the ledger in {r['seconds']:.1f} s); load "
                      f"{r['load_average'][0]:.2f}", highlight=False)
