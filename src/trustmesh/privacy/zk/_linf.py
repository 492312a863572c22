"""L-infinity norm bound on a committed, quantized model update (RoFL-style input check).

RoFL (Lycklama et al., IEEE S&P 2023) has each federated client commit to its update and prove a
norm bound in zero knowledge, so the server refuses scaled or poisoned updates without seeing them.
Here every coordinate ``v_i`` gets a Pedersen commitment ``C_i = r_i*G + v_i*H`` and a range proof
that ``v_i + bound`` lies in ``[0, 2*bound]``, i.e. ``|v_i| <= bound``; all coordinates share one
Fiat-Shamir challenge bound to the context (origin, round, device id, nonce).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trustmesh.errors import ProofError
from trustmesh.privacy.zk._context import ProofContext
from trustmesh.privacy.zk.hazmat._bits import BitRangeProof, prove_bit_ranges, verify_bit_ranges
from trustmesh.privacy.zk.hazmat._group import (
    L,
    Point,
    raw_add,
    raw_base_mul,
    raw_mul,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
)
from trustmesh.privacy.zk.hazmat._pedersen import H
from trustmesh.privacy.zk.hazmat._transcript import Transcript

__all__ = ["LinfBoundProof", "commitments_from_bytes", "commitments_to_bytes", "prove_linf_bound", "verify_linf_bound"]

_MAGIC = b"TMLB"
_VERSION = 1
_HEADER = struct.Struct(">4sBIQ")  # magic, version, coordinates, bound
MAX_BOUND = 2**62


@dataclass(frozen=True, slots=True)
class LinfBoundProof:
    """Range proofs that every committed coordinate lies in ``[-bound, bound]``."""

    bound: int
    challenge: int
    coordinates: tuple[BitRangeProof, ...]

    def to_bytes(self) -> bytes:
        """Encode as header, challenge, then one fixed-size bit proof per coordinate."""
        head = _HEADER.pack(_MAGIC, _VERSION, len(self.coordinates), self.bound)
        return head + scalar_to_bytes(self.challenge) + b"".join(p.to_bytes() for p in self.coordinates)

    @classmethod
    def from_bytes(cls, data: bytes) -> LinfBoundProof:
        """Decode and validate every point and scalar; raise ProofError on any defect."""
        if len(data) < _HEADER.size + 32:
            raise ProofError("linf proof: too short")
        magic, version, n, bound = _HEADER.unpack(data[: _HEADER.size])
        if magic != _MAGIC:
            raise ProofError("linf proof: bad magic (not a trustmesh L-infinity proof)")
        if version != _VERSION:
            raise ProofError(f"linf proof: unsupported version {version}")
        if not 1 <= bound <= MAX_BOUND:
            raise ProofError(f"linf proof: bound {bound} out of range")
        per = BitRangeProof.size(2 * bound)
        off = _HEADER.size + 32
        if len(data) != off + n * per:
            raise ProofError(f"linf proof: expected {off + n * per} bytes for {n} coordinates, got {len(data)}")
        challenge = scalar_from_bytes(data[_HEADER.size : off], field="linf proof challenge")
        coords = tuple(
            BitRangeProof.from_bytes(data[off + i * per : off + (i + 1) * per], 2 * bound, field=f"linf proof coordinate {i}")
            for i in range(n)
        )
        return cls(bound, challenge, coords)


def commitments_to_bytes(commitments: Sequence[Point]) -> bytes:
    """Concatenate commitment encodings (32 bytes each)."""
    return b"".join(c.to_bytes() for c in commitments)


def commitments_from_bytes(data: bytes) -> list[Point]:
    """Split and validate concatenated commitments; raise ProofError on a bad length or point."""
    if len(data) % 32:
        raise ProofError(f"commitments: length {len(data)} is not a multiple of 32")
    return [Point.from_bytes(data[i : i + 32], field=f"commitment {i // 32}") for i in range(0, len(data), 32)]


def _check_bound(bound: int) -> None:
    if not 1 <= bound <= MAX_BOUND:
        raise ValueError(f"bound must be in 1..2**62, got {bound}")


def _transcript(context: ProofContext, commitments: list[bytes], bound: int) -> Transcript:
    t = Transcript(b"trustmesh/zk/linf-bound/v1")
    t.append(b"context", context.to_bytes())
    t.append(b"bound", bound.to_bytes(8, "big"))
    t.append_many(b"commitments", commitments)
    return t


def prove_linf_bound(
    values: npt.NDArray[np.integer] | Sequence[int],
    bound: int,
    context: ProofContext,
    *,
    workers: int | None = None,
    blinds: Sequence[int] | None = None,
) -> tuple[list[Point], LinfBoundProof]:
    """Commit to each coordinate and prove ``max |v_i| <= bound``; return (commitments, proof).

    ``values`` is a 1-D integer array (a quantized update). Raise ValueError if a value is out of
    bound: an honest client cannot make the proof, and the caller should clip first. ``blinds``
    (secret, uniform mod L; fresh ones by default) lets a caller that must later reveal their
    masked sum, as secure aggregation does, choose them.
    """
    _check_bound(bound)
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"values must be integers (quantize first), got dtype {arr.dtype}")
    ints = [int(v) for v in arr.tolist()]
    worst = max(abs(v) for v in ints)
    if worst > bound:
        raise ValueError(f"values exceed the bound: max |v| = {worst} > {bound}")
    if blinds is None:
        blinds = [random_scalar() for _ in ints]
    elif len(blinds) != len(ints):
        raise ValueError(f"blinds must have one scalar per value ({len(ints)}), got {len(blinds)}")
    h = H.to_bytes()
    commitments = [raw_add(raw_base_mul(r), raw_mul(v % L, h)) if v else raw_base_mul(r) for v, r in zip(ints, blinds, strict=True)]
    t = _transcript(context, commitments, bound)
    e, proofs = prove_bit_ranges(t, [v + bound for v in ints], blinds, 2 * bound, workers=workers)
    return [Point(c) for c in commitments], LinfBoundProof(bound, e, tuple(proofs))


def verify_linf_bound(
    commitments: Sequence[Point],
    proof: LinfBoundProof,
    bound: int,
    context: ProofContext,
    *,
    workers: int | None = None,
) -> None:
    """Raise ProofError unless every commitment opens to a value in ``[-bound, bound]`` in ``context``."""
    _check_bound(bound)
    if proof.bound != bound:
        raise ProofError(f"linf proof is for bound {proof.bound}, expected {bound}")
    if len(commitments) != len(proof.coordinates):
        raise ProofError(f"{len(commitments)} commitments but the proof covers {len(proof.coordinates)} coordinates")
    raw = [c.to_bytes() for c in commitments]
    t = _transcript(context, raw, bound)
    shift = (H * bound).to_bytes()
    shifted = [raw_add(c, shift) for c in raw]
    verify_bit_ranges(t, shifted, proof.challenge, proof.coordinates, 2 * bound, workers=workers)
