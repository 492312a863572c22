"""The context a proof is bound to: log origin, round, device id and a fresh nonce."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import rfc8785

from trustmesh.errors import ProofError

__all__ = ["ProofContext"]


@dataclass(frozen=True, slots=True)
class ProofContext:
    """Where a proof is valid. Its canonical bytes enter every Fiat-Shamir transcript.

    The verifier builds the context it expects (usually issuing ``nonce`` itself as a challenge);
    a proof made for any other origin, round, device or nonce does not verify.
    """

    origin: str
    round: int
    device_id: str
    nonce: bytes

    def __post_init__(self) -> None:
        if not self.origin:
            raise ValueError("origin must be a non-empty string")
        if self.round < 0:
            raise ValueError(f"round must be >= 0, got {self.round}")
        if not self.device_id:
            raise ValueError("device_id must be a non-empty string")
        if not 16 <= len(self.nonce) <= 64:
            raise ValueError(f"nonce must be 16..64 bytes, got {len(self.nonce)}")

    @classmethod
    def fresh(cls, origin: str, round: int, device_id: str) -> ProofContext:
        """Return a context with a new 32-byte nonce from OS randomness."""
        return cls(origin, round, device_id, secrets.token_bytes(32))

    def to_bytes(self) -> bytes:
        """Return RFC 8785 canonical JSON of the context (what transcripts absorb)."""
        return rfc8785.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (nonce as hex)."""
        return {"origin": self.origin, "round": self.round, "device_id": self.device_id, "nonce": self.nonce.hex()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ProofContext:
        """Parse a dict from :meth:`to_dict`; raise ProofError naming the bad field."""
        try:
            nonce = bytes.fromhex(str(doc["nonce"]))
            ctx = cls(str(doc["origin"]), int(doc["round"]), str(doc["device_id"]), nonce)
        except KeyError as exc:
            raise ProofError(f"proof context: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ProofError(f"proof context: {exc}") from None
        return ctx
