"""CLI commands: fl (being written)."""

from __future__ import annotations

from trustmesh.cli._root import app, bench_app  # noqa: F401
