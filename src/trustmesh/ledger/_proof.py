"""Build and check RFC 9162 inclusion and consistency proofs (and draft subtree proofs).

Proof *construction* here is pure integer planning: it says which subtree hashes a proof needs
(complete nodes by ``(level, index)``, or right-edge hashes ``MTH(D[x:n])``); the store looks them up.
Proof *verification* follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 and raises on any failure.
Subtree proofs follow draft-ietf-plants-merkle-tree-certs ("Subtrees").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from trustmesh.errors import ConsistencyError, InclusionProofError, InputError
from trustmesh.ledger.hazmat import EMPTY_ROOT, HASH_SIZE, node_hash

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "NodeRef",
    "consistency_plan",
    "inclusion_plan",
    "verify_consistency_path",
    "verify_inclusion_path",
    "verify_subtree_consistency_path",
    "verify_subtree_inclusion_path",
]

MAX_SIZE: Final = 2**63  # tree sizes and indices are uint64 on the wire; keep well inside


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"{field}: expected a base64 string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InputError(f"{field}: not valid base64 ({exc})") from None
    if len(raw) != HASH_SIZE:
        raise InputError(f"{field}: expected a {HASH_SIZE}-byte hash, got {len(raw)} bytes")
    return raw


def _uint(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_SIZE:
        raise InputError(f"{field}: expected an integer in [0, 2^63), got {value!r}")
    return value


def _hash_list(value: Any, field: str) -> tuple[bytes, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 128:
        raise InputError(f"{field}: expected a list of at most 128 base64 hashes")
    return tuple(_unb64(item, f"{field}[{i}]") for i, item in enumerate(value))


def _require_fields(doc: Any, what: str, fields: tuple[str, ...]) -> None:
    """Refuse ``doc`` unless it is a JSON object holding every one of ``fields``."""
    if not isinstance(doc, dict):
        raise InputError(f"{what}: expected a JSON object")
    missing = set(fields) - doc.keys()
    if missing:
        raise InputError(f"{what}: missing field(s) {sorted(missing)}")


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """An RFC 9162 inclusion proof of leaf ``leaf_index`` in the tree of size ``tree_size``.

    ``root_hash`` is the root the log computed; a verifier must use a root it trusts (a verified
    checkpoint), never this field alone.
    """

    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    audit_path: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form, with the field names and base64 of the transparency-dev vectors."""
        return {
            "leafIdx": self.leaf_index,
            "treeSize": self.tree_size,
            "leafHash": _b64(self.leaf_hash),
            "root": _b64(self.root_hash),
            "proof": [_b64(h) for h in self.audit_path],
        }

    @classmethod
    def from_json(cls, doc: Any) -> InclusionProof:
        """Parse the JSON form, checking every field (sizes, base64, 32-byte hashes)."""
        _require_fields(doc, "inclusion proof", ("leafIdx", "treeSize", "leafHash", "root", "proof"))
        index = _uint(doc["leafIdx"], "leafIdx")
        size = _uint(doc["treeSize"], "treeSize")
        if index >= size:
            raise InputError(f"leafIdx must be < treeSize, got {index} >= {size}")
        return cls(index, size, _unb64(doc["leafHash"], "leafHash"), _unb64(doc["root"], "root"),
                   _hash_list(doc["proof"], "proof"))


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """An RFC 9162 consistency proof between the trees of sizes ``size1`` <= ``size2``."""

    size1: int
    size2: int
    root1: bytes
    root2: bytes
    path: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form, with the field names and base64 of the transparency-dev vectors."""
        return {
            "size1": self.size1,
            "size2": self.size2,
            "root1": _b64(self.root1),
            "root2": _b64(self.root2),
            "proof": [_b64(h) for h in self.path],
        }

    @classmethod
    def from_json(cls, doc: Any) -> ConsistencyProof:
        """Parse the JSON form, checking every field."""
        _require_fields(doc, "consistency proof", ("size1", "size2", "root1", "root2", "proof"))
        size1, size2 = _uint(doc["size1"], "size1"), _uint(doc["size2"], "size2")
        if size1 > size2:
            raise InputError(f"size1 must be <= size2, got {size1} > {size2}")
        return cls(size1, size2, _unb64(doc["root1"], "root1"), _unb64(doc["root2"], "root2"),
                   _hash_list(doc["proof"], "proof"))


# A node a proof needs: ("c", level, index) is the complete subtree covering leaves
# [index * 2**level, (index + 1) * 2**level); ("r", start, 0) is the right-edge hash MTH(D[start:n]).
NodeRef = tuple[str, int, int]


def _largest_pow2_below(n: int) -> int:
    """Return the largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_ref(start: int, end: int, n: int) -> NodeRef:
    size = end - start
    if size & (size - 1) == 0:  # a power of two starting at a multiple of itself: a complete node
        level = size.bit_length() - 1
        return ("c", level, start >> level)
    if end != n:  # pragma: no cover - cannot happen for ranges produced by the RFC recursions
        raise AssertionError(f"range [{start}, {end}) is neither complete nor a right edge of {n}")
    return ("r", start, 0)


