"""trustmesh.ledger: a tamper-evident, append-only log (RFC 9162 Merkle tree, C2SP checkpoints).

Recipes: :class:`Ledger` (create/open, append, checkpoint, proofs, tiles), :func:`audit`,
:func:`verify_inclusion`, :func:`verify_consistency`, :class:`Witness`, :func:`verify_cosignatures`.
Raw RFC 6962 node hashing lives in :mod:`trustmesh.ledger.hazmat`. Verifiers raise a
``trustmesh.errors.VerificationError`` subclass; they never return False.
"""

from trustmesh.ledger._audit import AuditReport, audit
from trustmesh.ledger._checkpoint import Checkpoint
from trustmesh.ledger._entry import MAX_ENTRY_BYTES, Entry
from trustmesh.ledger._ledger import BlobId, Ledger
from trustmesh.ledger._note import NoteSigner, NoteVerifier, SignedNote
from trustmesh.ledger._proof import (
    ConsistencyProof,
    InclusionProof,
    verify_consistency_path,
    verify_inclusion_path,
    verify_subtree_consistency_path,
    verify_subtree_inclusion_path,
)
from trustmesh.ledger._tiles import format_tile_index, parse_tile_path, tile_path
from trustmesh.ledger._verify import verify_consistency, verify_inclusion
from trustmesh.ledger._witness import Cosignature, Witness, detect_split_view, verify_cosignatures

__all__ = [
    "AuditReport",
    "BlobId",
    "Checkpoint",
    "ConsistencyProof",
    "Cosignature",
    "Entry",
    "InclusionProof",
    "Ledger",
    "MAX_ENTRY_BYTES",
    "NoteSigner",
    "NoteVerifier",
    "SignedNote",
    "Witness",
    "audit",
    "detect_split_view",
    "format_tile_index",
    "parse_tile_path",
    "tile_path",
    "verify_consistency",
    "verify_consistency_path",
    "verify_cosignatures",
    "verify_inclusion",
    "verify_inclusion_path",
    "verify_subtree_consistency_path",
    "verify_subtree_inclusion_path",
]
