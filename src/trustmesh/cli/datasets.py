"""CLI commands: ``trustmesh datasets list`` and ``trustmesh datasets verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app

__all__ = ["datasets_app"]

datasets_app = typer.Typer(
    help="List the registered public datasets and verify their files (sha256).", no_args_is_help=True
)
app.add_typer(datasets_app, name="datasets")

_DATA_DIR = typer.Option(None, "--data-dir", help="Dataset folder (default: TRUSTMESH_DATA or ../shared/datasets).")
_JSON = typer.Option(False, "--json", help="Print one JSON document.")


@datasets_app.command("list")
@guarded
def list_datasets(data_dir: Path | None = _DATA_DIR, as_json: bool = _JSON) -> None:
    """List every registered dataset: kind, files, rows (when known) and whether the files are present."""
    from trustmesh.config import DATA_HINT, find_data_dir
    from trustmesh.flows import DATASETS, check_dataset

    root = find_data_dir(data_dir)
    have_root = root is not None and root.is_dir()
    rows: list[dict[str, Any]] = []
    for name, spec in sorted(DATASETS.items()):
        statuses = check_dataset(name, root, hash_files=False) if have_root else []
        present = sum(1 for s in statuses if s.status != "missing")
        known_rows = [f.rows for f in spec.files if f.rows is not None]
        rows.append(
            {
                "name": name,
                "kind": spec.kind,
                "description": spec.description,
                "files": [f.path for f in spec.files],
                "splits": sorted(spec.splits),
                "rows": sum(known_rows) if len(known_rows) == len(spec.files) else None,
                "present": present,
                "missing": len(spec.files) - present if have_root else None,
                "status": ("present" if present == len(spec.files) else "missing") if have_root else "no data dir",
            }
        )
    if as_json:
        print_json({"data_dir": str(root) if have_root else None, "datasets": rows})
        return
    if not have_root:
        err_console.print(f"no dataset folder found; {DATA_HINT}", highlight=False)
    from rich.table import Table

    table = Table(title=f"datasets in {root}" if have_root else "registered datasets")
    for col in ("name", "kind", "files", "rows", "status"):
        table.add_column(col, justify="right" if col in ("files", "rows") else "left")
    for r in rows:
        table.add_row(
            str(r["name"]), str(r["kind"]), str(len(r["files"])),
            "-" if r["rows"] is None else f"{r['rows']:,}", str(r["status"]),
        )  # fmt: skip
    console.print(table)


@datasets_app.command("verify")
@guarded
def verify(
    names: list[str] | None = typer.Argument(None, help="Datasets to verify (default: all)."),
    data_dir: Path | None = _DATA_DIR,
    as_json: bool = _JSON,
    full: bool = typer.Option(False, "--full", help="Rehash every file, ignoring the hash cache."),
) -> None:
    """Check the sha256 of every file; exit 1 with one line per missing/corrupted file and where to get it.

    Hashes are cached by device, inode, ctime, size and mtime (any write changes the ctime);
    ``--full`` rehashes everything.
    """
    from trustmesh.flows import DATASETS, check_dataset

    wanted = list(names) if names else sorted(DATASETS)
    unknown = [n for n in wanted if n not in DATASETS]
    if unknown:
        from trustmesh.errors import InputError

        raise InputError(f"unknown dataset(s): {', '.join(unknown)}; known: {', '.join(sorted(DATASETS))}")
    statuses = [s for n in wanted for s in check_dataset(n, data_dir, full=full)]
    problems = [s for s in statuses if s.status != "ok"]
    if as_json:
        print_json(
            {
                "ok": not problems,
                "files": [
                    {
                        "dataset": s.dataset,
                        "path": str(s.path),
                        "status": s.status,
                        "expected_sha256": s.expected_sha256,
                        "actual_sha256": s.actual_sha256,
                        **({"obtain_from": s.origin} if s.status != "ok" else {}),
                    }
                    for s in statuses
                ],
            }
        )
    else:
        for s in problems:
            err_console.print(f"[bold red]error:[/] {s.problem()}", highlight=False, soft_wrap=True)
        if not problems:
            console.print(f"ok: {len(statuses)} files in {len(wanted)} datasets verified", highlight=False)
    if problems:
        raise typer.Exit(1)