def inclusion_plan(index: int, size: int) -> list[NodeRef]:
    """Return the audit path of leaf ``index`` in tree ``size`` as node references (RFC 9162 PATH).

    Closed form of the RFC recursion: below level ``inner`` (where the paths to ``index`` and to
    ``size - 1`` meet) the siblings are ``(level, (index >> level) ^ 1)``, the topmost of which may
    be the right edge; above it come the left siblings on the right border.
    """
    if not 0 <= index < size:
        raise ValueError(f"index must be in [0, size), got index={index} size={size}")
    inner = (index ^ (size - 1)).bit_length()
    path: list[NodeRef] = []
    for level in range(inner):
        sib = (index >> level) ^ 1
        if (sib + 1) << level <= size:
            path.append(("c", level, sib))
        else:  # only the topmost inner sibling can run past the end: it is MTH(D[start:size])
            path.append(_range_ref(sib << level, size, size))
    rest, level = index >> inner, inner
    while rest:
        if rest & 1:
            path.append(("c", level, rest ^ 1))
        rest >>= 1
        level += 1
    return path


def _inclusion_plan_recursive(index: int, size: int) -> list[NodeRef]:
    """Return the audit path by the RFC 9162 PATH recursion (the reference for the closed form)."""
    if not 0 <= index < size:
        raise ValueError(f"index must be in [0, size), got index={index} size={size}")
    path: list[NodeRef] = []
    off, width = 0, size
    while width > 1:
        k = _largest_pow2_below(width)
        if index - off < k:
            path.append(_range_ref(off + k, off + width, size))
            width = k
        else:
            level = k.bit_length() - 1
            path.append(("c", level, off >> level))
            off += k
            width -= k
    path.reverse()
    return path


def consistency_plan(size1: int, size2: int) -> list[NodeRef]:
    """Return the consistency proof from ``size1`` to ``size2`` as node references (RFC 9162 PROOF)."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"need 0 <= size1 <= size2, got size1={size1} size2={size2}")
    if size1 in (0, size2):
        return []
    path: list[NodeRef] = []
    off, width, m, known = 0, size2, size1, True
    while m != width:
        k = _largest_pow2_below(width)
        if m <= k:
            path.append(_range_ref(off + k, off + width, size2))
            width = k
        else:
            level = k.bit_length() - 1
            path.append(("c", level, off >> level))
            off += k
            width -= k
            m -= k
            known = False
    if not known:
        path.append(_range_ref(off, off + width, size2))
    path.reverse()
    return path


def _check_hash(value: bytes, what: str, error: type[Exception]) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise error(f"{what} must be a {HASH_SIZE}-byte hash, got {got}")


def verify_inclusion_path(
    index: int, size: int, leaf_hash: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Check an RFC 9162 (section 2.1.3.2) inclusion proof; raise InclusionProofError if it fails."""
    if not (0 <= index < size < MAX_SIZE):
        raise InclusionProofError(f"leaf index {index} is outside the tree of size {size}", index=index)
    _check_hash(leaf_hash, "leaf hash", InclusionProofError)
    _check_hash(root, "root", InclusionProofError)
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for i, p in enumerate(path):
        _check_hash(p, f"proof[{i}]", InclusionProofError)
        if sn == 0:
            raise InclusionProofError(f"inclusion proof for leaf {index} is too long", index=index)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError(f"inclusion proof for leaf {index} is too short", index=index)
    if r != root:
        raise InclusionProofError(
            f"inclusion proof for leaf {index} leads to a different root than the tree of size {size}",
            index=index,
        )


def _valid_subtree(start: int, end: int) -> bool:
    # draft-ietf-plants-merkle-tree-certs: [start, end) is a subtree iff start < end and start is a
    # multiple of BIT_CEIL(end - start).
    if not 0 <= start < end < MAX_SIZE:
        return False
    width = end - start
    ceil = 1 << (width - 1).bit_length()
    return start % ceil == 0


