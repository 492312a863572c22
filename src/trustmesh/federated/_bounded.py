"""Quantised updates for masked aggregation and their zero-knowledge L-infinity bound (RoFL-style).

A site clips its update ``delta`` to ``[-clip, clip]`` and rounds it stochastically to integers in
``[-bound, bound]``. Under ``--zk-bound`` it also commits to every integer (Pedersen, ristretto255)
and proves ``|q_i| <= bound`` with :func:`trustmesh.privacy.zk.prove_linf_bound`, bound to a
context whose nonce the server issued for this site and round. The server verifies each proof
*before* the masked sum and treats a site whose proof fails as dropped. Because commitments are
additively homomorphic, the sites also mask-aggregate ``weight * blind`` in Z_L; after unmasking,
the server checks ``sum_k weight_k * C_k == S*H + R*G`` coordinate by coordinate, which ties the
masked inputs to the proven, bounded values (Lycklama et al., "RoFL", IEEE S&P 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trustmesh.errors import FederatedError
from trustmesh.privacy.zk import LinfBoundProof, ProofContext, prove_linf_bound, verify_linf_bound
from trustmesh.privacy.zk.hazmat._group import L, raw_add, raw_base_mul, raw_mul, random_scalar
from trustmesh.privacy.zk.hazmat._pedersen import H

__all__ = ["BoundSpec", "ProvenUpdate", "check_commitment_sum", "from_ring", "prove_update", "quantize_update",
           "to_ring", "verify_update"]


@dataclass(frozen=True, slots=True)
class BoundSpec:
    """Quantisation of updates: clip to ``[-clip, clip]``, ``bound`` integer levels each side.

    ``prove``: sites prove ``|q_i| <= bound`` in zero knowledge and the server enforces it.
    """

    clip: float
    bound: int
    prove: bool = False

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}")
        if not 1 <= self.bound <= 2**40:
            raise ValueError(f"bound must be in 1..2**40, got {self.bound}")

    @property
    def step(self) -> float:
        """The value of one quantisation level."""
        return self.clip / self.bound


def quantize_update(delta: npt.NDArray[np.floating], spec: BoundSpec, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Clip and stochastically round ``delta`` to integers in ``[-bound, bound]`` (unbiased inside the clip)."""
    x = np.clip(np.asarray(delta, dtype=np.float64), -spec.clip, spec.clip) / spec.step
    low = np.floor(x)
    q = low + (rng.random(x.shape) < (x - low))
    out: npt.NDArray[np.int64] = np.clip(q, -spec.bound, spec.bound).astype(np.int64)
    return out


def to_ring(q: npt.NDArray[np.int64], weight: int) -> npt.NDArray[np.uint64]:
    """Encode ``weight * q`` in Z_2^64 (two's complement)."""
    return (np.asarray(q, dtype=np.int64) * np.int64(weight)).view(np.uint64)


def from_ring(u: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """Decode a Z_2^64 sum as signed integers (exact while ``|sum| < 2^63``)."""
    return np.asarray(u, dtype=np.uint64).view(np.int64)


@dataclass(frozen=True, slots=True)
class ProvenUpdate:
    """A site's commitments and L-infinity proof, and the blinds it keeps (revealed only masked)."""

    commitments: bytes
    proof: bytes
    blinds: tuple[int, ...]


def prove_update(q: npt.NDArray[np.int64], spec: BoundSpec, context: ProofContext, *, workers: int | None = None) -> ProvenUpdate:
    """Commit to ``q`` and prove ``max |q_i| <= spec.bound`` in ``context``."""
    blinds = [random_scalar() for _ in range(len(q))]
    commitments, proof = prove_linf_bound(q, spec.bound, context, workers=workers, blinds=blinds)
    return ProvenUpdate(b"".join(c.to_bytes() for c in commitments), proof.to_bytes(), tuple(blinds))


def verify_update(commitments: bytes, proof: bytes, n: int, spec: BoundSpec, context: ProofContext,
                  *, workers: int | None = None) -> list[bytes]:
    """Raise ProofError unless ``proof`` shows every one of the ``n`` commitments is in ``[-bound, bound]``.

    Returns the validated commitment encodings.
    """
    from trustmesh.errors import ProofError
    from trustmesh.privacy.zk import commitments_from_bytes

    points = commitments_from_bytes(commitments)
    if len(points) != n:
        raise ProofError(f"{len(points)} commitments for an update of {n} coordinates")
    verify_linf_bound(points, LinfBoundProof.from_bytes(proof), spec.bound, context, workers=workers)
    return [p.to_bytes() for p in points]


def check_commitment_sum(commitments: dict[int, list[bytes]], weights: dict[int, int],
                         total: npt.NDArray[np.int64], blind_sum: list[int]) -> None:
    """Raise FederatedError unless ``sum_k w_k C_k == total*H + blind_sum*G`` for every coordinate."""
    h = H.to_bytes()
    n = len(total)
    if len(blind_sum) != n or any(len(c) != n for c in commitments.values()):
        raise FederatedError("bounded aggregation: commitment, sum and blind lengths differ")
    for j in range(n):
        acc: bytes | None = None
        for k, cs in commitments.items():
            w = weights[k]
            term = cs[j] if w == 1 else raw_mul(w % L, cs[j])
            acc = term if acc is None else raw_add(acc, term)
        v = int(total[j]) % L
        expect = raw_base_mul(blind_sum[j] % L) if v == 0 else raw_add(raw_base_mul(blind_sum[j] % L), raw_mul(v, h))
        if acc != expect:
            raise FederatedError(f"bounded aggregation: the unmasked sum does not open the committed updates "
                                 f"(coordinate {j}); some site masked a value other than the one it proved")

