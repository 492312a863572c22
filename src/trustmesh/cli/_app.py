"""Assemble the CLI: import every command module so it registers on the root app."""

from __future__ import annotations

import importlib

from trustmesh.cli._root import app

__all__ = ["app", "main"]

# Each module registers its commands on import. Order is the order of `trustmesh --help` groups.
_COMMAND_MODULES = (
    "trustmesh.cli.demo",
    "trustmesh.cli.run",
    "trustmesh.cli.datasets",
    "trustmesh.cli.models",
    "trustmesh.cli.ledger",
    "trustmesh.cli.witness",
    "trustmesh.cli.respond",
    "trustmesh.cli.stix",
    "trustmesh.cli.serve",
    "trustmesh.cli.chain",
    "trustmesh.cli.identity",
    "trustmesh.cli.fl",
    "trustmesh.cli.evaluate",
    "trustmesh.cli.lab",
    "trustmesh.cli.baseline",
    "trustmesh.cli.triage",
    "trustmesh.cli.assurance",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name)


def main() -> None:
    """Entry point of the ``trustmesh`` console script."""
    app()
