"""Raw RFC 6962 / RFC 9162 Merkle tree hashing primitives.

.. warning::

   This is a hazardous-materials module. These functions compute bare node hashes; they verify
   nothing and know nothing about tree sizes, proofs or signatures. Mixing up a leaf hash and a
   node hash, or feeding un-prefixed data, silently produces a different (but valid-looking) tree.
   Use :func:`trustmesh.ledger.verify_inclusion`, :func:`trustmesh.ledger.verify_consistency` and
   :class:`trustmesh.ledger.Ledger` unless you are implementing a new proof format.

Hashing follows RFC 9162 section 2.1.1: ``leaf = SHA-256(0x00 || data)``,
``node = SHA-256(0x01 || left || right)``, and the hash of the empty tree is ``SHA-256("")``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "leaf_hash", "node_hash", "root_from_leaf_hashes"]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return MTH(D[0:n]) (RFC 9162 section 2.1.1) of leaf hashes held in memory.

    A reference implementation, O(n) memory; the store computes roots from stored subtrees instead.
    """
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    # Fold the complete subtrees of the binary decomposition of n, smallest (rightmost) first.
    stack: list[tuple[int, bytes]] = []  # (size, hash) of complete subtrees, left to right
    for h in hashes:
        size, cur = 1, h
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            cur = node_hash(left, cur)
            size += left_size
        stack.append((size, cur))
    root = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        root = node_hash(left, root)
    return root
