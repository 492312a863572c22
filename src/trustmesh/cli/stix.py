"""``trustmesh stix export|publish``: STIX 2.1 bundles of alerts and TAXII 2.1 publishing (docs/soc.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import err_console, guarded, print_json
from trustmesh.cli._root import app
from trustmesh.errors import InputError

__all__ = ["stix_app"]

stix_app = typer.Typer(help="STIX 2.1 bundles of alerts; publish them to a TAXII 2.1 collection.",
                       no_args_is_help=True)
app.add_typer(stix_app, name="stix")


def _alerts_from_jsonl(path: Path) -> list[Any]:
    from trustmesh._ecs import alert_from_document

    alerts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(doc, dict) or doc.get("event", {}).get("dataset", "trustmesh.alert") != "trustmesh.alert":
            continue  # incident documents and other lines of a sink file
        try:
            alerts.append(alert_from_document(doc))
        except ValueError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
    return alerts


def _alerts_from_ledger(directory: Path) -> list[Any]:
    from trustmesh._ecs import alert_from_document
    from trustmesh.ledger import Ledger

    alerts = []
    with Ledger.open(directory, read_only=True) as ledger:
        for i in range(ledger.size):
            entry = ledger.entry(i)
            if entry.kind != "alert" or "trustmesh" not in entry.payload:
                continue  # alerts of older runs (before the ECS document) are skipped
            try:
                alerts.append(alert_from_document(entry.payload))
            except ValueError as exc:
                raise InputError(f"{directory}: entry {i}: {exc}") from None
    return alerts


@stix_app.command("export")
@guarded
def export(
    alerts_path: Path | None = typer.Option(None, "--alerts", help="ECS alert JSON lines (detect --out, jsonl sink)."),
    ledger_dir: Path | None = typer.Option(None, "--ledger", help="Export the alert entries of this ledger."),
    out: Path = typer.Option(..., "--out", help="Bundle file to write."),
    producer: str = typer.Option(os.environ.get("TRUSTMESH_STIX_PRODUCER", "trustmesh"), "--producer",
                                 help="Producer identity name (its STIX id is derived from it)."),
    tlp: str = typer.Option("amber", "--tlp", help="TLP 2.0 level: clear, green, amber, amber+strict, red."),
    internal: list[str] = typer.Option([], "--internal", help="Extra internal CIDR (repeatable); private, "
                                       "loopback and link-local addresses are always internal."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Write a STIX 2.1 bundle of alerts: indicators for outside sources, sightings for our own hosts."""
    from trustmesh.sinks import bundle_json, stix_bundle

    if (alerts_path is None) == (ledger_dir is None):
        raise InputError("give exactly one of --alerts FILE or --ledger DIR")
    if alerts_path is not None:
        alerts = _alerts_from_jsonl(alerts_path)
    else:
        assert ledger_dir is not None
        alerts = _alerts_from_ledger(ledger_dir)
    try:
        bundle = stix_bundle(alerts, producer=producer, tlp=tlp, internal_networks=internal)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(bundle_json(bundle) + "\n", encoding="utf-8")
    counts: dict[str, int] = {}
    for obj in bundle["objects"]:
        counts[obj["type"]] = counts.get(obj["type"], 0) + 1
    doc = {"alerts": len(alerts), "objects": len(bundle["objects"]), "types": counts, "out": str(out),
           "bundle_id": bundle["id"], "tlp": tlp, "producer": producer}  # fmt: skip
    if json_out:
        print_json(doc)
    else:
        err_console.print(f"wrote {len(bundle['objects'])} STIX object(s) for {len(alerts)} alert(s) to {out}",
                          highlight=False)


@stix_app.command("publish")
@guarded
def publish(
    bundle_path: Path = typer.Argument(..., help="STIX 2.1 bundle (JSON)."),
    url: str = typer.Option(..., "--url", help="TAXII 2.1 API root, e.g. https://taxii.example.org/api1/."),
    collection: str = typer.Option(..., "--collection", help="Collection id to add the objects to."),
    user: str | None = typer.Option(None, "--user", help="HTTP basic-auth user."),
    password_env: str = typer.Option("TRUSTMESH_TAXII_PASSWORD", "--password-env",
                                     help="Environment variable holding the password (never a flag)."),
    max_objects: int = typer.Option(500, "--max-objects", help="Objects per request."),
    json_out: bool = typer.Option(False, "--json", help="Print the status totals as JSON."),
) -> None:
    """Add a bundle's objects to a TAXII 2.1 collection and wait for the server's status."""
    from trustmesh.sinks import publish_bundle

    try:
        bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{bundle_path}: not JSON ({exc})") from None
    if not isinstance(bundle, dict):
        raise InputError(f"{bundle_path}: not a STIX bundle (a JSON object is expected)")
    password = os.environ.get(password_env) if user else None
    if user and not password:
        raise InputError(f"--user {user}: the password variable {password_env} is not set")
    try:
        totals = publish_bundle(bundle, url=url, collection=collection, username=user, password=password,
                                max_objects=max_objects)
    except InputError as exc:
        raise InputError(f"{bundle_path}: {exc}") from None
    if json_out:
        print_json(totals)
    else:
        err_console.print(f"published {totals['success_count']} of {totals['total_count']} object(s) to "
                          f"collection {collection}", highlight=False)
