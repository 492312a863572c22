"""``trustmesh demo``: the main job, end to end on the embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app

__all__ = ["demo"]


@app.command()
@guarded
def demo(
    out: Path = typer.Option(Path("trustmesh-demo"), "--out", help="Folder for report.html, summary.json, ledger/."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Datasets folder (default: $TRUSTMESH_DATA, "
                                         "then ../shared/datasets)."),
    no_anchor: bool = typer.Option(False, "--no-anchor", help="Skip anchoring on the embedded chain."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
    serve: bool = typer.Option(False, "--serve", help="Then open the web console on the demo's ledger "
                               "(prints the URL and a one-time admin token; Ctrl-C stops it)."),
    host: str = typer.Option("127.0.0.1", "--host", help="With --serve: interface to bind (default loopback)."),
    port: int = typer.Option(8443, "--port", help="With --serve: TCP port."),
) -> None:
    """Detect, respond (dry-run) and prove it: replay the real attack captures through the trust loop."""
    from trustmesh.demo import run_demo

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=json_out) as bar:
        task = bar.add_task("starting", total=None)

        def step(message: str) -> None:
            bar.update(task, description=message)
            if not json_out:
                err_console.print(f"[dim]- {message}[/]")

        result = run_demo(out, data_dir, step=step, anchor=not no_anchor)
    doc = result.summary
    if json_out:
        print_json(doc)
    else:
        _print_summary(doc, result)
    if serve:
        from trustmesh.cli.serve import serve_demo

        serve_demo(result.out_dir, host=host, port=port)
    if not json_out and any(v.startswith("FAILED") for v in doc["checks"].values()):
        raise typer.Exit(1)


def _print_summary(doc: Any, result: Any) -> None:
    t = Table(title="Captures replayed (documented attackers vs what was flagged)")
    for col in ("capture", "flows", "alerts", "attackers", "flagged?", "other sources flagged"):
        t.add_column(col)
    for p in doc["pcaps"]:
        if p["error"]:
            t.add_row(p["name"], "-", "-", ", ".join(p["attackers"]), "[yellow]missing[/]", "-")
            continue
        flagged = ("[green]yes[/]" if p["attackers_flagged"] else "[red]no[/]") if p["in_ip_flows"] else "n/a (ARP)"
        t.add_row(p["name"], str(p["flows"]), str(p["alerts"]), ", ".join(p["attackers"]), flagged,
                  str(p["n_other_sources_flagged"]))
    console.print(t)
    it = Table(title=f"Incidents (top 15 of {len(doc['incidents'])})")
    for col in ("leaf", "ATT&CK", "class", "sev", "conf", "sources", "alerts"):
        it.add_column(col)
    for inc in doc["incidents"][:15]:
        it.add_row(str(inc["index"]), str(inc.get("technique_id") or "-"), str(inc.get("predicted_class") or "-"),
                   str(inc["severity"]), f"{float(inc['confidence']):.2f}", ", ".join(inc.get("source_ips", [])[:2]),
                   str(len(inc.get("alert_ids", []))))
    console.print(it)
    at = Table(title="Actions it would take (dry-run)")
    for col in ("leaf", "action", "status", "targets", "why"):
        at.add_column(col)
    shown = [a for a in doc["actions"] if a["kind"] == "decision"][:15]
    for a in shown:
        at.add_row(str(a["index"]), str(a.get("action") or "-"), str(a.get("status")),
                   ", ".join(a.get("targets", [])[:2]), str(a.get("reason", ""))[:60])
    console.print(at)
    console.print("[bold]Signed checkpoint[/]")
    console.print(doc["ledger"]["checkpoint"].strip(), highlight=False, markup=False, soft_wrap=True)
    for problem in doc["pipeline"]["errors"]:
        err_console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    for name, verdict in doc["checks"].items():
        colour = "green" if verdict.startswith("ok") else "yellow" if verdict.startswith("skipped") else "red"
        console.print(f"[{colour}]{name}[/]: {verdict}", highlight=False)
    console.print(f"report: {result.report}   ledger: {result.ledger_dir}")
