"""Property tests: random logs give pymerkle's roots, and every proof round-trips and resists tampering."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from trustmesh.errors import ConsistencyError, InclusionProofError, InputError
from trustmesh.ledger import (
    ConsistencyProof,
    Entry,
    InclusionProof,
    Ledger,
    verify_consistency,
    verify_inclusion,
)
from trustmesh.ledger.hazmat import EMPTY_ROOT, leaf_hash, node_hash, root_from_leaf_hashes

payloads = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=8),
                                                          st.booleans(), st.none()), max_size=3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(payloads, min_size=1, max_size=70), min_size=1, max_size=6), data=st.data())
def test_roots_match_pymerkle_and_proofs_round_trip(batches: list[list[dict[str, object]]], data: st.DataObject) -> None:
    # Arrange: build the same log in our store (in batches) and in pymerkle (RFC 6962 hashing by default)
    with tempfile.TemporaryDirectory() as tmp:
        led = Ledger.create(Path(tmp) / "l", "prop.example/log")
        ref = InmemoryTree(algorithm="sha256")
        raws: list[bytes] = []
        for batch in batches:
            entries = [Entry("k", p, time=1.0) for p in batch]
            led.append(entries)
            for e in entries:
                ref.append_entry(e.to_bytes())
                raws.append(e.to_bytes())
        n = len(raws)
        # Act / Assert: every prefix root equals pymerkle's and the in-memory reference
        for size in range(1, n + 1):
            assert led.root(size) == ref.get_root(size)
        assert led.root() == root_from_leaf_hashes([leaf_hash(r) for r in raws])
        size = data.draw(st.integers(1, n))
        index = data.draw(st.integers(0, size - 1))
        proof = led.prove_inclusion(index, size)
        verify_inclusion(proof, led.root(size), raws[index])
        assert InclusionProof.from_json(proof.to_json()) == proof
        old = data.draw(st.integers(1, size))
        cproof = led.prove_consistency(old, size)
        verify_consistency(cproof, led.root(old), led.root(size))
        assert ConsistencyProof.from_json(cproof.to_json()) == cproof
        # a proof for another leaf, or a flipped proof byte, must fail
        if proof.audit_path:
            k = data.draw(st.integers(0, len(proof.audit_path) - 1))
            bad = list(proof.audit_path)
            bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
            with pytest.raises(InclusionProofError):
                verify_inclusion(InclusionProof(index, size, proof.leaf_hash, proof.root_hash, tuple(bad)), led.root(size))
        if cproof.path:
            bad = list(cproof.path)
            bad[-1] = bytes(32)
            with pytest.raises(ConsistencyError):
                verify_consistency(ConsistencyProof(old, size, cproof.root1, cproof.root2, tuple(bad)),
                                   led.root(old), led.root(size))
        led.close()


def test_hazmat_empty_and_small_trees() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert root_from_leaf_hashes([a, b, c]) == node_hash(node_hash(a, b), c)


def test_inclusion_proof_rejects_wrong_entry_bytes(small_ledger: Ledger) -> None:
    proof = small_ledger.prove_inclusion(5)
    with pytest.raises(InclusionProofError) as err:
        verify_inclusion(proof, small_ledger.root(), b"forged entry")
    assert err.value.index == 5


def test_proof_json_rejects_forged_fields(small_ledger: Ledger) -> None:
    doc = small_ledger.prove_inclusion(3).to_json()
    for field, value in [("leafIdx", -1), ("treeSize", "7"), ("root", "!!"), ("proof", ["AAAA"]), ("leafHash", None)]:
        with pytest.raises(InputError):
            InclusionProof.from_json({**doc, field: value})
    with pytest.raises(InputError):
        InclusionProof.from_json({**doc, "leafIdx": doc["treeSize"]})
    with pytest.raises(InputError):
        ConsistencyProof.from_json({"size1": 5, "size2": 3, "root1": doc["root"], "root2": doc["root"], "proof": []})


def test_proof_requests_out_of_range_are_input_errors(small_ledger: Ledger) -> None:
    with pytest.raises(InputError):
        small_ledger.prove_inclusion(700)
    with pytest.raises(InputError):
        small_ledger.prove_inclusion(0, 701)
    with pytest.raises(InputError):
        small_ledger.prove_consistency(10, 701)
    with pytest.raises(InputError):
        small_ledger.prove_consistency(11, 10)
    with pytest.raises(InputError, match="empty tree"):
        small_ledger.prove_consistency(0, 10)


def test_closed_form_inclusion_plan_equals_the_rfc_recursion() -> None:
    from trustmesh.ledger._proof import _inclusion_plan_recursive, inclusion_plan

    for size in range(1, 300):
        for index in range(size):
            assert inclusion_plan(index, size) == _inclusion_plan_recursive(index, size)
    for size in (2**40 + 12345, 10**8, 2**62 - 1):
        for index in (0, size // 3, size - 1):
            assert inclusion_plan(index, size) == _inclusion_plan_recursive(index, size)
