"""Raw zero-knowledge primitives: ristretto255 group, transcripts, Pedersen, Schnorr, bit OR-proofs.

.. warning::
   This is the "hazardous materials" layer. These functions do exactly what they say and nothing
   more: they do not bind proofs to a context unless you feed one in, they accept any scalar you
   pass, and misuse (reusing a nonce, skipping ``Point.from_bytes`` on untrusted input, forgetting
   to absorb the statement into the transcript) silently breaks soundness or zero knowledge. Use
   the recipes in :mod:`trustmesh.privacy.zk` unless you are building a new proof.
"""

from trustmesh.privacy.zk.hazmat._bits import BitRangeProof, bit_weights, prove_bit_ranges, verify_bit_ranges
from trustmesh.privacy.zk.hazmat._group import (
    GENERATOR,
    IDENTITY,
    L,
    POINT_BYTES,
    SCALAR_BYTES,
    Point,
    base_mul,
    hash_to_point,
    hash_to_scalar,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
)
from trustmesh.privacy.zk.hazmat._pedersen import H, PEDERSEN_H_LABEL, commit, random_blind
from trustmesh.privacy.zk.hazmat._schnorr import schnorr_prove, schnorr_verify
from trustmesh.privacy.zk.hazmat._transcript import Transcript

__all__ = [
    "BitRangeProof",
    "GENERATOR",
    "H",
    "IDENTITY",
    "L",
    "PEDERSEN_H_LABEL",
    "POINT_BYTES",
    "Point",
    "SCALAR_BYTES",
    "Transcript",
    "base_mul",
    "bit_weights",
    "commit",
    "hash_to_point",
    "hash_to_scalar",
    "prove_bit_ranges",
    "random_blind",
    "random_scalar",
    "scalar_from_bytes",
    "scalar_to_bytes",
    "schnorr_prove",
    "schnorr_verify",
    "verify_bit_ranges",
]
