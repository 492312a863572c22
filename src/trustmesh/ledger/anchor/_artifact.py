"""The checked-in LogAnchor contract: ABI, creation bytecode and the runtime code hash we trust."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from trustmesh.errors import ChainError

__all__ = ["ContractArtifact", "load_artifact", "origin_id"]

_ARTIFACT = Path(__file__).resolve().parent / "LogAnchor.json"


@dataclass(frozen=True, slots=True)
class ContractArtifact:
    """Compiled LogAnchor: ABI, creation bytecode and expected runtime code."""

    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    runtime: bytes
    compiler: str

    @property
    def runtime_hash(self) -> str:
        """Keccak-256 of the runtime code, as ``0x``-hex (what EXTCODEHASH returns)."""
        from eth_utils.crypto import keccak

        return "0x" + keccak(self.runtime).hex()


def _hex(doc: dict[str, Any], key: str) -> bytes:
    try:
        return bytes.fromhex(str(doc[key]).removeprefix("0x"))
    except (KeyError, ValueError) as exc:
        raise ChainError(f"{_ARTIFACT}: field {key!r} is missing or not hex ({exc})") from None


@cache
def load_artifact() -> ContractArtifact:
    """Load LogAnchor.json (written by ``python -m trustmesh.ledger.anchor.build``)."""
    try:
        doc = json.loads(_ARTIFACT.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ChainError(f"{_ARTIFACT}: cannot read contract artifact ({exc})") from None
    if not isinstance(doc.get("abi"), list):
        raise ChainError(f"{_ARTIFACT}: field 'abi' must be a list")
    return ContractArtifact(tuple(doc["abi"]), _hex(doc, "bytecode"), _hex(doc, "bytecode_runtime"), str(doc.get("compiler", "")))


def origin_id(origin: str) -> bytes:
    """Return the bytes32 key the contract uses for a log origin: SHA-256 of its UTF-8 name."""
    if not origin:
        raise ValueError("origin must be a non-empty string")
    return hashlib.sha256(origin.encode("utf-8")).digest()
