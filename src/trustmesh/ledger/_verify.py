"""Recipes: check an inclusion or consistency proof against roots or checkpoints you trust."""

from __future__ import annotations

from trustmesh.errors import CheckpointError, ConsistencyError, InclusionProofError
from trustmesh.ledger._checkpoint import Checkpoint
from trustmesh.ledger._proof import (
    ConsistencyProof,
    InclusionProof,
    verify_consistency_path,
    verify_inclusion_path,
)
from trustmesh.ledger.hazmat import leaf_hash

__all__ = ["verify_consistency", "verify_inclusion"]


def _root_of(anchor: bytes | Checkpoint, size: int, what: str, error: type[CheckpointError | ConsistencyError | InclusionProofError]) -> bytes:
    if isinstance(anchor, Checkpoint):
        if anchor.size != size:
            raise CheckpointError(f"{what} is for size {anchor.size}, the proof for size {size}", index=size)
        return anchor.root_hash
    if not isinstance(anchor, bytes | bytearray):
        raise error(f"{what} must be a 32-byte root hash or a Checkpoint", index=size)
    return bytes(anchor)


def verify_inclusion(proof: InclusionProof, root: bytes | Checkpoint, entry_bytes: bytes | None = None) -> None:
    """Check that the entry is leaf ``proof.leaf_index`` of the tree with ``root``; raise if not.

    Pass a root (or a checkpoint whose signature you verified) that you trust - not the proof's own
    ``root_hash``. With ``entry_bytes``, the leaf hash is recomputed from them (RFC 6962 0x00 prefix).
    """
    trusted = _root_of(root, proof.tree_size, "checkpoint", InclusionProofError)
    lh = proof.leaf_hash
    if entry_bytes is not None:
        lh = leaf_hash(bytes(entry_bytes))
        if lh != proof.leaf_hash:
            raise InclusionProofError(f"entry bytes do not hash to the proof's leaf {proof.leaf_index}",
                                      index=proof.leaf_index)
    verify_inclusion_path(proof.leaf_index, proof.tree_size, lh, proof.audit_path, trusted)


def verify_consistency(proof: ConsistencyProof, old: bytes | Checkpoint, new: bytes | Checkpoint) -> None:
    """Check that the tree ``old`` (size ``proof.size1``) is a prefix of ``new`` (``proof.size2``); raise if not."""
    root1 = _root_of(old, proof.size1, "old checkpoint", ConsistencyError)
    root2 = _root_of(new, proof.size2, "new checkpoint", ConsistencyError)
    verify_consistency_path(proof.size1, proof.size2, proof.path, root1, root2)
