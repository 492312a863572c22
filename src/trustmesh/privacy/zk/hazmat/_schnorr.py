"""Schnorr proof of knowledge of a discrete logarithm (Schnorr, J. Cryptology 1991), Fiat-Shamir.

Proves knowledge of ``x`` with ``P = x*G``. The proof is ``(c, s)`` with ``R = s*G - c*P`` and
``c = H(transcript(context, P, R))``; 64 bytes.
"""

from __future__ import annotations

from trustmesh.errors import ProofError
from trustmesh.privacy.zk.hazmat._group import (
    L,
    Point,
    base_mul,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
)
from trustmesh.privacy.zk.hazmat._transcript import Transcript

__all__ = ["schnorr_prove", "schnorr_verify"]

_PROTOCOL = b"trustmesh/zk/schnorr-dlog/v1"


def _transcript(context: bytes, public: Point, commitment: Point) -> Transcript:
    t = Transcript(_PROTOCOL)
    t.append(b"context", context)
    t.append(b"public", public.to_bytes())
    t.append(b"commitment", commitment.to_bytes())
    return t


def schnorr_prove(secret: int, context: bytes) -> bytes:
    """Return a 64-byte proof of knowledge of ``secret`` for ``secret*G``, bound to ``context``."""
    if not 0 < secret < L:
        raise ValueError("secret must be a non-zero scalar below the group order")
    public = base_mul(secret)
    k = random_scalar()
    commitment = base_mul(k)
    c = _transcript(context, public, commitment).challenge(b"c")
    s = (k + c * secret) % L
    return scalar_to_bytes(c) + scalar_to_bytes(s)


def schnorr_verify(public: Point, proof: bytes, context: bytes) -> None:
    """Check a proof from :func:`schnorr_prove`; raise ProofError if it does not verify."""
    if len(proof) != 64:
        raise ProofError(f"schnorr proof: expected 64 bytes, got {len(proof)}")
    if public.is_identity():
        raise ProofError("schnorr proof: the public key is the identity element")
    c = scalar_from_bytes(proof[:32], field="schnorr proof c")
    s = scalar_from_bytes(proof[32:], field="schnorr proof s")
    commitment = base_mul(s) - public * c
    if _transcript(context, public, commitment).challenge(b"c") != c:
        raise ProofError("schnorr proof does not verify (wrong key, context or tampered proof)")
