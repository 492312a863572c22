"""Secure aggregation with cryptographic masks (Bell et al., CCS 2020, the protocol behind SecAgg+).

Each round every site makes two fresh X25519 key pairs: ``sk1`` agrees pairwise *mask* keys with its
neighbours, ``sk2`` agrees keys that encrypt the Shamir shares it sends them. A site adds to its
quantised input a self mask and, per neighbour, a pairwise mask that the neighbour subtracts, so the
pairwise masks cancel in the sum. Dropped sites' pairwise masks are rebuilt by the server from
Shamir shares of their ``sk1``; surviving sites' self masks from shares of their self-mask seed. A
site never releases both shares of the same peer (that would unmask its input).

Where Flower 1.41's SecAgg+ folds each 32-byte key into a 32-bit seed for numpy's MT19937, every
mask here is the ChaCha20 keystream under a key that HKDF-SHA256 derives from the *full* shared
secret (or 32-byte seed) with the round number and both site ids in its ``info``: masks are
cryptographically pseudo-random, 256-bit strong and different in every round and for every pair.

Masked inputs live in the ring Z_2^64 (numpy ``uint64`` wraps); the blinds of the optional
Pedersen commitments (see :mod:`trustmesh.federated._bounded`) are masked the same way in Z_L.
This module is pure protocol state: :mod:`trustmesh.federated._secagg_flower` carries it over
Flower messages.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from trustmesh.errors import FederatedError
from trustmesh.privacy.zk.hazmat._group import L

__all__ = [
    "MaskingServer",
    "MaskingSite",
    "SHAMIR_PRIME",
    "derive_mask_key",
    "expand_mask",
    "expand_scalar_mask",
    "neighbour_graph",
    "pair_mask",
    "shamir_combine",
    "shamir_split",
]

_LABEL = b"trustmesh/secagg/v1/"
SHAMIR_PRIME = 2**521 - 1  # a Mersenne prime above every 32-byte secret
_SHARE_BYTES = 4 + 66
_ZERO_NONCE16 = bytes(16)
_ZERO_NONCE12 = bytes(12)


def derive_mask_key(secret: bytes, purpose: str, round_no: int, a: int, b: int) -> bytes:
    """HKDF-SHA256 a 32-byte ChaCha20 key from ``secret`` bound to purpose, round and ids ``a``, ``b``."""
    if len(secret) != 32:
        raise ValueError(f"secret must be 32 bytes, got {len(secret)}")
    info = _LABEL + purpose.encode() + struct.pack(">QQQ", round_no, a, b)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _keystream(key: bytes, n_bytes: int) -> bytes:
    # a fresh key per (purpose, round, pair), so the all-zero nonce/counter is never reused
    enc = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE16), mode=None).encryptor()
    return enc.update(bytes(n_bytes))


def expand_mask(key: bytes, n: int) -> npt.NDArray[np.uint64]:
    """Expand ``key`` to ``n`` uniform elements of Z_2^64: the ChaCha20 keystream, little-endian."""
    return np.frombuffer(_keystream(key, 8 * n), dtype="<u8").astype(np.uint64)


def expand_scalar_mask(key: bytes, n: int) -> list[int]:
    """Expand ``key`` to ``n`` elements of Z_L (64 keystream bytes each, reduced: bias < 2^-260)."""
    ks = _keystream(key, 64 * n)
    return [int.from_bytes(ks[64 * i: 64 * i + 64], "little") % L for i in range(n)]


def shamir_split(secret: bytes, threshold: int, xs: Iterable[int]) -> dict[int, bytes]:
    """Split a 32-byte ``secret`` into shares at the points ``xs`` (any ``threshold`` rebuild it)."""
    points = list(xs)
    if len(secret) != 32:
        raise ValueError(f"secret must be 32 bytes, got {len(secret)}")
    if not 1 <= threshold <= len(points):
        raise ValueError(f"threshold must be in 1..{len(points)}, got {threshold}")
    if len(set(points)) != len(points) or any(not 0 < x < 2**32 for x in points):
        raise ValueError("share points must be distinct integers in 1..2^32-1")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(SHAMIR_PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in points:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % SHAMIR_PRIME
        out[x] = x.to_bytes(4, "big") + y.to_bytes(66, "big")
    return out


def shamir_combine(shares: Iterable[bytes]) -> bytes:
    """Rebuild the 32-byte secret from shares by Lagrange interpolation at 0; raise FederatedError."""
    pts: dict[int, int] = {}
    for s in shares:
        if len(s) != _SHARE_BYTES:
            raise FederatedError(f"secure aggregation: a share has {len(s)} bytes, expected {_SHARE_BYTES}")
        x, y = int.from_bytes(s[:4], "big"), int.from_bytes(s[4:], "big")
        if x == 0 or y >= SHAMIR_PRIME or pts.get(x, y) != y:
            raise FederatedError("secure aggregation: a share is malformed or conflicts with another")
        pts[x] = y
    if not pts:
        raise FederatedError("secure aggregation: no shares to combine")
    secret = 0
    for xi, yi in pts.items():
        num, den = 1, 1
        for xj in pts:
            if xj != xi:
                num = num * xj % SHAMIR_PRIME
                den = den * (xj - xi) % SHAMIR_PRIME
        secret = (secret + yi * num * pow(den, -1, SHAMIR_PRIME)) % SHAMIR_PRIME
    if secret >= 2**256:
        raise FederatedError("secure aggregation: shares do not rebuild a 32-byte secret")
    return secret.to_bytes(32, "big")


def neighbour_graph(node_ids: Iterable[int], num_shares: int) -> dict[int, frozenset[int]]:
    """SecAgg+'s graph: a random ring in which each site's neighbours are the ``num_shares`` around it
    (itself included); the order comes from OS randomness so sites cannot choose their neighbours."""
    order = sorted(set(node_ids))
    secrets.SystemRandom().shuffle(order)
    n = len(order)
    half = min(num_shares, n) // 2
    return {nid: frozenset(order[(i + off) % n] for off in range(-half, half + 1)) for i, nid in enumerate(order)}


def _x25519() -> tuple[bytes, bytes]:
    sk = X25519PrivateKey.generate()
    raw = sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return raw, sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _agree(sk: bytes, pk: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))
    except ValueError as exc:  # wrong length or a low-order point (all-zero shared secret)
        raise FederatedError(f"secure aggregation: bad X25519 public key ({exc})") from None


def _sign(own: int, other: int) -> int:
    return 1 if own < other else -1


def pair_mask(shared: bytes, round_no: int, a: int, b: int, n: int) -> npt.NDArray[np.uint64]:
    """The pairwise mask of sites ``a`` and ``b`` (symmetric in the pair) in Z_2^64."""
    return expand_mask(derive_mask_key(shared, "pair", round_no, min(a, b), max(a, b)), n)


def _apply(acc: npt.NDArray[np.uint64], mask: npt.NDArray[np.uint64], sign: int) -> npt.NDArray[np.uint64]:
    return acc + mask if sign > 0 else acc - mask


def _apply_scalars(acc: list[int], mask: list[int], sign: int) -> list[int]:
    return [(x + sign * m) % L for x, m in zip(acc, mask, strict=True)]


@dataclass
class MaskingSite:
    """One site's side of a round. Create it at the setup stage; it holds the round's secrets.

    The state round-trips through :meth:`to_state`/:meth:`from_state` (bytes only) because Flower
    may run each stage of a round in a different ClientApp process.
    """

    node_id: int
    round_no: int
    threshold: int
    sk1: bytes = field(repr=False, default=b"")
    pk1: bytes = b""
    sk2: bytes = field(repr=False, default=b"")
    pk2: bytes = b""
    seed: bytes = field(repr=False, default=b"")
    peers: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    seed_shares: dict[int, bytes] = field(default_factory=dict, repr=False)
    sk1_shares: dict[int, bytes] = field(default_factory=dict, repr=False)
    available: list[int] = field(default_factory=list)
    stage: str = "setup"
    next_sk1: bytes = field(repr=False, default=b"")
    next_seed: bytes = field(repr=False, default=b"")

    @classmethod
    def setup(cls, node_id: int, round_no: int, threshold: int) -> MaskingSite:
        """Make the round's two key pairs."""
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        sk1, pk1 = _x25519()
        sk2, pk2 = _x25519()
        return cls(node_id, round_no, threshold, sk1, pk1, sk2, pk2)

    def share_keys(self, peers: Mapping[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
        """Take the neighbours' public keys (own included); return an encrypted share pair per neighbour."""
        self._expect("setup", "share-keys")
        if self.node_id not in peers or tuple(peers[self.node_id]) != (self.pk1, self.pk2):
            raise FederatedError("secure aggregation: the server did not relay this site's own public keys")
        if len(peers) < self.threshold:
            raise FederatedError(f"secure aggregation: {len(peers)} neighbours, fewer than the threshold {self.threshold}")
        keys = [k for pair in peers.values() for k in pair]
        if len(set(keys)) != len(keys):
            raise FederatedError("secure aggregation: the relayed public keys are not all distinct")
        self.peers = {int(k): (bytes(v[0]), bytes(v[1])) for k, v in peers.items()}
        self.seed = secrets.token_bytes(32)
        return self._deal(self.round_no, self.seed, self.sk1, own=True)

    def _deal(self, round_no: int, seed: bytes, sk1: bytes, *, own: bool) -> dict[int, bytes]:
        xs = {nid: i + 1 for i, nid in enumerate(sorted(self.peers))}
        seed_sh = shamir_split(seed, self.threshold, xs.values())
        sk1_sh = shamir_split(sk1, self.threshold, xs.values())
        out = {}
        for nid, x in xs.items():
            if nid == self.node_id:
                if own:
                    self.seed_shares[nid], self.sk1_shares[nid] = seed_sh[x], sk1_sh[x]
                else:  # kept sealed to itself until the next round starts
                    out[nid] = self._seal(nid, seed_sh[x] + sk1_sh[x], round_no)
                continue
            out[nid] = self._seal(nid, seed_sh[x] + sk1_sh[x], round_no)
        return out

    def prepare_next(self, next_round: int) -> tuple[bytes, dict[int, bytes]]:
        """After unmasking, make the next round's mask key pair and self-mask seed and deal their shares
        to the same neighbours (sealed under the long-lived transport keys): the next round then needs
        no setup or key-sharing messages. Returns (next pk1, sealed shares per neighbour, itself included)."""
        self._expect("unmask", "prepared")
        if next_round <= self.round_no:
            raise ValueError(f"next_round must be > {self.round_no}, got {next_round}")
        self.next_sk1, next_pk1 = _x25519()
        self.next_seed = secrets.token_bytes(32)
        sealed = self._deal(next_round, self.next_seed, self.next_sk1, own=False)
        return next_pk1, sealed

    def start_round(self, round_no: int, peer_pk1: Mapping[int, bytes]) -> None:
        """Switch to the keys made by :meth:`prepare_next`; ``peer_pk1`` are the neighbours' new keys."""
        self._expect("prepared", "share-keys")
        if round_no <= self.round_no:
            raise FederatedError(f"secure aggregation: round {round_no} does not follow round {self.round_no}")
        next_pk1 = X25519PrivateKey.from_private_bytes(self.next_sk1).public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
        if peer_pk1.get(self.node_id, next_pk1) != next_pk1:
            raise FederatedError("secure aggregation: the server did not relay this site's own public key")
        self.round_no = round_no
        self.sk1, self.pk1, self.seed = self.next_sk1, next_pk1, self.next_seed
        self.next_sk1 = self.next_seed = b""
        for nid, pk in peer_pk1.items():
            if int(nid) in self.peers and int(nid) != self.node_id:
                self.peers[int(nid)] = (bytes(pk), self.peers[int(nid)][1])
        self.seed_shares, self.sk1_shares, self.available = {}, {}, []

    def _share_key(self, src: int, dst: int, round_no: int) -> bytes:
        return derive_mask_key(_agree(self.sk2, self.peers[dst if src == self.node_id else src][1]),
                               "share", round_no, src, dst)

    def _seal(self, dst: int, plaintext: bytes, round_no: int) -> bytes:
        ad = struct.pack(">QQQ", round_no, self.node_id, dst)
        return ChaCha20Poly1305(self._share_key(self.node_id, dst, round_no)).encrypt(_ZERO_NONCE12, plaintext, ad)

    def receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Decrypt the shares neighbours sent this site; those neighbours are the ones it masks against."""
        self._expect("share-keys", "masked-input")
        from cryptography.exceptions import InvalidTag

        if len([c for c in ciphertexts if int(c) != self.node_id]) + 1 < self.threshold:
            raise FederatedError("secure aggregation: too few neighbours sent shares")
        for src, ct in ciphertexts.items():
            if src not in self.peers:
                raise FederatedError(f"secure aggregation: shares from {src}, not a neighbour")
            ad = struct.pack(">QQQ", self.round_no, src, self.node_id)
            try:
                pt = ChaCha20Poly1305(self._share_key(src, self.node_id, self.round_no)).decrypt(
                    _ZERO_NONCE12, bytes(ct), ad)
            except InvalidTag:
                raise FederatedError(f"secure aggregation: shares from {src} do not authenticate") from None
            if len(pt) != 2 * _SHARE_BYTES:
                raise FederatedError(f"secure aggregation: shares from {src} have the wrong length")
            self.seed_shares[src], self.sk1_shares[src] = pt[:_SHARE_BYTES], pt[_SHARE_BYTES:]
        if self.node_id not in self.seed_shares:
            raise FederatedError("secure aggregation: this site's own shares were not returned")
        self.available = sorted(int(s) for s in ciphertexts if int(s) != self.node_id)

    def mask(self, values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        """Add the self mask and the pairwise masks (Z_2^64) to ``values``."""
        if self.stage != "masked-input":
            raise FederatedError(f"secure aggregation: masked input requested in stage {self.stage}")
        n = len(values)
        out = np.asarray(values, dtype=np.uint64) + expand_mask(
            derive_mask_key(self.seed, "self", self.round_no, self.node_id, 0), n)
        for nid in self.available:
            out = _apply(out, pair_mask(_agree(self.sk1, self.peers[nid][0]), self.round_no, self.node_id, nid, n),
                         _sign(self.node_id, nid))
        return out

    def mask_scalars(self, values: list[int]) -> list[int]:
        """Mask ``values`` in Z_L with independent keystreams (commitment blinds)."""
        if self.stage != "masked-input":
            raise FederatedError(f"secure aggregation: masked input requested in stage {self.stage}")
        n = len(values)
        out = _apply_scalars(
            [v % L for v in values],
            expand_scalar_mask(derive_mask_key(self.seed, "self-scalar", self.round_no, self.node_id, 0), n), 1)
        for nid in self.available:
            key = derive_mask_key(_agree(self.sk1, self.peers[nid][0]), "pair-scalar", self.round_no,
                                  min(self.node_id, nid), max(self.node_id, nid))
            out = _apply_scalars(out, expand_scalar_mask(key, n), _sign(self.node_id, nid))
        return out

    def unmask(self, active: Iterable[int], dead: Iterable[int]) -> dict[int, bytes]:
        """Release seed shares of surviving neighbours and ``sk1`` shares of dropped ones (never both)."""
        self._expect("masked-input", "unmask")
        act, gone = set(active), set(dead)
        if act & gone:
            raise FederatedError("secure aggregation: the server asked for both shares of the same site")
        if len(act) < self.threshold:
            raise FederatedError("secure aggregation: fewer surviving neighbours than the threshold")
        out = {nid: self.seed_shares[nid] for nid in act if nid in self.seed_shares}
        out.update({nid: self.sk1_shares[nid] for nid in gone if nid in self.sk1_shares})
        return out

    def _expect(self, current: str, nxt: str) -> None:
        if self.stage != current:
            raise FederatedError(f"secure aggregation: stage {nxt} after {self.stage}, expected after {current}")
        self.stage = nxt

    def to_state(self) -> dict[str, Any]:
        """Encode as a flat dict of ints, bytes and lists (a Flower ConfigRecord's value types)."""
        peers = sorted(self.peers)
        return {
            "node_id": self.node_id, "round_no": self.round_no, "threshold": self.threshold, "stage": self.stage,
            "sk1": self.sk1, "pk1": self.pk1, "sk2": self.sk2, "pk2": self.pk2, "seed": self.seed,
            "peer_ids": peers, "peer_pk1": [self.peers[p][0] for p in peers],
            "peer_pk2": [self.peers[p][1] for p in peers],
            "share_ids": sorted(self.seed_shares), "seed_shares": [self.seed_shares[p] for p in sorted(self.seed_shares)],
            "sk1_shares": [self.sk1_shares[p] for p in sorted(self.seed_shares)], "available": list(self.available),
            "next_sk1": self.next_sk1, "next_seed": self.next_seed,
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> MaskingSite:
        """Rebuild from :meth:`to_state`."""
        ids = [int(x) for x in d.get("share_ids", [])]
        return cls(
            int(d["node_id"]), int(d["round_no"]), int(d["threshold"]), bytes(d["sk1"]), bytes(d["pk1"]),
            bytes(d["sk2"]), bytes(d["pk2"]), bytes(d["seed"]),
            {int(p): (bytes(a), bytes(b)) for p, a, b in zip(d.get("peer_ids", []), d.get("peer_pk1", []),
                                                              d.get("peer_pk2", []), strict=True)},
            dict(zip(ids, (bytes(s) for s in d.get("seed_shares", [])), strict=True)),
            dict(zip(ids, (bytes(s) for s in d.get("sk1_shares", [])), strict=True)),
            [int(x) for x in d.get("available", [])], str(d["stage"]),
            bytes(d.get("next_sk1", b"")), bytes(d.get("next_seed", b"")),
        )


@dataclass
class MaskingServer:
    """The server's side: neighbour graph, share forwarding, masked sum and unmasking."""

    round_no: int
    neighbours: dict[int, frozenset[int]]
    threshold: int
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    received_shares: set[int] = field(default_factory=set)  # sites whose encrypted shares were forwarded

    def check_threshold(self, alive: set[int]) -> None:
        """Raise FederatedError if some alive site has fewer than ``threshold`` alive neighbours."""
        for nid in alive:
            if len(self.neighbours[nid] & alive) < self.threshold:
                raise FederatedError(f"secure aggregation: site {nid} has fewer than {self.threshold} "
                                     "surviving neighbours; the round cannot be unmasked")

    def forward(self, sent: Mapping[int, Mapping[int, bytes]]) -> dict[int, dict[int, bytes]]:
        """Route encrypted shares: ``sent[src][dst]`` -> ``out[dst][src]`` (only along graph edges)."""
        out: dict[int, dict[int, bytes]] = {nid: {} for nid in sent}
        for src, by_dst in sent.items():
            for dst, ct in by_dst.items():
                if dst in out and dst in self.neighbours[src] and src in self.neighbours[dst]:
                    out[dst][src] = ct
        self.received_shares = set(sent)
        return out

    def unmask(
        self, masked_sum: npt.NDArray[np.uint64], survivors: set[int], shares: Mapping[int, Mapping[int, bytes]],
        *, scalar_sum: list[int] | None = None,
    ) -> tuple[npt.NDArray[np.uint64], list[int] | None]:
        """Remove self masks of ``survivors`` and pairwise masks of the sites that sent shares but not input.

        ``shares[holder][owner]`` are what each holder released. Returns the plain sum (and the plain
        scalar sum when ``scalar_sum`` is given).
        """
        n = len(masked_sum)
        dead = self.received_shares - survivors
        by_owner: dict[int, list[bytes]] = {}
        for holder, released in shares.items():
            for owner, share in released.items():
                if holder in self.neighbours.get(owner, ()):
                    by_owner.setdefault(owner, []).append(share)
        total = np.asarray(masked_sum, dtype=np.uint64).copy()
        scalars = None if scalar_sum is None else [s % L for s in scalar_sum]
        for owner in sorted(survivors | dead):
            got = by_owner.get(owner, [])
            if len(got) < self.threshold:
                raise FederatedError(f"secure aggregation: {len(got)} shares for site {owner}, "
                                     f"{self.threshold} needed")
            secret = shamir_combine(got[: self.threshold])
            if owner in survivors:
                total = total - expand_mask(derive_mask_key(secret, "self", self.round_no, owner, 0), n)
                if scalars is not None:
                    scalars = _apply_scalars(scalars, expand_scalar_mask(
                        derive_mask_key(secret, "self-scalar", self.round_no, owner, 0), n), -1)
                continue
            pk1 = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            if pk1 != self.public_keys[owner][0]:
                raise FederatedError(f"secure aggregation: shares for site {owner} rebuild the wrong key")
            for nid in sorted(self.neighbours[owner] & survivors):
                if nid == owner:
                    continue
                shared = _agree(secret, self.public_keys[nid][0])
                # survivor ``nid`` added sign(nid, owner) * mask; take it back out
                total = _apply(total, pair_mask(shared, self.round_no, nid, owner, n), -_sign(nid, owner))
                if scalars is not None:
                    key = derive_mask_key(shared, "pair-scalar", self.round_no, min(nid, owner), max(nid, owner))
                    scalars = _apply_scalars(scalars, expand_scalar_mask(key, n), -_sign(nid, owner))
        return total, scalars
