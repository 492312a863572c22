"""Command-line interface (a leaf: nothing imports it)."""

from trustmesh.cli._app import app, main

__all__ = ["app", "main"]
