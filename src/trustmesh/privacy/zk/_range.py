"""Range proofs on Pedersen commitments: ``0 <= x < 2^bits`` and ``x >= threshold``."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from trustmesh.errors import ProofError
from trustmesh.privacy.zk._context import ProofContext
from trustmesh.privacy.zk.hazmat._bits import BitRangeProof, prove_bit_ranges, verify_bit_ranges
from trustmesh.privacy.zk.hazmat._group import L, Point, scalar_from_bytes, scalar_to_bytes
from trustmesh.privacy.zk.hazmat._pedersen import H, commit, random_blind
from trustmesh.privacy.zk.hazmat._transcript import Transcript

__all__ = [
    "MAX_RANGE_BITS",
    "Opening",
    "RangeProof",
    "prove_at_least",
    "prove_range",
    "verify_at_least",
    "verify_range",
]

MAX_RANGE_BITS = 64
_MAGIC = b"TMRP"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Opening:
    """The secret opening of a commitment: the value and its blinding factor (keep private)."""

    value: int
    blind: int


@dataclass(frozen=True, slots=True)
class RangeProof:
    """A proof that a commitment opens to a value in ``[0, upper]`` (``upper = 2^bits - 1`` usually)."""

    upper: int
    challenge: int
    bits: BitRangeProof

    def to_bytes(self) -> bytes:
        """Encode as ``TMRP | version | upper (u64) | challenge | bit proof``."""
        return _MAGIC + struct.pack(">BQ", _VERSION, self.upper) + scalar_to_bytes(self.challenge) + self.bits.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> RangeProof:
        """Decode and validate; raise ProofError on a bad header, length, point or scalar."""
        if len(data) < 45 or data[:4] != _MAGIC:
            raise ProofError("range proof: not a trustmesh range proof (bad magic or too short)")
        version, upper = struct.unpack(">BQ", data[4:13])
        if version != _VERSION:
            raise ProofError(f"range proof: unsupported version {version}")
        if not 1 <= upper < 2**MAX_RANGE_BITS:
            raise ProofError(f"range proof: upper bound {upper} out of supported range")
        challenge = scalar_from_bytes(data[13:45], field="range proof challenge")
        return cls(upper, challenge, BitRangeProof.from_bytes(data[45:], upper))


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_RANGE_BITS:
        raise ValueError(f"bits must be in 1..{MAX_RANGE_BITS}, got {bits}")


def _transcript(kind: bytes, context: ProofContext, commitment: Point, upper: int, shift: int) -> Transcript:
    t = Transcript(b"trustmesh/zk/" + kind + b"/v1")
    t.append(b"context", context.to_bytes())
    t.append(b"commitment", commitment.to_bytes())
    t.append(b"upper", upper.to_bytes(8, "big"))
    t.append(b"shift", shift.to_bytes(8, "big", signed=True))
    return t


def prove_range(value: int, bits: int, context: ProofContext) -> tuple[Point, Opening, RangeProof]:
    """Commit to ``value`` and prove ``0 <= value < 2**bits``; return (commitment, opening, proof)."""
    _check_bits(bits)
    upper = (1 << bits) - 1
    if not 0 <= value <= upper:
        raise ValueError(f"value must be in [0, 2**{bits}), got {value}")
    blind = random_blind()
    commitment = commit(value, blind)
    t = _transcript(b"range", context, commitment, upper, 0)
    e, proofs = prove_bit_ranges(t, [value], [blind], upper, workers=1)
    return commitment, Opening(value, blind), RangeProof(upper, e, proofs[0])


def verify_range(commitment: Point, proof: RangeProof, bits: int, context: ProofContext) -> None:
    """Raise ProofError unless ``commitment`` opens to a value in ``[0, 2**bits)`` in ``context``."""
    _check_bits(bits)
    if proof.upper != (1 << bits) - 1:
        raise ProofError(f"range proof is for [0, {proof.upper}], not [0, 2**{bits})")
    t = _transcript(b"range", context, commitment, proof.upper, 0)
    verify_bit_ranges(t, [commitment.to_bytes()], proof.challenge, [proof.bits], proof.upper, workers=1)


def prove_at_least(value: int, threshold: int, bits: int, context: ProofContext) -> tuple[Point, Opening, RangeProof]:
    """Commit to a metric and prove ``threshold <= value < threshold + 2**bits`` without revealing it.

    E.g. a site's detection rate scaled to an integer (basis points) exceeds the required rate.
    """
    _check_bits(bits)
    if not threshold <= value < threshold + (1 << bits):
        raise ValueError(f"value must be in [threshold, threshold + 2**{bits}), got {value} (threshold {threshold})")
    upper = (1 << bits) - 1
    blind = random_blind()
    commitment = commit(value, blind)
    t = _transcript(b"at-least", context, commitment, upper, threshold)
    e, proofs = prove_bit_ranges(t, [value - threshold], [blind], upper, workers=1)
    return commitment, Opening(value, blind), RangeProof(upper, e, proofs[0])


def verify_at_least(commitment: Point, proof: RangeProof, threshold: int, bits: int, context: ProofContext) -> None:
    """Raise ProofError unless ``commitment`` opens to a value ``>= threshold`` (and < threshold + 2**bits)."""
    _check_bits(bits)
    if proof.upper != (1 << bits) - 1:
        raise ProofError(f"threshold proof is for {proof.upper.bit_length()} bits, expected {bits}")
    t = _transcript(b"at-least", context, commitment, proof.upper, threshold)
    shifted = commitment - H * (threshold % L)
    verify_bit_ranges(t, [shifted.to_bytes()], proof.challenge, [proof.bits], proof.upper, workers=1)
