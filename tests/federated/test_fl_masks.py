"""Our secure-aggregation masks: ChaCha20/HKDF expansion of the full key, fresh per round, not from a
32-bit seed; exact sums with dropouts; Shamir sharing; refusals of misbehaving parties."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trustmesh.errors import FederatedError
from trustmesh.federated._masks import (
    MaskingServer,
    MaskingSite,
    derive_mask_key,
    expand_mask,
    neighbour_graph,
    pair_mask,
    shamir_combine,
    shamir_split,
)


MASKED: dict[int, np.ndarray] = {}  # what each site sent in the latest _round


def _round(ids: list[int], n: int, *, rnd: int = 1, shares: int = 5, threshold: int = 3,
           drop_after_keys: tuple[int, ...] = (), seed: int = 0) -> tuple[dict[int, MaskingSite], MaskingServer,
                                                                       dict[int, np.ndarray], np.ndarray, set[int]]:
    """Run one protocol round in process (state round-tripped as Flower would store it)."""
    graph = neighbour_graph(ids, shares)
    server = MaskingServer(rnd, graph, threshold)
    sites = {i: MaskingSite.setup(i, rnd, threshold) for i in ids}
    server.public_keys = {i: (s.pk1, s.pk2) for i, s in sites.items()}
    sent = {i: s.share_keys({j: server.public_keys[j] for j in graph[i]}) for i, s in sites.items()}
    forwarded = server.forward(sent)
    rng = np.random.default_rng(seed)
    values = {i: rng.integers(0, 2**62, n, dtype=np.uint64) for i in ids}
    survivors = set(ids) - set(drop_after_keys)
    total = np.zeros(n, dtype=np.uint64)
    for i in ids:
        sites[i] = MaskingSite.from_state(sites[i].to_state())
        sites[i].receive_shares(forwarded[i])
    for i in survivors:
        MASKED[i] = sites[i].mask(values[i])
        total = total + MASKED[i]
    released = {i: sites[i].unmask(graph[i] & survivors, graph[i] - survivors) for i in survivors}
    got, _ = server.unmask(total, survivors, released)
    return sites, server, values, got, survivors


def _shared(a: MaskingSite, b: MaskingSite) -> bytes:
    return X25519PrivateKey.from_private_bytes(a.sk1).exchange(X25519PublicKey.from_public_bytes(b.pk1))


def _reference_mask(shared: bytes, rnd: int, a: int, b: int, n: int) -> np.ndarray:
    """The documented construction, written out independently: HKDF-SHA256, then ChaCha20 keystream."""
    info = b"trustmesh/secagg/v1/pair" + struct.pack(">QQQ", rnd, min(a, b), max(a, b))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(8 * n))
    return np.frombuffer(stream, dtype="<u8")


def test_sum_is_exact_and_pairwise_masks_are_the_chacha20_hkdf_expansion_of_the_shared_key() -> None:
    n = 257
    sites, server, values, got, survivors = _round([11, 4, 29, 7, 18], n)
    assert np.array_equal(got, sum((values[i] for i in survivors), np.zeros(n, dtype=np.uint64)))
    a, b = sites[4], sites[7]
    shared = _shared(a, b)
    assert shared == _shared(b, a)
    assert np.array_equal(pair_mask(shared, 1, 4, 7, n), _reference_mask(shared, 1, 4, 7, n))
    # what site 4 sends is its value plus its self mask plus +/- one such mask per neighbour
    self_mask = expand_mask(derive_mask_key(a.seed, "self", 1, 4, 0), n)
    expect = values[4] + self_mask
    for j in a.available:
        m = _reference_mask(_shared(a, sites[j]), 1, 4, j, n)
        expect = expect + m if 4 < j else expect - m
    assert np.array_equal(MASKED[4], expect)


def test_masks_differ_across_rounds_and_pairs_even_under_the_same_key() -> None:
    shared = bytes(range(32))
    r1, r2 = pair_mask(shared, 1, 3, 5, 64), pair_mask(shared, 2, 3, 5, 64)
    other_pair = pair_mask(shared, 1, 3, 6, 64)
    assert not np.array_equal(r1, r2) and not np.array_equal(r1, other_pair)
    assert np.array_equal(r1, pair_mask(shared, 1, 5, 3, 64))  # symmetric in the pair
    # fresh keys every round: the same two sites get unrelated masks in rounds 1 and 2
    s1, _, _, _, _ = _round([1, 2, 3], 16, rnd=1, shares=3, threshold=2)
    s2, _, _, _, _ = _round([1, 2, 3], 16, rnd=2, shares=3, threshold=2)
    assert not np.array_equal(pair_mask(_shared(s1[1], s1[2]), 1, 1, 2, 16), pair_mask(_shared(s2[1], s2[2]), 2, 1, 2, 16))


def _mt19937_first_words(seed: int, k: int) -> np.ndarray:
    # Flower 1.41's pseudo_rand_gen: RandomState(seed32).randint(0, 2**32 - 1, ...) for a 2^32 modulus
    return np.random.RandomState(seed).randint(0, 2**32 - 1, k, dtype=np.int64).astype(np.uint64)


def test_masks_are_not_reproducible_from_a_32_bit_seed() -> None:
    site_a, site_b = MaskingSite.setup(1, 1, 1), MaskingSite.setup(2, 1, 1)
    shared = _shared(site_a, site_b)
    ours = pair_mask(shared, 1, 1, 2, 4)
    low_words = ours & np.uint64(0xFFFFFFFF)
    # Flower would have used this 32-bit seed for the same shared key
    flower_seed = 0
    for i in range(0, 32, 4):
        flower_seed ^= int.from_bytes(shared[i: i + 4], "little")
    flower_mask = _mt19937_first_words(flower_seed, 4)
    rng = np.random.default_rng(7)
    sample = [flower_seed, *rng.integers(0, 2**32, 3000).tolist()]
    found_ours = [s for s in sample if np.array_equal(_mt19937_first_words(s, 4), low_words)]
    found_flower = [s for s in sample if np.array_equal(_mt19937_first_words(s, 4), flower_mask)]
    assert found_flower == [flower_seed]  # the search works: a 32-bit-seeded mask is found
    assert found_ours == []
    assert not np.array_equal(flower_mask, low_words)


def test_a_site_dropping_after_sharing_keys_still_yields_the_exact_sum_of_the_others() -> None:
    n = 100
    _, _, values, got, survivors = _round(list(range(10, 20)), n, shares=9, threshold=6, drop_after_keys=(13, 17))
    assert survivors == set(range(10, 20)) - {13, 17}
    assert np.array_equal(got, sum((values[i] for i in survivors), np.zeros(n, dtype=np.uint64)))


def test_too_many_dropouts_abort_instead_of_leaking() -> None:
    with pytest.raises(FederatedError, match="threshold"):
        _round([1, 2, 3, 4, 5], 8, shares=5, threshold=4, drop_after_keys=(1, 2))


def test_a_site_never_releases_both_shares_of_one_peer() -> None:
    sites, server, _, _, _ = _round([1, 2, 3], 4, shares=3, threshold=2)
    fresh = {i: MaskingSite.setup(i, 3, 2) for i in (1, 2, 3)}
    keys = {i: (s.pk1, s.pk2) for i, s in fresh.items()}
    sent = {i: s.share_keys(keys) for i, s in fresh.items()}
    fwd = MaskingServer(3, {i: frozenset(keys) for i in keys}, 2).forward(sent)
    for i, s in fresh.items():
        s.receive_shares(fwd[i])
    fresh[1].mask(np.zeros(4, dtype=np.uint64))
    with pytest.raises(FederatedError, match="both shares"):
        fresh[1].unmask([1, 2, 3], [2])


def test_tampered_share_ciphertext_and_wrong_own_keys_are_refused() -> None:
    a, b = MaskingSite.setup(1, 1, 2), MaskingSite.setup(2, 1, 2)
    keys = {1: (a.pk1, a.pk2), 2: (b.pk1, b.pk2)}
    ct = a.share_keys(keys)[2]
    b.share_keys(keys)
    forged = ct[:-1] + bytes([ct[-1] ^ 1])
    with pytest.raises(FederatedError, match="authenticate"):
        b.receive_shares({1: forged})
    c = MaskingSite.setup(3, 1, 2)
    with pytest.raises(FederatedError, match="own public keys"):
        c.share_keys({3: (a.pk1, a.pk2), 1: (b.pk1, b.pk2)})


def test_shamir_any_threshold_shares_rebuild_and_fewer_do_not() -> None:
    secret = bytes(range(32))
    shares = shamir_split(secret, 3, [1, 2, 3, 4, 5])
    assert shamir_combine([shares[1], shares[3], shares[5]]) == secret
    assert shamir_combine([shares[2], shares[4], shares[5]]) == secret
    try:
        assert shamir_combine([shares[1], shares[2]]) != secret
    except FederatedError:
        pass  # two shares usually interpolate to a value above 2^256: refused outright
    with pytest.raises(FederatedError, match="malformed|conflicts"):
        shamir_combine([shares[1], shares[1][:4] + bytes(66)])


def test_pipelined_next_round_uses_fresh_keys_and_survives_a_dropout() -> None:
    ids, n = [2, 5, 8, 9, 12], 64
    sites, server, _, _, survivors = _round(ids, n, shares=5, threshold=3)
    assert survivors == set(ids)
    # while unmasking round 1 every site deals round 2's mask key and seed to the same neighbours
    dealt = {i: sites[i].prepare_next(2) for i in ids}
    old_pk1 = {i: sites[i].pk1 for i in ids}
    sites = {i: MaskingSite.from_state(s.to_state()) for i, s in sites.items()}
    nxt = MaskingServer(2, server.neighbours, 3, public_keys={i: (dealt[i][0], server.public_keys[i][1]) for i in ids})
    forwarded = nxt.forward({i: dealt[i][1] for i in ids})
    for i in ids:
        sites[i].start_round(2, {j: dealt[j][0] for j in server.neighbours[i]})
        sites[i].receive_shares(forwarded[i])
        assert sites[i].pk1 == dealt[i][0] != old_pk1[i]
    rng = np.random.default_rng(3)
    values = {i: rng.integers(0, 2**62, n, dtype=np.uint64) for i in ids}
    alive = set(ids) - {8}  # site 8 drops out while training round 2
    total = sum((sites[i].mask(values[i]) for i in alive), np.zeros(n, dtype=np.uint64))
    released = {i: sites[i].unmask(nxt.neighbours[i] & alive, nxt.neighbours[i] - alive) for i in alive}
    got, _ = nxt.unmask(total, alive, released)
    assert np.array_equal(got, sum((values[i] for i in alive), np.zeros(n, dtype=np.uint64)))
    stale = MaskingSite.from_state(sites[5].to_state())
    stale.prepare_next(3)
    with pytest.raises(FederatedError, match="does not follow"):
        stale.start_round(2, {})  # a replayed, older round is refused
