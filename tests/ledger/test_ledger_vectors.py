"""All 518 transparency-dev RFC 6962 proof vectors: happy paths verify, named corruptions raise."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from trustmesh.errors import VerificationError
from trustmesh.ledger import (
    verify_consistency_path,
    verify_inclusion_path,
    verify_subtree_consistency_path,
    verify_subtree_inclusion_path,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "merkle"
FILES = sorted(VECTORS.rglob("*.json")) if VECTORS.is_dir() else []


def _b(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _path(value: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in value or []]


def _run(kind: str, d: dict[str, Any]) -> None:
    if kind == "inclusion":
        verify_inclusion_path(d["leafIdx"], d["treeSize"], _b(d["leafHash"]), _path(d["proof"]), _b(d["root"]))
    elif kind == "consistency":
        verify_consistency_path(d["size1"], d["size2"], _path(d["proof"]), _b(d["root1"]), _b(d["root2"]))
    elif kind == "subtreeinclusion":
        verify_subtree_inclusion_path(
            d["leafIdx"], d["start"], d["end"], _b(d["leafHash"]), _path(d["proof"]), _b(d["root"])
        )
    elif kind == "subtreeconsistency":
        verify_subtree_consistency_path(
            d["start"], d["end"], d["size"], _path(d["proof"]), _b(d["root1"]), _b(d["root2"])
        )
    else:  # pragma: no cover - a new vector family would need a new verifier
        raise AssertionError(f"unknown vector family {kind}")


def test_all_518_vectors_are_present(merkle_vectors: Path) -> None:
    assert len(list(merkle_vectors.rglob("*.json"))) == 518


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(VECTORS)) for f in FILES])
def test_vector(path: Path, merkle_vectors: Path) -> None:
    # Arrange
    kind = path.relative_to(merkle_vectors).parts[0]
    case = json.loads(path.read_text())
    # Act / Assert
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            _run(kind, case)
    else:
        _run(kind, case)
