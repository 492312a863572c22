"""Zero-knowledge proofs over ristretto255: key knowledge, range, threshold and L-infinity bounds.

Every proof is non-interactive (Fiat-Shamir) and bound to a :class:`ProofContext` (log origin,
round, device id, fresh nonce): a proof made for one context is rejected in any other. Verifiers
raise :class:`trustmesh.errors.ProofError`; they never return False. Raw group operations,
Pedersen commitments and Schnorr/OR-proof building blocks live in :mod:`.hazmat`.
"""

from trustmesh.privacy.zk._context import ProofContext
from trustmesh.privacy.zk._keys import SchnorrKeyPair, SchnorrProof, prove_key_knowledge, verify_key_knowledge
from trustmesh.privacy.zk._linf import (
    LinfBoundProof,
    commitments_from_bytes,
    commitments_to_bytes,
    prove_linf_bound,
    verify_linf_bound,
)
from trustmesh.privacy.zk._range import (
    MAX_RANGE_BITS,
    Opening,
    RangeProof,
    prove_at_least,
    prove_range,
    verify_at_least,
    verify_range,
)
from trustmesh.privacy.zk.hazmat._group import Point

__all__ = [
    "LinfBoundProof",
    "MAX_RANGE_BITS",
    "Opening",
    "Point",
    "ProofContext",
    "RangeProof",
    "SchnorrKeyPair",
    "SchnorrProof",
    "commitments_from_bytes",
    "commitments_to_bytes",
    "prove_at_least",
    "prove_key_knowledge",
    "prove_linf_bound",
    "prove_range",
    "verify_at_least",
    "verify_key_knowledge",
    "verify_linf_bound",
    "verify_range",
]
