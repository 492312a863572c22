"""The root Typer application and the shared ``bench`` group.

Command modules import ``app``/``bench_app`` from here and register themselves; keep heavy imports
(torch, lightgbm, nfstream, web3, flwr) inside command functions so ``trustmesh --help`` stays fast.
"""

from __future__ import annotations

import typer

from trustmesh import __version__
from trustmesh.cli._common import setup_logging

__all__ = ["app", "bench_app"]

app = typer.Typer(
    name="trustmesh",
    help="AI threat detection with a tamper-evident, blockchain-anchored ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(help="Measure throughput and latency; prints JSON with --json.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trustmesh {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """AI threat detection with a tamper-evident, blockchain-anchored ledger."""
    setup_logging(verbose)
