"""Recompile LogAnchor.vy with the pip ``vyper`` compiler and write LogAnchor.json.

Run ``python -m trustmesh.ledger.anchor.build`` after editing the contract; ``--check`` exits 1 if
the checked-in JSON differs from a fresh compile (the test suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACT", "SOURCE", "compile_contract", "main"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "LogAnchor.vy"
ARTIFACT = HERE / "LogAnchor.json"


def compile_contract(source: Path = SOURCE) -> dict[str, Any]:
    """Compile the contract and return {compiler, abi, bytecode, bytecode_runtime}."""
    import vyper

    out = vyper.compile_code(source.read_text(encoding="utf-8"), output_formats=["abi", "bytecode", "bytecode_runtime"])
    return {
        "contract": "LogAnchor",
        "compiler": f"vyper {vyper.__version__}",
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
    }


def render(artifact: dict[str, Any]) -> str:
    """Return the artifact as stable, sorted, indented JSON."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Compile and write (or, with --check, compare) the artifact."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    fresh = render(compile_contract())
    if args.check:
        current = ARTIFACT.read_text(encoding="utf-8") if ARTIFACT.exists() else ""
        if current != fresh:
            print(f"{ARTIFACT} is stale; run python -m trustmesh.ledger.anchor.build", file=sys.stderr)
            return 1
        print(f"{ARTIFACT} is up to date")
        return 0
    ARTIFACT.write_text(fresh, encoding="utf-8")
    print(f"wrote {ARTIFACT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
