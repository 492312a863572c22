"""``trustmesh run``: the live pipeline from a TOML configuration."""

from __future__ import annotations

from pathlib import Path

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app

__all__ = ["run"]


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
