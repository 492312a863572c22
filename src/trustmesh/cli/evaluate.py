"""CLI commands: ``trustmesh eval blueprint`` (the Security Evaluation Blueprint)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from trustmesh.cli._common import console, guarded, print_json, progress
from trustmesh.cli._root import app, bench_app  # noqa: F401

__all__ = ["eval_app"]

eval_app = typer.Typer(
    help="Security evaluation: run the blueprint suite and write report.json + report.html.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


@eval_app.command("blueprint")
@guarded
def blueprint(
    out: Path = typer.Option(..., "--out", help="Output folder: report.json, report.html, plots/, .cache/."),
    profile: str = typer.Option("quick", "--profile", help="quick (minutes, subsampled), full, or test."),
    config: Path | None = typer.Option(None, "--config", help="TOML file overriding profile settings."),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="Dataset folder (default: TRUSTMESH_DATA)."),
    ledger: Path | None = typer.Option(None, "--ledger", help="Ledger for the evaluation record."),
    no_ledger: bool = typer.Option(False, "--no-ledger", help="Do not append the evaluation record."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary document."),
) -> None:
    """Run the evaluation suite with fixed seeds; finished sections are reused from OUT/.cache."""
    from trustmesh.config import find_data_dir, load_settings
    from trustmesh.evaluate import check_config, load_config, run_blueprint

    cfg = load_config(profile, config)
    root = find_data_dir(data_dir)
    check_config(cfg, root)  # bad datasets / detectors fail here, before any work
    ledger_dir = None if no_ledger else (ledger or load_settings().ledger_dir)
    with progress(enabled=not as_json and sys.stderr.isatty()) as bar:
        task = bar.add_task("blueprint", total=len(cfg.sections))

        def on_section(name: str, status: str) -> None:
            bar.advance(task)
            if not as_json:
                bar.console.print(f"  {name}: {status}", highlight=False)

        def on_progress(message: str) -> None:
            bar.update(task, description=message[:60])

        outcome = run_blueprint(cfg, out, data_dir=root, ledger_dir=ledger_dir, on_section=on_section,
                                on_progress=on_progress)
    summary = {
        "report_json": str(outcome.report_json),
        "report_html": str(outcome.report_html),
        "report_sha256": outcome.report_sha256,
        "sections": outcome.statuses,
        "ledger": outcome.ledger,
    }
    if as_json:
        print_json(summary)
        return
    for s in outcome.sections:
        extra = f" — {s.reason}" if s.reason else ""
        console.print(f"{s.name:12s} {s.status:8s} {s.seconds:7.1f}s{extra}", highlight=False, soft_wrap=True)
    console.print(f"report: {outcome.report_html}  (sha256 of report.json {outcome.report_sha256[:16]}…)")
    if outcome.ledger:
        rec = outcome.ledger
        console.print(f"ledger: evaluation record at index {rec['index']} in {rec['ledger_dir']}")