def verify_subtree_inclusion_path(
    index: int, start: int, end: int, leaf_hash: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf ``index`` is in subtree ``[start, end)`` with hash ``root``; raise on failure."""
    if not _valid_subtree(start, end):
        raise InclusionProofError(f"[{start}, {end}) is not a valid subtree", index=index)
    if not start <= index < end:
        raise InclusionProofError(f"leaf {index} is outside the subtree [{start}, {end})", index=index)
    try:
        verify_inclusion_path(index - start, end - start, leaf_hash, path, root)
    except InclusionProofError as exc:
        raise InclusionProofError(str(exc).replace(f"leaf {index - start}", f"leaf {index}"), index=index) from None


def _reconstruct(start: int, end: int, n: int, path: Sequence[bytes], root1: bytes) -> tuple[bytes, bytes]:
    """Recompute (subtree hash, tree hash) from a (subtree) consistency proof.

    Mirrors RFC 9162 SUBPROOF generalised to subtrees: the proof lists the deepest sibling first, so
    the top-level sibling is the last element.
    """
    pos = len(path)

    def take() -> bytes:
        nonlocal pos
        if pos == 0:
            raise ConsistencyError("consistency proof is too short", index=start)
        pos -= 1
        return path[pos]

    # Iterative descent recording the steps, then fold back up.
    steps: list[tuple[str, bytes]] = []
    known = True
    s, e, width = start, end, n
    while not (s == 0 and e == width):
        k = _largest_pow2_below(width)
        if e <= k:
            steps.append(("L", take()))  # sibling is MTH(D[k:width]) on the right
            width = k
        elif s >= k:
            steps.append(("R", take()))  # sibling is MTH(D[0:k]) on the left, subtree on the right
            s, e, width = s - k, e - k, width - k
        else:  # s == 0 < k < e: the old tree spans the left subtree (the RFC's m > k case)
            steps.append(("S", take()))
            e, width = e - k, width - k
            known = False
    if known:
        old = new = root1
    else:
        old = new = take()
    if pos != 0:
        raise ConsistencyError("consistency proof is too long", index=start)
    for kind, sib in reversed(steps):
        if kind == "L":
            new = node_hash(new, sib)
        elif kind == "R":
            new = node_hash(sib, new)
        else:
            old = node_hash(sib, old)
            new = node_hash(sib, new)
    return old, new


def verify_consistency_path(
    size1: int, size2: int, path: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check an RFC 9162 (section 2.1.4.2) consistency proof; raise ConsistencyError if it fails."""
    if not 0 <= size1 <= size2 < MAX_SIZE:
        raise ConsistencyError(f"need 0 <= size1 <= size2, got size1={size1} size2={size2}", index=size1)
    for i, p in enumerate(path):
        _check_hash(p, f"proof[{i}]", ConsistencyError)
    # Equal sizes and the empty tree need no hashing: only equality of the roots matters (this is
    # also how the transparency-dev vectors treat them); every hashed root must be 32 bytes.
    if size1 == size2:
        if path:
            raise ConsistencyError("consistency proof between equal sizes must be empty", index=size1)
        if root1 != root2:
            raise ConsistencyError(f"two different roots for the same tree size {size1}", index=size1)
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise ConsistencyError("the root of the empty tree must be SHA-256('')", index=0)
        return
    if size1 == 0:
        # Every tree extends the empty tree; RFC 9162 defines no proof for it, so a request for one
        # is a caller error rather than evidence (transparency-dev treats it the same way).
        raise ConsistencyError("no consistency proof exists from the empty tree", index=0)
    if not path:
        raise ConsistencyError(f"empty consistency proof from {size1} to {size2}", index=size1)
    _check_hash(root1, "root1", ConsistencyError)
    _check_hash(root2, "root2", ConsistencyError)
    old, new = _reconstruct(0, size1, size2, path, root1)
    if old != root1:
        raise ConsistencyError(f"consistency proof does not match the root of size {size1}", index=size1)
    if new != root2:
        raise ConsistencyError(f"consistency proof does not lead to the root of size {size2}", index=size1)


def verify_subtree_consistency_path(
    start: int, end: int, size: int, path: Sequence[bytes], subtree_root: bytes, root: bytes
) -> None:
    """Check that subtree ``[start, end)`` with hash ``subtree_root`` is in the tree ``(size, root)``."""
    if not 0 <= start <= end <= size < MAX_SIZE:
        raise ConsistencyError(f"need 0 <= start <= end <= size, got {start}, {end}, {size}", index=start)
    for i, p in enumerate(path):
        _check_hash(p, f"proof[{i}]", ConsistencyError)
    if start == end:  # the empty subtree is consistent with every tree
        if path:
            raise ConsistencyError("proof for an empty subtree must be empty", index=start)
        if subtree_root != EMPTY_ROOT:
            raise ConsistencyError("the empty subtree's hash must be SHA-256('')", index=start)
        return
    if not _valid_subtree(start, end):
        raise ConsistencyError(f"[{start}, {end}) is not a valid subtree", index=start)
    if start == 0 and end == size:
        if path:
            raise ConsistencyError("proof for the whole tree must be empty", index=start)
        if subtree_root != root:
            raise ConsistencyError("subtree spans the whole tree but the roots differ", index=start)
        return
    if not path:
        raise ConsistencyError(f"empty proof for subtree [{start}, {end}) of size {size}", index=start)
    _check_hash(subtree_root, "subtree root", ConsistencyError)
    _check_hash(root, "root", ConsistencyError)
    old, new = _reconstruct(start, end, size, path, subtree_root)
    if old != subtree_root:
        raise ConsistencyError(f"proof does not match the hash of subtree [{start}, {end})", index=start)
    if new != root:
        raise ConsistencyError(f"proof does not lead to the root of size {size}", index=start)
