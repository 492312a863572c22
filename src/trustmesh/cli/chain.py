"""CLI commands: ``ledger anchor`` (put the latest checkpoint on chain) and ``bench anchor``."""

from __future__ import annotations

from pathlib import Path

import typer

from trustmesh.cli._common import console, guarded, print_json
from trustmesh.cli._root import app, bench_app

try:
    from trustmesh.cli.ledger import ledger_app
except ImportError:  # the ledger group is not registered yet (its owner adds it); keep `anchor` reachable
    ledger_app = typer.Typer(help="Tamper-evident ledger.", no_args_is_help=True)
    app.add_typer(ledger_app, name="ledger")

__all__ = ["anchor_command", "bench_anchor_command"]


@ledger_app.command("anchor")
@guarded
def anchor_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    chain: str = typer.Option("embedded", "--chain", help="'embedded' (in-process EVM kept in DIR/anchor) or an http(s):// JSON-RPC URL."),
    account: Path | None = typer.Option(None, "--account", help="File holding the hex private key that pays and signs (required for an RPC chain)."),
    contract: str | None = typer.Option(None, "--contract", help="Use this deployed LogAnchor instead of deploying one."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything, send nothing; show what would be anchored."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Anchor the ledger's latest signed checkpoint (tree size, root hash) on an Ethereum chain."""
    from trustmesh.ledger.anchor import anchor_ledger

    result = anchor_ledger(directory, chain, account_key=account, contract=contract, dry_run=dry_run)
    if json_out:
        print_json(result.to_dict())
        return
    if result.dry_run:
        where = f"contract {result.contract}" if result.contract else "a new LogAnchor contract"
        console.print(f"dry run: would anchor {result.origin} size {result.size} root {result.root[:16]}… on {result.chain} ({where})")
    elif result.tx_hash is None:
        console.print(f"size {result.size} of {result.origin} is already anchored on {result.chain} at {result.contract}")
    else:
        console.print(
            f"anchored {result.origin} size {result.size} root {result.root[:16]}… on {result.chain} "
            f"(chain id {result.chain_id}) contract {result.contract} tx {result.tx_hash} gas {result.gas_used}"
        )


@bench_app.command("anchor")
@guarded
def bench_anchor_command(
    batches: str = typer.Option("1,10,100,1000,10000", "--batches", help="Comma-separated entries per anchored batch."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Gas and time per anchor on the embedded chain, one anchor per batch of N entries."""
    from trustmesh.errors import InputError
    from trustmesh.ledger.anchor._bench import bench_anchor

    try:
        sizes = tuple(int(x) for x in batches.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--batches must be comma-separated integers, got {batches!r}") from None
    if not sizes or min(sizes) < 1:
        raise InputError(f"--batches must list integers >= 1, got {batches!r}")
    report = bench_anchor(sizes)
    if json_out:
        print_json(report)
        return
    console.print(f"deploy {report['deploy_gas']} gas, register key {report['register_key_gas']} gas")
    for row in report["anchors"]:
        console.print(f"N={row['batch_entries']:>6}  gas/anchor {row['gas_used']:>6}  gas/entry {row['gas_per_entry']:>10.2f}  {row['anchor_s'] * 1000:.0f} ms")
