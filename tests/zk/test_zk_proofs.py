"""Completeness and soundness of the zero-knowledge recipes (trustmesh.privacy.zk)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from trustmesh.errors import ProofError
from trustmesh.privacy.zk import (
    LinfBoundProof,
    ProofContext,
    RangeProof,
    SchnorrKeyPair,
    SchnorrProof,
    commitments_from_bytes,
    commitments_to_bytes,
    prove_at_least,
    prove_key_knowledge,
    prove_linf_bound,
    prove_range,
    verify_at_least,
    verify_key_knowledge,
    verify_linf_bound,
    verify_range,
)
from trustmesh.privacy.zk.hazmat import H, BitRangeProof, Transcript, bit_weights, commit, prove_bit_ranges


@pytest.fixture()
def ctx() -> ProofContext:
    return ProofContext.fresh("trustmesh.test/log", 3, "site-a")


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


# --- Schnorr proof of key knowledge -----------------------------------------------------------


def test_key_knowledge_completeness(ctx: ProofContext) -> None:
    key = SchnorrKeyPair.generate()
    proof = prove_key_knowledge(key, ctx)
    verify_key_knowledge(key.public, SchnorrProof.from_bytes(proof.to_bytes()), ctx)


def test_key_knowledge_rejects_wrong_key_and_replay(ctx: ProofContext) -> None:
    key, other = SchnorrKeyPair.generate(), SchnorrKeyPair.generate()
    proof = prove_key_knowledge(key, ctx)
    with pytest.raises(ProofError):
        verify_key_knowledge(other.public, proof, ctx)
    for changed in (
        dataclasses.replace(ctx, origin="other/log"),
        dataclasses.replace(ctx, round=4),
        dataclasses.replace(ctx, device_id="site-b"),
        dataclasses.replace(ctx, nonce=bytes(32)),
    ):
        with pytest.raises(ProofError):
            verify_key_knowledge(key.public, proof, changed)


def test_key_knowledge_rejects_tampered_bytes(ctx: ProofContext) -> None:
    key = SchnorrKeyPair.generate()
    data = prove_key_knowledge(key, ctx).to_bytes()
    for i in (0, 31, 32, 63):
        tampered = _flip(data, i)
        with pytest.raises(ProofError):
            verify_key_knowledge(key.public, SchnorrProof.from_bytes(tampered), ctx)
    with pytest.raises(ProofError, match="64 bytes"):
        SchnorrProof.from_bytes(data[:-1])


def test_schnorr_secret_round_trip_and_zero_rejected() -> None:
    key = SchnorrKeyPair.generate()
    assert SchnorrKeyPair.from_secret_bytes(key.secret_bytes()) == key
    with pytest.raises(ProofError, match="zero"):
        SchnorrKeyPair.from_secret_bytes(bytes(32))
    assert str(key.secret) not in repr(key)


# --- range proofs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "bits"), [(0, 1), (1, 1), (0, 8), (255, 8), (12345, 32), (2**64 - 1, 64)])
def test_range_completeness(value: int, bits: int, ctx: ProofContext) -> None:
    commitment, opening, proof = prove_range(value, bits, ctx)
    assert commitment == commit(opening.value, opening.blind)
    verify_range(commitment, RangeProof.from_bytes(proof.to_bytes()), bits, ctx)


def test_range_proof_size_is_128_bytes_per_bit(ctx: ProofContext) -> None:
    _, _, proof = prove_range(7, 64, ctx)
    assert len(proof.to_bytes()) == 45 + 63 * 32 + 64 * 96


def test_honest_prover_refuses_out_of_range(ctx: ProofContext) -> None:
    with pytest.raises(ValueError, match="value must be in"):
        prove_range(256, 8, ctx)
    with pytest.raises(ValueError, match="value must be in"):
        prove_range(-1, 8, ctx)


def test_proof_does_not_transfer_to_an_out_of_range_commitment(ctx: ProofContext) -> None:
    commitment, _, proof = prove_range(200, 8, ctx)
    shifted = commitment + H * 256  # opens to 456, outside [0, 256)
    with pytest.raises(ProofError):
        verify_range(shifted, proof, 8, ctx)


def test_cheating_prover_with_a_non_bit_is_rejected(ctx: ProofContext) -> None:
    # A prover commits to 256 (out of range for 8 bits) and runs the protocol as if the top
    # "bit" were 2: it makes a valid 9-bit proof and tries to pass it off for 8 bits.
    commitment = commit(256, 99)
    t = Transcript(b"cheat")
    e, proofs = prove_bit_ranges(t, [256], [99], 511)
    forged = RangeProof(255, e, proofs[0])
    with pytest.raises(ProofError):
        verify_range(commitment, forged, 8, ctx)
    relabelled = bytearray(RangeProof(511, e, proofs[0]).to_bytes())
    relabelled[5:13] = (255).to_bytes(8, "big")
    with pytest.raises(ProofError, match="expected"):
        RangeProof.from_bytes(bytes(relabelled))


def test_range_proof_rejects_replay_in_another_context(ctx: ProofContext) -> None:
    commitment, _, proof = prove_range(42, 16, ctx)
    with pytest.raises(ProofError):
        verify_range(commitment, proof, 16, dataclasses.replace(ctx, round=ctx.round + 1))
    with pytest.raises(ProofError):
        verify_range(commitment, proof, 16, ProofContext.fresh(ctx.origin, ctx.round, ctx.device_id))


def test_range_proof_rejects_every_tampered_field(ctx: ProofContext) -> None:
    commitment, _, proof = prove_range(1000, 16, ctx)
    data = proof.to_bytes()
    # challenge, a bit commitment, a c0, an s0, an s1
    positions = [13, 45, 45 + 15 * 32, 45 + 15 * 32 + 32 + 1, 45 + 15 * 32 + 64 + 1]
    for pos in positions:
        tampered = _flip(data, pos)
        with pytest.raises(ProofError):
            verify_range(commitment, RangeProof.from_bytes(tampered), 16, ctx)


def test_range_proof_wrong_width_rejected(ctx: ProofContext) -> None:
    commitment, _, proof = prove_range(3, 8, ctx)
    with pytest.raises(ProofError, match="not \\[0, 2\\*\\*16\\)"):
        verify_range(commitment, proof, 16, ctx)


def test_malformed_range_proof_bytes(ctx: ProofContext) -> None:
    _, _, proof = prove_range(3, 8, ctx)
    data = proof.to_bytes()
    with pytest.raises(ProofError, match="bad magic"):
        RangeProof.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(ProofError, match="expected"):
        RangeProof.from_bytes(data[:-1])
    with pytest.raises(ProofError, match="non-canonical"):
        RangeProof.from_bytes(data[:13] + b"\xff" * 32 + data[45:])
    bad_point = bytes.fromhex("26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371")
    with pytest.raises(ProofError, match="not a valid ristretto255"):
        RangeProof.from_bytes(data[:45] + bad_point + data[77:])


def test_bit_weights_cover_exactly_the_range() -> None:
    for upper in (1, 2, 5, 7, 8, 254, 255, 1000):
        weights = bit_weights(upper)
        sums = {sum(w for w, bit in zip(weights, f"{m:0{len(weights)}b}"[::-1], strict=True) if bit == "1")
                for m in range(1 << len(weights))}
        assert sums == set(range(upper + 1))


# --- threshold (committed metric >= t) ---------------------------------------------------------


def test_at_least_completeness_and_soundness(ctx: ProofContext) -> None:
    commitment, _, proof = prove_at_least(9712, 9500, 16, ctx)  # detection rate in basis points
    verify_at_least(commitment, proof, 9500, 16, ctx)
    with pytest.raises(ProofError):
        verify_at_least(commitment, proof, 9713, 16, ctx)  # a higher threshold than proven
    with pytest.raises(ProofError):
        verify_at_least(commitment, proof, 9500, 16, dataclasses.replace(ctx, device_id="site-b"))
    with pytest.raises(ValueError, match="threshold"):
        prove_at_least(9400, 9500, 16, ctx)


# --- L-infinity bound --------------------------------------------------------------------------


def test_linf_completeness_and_serialisation(ctx: ProofContext) -> None:
    values = np.random.default_rng(0).integers(-100, 101, size=64)
    values[0], values[1] = 100, -100  # the bound itself is allowed
    commitments, proof = prove_linf_bound(values, 100, ctx)
    again = LinfBoundProof.from_bytes(proof.to_bytes())
    verify_linf_bound(commitments_from_bytes(commitments_to_bytes(commitments)), again, 100, ctx)


def test_linf_scaled_update_is_refused(ctx: ProofContext) -> None:
    values = np.arange(-5, 5)
    commitments, proof = prove_linf_bound(values, 5, ctx)
    # A poisoner scales its update x10 after proving: the commitments no longer match the proof.
    scaled = [c * 10 for c in commitments]
    with pytest.raises(ProofError):
        verify_linf_bound(scaled, proof, 5, ctx)
    with pytest.raises(ValueError, match="exceed the bound"):
        prove_linf_bound(values * 10, 5, ctx)


def test_linf_rejects_wrong_bound_context_and_swapped_commitments(ctx: ProofContext) -> None:
    commitments, proof = prove_linf_bound(np.array([1, -2, 3, 0]), 3, ctx)
    with pytest.raises(ProofError, match="bound"):
        verify_linf_bound(commitments, proof, 2, ctx)
    with pytest.raises(ProofError):
        verify_linf_bound(commitments, proof, 3, dataclasses.replace(ctx, origin="elsewhere"))
    with pytest.raises(ProofError):
        verify_linf_bound(commitments[::-1], proof, 3, ctx)
    with pytest.raises(ProofError, match="commitments"):
        verify_linf_bound(commitments[:-1], proof, 3, ctx)


def test_linf_rejects_out_of_bound_commitment(ctx: ProofContext) -> None:
    commitments, proof = prove_linf_bound(np.array([3, 3]), 3, ctx)
    commitments[1] = commitments[1] + H  # now opens to 4 > bound
    with pytest.raises(ProofError):
        verify_linf_bound(commitments, proof, 3, ctx)


def test_linf_malformed_inputs(ctx: ProofContext) -> None:
    with pytest.raises(ValueError, match="integers"):
        prove_linf_bound(np.array([0.5]), 3, ctx)
    with pytest.raises(ValueError, match="bound must be"):
        prove_linf_bound(np.array([0]), 0, ctx)
    _, proof = prove_linf_bound(np.array([1, 2]), 3, ctx)
    data = proof.to_bytes()
    with pytest.raises(ProofError, match="expected"):
        LinfBoundProof.from_bytes(data + b"\x00")
    with pytest.raises(ProofError, match="bad magic"):
        LinfBoundProof.from_bytes(b"ABCD" + data[4:])
    with pytest.raises(ProofError, match="multiple of 32"):
        commitments_from_bytes(b"\x00" * 33)


def test_bit_range_proof_size_matches_encoding() -> None:
    e, proofs = prove_bit_ranges(Transcript(b"t"), [5], [7], 254)
    assert len(proofs[0].to_bytes()) == BitRangeProof.size(254)


def test_context_validation() -> None:
    with pytest.raises(ValueError, match="nonce"):
        ProofContext("o", 0, "d", b"short")
    with pytest.raises(ValueError, match="round"):
        ProofContext("o", -1, "d", bytes(16))
    ctx = ProofContext.fresh("o", 1, "d")
    assert ProofContext.from_dict(ctx.to_dict()) == ctx
    with pytest.raises(ProofError, match="missing field"):
        ProofContext.from_dict({"origin": "o"})
