"""Schnorr key pairs on ristretto255 and the proof of knowledge of an enrolled secret key."""

from __future__ import annotations

from dataclasses import dataclass, field

from trustmesh.errors import ProofError
from trustmesh.privacy.zk._context import ProofContext
from trustmesh.privacy.zk.hazmat._group import (
    L,
    Point,
    base_mul,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
)
from trustmesh.privacy.zk.hazmat._schnorr import schnorr_prove, schnorr_verify

__all__ = ["SchnorrKeyPair", "SchnorrProof", "prove_key_knowledge", "verify_key_knowledge"]


@dataclass(frozen=True, slots=True)
class SchnorrKeyPair:
    """A ristretto255 secret scalar and its public point ``secret*G``."""

    secret: int = field(repr=False)
    public: Point

    @classmethod
    def generate(cls) -> SchnorrKeyPair:
        """Make a key pair from OS randomness."""
        secret = 0
        while secret == 0:
            secret = random_scalar()
        return cls(secret, base_mul(secret))

    @classmethod
    def from_secret_bytes(cls, data: bytes) -> SchnorrKeyPair:
        """Load a 32-byte canonical secret; raise ProofError if it is malformed or zero."""
        secret = scalar_from_bytes(data, field="schnorr secret key")
        if secret == 0:
            raise ProofError("schnorr secret key: zero is not a valid key")
        return cls(secret, base_mul(secret))

    def secret_bytes(self) -> bytes:
        """Return the 32-byte secret (write it only to 0600 files)."""
        return scalar_to_bytes(self.secret)


@dataclass(frozen=True, slots=True)
class SchnorrProof:
    """A non-interactive proof of knowledge of the secret key behind a public point (64 bytes)."""

    data: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> SchnorrProof:
        """Check the encoding (length and canonical scalars); raise ProofError."""
        if len(data) != 64:
            raise ProofError(f"schnorr proof: expected 64 bytes, got {len(data)}")
        scalar_from_bytes(data[:32], field="schnorr proof c")
        scalar_from_bytes(data[32:], field="schnorr proof s")
        return cls(bytes(data))

    def to_bytes(self) -> bytes:
        """Return the 64-byte encoding."""
        return self.data


def prove_key_knowledge(key: SchnorrKeyPair, context: ProofContext) -> SchnorrProof:
    """Prove knowledge of ``key.secret`` bound to ``context`` (Schnorr 1991 + Fiat-Shamir)."""
    if not 0 < key.secret < L:
        raise ValueError("key.secret must be a non-zero scalar")
    return SchnorrProof(schnorr_prove(key.secret, context.to_bytes()))


def verify_key_knowledge(public: Point, proof: SchnorrProof, context: ProofContext) -> None:
    """Raise ProofError unless ``proof`` shows knowledge of ``public``'s secret in ``context``."""
    schnorr_verify(public, proof.to_bytes(), context.to_bytes())
